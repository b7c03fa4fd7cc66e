//! The shipped RBAC, proven by the real authorizer: klutch-health as its ServiceAccount, with exactly what
//! `kubectl apply -k deploy` installs, syncs every shipped check, writes Events, holds the Lease and reloads
//! without one refused request; without any one rule it says what to grant, and recovers once it is back.

use klutch_sim::real::KLUTCH_HEALTH;

use crate::estate::{get, until, wait_for, Estate, NAMESPACE};

/// Every item of the shipped checks on the seeded estate.
pub const SHIPPED_ITEMS: [&str; 13] = [
    "backend-status/postgresql-service-broker",
    "backend-status/postgresql-backup-manager",
    "providers/provider-anynines",
    "providers/provider-kubernetes",
    "configurations/anynines-dataservices",
    "functions/function-patch-and-transform",
    "provider-configs/postgresql-service-broker",
    "provider-configs/postgresql-backup-manager",
    "anynines-backend/anynines-backend",
    "provider-pods/provider-anynines-3f2a9c1b7e5d-6b8f9c7d5-x2x7q",
    "konnectors/kube-bind-7xk2p",
    "konnectors/kube-bind-m4n8q",
    "konnectors/kube-bind-z9t3w",
];

const PC: &str = "postgresql-backup-manager";

/// `/readyz?verbose` passes with every shipped item `ok`.
pub fn all_ok(body: &str) -> bool {
    SHIPPED_ITEMS
        .iter()
        .all(|item| body.contains(&format!("[+]{item} ok\n")))
}

#[tokio::test]
async fn the_shipped_rbac_syncs_every_check_writes_events_holds_the_lease_and_reloads_without_a_403(
) {
    let mut estate = Estate::shared().await;
    let svc = estate.shipped().await;
    let r = wait_for(&svc, "/readyz?verbose", "every shipped check synced", |r| {
        r.status == 200 && all_ok(&r.body)
    })
    .await;
    assert!(!r.body.contains("[-]"), "{}", r.body);

    // The Lease: created and held by this replica.
    let lease = until("the Events Lease", async || {
        get(
            &estate.admin,
            &format!(
                "/apis/coordination.k8s.io/v1/namespaces/{NAMESPACE}/leases/klutch-health-events"
            ),
        )
        .await
        .filter(|l| l["spec"]["holderIdentity"] == "klutch-health-0")
    })
    .await;
    assert_eq!(lease["spec"]["leaseDurationSeconds"], 30, "{lease}");

    // A transition: an Event the real API accepted, regarding the ProviderConfig, in `default`.
    estate
        .sim
        .degrade_provider_config(PC, "backup manager unreachable");
    estate.mirror.caught_up().await.expect("mirrored");
    let r = wait_for(
        &svc,
        "/readyz?verbose",
        "the degraded ProviderConfig",
        |r| {
            r.body.contains(&format!(
                "[-]provider-configs/{PC} failed: backup manager unreachable"
            ))
        },
    )
    .await;
    assert_eq!(r.status, 503, "{}", r.body);
    let event = until(
        "klutch-health's Event about the ProviderConfig",
        async || {
            let events = get(
                &estate.admin,
                "/apis/events.k8s.io/v1/namespaces/default/events",
            )
            .await?;
            events["items"]
                .as_array()?
                .iter()
                .find(|e| e["regarding"]["name"] == PC && e["reason"] == "CheckFailed")
                .cloned()
        },
    )
    .await;
    assert_eq!(event["reportingController"], "klutch-health", "{event}");
    assert_eq!(event["regarding"]["kind"], "ProviderConfig", "{event}");
    estate.sim.heal_provider_config(PC);
    estate.mirror.caught_up().await.expect("mirrored");
    wait_for(&svc, "/readyz?verbose", "the healed ProviderConfig", |r| {
        r.status == 200 && all_ok(&r.body)
    })
    .await;

    // A reload: the file changes, the new description is served.
    let path = svc.dir.path().join("config.toml");
    let config = std::fs::read_to_string(&path).expect("config");
    std::fs::write(
        &path,
        config.replace(
            "description = \"Klutch control plane\"",
            "description = \"reloaded\"",
        ),
    )
    .expect("write config");
    wait_for(
        &svc,
        "/readyz?format=json",
        "the reloaded description",
        |r| r.json()["description"] == "reloaded",
    )
    .await;

    // The whole run: not one request refused, by the server's audit log and by klutch-health's logs.
    assert!(
        estate
            .cp
            .audit_events()
            .iter()
            .any(|e| e["user"]["username"] == KLUTCH_HEALTH.user()),
        "the audit log records klutch-health's requests"
    );
    assert_eq!(estate.refused(), Vec::<String>::new());
    let logs = svc.logs();
    let refusals: Vec<&String> = logs
        .iter()
        .filter(|l| l.contains("forbidden") || l.contains("403"))
        .collect();
    assert!(refusals.is_empty(), "{refusals:#?}");
}
