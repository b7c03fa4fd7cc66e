//! Both fakes seeded as a healthy Klutch control plane, with the faults an operator meets.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::api::now_rfc3339 as now;
use crate::estate::Konnectors;
pub use crate::pods::provider_pod;
use crate::pods::{crash_loop, provider_pod_in, PodState};
use crate::{fixtures, FakeApi, FakeBackend};

pub const PROVIDER_API: &str = "pkg.crossplane.io/v1";
pub const PROVIDER_CONFIG_API: &str = "dataservices.anynines.com/v1";

/// The ProviderConfigs of the seeded control plane.
pub const PROVIDER_CONFIGS: [&str; 2] = ["postgresql-service-broker", "postgresql-backup-manager"];

/// `spec.serviceType` of a seeded ProviderConfig (required since provider-anynines v1.5.0).
fn service_type(name: &str) -> &'static str {
    if name.ends_with("backup-manager") {
        "backupmanager"
    } else {
        "servicebroker"
    }
}

/// A fake API server and a fake provider-anynines health server that agree with each other.
#[derive(Clone)]
pub struct SimControlPlane {
    pub api: FakeApi,
    pub backend: FakeBackend,
    pub(crate) konnectors: Arc<Konnectors>,
    /// provider-anynines' container crash-loops: its health loop re-checks no ProviderConfig.
    crashing: Arc<AtomicBool>,
}

impl SimControlPlane {
    /// Starts both fakes on free loopback ports, seeded healthy.
    pub async fn start() -> anyhow::Result<SimControlPlane> {
        Ok(SimControlPlane::with(
            FakeApi::start().await?,
            FakeBackend::start().await?,
        ))
    }

    /// Like [`SimControlPlane::start`], with the API served over TLS; its CA and a service-account token are
    /// written to `dir` (see [`FakeApi::tls_files`]).
    pub async fn start_tls(dir: &std::path::Path) -> anyhow::Result<SimControlPlane> {
        Ok(SimControlPlane::with(
            FakeApi::start_tls(dir).await?,
            FakeBackend::start().await?,
        ))
    }

    /// Seeds an existing pair of fakes.
    pub fn with(api: FakeApi, backend: FakeBackend) -> SimControlPlane {
        let cp = SimControlPlane {
            api,
            backend,
            konnectors: Arc::default(),
            crashing: Arc::default(),
        };
        cp.seed();
        cp
    }

