//! Kubernetes Events against the simulated control plane: replicas that write them, and what was written.

use klutch_sim::SimControlPlane;
use serde_json::Value;

use super::{eventually, full_config, Service};

pub const PC: &str = "postgresql-backup-manager";
pub const NAMESPACE: &str = "klutch-system";

pub async fn sim() -> SimControlPlane {
    let cp = SimControlPlane::start()
        .await
        .expect("simulated control plane");
    cp.api
        .set_bookmark_interval(std::time::Duration::from_millis(200));
    cp
}

/// A replica named `pod` (as the downward API names it), with `[kubernetes] events` set to `events`.
pub async fn replica(cp: &SimControlPlane, pod: &str, events: Option<bool>) -> Service {
    let mut doc: toml::Table = full_config(&cp.backend.url(), "").parse().expect("TOML");
    if let (Some(on), Some(k)) = (
        events,
        doc.get_mut("kubernetes")
            .and_then(toml::Value::as_table_mut),
    ) {
        k.insert("events".into(), on.into());
    }
    let config = toml::to_string(&doc).expect("TOML");
    let env = [("POD_NAME", pod), ("POD_NAMESPACE", NAMESPACE)];
    let svc = Service::against(cp, &config, &env).await;
    svc.wait_for("/readyz", "the initial sync", |r| r.status == 200)
        .await;
    svc
}

/// The Lease's holder, once there is one.
pub async fn holder(cp: &SimControlPlane) -> String {
    eventually("a replica to hold the Events Lease", async || {
        let lease = cp.api.get(
            "coordination.k8s.io/v1",
            "Lease",
            Some(NAMESPACE),
            "klutch-health-events",
        )?;
        lease["spec"]["holderIdentity"].as_str().map(str::to_string)
    })
    .await
}

/// Every `events.k8s.io/v1` Event regarding the ProviderConfig `PC`.
pub fn events_about_pc(cp: &SimControlPlane) -> Vec<Value> {
    cp.api
        .list("events.k8s.io/v1", "Event")
        .into_iter()
        .filter(|e| e["regarding"]["kind"] == "ProviderConfig" && e["regarding"]["name"] == PC)
        .collect()
}

pub async fn wait_event(cp: &SimControlPlane, type_: &str) -> Value {
    eventually(&format!("a {type_} Event about {PC}"), async || {
        events_about_pc(cp).into_iter().find(|e| e["type"] == type_)
    })
    .await
}
