//! provider-anynines' managed resources — ServiceInstances, ServiceBindings, Backups and Restores
//! (`dataservices.anynines.com/v1`, cluster-scoped) — seeded healthy beside the control plane, driven into
//! each state crossplane-runtime's `Ready` and `Synced` conditions can say, and seeded by the thousand.
//! Every object validates against the vendored CRDs (`sim/tests/sim/crds.rs`).

use serde_json::{json, Value};

use crate::api::{now_rfc3339, rfc3339_offset, set_condition};
use crate::{fixtures, SimControlPlane};

pub const MANAGED_API: &str = "dataservices.anynines.com/v1";

/// A kind of managed resource provider-anynines serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ManagedKind {
    ServiceInstance,
    ServiceBinding,
    Backup,
    Restore,
}

impl ManagedKind {
    pub const ALL: [ManagedKind; 4] = [
        ManagedKind::ServiceInstance,
        ManagedKind::ServiceBinding,
        ManagedKind::Backup,
        ManagedKind::Restore,
    ];

    pub fn kind(self) -> &'static str {
        match self {
            ManagedKind::ServiceInstance => "ServiceInstance",
            ManagedKind::ServiceBinding => "ServiceBinding",
            ManagedKind::Backup => "Backup",
            ManagedKind::Restore => "Restore",
        }
    }

    pub fn plural(self) -> &'static str {
        match self {
            ManagedKind::ServiceInstance => "serviceinstances",
            ManagedKind::ServiceBinding => "servicebindings",
            ManagedKind::Backup => "backups",
            ManagedKind::Restore => "restores",
        }
    }

    pub fn from_plural(plural: &str) -> Option<ManagedKind> {
        ManagedKind::ALL.into_iter().find(|k| k.plural() == plural)
    }

    /// The ProviderConfig that serves it when none is named: the broker, or the backup manager.
    pub fn default_provider_config(self) -> &'static str {
        match self {
            ManagedKind::ServiceInstance | ManagedKind::ServiceBinding => {
                "postgresql-service-broker"
            }
            ManagedKind::Backup | ManagedKind::Restore => "postgresql-backup-manager",
        }
    }
}

/// What a managed resource's conditions (and metadata) say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManagedState {
    /// `Ready=True Available`, `Synced=True ReconcileSuccess`.
    Ready,
    /// `Synced=False ReconcileError` with the broker's error.
    Failing,
    /// `Ready=False Creating`.
    Creating,
    /// `metadata.deletionTimestamp` set, a finalizer holding it, `Ready=False Deleting`.
    Deleting,
    /// The `crossplane.io/paused` annotation, `Synced=False ReconcilePaused`.
    Paused,
    /// `Ready=False Unavailable` while `status.pendingOperation` is set (ServiceInstances only).
    Pending,
    /// `Ready=False Unavailable` with no pending operation.
    Unavailable,
}

impl ManagedState {
    pub const ALL: [ManagedState; 7] = [
        ManagedState::Ready,
        ManagedState::Failing,
        ManagedState::Creating,
        ManagedState::Deleting,
        ManagedState::Paused,
        ManagedState::Pending,
        ManagedState::Unavailable,
    ];

    pub fn word(self) -> &'static str {
        match self {
            ManagedState::Ready => "ready",
            ManagedState::Failing => "failing",
            ManagedState::Creating => "creating",
            ManagedState::Deleting => "deleting",
            ManagedState::Paused => "paused",
            ManagedState::Pending => "pending",
            ManagedState::Unavailable => "unavailable",
        }
    }

    pub fn from_word(word: &str) -> Option<ManagedState> {
        ManagedState::ALL.into_iter().find(|s| s.word() == word)
    }
}

/// The error a failing broker reports, as provider-anynines passes it into `Synced`.
pub const QUOTA_EXCEEDED: &str =
    "create failed: cannot provision: quota exceeded for plan postgresql-single-nano";

/// A fresh object of `kind` named `name`, served by `provider_config`, ready.
pub fn managed_object(kind: ManagedKind, name: &str, provider_config: &str) -> Value {
    let mut obj = match kind {
        ManagedKind::ServiceInstance => {
            let mut o = fixtures::serviceinstance_ready();
            if let Some(status) = o["status"].as_object_mut() {
                status.remove("conditions");
            }
            o
        }
        ManagedKind::ServiceBinding => json!({
            "apiVersion": MANAGED_API, "kind": "ServiceBinding",
            "spec": {"forProvider": {"acceptsIncomplete": true, "instanceName": "pg-prod-7"}},
            "status": {"atProvider": {"state": "succeeded"}}}),
        ManagedKind::Backup => json!({
            "apiVersion": MANAGED_API, "kind": "Backup",
            "spec": {"forProvider": {"instanceName": "pg-prod-7"}},
            "status": {"atProvider": {"status": "done"}}}),
        ManagedKind::Restore => json!({
            "apiVersion": MANAGED_API, "kind": "Restore",
            "spec": {"forProvider": {"backupName": "pg-prod-7-nightly"}},
            "status": {"atProvider": {"state": "done"}}}),
    };
    obj["metadata"] = json!({"name": name, "generation": 1,
                             "finalizers": ["finalizer.managedresource.crossplane.io"]});
    obj["spec"]["deletionPolicy"] = json!("Delete");
    obj["spec"]["providerConfigRef"] = json!({"name": provider_config});
    set_state(&mut obj, ManagedState::Ready);
    obj
}

