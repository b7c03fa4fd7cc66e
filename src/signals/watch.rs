//! Kubernetes watches shared between checks: one kube-runtime watcher per cluster, resource, namespace and
//! label selector (namespaced resources are watched in their namespace only, so that RBAC can stay a
//! namespaced Role), feeding a reflector store that every check needing that resource reads.
//!
//! A watch that fails is restarted from a fresh list with backoff; meanwhile the store keeps the last known
//! objects and the state records since when the watch is broken, so checks can turn their items `unknown`
//! once that lasts longer than `stale_after`.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::fmt::Debug;
use std::hash::Hash;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;
use kube::api::Api;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::reflector::{store::Writer, Store};
use kube::runtime::watcher::{self, watcher, Event};
use kube::{Client, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::watch as channel;

use kube::api::{ApiResource, DynamicObject};
use serde::{Deserialize, Serialize};

use super::{Expiry, Observation, Sink};
use crate::human::error_chain;
use crate::metrics::Metrics;
use crate::report::Status;
use crate::telemetry::LogLimiter;
use crate::values::{duration, text};

/// How to reach one Kubernetes cluster. `[kubernetes]` is the default cluster; `[clusters.NAME]` the others.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Cluster {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kubeconfig: Option<std::path::PathBuf>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        deserialize_with = "text::option"
    )]
    pub context: Option<String>,
    #[serde(with = "duration")]
    pub stale_after: Duration,
    /// Whether to write Kubernetes Events about transitions (`[kubernetes]` only; `None`: yes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub events: Option<bool>,
}

impl Default for Cluster {
    fn default() -> Self {
        Cluster {
            kubeconfig: None,
            context: None,
            stale_after: Duration::from_secs(60),
            events: None,
        }
    }
}

/// The default cluster and the named ones.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clusters<'a> {
    pub default: &'a Cluster,
    pub named: &'a std::collections::BTreeMap<String, Cluster>,
}

impl<'a> Clusters<'a> {
    /// The cluster `name` (`None`: the default one).
    pub(crate) fn get(&self, name: Option<&str>) -> Option<&'a Cluster> {
        match name {
            None => Some(self.default),
            Some(n) => self.named.get(n),
        }
    }
}

/// The placeholder item of a check whose watch has not listed anything yet.
pub(crate) const WATCH_ITEM: &str = "watch";

const BACKOFF_START: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// How a watch is doing.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct WatchState {
    /// The initial list has completed at least once.
    pub synced: bool,
    /// Since when, and why, the watch has been failing; `None` while it works.
    pub broken: Option<Broken>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Broken {
    pub since: Timestamp,
    pub error: String,
}

/// One shared watch, as a check sees it.
pub(crate) struct Watch<K: Resource + 'static>
where
    K::DynamicType: Eq + Hash + Clone,
{
    pub store: Store<K>,
    pub state: channel::Receiver<WatchState>,
    /// What is watched, for messages: `deployments.apps in namespace bind on cluster default`.
    pub what: Arc<str>,
    /// Checks reading this watch, each counted in `klutch_health_watch_restarts_total`.
    subscribers: Arc<Mutex<Vec<String>>>,
}

impl<K: Resource + 'static> Clone for Watch<K>
where
    K::DynamicType: Eq + Hash + Clone,
{
    fn clone(&self) -> Self {
        Watch {
            store: self.store.clone(),
            state: self.state.clone(),
            what: self.what.clone(),
            subscribers: self.subscribers.clone(),
        }
    }
}

/// Starts watches on demand and hands out the existing one when the same resource is asked for again.
#[derive(Default)]
pub(crate) struct Watches {
    clients: HashMap<Option<String>, Result<Client, Arc<ClientError>>>,
    /// Keyed by resource type and description, so a downcast always finds its own type.
    started: HashMap<(TypeId, String), Box<dyn Any + Send>>,
}

/// What to watch: the API (cluster, resource, namespace) and an optional label selector.
pub(crate) struct Target<K: Resource> {
    pub api: Api<K>,
    /// Drops what no check reads before an object is stored (specs, for a start), to keep memory small.
    pub strip: fn(&mut K),
    pub dyntype: K::DynamicType,
    pub cluster: Option<String>,
    pub namespace: Option<String>,
    pub labels: Option<String>,
}

impl Watches {
    /// The client of a cluster (`None`: the default one), created once; `Err` says why it cannot be used.
    pub(crate) async fn client(
        &mut self,
        clusters: &Clusters<'_>,
        cluster: Option<&str>,
    ) -> Result<Client, Arc<ClientError>> {
        let key = cluster.map(str::to_string);
        if !self.clients.contains_key(&key) {
            let client = make_client(clusters, cluster).await.map_err(Arc::new);
            if let Err(e) = &client {
                tracing::error!(cluster = cluster.unwrap_or("default"), error = %e, "cannot use cluster");
            }
            self.clients.insert(key.clone(), client);
        }
        self.clients[&key].clone()
    }

