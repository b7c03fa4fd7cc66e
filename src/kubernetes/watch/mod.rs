//! Kubernetes watches shared between checks: one kube-runtime watcher per cluster, resource, namespace and
//! label selector (namespaced resources are watched in their namespace only, so that RBAC can stay a
//! namespaced Role), feeding a reflector store that every check needing that resource reads.
//!
//! A watch that fails is restarted from a fresh list with backoff; meanwhile the store keeps the last known
//! objects and the state records since when the watch is broken, so checks can turn their items `unknown`
//! once that lasts longer than `stale_after`. The cluster's silence ([`super::connection`]) breaks every watch
//! of that cluster the same way, so every check type sees it through [`WatchState`] alone.
//!
//! The backoff grows from 250 ms to 60 s and resets only once a watch has held (an event after its list, or
//! open for [`HELD`]): kube-runtime's own backoff resets on any success, and a LIST that works before a WATCH
//! that is refused would otherwise relist four times a second forever.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::fmt::Debug;
use std::hash::Hash;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use kube::api::Api;
use kube::runtime::reflector::{store::Writer, Store};
use kube::runtime::watcher;
use kube::{Client, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::watch as channel;

mod task;

use super::api_errors::Resource as Described;
use super::connection::{section, ClusterDown, Connection, Health};
use super::lists::Lists;
use super::settings::{Cluster, Clusters};
use crate::clock::Moment;
use crate::human::timestamp;
use crate::metrics::Metrics;
use task::{Runner, Stored, Tallied};

/// Objects asked per LIST page (kube-runtime asks 500): smaller pages keep each decoded page small.
const PAGE_SIZE: u32 = 100;

/// A watch open this long without failing has held: its backoff starts over.
pub(crate) const HELD: Duration = Duration::from_secs(30);

/// How a watch is doing.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct WatchState {
    /// The initial list has completed at least once.
    pub synced: bool,
    /// Since when, and why, the objects are not kept current (the watch fails, or its cluster's API server
    /// is silent); `None` while it works. A check that needs the watch live for a whole window reads this.
    pub broken: Option<Broken>,
    /// LIST works but WATCH does not (refused, ERROR events): the objects are current as of the last
    /// relist only. Why, for a `CHECK/watch` warning; `None` once a watch holds.
    pub not_watching: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Broken {
    /// Measured on the monotonic clock: `stale_after` counts from here.
    pub since: Moment,
    pub error: String,
    /// The whole cluster is silent: `error` says so and names the cluster.
    pub cluster: bool,
}

impl Broken {
    /// What items say once the watch has been broken longer than `stale_after`.
    pub(crate) fn message(&self, what: &str) -> String {
        if self.cluster {
            return self.error.clone();
        }
        format!(
            "watch of {what} broken since {}: {}",
            timestamp(self.since.wall),
            self.error
        )
    }
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
    connections: HashMap<Option<String>, Connection>,
    /// Keyed by resource type and description, so a downcast always finds its own type.
    started: HashMap<(TypeId, String), Shared>,
    /// Per connection, the task that hands its health to the sink ([`Watches::report_clusters`]).
    reporting: HashMap<Option<String>, tokio::task::AbortHandle>,
}

impl Drop for Watches {
    fn drop(&mut self) {
        for task in self.reporting.values() {
            task.abort();
        }
    }
}

/// One running watch, whatever its resource type: what a reload needs to stop it.
struct Shared {
    /// The [`Watch`] of its resource type.
    watch: Box<dyn Any + Send>,
    subscribers: Arc<Mutex<Vec<String>>>,
    cluster: Option<String>,
    task: tokio::task::AbortHandle,
}

/// One watch as a check type declares it, once: the resource (its `dyntype`), where (a namespace, or
/// cluster-wide), which objects (a label selector) and what is kept of each. The `Api` the watch uses and
/// the RBAC row that must grant it ([`WatchSpec::row`]) are both built from it, so they cannot disagree.
pub(crate) struct WatchSpec<K: Resource> {
    pub dyntype: K::DynamicType,
    /// `None`: cluster-wide (every namespace, for a namespaced resource: a ClusterRole).
    pub namespace: Option<String>,
    pub labels: Option<String>,
    /// Drops what no judge reads before an object is stored (specs, for a start), to keep memory small.
    pub strip: fn(&mut K),
    /// Its objects live in namespaces (their Events go there), whether watched in one or in all.
    namespaced: bool,
    api: fn(Client, &K::DynamicType, Option<&str>) -> Api<K>,
}

impl<K: Resource> WatchSpec<K>
where
    K::DynamicType: Clone,
{
    /// Every object of the cluster-scoped resource `dyntype` names (Providers, ProviderConfigs).
    pub(crate) fn cluster_scoped(dyntype: K::DynamicType, strip: fn(&mut K)) -> WatchSpec<K> {
        WatchSpec {
            dyntype,
            namespace: None,
            labels: None,
            strip,
            namespaced: false,
            api: |client, dyntype, _| Api::all_with(client, dyntype),
        }
    }

    /// Every object of the namespaced resource `dyntype` names, in every namespace (one ClusterBinding per
    /// consumer namespace): RBAC grants it cluster-wide, and its Events go to each object's namespace.
    pub(crate) fn all_namespaces(dyntype: K::DynamicType, strip: fn(&mut K)) -> WatchSpec<K> {
        WatchSpec {
            namespaced: true,
            ..WatchSpec::cluster_scoped(dyntype, strip)
        }
    }

    /// Only the objects that match the label `selector` (none: every object).
    pub(crate) fn labels(mut self, selector: &str) -> WatchSpec<K> {
        self.labels = Some(selector.to_string()).filter(|s| !s.is_empty());
        self
    }

    /// What RBAC must grant for this watch (verbs [`WatchTarget::VERBS`]).
    pub(crate) fn row(&self) -> WatchTarget {
        WatchTarget {
            group: K::group(&self.dyntype).into_owned(),
            version: K::version(&self.dyntype).into_owned(),
            resource: K::plural(&self.dyntype).into_owned(),
            namespace: self.namespace.clone(),
            namespaced: self.namespaced,
        }
    }

    fn api(&self, client: Client) -> Api<K> {
        (self.api)(client, &self.dyntype, self.namespace.as_deref())
    }
}

impl<K> WatchSpec<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    K::DynamicType: Default,
{
    /// The objects of a namespaced resource in `namespace` only, so that RBAC can stay a namespaced Role.
    pub(crate) fn namespaced(namespace: &str, strip: fn(&mut K)) -> WatchSpec<K> {
        WatchSpec {
            dyntype: K::DynamicType::default(),
            namespace: Some(namespace.to_string()),
            labels: None,
            strip,
            namespaced: true,
            api: |client, _, namespace| Api::namespaced(client, namespace.unwrap_or_default()),
        }
    }
}

/// One resource a check lists and watches (verbs `get`, `list`, `watch`): a row of the RBAC that
/// `deploy/` must grant, derived from the check types' `WatchSpec`s.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct WatchTarget {
    /// API group; empty for the core group.
    pub group: String,
    pub version: String,
    /// The resource's plural name (`deployments`).
    pub resource: String,
    /// `None`: cluster-wide.
    pub namespace: Option<String>,
    /// Its objects live in namespaces (Deployments, ClusterBindings), so Events about them go there; a
    /// cluster-scoped object's Events go to `default`. Watched cluster-wide, a namespaced resource's Events
    /// may go to any namespace.
    pub namespaced: bool,
}

