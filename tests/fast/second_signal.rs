//! A second SIGTERM or SIGINT during the shutdown drain exits at once.

use crate::common;

use common::{backend_config, signal, Service};
use klutch_sim::FakeBackend;

/// With a drain far longer than the test's deadline, the process can only exit in time if the second
/// signal cuts the drain short.
async fn second_signal_exits_at_once(first: &str, second: &str, code: i32) {
    let backend = FakeBackend::start().await.expect("fake backend");
    backend.set_entry("postgresql-service-broker", "ok");
    let config = backend_config(&backend.url(), "[server]\nshutdown_delay = \"10m\"\n");
    let mut svc = Service::start(&config, &[]).await;
    svc.wait_for("/readyz", "passing", |r| r.status == 200)
        .await;
    signal(first, svc.pid());
    svc.wait_for("/readyz", "the drain to start", |r| r.status == 503)
        .await;
    assert_eq!(svc.get("/livez").await.status, 200, "still draining");
    signal(second, svc.pid());
    assert_eq!(svc.wait_exit().await, Some(code));
    assert!(
        svc.logs()
            .iter()
            .any(|l| l.contains("during shutdown: exiting at once")),
        "{:#?}",
        svc.logs()
    );
}

#[tokio::test]
async fn a_second_sigterm_exits_at_once() {
    second_signal_exits_at_once("TERM", "TERM", 143).await;
}

#[tokio::test]
async fn sigint_after_sigterm_exits_at_once() {
    second_signal_exits_at_once("TERM", "INT", 130).await;
}
