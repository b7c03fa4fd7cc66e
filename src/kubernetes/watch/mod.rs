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

use jiff::Timestamp;
use kube::api::Api;
use kube::runtime::reflector::{store::Writer, Store};
use kube::runtime::watcher;
use kube::{Client, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::watch as channel;

use kube::api::DynamicObject;

mod task;

use super::api_errors::Resource as Described;
use super::connection::{section, Connection, Health};
use super::lists::Lists;
use super::settings::{Cluster, Clusters};
use crate::clock::{Due, Moment};
use crate::human::timestamp;
use crate::metrics::Metrics;
use crate::report::Status;
use crate::signals::{Expiry, Observation, Sink, Tasks, WATCH_ITEM};
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

    /// A watch of `check`'s own, run by the check's task ([`tallied`]) instead of shared: its objects go into
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
        }
    }
}

/// A check's own watch, ready to run (again, after a panic) with a fresh [`Tally`]: see [`Watches::private`].
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

    /// Hands what each cluster's evidence probe says (down since when and why, or answering) to `sink` as
    /// it changes: a typed fact the root-cause rules read beside the observations. Clusters no connection
    /// reports any more are forgotten there.
    pub(crate) fn report_clusters(&mut self, sink: &Sink) {
        for (name, connection) in &self.connections {
            if self.reporting.contains_key(name) {
                continue;
            }
            let (cluster, mut health, sink) =
                (name.clone(), connection.health.clone(), sink.clone());
            let task = tokio::spawn(async move {
                loop {
                    let down = health.borrow_and_update().down.clone();
                    sink.cluster(cluster.as_deref(), down);
                    if health.changed().await.is_err() {
                        return;
                    }
                }
            });
            self.reporting.insert(name.clone(), task.abort_handle());
        }
        sink.retain_clusters(|c| self.connections.contains_key(&c.map(str::to_string)));
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

/// Where a followed watch publishes: the whole check, or one part of a check that follows several watches.
/// A part's watch state (waiting, broken, not watching) lands on the part's own item, never on a shared
/// `CHECK/watch`.
#[derive(Debug, Clone)]
pub(crate) struct Destination {
    pub check: String,
    /// The part's item name; `None`: the watch is the whole check.
    pub part: Option<String>,
}

impl Destination {
    fn publish(&self, sink: &Sink, items: Vec<Observation>) {
        match &self.part {
            None => sink.publish(&self.check, items),
            Some(part) => sink.publish_part(&self.check, part, items, false),
        }
    }

    fn waiting(&self, sink: &Sink, items: Vec<Observation>) {
        match &self.part {
            None => sink.waiting(&self.check, items),
            Some(part) => sink.publish_part(&self.check, part, items, true),
        }
    }

    /// The placeholders while waiting: the part's own item, or the check's.
    fn placeholders<'a>(&'a self, check: &'a [String]) -> std::borrow::Cow<'a, [String]> {
        match &self.part {
            Some(part) => std::borrow::Cow::Owned(vec![part.clone()]),
            None => std::borrow::Cow::Borrowed(check),
        }
    }

    /// LIST works but WATCH does not: the check's own `watch` item warns, or, for a part, its item does.
    fn not_watching(&self, items: &mut Vec<Observation>, why: &str, now: Timestamp) {
        let message =
            format!("{why}; until then the objects are relisted with backoff (at most every 60s)");
        match &self.part {
            None => items.push(Observation::new(WATCH_ITEM, Status::Warn, message, now)),
            Some(part) => {
                for o in items.iter_mut().filter(|o| &o.item == part) {
                    if o.status == Status::Pass {
                        o.status = Status::Warn;
                    }
                    o.message = format!("{}; {message}", o.message);
                    if let Some(detail) = &mut o.detail {
                        detail.push_str(&format!("; {message}"));
                    }
                }
            }
        }
    }
}

/// What one judge reads: the objects of one watch, several watches read together (an AppClusterBinding and
/// the konnector Deployment it runs), or a check's own tally of a watch; with each watch's own state.
pub(crate) trait Source: Clone + Send + 'static {
    /// What the judge is given: `[Arc<K>]` for one watch, a tuple of lists for several, the tally.
    type Objects: ?Sized;
    /// Each watch's description (`deployments.apps in namespace bind on cluster default`), for messages.
    fn whats(&self) -> Vec<Arc<str>>;
    /// Each watch's description and current state, marking the states as seen.
    fn states(&mut self) -> Vec<(Arc<str>, WatchState)>;
    /// Calls `f` with the stored objects.
    fn read<R>(&self, f: impl FnOnce(&Self::Objects) -> R) -> R;
    /// Resolves when any watch's state changes (every stored event changes it); `false` once a watch has
    /// stopped for good.
    fn changed(&mut self) -> impl std::future::Future<Output = bool> + Send;
}

