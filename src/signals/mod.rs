//! Signals watch or poll one kind of source and publish what they see as [`Observation`]s into a [`Sink`].
//! They know nothing of HTTP or policy: the engine evaluates whatever they last published.

pub mod backend_status;
pub mod deployments;
pub mod pods;
pub mod provider_configs;
pub mod providers;
pub mod watch;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, PoisonError};

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ApiResource, DynamicObject};
use tokio::sync::Notify;

use crate::config::{CheckKind, Config};
use crate::metrics::Metrics;
use crate::report::{Passthrough, Status};
use watch::{spawn_follow, Target, Watches};

/// What a signal saw of one item.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    /// The item's name within its check (`provider-anynines`, `endpoint`, …).
    pub item: String,
    pub status: Status,
    pub message: String,
    pub observed: Timestamp,
    /// How this observation goes out of date by itself, without any new event: a ProviderConfig whose
    /// last check ages past `check_stale_after`, a pod restart leaving its window, a broken watch past
    /// `stale_after`. The engine re-evaluates at each time; the latest one passed applies.
    pub expires: Vec<Expiry>,
}

/// What an observation becomes at `at`.
#[derive(Debug, Clone, PartialEq)]
pub struct Expiry {
    pub at: Timestamp,
    pub status: Status,
    pub message: String,
}

impl Observation {
    pub fn new(
        item: impl Into<String>,
        status: Status,
        message: impl Into<String>,
        observed: Timestamp,
    ) -> Self {
        Observation {
            item: item.into(),
            status,
            message: message.into(),
            observed,
            expires: Vec::new(),
        }
    }

    pub fn expiring(mut self, expiry: Expiry) -> Self {
        self.expires.push(expiry);
        self
    }

    /// Status and message as of `now`, after the latest expiry that has passed.
    pub fn at(&self, now: Timestamp) -> (Status, &str) {
        self.expires
            .iter()
            .filter(|e| now >= e.at)
            .max_by_key(|e| e.at)
            .map_or((self.status, &self.message), |e| (e.status, &e.message))
    }
}

/// Everything the signals have published so far.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// Check name → its items, as last published.
    /// Shared, so that taking a snapshot for each evaluation copies no observation.
    pub checks: BTreeMap<String, Arc<Vec<Observation>>>,
    pub backend: Option<Passthrough>,
    pub last_poll: Option<Timestamp>,
    /// Checks whose signal has not delivered its first real observation yet.
    pub unsynced: BTreeSet<String>,
}

pub use crate::telemetry::LogLimiter;

/// Where signals publish. Cheap to clone; the engine wakes on every publish.
#[derive(Clone, Default)]
pub struct Sink {
    latest: Arc<Mutex<Snapshot>>,
    changed: Arc<Notify>,
}

impl Sink {
    /// Replaces everything known about `check`.
    pub fn publish(&self, check: &str, items: Vec<Observation>) {
        self.update(|s| {
            s.unsynced.remove(check);
            s.checks.insert(check.to_string(), Arc::new(items));
        });
    }

    /// Publishes placeholder items for a check whose signal has not observed anything yet
    /// (`waiting for the first poll`, `waiting for initial sync`).
    pub fn waiting(&self, check: &str, items: Vec<Observation>) {
        self.update(|s| {
            s.unsynced.insert(check.to_string());
            s.checks.insert(check.to_string(), Arc::new(items));
        });
    }

    /// Records a poll of provider-anynines' health server, and its answer when it was a good one.
    pub fn polled(&self, at: Timestamp, good: Option<Passthrough>) {
        self.update(|s| {
            s.last_poll = Some(at);
            if good.is_some() {
                s.backend = good;
            }
        });
    }

    fn update(&self, f: impl FnOnce(&mut Snapshot)) {
        f(&mut self.latest.lock().unwrap_or_else(PoisonError::into_inner));
        self.changed.notify_one();
    }

