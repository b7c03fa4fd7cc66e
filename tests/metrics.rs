//! `/metrics`: every metric of the SPEC, valid for the real `promtool`, and following the state.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::{backend_config, Service};
use klutch_sim::FakeBackend;

fn promtool_check(text: &str) -> (bool, String) {
    let promtool = ["/usr/bin/promtool", "/usr/local/bin/promtool"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("promtool is not installed: .ci/run installs it (Debian package prometheus)");
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("promtool output");
    let msg =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), msg)
}

/// The value of the first sample line starting with `prefix`.
fn value(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix))?
        .rsplit(' ')
        .next()?
        .parse()
        .ok()
}

#[tokio::test]
async fn metrics_pass_promtool_and_follow_state_changes() {
    let backend = FakeBackend::start().await.expect("fake backend");
    backend.set_entry("pg", "ok");
    let svc = Service::start(&backend_config(&backend.url(), ""), &[]).await;
    svc.wait_for("/readyz", "passing", |r| r.status == 200)
        .await;

    let m = svc.get("/metrics").await;
    assert_eq!(
        m.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let (ok, msg) = promtool_check(&m.body);
    assert!(ok, "promtool check metrics: {msg}\n{}", m.body);
    for name in [
        "klutch_health_check_up{",
        "klutch_health_check_status{",
        "klutch_health_check_last_transition_timestamp_seconds{",
        "klutch_health_endpoint_up{",
        "klutch_health_upstream_requests_total{",
        "klutch_health_upstream_request_duration_seconds_bucket{",
        "klutch_health_http_requests_total{",
        "klutch_health_build_info{",
    ] {
        assert!(m.body.contains(name), "{name} missing in\n{}", m.body);
    }
    // klutch_health_watch_restarts_total has samples once a watch restarts: tests/kubernetes.rs checks it.
    let up = "klutch_health_check_up{check=\"backend-status\",item=\"pg\"}";
    assert_eq!(value(&m.body, up), Some(1.0));
    assert_eq!(
        value(&m.body, "klutch_health_endpoint_up{endpoint=\"readyz\"}"),
        Some(1.0)
    );
    let since = "klutch_health_check_last_transition_timestamp_seconds{check=\"backend-status\",item=\"pg\"}";
    let before = value(&m.body, since).expect("transition time");
    let requests = |body: &str| {
        value(
            body,
            "klutch_health_http_requests_total{path=\"/readyz\",code=\"200\"}",
        )
    };
    let served = requests(&m.body).expect("readyz requests counted");

    backend.set_entry("pg", "degraded");
    svc.wait_for("/readyz", "the failure", |r| r.status == 503)
        .await;
    let m = svc.get("/metrics").await.body;
    assert_eq!(value(&m, up), Some(0.0), "a failing item is down");
    assert_eq!(
        value(
            &m,
            "klutch_health_check_status{check=\"backend-status\",item=\"pg\",status=\"fail\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        value(&m, "klutch_health_endpoint_up{endpoint=\"readyz\"}"),
        Some(0.0)
    );
    assert!(
        value(&m, since).expect("transition time") > before,
        "the transition time moved"
    );
    assert!(
        requests(&m).expect("counter") >= served,
        "the request counter counts"
    );
    assert!(value(
        &m,
        "klutch_health_http_requests_total{path=\"/readyz\",code=\"503\"}"
    )
    .is_some());
    assert!(
        value(
            &m,
            "klutch_health_upstream_requests_total{check=\"backend-status\",outcome=\"success\"}"
        )
        .unwrap_or(0.0)
            >= 2.0
    );
    let (ok, msg) = promtool_check(&m);
    assert!(ok, "{msg}");
}

#[tokio::test]
async fn openmetrics_when_asked_for() {
    let backend = FakeBackend::start().await.expect("fake backend");
    let svc = Service::start(&backend_config(&backend.url(), ""), &[]).await;
    let m = svc
        .get_with(
            "/metrics",
            &[("Accept", "application/openmetrics-text; version=1.0.0")],
        )
        .await;
    assert_eq!(
        m.header("content-type"),
        Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
    );
    assert!(m.body.ends_with("# EOF\n"), "{}", m.body);
}

#[tokio::test]
async fn an_item_that_vanishes_loses_its_series() {
    let backend = FakeBackend::start().await.expect("fake backend");
    backend.set_entry("old", "ok");
    backend.set_entry("kept", "ok");
    let svc = Service::start(&backend_config(&backend.url(), ""), &[]).await;
    svc.wait_for("/metrics", "the old item's series", |r| {
        r.body.contains("item=\"old\"")
    })
    .await;
    backend.set_entries([("kept".to_string(), "ok".to_string())].into());
    let m = svc
        .wait_for("/metrics", "the old item's series to go", |r| {
            !r.body.contains("item=\"old\"")
        })
        .await;
    assert!(
        m.body
            .contains("klutch_health_check_up{check=\"backend-status\",item=\"kept\"} 1"),
        "{}",
        m.body
    );
}