impl<K> Source for Watch<K>
where
    K: Resource + Clone + Send + Sync + 'static,
    K::DynamicType: Eq + Hash + Clone + Send + Sync,
{
    type Objects = [Arc<K>];

    fn whats(&self) -> Vec<Arc<str>> {
        vec![self.what.clone()]
    }

    fn states(&mut self) -> Vec<(Arc<str>, WatchState)> {
        vec![(self.what.clone(), self.state.borrow_and_update().clone())]
    }

    fn read<R>(&self, f: impl FnOnce(&[Arc<K>]) -> R) -> R {
        f(&self.store.state())
    }

    async fn changed(&mut self) -> bool {
        self.state.changed().await.is_ok()
    }
}

impl<A, B> Source for (Watch<A>, Watch<B>)
where
    A: Resource + Clone + Send + Sync + 'static,
    A::DynamicType: Eq + Hash + Clone + Send + Sync,
    B: Resource + Clone + Send + Sync + 'static,
    B::DynamicType: Eq + Hash + Clone + Send + Sync,
{
    type Objects = (Vec<Arc<A>>, Vec<Arc<B>>);

    fn whats(&self) -> Vec<Arc<str>> {
        vec![self.0.what.clone(), self.1.what.clone()]
    }

    fn states(&mut self) -> Vec<(Arc<str>, WatchState)> {
        let mut states = self.0.states();
        states.extend(self.1.states());
        states
    }

    fn read<R>(&self, f: impl FnOnce(&Self::Objects) -> R) -> R {
        f(&(self.0.store.state(), self.1.store.state()))
    }

    async fn changed(&mut self) -> bool {
        tokio::select! {
            a = self.0.state.changed() => a.is_ok(),
            b = self.1.state.changed() => b.is_ok(),
        }
    }
}

/// A check's own account of its watch's objects, kept current event by event ([`Private::tallied`])
/// instead of a store of whole objects that a judge reads at every change: for kinds of tens of thousands of
/// objects, each kept as a small record of what judging needs.
pub(crate) trait Tally<K>: Send + 'static {
    /// One event of the watch, in order: `Init` starts a relist, its `InitApply`s follow, and `InitDone`
    /// ends it (what it did not list is gone); `Apply` and `Delete` come after.
    fn apply(&mut self, event: watcher::Event<K>);
    /// How many objects it holds now: the watch fails past its `max_objects`.
    fn len(&self) -> usize;
    /// Judges what it holds by the rules of `fresh`, an empty tally made from new settings.
    fn rejudge(&mut self, fresh: Self)
    where
        Self: Sized;
    /// The items as of `now`, and when they next go out of date by themselves (a deadline passes).
    fn observe(&mut self, state: &WatchState, now: Moment) -> (Vec<Observation>, Option<Due>);
}

/// A private watch's tally, read as a [`Source`].
struct Counted<T> {
    what: Arc<str>,
    state: channel::Receiver<WatchState>,
    tally: Arc<Mutex<T>>,
}

impl<T> Clone for Counted<T> {
    fn clone(&self) -> Self {
        Counted {
            what: self.what.clone(),
            state: self.state.clone(),
            tally: self.tally.clone(),
        }
    }
}

impl<T: Send + 'static> Source for Counted<T> {
    type Objects = Mutex<T>;

    fn whats(&self) -> Vec<Arc<str>> {
        vec![self.what.clone()]
    }

    fn states(&mut self) -> Vec<(Arc<str>, WatchState)> {
        vec![(self.what.clone(), self.state.borrow_and_update().clone())]
    }

    fn read<R>(&self, f: impl FnOnce(&Mutex<T>) -> R) -> R {
        f(&self.tally)
    }

    async fn changed(&mut self) -> bool {
        self.state.changed().await.is_ok()
    }
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

    /// Starts the watch into a fresh clone of `tally`, supervised on its own: after a panic a fresh clone
    /// of the tally (of the latest rules) starts from a fresh list. It runs while the returned
    /// [`LiveTally`] is kept, across restarts of its check's publishing task.
    pub(crate) fn live<T: Tally<K> + Clone>(
        self,
        tally: T,
        sink: &Sink,
        metrics: &Arc<Metrics>,
    ) -> LiveTally {
        let key = self.key();
        let handles = TallyHandles {
            tally: Arc::new(Mutex::new(tally.clone())),
            template: Arc::new(Mutex::new(tally)),
        };
        let (tx, state) = channel::channel(WatchState::default());
        let tx = Arc::new(tx);
        let (what, max_objects) = (
            self.prepared.what.clone(),
            self.prepared.settings.max_objects,
        );
        let subscribers = Arc::new(Mutex::new(vec![self.check.clone()]));
        let (prepared, metrics_for_runner) = (self.prepared, metrics.clone());
        let (live_tally, template) = (handles.tally.clone(), handles.template.clone());
        let mut runner = Tasks::default();
        runner.supervise(&self.check, sink, metrics, move || {
            let fresh = template
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone();
            *live_tally.lock().unwrap_or_else(PoisonError::into_inner) = fresh;
            tx.send_replace(WatchState::default());
            prepared
                .clone()
                .runner(
                    Tallied(live_tally.clone()),
                    tx.clone(),
                    subscribers.clone(),
                    &metrics_for_runner,
                    max_objects,
                )
                .run()
        });
        LiveTally {
            key,
            what,
            state,
            handles: Box::new(handles),
            runner,
        }
    }
}

