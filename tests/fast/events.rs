//! Kubernetes Events through the real binary against the fake API server: one Event per transition of an
//! item's observed status (none for the initial state), regarding the object concerned; one writer among
//! replicas (the Lease holder); a failing Events API changes no verdict. What real kubectl shows of them:
//! tests/full/events.rs.

use crate::common;

use common::events::{events_about_pc, holder, replica, sim, wait_event, NAMESPACE, PC};
use common::{eventually, full_config};
use klutch_health::config::Config;
use klutch_health::publish::events;
use klutch_sim::control_plane::PROVIDER_CONFIG_API;

#[tokio::test]
async fn a_degraded_provider_config_makes_one_warning_and_healing_one_normal_event() {
    let cp = sim().await;
    let _svc = replica(&cp, "klutch-health-a", None).await;
    assert_eq!(holder(&cp).await, "klutch-health-a");
    assert!(
        cp.api.list("events.k8s.io/v1", "Event").is_empty(),
        "the initial state makes no Event"
    );

    cp.degrade_provider_config(PC, "connection refused by pg-backup.internal:5432");
    let warning = wait_event(&cp, "Warning").await;
    let uid = cp
        .api
        .get(PROVIDER_CONFIG_API, "ProviderConfig", None, PC)
        .expect("pc")["metadata"]["uid"]
        .clone();
    assert_eq!(warning["regarding"]["uid"], uid);
    assert_eq!(warning["regarding"]["apiVersion"], PROVIDER_CONFIG_API);
    assert_eq!(
        warning["metadata"]["namespace"], "default",
        "cluster-scoped: default"
    );
    assert_eq!(
        (
            warning["reason"].as_str(),
            warning["reportingController"].as_str(),
            warning["reportingInstance"].as_str(),
        ),
        (
            Some("CheckFailed"),
            Some("klutch-health"),
            Some("klutch-health-a")
        )
    );
    assert_eq!(
        warning["note"],
        format!("provider-configs/{PC} is fail: connection refused by pg-backup.internal:5432")
    );

    cp.heal_provider_config(PC);
    let normal = wait_event(&cp, "Normal").await;
    assert_eq!(normal["reason"], "CheckRecovered");
    let all = events_about_pc(&cp);
    assert_eq!(all.len(), 2, "one Event per transition: {all:#?}");
}

#[tokio::test]
async fn with_two_replicas_only_the_lease_holder_writes_and_repeats_become_a_series() {
    let cp = sim().await;
    let a = replica(&cp, "klutch-health-a", None).await;
    let b = replica(&cp, "klutch-health-b", None).await;
    let leader = holder(&cp).await;
    for svc in [&a, &b] {
        svc.wait_for("/readyz", "both replicas synced", |r| r.status == 200)
            .await;
    }

    let message = "connection refused";
    cp.degrade_provider_config(PC, message);
    wait_event(&cp, "Warning").await;
    cp.heal_provider_config(PC);
    wait_event(&cp, "Normal").await;
    cp.degrade_provider_config(PC, message);
    let series = eventually(
        "the repeated failure to count in the Event's series",
        async || {
            events_about_pc(&cp)
                .into_iter()
                .find(|e| e["type"] == "Warning" && e["series"]["count"] == 2)
        },
    )
    .await;
    assert!(series["series"]["lastObservedTime"].is_string(), "{series}");

    let all = events_about_pc(&cp);
    let of = |t: &str| all.iter().filter(|e| e["type"] == t).count();
    assert_eq!((of("Warning"), of("Normal")), (1, 1), "{all:#?}");
    assert!(
        all.iter()
            .all(|e| e["reportingInstance"] == leader.as_str()),
        "only {leader} writes: {all:#?}"
    );
}

#[tokio::test]
async fn a_failing_events_api_changes_no_verdict() {
    let cp = sim().await;
    cp.api.set_failing_writes("events", true);
    let svc = replica(&cp, "klutch-health-a", None).await;
    holder(&cp).await;
    cp.degrade_provider_config(PC, "connection refused");
    let failing = svc
        .wait_for("/readyz?verbose", "readyz to fail", |r| r.status == 503)
        .await;
    assert!(
        failing.body.contains(&format!(
            "[-]provider-configs/{PC} failed: connection refused"
        )),
        "{}",
        failing.body
    );
    eventually("the failed Event write to be logged", async || {
        svc.logs()
            .iter()
            .find(|l| l.contains("cannot write a Kubernetes Event"))
            .cloned()
    })
    .await;
    cp.heal_provider_config(PC);
    svc.wait_for("/readyz", "readyz to pass again", |r| r.status == 200)
        .await;
    assert!(cp.api.list("events.k8s.io/v1", "Event").is_empty());
}

#[tokio::test]
async fn events_off_takes_no_lease_and_writes_no_event() {
    let cp = sim().await;
    let svc = replica(&cp, "klutch-health-a", Some(false)).await;
    cp.degrade_provider_config(PC, "connection refused");
    svc.wait_for("/readyz", "readyz to fail", |r| r.status == 503)
        .await;
    cp.heal_provider_config(PC);
    svc.wait_for("/readyz", "readyz to pass again", |r| r.status == 200)
        .await;
    assert!(cp.api.list("events.k8s.io/v1", "Event").is_empty());
    assert!(cp.api.list("coordination.k8s.io/v1", "Lease").is_empty());
}

