//! Logs: JSON lines on request, one line per item status change, the configuration at start-up, and
//! upstream errors rate-limited.

use crate::common;

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
    // The first failure is logged at once; the next line would come a minute later.
    let warnings: Vec<Value> = events(&svc)
        .into_iter()
        .filter(|e| e["message"] == "upstream poll failed")
        .collect();
    assert_eq!(warnings.len(), 1, "30 failed polls: {warnings:?}");
    let w = &warnings[0];
    assert_eq!(w["level"], "WARN");
    assert_eq!(w["check"], "backend-status");
    assert_eq!(w["outcome"], "http_error");
    assert_eq!(w["failed_polls"], 1);
    assert_eq!(w["left_out"], 0);
    assert!(
        w["error"].as_str().unwrap_or_default().contains("500"),
        "{w}"
    );
    backend.set_mode(BackendMode::Healthy);
    let recovered = common::eventually("the recovery to be logged", async || {
        events(&svc)
            .into_iter()
            .find(|e| e["message"] == "upstream answers again")
    })
    .await;
    assert_eq!(recovered["level"], "INFO");
    assert!(
        recovered["failed_polls"].as_u64().unwrap_or(0) >= 30,
        "{recovered}"
    );
    assert!(recovered["down_for"].is_string(), "{recovered}");
    // A new outage is logged at once again.
    backend.set_mode(BackendMode::Refuse);
    common::eventually("the second outage to be logged", async || {
        let failures: Vec<Value> = events(&svc)
            .into_iter()
            .filter(|e| e["message"] == "upstream poll failed")
            .collect();
        (failures.len() == 2).then_some(())
    })
    .await;
    let second = events(&svc)
        .into_iter()
        .rfind(|e| e["message"] == "upstream poll failed")
        .expect("second outage");
    assert_eq!(second["failed_polls"], 1, "counting starts again: {second}");
    assert_ne!(second["outcome"], "http_error", "{second}");
}

#[tokio::test]
async fn logs_are_human_readable_by_default() {
    let backend = FakeBackend::start().await.expect("fake backend");
    backend.set_entry("pg", "degraded");
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("config.toml");
    std::fs::write(&path, backend_config(&backend.url(), "")).expect("config");
    let mut child = std::process::Command::new(common::BIN)
        .arg("--config")
        .arg(&path)
        .args(["--listen", "127.0.0.1:0"])
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start");
    let stderr = child.stderr.take().expect("stderr");
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let sink = lines.clone();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for l in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            sink.lock().expect("lines").push(l);
        }
    });
    let seen = common::eventually("the transition of pg in text", async || {
        let lines = lines.lock().expect("lines").clone();
        lines
            .iter()
            .any(|l| l.contains("backend-status/pg: none -> fail: degraded"))
            .then_some(lines)
    })
    .await;
    let _ = child.kill();
    let _ = child.wait();
    for l in &seen {
        assert!(!l.starts_with('{'), "not JSON: {l}");
        assert!(
            !l.contains('\u{1b}'),
            "no colours when not a terminal: {l:?}"
        );
    }
    let change = seen
        .iter()
        .find(|l| l.contains("backend-status/pg: none -> fail"))
        .expect("change");
    assert!(change.contains(" WARN "), "{change}");
    assert!(
        change.contains("check=\"backend-status\" item=\"pg\" old=\"none\" new=\"fail\""),
        "{change}"
    );
    assert!(
        seen.iter()
            .any(|l| l.contains(" INFO ") && l.contains("listening address=127.0.0.1:")),
        "{seen:?}"
    );
}

#[tokio::test]
async fn the_start_up_configuration_names_the_token_file_never_the_token() {
    let backend = FakeBackend::start().await.expect("fake backend");
    let dir = tempfile::tempdir().expect("dir");
    let token = dir.path().join("token");
    std::fs::write(&token, "t0ps3cret-value\n").expect("token");
    let extra = format!(
        "[server]\ndetails = \"token\"\ntoken_file = \"{}\"\n",
        token.display()
    );
    let svc = Service::start(&backend_config(&backend.url(), &extra), &[]).await;
    let start = events(&svc)
        .into_iter()
        .find(|e| e["configuration"].is_string())
        .expect("start-up event");
    let configuration: Value =
        serde_json::from_str(start["configuration"].as_str().unwrap_or_default())
            .expect("the configuration is JSON");
    assert_eq!(configuration["server"]["details"], "token");
    assert_eq!(
        configuration["server"]["token_file"],
        token.display().to_string()
    );
    assert!(
        !svc.logs().iter().any(|l| l.contains("t0ps3cret")),
        "the token is never logged"
    );
}