impl WatchTarget {
    /// The verbs a watch needs.
    pub const VERBS: [&'static str; 3] = ["get", "list", "watch"];
}

impl Watches {
    /// The client of a cluster (`None`: the default one), connected once and shared by its watches and
    /// anything else that talks to it (Events). A cluster whose kubeconfig cannot be read yet still gets its
    /// client: its requests fail with the reason until it can.
    pub(crate) fn client_for(
        &mut self,
        clusters: &Clusters<'_>,
        cluster: Option<&str>,
    ) -> Result<(Client, u64), UndeclaredCluster> {
        let key = cluster.map(str::to_string);
        if let Some(c) = self.connections.get(&key) {
            return Ok((c.client.clone(), c.id));
        }
        let settings = clusters
            .get(cluster)
            .ok_or_else(|| UndeclaredCluster(cluster.unwrap_or_default().to_string()))?;
        let connection = Connection::open(cluster, settings);
        let opened = (connection.client.clone(), connection.id);
        self.connections.insert(key, connection);
        Ok(opened)
    }

    /// The kubeconfig of `cluster` holds new credentials for the same identity: its connection uses them
    /// from its next request on, and every watch goes on.
    pub(crate) fn renewal(
        &self,
        cluster: Option<&str>,
    ) -> Option<impl std::future::Future<Output = ()> + Send + 'static> {
        self.connections
            .get(&cluster.map(str::to_string))
            .map(|c| c.renew(cluster))
    }

