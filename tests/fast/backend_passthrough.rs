//! `/backend-health` and `/backend-status` serve the last poll's outcome through every way provider-anynines'
//! health server can answer or fail: never an older `200`, never upstream's content type.

use crate::common;

use common::{backend_config, Resp, Service};
use klutch_sim::{BackendMode, FakeBackend};

/// What the passthrough must answer for one upstream mode.
struct Expect {
    mode: BackendMode,
    status: u16,
    json: bool,
    /// The body, or a part of its one line when the passthrough explains a missing answer.
    body: &'static str,
}

const fn expect(mode: BackendMode, status: u16, json: bool, body: &'static str) -> Expect {
    Expect {
        mode,
        status,
        json,
        body,
    }
}

fn check(r: &Resp, e: &Expect, path: &str) {
    let what = format!("{:?} on {path}: {r:?}", e.mode);
    assert_eq!(r.status, e.status, "{what}");
    let ct = if e.json {
        "application/json"
    } else {
        "text/plain; charset=utf-8"
    };
    assert_eq!(r.header("content-type"), Some(ct), "{what}");
    assert_eq!(
        r.header("x-content-type-options"),
        Some("nosniff"),
        "{what}"
    );
    assert_eq!(r.header("cache-control"), Some("no-store"), "{what}");
    let age: u64 = r
        .header("age")
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("an Age header: {what}"));
    assert!(age < 10, "{what}");
    if e.status >= 502 {
        assert!(r.body.contains(e.body), "{what}");
        assert_eq!(r.body.lines().count(), 1, "one line: {what}");
    } else {
        assert_eq!(r.body, e.body, "{what}");
    }
}

#[tokio::test]
async fn every_upstream_mode_is_passed_through_as_the_last_outcome() {
    let backend = FakeBackend::start().await.expect("fake backend");
    backend.set_entry("pg", "ok");
    let config = backend_config(&backend.url(), "") + "max_body = 4096\n";
    let svc = Service::start(&config, &[]).await;
    let healthy = expect(BackendMode::Healthy, 200, true, r#"{"pg":"ok"}"#);
    let cases = [
        expect(
            BackendMode::Status500,
            500,
            false,
            "Failed to list provider configs",
        ),
        expect(BackendMode::Hang, 504, false, "no answer within 500ms"),
        expect(BackendMode::Refuse, 502, false, "cannot connect"),
        expect(BackendMode::Reset, 502, false, "request failed"),
        expect(BackendMode::Truncated, 502, false, "body cannot be read"),
        expect(
            BackendMode::Huge(100_000),
            502,
            false,
            "body is larger than max_body (4096 bytes)",
        ),
        expect(
            BackendMode::Garbage,
            200,
            false,
            "<html><body>502 Bad Gateway</body></html>",
        ),
        // Labelled text/html upstream: served as what it is, JSON.
        expect(BackendMode::Html, 200, true, r#"{"pg":"ok"}"#),
        // Passed through byte for byte, duplicates and all.
        expect(
            BackendMode::DuplicateKeys,
            200,
            true,
            r#"{"pg":"degraded","pg":"ok"}"#,
        ),
        expect(BackendMode::NotObject, 200, true, r#"["ok"]"#),
    ];
    for e in std::iter::once(&healthy).chain(&cases) {
        // From a good answer into the mode, so that no case can pass by showing an older outcome.
        for step in [&healthy, e] {
            backend.set_mode(step.mode.clone());
            svc.wait_for("/backend-health", &format!("{:?}", step.mode), |r| {
                r.status == step.status && r.body.contains(step.body)
            })
            .await;
        }
        for path in ["/backend-health", "/backend-status"] {
            check(&svc.get(path).await, e, path);
        }
    }
}

/// The passthrough belongs to its check: a reload that removes the check ends it (`404`), never the last
/// poll served forever with a growing `Age`.
#[tokio::test]
async fn a_reload_that_removes_the_backend_status_check_ends_the_passthrough() {
    let backend = FakeBackend::start().await.expect("fake backend");
    backend.set_entry("postgresql-service-broker", "ok");
    let svc = Service::start(&backend_config(&backend.url(), ""), &[]).await;
    svc.wait_for("/backend-health", "the first poll passed through", |r| {
        r.status == 200
    })
    .await;
    let only_pods = "[[check]]\nname = \"provider-pods\"\ntype = \"pods\"\n";
    std::fs::write(svc.dir.path().join("config.toml"), only_pods).expect("write config");
    common::signal("HUP", svc.pid());
    let r = svc
        .wait_for("/backend-health", "the passthrough to end", |r| {
            r.status == 404
        })
        .await;
    assert_eq!(
        r.body,
        "404 no backend-status check is configured, so there is no poll to pass through\n"
    );
}