    fn seed(&self) {
        for ns in ["crossplane-system", "bind", "default"] {
            self.api.apply(
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns},
                                  "status": {"phase": "Active"}}),
            );
        }
        self.api.apply(fixtures::provider_healthy());
        self.api.apply(fixtures::provider_kubernetes_healthy());
        for name in PROVIDER_CONFIGS {
            let mut pc = fixtures::providerconfig_healthy();
            pc["metadata"] = json!({"name": name});
            pc["spec"]["serviceType"] = json!(service_type(name));
            pc["status"]["health"]["lastCheckTime"] = json!(now());
            self.api.apply(pc);
            self.backend.set_entry(name, "ok");
        }
        self.api.apply(json!({"apiVersion": "kubernetes.crossplane.io/v1alpha1", "kind": "ProviderConfig",
            "metadata": {"name": "default"}, "spec": {"credentials": {"source": "InjectedIdentity"}}}));
        self.api
            .apply(fixtures::deployment_anynines_backend_available());
        self.api.apply(fixtures::deployment_konnector_available());
        self.api.apply(provider_pod());
        self.seed_managed();
    }

    /// The ProviderConfig fails its health check, as provider-anynines records it, and the health server
    /// reports it `degraded` (still with HTTP 200).
    pub fn degrade_provider_config(&self, name: &str, message: &str) {
        self.set_provider_config(name, false, message);
        self.backend.set_entry(name, "degraded");
    }

    pub fn heal_provider_config(&self, name: &str) {
        self.set_provider_config(name, true, "Available");
        self.backend.set_entry(name, "ok");
    }

    fn set_provider_config(&self, name: &str, ok: bool, message: &str) {
        self.api
            .update(PROVIDER_CONFIG_API, "ProviderConfig", None, name, |pc| {
                pc["status"]["health"] =
                    json!({"lastCheckTime": now(), "lastStatus": ok, "lastMessage": message});
            });
    }

    /// Crossplane's view of the provider package: Healthy True or False, as in the fixtures.
    pub fn set_provider_healthy(&self, name: &str, healthy: bool) {
        let (status, reason, message) = if healthy {
            ("True", "HealthyPackageRevision", String::new())
        } else {
            (
                "False",
                "UnhealthyPackageRevision",
                format!("Deployment {name}-3f2a9c1b7e5d does not have minimum availability"),
            )
        };
        self.api.set_condition(
            PROVIDER_API,
            "Provider",
            None,
            name,
            "Healthy",
            status,
            reason,
            &message,
        );
    }

    pub fn set_deployment_available(&self, namespace: &str, name: &str, available: bool) {
        self.api
            .update("apps/v1", "Deployment", Some(namespace), name, |d| {
                let replicas = d["spec"]["replicas"].as_i64().unwrap_or(1);
                let ready = if available { replicas } else { 0 };
                // The Deployment controller leaves out a count that is zero (`omitempty`).
                for (key, n) in [
                    ("readyReplicas", ready),
                    ("availableReplicas", ready),
                    ("unavailableReplicas", replicas - ready),
                ] {
                    match d["status"].as_object_mut() {
                        Some(status) if n == 0 => {
                            status.remove(key);
                        }
                        _ => d["status"][key] = json!(n),
                    }
                }
                let (status, reason, message) = if available {
                    (
                        "True",
                        "MinimumReplicasAvailable",
                        "Deployment has minimum availability.",
                    )
                } else {
                    (
                        "False",
                        "MinimumReplicasUnavailable",
                        "Deployment does not have minimum availability.",
                    )
                };
                if let Some(conditions) = d["status"]["conditions"].as_array_mut() {
                    for c in conditions.iter_mut().filter(|c| c["type"] == "Available") {
                        c["status"] = json!(status);
                        c["reason"] = json!(reason);
                        c["message"] = json!(message);
                        c["lastTransitionTime"] = json!(now());
                    }
                }
            });
    }

    /// A spec change the Deployment controller has not seen yet: `metadata.generation` moves one ahead of
    /// `status.observedGeneration`.
    pub fn set_deployment_lagging(&self, namespace: &str, name: &str) -> bool {
        self.api
            .update("apps/v1", "Deployment", Some(namespace), name, |d| {
                let generation = d["metadata"]["generation"].as_i64().unwrap_or(1);
                d["status"]["observedGeneration"] = json!(generation);
                d["metadata"]["generation"] = json!(generation + 1);
            })
    }

    /// `Progressing=False` with reason `ProgressDeadlineExceeded` (a stuck rollout), or back to
    /// `NewReplicaSetAvailable`.
    pub fn set_deployment_deadline_exceeded(
        &self,
        namespace: &str,
        name: &str,
        exceeded: bool,
    ) -> bool {
        let (status, reason, message) = if exceeded {
            (
                "False",
                "ProgressDeadlineExceeded",
                format!("ReplicaSet \"{name}-7d9f8c6b5\" has timed out progressing."),
            )
        } else {
            (
                "True",
                "NewReplicaSetAvailable",
                format!("ReplicaSet \"{name}-7d9f8c6b5\" has successfully progressed."),
            )
        };
        self.api.set_condition(
            "apps/v1",
            "Deployment",
            Some(namespace),
            name,
            "Progressing",
            status,
            reason,
            &message,
        )
    }

    /// Moves the klutch-bind backend Deployment in `bind` to `name`: `anynines-backend` (the Klutch release
    /// bundle) or `klutch-bind-backend` (klutchio-deploy).
    pub fn rename_backend_deployment(&self, name: &str) {
        let current = ["anynines-backend", "klutch-bind-backend"]
            .into_iter()
            .find_map(|n| self.api.get("apps/v1", "Deployment", Some("bind"), n));
        let mut deployment =
            current.unwrap_or_else(fixtures::deployment_anynines_backend_available);
        let old = deployment["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if old == name {
            return;
        }
        self.api.delete("apps/v1", "Deployment", Some("bind"), &old);
        deployment["metadata"]["name"] = json!(name);
        for key in ["uid", "resourceVersion", "creationTimestamp"] {
            if let Some(m) = deployment["metadata"].as_object_mut() {
                m.remove(key);
            }
        }
        self.api.apply(deployment);
    }

    /// The health server's entries as the seeded ProviderConfigs' health says (`ok` or `degraded`).
    pub fn reset_backend_entries(&self) {
        let entries = PROVIDER_CONFIGS
            .iter()
            .map(|name| {
                let healthy = self
                    .api
                    .get(PROVIDER_CONFIG_API, "ProviderConfig", None, name)
                    .and_then(|pc| {
                        pc.pointer("/status/health/lastStatus")
                            .and_then(Value::as_bool)
                    })
                    .unwrap_or(false);
                let value = if healthy { "ok" } else { "degraded" };
                (name.to_string(), value.to_string())
            })
            .collect();
        self.backend.set_entries(entries);
    }

    /// Adds a provider-anynines pod in `state` beside the Ready one; returns its name.
    pub fn add_provider_pod(&self, state: PodState) -> String {
        let pod = provider_pod_in(state);
        let name = pod["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        self.api.apply(pod);
        name
    }

    /// Removes a pod `add_provider_pod` added; `false` when there is none.
    pub fn remove_provider_pod(&self, state: PodState) -> bool {
        let name = provider_pod_in(state)["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        self.api
            .delete("v1", "Pod", Some("crossplane-system"), &name)
    }

    /// provider-anynines' container crash-loops (`true`), or runs again (`false`), with everything that
    /// follows from it in a real cluster: its pod is not Ready (`CrashLoopBackOff`), Crossplane marks the
    /// Provider `Healthy=False` (its Deployment lacks minimum availability), the health server refuses
    /// connections, and the health loop ([`SimControlPlane::spawn_provider_loop`]) re-checks no
    /// ProviderConfig, so their `lastCheckTime` ages. One broken part, many symptoms.
    pub fn crash_loop_provider(&self, crashing: bool) {
        self.crashing.store(crashing, Ordering::SeqCst);
        let name = provider_pod()["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        self.api
            .update("v1", "Pod", Some("crossplane-system"), &name, |p| {
                if crashing {
                    crash_loop(p);
                } else {
                    p["status"] = provider_pod()["status"].clone();
                }
            });
        self.set_provider_healthy("provider-anynines", !crashing);
        self.backend.set_mode(if crashing {
            crate::BackendMode::Refuse
        } else {
            crate::BackendMode::Healthy
        });
    }

    /// Refreshes every ProviderConfig's `lastCheckTime` like provider-anynines' health loop: every
    /// `healthy_every` for passing configs, `failing_every` for failing ones, while the provider runs (not
    /// while it crash-loops). Runs until the process ends.
    pub fn spawn_provider_loop(&self, healthy_every: Duration, failing_every: Duration) {
        let api = self.api.clone();
        let crashing = self.crashing.clone();
        tokio::spawn(async move {
            let tick = healthy_every
                .min(failing_every)
                .max(Duration::from_millis(100));
            let mut last: std::collections::HashMap<String, std::time::Instant> =
                Default::default();
            loop {
                tokio::time::sleep(tick).await;
                if crashing.load(Ordering::SeqCst) {
                    continue;
                }
                for name in PROVIDER_CONFIGS {
                    let Some(pc) = api.get(PROVIDER_CONFIG_API, "ProviderConfig", None, name)
                    else {
                        continue;
                    };
                    let ok = pc
                        .pointer("/status/health/lastStatus")
                        .and_then(Value::as_bool)
                        .unwrap_or(false);
                    let every = if ok { healthy_every } else { failing_every };
                    let due = last.get(name).is_none_or(|t| t.elapsed() >= every);
                    if due {
                        last.insert(name.to_string(), std::time::Instant::now());
                        api.update(PROVIDER_CONFIG_API, "ProviderConfig", None, name, |pc| {
                            pc["status"]["health"]["lastCheckTime"] = json!(now());
                        });
                    }
                }
            }
        });
    }
}
