//! The HTML status page, rendered by real headless Chromium, reads as a person would want: both verdicts,
//! what needs attention, every item with its status, message, since-when and how each endpoint counts it,
//! the last upstream poll; escaped; no JavaScript; `details` respected.

use crate::common;

use common::chromium::dump_dom;
use common::{backend_config, Service};
use klutch_sim::{BackendMode, FakeBackend};

/// The text a person reads: the body without tags, entities decoded, whitespace collapsed.
fn text_of(dom: &str) -> String {
    let body = dom.split_once("<body").map_or(dom, |(_, b)| b);
    let mut out = String::new();
    let mut in_tag = true; // the rest of `<body …>`
    for c in body.chars() {
        match c {
            '<' => in_tag = true,
            '>' if in_tag => {
                in_tag = false;
                out.push(' ');
            }
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    let out = out
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&nbsp;", " ")
        .replace("&amp;", "&");
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

async fn render(svc: &Service) -> (String, String) {
    let url = format!("http://{}/", svc.addr);
    let dom = tokio::task::block_in_place(|| dump_dom(&url));
    let text = text_of(&dom);
    (dom, text)
}

fn has(haystack: &str, needles: &[&str]) {
    for n in needles {
        assert!(haystack.contains(n), "{n:?} missing in:\n{haystack}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn chromium_renders_verdicts_items_and_escaped_messages() {
    let backend = FakeBackend::start().await.expect("fake backend");
    backend.set_entry("postgresql-service-broker", "ok");
    backend.set_entry(
        "postgresql-backup-manager",
        "<script>document.title='owned'</script>",
    );
    let svc = Service::start(&backend_config(&backend.url(), ""), &[]).await;
    svc.wait_for("/readyz", "the first poll", |r| r.status == 503)
        .await;
    let (dom, text) = render(&svc).await;
    has(
        &text,
        &[
            "/readyz failing",
            "/healthz failing",
            "1 failing · 1 ok",
            "Needs attention (1)",
            "backend-status backend-status · 1 of 2 need attention",
            "postgresql-service-broker pass pass since",
            "postgresql-backup-manager fail",
            "/readyz: fail /healthz: fail",
            "provider-anynines' health server last polled",
            " UTC",
        ],
    );
    // The message is text on the page, not a script that ran.
    has(
        &text,
        &["<script>document.title='owned'</script> /readyz: fail"],
    );
    assert!(!dom.contains("<script"), "the page has no script: {dom}");
    assert!(
        dom.contains("<title>✗ Klutch control plane: failing</title>"),
        "{dom}"
    );
    // Since-when, relative and absolute (machine-readable too).
    assert!(dom.contains("<time datetime=\"20"), "{dom}");
    assert!(
        dom.contains("http-equiv=\"refresh\""),
        "refreshes itself without JavaScript"
    );
    assert!(dom.contains("name=\"viewport\""), "readable on a phone");
    // The attention list links to the item's card.
    let anchor = dom
        .split("<a href=\"#")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("a link to a card");
    assert!(dom.contains(&format!("id=\"{anchor}\"")), "{dom}");

    backend.set_entry("postgresql-backup-manager", "ok");
    svc.wait_for("/readyz", "the recovery", |r| r.status == 200)
        .await;
    let (dom, text) = render(&svc).await;
    has(
        &text,
        &[
            "/readyz passing",
            "/healthz passing",
            "all 2 ok",
            "postgresql-backup-manager pass pass since",
        ],
    );
    assert!(!text.contains("Needs attention"), "{text}");
    assert!(
        dom.contains("<title>✓ Klutch control plane: all passing</title>"),
        "{dom}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn each_endpoint_says_how_it_counts_an_item_and_the_poll_is_shown() {
    let backend = FakeBackend::start().await.expect("fake backend");
    backend.set_entry("pg", "ok");
    // healthz damps failures for an hour; readyz counts them at once.
    let config = backend_config(
        &backend.url(),
        "require = 2\n[endpoints.healthz]\nfail_after = \"1h\"\n",
    );
    let svc = Service::start(&config, &[]).await;
    svc.wait_for("/readyz?verbose", "the first poll", |r| {
        r.body.contains("[+]backend-status/pg ok")
    })
    .await;
    let (_, text) = render(&svc).await;
    // One item of two required: the policy's own item is on the page too.
    has(
        &text,
        &[
            "require fail 1 items, 2 required",
            "/readyz: fail /healthz: fail",
        ],
    );

    backend.set_entry("pg2", "ok");
    backend.set_entry("pg", "degraded");
    svc.wait_for("/readyz?verbose", "pg failing", |r| {
        r.body.contains("[-]backend-status/pg failed: degraded")
    })
    .await;
    let (_, text) = render(&svc).await;
    has(
        &text,
        &[
            "/readyz failing",
            "/healthz passing, with warnings",
            "pg fail degraded /readyz: fail /healthz: warn",
            "counts as failed after 1h",
            "pg2 pass",
        ],
    );
    assert!(!text.contains("require fail"), "{text}");

    // A dead upstream: the endpoint item fails, the last good answer is dated.
    backend.set_mode(BackendMode::Status500);
    svc.wait_for("/readyz?verbose", "the failed poll", |r| {
        r.body.contains("[-]backend-status/_endpoint failed")
    })
    .await;
    let (_, text) = render(&svc).await;
    has(
        &text,
        &[
            "endpoint fail GET http://",
            "answered 500",
            "pg2 unknown not known: the last poll failed",
            "last polled",
            "last good answer",
        ],
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn details_never_shows_statuses_and_names_but_no_reason() {
    let backend = FakeBackend::start().await.expect("fake backend");
    backend.set_entry("pg", "degraded: secret host db-7.internal");
    let config = backend_config(
        &backend.url(),
        "[server]\ndetails = \"never\"\n[endpoints.healthz]\nfail_after = \"1h\"\n",
    );
    let svc = Service::start(&config, &[]).await;
    svc.wait_for("/readyz", "the first poll", |r| r.status == 503)
        .await;
    let (dom, text) = render(&svc).await;
    has(
        &text,
        &[
            "pg fail reason withheld /readyz: fail /healthz: warn",
            "/readyz failing",
        ],
    );
    assert!(!dom.contains("db-7.internal"), "{dom}");
    assert!(
        !dom.contains("counts as failed"),
        "policy notes withheld too: {dom}"
    );
}