    /// The shared watch of `target`, started on first use. `check` subscribes to its restart counter.
    pub(crate) fn watch<K>(
        &mut self,
        target: Target<K>,
        check: &str,
        metrics: &Arc<Metrics>,
    ) -> Watch<K>
    where
        K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
        K::DynamicType: Eq + Hash + Clone + Send + Sync,
    {
        let plural = K::plural(&target.dyntype);
        let group = K::group(&target.dyntype);
        let resource = if group.is_empty() {
            plural.to_string()
        } else {
            format!("{plural}.{group}")
        };
        let mut what = resource.clone();
        if let Some(ns) = &target.namespace {
            what.push_str(&format!(" in namespace {ns}"));
        }
        if let Some(l) = &target.labels {
            what.push_str(&format!(" with labels {l}"));
        }
        what.push_str(&format!(
            " on cluster {}",
            target.cluster.as_deref().unwrap_or("default")
        ));
        let key = (TypeId::of::<K>(), what.clone());
        let watch = match self
            .started
            .get(&key)
            .and_then(|w| w.downcast_ref::<Watch<K>>())
        {
            Some(existing) => existing.clone(),
            None => {
                let mut config = watcher::Config::default();
                if let Some(l) = &target.labels {
                    config = config.labels(l);
                }
                let writer = Writer::new(target.dyntype.clone());
                let (tx, state) = channel::channel(WatchState::default());
                let watch = Watch {
                    store: writer.as_reader(),
                    state,
                    what: what.as_str().into(),
                    subscribers: Arc::default(),
                };
                tokio::spawn(run(
                    target.api,
                    config,
                    target.strip,
                    writer,
                    tx,
                    watch.clone(),
                    metrics.clone(),
                ));
                self.started.insert(key, Box::new(watch.clone()));
                watch
            }
        };
        watch
            .subscribers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(check.to_string());
        watch
    }
}

