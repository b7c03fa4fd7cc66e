//! The opt-in Klutch estate: every package kind, konnectors heartbeating into ClusterBindings, and their faults.

use std::time::{Duration, Instant};

use hyper::body::Incoming;
use klutch_sim::estate::{APP_CLUSTERS, CLUSTER_BINDING_API};
use klutch_sim::{PackageHealth, PackageKind, SimControlPlane};
use serde_json::Value;

use crate::common;
use common::{events, get, names, send, TIMEOUT};

const BEAT: Duration = Duration::from_millis(600);

async fn estate() -> SimControlPlane {
    let cp = SimControlPlane::start().await.expect("start");
    cp.seed_estate(BEAT);
    cp
}

/// The next heartbeat (a MODIFIED ClusterBinding) of any konnector, within the test's deadline.
async fn next_beat(body: &mut Incoming) -> Value {
    let deadline = Instant::now() + TIMEOUT;
    while Instant::now() < deadline {
        let e = events(body, 1).await;
        if e.first().is_some_and(|e| e["type"] == "MODIFIED") {
            return e[0]["object"].clone();
        }
    }
    panic!("no heartbeat within {TIMEOUT:?}");
}

fn time(v: &Value) -> jiff::Timestamp {
    v.as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("a time: {v}"))
}

