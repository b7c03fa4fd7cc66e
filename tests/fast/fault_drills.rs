//! Fault drills: a hostile or broken world, and the process keeps serving probes from its last good state.

use crate::common;

use std::time::{Duration, Instant};

use common::{backend_config, full_config, kubeconfig, request, Service};
use klutch_sim::{BackendMode, FakeBackend, SimControlPlane};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn healthy_service(extra: &str) -> (FakeBackend, Service) {
    let backend = FakeBackend::start().await.expect("fake backend");
    backend.set_entry("postgresql-service-broker", "ok");
    let svc = Service::start(&backend_config(&backend.url(), extra), &[]).await;
    svc.wait_for("/readyz", "passing", |r| r.status == 200)
        .await;
    (backend, svc)
}

#[tokio::test]
async fn a_100_mib_body_is_refused_without_being_read() {
    // A generous poll timeout: on a loaded machine the first MiB may take longer than the usual 500ms, and
    // this test is about the size bound, not the timeout.
    let backend = FakeBackend::start().await.expect("fake backend");
    backend.set_entry("postgresql-service-broker", "ok");
    let config =
        backend_config(&backend.url(), "").replace("timeout = \"500ms\"", "timeout = \"10s\"");
    let svc = Service::start(&config, &[]).await;
    svc.wait_for("/readyz", "passing", |r| r.status == 200)
        .await;
    backend.set_mode(BackendMode::Huge(100 * 1024 * 1024));
    let r = svc
        .wait_for("/readyz?verbose", "the huge body", |r| {
            r.body.contains("larger than max_body (1048576 bytes)")
        })
        .await;
    assert_eq!(r.status, 503);
    assert_eq!(svc.get("/livez").await.status, 200);
}

#[tokio::test]
async fn slowloris_and_idle_connections_do_not_starve_probes() {
    let (_backend, svc) =
        healthy_service("[server]\nheader_read_timeout = \"1s\"\nmax_connections = 64\n").await;
    // 48 connections that never finish their headers, 16 that say nothing at all.
    let mut hostile = Vec::new();
    for i in 0..64 {
        let mut s = TcpStream::connect(svc.addr).await.expect("connect");
        if i < 48 {
            s.write_all(b"GET /readyz HTTP/1.1\r\nX-Slow: ")
                .await
                .expect("partial header");
        }
        hostile.push(s);
    }
    // They are closed by the header timeout, and probes are answered again.
    let start = Instant::now();
    for s in &mut hostile {
        let mut buf = [0u8; 256];
        let closed = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await;
        assert!(
            matches!(closed, Ok(Ok(_)) | Ok(Err(_))),
            "a hostile connection was held open"
        );
    }
    assert!(start.elapsed() < Duration::from_secs(10));
    let r = svc.get("/readyz").await;
    assert_eq!(r.status, 200);
}

/// One answer read from a keep-alive connection: its head, and as many body bytes as it says.
async fn read_answer(s: &mut TcpStream) -> String {
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
            .await
            .expect("an answer within 10 s")
            .expect("the connection reads");
        assert!(n > 0, "the connection closed before its answer");
        raw.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&raw).to_string();
        if let Some(end) = text.find("\r\n\r\n") {
            let length: usize = text[..end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length: ")
                        .map(str::to_string)
                })
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if raw.len() >= end + 4 + length {
                return text;
            }
        }
    }
}

