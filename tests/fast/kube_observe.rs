//! The Kubernetes signals' judgement, on the real object shapes in `sim/fixtures/`, with a hand-set clock.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use klutch_health::checks::{deployments, packages, pods, provider_configs};
use klutch_health::report::Status;
use klutch_health::signals::Observation;
use kube::api::DynamicObject;
use serde_json::{json, Value};

fn fixture(name: &str) -> Value {
    let path = format!("{}/sim/fixtures/{name}.json", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).expect("fixture exists"))
        .expect("fixture is JSON")
}

fn object<T: serde::de::DeserializeOwned>(v: Value) -> Arc<T> {
    Arc::new(serde_json::from_value(v).expect("fixture has the resource's shape"))
}

fn at(s: &str) -> Timestamp {
    s.parse().expect("valid time")
}

fn only(items: Vec<Observation>) -> Observation {
    assert_eq!(items.len(), 1, "{items:?}");
    items.into_iter().next().expect("one item")
}

#[test]
fn healthy_provider_passes_and_unhealthy_names_condition_reason_and_message() {
    let now = at("2024-08-20T14:00:00Z");
    let healthy = object::<DynamicObject>(fixture("provider-healthy"));
    let o = only(packages::observe(&[healthy], None, now));
    assert_eq!(
        (o.item.as_str(), o.status),
        ("provider-anynines", Status::Pass)
    );

    let unhealthy = object::<DynamicObject>(fixture("provider-unhealthy"));
    let o = only(packages::observe(
        &[unhealthy],
        Some(&["provider-anynines".into()]),
        now,
    ));
    assert_eq!(o.status, Status::Fail);
    assert_eq!(
        o.message,
        "Healthy is \"False\" (UnhealthyPackageRevision): Deployment provider-anynines-3f2a9c1b7e5d does not have minimum availability"
    );
}

#[test]
fn listed_provider_that_is_absent_is_not_installed() {
    let now = at("2024-08-20T14:00:00Z");
    let healthy = object::<DynamicObject>(fixture("provider-healthy"));
    let items = packages::observe(
        &[healthy],
        Some(&["provider-anynines".into(), "provider-kubernetes".into()]),
        now,
    );
    let missing = items
        .iter()
        .find(|o| o.item == "provider-kubernetes")
        .expect("listed item");
    assert_eq!(
        (missing.status, missing.message.as_str()),
        (Status::Fail, "not installed")
    );
}

#[test]
fn provider_without_conditions_or_revision_is_unknown() {
    let now = at("2024-08-20T14:00:00Z");
    let mut p = fixture("provider-healthy");
    p["status"]["currentRevision"] = json!("");
    let o = only(packages::observe(&[object(p)], None, now));
    assert_eq!(o.status, Status::Unknown);
    assert!(o.message.contains("no current revision"), "{}", o.message);

    let mut p = fixture("provider-healthy");
    p["status"]["conditions"] = json!([{"type": "Installed", "status": "True"}]);
    let o = only(packages::observe(&[object(p)], None, now));
    assert_eq!(
        (o.status, o.message.as_str()),
        (Status::Unknown, "condition Healthy not reported yet")
    );
}

#[test]
fn crossplane_2_wording_is_passed_through() {
    let now = at("2024-08-20T14:00:00Z");
    let mut p = fixture("provider-healthy");
    p["status"]["conditions"][1] = json!({
        "type": "Healthy", "status": "False", "reason": "UnhealthyPackageRevision",
        "message": "Package runtime health is \"False\" with message: Deployment has no available replicas"
    });
    let o = only(packages::observe(&[object(p)], None, now));
    assert_eq!(o.status, Status::Fail);
    assert!(
        o.message
            .ends_with("with message: Deployment has no available replicas"),
        "{}",
        o.message
    );
}

fn pc_config() -> provider_configs::ProviderConfig {
    provider_configs::ProviderConfig::default()
}