/// Rewrites `obj`'s conditions and metadata to say `state`, as crossplane-runtime and provider-anynines
/// write them (also the scale bench's churn: `bench/src/bin/scale/`).
pub fn set_state(obj: &mut Value, state: ManagedState) {
    if let Some(meta) = obj["metadata"].as_object_mut() {
        meta.remove("deletionTimestamp");
        if let Some(a) = meta.get_mut("annotations").and_then(Value::as_object_mut) {
            a.remove("crossplane.io/paused");
        }
    }
    if let Some(status) = obj["status"].as_object_mut() {
        status.remove("pendingOperation");
    }
    let (ready, synced) = match state {
        ManagedState::Ready => (("True", "Available", ""), ("True", "ReconcileSuccess", "")),
        ManagedState::Failing => (
            ("False", "Unavailable", ""),
            ("False", "ReconcileError", QUOTA_EXCEEDED),
        ),
        ManagedState::Creating => (("False", "Creating", ""), ("True", "ReconcileSuccess", "")),
        ManagedState::Deleting => {
            obj["metadata"]["deletionTimestamp"] = json!(now_rfc3339());
            (("False", "Deleting", ""), ("True", "ReconcileSuccess", ""))
        }
        ManagedState::Paused => {
            obj["metadata"]["annotations"]["crossplane.io/paused"] = json!("true");
            (
                ("True", "Available", ""),
                (
                    "False",
                    "ReconcilePaused",
                    "Reconciliation is paused via the pause annotation",
                ),
            )
        }
        ManagedState::Pending => {
            obj["status"]["pendingOperation"] = json!("update-5d1f9a2e");
            (
                ("False", "Unavailable", ""),
                ("True", "ReconcileSuccess", ""),
            )
        }
        ManagedState::Unavailable => (
            ("False", "Unavailable", ""),
            ("True", "ReconcileSuccess", ""),
        ),
    };
    for (type_, (status, reason, message)) in [("Ready", ready), ("Synced", synced)] {
        set_condition(obj, type_, status, reason, message);
    }
}

impl SimControlPlane {
    /// A healthy estate of managed resources: one of each kind, on the seeded ProviderConfigs.
    pub(crate) fn seed_managed(&self) {
        for (kind, name) in [
            (ManagedKind::ServiceInstance, "pg-prod-7"),
            (ManagedKind::ServiceBinding, "pg-prod-7-app"),
            (ManagedKind::Backup, "pg-prod-7-nightly"),
            (ManagedKind::Restore, "pg-prod-7-restore"),
        ] {
            let mut obj = managed_object(kind, name, kind.default_provider_config());
            obj["metadata"]["creationTimestamp"] = json!(rfc3339_offset(-3600));
            self.api.apply(obj);
        }
    }

    /// Sets a managed resource's state, creating it (on its kind's default ProviderConfig) when it does
    /// not exist; `false` when that state cannot be said of the kind (a pending operation is a
    /// ServiceInstance's alone).
    pub fn set_managed(&self, kind: ManagedKind, name: &str, state: ManagedState) -> bool {
        if state == ManagedState::Pending && kind != ManagedKind::ServiceInstance {
            return false;
        }
        let found = self.api.update(MANAGED_API, kind.kind(), None, name, |o| {
            set_state(o, state)
        });
        if !found {
            let mut obj = managed_object(kind, name, kind.default_provider_config());
            set_state(&mut obj, state);
            self.api.apply(obj);
        }
        true
    }

    /// Adds `n` resources of `kind` in `state`, served by `provider_config` (the kind's default when
    /// `None`), named `PREFIX-00000`…, each Backup of its own instance and each Restore of its own backup
    /// (so every one is judged); returns their names' prefix.
    pub fn add_many_managed(
        &self,
        kind: ManagedKind,
        n: usize,
        state: ManagedState,
        provider_config: Option<&str>,
    ) -> String {
        let provider_config = provider_config.unwrap_or(kind.default_provider_config());
        let prefix = format!("{provider_config}-{}", state.word());
        let mut template = managed_object(kind, "x", provider_config);
        set_state(&mut template, state);
        for i in 0..n {
            let mut obj = template.clone();
            let name = format!("{prefix}-{i:05}");
            match kind {
                ManagedKind::Backup => obj["spec"]["forProvider"]["instanceName"] = json!(name),
                ManagedKind::Restore => obj["spec"]["forProvider"]["backupName"] = json!(name),
                _ => {}
            }
            obj["metadata"]["name"] = json!(name);
            self.api.apply(obj);
        }
        prefix
    }

    /// Deletes a managed resource outright; `false` when there is none.
    pub fn remove_managed(&self, kind: ManagedKind, name: &str) -> bool {
        self.api.delete(MANAGED_API, kind.kind(), None, name)
    }
}