#[tokio::test]
async fn a_repeat_after_its_event_expired_makes_a_new_event() {
    let cp = sim().await;
    let _svc = replica(&cp, "klutch-health-a", None).await;
    holder(&cp).await;
    cp.degrade_provider_config(PC, "connection refused");
    let first = wait_event(&cp, "Warning").await;
    let name = first["metadata"]["name"].as_str().expect("name");
    // The API server drops Events after their TTL (an hour by default).
    assert!(cp
        .api
        .delete("events.k8s.io/v1", "Event", Some("default"), name));
    cp.heal_provider_config(PC);
    wait_event(&cp, "Normal").await;
    cp.degrade_provider_config(PC, "connection refused");
    let again = wait_event(&cp, "Warning").await;
    assert_ne!(again["metadata"]["name"], name, "{again}");
    assert!(
        again.get("series").is_none(),
        "a new Event, not a series: {again}"
    );
}

/// A konnector's ClusterBinding lives in its consumer's namespace: its Event goes there (where `kubectl
/// describe` shows it), and the RBAC derived from the configuration (which `tests/full/deploy.rs` holds the shipped
/// manifests to) covers that namespace. Events only in the watched namespaces known in advance once left
/// these out: the writes were refused.
#[tokio::test]
async fn a_konnectors_event_goes_to_its_consumer_namespace_which_the_rbac_covers() {
    let app = klutch_sim::estate::APP_CLUSTERS[0];
    let cp = sim().await;
    cp.seed_estate(std::time::Duration::from_secs(2));
    let svc = replica(&cp, "klutch-health-a", None).await;
    holder(&cp).await;
    svc.wait_for("/readyz?verbose", "the konnector's first heartbeat", |r| {
        r.body.contains(&format!("[+]konnectors/{app} ok"))
    })
    .await;
    assert!(cp.silence_konnector(app, true));
    let event = eventually("a Warning Event about the silent konnector", async || {
        cp.api
            .list("events.k8s.io/v1", "Event")
            .into_iter()
            .find(|e| e["regarding"]["kind"] == "ClusterBinding" && e["type"] == "Warning")
    })
    .await;
    assert_eq!(event["regarding"]["namespace"], app, "{event}");
    assert_eq!(event["metadata"]["namespace"], app, "{event}");
    let config = Config::from_toml(&full_config(&cp.backend.url(), "")).expect("config");
    let covered = events::permissions(&config, NAMESPACE)
        .into_iter()
        .any(|p| {
            p.resource == "events"
                && p.verb == "create"
                && p.namespace.as_deref().is_none_or(|ns| ns == app)
        });
    assert!(covered, "the RBAC derived from the config covers {app}");
}

/// An AppClusterBinding's item regards the binding: its Event goes to the binding's namespace, where
/// `kubectl describe appclusterbinding` shows why klutch-health counts it as failing.
#[tokio::test]
async fn an_app_cluster_bindings_event_regards_the_binding_in_its_namespace() {
    let cp = sim().await;
    cp.seed_estate(std::time::Duration::from_secs(2));
    let svc = replica(&cp, "klutch-health-a", None).await;
    holder(&cp).await;
    svc.wait_for("/readyz?verbose", "the binding judged", |r| {
        r.body.contains("[+]app-cluster-bindings/team-a.prod ok")
    })
    .await;
    assert!(cp.remove_app_konnector("team-a", "prod"));
    let event = eventually("a Warning Event about the binding", async || {
        cp.api
            .list("events.k8s.io/v1", "Event")
            .into_iter()
            .find(|e| e["regarding"]["kind"] == "AppClusterBinding" && e["type"] == "Warning")
    })
    .await;
    assert_eq!(
        (
            &event["regarding"]["name"],
            &event["regarding"]["namespace"],
            &event["metadata"]["namespace"],
            &event["regarding"]["apiVersion"]
        ),
        (
            &"prod".into(),
            &"team-a".into(),
            &"team-a".into(),
            &"klutch.anynines.com/v1alpha1".into()
        ),
        "{event}"
    );
    assert!(
        event["note"].as_str().is_some_and(
            |n| n.starts_with("app-cluster-bindings/team-a.prod is fail: konnector Deployment")
        ),
        "{event}"
    );
}

/// An item's Warning Event names the root cause that explains it: `kubectl describe provider
/// provider-anynines` then points at the crash-looping pod.
#[tokio::test]
async fn a_warning_event_names_the_root_cause_of_its_item() {
    const POD: &str = "provider-anynines-3f2a9c1b7e5d-6b8f9c7d5-x2x7q";
    let cp = sim().await;
    let svc = replica(&cp, "klutch-health-a", None).await;
    holder(&cp).await;
    // The kubelet sees the container crash first; Crossplane marks the Provider unhealthy after.
    cp.api.update(
        "v1",
        "Pod",
        Some("crossplane-system"),
        POD,
        klutch_sim::pods::crash_loop,
    );
    svc.wait_for("/readyz", "the pod not Ready", |r| {
        r.body.contains(&format!("[-]provider-pods/{POD} failed: "))
    })
    .await;
    cp.set_provider_healthy("provider-anynines", false);
    let warning = eventually("a Warning Event about the Provider", async || {
        cp.api
            .list("events.k8s.io/v1", "Event")
            .into_iter()
            .find(|e| e["regarding"]["kind"] == "Provider" && e["type"] == "Warning")
    })
    .await;
    let note = warning["note"].as_str().unwrap_or_default();
    assert!(
        note.starts_with("providers/provider-anynines is fail: Healthy is \"False\"")
            && note.ends_with(&format!(" (cause: provider-pods/{POD})")),
        "{note}"
    );
    // The pod's own Event names no cause: it is the root.
    let pod = eventually("a Warning Event about the pod", async || {
        cp.api
            .list("events.k8s.io/v1", "Event")
            .into_iter()
            .find(|e| e["regarding"]["kind"] == "Pod" && e["regarding"]["name"] == POD)
    })
    .await;
    assert!(
        !pod["note"].as_str().unwrap_or_default().contains("(cause:"),
        "{pod}"
    );
}