/// A proxy in front (an Ingress, a load balancer) keeps its upstream connections for a minute or more and
/// reuses them: an idle keep-alive connection stays open well past `header_read_timeout`, so that the proxy's
/// next request never meets a connection closing under it. A request begun on it and not finished is still
/// cut off at that timeout.
#[tokio::test]
async fn keep_alive_connections_outlive_the_header_timeout_but_slow_requests_on_them_do_not() {
    let (_backend, svc) = healthy_service("[server]\nheader_read_timeout = \"1s\"\n").await;
    let mut s = TcpStream::connect(svc.addr).await.expect("connect");
    let get = b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n";
    s.write_all(get).await.expect("a request");
    assert!(read_answer(&mut s).await.starts_with("HTTP/1.1 200"));
    // Idle for three header timeouts: a closed connection would read its end (0 bytes) at once.
    let mut buf = [0u8; 64];
    let idle = tokio::time::timeout(Duration::from_secs(3), s.read(&mut buf)).await;
    assert!(
        idle.is_err(),
        "the idle keep-alive connection was closed: {idle:?}"
    );
    s.write_all(get).await.expect("a second request");
    assert!(read_answer(&mut s).await.starts_with("HTTP/1.1 200"));
    // Half of a third request: closed after the header timeout.
    s.write_all(b"GET /readyz HTTP/1.1\r\nX-Slow: ")
        .await
        .expect("a partial header");
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut rest)).await;
    assert!(
        matches!(closed, Ok(Ok(_)) | Ok(Err(_))),
        "a request that never finished its headers held the connection"
    );
}

#[tokio::test]
async fn oversized_headers_and_urls_are_refused_and_the_server_goes_on() {
    let (_backend, svc) = healthy_service("").await;
    let big = "x".repeat(200 * 1024);
    let r = request(svc.addr, "GET", "/readyz", &[("X-Big", &big)]).await;
    assert_eq!(r.status, 431, "{r:?}");
    let mut s = TcpStream::connect(svc.addr).await.expect("connect");
    let req = format!("GET /readyz?exclude={big} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let _ = s.write_all(req.as_bytes()).await;
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw).await;
    let text = String::from_utf8_lossy(&raw);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 4"),
        "{}",
        &text[..text.len().min(200)]
    );
    assert_eq!(svc.get("/readyz").await.status, 200);
}

