//! Graceful shutdown: `/readyz` fails at once, in-flight requests finish, the listener closes after
//! `shutdown_delay`, and the process exits 0.

mod common;

use std::time::{Duration, Instant};

use common::{backend_config, Service};
use klutch_sim::FakeBackend;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn term(pid: u32) {
    let status = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status()
        .expect("kill");
    assert!(status.success());
}

#[tokio::test]
async fn sigterm_fails_readyz_at_once_finishes_in_flight_requests_and_exits_0() {
    let backend = FakeBackend::start().await.expect("fake backend");
    backend.set_entry("postgresql-service-broker", "ok");
    let config = backend_config(&backend.url(), "[server]\nshutdown_delay = \"1500ms\"\n");
    let mut svc = Service::start(&config, &[]).await;
    svc.wait_for("/readyz", "passing", |r| r.status == 200)
        .await;

    // A request whose headers are half sent when the signal arrives.
    let mut in_flight = tokio::net::TcpStream::connect(svc.addr)
        .await
        .expect("connect");
    in_flight
        .write_all(b"GET /livez HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("send");

    let signalled = Instant::now();
    term(svc.pid());
    let r = svc
        .wait_for("/readyz", "readyz to fail", |r| r.status == 503)
        .await;
    assert_eq!(r.body, "shutting down\n");
    let json = svc.get("/readyz?format=json").await;
    assert_eq!(
        (json.status, json.json()["status"].as_str()),
        (503, Some("fail"))
    );
    assert_eq!(json.json()["output"], "shutting down");
    assert_eq!(
        svc.get("/livez").await.status,
        200,
        "the process still serves during the delay"
    );
    assert_eq!(svc.get("/healthz").await.status, 200);

    in_flight
        .write_all(b"Connection: close\r\n\r\n")
        .await
        .expect("finish the request");
    let mut answer = Vec::new();
    in_flight.read_to_end(&mut answer).await.expect("read");
    assert!(
        String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200 OK"),
        "in-flight request answered"
    );

    assert_eq!(svc.wait_exit().await, Some(0));
    assert!(
        signalled.elapsed() >= Duration::from_millis(1500),
        "the listener stayed open for shutdown_delay"
    );
    assert!(
        tokio::net::TcpStream::connect(svc.addr).await.is_err(),
        "the listener is closed after exit"
    );
}