#[test]
fn provider_config_health_maps_to_status_and_ages_into_unknown() {
    let stale = pc_config().check_stale_after;
    let now = at("2024-08-20T13:11:00Z");
    let healthy = object::<DynamicObject>(fixture("providerconfig-healthy"));
    let o = only(provider_configs::observe(&[healthy], None, stale, now));
    assert_eq!((o.status, o.message.as_str()), (Status::Pass, "Available"));
    // lastCheckTime 13:10 + check_stale_after 10m: unknown from 13:20 on, and the engine is told when.
    assert_eq!(o.at(at("2024-08-20T13:19:59Z")).0, Status::Pass);
    let (status, message) = o.at(at("2024-08-20T13:20:00Z"));
    assert_eq!(status, Status::Unknown);
    assert!(
        message.contains("has not checked it since 2024-08-20T13:10:00Z"),
        "{message}"
    );
    assert_eq!(o.expires[0].at, at("2024-08-20T13:20:00Z"));

    let failing = object::<DynamicObject>(fixture("providerconfig-failing"));
    let o = only(provider_configs::observe(&[failing], None, stale, now));
    assert_eq!(o.status, Status::Fail);
    assert!(
        o.message.contains("connect: connection refused"),
        "{}",
        o.message
    );
}

#[test]
fn unchecked_provider_config_is_unknown_whatever_last_status_says() {
    let now = at("2024-08-20T13:11:00Z");
    let unchecked = object::<DynamicObject>(fixture("providerconfig-unchecked"));
    let o = only(provider_configs::observe(
        &[unchecked],
        None,
        Duration::from_secs(600),
        now,
    ));
    assert_eq!(
        (o.status, o.message.as_str()),
        (Status::Unknown, "not checked yet by provider-anynines")
    );
    let mut absent = fixture("providerconfig-unchecked");
    absent["status"]["health"]
        .as_object_mut()
        .expect("object")
        .remove("lastCheckTime");
    let o = only(provider_configs::observe(
        &[object(absent)],
        None,
        Duration::from_secs(600),
        now,
    ));
    assert_eq!(o.status, Status::Unknown);
}

#[test]
fn provider_config_names_filter_and_missing_names() {
    let now = at("2024-08-20T13:11:00Z");
    let healthy = object::<DynamicObject>(fixture("providerconfig-healthy"));
    let failing = object::<DynamicObject>(fixture("providerconfig-failing"));
    let names = [
        "postgresql-service-broker".to_string(),
        "mongodb".to_string(),
    ];
    let items = provider_configs::observe(
        &[healthy, failing],
        Some(&names),
        Duration::from_secs(600),
        now,
    );
    let got: Vec<(&str, Status)> = items.iter().map(|o| (o.item.as_str(), o.status)).collect();
    assert_eq!(
        got,
        [
            ("postgresql-service-broker", Status::Pass),
            ("mongodb", Status::Fail)
        ]
    );
}

fn deployment_config(name: &str, min_available: i32) -> deployments::Deployment {
    deployments::Deployment {
        namespace: "bind".into(),
        deployment: deployments::Names::One(name.into()),
        min_available,
    }
}

