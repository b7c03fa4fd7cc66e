//! The rest of a Klutch estate, opt-in beside the default control plane: every Crossplane package kind, and
//! app clusters whose konnectors heartbeat into `ClusterBinding`s, with the faults an operator meets.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::api::{now_rfc3339, rfc3339_offset, set_condition};
use crate::control_plane::PROVIDER_API;
use crate::{fixtures, SimControlPlane};

pub const CLUSTER_BINDING_API: &str = "klutch.anynines.com/v1alpha1";

/// The consumer namespaces of the three seeded app clusters.
pub const APP_CLUSTERS: [&str; 3] = ["kube-bind-7xk2p", "kube-bind-m4n8q", "kube-bind-z9t3w"];

/// The seeded AppClusterBindings (klutch-bind's control-plane mode): (namespace, name, whether the control
/// plane runs its konnector). One of each mode.
pub const APP_CLUSTER_BINDINGS: [(&str, &str, bool); 2] =
    [("team-a", "prod", true), ("team-b", "dev", false)];

/// What an AppClusterBinding's conditions say, as klutch-bind's backend sets them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindingState {
    Ready,
    /// `SecretValid=False`: the kubeconfig Secret cannot be used (and so `Ready=False`).
    SecretInvalid,
    /// `Ready=False` with a valid Secret.
    NotReady,
}

impl BindingState {
    /// From the control API's word.
    pub fn from_word(word: &str) -> Option<BindingState> {
        match word {
            "ready" => Some(BindingState::Ready),
            "secret-invalid" => Some(BindingState::SecretInvalid),
            "not-ready" => Some(BindingState::NotReady),
            _ => None,
        }
    }
}

/// A Crossplane package kind (`pkg.crossplane.io/v1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PackageKind {
    Provider,
    Configuration,
    Function,
}

impl PackageKind {
    pub fn kind(self) -> &'static str {
        match self {
            PackageKind::Provider => "Provider",
            PackageKind::Configuration => "Configuration",
            PackageKind::Function => "Function",
        }
    }

    /// From the plural (`providers`, `configurations`, `functions`), as the control API names them.
    pub fn from_plural(plural: &str) -> Option<PackageKind> {
        match plural {
            "providers" => Some(PackageKind::Provider),
            "configurations" => Some(PackageKind::Configuration),
            "functions" => Some(PackageKind::Function),
            _ => None,
        }
    }
}

/// A package's `Healthy` condition, in the wording of each Crossplane major version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PackageHealth {
    Healthy,
    /// Crossplane 1.x: `post establish runtime hook failed for package: …`.
    UnhealthyV1,
    /// Crossplane 2.x: `Package runtime health is "False" with message: …`.
    UnhealthyV2,
}

const UNAVAILABLE: &str = "Deployment does not have minimum availability.";

/// `RuntimeActive`'s message while a provider waits for its first active ManagedResourceDefinition (as in
/// `fixtures/provider-v2-awaiting-activation.json`).
const AWAITING_ACTIVATION: &str =
    "waiting for a ManagedResourceDefinition of this provider to become active";

impl PackageHealth {
    /// (status, reason, message) of the `Healthy` condition.
    pub fn condition(self, kind: PackageKind) -> (&'static str, &'static str, String) {
        let what = kind.kind().to_lowercase();
        match self {
            PackageHealth::Healthy => ("True", "HealthyPackageRevision", String::new()),
            PackageHealth::UnhealthyV1 => (
                "False",
                "UnhealthyPackageRevision",
                format!(
                    "post establish runtime hook failed for package: {what} package deployment is unavailable \
                     with message: {UNAVAILABLE}"
                ),
            ),
            PackageHealth::UnhealthyV2 => (
                "False",
                "UnhealthyPackageRevision",
                format!("Package runtime health is \"False\" with message: {UNAVAILABLE}"),
            ),
        }
    }
}

/// One app cluster's konnector, as the simulation drives it.
#[derive(Debug, Clone)]
struct Konnector {
    interval: Duration,
    silenced: bool,
    /// The konnector's clock minus the API server's, in seconds.
    skew_secs: i64,
    last_beat: Option<Instant>,
}

/// The konnectors of a control plane, and whether their heartbeat loop runs.
#[derive(Default)]
pub(crate) struct Konnectors {
    by_namespace: Mutex<BTreeMap<String, Konnector>>,
    running: Mutex<bool>,
}

