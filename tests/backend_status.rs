//! The `backend-status` signal against every way provider-anynines' health server can answer or fail.

mod common;

use std::time::Instant;

use common::{backend_config, Service};
use klutch_health::report::Status;
use klutch_health::signals::backend_status::parse_body;
use klutch_sim::{BackendMode, FakeBackend};

async fn healthy_backend() -> FakeBackend {
    let backend = FakeBackend::start().await.expect("fake backend");
    backend.set_entry("postgresql-service-broker", "ok");
    backend
}

/// Drives the backend into `mode` and returns the verbose `/readyz` once the endpoint item fails with
/// `expected` in its message.
async fn fault(svc: &Service, backend: &FakeBackend, mode: BackendMode, expected: &str) -> String {
    backend.set_mode(mode.clone());
    let r = svc
        .wait_for(
            "/readyz?verbose",
            &format!("{mode:?} to fail with {expected:?}"),
            |r| {
                r.body.lines().any(|l| {
                    l.starts_with("[-]backend-status/endpoint failed") && l.contains(expected)
                })
            },
        )
        .await;
    assert_eq!(r.status, 503);
    r.body
}

async fn recover(svc: &Service, backend: &FakeBackend) {
    backend.set_mode(BackendMode::Healthy);
    let r = svc
        .wait_for("/readyz?verbose", "recovery", |r| r.status == 200)
        .await;
    assert!(!r.body.contains("endpoint"), "{}", r.body);
}

async fn service(backend: &FakeBackend) -> Service {
    let config = backend_config(&backend.url(), "") + "max_body = 4096\n";
    let svc = Service::start(&config, &[]).await;
    svc.wait_for("/readyz", "the first good poll", |r| r.status == 200)
        .await;
    svc
}

#[tokio::test]
async fn degraded_fails_although_the_status_is_200() {
    let backend = healthy_backend().await;
    let svc = service(&backend).await;
    backend.set_entry("postgresql-backup-manager", "degraded");
    let r = svc
        .wait_for("/readyz?verbose", "the degraded entry", |r| r.status == 503)
        .await;
    assert!(
        r.body
            .contains("[-]backend-status/postgresql-backup-manager failed: degraded"),
        "{}",
        r.body
    );
}

#[tokio::test]
async fn status_500_fails_the_endpoint_item_turns_others_unknown_and_keeps_the_last_good_body() {
    let backend = healthy_backend().await;
    let svc = service(&backend).await;
    let body = fault(
        &svc,
        &backend,
        BackendMode::Status500,
        "answered 500 Internal Server Error: \"Failed to list provider configs\"",
    )
    .await;
    assert!(
        body.contains(
            "[-]backend-status/postgresql-service-broker failed: not known: the last poll failed"
        ),
        "an earlier item is unknown, which readyz counts as failed: {body}"
    );
    let healthz = svc.get("/healthz?verbose").await.body;
    assert!(
        healthz.contains("[+]backend-status/postgresql-service-broker warn: not known"),
        "{healthz}"
    );
    let pass = svc.get("/backend-health").await;
    assert_eq!(pass.status, 200);
    assert_eq!(pass.json()["postgresql-service-broker"], "ok");
    recover(&svc, &backend).await;
}

#[tokio::test]
async fn a_hung_upstream_fails_within_timeout_while_probes_keep_answering() {
    let backend = healthy_backend().await;
    let svc = service(&backend).await;
    backend.set_mode(BackendMode::Hang);
    // The upstream never answers now: every probe that returns was answered from the cached report.
    let start = Instant::now();
    let body = loop {
        let r = svc.get("/readyz?verbose").await;
        if r.body.contains("endpoint failed") {
            break r.body;
        }
        assert!(
            start.elapsed() < common::DEADLINE,
            "no verdict during the hang"
        );
    };
    assert!(body.contains("no answer within 500ms"), "{body}");
    recover(&svc, &backend).await;
}

#[tokio::test]
async fn garbage_not_object_huge_truncated_reset_and_refused_each_say_what_happened() {
    let backend = healthy_backend().await;
    let svc = service(&backend).await;
    let cases = [
        (BackendMode::Garbage, "body is not valid JSON"),
        (
            BackendMode::NotObject,
            "body is JSON but not an object (a array)",
        ),
        (
            BackendMode::Huge(100_000),
            "body is larger than max_body (4096 bytes)",
        ),
        (BackendMode::Truncated, "body cannot be read"),
        (BackendMode::Reset, "request failed"),
        (BackendMode::Refuse, "cannot connect"),
    ];
    for (mode, expected) in cases {
        fault(&svc, &backend, mode, expected).await;
        recover(&svc, &backend).await;
    }
}

#[test]
fn parse_body_maps_values_to_items() {
    let items = parse_body(br#"{"a":"ok","b":"degraded","c":42}"#).expect("an object");
    let got: Vec<(&str, Status, &str)> = items
        .iter()
        .map(|(n, s, m)| (n.as_str(), *s, m.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            ("a", Status::Pass, "ok"),
            ("b", Status::Fail, "degraded"),
            ("c", Status::Fail, "unexpected value 42")
        ]
    );
    assert!(parse_body(b"{}").expect("empty object").is_empty());
    assert!(parse_body(b"nope").is_err());
    assert!(parse_body(b"null").is_err());
}
