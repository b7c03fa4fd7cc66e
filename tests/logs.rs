//! Logs: JSON lines on request, one line per item status change, the configuration at start-up, and
//! upstream errors rate-limited.

mod common;

use common::{backend_config, Service};
use klutch_sim::{BackendMode, FakeBackend};
use serde_json::Value;

fn events(svc: &Service) -> Vec<Value> {
    svc.logs()
        .iter()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[tokio::test]
async fn transitions_are_logged_once_with_check_item_old_new_and_message() {
    let backend = FakeBackend::start().await.expect("fake backend");
    backend.set_entry("pg", "ok");
    let svc = Service::start(&backend_config(&backend.url(), ""), &[]).await;
    svc.wait_for("/readyz", "passing", |r| r.status == 200)
        .await;
    backend.set_entry("pg", "degraded");
    svc.wait_for("/readyz", "failing", |r| r.status == 503)
        .await;
    // Many polls of the same degraded state follow; the change is logged once.
    let wait_polls = backend.request_count() + 5;
    common::eventually("more polls", async || {
        (backend.request_count() >= wait_polls).then_some(())
    })
    .await;
    let changes: Vec<Value> = events(&svc)
        .into_iter()
        .filter(|e| e["item"] == "pg" && e["new"].is_string())
        .collect();
    assert_eq!(changes.len(), 2, "none→pass, pass→fail: {changes:?}");
    let fail = &changes[1];
    assert_eq!(
        (
            fail["check"].as_str(),
            fail["old"].as_str(),
            fail["new"].as_str()
        ),
        (Some("backend-status"), Some("pass"), Some("fail"))
    );
    assert_eq!(fail["message"], "backend-status/pg: pass -> fail: degraded");
    assert_eq!(fail["level"], "WARN");
    let start = events(&svc)
        .into_iter()
        .find(|e| e["configuration"].is_string())
        .expect("start-up event");
    assert!(start["configuration"]
        .as_str()
        .unwrap_or_default()
        .contains("backend-status"));
}

#[tokio::test]
async fn a_dead_upstream_does_not_flood_the_log() {
    let backend = FakeBackend::start().await.expect("fake backend");
    backend.set_mode(BackendMode::Status500);
    let svc = Service::start(&backend_config(&backend.url(), ""), &[]).await;
    let target = backend.request_count() + 30;
    common::eventually("30 failed polls", async || {
        (backend.request_count() >= target).then_some(())
    })
    .await;
    let warnings = events(&svc)
        .iter()
        .filter(|e| e["message"] == "upstream poll failed")
        .count();
    assert!(
        (1..=3).contains(&warnings),
        "{warnings} warnings for 30 failed polls"
    );
    backend.set_mode(BackendMode::Healthy);
    common::eventually("the recovery to be logged", async || {
        events(&svc)
            .iter()
            .any(|e| e["message"] == "upstream answers again")
            .then_some(())
    })
    .await;
}
