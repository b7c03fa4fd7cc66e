//! The HTTP API of the SPEC, through the real binary against a fake provider-anynines health server.

mod common;

use common::{backend_config, request, Service};
use klutch_sim::FakeBackend;

async fn degraded_backend() -> FakeBackend {
    let backend = FakeBackend::start().await.expect("fake backend");
    backend.set_entry("postgresql-service-broker", "ok");
    backend.set_entry("postgresql-backup-manager", "degraded");
    backend
}

async fn started(backend: &FakeBackend, extra: &str) -> Service {
    let svc = Service::start(&backend_config(&backend.url(), extra), &[]).await;
    svc.wait_for("/readyz?verbose", "the first poll", |r| {
        r.body.contains("postgresql")
    })
    .await;
    svc
}

#[tokio::test]
async fn failing_readyz_is_503_with_the_verbose_body_and_passing_is_200_ok() {
    let backend = degraded_backend().await;
    let svc = started(&backend, "").await;
    let r = svc.get("/readyz").await;
    assert_eq!(r.status, 503);
    assert_eq!(
        r.body,
        "[-]backend-status/postgresql-backup-manager failed: degraded\n\
         [+]backend-status/postgresql-service-broker ok\nreadyz check failed\n"
    );
    assert_eq!(r.header("cache-control"), Some("no-store"));

    backend.set_entry("postgresql-backup-manager", "ok");
    let r = svc
        .wait_for("/readyz", "recovery", |r| r.status == 200)
        .await;
    assert_eq!(r.body, "ok");
    let r = svc.get("/healthz?verbose").await;
    assert_eq!(
        r.body,
        "[+]backend-status/postgresql-backup-manager ok\n[+]backend-status/postgresql-service-broker ok\nhealthz check passed\n"
    );
}

#[tokio::test]
async fn head_answers_like_get_without_a_body() {
    let backend = degraded_backend().await;
    let svc = started(&backend, "").await;
    let r = request(svc.addr, "HEAD", "/readyz", &[]).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.body, "");
    let get = svc.get("/readyz").await;
    assert_eq!(
        r.header("content-length"),
        Some(get.body.len().to_string().as_str())
    );
}

#[tokio::test]
async fn exclude_is_repeatable_reports_excluded_items_and_unmatched_names() {
    let backend = degraded_backend().await;
    let svc = started(&backend, "").await;
    let r = svc
        .get(
            "/readyz?verbose&exclude=backend-status/postgresql-backup-manager&exclude=nothing-here",
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.body,
        "[+]backend-status/postgresql-service-broker ok\n\
         [+]backend-status/postgresql-backup-manager excluded: ok\n\
         warn: some health checks cannot be excluded: no matches for \"nothing-here\"\n\
         readyz check passed\n"
    );
    // Excluding the whole check excludes every item of it.
    let r = svc.get("/readyz?exclude=backend-status").await;
    assert_eq!((r.status, r.body.as_str()), (200, "ok"));
}

#[tokio::test]
async fn one_check_or_one_item_by_path_and_404_for_unknown_names() {
    let backend = degraded_backend().await;
    let svc = started(&backend, "").await;
    let r = svc
        .get("/readyz/backend-status/postgresql-service-broker")
        .await;
    assert_eq!((r.status, r.body.as_str()), (200, "ok"));
    let r = svc
        .get("/readyz/backend-status/postgresql-backup-manager")
        .await;
    assert_eq!(r.status, 503);
    assert_eq!(
        r.body,
        "[-]backend-status/postgresql-backup-manager failed: degraded\nreadyz check failed\n"
    );
    assert_eq!(svc.get("/readyz/backend-status").await.status, 503);
    assert_eq!(svc.get("/healthz/no-such-check").await.status, 404);
    assert_eq!(
        svc.get("/readyz/backend-status/no-such-item").await.status,
        404
    );
}

#[tokio::test]
async fn json_in_the_ietf_health_shape_by_accept_or_format() {
    let backend = degraded_backend().await;
    let svc = started(&backend, "").await;
    let r = svc
        .get_with("/readyz", &[("Accept", "application/health+json")])
        .await;
    assert_eq!(r.status, 503);
    assert_eq!(r.header("content-type"), Some("application/health+json"));
    let doc = r.json();
    assert_eq!(doc["status"], "fail");
    assert_eq!(doc["serviceId"], "klutch-health");
    assert_eq!(doc["description"], "Klutch control plane");
    assert_eq!(doc["version"], env!("CARGO_PKG_VERSION"));
    let items = doc["checks"]["backend-status"]
        .as_array()
        .expect("items of the check");
    let degraded = items
        .iter()
        .find(|i| i["componentId"] == "postgresql-backup-manager")
        .expect("item");
    assert_eq!(degraded["status"], "fail");
    assert_eq!(degraded["output"], "degraded");
    assert_eq!(degraded["componentType"], "backend-status");
    for key in ["time", "since"] {
        let t = degraded[key].as_str().expect("a time");
        assert!(
            t.parse::<jiff::Timestamp>().is_ok(),
            "{key} is RFC 3339: {t}"
        );
    }
    let ok = items
        .iter()
        .find(|i| i["componentId"] == "postgresql-service-broker")
        .expect("item");
    assert_eq!(ok["status"], "pass");
    assert!(ok.get("output").is_none(), "no output when passing: {ok}");

    let r = svc
        .get_with("/readyz", &[("Accept", "application/json")])
        .await;
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.json()["status"], "fail");
    let r = svc.get("/healthz?format=json").await;
    assert_eq!(r.header("content-type"), Some("application/health+json"));
    assert_eq!(
        r.json()["checks"]["backend-status"]
            .as_array()
            .map(Vec::len),
        Some(2)
    );
}