/// A check's private watch running into its tally: kept by the check across its restarts while what it
/// watches stays the same, so that new rules re-judge what is held instead of listing it again. Dropping
/// it stops the watch.
pub(crate) struct LiveTally {
    key: String,
    what: Arc<str>,
    state: channel::Receiver<WatchState>,
    /// The [`TallyHandles`] of its tally type.
    handles: Box<dyn Any + Send + Sync>,
    runner: Tasks,
}

struct TallyHandles<T> {
    /// The tally the watch keeps current.
    tally: Arc<Mutex<T>>,
    /// An empty tally of the latest rules: what a restarted watch starts from.
    template: Arc<Mutex<T>>,
}

impl Drop for LiveTally {
    fn drop(&mut self) {
        std::mem::take(&mut self.runner).stop();
    }
}

impl LiveTally {
    /// Whether it still watches what `key` names.
    pub(crate) fn watches(&self, key: &str) -> bool {
        self.key == key
    }

    /// Adopts the rules of `fresh` (an empty tally of new settings) for what is held, and for whatever
    /// a restart of the watch starts from; `None` if it keeps another tally type.
    pub(crate) fn rejudge<K, T: Tally<K> + Clone>(&self, fresh: T) -> Option<()> {
        let handles = self.handles.downcast_ref::<TallyHandles<T>>()?;
        handles
            .tally
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .rejudge(fresh.clone());
        *handles
            .template
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = fresh;
        Some(())
    }

    /// Publishes what the tally observes, like [`follow`]: at each change, and when a deadline the tally
    /// names passes. Published as waiting at once (a reload's hold stands in for that while the tally has
    /// listed). `None` if it keeps another tally type than `T`.
    pub(crate) fn publisher<K, T: Tally<K>>(
        &self,
        to: Destination,
        sink: Sink,
        stale_after: Duration,
    ) -> Option<impl std::future::Future<Output = ()> + Send + 'static> {
        let handles = self.handles.downcast_ref::<TallyHandles<T>>()?;
        let source = Counted {
            what: self.what.clone(),
            state: self.state.clone(),
            tally: handles.tally.clone(),
        };
        Some(following(
            source,
            to,
            sink,
            stale_after,
            Vec::new(),
            |tally, state, now| {
                tally
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .observe(state, now)
            },
        ))
    }
}

/// What a check declares it follows: one watch (a [`WatchSpec`]), or two read together by one judge (a
/// tuple of them). Both the RBAC rows and the running watches come from it.
pub(crate) trait Specs {
    type Source: Source;
    /// What RBAC must grant, one row per watch.
    fn rows(&self) -> Vec<WatchTarget>;
    /// Each watch, started on first use (else shared), with `check` subscribed to its restart counter.
    fn start(
        self,
        watches: &mut Watches,
        client: &Client,
        cluster: Option<&str>,
        check: &str,
        metrics: &Arc<Metrics>,
    ) -> Self::Source;
}

impl<K> Specs for WatchSpec<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Eq + Hash + Clone + Send + Sync,
{
    type Source = Watch<K>;

    fn rows(&self) -> Vec<WatchTarget> {
        vec![self.row()]
    }

    fn start(
        self,
        watches: &mut Watches,
        client: &Client,
        cluster: Option<&str>,
        check: &str,
        metrics: &Arc<Metrics>,
    ) -> Watch<K> {
        watches.watch(self, client.clone(), cluster, check, metrics)
    }
}

