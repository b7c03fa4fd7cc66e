//! Writes the fake accepts: Leases with optimistic concurrency, Events through both events APIs.

use klutch_sim::SimControlPlane;
use serde_json::{json, Value};

use crate::common;
use common::{get, names, write};

const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/klutch-system/leases";

fn rv(v: &Value) -> String {
    v["metadata"]["resourceVersion"]
        .as_str()
        .expect("resourceVersion")
        .to_string()
}

#[tokio::test]
async fn leases_are_created_updated_and_a_stale_update_conflicts() {
    let cp = SimControlPlane::start().await.expect("start");
    let lease = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "klutch-health"}, "spec": {"holderIdentity": "pod-a", "leaseDurationSeconds": 15}});
    let (code, created) = write(&cp.api, "POST", LEASES, &lease).await;
    assert_eq!(code, 201, "{created}");
    assert_eq!(created["metadata"]["namespace"], "klutch-system");
    assert!(created["metadata"]["uid"].is_string());
    let (code, again) = write(&cp.api, "POST", LEASES, &lease).await;
    assert_eq!(
        (code, again["reason"].as_str()),
        (409, Some("AlreadyExists"))
    );

    let path = format!("{LEASES}/klutch-health");
    let mut renewed = created.clone();
    renewed["spec"]["holderIdentity"] = json!("pod-b");
    let (code, updated) = write(&cp.api, "PUT", &path, &renewed).await;
    assert_eq!(code, 200, "{updated}");
    assert_ne!(rv(&updated), rv(&created));
    assert_eq!(updated["metadata"]["uid"], created["metadata"]["uid"]);

    // The same stale copy again: someone else has written since.
    let (code, conflict) = write(&cp.api, "PUT", &path, &renewed).await;
    assert_eq!(code, 409);
    assert_eq!(
        (conflict["kind"].as_str(), conflict["reason"].as_str()),
        (Some("Status"), Some("Conflict"))
    );
    assert!(conflict["message"].as_str().is_some_and(|m| m.starts_with(
        "Operation cannot be fulfilled on leases.coordination.k8s.io \"klutch-health\": the object has been modified")));

    let (code, patched) = write(
        &cp.api,
        "PATCH",
        &path,
        &json!({"spec": {"holderIdentity": "pod-c"}}),
    )
    .await;
    assert_eq!(
        (code, patched["spec"]["holderIdentity"].as_str()),
        (200, Some("pod-c"))
    );
    assert_eq!(
        patched["spec"]["leaseDurationSeconds"], 15,
        "a merge patch keeps the rest"
    );
    let (_, got) = get(&cp.api, &path).await;
    assert_eq!(got, patched);

    let (code, _) = write(&cp.api, "PUT", &format!("{LEASES}/nobody"), &lease).await;
    assert_eq!(code, 404);
    let provider = json!({"metadata": {"name": "p"}});
    let (code, refused) = write(
        &cp.api,
        "POST",
        "/apis/pkg.crossplane.io/v1/providers",
        &provider,
    )
    .await;
    assert_eq!(
        (code, refused["reason"].as_str()),
        (405, Some("MethodNotAllowed"))
    );
}

/// An Event as klutch-health's recorder would write it about a ProviderConfig.
fn event(name: &str, uid: &str) -> Value {
    json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": name},
        "eventTime": "2026-11-25T17:00:00.000000Z", "reportingController": "klutch-health",
        "reportingInstance": "klutch-health-6d5f-abcde", "action": "Check", "reason": "HealthCheckFailed",
        "type": "Warning", "note": "postgresql-backup-manager failed its health check",
        "regarding": {"apiVersion": "dataservices.anynines.com/v1", "kind": "ProviderConfig",
                      "name": "postgresql-backup-manager", "uid": uid}})
}

#[tokio::test]
async fn events_written_through_events_k8s_io_read_back_as_core_events() {
    let cp = SimControlPlane::start().await.expect("start");
    let pc = cp
        .api
        .get(
            "dataservices.anynines.com/v1",
            "ProviderConfig",
            None,
            "postgresql-backup-manager",
        )
        .expect("pc");
    let uid = pc["metadata"]["uid"].as_str().expect("uid");
    let path = "/apis/events.k8s.io/v1/namespaces/default/events";
    let (code, created) = write(&cp.api, "POST", path, &event("pb.1", uid)).await;
    assert_eq!(code, 201, "{created}");
    let (code, _) = write(
        &cp.api,
        "POST",
        "/apis/events.k8s.io/v1/namespaces/other/events",
        &event("pb.2", uid),
    )
    .await;
    assert_eq!(code, 201);

    let selector = format!("involvedObject.name=postgresql-backup-manager,involvedObject.namespace=,involvedObject.kind=ProviderConfig,involvedObject.uid={uid}");
    let (_, core) = get(&cp.api, &format!("/api/v1/events?fieldSelector={selector}")).await;
    assert_eq!(names(&core), ["pb.1", "pb.2"]);
    let e = &core["items"][0];
    assert_eq!(
        (
            e["message"].as_str(),
            e["reason"].as_str(),
            e["count"].as_u64()
        ),
        (
            Some("postgresql-backup-manager failed its health check"),
            Some("HealthCheckFailed"),
            Some(1)
        )
    );
    assert_eq!(e["source"]["component"], "klutch-health");
    let (_, in_default) = get(&cp.api, "/api/v1/namespaces/default/events").await;
    assert_eq!(names(&in_default), ["pb.1"]);

    // The recorder's series update.
    let series = json!({"series": {"count": 3, "lastObservedTime": "2026-11-25T17:05:00.000000Z"}});
    let (code, _) = write(&cp.api, "PATCH", &format!("{path}/pb.1"), &series).await;
    assert_eq!(code, 200);
    let (_, e) = get(&cp.api, "/api/v1/namespaces/default/events/pb.1").await;
    assert_eq!(
        (e["count"].as_u64(), e["lastTimestamp"].as_str()),
        (Some(3), Some("2026-11-25T17:05:00.000000Z"))
    );
    let (_, none) = get(
        &cp.api,
        "/api/v1/events?fieldSelector=involvedObject.name=provider-anynines",
    )
    .await;
    assert!(names(&none).is_empty());
}

#[tokio::test]
async fn failing_writes_answer_500_for_that_resource_only_until_cleared() {
    let cp = SimControlPlane::start().await.expect("start");
    let path = "/apis/events.k8s.io/v1/namespaces/default/events";
    cp.api.set_failing_writes("events", true);
    let (code, refused) = write(&cp.api, "POST", path, &event("pb.1", "u")).await;
    assert_eq!(
        (code, refused["reason"].as_str()),
        (500, Some("InternalError"))
    );
    let (code, _) = get(&cp.api, path).await;
    assert_eq!(code, 200, "reads keep working");
    let lease = json!({"metadata": {"name": "l"}, "spec": {"holderIdentity": "a"}});
    let (code, _) = write(&cp.api, "POST", LEASES, &lease).await;
    assert_eq!(code, 201, "other resources still accept writes");
    cp.api.set_failing_writes("events", false);
    let (code, _) = write(&cp.api, "POST", path, &event("pb.1", "u")).await;
    assert_eq!(code, 201);
}