#[tokio::test]
async fn livez_passthrough_404_and_405() {
    let backend = degraded_backend().await;
    let svc = started(&backend, "").await;
    let r = svc.get("/livez").await;
    assert_eq!((r.status, r.body.as_str()), (200, "ok"));
    for path in ["/backend-health", "/backend-status"] {
        let r = svc.get(path).await;
        assert_eq!(r.status, 200, "the provider answers 200 even when degraded");
        assert_eq!(r.json()["postgresql-backup-manager"], "degraded");
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert!(
            r.header("age")
                .and_then(|a| a.parse::<u64>().ok())
                .is_some(),
            "Age header: {r:?}"
        );
    }
    assert_eq!(svc.get("/nope").await.status, 404);
    let r = request(svc.addr, "POST", "/readyz", &[]).await;
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("GET, HEAD"));
}

#[tokio::test]
async fn passthrough_is_503_before_the_first_good_poll() {
    let backend = FakeBackend::start().await.expect("fake backend");
    backend.set_mode(klutch_sim::BackendMode::Status500);
    let svc = Service::start(&backend_config(&backend.url(), ""), &[]).await;
    svc.wait_for("/readyz?verbose", "the failed poll", |r| {
        r.body.contains("endpoint failed")
    })
    .await;
    assert_eq!(svc.get("/backend-health").await.status, 503);
}

#[tokio::test]
async fn details_never_withholds_every_message_in_every_format() {
    let backend = degraded_backend().await;
    let svc = started(&backend, "[server]\ndetails = \"never\"\n").await;
    let text = svc.get("/readyz?verbose").await.body;
    assert!(
        text.contains("[-]backend-status/postgresql-backup-manager failed: reason withheld"),
        "{text}"
    );
    assert!(!text.contains("degraded"), "{text}");
    let json = svc.get("/readyz?format=json").await.body;
    assert!(
        json.contains("reason withheld") && !json.contains("degraded"),
        "{json}"
    );
    let page = svc.get("/").await.body;
    assert!(
        page.contains("reason withheld") && !page.contains("degraded"),
        "{page}"
    );
}

#[tokio::test]
async fn details_token_shows_messages_only_with_the_bearer_token() {
    let backend = degraded_backend().await;
    let dir = tempfile::tempdir().expect("dir");
    let token = dir.path().join("token");
    std::fs::write(&token, "s3cret\n").expect("token");
    let extra = format!(
        "[server]\ndetails = \"token\"\ntoken_file = \"{}\"\n",
        token.display()
    );
    let svc = started(&backend, &extra).await;
    let without = svc.get("/readyz?verbose").await.body;
    assert!(without.contains("reason withheld"), "{without}");
    let wrong = svc
        .get_with("/readyz?verbose", &[("Authorization", "Bearer nope")])
        .await
        .body;
    assert!(wrong.contains("reason withheld"), "{wrong}");
    let right = svc
        .get_with("/readyz?verbose", &[("Authorization", "Bearer s3cret")])
        .await
        .body;
    assert!(right.contains("failed: degraded"), "{right}");
    assert!(
        !svc.logs().iter().any(|l| l.contains("s3cret")),
        "the token is never logged"
    );
}

#[tokio::test]
async fn status_page_escapes_messages() {
    let backend = FakeBackend::start().await.expect("fake backend");
    backend.set_entry("postgresql-evil", "<script>alert(1)</script>");
    let svc = started(&backend, "").await;
    let page = svc.get("/").await;
    assert_eq!(page.status, 200);
    assert!(page
        .header("content-type")
        .is_some_and(|c| c.starts_with("text/html")));
    assert!(
        page.body.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{}",
        page.body
    );
    assert!(!page.body.contains("<script>"), "{}", page.body);
}

#[tokio::test]
async fn probes_cause_no_upstream_calls_and_the_connection_is_kept_alive() {
    let backend = degraded_backend().await;
    let svc = started(&backend, "").await;
    let before = backend.request_count();
    let started = std::time::Instant::now();
    for _ in 0..300 {
        assert_eq!(svc.get("/readyz").await.status, 503);
    }
    let polls = backend.request_count() - before;
    // Polls every 100 ms happen anyway; 300 probes must add nothing on top.
    let allowed = (started.elapsed().as_millis() / 100) as usize + 2;
    assert!(
        polls <= allowed,
        "{polls} upstream requests in {:?} (at most {allowed})",
        started.elapsed()
    );
    assert_eq!(
        backend.connection_count(),
        1,
        "one kept-alive connection serves every poll"
    );
}