#[tokio::test]
async fn query_strings_of_any_shape_never_break_a_probe() {
    let (_backend, svc) = healthy_service("").await;
    for q in [
        "?verbose=%ZZ",
        "?exclude",
        "?exclude=&exclude=%00",
        "?format=xml",
        "?verbose=0",
        "?&&&=&",
        "?exclude=%2F%2F",
    ] {
        let r = svc.get(&format!("/readyz{q}")).await;
        assert_eq!(r.status, 200, "{q}: {r:?}");
    }
    let r = svc.get("/readyz/%2e%2e/%2e%2e/etc/passwd").await;
    assert_eq!(r.status, 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_under_load_fails_no_in_flight_request() {
    let (_backend, mut svc) = healthy_service("[server]\nshutdown_delay = \"1s\"\n").await;
    let addr = svc.addr;
    let load = tokio::spawn(async move {
        let (mut ok, mut failed_during_delay) = (0u32, 0u32);
        let start = Instant::now();
        // Load for the whole delay; after the listener closes, connecting fails, which is expected.
        while start.elapsed() < Duration::from_millis(900) {
            match TcpStream::connect(addr).await {
                Ok(mut s) => {
                    let _ = s
                        .write_all(b"GET /livez HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                        .await;
                    let mut raw = Vec::new();
                    let _ = s.read_to_end(&mut raw).await;
                    if raw.starts_with(b"HTTP/1.1 200") {
                        ok += 1;
                    } else {
                        failed_during_delay += 1;
                    }
                }
                Err(_) => failed_during_delay += 1,
            }
        }
        (ok, failed_during_delay)
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    common::signal("TERM", svc.pid());
    let (ok, failed) = load.await.expect("load");
    assert!(ok > 10, "requests were served: {ok}");
    assert_eq!(
        failed, 0,
        "no request failed while the listener was still open"
    );
    assert_eq!(svc.wait_exit().await, Some(0));
}

#[tokio::test]
async fn probes_answer_while_the_api_hangs_and_a_slow_api_still_syncs() {
    let cp = SimControlPlane::start().await.expect("sim");
    // While the API answers nothing at all, a probe that returns cannot have waited on it: the API never
    // answers, so a probe waiting on it would hit the client's timeout (common::REQUEST_TIMEOUT) and fail.
    cp.api.set_hang(true);
    let dir = tempfile::tempdir().expect("dir");
    let kc = kubeconfig(&cp.api, dir.path());
    let svc = Service::start(&full_config(&cp.backend.url(), ""), &[("KUBECONFIG", &kc)]).await;
    common::eventually("a watch waiting on the hung API", async || {
        (cp.api.request_count() > 0).then_some(())
    })
    .await;
    for path in ["/readyz", "/healthz", "/readyz?verbose", "/livez"] {
        let r = svc.get(path).await;
        assert_ne!(r.status, 0, "{path} answered while the API hangs");
    }
    assert_eq!(svc.get("/readyz").await.status, 503, "not synced yet");
    cp.api.set_latency(Duration::from_millis(300));
    cp.api.set_hang(false);
    svc.wait_for("/readyz", "the slow sync", |r| r.status == 200)
        .await;
}

#[tokio::test]
async fn api_down_for_a_long_while_keeps_retrying_and_recovers() {
    let cp = SimControlPlane::start().await.expect("sim");
    let dir = tempfile::tempdir().expect("dir");
    let kc = kubeconfig(&cp.api, dir.path());
    let svc = Service::start(
        &full_config(&cp.backend.url(), ""),
        &[
            ("KUBECONFIG", &kc),
            ("KLUTCH_HEALTH_KUBERNETES__STALE_AFTER", "500ms"),
            // The probe finds the API back and restarts every watch at once, whatever their backoff.
            ("KLUTCH_HEALTH_KUBERNETES__PROBE_INTERVAL", "200ms"),
        ],
    )
    .await;
    svc.wait_for("/readyz", "the sync", |r| r.status == 200)
        .await;
    cp.api.set_down(true);
    svc.wait_for("/readyz?verbose", "stale", |r| {
        r.body.contains("broken since")
    })
    .await;
    // Long enough for each watch to fail again and again (backoff from 250ms): three restarts of the
    // providers watch, counted by the metric, not by the log under test.
    svc.wait_for("/metrics", "three failures of the providers watch", |r| {
        r.body.lines().any(|l| {
            l.strip_prefix(
                "klutch_health_watch_restarts_total{check=\"providers\",reason=\"failed\"} ",
            )
            .and_then(|n| n.trim().parse::<f64>().ok())
            .is_some_and(|n| n >= 3.0)
        })
    })
    .await;
    // Changes made while it is down are seen once it is back.
    cp.set_deployment_available("bind", "anynines-backend", false);
    let before = cp.api.request_count();
    cp.api.set_down(false);
    // Every watch is back (none still sleeping in its backoff, which can be far longer than this test's
    // deadline), and the change made while down is seen.
    svc.wait_for("/readyz?verbose", "the change made while down", |r| {
        r.body
            .contains("[-]anynines-backend/anynines-backend failed: Available is \"False\"")
            && !r.body.contains("broken since")
            && !r.body.contains("silent since")
            // A lost connection is not a refused WATCH: no `CHECK/_watch` warning outlives the outage.
            && !r.body.contains("/_watch warn")
    })
    .await;
    assert!(cp.api.request_count() > before, "it relisted");
    // The limiter logs a watch's first failure at once, then at most one line a minute while it lasts:
    // this outage lasted seconds and failed the watches several times, so each watch logged exactly once.
    let lines: Vec<String> = svc
        .logs()
        .into_iter()
        .filter(|l| l.contains("watch failed"))
        .collect();
    let mut per_watch = std::collections::BTreeMap::<String, usize>::new();
    for line in &lines {
        let event: serde_json::Value = serde_json::from_str(line).expect("a JSON log line");
        let watch = event["watch"].as_str().expect("the watch is named");
        *per_watch.entry(watch.to_string()).or_default() += 1;
    }
    assert!(!per_watch.is_empty(), "the outage was logged");
    assert!(
        per_watch.values().all(|n| *n == 1),
        "one line per watch while it fails: {per_watch:#?}\n{lines:#?}"
    );
}