    /// The shared watch `spec` declares on `cluster` (through `client`), started on first use. `check`
    /// subscribes to its restart counter.
    pub(crate) fn watch<K>(
        &mut self,
        spec: WatchSpec<K>,
        client: Client,
        cluster: Option<&str>,
        check: &str,
        metrics: &Arc<Metrics>,
    ) -> Watch<K>
    where
        K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
        K::DynamicType: Eq + Hash + Clone + Send + Sync,
    {
        let prepared = self.prepare(&spec, client, cluster);
        let key = (TypeId::of::<K>(), prepared.what.to_string());
        let watch = match self
            .started
            .get(&key)
            .and_then(|w| w.watch.downcast_ref::<Watch<K>>())
        {
            Some(existing) => existing.clone(),
            None => {
                let writer = Writer::new(spec.dyntype.clone());
                let (tx, state) = channel::channel(WatchState::default());
                let watch = Watch {
                    store: writer.as_reader(),
                    state,
                    what: prepared.what.clone(),
                    subscribers: Arc::default(),
                };
                let (max_objects, cluster) =
                    (prepared.settings.max_objects, prepared.cluster.clone());
                let task = tokio::spawn(
                    prepared
                        .runner(
                            Stored {
                                writer,
                                strip: spec.strip,
                            },
                            Arc::new(tx),
                            watch.subscribers.clone(),
                            metrics,
                            max_objects,
                        )
                        .run(),
                )
                .abort_handle();
                let shared = Shared {
                    watch: Box::new(watch.clone()),
                    subscribers: watch.subscribers.clone(),
                    cluster,
                    task,
                };
                self.started.insert(key, shared);
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

    /// A watch of `check`'s own, run by the check instead of shared: its objects go into
    /// the check's [`Tally`], which depends on the check's settings. At most `max_objects` objects, a bound
    /// the check's own key (`max_objects` of check "NAME") sets instead of the cluster's.
    pub(crate) fn private<K>(
        &mut self,
        spec: &WatchSpec<K>,
        client: Client,
        cluster: Option<&str>,
        check: &str,
        max_objects: usize,
    ) -> Private<K>
    where
        K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
        K::DynamicType: Eq + Hash + Clone + Send + Sync,
    {
        let mut prepared = self.prepare(spec, client, cluster);
        prepared.settings.max_objects = max_objects;
        prepared.section = format!("check \"{check}\"");
        Private {
            prepared,
            check: check.to_string(),
        }
    }

    /// Everything a watch of `spec` on `cluster` needs, whether shared or private.
    fn prepare<K>(&self, spec: &WatchSpec<K>, client: Client, cluster: Option<&str>) -> Prepared<K>
    where
        K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
        K::DynamicType: Eq + Hash + Clone + Send + Sync,
    {
        let cluster = cluster.map(str::to_string);
        let api = spec.api(client);
        let plural = K::plural(&spec.dyntype);
        let group = K::group(&spec.dyntype);
        let resource = if group.is_empty() {
            plural.to_string()
        } else {
            format!("{plural}.{group}")
        };
        let mut what = resource.clone();
        if let Some(ns) = &spec.namespace {
            what.push_str(&format!(" in namespace {ns}"));
        }
        if let Some(l) = &spec.labels {
            what.push_str(&format!(" with labels {l}"));
        }
        what.push_str(&format!(
            " on cluster {}",
            cluster.as_deref().unwrap_or("default")
        ));
        let mut config = watcher::Config::default().page_size(PAGE_SIZE);
        if let Some(l) = &spec.labels {
            config = config.labels(l);
        }
        let (health, settings, connection, lists) = match self.connections.get(&cluster) {
            Some(c) => (c.health.clone(), c.settings.clone(), c.id, c.lists.clone()),
            // A client made elsewhere (tests): no liveness to follow, its own way of listing.
            None => (
                channel::channel(Health::default()).1,
                Cluster::default(),
                0,
                Lists::default(),
            ),
        };
        let described = Described {
            qualified: resource,
            plural: plural.to_string(),
            group: group.to_string(),
            namespace: spec.namespace.clone(),
            cluster: cluster.as_deref().unwrap_or("default").to_string(),
        };
        Prepared {
            api,
            config,
            health,
            settings,
            described,
            what: what.into(),
            section: section(cluster.as_deref()),
            cluster,
            connection,
            lists,
        }
    }
}

/// A watch about to start: its `Api`, its cluster's liveness and settings, and its words.
struct Prepared<K> {
    api: Api<K>,
    config: watcher::Config,
    health: channel::Receiver<Health>,
    settings: Cluster,
    described: Described,
    what: Arc<str>,
    /// Where its `max_objects` is set, for messages.
    section: String,
    cluster: Option<String>,
    /// Which connection of its cluster ([`Connection::id`]; 0: a client made elsewhere).
    connection: u64,
    /// How its server lists.
    lists: Lists,
}

impl<K: Clone> Clone for Prepared<K> {
    fn clone(&self) -> Self {
        Prepared {
            api: self.api.clone(),
            config: self.config.clone(),
            health: self.health.clone(),
            settings: self.settings.clone(),
            described: self.described.clone(),
            what: self.what.clone(),
            section: self.section.clone(),
            cluster: self.cluster.clone(),
            connection: self.connection,
            lists: self.lists.clone(),
        }
    }
}

impl<K> Prepared<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Eq + Hash + Clone + Send + Sync,
{
    fn runner<S>(
        self,
        keep: S,
        tx: Arc<channel::Sender<WatchState>>,
        subscribers: Arc<Mutex<Vec<String>>>,
        metrics: &Arc<Metrics>,
        max_objects: usize,
    ) -> Runner<K, S> {
        Runner {
            api: self.api,
            config: self.config,
            keep,
            tx,
            what: self.what,
            subscribers,
            metrics: metrics.clone(),
            health: self.health,
            resource: self.described,
            max_objects,
            section: self.section,
            cluster: self.cluster.as_deref().unwrap_or("default").into(),
            lists: self.lists,
            paged: false,
            forgiving: None,
        }
    }
}

/// A check's own watch, ready to run (again, after a panic) into a fresh [`Tally`]: see [`Watches::private`].
pub(crate) struct Private<K> {
    prepared: Prepared<K>,
    check: String,
}

impl<K: Clone> Clone for Private<K> {
    fn clone(&self) -> Self {
        Private {
            prepared: self.prepared.clone(),
            check: self.check.clone(),
        }
    }
}

impl Watches {
    /// Takes `check` off every watch it reads; a restarted check does this before it subscribes anew
    /// (the watches stay until [`Watches::stop_unused`], so one it reads again keeps running).
    pub(crate) fn unsubscribe(&mut self, check: &str) {
        for shared in self.started.values() {
            shared
                .subscribers
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .retain(|s| s != check);
        }
    }

    /// Stops the watches no check reads any more.
    pub(crate) fn stop_unused(&mut self) {
        self.started.retain(|_, shared| {
            let used = !shared
                .subscribers
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .is_empty();
            if !used {
                shared.task.abort();
            }
            used
        });
    }

    /// Hands what each cluster's evidence probe says (down since when and why, or answering) to `report` as
    /// it changes, once per connection.
    pub(crate) fn report_clusters<F>(&mut self, report: F)
    where
        F: Fn(Option<&str>, Option<ClusterDown>) + Clone + Send + 'static,
    {
        for (name, connection) in &self.connections {
            if self.reporting.contains_key(name) {
                continue;
            }
            let (cluster, mut health, report) =
                (name.clone(), connection.health.clone(), report.clone());
            let task = tokio::spawn(async move {
                loop {
                    let down = health.borrow_and_update().down.clone();
                    report(cluster.as_deref(), down);
                    if health.changed().await.is_err() {
                        return;
                    }
                }
            });
            self.reporting.insert(name.clone(), task.abort_handle());
        }
    }

    /// Whether `cluster` has a connection (its client was asked for, and its settings did not change since).
    pub(crate) fn connected(&self, cluster: Option<&str>) -> bool {
        self.connections.contains_key(&cluster.map(str::to_string))
    }

    /// Forgets a cluster whose settings changed: its client, and every watch on it.
    pub(crate) fn forget_cluster(&mut self, cluster: Option<&str>) {
        if let Some(task) = self.reporting.remove(&cluster.map(str::to_string)) {
            task.abort();
        }
        self.connections.remove(&cluster.map(str::to_string));
        self.started.retain(|_, shared| {
            let on_it = shared.cluster.as_deref() == cluster;
            if on_it {
                shared.task.abort();
            }
            !on_it
        });
    }
}

/// A check names a cluster that is not declared (configuration validation refuses that first).
#[derive(Debug, thiserror::Error)]
#[error("cluster {0:?} is not declared")]
pub(crate) struct UndeclaredCluster(String);

/// A check's own account of its watch's objects, kept current event by event instead of a store of whole
/// objects that a judge reads at every change: for kinds of tens of thousands of objects, each kept as a
/// small record of what judging needs. How it is judged is the check's business.
pub(crate) trait Tally<K>: Send + 'static {
    /// One event of the watch, in order: `Init` starts a relist, its `InitApply`s follow, and `InitDone`
    /// ends it (what it did not list is gone); `Apply` and `Delete` come after.
    fn apply(&mut self, event: watcher::Event<K>);
    /// How many objects it holds now: the watch fails past its `max_objects`.
    fn len(&self) -> usize;
}

impl<K> Private<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Eq + Hash + Clone + Send + Sync,
{
    /// What the watch is, as far as whether a running one can go on serving: what it watches, on which
    /// connection, with which bound.
    pub(crate) fn key(&self) -> String {
        format!(
            "{}\n{}\n{}",
            self.prepared.what, self.prepared.connection, self.prepared.settings.max_objects
        )
    }

    /// What is watched, for messages.
    pub(crate) fn what(&self) -> Arc<str> {
        self.prepared.what.clone()
    }

    /// The check whose watch it is.
    pub(crate) fn check(&self) -> &str {
        &self.check
    }

    /// One run of the watch into `tally`, its state into `state`, its restarts counted for `subscribers`:
    /// it ends only by a panic (the caller starts it again).
    pub(crate) fn run<T: Tally<K>>(
        &self,
        tally: Arc<Mutex<T>>,
        state: Arc<channel::Sender<WatchState>>,
        subscribers: Arc<Mutex<Vec<String>>>,
        metrics: &Arc<Metrics>,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let max_objects = self.prepared.settings.max_objects;
        self.prepared
            .clone()
            .runner(Tallied(tally), state, subscribers, metrics, max_objects)
            .run()
    }
}