#[test]
fn deployment_available_unavailable_and_absent() {
    let now = at("2024-08-20T14:00:00Z");
    let available = object::<Deployment>(fixture("deployment-anynines-backend-available"));
    let o = only(deployments::observe(
        std::slice::from_ref(&available),
        &deployment_config("anynines-backend", 1),
        now,
    ));
    assert_eq!(
        (o.status, o.message.as_str()),
        (Status::Pass, "1 of 1 replicas available")
    );

    let o = only(deployments::observe(
        &[available],
        &deployment_config("anynines-backend", 2),
        now,
    ));
    assert_eq!(o.status, Status::Fail);
    assert!(o.message.contains("min_available is 2"), "{}", o.message);

    let unavailable = object::<Deployment>(fixture("deployment-anynines-backend-unavailable"));
    let o = only(deployments::observe(
        &[unavailable],
        &deployment_config("anynines-backend", 1),
        now,
    ));
    assert_eq!(o.status, Status::Fail);
    assert!(
        o.message
            .starts_with("Available is \"False\" (MinimumReplicasUnavailable)"),
        "{}",
        o.message
    );

    let konnector = object::<Deployment>(fixture("deployment-konnector-available"));
    let o = only(deployments::observe(
        &[konnector],
        &deployment_config("anynines-backend", 1),
        now,
    ));
    assert_eq!(
        (o.status, o.message.as_str()),
        (Status::Fail, "Deployment bind/anynines-backend not found")
    );
}

fn pod(ready: bool, container_status: Value) -> Arc<Pod> {
    object(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "provider-anynines-abc", "namespace": "crossplane-system"},
        "status": {
            "phase": "Running",
            "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" },
                            "message": if ready { "" } else { "containers with unready status: [package-runtime]" }}],
            "containerStatuses": [container_status]
        }
    }))
}

#[test]
fn pods_ready_not_ready_recent_restart_and_crash_loop() {
    let now = at("2024-08-20T14:00:00Z");
    let window = Duration::from_secs(600);
    let running = json!({"name": "package-runtime", "ready": true, "restartCount": 0, "image": "x", "imageID": "",
                         "state": {"running": {"startedAt": "2024-08-20T13:00:00Z"}}});
    let o = only(pods::observe(&[pod(true, running)], "sel", window, now));
    assert_eq!((o.status, o.message.as_str()), (Status::Pass, "ready"));

    let restarted = json!({"name": "package-runtime", "ready": true, "restartCount": 3, "image": "x", "imageID": "",
        "state": {"running": {"startedAt": "2024-08-20T13:55:00Z"}},
        "lastState": {"terminated": {"exitCode": 137, "reason": "OOMKilled", "finishedAt": "2024-08-20T13:55:00Z"}}});
    let o = only(pods::observe(&[pod(true, restarted)], "sel", window, now));
    assert_eq!(o.status, Status::Warn);
    assert!(
        o.message.contains("3 restarts; last exit 137 OOMKilled"),
        "{}",
        o.message
    );
    // The warning leaves with the window.
    assert_eq!(o.at(at("2024-08-20T14:05:00Z")).0, Status::Pass);

    let crashing = json!({"name": "package-runtime", "ready": false, "restartCount": 7, "image": "x", "imageID": "",
        "state": {"waiting": {"reason": "CrashLoopBackOff"}}});
    let o = only(pods::observe(
        &[pod(true, crashing.clone())],
        "sel",
        window,
        now,
    ));
    assert_eq!(o.status, Status::Warn);
    assert!(
        o.message.contains("CrashLoopBackOff (7 restarts)"),
        "{}",
        o.message
    );
    let o = only(pods::observe(&[pod(false, crashing)], "sel", window, now));
    assert_eq!(o.status, Status::Fail);
    assert!(
        o.message.contains("containers with unready status"),
        "{}",
        o.message
    );

    let o = only(pods::observe(&[], "app=x", window, now));
    assert_eq!(
        (o.status, o.message.as_str()),
        (Status::Fail, "no pod matches app=x")
    );
}