impl Konnectors {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Konnector>> {
        self.by_namespace
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// `30s`, `5m0s`, `1h0m0s`, `500ms`: a duration as Go's `time.Duration.String` writes it.
pub fn go_duration(d: Duration) -> String {
    let secs = d.as_secs();
    if secs == 0 {
        return format!("{}ms", d.as_millis());
    }
    match (secs / 3600, secs % 3600 / 60, secs % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, s) => format!("{m}m{s}s"),
        (h, m, s) => format!("{h}h{m}m{s}s"),
    }
}

fn package(kind: PackageKind, name: &str, package: &str) -> Value {
    let mut obj = fixtures::configuration_healthy();
    obj["kind"] = json!(kind.kind());
    obj["metadata"] = json!({"name": name, "generation": 1});
    obj["spec"]["package"] = json!(package);
    obj["status"]["currentIdentifier"] = json!(package);
    obj["status"]["currentRevision"] = json!(format!("{name}-8d7c6b5a4f3e"));
    if kind != PackageKind::Configuration {
        obj["spec"]["runtimeConfigRef"] = json!({"apiVersion": "pkg.crossplane.io/v1beta1", "kind": "DeploymentRuntimeConfig", "name": "default"});
    }
    obj
}

impl SimControlPlane {
    /// Seeds the rest of the estate (opt-in, so that the default control plane's item lists stay as they
    /// were): the Configuration `anynines-dataservices`, the Function `function-patch-and-transform`,
    /// provider-kubernetes as Crossplane 2 scales an idle provider to zero, and a `ClusterBinding` for each
    /// of [`APP_CLUSTERS`] whose konnector heartbeats every `heartbeat_interval / 2`.
    pub fn seed_estate(&self, heartbeat_interval: Duration) {
        self.api.apply(fixtures::provider_v2_awaiting_activation());
        let mut configuration = fixtures::configuration_healthy();
        configuration["metadata"] = json!({"name": "anynines-dataservices", "generation": 1});
        self.api.apply(configuration);
        self.api.apply(package(
            PackageKind::Function,
            "function-patch-and-transform",
            "xpkg.upbound.io/crossplane-contrib/function-patch-and-transform:v0.7.0",
        ));
        for ns in APP_CLUSTERS {
            self.add_cluster_binding(ns, heartbeat_interval);
        }
        for (namespace, name, deploy) in APP_CLUSTER_BINDINGS {
            self.add_app_cluster_binding(namespace, name, deploy);
        }
    }