#[tokio::test]
async fn the_estate_has_every_package_kind_and_three_bound_app_clusters() {
    let cp = estate().await;
    let (_, providers) = get(&cp.api, "/apis/pkg.crossplane.io/v1/providers").await;
    assert_eq!(
        names(&providers),
        ["provider-anynines", "provider-kubernetes"]
    );
    let (_, configurations) = get(&cp.api, "/apis/pkg.crossplane.io/v1/configurations").await;
    assert_eq!(names(&configurations), ["anynines-dataservices"]);
    let (_, functions) = get(&cp.api, "/apis/pkg.crossplane.io/v1/functions").await;
    assert_eq!(names(&functions), ["function-patch-and-transform"]);
    let (_, bindings) = get(
        &cp.api,
        "/apis/klutch.anynines.com/v1alpha1/clusterbindings",
    )
    .await;
    let namespaces: Vec<&str> = bindings["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|b| b["metadata"]["namespace"].as_str())
        .collect();
    assert_eq!(namespaces, APP_CLUSTERS);
    assert!(names(&bindings).iter().all(|n| n == "cluster"));
    assert_eq!(bindings["items"][0]["status"]["heartbeatInterval"], "600ms");

    let default = SimControlPlane::start().await.expect("start");
    let (_, none) = get(&default.api, "/apis/pkg.crossplane.io/v1/functions").await;
    assert!(
        names(&none).is_empty(),
        "the default control plane is unchanged"
    );
}

#[tokio::test]
async fn konnectors_heartbeat_with_their_clock_and_the_servers_write_time() {
    let cp = estate().await;
    let rv = cp.api.resource_version();
    let ns = APP_CLUSTERS[0];
    cp.skew_konnector(ns, 3600);
    let path = format!("/apis/klutch.anynines.com/v1alpha1/namespaces/{ns}/clusterbindings?watch=true&resourceVersion={rv}");
    let mut body = send(&cp.api, &path).await.into_body();
    let beat = next_beat(&mut body).await;
    assert!(
        beat["metadata"]["resourceVersion"]
            .as_str()
            .and_then(|r| r.parse::<u64>().ok())
            > Some(rv)
    );
    let write = &beat["metadata"]["managedFields"][0];
    assert_eq!(
        (write["subresource"].as_str(), write["manager"].as_str()),
        (Some("status"), Some("konnector"))
    );
    let skew = time(&beat["status"]["lastHeartbeatTime"]).duration_since(time(&write["time"]));
    assert!(
        skew.as_secs() >= 3599 && skew.as_secs() <= 3601,
        "the konnector's clock runs an hour ahead: {skew:?}"
    );

    assert!(cp.silence_konnector(ns, true));
    // A beat already chosen may still land; after that, nothing for well over the interval.
    let _ = tokio::time::timeout(BEAT, next_beat(&mut body)).await;
    let silent = tokio::time::timeout(BEAT * 2, next_beat(&mut body)).await;
    assert!(silent.is_err(), "a silenced konnector writes no heartbeat");
    assert!(cp.silence_konnector(ns, false));
    next_beat(&mut body).await;
    assert!(
        !cp.silence_konnector("kube-bind-nobody", true),
        "no such app cluster"
    );
}

#[tokio::test]
async fn a_new_binding_heartbeats_too() {
    let cp = SimControlPlane::start().await.expect("start");
    cp.add_cluster_binding("kube-bind-new42", BEAT);
    let rv = cp.api.resource_version();
    let path = format!(
        "/apis/klutch.anynines.com/v1alpha1/clusterbindings?watch=true&resourceVersion={rv}"
    );
    let beat = next_beat(&mut send(&cp.api, &path).await.into_body()).await;
    assert_eq!(beat["metadata"]["namespace"], "kube-bind-new42");
    assert!(cp
        .api
        .get(
            CLUSTER_BINDING_API,
            "ClusterBinding",
            Some("kube-bind-new42"),
            "cluster"
        )
        .is_some());
    assert!(cp
        .api
        .get("v1", "Namespace", None, "kube-bind-new42")
        .is_some());
}

fn healthy(cp: &SimControlPlane, kind: &str, name: &str) -> Value {
    let obj = cp
        .api
        .get("pkg.crossplane.io/v1", kind, None, name)
        .expect("package");
    let conditions = obj["status"]["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    conditions
        .into_iter()
        .find(|c| c["type"] == "Healthy")
        .expect("a Healthy condition")
}

#[tokio::test]
async fn packages_turn_unhealthy_in_both_crossplane_wordings_and_lag_a_generation() {
    let cp = estate().await;
    assert!(cp.set_package_health(
        PackageKind::Function,
        "function-patch-and-transform",
        PackageHealth::UnhealthyV1
    ));
    let c = healthy(&cp, "Function", "function-patch-and-transform");
    assert_eq!(c["status"], "False");
    assert!(c["message"].as_str().is_some_and(|m| m.starts_with("post establish runtime hook failed for package: function package deployment is unavailable with message: ")), "{c}");
    assert!(cp.set_package_health(
        PackageKind::Configuration,
        "anynines-dataservices",
        PackageHealth::UnhealthyV2
    ));
    let c = healthy(&cp, "Configuration", "anynines-dataservices");
    assert!(
        c["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("Package runtime health is \"False\" with message: ")),
        "{c}"
    );
    assert!(cp.set_package_health(
        PackageKind::Configuration,
        "anynines-dataservices",
        PackageHealth::Healthy
    ));
    assert_eq!(
        healthy(&cp, "Configuration", "anynines-dataservices")["status"],
        "True"
    );
    assert!(!cp.set_package_health(
        PackageKind::Provider,
        "provider-nothing",
        PackageHealth::Healthy
    ));

    assert_eq!(
        cp.bump_package_generation(PackageKind::Provider, "provider-kubernetes"),
        Some(2)
    );
    let p = cp
        .api
        .get(
            "pkg.crossplane.io/v1",
            "Provider",
            None,
            "provider-kubernetes",
        )
        .expect("provider");
    assert_eq!(p["metadata"]["generation"], 2);
    assert_eq!(
        healthy(&cp, "Provider", "provider-kubernetes")["observedGeneration"],
        1
    );
}

#[tokio::test]
async fn deployments_lag_exceed_their_deadline_and_take_either_installers_name() {
    let cp = SimControlPlane::start().await.expect("start");
    assert!(cp.set_deployment_lagging("bind", "anynines-backend"));
    let d = cp
        .api
        .get("apps/v1", "Deployment", Some("bind"), "anynines-backend")
        .expect("deployment");
    assert_eq!(
        (
            d["metadata"]["generation"].as_i64(),
            d["status"]["observedGeneration"].as_i64()
        ),
        (Some(3), Some(2))
    );
    assert!(cp.set_deployment_deadline_exceeded("bind", "anynines-backend", true));
    let d = cp
        .api
        .get("apps/v1", "Deployment", Some("bind"), "anynines-backend")
        .expect("deployment");
    let progressing = d["status"]["conditions"]
        .as_array()
        .expect("conditions")
        .iter()
        .find(|c| c["type"] == "Progressing")
        .cloned()
        .expect("Progressing");
    assert_eq!(
        (
            progressing["status"].as_str(),
            progressing["reason"].as_str()
        ),
        (Some("False"), Some("ProgressDeadlineExceeded"))
    );

    cp.rename_backend_deployment("klutch-bind-backend");
    let (_, list) = get(&cp.api, "/apis/apps/v1/namespaces/bind/deployments").await;
    assert_eq!(names(&list), ["klutch-bind-backend", "konnector"]);
    cp.rename_backend_deployment("anynines-backend");
    let (_, list) = get(&cp.api, "/apis/apps/v1/namespaces/bind/deployments").await;
    assert_eq!(names(&list), ["anynines-backend", "konnector"]);
}

/// `type`'s condition of a provider: (status, reason).
fn provider_condition(cp: &SimControlPlane, name: &str, type_: &str) -> (Value, Value) {
    let obj = cp
        .api
        .get("pkg.crossplane.io/v1", "Provider", None, name)
        .expect("provider");
    let c = obj["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == type_).cloned())
        .unwrap_or_else(|| panic!("{type_} of {name}: {obj}"));
    (c["status"].clone(), c["reason"].clone())
}

#[tokio::test]
async fn providers_scale_to_zero_as_crossplane_2_does_and_come_back() {
    let cp = estate().await;
    // Seeded that way: provider-kubernetes waits for its first ManagedResourceDefinition.
    assert_eq!(
        provider_condition(&cp, "provider-kubernetes", "RuntimeActive"),
        ("False".into(), "AwaitingActivation".into())
    );
    let pods = |cp: &SimControlPlane| cp.api.list("v1", "Pod").len();
    assert_eq!(pods(&cp), 1);
    assert!(cp.set_provider_scaled_to_zero("provider-anynines", true));
    assert_eq!(
        provider_condition(&cp, "provider-anynines", "RuntimeActive"),
        ("False".into(), "AwaitingActivation".into())
    );
    for type_ in ["Healthy", "RevisionHealthy", "RuntimeHealthy"] {
        assert_eq!(
            provider_condition(&cp, "provider-anynines", type_).0,
            "True"
        );
    }
    assert_eq!(pods(&cp), 0, "scaled to zero: no pod");
    assert!(cp.set_provider_scaled_to_zero("provider-anynines", false));
    assert_eq!(
        provider_condition(&cp, "provider-anynines", "RuntimeActive").0,
        "True"
    );
    assert_eq!(pods(&cp), 1, "its pod back");
    assert!(!cp.set_provider_scaled_to_zero("provider-nothing", true));
}

#[tokio::test]
async fn app_cluster_bindings_of_both_modes_and_their_konnector_flip() {
    use klutch_sim::estate::BindingState;
    let cp = estate().await;
    let (_, bindings) = get(
        &cp.api,
        "/apis/klutch.anynines.com/v1alpha1/appclusterbindings",
    )
    .await;
    let modes: Vec<(String, bool)> = bindings["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|b| {
            (
                format!(
                    "{}/{}",
                    b["metadata"]["namespace"].as_str().unwrap_or_default(),
                    b["metadata"]["name"].as_str().unwrap_or_default()
                ),
                b["spec"]["konnector"]["deploy"] == true,
            )
        })
        .collect();
    assert_eq!(
        modes,
        [
            ("team-a/prod".to_string(), true),
            ("team-b/dev".to_string(), false)
        ]
    );
    // Only the control-plane mode has a konnector Deployment, found by the label klutch-bind sets.
    let (_, konnectors) = get(
        &cp.api,
        "/apis/apps/v1/deployments?labelSelector=klutch.anynines.com%2Fappclusterbinding-name",
    )
    .await;
    assert_eq!(names(&konnectors), ["konnector-prod"]);
    assert_eq!(
        konnectors["items"][0]["metadata"]["namespace"],
        "klutch-bind-team-a-prod"
    );

    assert!(cp.remove_app_konnector("team-a", "prod"));
    assert!(cp
        .api
        .get(
            "apps/v1",
            "Deployment",
            Some("klutch-bind-team-a-prod"),
            "konnector-prod"
        )
        .is_none());
    assert!(cp.restore_app_konnector("team-a", "prod"));
    assert!(!cp.restore_app_konnector("team-a", "nothing"));
    assert!(cp.set_app_cluster_binding("team-b", "dev", BindingState::SecretInvalid));
    let b = cp
        .api
        .get(
            "klutch.anynines.com/v1alpha1",
            "AppClusterBinding",
            Some("team-b"),
            "dev",
        )
        .expect("binding");
    let status = |type_: &str| {
        b["status"]["conditions"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["type"] == type_))
            .map(|c| c["status"].clone())
    };
    assert_eq!(status("SecretValid"), Some("False".into()));
    assert_eq!(status("Ready"), Some("False".into()));
    assert!(!cp.set_app_cluster_binding("team-b", "nothing", BindingState::Ready));
}