#[test]
fn a_package_whose_conditions_lag_its_generation_warns_with_both_numbers() {
    let now = at("2024-08-20T14:00:00Z");
    let mut c = fixture("configuration-healthy");
    let o = only(packages::observe_kind(
        packages::PackageKind::Configurations,
        &[object(c.clone())],
        None,
        now,
    ));
    assert_eq!(
        (o.item.as_str(), o.status),
        ("anynines-dataservices", Status::Pass)
    );
    // An absent observedGeneration is not a lag; a present one that equals the generation is current.
    c["status"]["conditions"][0]["observedGeneration"] = json!(1);
    let o = only(packages::observe_kind(
        packages::PackageKind::Configurations,
        &[object(c.clone())],
        None,
        now,
    ));
    assert_eq!(o.status, Status::Pass, "{}", o.message);
    c["metadata"]["generation"] = json!(2);
    let o = only(packages::observe_kind(
        packages::PackageKind::Configurations,
        &[object(c.clone())],
        None,
        now,
    ));
    assert_eq!(
        (o.status, o.message.as_str()),
        (
            Status::Warn,
            "Installed is \"True\" for generation 1, the package is at generation 2 (Crossplane has not \
             reconciled the change yet; anynines-dataservices-8d7c6b5a4f3e)"
        )
    );
    // A failure still fails, whatever generation it describes.
    c["status"]["conditions"][1]["status"] = json!("False");
    let o = only(packages::observe_kind(
        packages::PackageKind::Configurations,
        &[object(c)],
        None,
        now,
    ));
    assert_eq!(o.status, Status::Fail);
}

#[test]
fn no_package_of_a_kind_is_one_warning_item() {
    let o = only(packages::observe_kind(
        packages::PackageKind::Functions,
        &[],
        None,
        at("2024-08-20T14:00:00Z"),
    ));
    assert_eq!(
        (o.item.as_str(), o.status, o.message.as_str()),
        (
            "_none",
            Status::Warn,
            "no Crossplane functions are installed"
        )
    );
}

fn candidates() -> deployments::Deployment {
    deployments::Deployment {
        namespace: "bind".into(),
        deployment: deployments::Names::Candidates(vec![
            "anynines-backend".into(),
            "klutch-bind-backend".into(),
        ]),
        min_available: 1,
    }
}

#[test]
fn each_existing_candidate_is_an_item_and_none_is_one_missing_item() {
    let now = at("2024-08-20T14:00:00Z");
    let mut renamed = fixture("deployment-anynines-backend-available");
    renamed["metadata"]["name"] = json!("klutch-bind-backend");
    let o = only(deployments::observe(&[object(renamed)], &candidates(), now));
    assert_eq!(
        (o.item.as_str(), o.status),
        ("klutch-bind-backend", Status::Pass)
    );
    let konnector = object::<Deployment>(fixture("deployment-konnector-available"));
    let o = only(deployments::observe(&[konnector], &candidates(), now));
    assert_eq!(
        (o.item.as_str(), o.status, o.message.as_str()),
        (
            "_missing",
            Status::Fail,
            "none of the Deployments anynines-backend, klutch-bind-backend exists in namespace bind"
        )
    );
}

#[test]
fn a_deployment_rollout_that_lags_or_is_stuck_warns_like_kubectl_rollout_status() {
    let now = at("2024-08-20T14:00:00Z");
    let mut d = fixture("deployment-anynines-backend-available");
    d["metadata"]["generation"] = json!(3);
    let o = only(deployments::observe(
        &[object(d.clone())],
        &candidates(),
        now,
    ));
    assert_eq!(
        (o.status, o.message.as_str()),
        (
            Status::Warn,
            "Waiting for deployment \"anynines-backend\" spec update to be observed (observed generation 2 of 3); \
             1 of 1 replicas available"
        )
    );
    d["metadata"]["generation"] = json!(2);
    let progressing = d["status"]["conditions"]
        .as_array_mut()
        .expect("conditions")
        .iter_mut()
        .find(|c| c["type"] == "Progressing")
        .expect("Progressing");
    progressing["status"] = json!("False");
    progressing["reason"] = json!("ProgressDeadlineExceeded");
    let o = only(deployments::observe(
        &[object(d.clone())],
        &candidates(),
        now,
    ));
    assert_eq!(
        (o.status, o.message.as_str()),
        (
            Status::Warn,
            "deployment \"anynines-backend\" exceeded its progress deadline; 1 of 1 replicas available"
        )
    );
    // Without observedGeneration there is no lag to tell.
    d["metadata"]["generation"] = json!(5);
    d["status"]["conditions"] = json!([{"type": "Available", "status": "True"}]);
    d["status"]
        .as_object_mut()
        .expect("status")
        .remove("observedGeneration");
    let o = only(deployments::observe(&[object(d)], &candidates(), now));
    assert_eq!(o.status, Status::Pass, "{}", o.message);
}

