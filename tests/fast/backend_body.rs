//! Odd bodies of provider-anynines' health server: duplicate keys, `{}`, keys that are no Kubernetes names or
//! look like the poll's own item, and thousands of keys, which must never flood the log.

use crate::common;

use common::{backend_config, Service};
use klutch_health::checks::backend_status::{item_name, parse_body, ENDPOINT_ITEM};
use klutch_health::verdict::report::Status;
use klutch_sim::{BackendMode, FakeBackend, OddEntries};

async fn serving(entries: OddEntries, interval: &str) -> (FakeBackend, Service) {
    let backend = FakeBackend::start().await.expect("fake backend");
    backend.set_entries(entries.entries());
    let config = backend_config(&backend.url(), "").replace("100ms", interval);
    let svc = Service::start(&config, &[]).await;
    (backend, svc)
}

#[test]
fn a_duplicated_key_counts_with_its_worst_value_in_either_order() {
    for body in [
        &br#"{"pg":"degraded","pg":"ok"}"#[..],
        br#"{"pg":"ok","pg":"degraded","pg":"ok"}"#,
    ] {
        let items = parse_body(body).expect("an object");
        assert_eq!(items.len(), 1, "{items:?}");
        let (name, status, message) = &items[0];
        assert_eq!((name.as_str(), *status), ("pg", Status::Fail));
        assert!(
            message.starts_with("degraded (the key appears ")
                && message.ends_with(" times; the worst value counts)"),
            "{message}"
        );
    }
    let items = parse_body(br#"{"pg":"ok","pg":"ok"}"#).expect("an object");
    assert_eq!(items[0].1, Status::Pass);
}

#[test]
fn keys_that_are_no_kubernetes_names_are_percent_encoded() {
    for valid in [
        "postgresql-service-broker",
        "a",
        "a.b-c.d9",
        "endpoint",
        "none",
        "watch",
    ] {
        assert_eq!(item_name(valid), valid);
    }
    for (key, item) in [
        ("_endpoint", "%5Fendpoint"),
        ("_none", "%5Fnone"),
        (":endpoint", "%3Aendpoint"),
        ("Upper", "%55pper"),
        ("bad\nINFO forged", "bad%0A%49%4E%46%4F%20forged"),
        ("name with spaces", "name%20with%20spaces"),
        ("%20", "%2520"),
        ("ü", "%C3%BC"),
        ("", ""),
    ] {
        assert_eq!(item_name(key), item, "{key:?}");
    }
    assert_eq!(item_name(&"a".repeat(254)), "a".repeat(254));
    // The poll's own item is out of reach of every key.
    assert!(ENDPOINT_ITEM.starts_with('_'));
    assert_ne!(item_name(ENDPOINT_ITEM), ENDPOINT_ITEM);
}

#[tokio::test]
async fn duplicate_keys_from_the_upstream_fail_the_item() {
    let backend = FakeBackend::start().await.expect("fake backend");
    backend.set_entry("pg", "ok");
    backend.set_mode(BackendMode::DuplicateKeys);
    let svc = Service::start(&backend_config(&backend.url(), ""), &[]).await;
    let r = svc
        .wait_for("/readyz?verbose", "the duplicate", |r| {
            r.body.contains("pg")
        })
        .await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(
        r.body
            .contains("[-]backend-status/pg failed: degraded (the key appears 2 times"),
        "{}",
        r.body
    );
}

#[tokio::test]
async fn an_empty_object_shows_the_none_item_and_the_check_stays_addressable() {
    let (_backend, svc) = serving(OddEntries::Empty, "100ms").await;
    let r = svc
        .wait_for("/readyz?verbose", "the none item", |r| {
            r.body.contains("backend-status/_none")
        })
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.body,
        "[+]backend-status/_none warn: provider-anynines' health server lists no ProviderConfig ({})\n\
         readyz check passed\n"
    );
    assert_eq!(svc.get("/readyz/backend-status").await.status, 200);
    assert_eq!(svc.get("/readyz/backend-status/_none").await.status, 200);
}

#[tokio::test]
async fn an_upstream_key_named_like_the_poll_item_stays_its_own_item() {
    let (backend, svc) = serving(OddEntries::Endpoint, "100ms").await;
    svc.wait_for("/readyz?verbose", "the endpoint key", |r| {
        r.body
            .contains("[-]backend-status/endpoint failed: degraded")
    })
    .await;
    backend.set_mode(BackendMode::Status500);
    let r = svc
        .wait_for("/readyz?verbose", "the failed poll", |r| {
            r.body.contains("_endpoint failed")
        })
        .await;
    assert!(
        r.body
            .contains("[-]backend-status/endpoint failed: not known: the last poll failed"),
        "{}",
        r.body
    );
    assert!(
        r.body.contains("[-]backend-status/_endpoint failed: GET "),
        "{}",
        r.body
    );
    assert_eq!(
        svc.get("/readyz/backend-status/_endpoint").await.status,
        503
    );
}
