//! The history through the real binary: `/history` lists each item's and each endpoint's transitions after a
//! degrade and a heal (messages withheld as `details` says), and the status page draws them as timelines that
//! real headless Chromium renders (a screenshot in light and dark mode is left for people to look at).

use crate::common;

use common::chromium::{dump_dom, screenshot};
use common::{backend_config, eventually, Service};
use jiff::Timestamp;
use klutch_sim::FakeBackend;
use serde_json::Value;

const ITEM: &str = "backend-status/postgresql-backup-manager";

fn statuses(series: &Value) -> Vec<&str> {
    series
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["status"].as_str())
        .collect()
}

fn time(v: &Value) -> Timestamp {
    v.as_str()
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("not a time: {v}"))
}

/// A service whose one ProviderConfig failed and healed again, the failure lasting about as long as the
/// time before it, so that a timeline shows it plainly.
async fn degraded_and_healed(extra: &str) -> (FakeBackend, Service) {
    let backend = FakeBackend::start().await.expect("fake backend");
    backend.set_entry("postgresql-service-broker", "ok");
    backend.set_entry("postgresql-backup-manager", "ok");
    let svc = Service::start(&backend_config(&backend.url(), extra), &[]).await;
    svc.wait_for("/readyz", "the first poll", |r| r.status == 200)
        .await;
    backend.set_entry("postgresql-backup-manager", "degraded: connection refused");
    svc.wait_for("/readyz", "the failure", |r| r.status == 503)
        .await;
    eventually(
        "the failure to last as long as the time before it",
        async || {
            let h = svc.get("/history").await.json();
            let failed = h["items"][ITEM]
                .as_array()?
                .iter()
                .find(|t| t["status"] == "fail")
                .map(|t| time(&t["time"]))?;
            let since = time(&h["since"]);
            (Timestamp::now().duration_since(failed) >= failed.duration_since(since)).then_some(())
        },
    )
    .await;
    backend.set_entry("postgresql-backup-manager", "ok");
    svc.wait_for("/readyz", "the recovery", |r| r.status == 200)
        .await;
    (backend, svc)
}

#[tokio::test(flavor = "multi_thread")]
async fn history_lists_the_transitions_of_items_and_endpoints() {
    let (_backend, svc) = degraded_and_healed("").await;
    let r = svc.get("/history").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let h = r.json();
    assert_eq!(
        statuses(&h["items"][ITEM]),
        ["pass", "fail", "pass"],
        "{h:#}"
    );
    assert_eq!(
        statuses(&h["items"]["backend-status/postgresql-service-broker"]),
        ["pass"]
    );
    let fail = &h["items"][ITEM][1];
    assert_eq!(fail["message"], "degraded: connection refused");
    assert!(time(&h["since"]) <= time(&fail["time"]) && time(&fail["time"]) <= time(&h["now"]));
    for endpoint in ["readyz", "healthz"] {
        // Before the first poll an endpoint may start out warning or failing on `unknown`.
        let series = h["endpoints"][endpoint].as_array().expect("a list");
        let last = &series[series.len().saturating_sub(3)..];
        assert_eq!(
            statuses(&Value::from(last.to_vec())),
            ["pass", "fail", "pass"],
            "{endpoint}: {h:#}"
        );
        assert_eq!(last[1]["message"], format!("fail: {ITEM}"));
        assert!(last[0].get("message").is_none(), "a pass has no message");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn history_withholds_messages_as_details_says() {
    let (_backend, svc) = degraded_and_healed("[server]\ndetails = \"never\"\n").await;
    let h = svc.get("/history").await.json();
    assert_eq!(statuses(&h["items"][ITEM]), ["pass", "fail", "pass"]);
    assert_eq!(h["items"][ITEM][1]["message"], "reason withheld");
    let page = svc.get("/").await.body;
    assert!(!page.contains("connection refused"), "{page}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_page_draws_a_timeline_per_endpoint_and_item_with_shares() {
    let (_backend, svc) = degraded_and_healed("").await;
    let url = format!("http://{}/", svc.addr);
    let dom = tokio::task::block_in_place(|| dump_dom(&url));
    let section = dom
        .split_once("<section class=\"timelines\">")
        .map(|(_, s)| s)
        .unwrap_or_else(|| panic!("no timelines in {dom}"));
    for label in [
        "/readyz",
        "/healthz",
        ITEM,
        "backend-status/postgresql-service-broker",
    ] {
        assert!(
            section.contains(&format!("aria-label=\"timeline of {label}\"")),
            "{label} in {section}"
        );
    }
    let row = section
        .split("<div class=\"tl\">")
        .find(|r| r.contains(&format!("timeline of {ITEM}")))
        .expect("the item's row");
    let rects: Vec<&str> = row
        .split("<rect class=\"")
        .skip(1)
        .filter_map(|r| r.split('"').next())
        .filter(|class| *class != "none")
        .collect();
    // (`none`: the moment before the first poll.)
    assert_eq!(rects, ["pass", "fail", "pass"], "{row}");
    let share = |status: &str| -> f64 {
        let text = row.split("class=\"share\">").nth(1).unwrap_or_default();
        let text = text.split('<').next().unwrap_or_default();
        text.split(" · ")
            .find_map(|p| p.strip_prefix(&format!("{status} ")))
            .and_then(|p| p.split('%').next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no {status} share in {row}"))
    };
    // The failure lasted about as long as the time before it: a large share, and shares add up.
    assert!(share("fail") > 5.0, "{row}");
    assert!(share("pass") > share("fail"), "{row}");
    assert!(row.contains("<title>fail from "), "{row}");
    assert!(
        row.contains("degraded: connection refused</title>"),
        "{row}"
    );

    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("screenshots");
    std::fs::create_dir_all(&dir).expect("screenshot dir");
    for (dark, name) in [(false, "history-light.png"), (true, "history-dark.png")] {
        let path = dir.join(name);
        tokio::task::block_in_place(|| screenshot(&url, &path, dark, (900, 1400)));
        eprintln!("screenshot: {}", path.display());
    }
}