/// The providerconfig-healthy fixture with `lastCheckTime` (and optionally `lastStatus`) set.
fn pc_checked_at(time: &str, ok: bool) -> Arc<DynamicObject> {
    let mut pc = fixture("providerconfig-healthy");
    pc["status"]["health"]["lastCheckTime"] = json!(time);
    pc["status"]["health"]["lastStatus"] = json!(ok);
    if !ok {
        pc["status"]["health"]["lastMessage"] = json!("dial tcp: connection refused");
    }
    object(pc)
}

#[test]
fn a_last_check_time_in_the_future_is_clock_skew_never_a_fresh_ok() {
    let stale = pc_config().check_stale_after;
    let now = at("2024-08-20T13:11:00Z");
    let skew = "lies in the future: clock skew?";
    for (time, ok, status, says_skew) in [
        ("2024-08-20T13:10:00Z", true, Status::Pass, false),
        // Within 60 s ahead: ordinary skew between nodes.
        ("2024-08-20T13:12:00Z", true, Status::Pass, false),
        ("2024-08-20T13:12:01Z", true, Status::Warn, true),
        ("2099-01-01T00:00:00Z", true, Status::Warn, true),
        // A failure stays a failure, with the skew noted.
        ("2099-01-01T00:00:00Z", false, Status::Fail, true),
    ] {
        let o = only(provider_configs::observe(
            &[pc_checked_at(time, ok)],
            None,
            stale,
            now,
        ));
        assert_eq!(o.status, status, "{time} {ok}: {o:?}");
        assert_eq!(o.message.contains(skew), says_skew, "{time}: {o:?}");
    }
}

#[test]
fn a_future_last_check_time_keeps_the_staleness_bound_from_its_first_sighting() {
    let stale = pc_config().check_stale_after;
    let t0 = at("2024-08-20T13:11:00Z");
    let mut seen = provider_configs::Sightings::default();
    let future = pc_checked_at("2099-01-01T00:00:00Z", true);
    let o = only(provider_configs::observe_seen(
        std::slice::from_ref(&future),
        None,
        stale,
        t0,
        &mut seen,
    ));
    assert_eq!(o.status, Status::Warn);
    let (status, message) = o.at(at("2024-08-20T13:21:00Z"));
    assert_eq!(status, Status::Unknown, "{message}");
    assert!(message.contains("health loop may be stuck"), "{message}");
    // Observed again (any event of the watch): the bound is not renewed.
    let o = only(provider_configs::observe_seen(
        std::slice::from_ref(&future),
        None,
        stale,
        at("2024-08-20T13:16:00Z"),
        &mut seen,
    ));
    assert_eq!(o.at(at("2024-08-20T13:21:00Z")).0, Status::Unknown);
    // A new time written by the provider counts as a new check.
    let o = only(provider_configs::observe_seen(
        &[pc_checked_at("2099-01-01T00:03:00Z", true)],
        None,
        stale,
        at("2024-08-20T13:17:00Z"),
        &mut seen,
    ));
    assert_eq!(o.at(at("2024-08-20T13:26:59Z")).0, Status::Warn);
    assert_eq!(o.at(at("2024-08-20T13:27:00Z")).0, Status::Unknown);
}

fn sim_pod(state: Option<klutch_sim::PodState>) -> Arc<Pod> {
    object(state.map_or_else(
        klutch_sim::pods::provider_pod,
        klutch_sim::pods::provider_pod_in,
    ))
}