impl<A, B> Specs for (WatchSpec<A>, WatchSpec<B>)
where
    A: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    A::DynamicType: Eq + Hash + Clone + Send + Sync,
    B: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    B::DynamicType: Eq + Hash + Clone + Send + Sync,
{
    type Source = (Watch<A>, Watch<B>);

    fn rows(&self) -> Vec<WatchTarget> {
        let mut rows = self.0.rows();
        rows.extend(self.1.rows());
        rows
    }

    fn start(
        self,
        watches: &mut Watches,
        client: &Client,
        cluster: Option<&str>,
        check: &str,
        metrics: &Arc<Metrics>,
    ) -> Self::Source {
        (
            self.0.start(watches, client, cluster, check, metrics),
            self.1.start(watches, client, cluster, check, metrics),
        )
    }
}

/// Follows a watch, or several read together, for one check (or one part of it): whenever a watch changes,
/// `judge` turns the objects into items, which are published together with what is known about each watch
/// itself. It is published as waiting at once (before the returned future first runs), so it is never
/// missing from the first report.
pub(crate) fn follow<S: Source>(
    source: S,
    to: Destination,
    sink: Sink,
    stale_after: Duration,
    placeholders: Vec<String>,
    mut judge: impl FnMut(&S::Objects, &WatchState, Moment) -> Vec<Observation> + Send + 'static,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    following(
        source,
        to,
        sink,
        stale_after,
        placeholders,
        move |o, s, now| (judge(o, s, now), None),
    )
}

/// [`follow`], with a judge that also says when its items next go out of date by themselves: they are
/// judged again then, without any event.
fn following<S: Source>(
    mut source: S,
    to: Destination,
    sink: Sink,
    stale_after: Duration,
    placeholders: Vec<String>,
    judge: impl FnMut(&S::Objects, &WatchState, Moment) -> (Vec<Observation>, Option<Due>)
        + Send
        + 'static,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    let placeholders = to.placeholders(&placeholders).into_owned();
    let whats: Vec<String> = source.whats().iter().map(|w| w.to_string()).collect();
    let message = format!("waiting for initial sync of {}", whats.join(" and "));
    to.waiting(&sink, waiting(&placeholders, &message, Timestamp::now()));
    async move { follow_loop(&mut source, &to, &sink, stale_after, &placeholders, judge).await }
}

async fn follow_loop<S: Source>(
    source: &mut S,
    to: &Destination,
    sink: &Sink,
    stale_after: Duration,
    placeholders: &[String],
    mut judge: impl FnMut(&S::Objects, &WatchState, Moment) -> (Vec<Observation>, Option<Due>),
) {
    loop {
        let states = source.states();
        let moment = Moment::now();
        let now = moment.wall;
        let mut due = None;
        let unsynced: Vec<String> = states
            .iter()
            .filter(|(_, s)| !s.synced)
            .map(|(what, state)| {
                let mut part = what.to_string();
                if let Some(b) = &state.broken {
                    part.push_str(&format!(": {}", b.error));
                }
                if let Some(why) = &state.not_watching {
                    part.push_str(&format!(": {why}"));
                }
                part
            })
            .collect();
        if unsynced.is_empty() {
            let combined = combined(&states);
            let (mut items, next) = source.read(|objects| judge(objects, &combined, moment));
            due = next;
            for (what, state) in &states {
                if let Some(broken) = &state.broken {
                    let expiry = Expiry {
                        at: Due::after(broken.since, stale_after),
                        status: Status::Unknown,
                        message: broken.message(what),
                        fact: None,
                    };
                    items = items
                        .into_iter()
                        .map(|o| o.expiring(expiry.clone()))
                        .collect();
                }
                if let Some(why) = &state.not_watching {
                    to.not_watching(&mut items, why, now);
                }
            }
            to.publish(sink, items);
        } else {
            let message = format!("waiting for initial sync of {}", unsynced.join(" and "));
            to.waiting(sink, waiting(placeholders, &message, now));
        }
        let wake = due.map(|d| d.instant(moment));
        tokio::select! {
            changed = source.changed() => if !changed { return },
            () = tokio::time::sleep_until(wake.unwrap_or(moment.mono)), if wake.is_some() => {}
        }
    }
}

/// The state of several watches as one judge sees it: all synced; broken since the earliest break; not
/// watching for the first reason.
fn combined(states: &[(Arc<str>, WatchState)]) -> WatchState {
    WatchState {
        synced: states.iter().all(|(_, s)| s.synced),
        broken: states
            .iter()
            .filter_map(|(_, s)| s.broken.clone())
            .min_by_key(|b| b.since.mono),
        not_watching: states.iter().find_map(|(_, s)| s.not_watching.clone()),
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

/// Crossplane and provider-anynines objects are judged by their status alone, its strings bounded (a
/// condition's message may carry whatever a tenant wrote).
pub(crate) fn keep_status(obj: &mut DynamicObject) {
    let status = obj.data.get_mut("status").map(serde_json::Value::take);
    obj.data = serde_json::json!({ "status": status });
    crate::human::bound_strings(&mut obj.data);
}