    pub fn snapshot(&self) -> Snapshot {
        self.latest
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Resolves after the next publish (or at once if one happened since the last call).
    pub async fn changed(&self) {
        self.changed.notified().await;
    }
}

/// Starts one signal per configured check, each publishing into `sink`. Every check is published (at least
/// as waiting) before this returns. A cluster that cannot be used makes its checks `unknown` with the reason.
pub async fn start(config: &Config, sink: &Sink, metrics: &Arc<Metrics>) {
    let mut watches = Watches::default();
    for check in &config.checks {
        let name = check.name.clone();
        if let CheckKind::BackendStatus(b) = &check.kind {
            let poller =
                backend_status::Poller::new(&name, b.clone(), sink.clone(), metrics.clone());
            tokio::spawn(poller.run());
            continue;
        }
        let cluster = check.cluster.clone();
        let cluster_name = cluster.as_deref().unwrap_or("default");
        let stale_after = config
            .cluster(cluster.as_deref())
            .map_or(Duration::from_secs(60), |c| c.stale_after);
        let placeholders = match &check.kind {
            CheckKind::CrossplaneProvider(p) => p.providers.clone().unwrap_or_default(),
            CheckKind::ProviderConfig(p) => p.names.clone().unwrap_or_default(),
            CheckKind::Deployment(d) => vec![d.deployment.clone()],
            _ => vec![],
        };
        let client = match watches.client(config, cluster.as_deref()).await {
            Ok(c) => c,
            Err(e) => {
                let message = format!("cannot use cluster {cluster_name}: {e}");
                sink.waiting(
                    &name,
                    watch::waiting(&placeholders, &message, Timestamp::now()),
                );
                continue;
            }
        };
        let sink = sink.clone();
        match &check.kind {
            CheckKind::CrossplaneProvider(p) => {
                let w = watches.watch(
                    cluster_wide(client, providers::resource(), cluster),
                    &name,
                    metrics,
                );
                let wanted = p.providers.clone();
                spawn_follow(
                    w,
                    name,
                    sink,
                    stale_after,
                    placeholders,
                    move |objects, now| providers::observe(objects, wanted.as_deref(), now),
                );
            }
            CheckKind::ProviderConfig(p) => {
                let w = watches.watch(
                    cluster_wide(client, provider_configs::resource(p), cluster),
                    &name,
                    metrics,
                );
                let (names, stale) = (p.names.clone(), p.check_stale_after);
                spawn_follow(
                    w,
                    name,
                    sink,
                    stale_after,
                    placeholders,
                    move |objects, now| {
                        provider_configs::observe(objects, names.as_deref(), stale, now)
                    },
                );
            }
            CheckKind::Deployment(d) => {
                let target = Target::<Deployment> {
                    api: Api::namespaced(client, &d.namespace),
                    strip: |d| {
                        if let Some(spec) = d.spec.as_mut() {
                            spec.template = Default::default();
                        }
                    },
                    dyntype: (),
                    cluster,
                    namespace: Some(d.namespace.clone()),
                    labels: None,
                };
                let w = watches.watch(target, &name, metrics);
                let d = d.clone();
                spawn_follow(
                    w,
                    name,
                    sink,
                    stale_after,
                    placeholders,
                    move |objects, now| deployments::observe(objects, &d, now),
                );
            }
            CheckKind::Pods(p) => {
                let target = Target::<Pod> {
                    api: Api::namespaced(client, &p.namespace),
                    strip: |p| p.spec = None,
                    dyntype: (),
                    cluster,
                    namespace: Some(p.namespace.clone()),
                    labels: Some(p.selector.clone()).filter(|s| !s.is_empty()),
                };
                let w = watches.watch(target, &name, metrics);
                let (selector, window) = (p.selector.clone(), p.restart_window);
                spawn_follow(
                    w,
                    name,
                    sink,
                    stale_after,
                    placeholders,
                    move |objects, now| pods::observe(objects, &selector, window, now),
                );
            }
            CheckKind::BackendStatus(_) => {}
        }
    }
}

/// A cluster-scoped custom resource, judged by its status alone.
fn cluster_wide(
    client: kube::Client,
    resource: ApiResource,
    cluster: Option<String>,
) -> Target<DynamicObject> {
    Target {
        api: Api::all_with(client, &resource),
        strip: keep_status,
        dyntype: resource,
        cluster,
        namespace: None,
        labels: None,
    }
}

/// Crossplane and provider-anynines objects are judged by their status alone.
fn keep_status(obj: &mut DynamicObject) {
    let status = obj.data.get_mut("status").map(serde_json::Value::take);
    obj.data = serde_json::json!({ "status": status });
}