#[test]
fn finished_pods_are_not_counted_and_terminating_ones_warn_beside_a_ready_one() {
    use klutch_sim::PodState::{Completed, Evicted, Terminating, Unschedulable};
    let now = Timestamp::now();
    let window = Duration::from_secs(600);
    let judged = |pods: &[Option<klutch_sim::PodState>]| -> Vec<(String, Status, String)> {
        let objects: Vec<Arc<Pod>> = pods.iter().map(|s| sim_pod(*s)).collect();
        pods::observe(&objects, "sel", window, now)
            .into_iter()
            .map(|o| {
                let short = o.item.rsplit('-').next().unwrap_or_default().to_string();
                (short, o.status, o.message)
            })
            .collect()
    };
    let statuses = |pods: &[Option<klutch_sim::PodState>]| -> Vec<(String, Status)> {
        judged(pods).into_iter().map(|(n, s, _)| (n, s)).collect()
    };
    let ready = ("x2x7q".to_string(), Status::Pass);
    assert_eq!(
        statuses(&[None, Some(Evicted)]),
        std::slice::from_ref(&ready)
    );
    assert_eq!(
        statuses(&[None, Some(Completed)]),
        std::slice::from_ref(&ready)
    );
    assert_eq!(
        statuses(&[None, Some(Terminating)]),
        [ready.clone(), ("terminating".into(), Status::Warn)]
    );
    assert_eq!(
        statuses(&[None, Some(Unschedulable)]),
        [ready, ("unschedulable".into(), Status::Fail)]
    );

    let items = judged(&[None, Some(Terminating)]);
    assert!(
        items[1]
            .2
            .starts_with("terminating (deletion requested at ")
            && items[1]
                .2
                .ends_with("; provider-anynines-3f2a9c1b7e5d-6b8f9c7d5-x2x7q is Ready"),
        "{items:?}"
    );
    // Alone, a terminating pod is no replacement for itself: warn while it is still Ready.
    let items = judged(&[Some(Terminating)]);
    assert_eq!(items[0].1, Status::Warn, "{items:?}");
    assert!(
        items[0].2.ends_with("and no other pod is Ready"),
        "{items:?}"
    );
    // Only finished pods: nothing runs, and the message says what was left out.
    let items = judged(&[Some(Evicted), Some(Completed)]);
    assert_eq!(items.len(), 1, "{items:?}");
    assert_eq!(items[0].1, Status::Fail);
    assert!(
        items[0]
            .2
            .starts_with("no pod matches sel that has not finished (2 finished, not counted: ")
            && items[0].2.contains("-evicted (Evicted)")
            && items[0].2.contains("-completed (Succeeded)"),
        "{items:?}"
    );
    // A Pending pod says why the scheduler leaves it pending.
    let items = judged(&[Some(Unschedulable)]);
    assert_eq!(
        items[0].2,
        format!(
            "not scheduled (Pending): Unschedulable: {}",
            klutch_sim::pods::UNSCHEDULABLE_MESSAGE
        )
    );
}

#[test]
fn a_terminating_pod_that_is_not_ready_fails_without_a_ready_replacement() {
    let now = Timestamp::now();
    let mut terminating = klutch_sim::pods::provider_pod_in(klutch_sim::PodState::Terminating);
    terminating["status"]["conditions"][1]["status"] = json!("False");
    terminating["status"]["conditions"][1]["message"] =
        json!("containers with unready status: [package-runtime]");
    let o = only(pods::observe(
        &[object(terminating)],
        "sel",
        Duration::from_secs(600),
        now,
    ));
    assert_eq!(o.status, Status::Fail);
    assert!(
        o.message.starts_with("terminating (deletion requested at ")
            && o.message.ends_with(
                "; not ready (Running): containers with unready status: [package-runtime]"
            ),
        "{}",
        o.message
    );
}