    /// Binds an app cluster in control-plane mode: an `AppClusterBinding` `namespace/name`, Ready, and with
    /// `deploy` the konnector Deployment the backend runs for it (Available, in its own namespace).
    pub fn add_app_cluster_binding(&self, namespace: &str, name: &str, deploy: bool) {
        self.api.apply(
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace},
                              "status": {"phase": "Active"}}),
        );
        let mut binding = fixtures::appclusterbinding_konnector_deployed();
        binding["metadata"] = json!({"name": name, "namespace": namespace, "generation": 1});
        binding["spec"]["kubeconfigSecretRef"] = json!({"name": format!("{name}-kubeconfig"), "namespace": namespace, "key": "kubeconfig"});
        binding["spec"]["konnector"]["deploy"] = json!(deploy);
        if !deploy {
            if let Some(conditions) = binding["status"]["conditions"].as_array_mut() {
                conditions.retain(|c| c["type"] != "KonnectorDeployed");
            }
        }
        self.api.apply(binding);
        if deploy {
            self.restore_app_konnector(namespace, name);
        }
    }

    /// The konnector Deployment of the binding `namespace/name` (and its namespace), Available, as the
    /// backend creates it; `false` when there is no such binding.
    pub fn restore_app_konnector(&self, namespace: &str, name: &str) -> bool {
        if self
            .api
            .get(
                CLUSTER_BINDING_API,
                "AppClusterBinding",
                Some(namespace),
                name,
            )
            .is_none()
        {
            return false;
        }
        let (ns, deployment) = app_konnector(namespace, name);
        self.api.apply(
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns},
                              "status": {"phase": "Active"}}),
        );
        let mut d = fixtures::deployment_konnector_available();
        d["metadata"] = json!({"name": deployment, "namespace": ns, "generation": 1, "labels": {
            "klutch.anynines.com/appclusterbinding-name": name,
            "klutch.anynines.com/appclusterbinding-namespace": namespace}});
        self.api.apply(d);
        true
    }

    /// Deletes the konnector Deployment of the binding `namespace/name`; `false` when there is none.
    pub fn remove_app_konnector(&self, namespace: &str, name: &str) -> bool {
        let (ns, deployment) = app_konnector(namespace, name);
        self.api
            .delete("apps/v1", "Deployment", Some(&ns), &deployment)
    }

    /// Sets the conditions of the AppClusterBinding `namespace/name`; `false` when there is none.
    pub fn set_app_cluster_binding(
        &self,
        namespace: &str,
        name: &str,
        state: BindingState,
    ) -> bool {
        self.api.update(
            CLUSTER_BINDING_API,
            "AppClusterBinding",
            Some(namespace),
            name,
            |b| {
                let (secret, ready) = match state {
                    BindingState::Ready => (("True", "", ""), ("True", "", "")),
                    BindingState::SecretInvalid => (
                        (
                            "False",
                            "KubeconfigInvalid",
                            "cannot load the kubeconfig from the secret: no cluster",
                        ),
                        (
                            "False",
                            "SecretInvalid",
                            "the kubeconfig secret is not valid",
                        ),
                    ),
                    BindingState::NotReady => (
                        ("True", "", ""),
                        (
                            "False",
                            "KonnectorNotReady",
                            "the konnector has not connected yet",
                        ),
                    ),
                };
                set_condition(b, "SecretValid", secret.0, secret.1, secret.2);
                set_condition(b, "Ready", ready.0, ready.1, ready.2);
            },
        )
    }

    /// Binds another app cluster: its namespace and a `ClusterBinding` `cluster` whose konnector heartbeats.
    pub fn add_cluster_binding(&self, namespace: &str, heartbeat_interval: Duration) {
        self.api.apply(
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace},
                              "status": {"phase": "Active"}}),
        );
        let mut binding = fixtures::clusterbinding_healthy();
        binding["metadata"] = json!({"name": "cluster", "namespace": namespace, "generation": 1});
        binding["status"]["heartbeatInterval"] = json!(go_duration(heartbeat_interval));
        binding["status"]["lastHeartbeatTime"] = json!(now_rfc3339());
        binding["metadata"]["managedFields"] = json!([status_write(now_rfc3339())]);
        self.api.apply(binding);
        let konnector = Konnector {
            interval: heartbeat_interval,
            silenced: false,
            skew_secs: 0,
            last_beat: Some(Instant::now()),
        };
        self.konnectors
            .lock()
            .insert(namespace.to_string(), konnector);
        self.spawn_heartbeats();
    }

    /// Stops (`true`) or resumes a konnector's heartbeats; `false` when no such app cluster is bound.
    pub fn silence_konnector(&self, namespace: &str, silenced: bool) -> bool {
        self.with_konnector(namespace, |k| k.silenced = silenced)
    }

    /// Sets a konnector's clock `offset_secs` ahead of the API server's (negative: behind).
    pub fn skew_konnector(&self, namespace: &str, offset_secs: i64) -> bool {
        self.with_konnector(namespace, |k| k.skew_secs = offset_secs)
    }

    fn with_konnector(&self, namespace: &str, f: impl FnOnce(&mut Konnector)) -> bool {
        self.konnectors.lock().get_mut(namespace).map(f).is_some()
    }

    /// One heartbeat loop per control plane, started with the first binding.
    fn spawn_heartbeats(&self) {
        let mut running = self
            .konnectors
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if *running {
            return;
        }
        *running = true;
        let cp = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(50)).await;
                cp.beat_due_konnectors();
            }
        });
    }

    fn beat_due_konnectors(&self) {
        let due: Vec<(String, i64)> = self
            .konnectors
            .lock()
            .iter_mut()
            .filter(|(_, k)| {
                !k.silenced && k.last_beat.is_none_or(|t| t.elapsed() >= k.interval / 2)
            })
            .map(|(ns, k)| {
                k.last_beat = Some(Instant::now());
                (ns.clone(), k.skew_secs)
            })
            .collect();
        for (ns, skew) in due {
            self.api.update(
                CLUSTER_BINDING_API,
                "ClusterBinding",
                Some(&ns),
                "cluster",
                |b| {
                    b["status"]["lastHeartbeatTime"] = json!(rfc3339_offset(skew));
                    b["metadata"]["managedFields"] = json!([status_write(now_rfc3339())]);
                },
            );
        }
    }

    /// Crossplane 2 scales a provider to zero (`true`) until one of its ManagedResourceDefinitions is
    /// active: healthy, `RuntimeActive=False` reason `AwaitingActivation`, and none of its pods left; or
    /// activates it again (`false`), with provider-anynines' pod back. `false` when there is no such provider.
    pub fn set_provider_scaled_to_zero(&self, name: &str, scaled: bool) -> bool {
        let found = self.api.update(PROVIDER_API, "Provider", None, name, |p| {
            for type_ in ["Healthy", "RevisionHealthy", "RuntimeHealthy"] {
                set_condition(p, type_, "True", "HealthyPackageRevision", "");
            }
            if scaled {
                set_condition(
                    p,
                    "RuntimeActive",
                    "False",
                    "AwaitingActivation",
                    AWAITING_ACTIVATION,
                );
            } else {
                // Crossplane's ReasonActiveRuntime; klutch-health reads no reason of a true RuntimeActive.
                set_condition(p, "RuntimeActive", "True", "ActiveRuntime", "");
            }
        });
        if !found {
            return false;
        }
        let pods: Vec<String> = self
            .api
            .list("v1", "Pod")
            .into_iter()
            .filter(|pod| {
                pod["metadata"]["namespace"] == "crossplane-system"
                    && pod["metadata"]["labels"]["pkg.crossplane.io/provider"] == name
            })
            .filter_map(|pod| pod["metadata"]["name"].as_str().map(str::to_string))
            .collect();
        if scaled {
            for pod in pods {
                self.api
                    .delete("v1", "Pod", Some("crossplane-system"), &pod);
            }
        } else if pods.is_empty() && name == "provider-anynines" {
            self.api.apply(crate::pods::provider_pod());
        }
        true
    }

    /// Sets a package's `Healthy` condition; `false` when there is no such package. On a Crossplane 2
    /// package (one that carries `RuntimeHealthy`) that condition follows: `False` with the runtime's own
    /// message, `True` again when healthy.
    pub fn set_package_health(&self, kind: PackageKind, name: &str, health: PackageHealth) -> bool {
        let (status, reason, message) = health.condition(kind);
        self.api
            .update(PROVIDER_API, kind.kind(), None, name, |obj| {
                let generation = obj["metadata"]["generation"].clone();
                set_condition(obj, "Healthy", status, reason, &message);
                let crossplane_2 = obj["status"]["conditions"]
                    .as_array()
                    .is_some_and(|cs| cs.iter().any(|c| c["type"] == "RuntimeHealthy"));
                match health {
                    _ if !crossplane_2 => {}
                    PackageHealth::Healthy => {
                        set_condition(obj, "RuntimeHealthy", "True", "HealthyPackageRevision", "")
                    }
                    PackageHealth::UnhealthyV1 | PackageHealth::UnhealthyV2 => set_condition(
                        obj,
                        "RuntimeHealthy",
                        "False",
                        "UnhealthyPackageRevision",
                        UNAVAILABLE,
                    ),
                }
                if let Some(c) = obj["status"]["conditions"]
                    .as_array_mut()
                    .and_then(|cs| cs.iter_mut().find(|c| c["type"] == "Healthy"))
                {
                    if !generation.is_null() {
                        c["observedGeneration"] = generation;
                    }
                }
            })
    }

    /// Bumps a package's `metadata.generation` (a spec change) while its conditions' `observedGeneration`
    /// stays behind, as before Crossplane reconciles it; returns the new generation.
    pub fn bump_package_generation(&self, kind: PackageKind, name: &str) -> Option<i64> {
        let mut generation = None;
        self.api
            .update(PROVIDER_API, kind.kind(), None, name, |obj| {
                let old = obj["metadata"]["generation"].as_i64().unwrap_or(1);
                if let Some(conditions) = obj["status"]["conditions"].as_array_mut() {
                    for c in conditions
                        .iter_mut()
                        .filter(|c| c.get("observedGeneration").is_none())
                    {
                        c["observedGeneration"] = json!(old);
                    }
                }
                obj["metadata"]["generation"] = json!(old + 1);
                generation = Some(old + 1);
            });
        generation
    }
}

/// Where klutch-bind's backend runs the konnector of the AppClusterBinding `namespace/name`:
/// (namespace, Deployment name).
pub fn app_konnector(namespace: &str, name: &str) -> (String, String) {
    (
        format!("klutch-bind-{namespace}-{name}"),
        format!("konnector-{name}"),
    )
}

/// The `managedFields` entry of a konnector's status write, stamped with the API server's clock.
fn status_write(time: String) -> Value {
    json!({"manager": "konnector", "operation": "Update", "apiVersion": CLUSTER_BINDING_API, "time": time,
           "fieldsType": "FieldsV1", "subresource": "status",
           "fieldsV1": {"f:status": {"f:heartbeatInterval": {}, "f:lastHeartbeatTime": {}}}})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_as_go_writes_them() {
        assert_eq!(go_duration(Duration::from_secs(30)), "30s");
        assert_eq!(go_duration(Duration::from_secs(300)), "5m0s");
        assert_eq!(go_duration(Duration::from_secs(3600)), "1h0m0s");
        assert_eq!(go_duration(Duration::from_millis(500)), "500ms");
    }
}
