//! TEMPORARY (until i22a's klutch_sim::managed is on main): the same API, so that the bench can be tried.
use klutch_sim::api::{now_rfc3339, set_condition};
use serde_json::{json, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ManagedKind { ServiceInstance, ServiceBinding, Backup, Restore }
impl ManagedKind {
    pub const ALL: [ManagedKind; 4] = [ManagedKind::ServiceInstance, ManagedKind::ServiceBinding, ManagedKind::Backup, ManagedKind::Restore];
    pub fn kind(self) -> &'static str { match self { Self::ServiceInstance => "ServiceInstance", Self::ServiceBinding => "ServiceBinding", Self::Backup => "Backup", Self::Restore => "Restore" } }
    pub fn plural(self) -> &'static str { match self { Self::ServiceInstance => "serviceinstances", Self::ServiceBinding => "servicebindings", Self::Backup => "backups", Self::Restore => "restores" } }
}
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManagedState { Ready, Failing, Creating, Deleting, Paused, Pending, Unavailable }
const QUOTA_EXCEEDED: &str = "create failed: cannot provision: quota exceeded for plan postgresql-single-nano";
pub fn managed_object(kind: ManagedKind, name: &str, provider_config: &str) -> Value {
    let mut obj = match kind {
        ManagedKind::ServiceInstance => json!({"apiVersion": "dataservices.anynines.com/v1", "kind": "ServiceInstance",
            "spec": {"forProvider": {"serviceName": "a9s-postgresql13", "planName": "postgresql-single-nano", "acceptsIncomplete": true, "organizationGuid": "org", "spaceGuid": "space"}},
            "status": {"observedGeneration": 1, "atProvider": {"state": "provisioned", "instanceId": "5d1f9a2e-7c3b-4e8a-9f10-2b6c8d4e0a17", "serviceId": "a9s-postgresql13", "planId": "postgresql-single-nano"}}}),
        ManagedKind::ServiceBinding => json!({"apiVersion": "dataservices.anynines.com/v1", "kind": "ServiceBinding",
            "spec": {"forProvider": {"acceptsIncomplete": true, "instanceName": "pg-prod-7"}}, "status": {"atProvider": {"state": "succeeded"}}}),
        ManagedKind::Backup => json!({"apiVersion": "dataservices.anynines.com/v1", "kind": "Backup",
            "spec": {"forProvider": {"instanceName": "pg-prod-7"}}, "status": {"atProvider": {"status": "done"}}}),
        ManagedKind::Restore => json!({"apiVersion": "dataservices.anynines.com/v1", "kind": "Restore",
            "spec": {"forProvider": {"backupName": "pg-prod-7-nightly"}}, "status": {"atProvider": {"state": "done"}}}),
    };
    obj["metadata"] = json!({"name": name, "generation": 1, "finalizers": ["finalizer.managedresource.crossplane.io"]});
    obj["spec"]["deletionPolicy"] = json!("Delete");
    obj["spec"]["providerConfigRef"] = json!({"name": provider_config});
    set_state(&mut obj, ManagedState::Ready);
    obj
}
pub fn set_state(obj: &mut Value, state: ManagedState) {
    if let Some(meta) = obj["metadata"].as_object_mut() {
        meta.remove("deletionTimestamp");
        if let Some(a) = meta.get_mut("annotations").and_then(Value::as_object_mut) { a.remove("crossplane.io/paused"); }
    }
    if let Some(status) = obj["status"].as_object_mut() { status.remove("pendingOperation"); }
    let (ready, synced) = match state {
        ManagedState::Ready => (("True", "Available", ""), ("True", "ReconcileSuccess", "")),
        ManagedState::Failing => (("False", "Unavailable", ""), ("False", "ReconcileError", QUOTA_EXCEEDED)),
        ManagedState::Creating => (("False", "Creating", ""), ("True", "ReconcileSuccess", "")),
        ManagedState::Deleting => { obj["metadata"]["deletionTimestamp"] = json!(now_rfc3339()); (("False", "Deleting", ""), ("True", "ReconcileSuccess", "")) }
        ManagedState::Paused => { obj["metadata"]["annotations"]["crossplane.io/paused"] = json!("true"); (("True", "Available", ""), ("False", "ReconcilePaused", "Reconciliation is paused via the pause annotation")) }
        ManagedState::Pending => { obj["status"]["pendingOperation"] = json!("update-5d1f9a2e"); (("False", "Unavailable", ""), ("True", "ReconcileSuccess", "")) }
        ManagedState::Unavailable => (("False", "Unavailable", ""), ("True", "ReconcileSuccess", "")),
    };
    for (type_, (status, reason, message)) in [("Ready", ready), ("Synced", synced)] { set_condition(obj, type_, status, reason, message); }
}
