//! Events and the Lease against the real API server: what klutch-health writes passes the real validation,
//! `kubectl describe` (the real kubectl of the same release) shows it on the object, a repeat becomes a
//! series, and of two replicas only the Lease holder writes.

use klutch_realcp::KLUTCH_HEALTH;
use serde_json::Value;

use crate::estate::{get, until, wait_for, Estate, NAMESPACE};
use crate::rbac::all_ok;

const PC: &str = "postgresql-backup-manager";

/// klutch-health's Events regarding the ProviderConfig.
async fn events_about_pc(estate: &Estate) -> Vec<Value> {
    get(
        &estate.admin,
        "/apis/events.k8s.io/v1/namespaces/default/events",
    )
    .await
    .and_then(|e| e["items"].as_array().cloned())
    .unwrap_or_default()
    .into_iter()
    .filter(|e| e["regarding"]["name"] == PC && e["reportingController"] == "klutch-health")
    .collect()
}

#[tokio::test]
async fn kubectl_describe_shows_the_event_a_repeat_is_a_series_and_only_the_lease_holder_writes() {
    let mut estate = Estate::shared().await;
    let first = estate
        .klutch_health(KLUTCH_HEALTH, "klutch-health-a", None, |_| {})
        .await;
    let lease =
        format!("/apis/coordination.k8s.io/v1/namespaces/{NAMESPACE}/leases/klutch-health-events");
    until("klutch-health-a to hold the Lease", async || {
        get(&estate.admin, &lease)
            .await
            .filter(|l| l["spec"]["holderIdentity"] == "klutch-health-a")
    })
    .await;
    let second = estate
        .klutch_health(KLUTCH_HEALTH, "klutch-health-b", None, |_| {})
        .await;
    for svc in [&first, &second] {
        wait_for(svc, "/readyz?verbose", "every shipped check synced", |r| {
            all_ok(&r.body)
        })
        .await;
    }

    // A failure, a recovery, the same failure again: one Warning Event with a series of 2, one Normal.
    estate
        .sim
        .degrade_provider_config(PC, "backup manager unreachable");
    estate.mirror.caught_up().await.expect("mirrored");
    until("the Warning Event", async || {
        let events = events_about_pc(&estate).await;
        events
            .iter()
            .any(|e| e["reason"] == "CheckFailed")
            .then_some(())
    })
    .await;
    estate.sim.heal_provider_config(PC);
    estate.mirror.caught_up().await.expect("mirrored");
    until("the Normal Event", async || {
        let events = events_about_pc(&estate).await;
        events
            .iter()
            .any(|e| e["reason"] == "CheckRecovered")
            .then_some(())
    })
    .await;
    estate
        .sim
        .degrade_provider_config(PC, "backup manager unreachable");
    estate.mirror.caught_up().await.expect("mirrored");
    let warning = until("the repeat as a series", async || {
        let events = events_about_pc(&estate).await;
        events
            .into_iter()
            .find(|e| e["reason"] == "CheckFailed" && e["series"]["count"] == 2)
    })
    .await;
    assert_eq!(warning["type"], "Warning", "{warning}");

    let events = events_about_pc(&estate).await;
    let warnings = events
        .iter()
        .filter(|e| e["reason"] == "CheckFailed")
        .count();
    assert_eq!(warnings, 1, "a repeat updates the series: {events:#?}");
    assert!(
        events
            .iter()
            .all(|e| e["reportingInstance"] == "klutch-health-a"),
        "only the Lease holder writes: {events:#?}"
    );

    // The real kubectl shows it where an operator looks.
    let described = estate
        .cp
        .kubectl(
            &["describe", "providerconfigs.dataservices.anynines.com", PC],
            None,
        )
        .await
        .expect("kubectl describe");
    let events_section = described
        .split("Events:")
        .nth(1)
        .unwrap_or_else(|| panic!("no Events in\n{described}"));
    assert!(
        events_section.contains("Warning")
            && events_section.contains("CheckFailed")
            && events_section.contains("klutch-health")
            && events_section.contains("backup manager unreachable"),
        "{described}"
    );
    assert!(
        events_section.contains("(x2 over"),
        "the series shows as a count: {described}"
    );
    drop(second);
}
