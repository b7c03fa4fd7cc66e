//! The `backend-status` signal against every way provider-anynines' health server can answer or fail.

use crate::common;

use std::time::Instant;

use common::{backend_config, Service};
use klutch_health::checks::backend_status::parse_body;
use klutch_health::verdict::report::Status;
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
                    l.starts_with("[-]backend-status/_endpoint failed") && l.contains(expected)
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
async fn status_500_fails_the_poll_item_turns_others_unknown_and_is_passed_through() {
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
    assert_eq!(
        (pass.status, pass.body.as_str()),
        (500, "Failed to list provider configs"),
        "the passthrough is the last poll's outcome, never the older 200"
    );
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
        if r.body.contains("_endpoint failed") {
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
            "body is JSON but not an object (an array)",
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
    // A 10 KB message is kept bounded, saying how much was cut.
    let long = format!(
        r#"{{"pc":"{}","n":[{}1]}}"#,
        "m".repeat(10_000),
        "1,".repeat(5000)
    );
    for (_, status, message) in parse_body(long.as_bytes()).expect("an object") {
        assert_eq!(status, Status::Fail);
        assert!(
            message.len() <= 1024 && message.ends_with(" bytes cut)"),
            "{} bytes: {message}",
            message.len()
        );
    }
    assert!(parse_body(b"nope").is_err());
    assert!(parse_body(b"null").is_err());
}

#[tokio::test]
async fn the_endpoint_item_names_the_url_the_status_and_the_body() {
    let backend = healthy_backend().await;
    let svc = service(&backend).await;
    let body = fault(&svc, &backend, BackendMode::Status500, "answered 500").await;
    let url = backend.url();
    assert_eq!(
        body,
        format!(
            "[-]backend-status/_endpoint failed: GET {url}: answered 500 Internal Server Error: \"Failed to list provider configs\"\n\
             [-]backend-status/postgresql-service-broker failed: not known: the last poll failed (see backend-status/_endpoint) (cause: backend-status/_endpoint)\n\
             root cause: backend-status/_endpoint (GET {url}: answered 500 Internal Server Error: \"Failed to list provider configs\") explains 1 item\n\
             readyz check failed\n"
        )
    );
    // unknown = pass on readyz: only the endpoint item fails.
    drop(svc);
    backend.set_mode(BackendMode::Healthy);
    let config = backend_config(&backend.url(), "[endpoints.readyz]\nunknown = \"pass\"\n");
    let svc = Service::start(&config, &[]).await;
    svc.wait_for("/readyz", "the first good poll", |r| r.status == 200)
        .await;
    let body = fault(&svc, &backend, BackendMode::Status500, "answered 500").await;
    assert!(
        body.contains("[+]backend-status/postgresql-service-broker ok\n"),
        "{body}"
    );
}

#[tokio::test]
async fn a_slow_answer_within_timeout_passes_and_one_past_it_fails() {
    let backend = healthy_backend().await;
    let svc = service(&backend).await;
    backend.set_mode(BackendMode::Slow(std::time::Duration::from_millis(50)));
    backend.set_entry("postgresql-backup-manager", "ok");
    // The new entry can only show through a slow answer.
    svc.wait_for("/readyz?verbose", "the slow answer", |r| {
        r.status == 200 && r.body.contains("postgresql-backup-manager ok")
    })
    .await;
    let body = fault(
        &svc,
        &backend,
        BackendMode::Slow(std::time::Duration::from_secs(3)),
        "no answer within 500ms: the health server hangs or is overloaded",
    )
    .await;
    assert!(
        body.contains("postgresql-backup-manager failed: not known"),
        "{body}"
    );
    recover(&svc, &backend).await;
}

#[tokio::test]
async fn items_follow_the_keys_of_the_body() {
    let backend = healthy_backend().await;
    let svc = service(&backend).await;
    backend.set_entry("postgresql-new", "degraded");
    svc.wait_for("/readyz?verbose", "the new key", |r| {
        r.body
            .contains("[-]backend-status/postgresql-new failed: degraded")
    })
    .await;
    backend.set_entries([("postgresql-service-broker".to_string(), "ok".to_string())].into());
    let r = svc
        .wait_for("/readyz?verbose", "the key to go", |r| r.status == 200)
        .await;
    assert_eq!(
        r.body,
        "[+]backend-status/postgresql-service-broker ok\nreadyz check passed\n"
    );
    assert_eq!(
        svc.get("/readyz/backend-status/postgresql-new")
            .await
            .status,
        404
    );
}

#[tokio::test]
async fn an_upstream_that_never_answered_well_leaves_only_the_poll_item() {
    let backend = healthy_backend().await;
    backend.set_mode(BackendMode::Refuse);
    let svc = Service::start(&backend_config(&backend.url(), ""), &[]).await;
    let r = svc
        .wait_for("/readyz?verbose", "the refused poll", |r| {
            r.body.contains("cannot connect")
        })
        .await;
    assert_eq!(r.status, 503);
    let lines: Vec<&str> = r.body.lines().collect();
    assert_eq!(lines.len(), 2, "{}", r.body);
    assert!(
        lines[0].starts_with(&format!(
            "[-]backend-status/_endpoint failed: GET {}: cannot connect",
            backend.url()
        )),
        "{}",
        r.body
    );
    assert_eq!(svc.get("/backend-health").await.status, 502);
    recover(&svc, &backend).await;
    assert_eq!(svc.get("/backend-health").await.status, 200);
}

#[test]
fn parse_body_names_what_is_wrong() {
    let kind = |body: &[u8]| parse_body(body).expect_err("not an object").to_string();
    for (body, article) in [
        (&b"[\"ok\"]"[..], "an array"),
        (b"\"ok\"", "a string"),
        (b"42", "a number"),
        (b"true", "a boolean"),
        (b"null", "null"),
    ] {
        assert_eq!(
            kind(body),
            format!(
                "body is JSON but not an object ({article}); expected {{\"PROVIDERCONFIG\": \"ok\", …}}"
            )
        );
    }
    let e = kind(b"<html>502</html>");
    assert!(
        e.starts_with("body is not valid JSON (expected value at line 1 column 1)"),
        "{e}"
    );
    assert!(e.ends_with(": \"<html>502</html>\""), "{e}");
    // Control characters never break the one-line message; long bodies are cut.
    let e = kind(b"not json\nsecond line");
    assert!(!e.contains('\n'), "{e}");
    let long = vec![b'x'; 5000];
    let e = kind(&long);
    assert!(e.ends_with("…\""), "{e}");
    assert!(e.len() < 400, "{} characters", e.len());
    assert!(
        kind(b"").starts_with("body is not valid JSON (EOF"),
        "{}",
        kind(b"")
    );
    assert!(parse_body(b"{\"a\":\"ok\"} trailing").is_err());
}

#[test]
fn parse_body_passes_only_the_exact_value_ok() {
    let items = parse_body(
        br#"{"a":"ok","b":"OK","c":" ok","d":null,"e":{"status":"ok"},"f":true,"g":""}"#,
    )
    .expect("an object");
    let got: Vec<(&str, Status, &str)> = items
        .iter()
        .map(|(n, s, m)| (n.as_str(), *s, m.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            ("a", Status::Pass, "ok"),
            ("b", Status::Fail, "OK"),
            ("c", Status::Fail, " ok"),
            ("d", Status::Fail, "unexpected value null"),
            ("e", Status::Fail, "unexpected value {\"status\":\"ok\"}"),
            ("f", Status::Fail, "unexpected value true"),
            ("g", Status::Fail, ""),
        ]
    );
    // Whitespace around the document is fine; the provider's own fixtures parse.
    assert_eq!(parse_body(b" \n{\"a\":\"ok\"}\n").expect("object").len(), 1);
    for fixture in ["backend-health-ok.json", "backend-health-degraded.json"] {
        let path = format!("{}/tests/fixtures/{fixture}", env!("CARGO_MANIFEST_DIR"));
        let body = std::fs::read(&path).expect("fixture");
        let items = parse_body(&body).expect("the provider's body parses");
        assert!(!items.is_empty(), "{fixture}");
        let failing = items.iter().filter(|(_, s, _)| *s == Status::Fail).count();
        assert_eq!(failing > 0, fixture.contains("degraded"), "{fixture}");
    }
}
