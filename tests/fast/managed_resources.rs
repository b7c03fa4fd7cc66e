//! Can Klutch serve its users? provider-anynines' managed resources through the real binary and the
//! simulator: one item per kind, counted and named; one tenant's fault warns, a broker's fault fails; the
//! deadline of a resource stuck creating fires with no event; a missing CRD is its kind's `unknown`.

use crate::common;

use common::{line, Service};
use klutch_sim::{ManagedKind, ManagedState, SimControlPlane};

const KINDS: [&str; 4] = ["serviceinstances", "servicebindings", "backups", "restores"];

fn series(kind: &str, state: &str) -> String {
    format!(
        "klutch_health_managed_resources{{check=\"managed-resources\",kind=\"{kind}\",state=\"{state}\"}}"
    )
}

/// The items of check `check` in a health+json document.
fn json_items(doc: &serde_json::Value, check: &str) -> Vec<serde_json::Value> {
    doc["checks"][check].as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn each_kind_is_one_item_that_counts_its_resources_in_text_json_the_page_and_metrics() {
    let cp = SimControlPlane::start()
        .await
        .expect("simulated control plane");
    let svc = Service::synced(&cp, "", &[]).await;
    let body = svc.get("/readyz?verbose").await.body;
    for kind in KINDS {
        assert_eq!(
            line(&body, &format!("managed-resources/{kind}")),
            format!("[+]managed-resources/{kind} ok")
        );
    }
    assert!(!body.contains("managed-resources/_watch"), "{body}");
    // A passing kind's counts show in JSON output and on the status page.
    let doc = svc.get("/readyz?format=json").await.json();
    let items = json_items(&doc, "managed-resources");
    assert_eq!(items.len(), 4, "{doc}");
    let instances = items
        .iter()
        .find(|i| i["componentId"] == "serviceinstances")
        .expect("serviceinstances");
    assert_eq!(
        (
            instances["status"].as_str(),
            instances["output"].as_str(),
            instances["componentType"].as_str()
        ),
        (
            Some("pass"),
            Some("1 of 1 ready"),
            Some("managed-resources")
        )
    );
    let page = svc.get("/").await.body;
    assert!(page.contains("1 of 1 ready"), "the page shows it");
    let metrics = svc.get("/metrics").await.body;
    for (kind, state, n) in [
        ("serviceinstances", "ready", 1.0),
        ("serviceinstances", "failing", 0.0),
        ("backups", "superseded", 0.0),
        ("restores", "ready", 1.0),
    ] {
        assert_eq!(
            common::metric_value(&metrics, &format!("{} ", series(kind, state))),
            Some(n),
            "{kind} {state}"
        );
    }
    // The same counts under Crossplane's names, labelled as crossplane-runtime labels them.
    for (kind, n) in [("ServiceInstance", 1.0), ("Restore", 1.0)] {
        for gauge in ["exists", "ready", "synced"] {
            let series = format!(
                "crossplane_managed_resource_{gauge}{{gvk=\"dataservices.anynines.com/v1, Kind={kind}\"}} "
            );
            assert_eq!(common::metric_value(&metrics, &series), Some(n), "{series}");
        }
    }

    // No resources at all: a kind passes with its words in JSON.
    assert!(cp.remove_managed(ManagedKind::Restore, "pg-prod-7-restore"));
    let doc = svc
        .wait_for("/readyz?format=json", "no restores", |r| {
            r.body.contains("\"no restores\"")
        })
        .await
        .json();
    let restores = json_items(&doc, "managed-resources")
        .into_iter()
        .find(|i| i["componentId"] == "restores")
        .expect("restores");
    assert_eq!(restores["status"], "pass");
    // With details withheld, a passing item's words are not shown.
    let public = svc.public_addr().await;
    let withheld = common::request(public, "GET", "/readyz?format=json", &[]).await;
    assert!(!withheld.body.contains("of 1 ready"), "{}", withheld.body);
}

#[tokio::test]
async fn one_tenants_failure_warns_and_a_brokers_systemic_failure_fails_readyz() {
    let cp = SimControlPlane::start()
        .await
        .expect("simulated control plane");
    cp.add_many_managed(
        ManagedKind::ServiceInstance,
        30,
        ManagedState::Ready,
        Some("postgresql-service-broker"),
    );
    let svc = Service::synced(&cp, "", &[]).await;
    assert!(cp.set_managed(
        ManagedKind::ServiceInstance,
        "pg-prod-7",
        ManagedState::Failing
    ));
    let r = svc
        .wait_for("/readyz?verbose", "one failing instance", |r| {
            r.body
                .contains("[+]managed-resources/serviceinstances warn:")
        })
        .await;
    assert_eq!(
        r.status, 200,
        "one tenant's fault does not drain the control plane"
    );
    assert_eq!(
        line(&r.body, "managed-resources/serviceinstances"),
        "[+]managed-resources/serviceinstances warn: 30 of 31 ready, 1 failing: pg-prod-7 (Synced=False, ReconcileError: create failed: cannot provision: quota exceeded for plan postgresql-single-nano)"
    );
    let doc = svc.get("/readyz?format=json").await.json();
    let output = json_items(&doc, "managed-resources")
        .into_iter()
        .find(|i| i["componentId"] == "serviceinstances")
        .map(|i| i["output"].clone())
        .expect("the item");
    assert_eq!(
        output,
        "30 of 31 ready, 1 failing: pg-prod-7 (providerConfigRef postgresql-service-broker; Synced=False, ReconcileError: create failed: cannot provision: quota exceeded for plan postgresql-single-nano)"
    );

    // Every Redis instance of one broker fails: a systemic fault of that broker.
    cp.add_many_managed(
        ManagedKind::ServiceInstance,
        4,
        ManagedState::Failing,
        Some("redis-service-broker"),
    );
    let r = svc
        .wait_for("/readyz?verbose", "the broker's fault", |r| r.status == 503)
        .await;
    let failed = line(&r.body, "managed-resources/serviceinstances");
    // One reason, five resources: counted once, with the first three names.
    assert!(
        failed.starts_with(
            "[-]managed-resources/serviceinstances failed: 30 of 35 ready, 5 failing: 5× Synced=False, \
ReconcileError: create failed: cannot provision: quota exceeded for plan postgresql-single-nano — pg-prod-7, \
redis-service-broker-failing-00000, redis-service-broker-failing-00001 and 2 more;"
        ),
        "{failed}"
    );
    let doc = svc.get("/readyz?format=json").await.json();
    let instances = json_items(&doc, "managed-resources")
        .into_iter()
        .find(|i| i["componentId"] == "serviceinstances")
        .expect("serviceinstances");
    let output = instances["output"].as_str().unwrap_or_default();
    assert!(
        output.contains(
            "5× Synced=False, ReconcileError: create failed: cannot provision: quota exceeded for plan \
postgresql-single-nano — pg-prod-7 (providerConfigRef postgresql-service-broker), \
redis-service-broker-failing-00000 (providerConfigRef redis-service-broker)"
        ),
        "{output}"
    );
    let page = svc.get("/").await.body;
    assert!(
        page.contains("5× Synced=False, ReconcileError: create failed"),
        "the page shows the group"
    );
    assert!(
        failed.ends_with("; at least 3 and more than 10% of one ProviderConfig's serviceinstances fail: redis-service-broker (4 of 4 failing)"),
        "{failed}"
    );
    svc.wait_for("/metrics", "the failing count", |m| {
        common::metric_value(
            &m.body,
            &format!("{} ", series("serviceinstances", "failing")),
        ) == Some(5.0)
    })
    .await;
}

/// A minimal configuration: only a managed-resources check, with `keys` added to it (no Events, so that
/// nothing but the simulator's own changes moves its resourceVersion).
fn managed_only(keys: &str) -> String {
    format!(
        "[kubernetes]\nstale_after = \"1s\"\nprobe_interval = \"500ms\"\nprobe_timeout = \"500ms\"\nevents = false\n\n\
         [[check]]\nname = \"managed-resources\"\ntype = \"managed-resources\"\n{keys}\n"
    )
}

#[tokio::test]
async fn a_resource_creating_too_long_fails_by_the_clock_with_no_event() {
    let cp = SimControlPlane::start()
        .await
        .expect("simulated control plane");
    let svc = Service::against(&cp, &managed_only("create_timeout = \"3s\""), &[]).await;
    svc.wait_for("/readyz", "the initial sync", |r| r.status == 200)
        .await;
    assert!(cp.set_managed(ManagedKind::Backup, "slow", ManagedState::Creating));
    svc.wait_for(
        "/readyz/managed-resources/backups?format=json",
        "creating",
        |r| {
            r.status == 200
                && r.body
                    .contains("\"0 of 1 ready (1 superseded), 1 creating\"")
        },
    )
    .await;
    let events_before = cp.api.resource_version();
    let r = svc
        .wait_for("/readyz?verbose", "the deadline", |r| {
            r.body.contains("[+]managed-resources/backups warn:")
        })
        .await;
    assert_eq!(
        cp.api.resource_version(),
        events_before,
        "no change of any object meanwhile"
    );
    let warned = line(&r.body, "managed-resources/backups");
    assert!(
        warned.starts_with("[+]managed-resources/backups warn: 0 of 1 ready (1 superseded), 1 failing: slow (creating since "),
        "{warned}"
    );
    assert!(
        warned.ends_with(", longer than create_timeout 3s (Ready=False, Creating))"),
        "{warned}"
    );
}

#[tokio::test]
async fn a_missing_crd_is_the_unknown_of_its_kind_alone_and_its_return_is_seen() {
    let cp = SimControlPlane::start()
        .await
        .expect("simulated control plane");
    let svc = Service::against(&cp, &managed_only(""), &[]).await;
    svc.wait_for("/readyz", "the initial sync", |r| r.status == 200)
        .await;
    assert!(cp.api.set_crd("backups.dataservices.anynines.com", false));
    let r = svc
        .wait_for("/readyz?verbose", "backups unknown", |r| {
            r.body.contains("[-]managed-resources/backups failed:")
        })
        .await;
    assert_eq!(r.status, 503);
    let failed = line(&r.body, "managed-resources/backups");
    assert!(
        failed.ends_with("the API server no longer serves backups.dataservices.anynines.com: is provider-anynines installed?"),
        "{failed}"
    );
    for kind in ["serviceinstances", "servicebindings", "restores"] {
        assert!(
            line(&r.body, &format!("managed-resources/{kind}")).ends_with(" ok"),
            "{kind} is not blamed:\n{}",
            r.body
        );
    }
    assert!(cp.api.set_crd("backups.dataservices.anynines.com", true));
    svc.wait_for(
        "/readyz/managed-resources/backups?format=json",
        "backups back",
        |r| r.status == 200 && r.body.contains("\"no backups\""),
    )
    .await;
}
