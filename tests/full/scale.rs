//! Slow at debug speed: ten thousand upstream keys per poll.

use crate::common;

use common::{backend_config, Service};
use klutch_sim::{BackendMode, FakeBackend, OddEntries};
use serde_json::Value;

#[tokio::test]
async fn ten_thousand_keys_never_write_more_lines_than_the_outcome() {
    let backend = FakeBackend::start().await.expect("fake backend");
    backend.set_entries(OddEntries::Many(10_000).entries());
    let config = backend_config(&backend.url(), "").replace("100ms", "300ms");
    let svc = Service::start(&config, &[]).await;
    let first = svc
        .wait_for("/readyz/backend-status/pc-09999", "the first poll", |r| {
            r.status == 503
        })
        .await;
    assert_eq!(first.status, 503);
    let before = svc.logs().len();
    backend.set_mode(BackendMode::Status500);
    svc.wait_for("/readyz/backend-status/_endpoint", "the failed poll", |r| {
        r.status == 503
    })
    .await;
    // A few more failed polls: each is the same outcome, already said.
    let target = backend.request_count() + 3;
    common::eventually("three more polls", async || {
        (backend.request_count() >= target).then_some(())
    })
    .await;
    let logs = svc.logs();
    let lines: Vec<Value> = logs[before..]
        .iter()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let about: Vec<&Value> = lines
        .iter()
        .filter(|e| e["check"] == "backend-status")
        .collect();
    assert!(about.len() <= 3, "{} lines: {about:?}", about.len());
    let grouped: Vec<&&Value> = about.iter().filter(|e| e["items"] == 10_000).collect();
    assert_eq!(grouped.len(), 1, "{about:?}");
    let message = grouped[0]["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with(
            "backend-status: 10000 items fail -> unknown: not known: the last poll failed (see backend-status/_endpoint) (pc-00000, pc-00001, pc-00002 and 9997 more)"
        ),
        "{message}"
    );
    // The first poll's 10 000 degraded keys were one line too.
    let first_poll = logs[..before]
        .iter()
        .filter(|l| l.contains("\"items\":10000") && l.contains("none -> fail: degraded"))
        .count();
    assert_eq!(first_poll, 1);
}