/// Why a cluster cannot be used. Each message carries its causes on one line, as hyper's and kube's
/// top-level errors alone say little.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ClientError {
    #[error("cluster {0:?} is not declared")]
    Undeclared(String),
    #[error("cannot read kubeconfig {}: {}", .path.display(), error_chain(.source))]
    ReadKubeconfig {
        path: std::path::PathBuf,
        #[source]
        source: kube::config::KubeconfigError,
    },
    #[error("kubeconfig {}: {}", .path.display(), error_chain(.source))]
    Kubeconfig {
        path: std::path::PathBuf,
        #[source]
        source: kube::config::KubeconfigError,
    },
    #[error("kubeconfig: {}", error_chain(.0))]
    DefaultKubeconfig(#[source] kube::config::KubeconfigError),
    #[error("no in-cluster service account and no usable kubeconfig ({}); set KUBECONFIG or [kubernetes] kubeconfig", error_chain(.0))]
    Infer(#[source] kube::config::InferConfigError),
    #[error("cannot create a Kubernetes client: {}", error_chain(.0))]
    Client(#[source] kube::Error),
}

async fn make_client(
    clusters: &Clusters<'_>,
    cluster: Option<&str>,
) -> Result<Client, ClientError> {
    let settings = clusters
        .get(cluster)
        .ok_or_else(|| ClientError::Undeclared(cluster.unwrap_or_default().to_string()))?;
    let options = KubeConfigOptions {
        context: settings.context.clone(),
        ..KubeConfigOptions::default()
    };
    let kube_config = match &settings.kubeconfig {
        Some(path) => {
            let file =
                Kubeconfig::read_from(path).map_err(|source| ClientError::ReadKubeconfig {
                    path: path.clone(),
                    source,
                })?;
            kube::Config::from_custom_kubeconfig(file, &options)
                .await
                .map_err(|source| ClientError::Kubeconfig {
                    path: path.clone(),
                    source,
                })?
        }
        None if settings.context.is_some() => kube::Config::from_kubeconfig(&options)
            .await
            .map_err(ClientError::DefaultKubeconfig)?,
        None => kube::Config::infer().await.map_err(ClientError::Infer)?,
    };
    Client::try_from(kube_config).map_err(ClientError::Client)
}

/// Runs one watch forever: list, watch, and on any error start again from a fresh list after a backoff.
async fn run<K>(
    api: Api<K>,
    config: watcher::Config,
    strip: fn(&mut K),
    mut writer: Writer<K>,
    tx: channel::Sender<WatchState>,
    watch: Watch<K>,
    metrics: Arc<Metrics>,
) where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Eq + Hash + Clone,
{
    let mut backoff = BACKOFF_START;
    let mut errors = LogLimiter::default();
    loop {
        let mut stream = std::pin::pin!(watcher(api.clone(), config.clone()));
        while let Some(event) = stream.next().await {
            match event {
                Ok(event) => {
                    let event = event.modify(|obj| {
                        let meta = obj.meta_mut();
                        meta.managed_fields = None;
                        meta.annotations = None;
                        strip(obj);
                    });
                    writer.apply_watcher_event(&event);
                    match event {
                        Event::InitDone => {
                            backoff = BACKOFF_START;
                            if tx.borrow().broken.is_some() {
                                tracing::info!(watch = %watch.what, "watch works again");
                            }
                            errors = LogLimiter::default();
                            tx.send_replace(WatchState {
                                synced: true,
                                broken: None,
                            });
                        }
                        Event::Apply(_) | Event::Delete(_) => {
                            tx.send_modify(|s| s.broken = None);
                        }
                        Event::Init | Event::InitApply(_) => {}
                    }
                }
                Err(e) => {
                    let error = error_chain(&e);
                    if let Some(left_out) = errors.allow() {
                        tracing::warn!(watch = %watch.what, %error, retry_in = ?backoff, left_out, "watch failed; relisting");
                    }
                    for check in watch
                        .subscribers
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .iter()
                    {
                        metrics.watch_restart(check);
                    }
                    tx.send_modify(|s| {
                        let since = s.broken.as_ref().map_or_else(Timestamp::now, |b| b.since);
                        s.broken = Some(Broken { since, error });
                    });
                    break;
                }
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// Follows a watch for one check: whenever the watch changes, `observe` turns the objects into items,
/// which are published together with what is known about the watch itself. The check is published as
/// waiting at once, so it is never missing from the first report.
pub(crate) fn spawn_follow<K>(
    mut watch: Watch<K>,
    check: String,
    sink: Sink,
    stale_after: Duration,
    waiting_items: Vec<String>,
    observe: impl Fn(&[Arc<K>], Timestamp) -> Vec<Observation> + Send + 'static,
) where
    K: Resource + Clone + Send + Sync + 'static,
    K::DynamicType: Eq + Hash + Clone + Send + Sync,
{
    let message = format!("waiting for initial sync of {}", watch.what);
    sink.waiting(&check, waiting(&waiting_items, &message, Timestamp::now()));
    tokio::spawn(async move {
        follow(
            &mut watch,
            &check,
            &sink,
            stale_after,
            &waiting_items,
            observe,
        )
        .await
    });
}

async fn follow<K>(
    watch: &mut Watch<K>,
    check: &str,
    sink: &Sink,
    stale_after: Duration,
    waiting_items: &[String],
    observe: impl Fn(&[Arc<K>], Timestamp) -> Vec<Observation>,
) where
    K: Resource + Clone + 'static,
    K::DynamicType: Eq + Hash + Clone,
{
    loop {
        let state = watch.state.borrow_and_update().clone();
        let now = Timestamp::now();
        if state.synced {
            let mut items = observe(&watch.store.state(), now);
            if let Some(broken) = &state.broken {
                let expiry = Expiry {
                    at: broken
                        .since
                        .checked_add(stale_after)
                        .unwrap_or(Timestamp::MAX),
                    status: Status::Unknown,
                    message: format!(
                        "watch of {} broken since {}: {}",
                        watch.what, broken.since, broken.error
                    ),
                };
                items = items
                    .into_iter()
                    .map(|o| o.expiring(expiry.clone()))
                    .collect();
            }
            sink.publish(check, items);
        } else {
            let mut message = format!("waiting for initial sync of {}", watch.what);
            if let Some(b) = &state.broken {
                message.push_str(&format!(": {}", b.error));
            }
            sink.waiting(check, waiting(waiting_items, &message, now));
        }
        if watch.state.changed().await.is_err() {
            return;
        }
    }
}

/// Unknown placeholder items: the named ones, or the single `watch` item.
pub(crate) fn waiting(items: &[String], message: &str, now: Timestamp) -> Vec<Observation> {
    if items.is_empty() {
        return vec![Observation::new(WATCH_ITEM, Status::Unknown, message, now)];
    }
    items
        .iter()
        .map(|i| Observation::new(i.clone(), Status::Unknown, message, now))
        .collect()
}

/// A cluster-scoped custom resource, judged by its status alone.
pub(crate) fn cluster_wide(
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
