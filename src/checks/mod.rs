//! The check types. A check type is one module of this folder that implements [`CheckType`] for its
//! settings struct (the keys of its `[[check]]` table) plus one line in [`TYPES`]: its settings, its
//! validation, the items it shows before its first observation, and its signal — each watch it follows
//! declared once as a `WatchSpec`, from which both the watch's `Api` and the RBAC row are built — all live
//! in that module. `running` keeps the started checks across reloads.

pub mod app_cluster_bindings;
pub mod backend_status;
pub mod broker;
pub mod cluster_bindings;
pub mod deployments;
pub(crate) mod machinery;
pub mod managed_resources;
pub mod packages;
pub mod pods;
pub mod provider_configs;
pub(crate) mod running;

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::fmt::Debug;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use jiff::Timestamp;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::clock::Moment;
use crate::kubernetes::settings::Clusters;
pub use crate::kubernetes::watch::WatchTarget;
use crate::kubernetes::watch::Watches;
pub(crate) use crate::kubernetes::watch::{Tally, WatchSpec, WatchState};
use crate::metrics::Metrics;
use crate::signals::{Observation, Sink, Tasks};
use crate::values::KeyError;
use kube::api::DynamicObject;
pub(crate) use machinery::JudgedTally;
use machinery::{follow, live, waiting, Destination, LiveTally, Source, Specs};

/// Makes `$t` a Kubernetes resource of a kind named at run time (an `ApiResource`), for a check's own
/// reduced object type that keeps only what it reads and its metadata in a field `meta`.
macro_rules! dynamic_resource {
    ($t:ty) => {
        impl kube::Resource for $t {
            type DynamicType = kube::api::ApiResource;
            type Scope = kube::core::DynamicResourceScope;

            fn kind(dt: &kube::api::ApiResource) -> std::borrow::Cow<'_, str> {
                dt.kind.as_str().into()
            }
            fn group(dt: &kube::api::ApiResource) -> std::borrow::Cow<'_, str> {
                dt.group.as_str().into()
            }
            fn version(dt: &kube::api::ApiResource) -> std::borrow::Cow<'_, str> {
                dt.version.as_str().into()
            }
            fn api_version(dt: &kube::api::ApiResource) -> std::borrow::Cow<'_, str> {
                dt.api_version.as_str().into()
            }
            fn plural(dt: &kube::api::ApiResource) -> std::borrow::Cow<'_, str> {
                dt.plural.as_str().into()
            }
            fn meta(&self) -> &kube::api::ObjectMeta {
                &self.meta
            }
            fn meta_mut(&mut self) -> &mut kube::api::ObjectMeta {
                &mut self.meta
            }
        }
    };
}
pub(crate) use dynamic_resource;

/// Crossplane and provider-anynines objects are judged by their status alone, its strings bounded (a
/// condition's message may carry whatever a tenant wrote).
pub(crate) fn keep_status(obj: &mut DynamicObject) {
    let status = obj.data.get_mut("status").map(serde_json::Value::take);
    obj.data = serde_json::json!({ "status": status });
    crate::human::bound_strings(&mut obj.data);
}

/// Every check type, by the name written in `type = "…"`.
pub const TYPES: &[Registration] = &[
    Registration::of::<backend_status::BackendStatus>(),
    Registration::of::<packages::CrossplanePackage>(),
    Registration::of::<provider_configs::ProviderConfig>(),
    Registration::of::<deployments::Deployment>(),
    Registration::of::<pods::Pods>(),
    Registration::of::<cluster_bindings::ClusterBinding>(),
    Registration::of::<app_cluster_bindings::AppClusterBinding>(),
    Registration::of::<managed_resources::ManagedResources>(),
    Registration::of::<broker::Broker>(),
];

/// The settings of one check type, read from its `[[check]]` table (without `name`, `type`, `require`,
/// `cluster`, which every type shares).
pub trait CheckType: Serialize + DeserializeOwned + Debug + Send + Sync + 'static {
    /// The name in `type = "…"`.
    const NAME: &'static str;
    /// Other names accepted for `type`.
    const ALIASES: &'static [&'static str] = &[];
    /// How the policy relates this check's items to other checks'.
    const LINK: Link = Link::None;
    /// Whether its `[[check]]` may name the Crossplane package whose runtime it watches (`package =
    /// "providers/provider-anynines"`, a `crossplane-package` item), which links its items to that one.
    const PACKAGE: bool = false;

    /// What serde cannot check, naming the key: `interval: must be more than 0s`.
    /// `cluster` is the check's `cluster` key.
    fn validate(&self, _cluster: Option<&str>) -> Result<(), KeyError> {
        Ok(())
    }
    /// Items shown as `unknown` before the first observation (none: the single `watch` item).
    fn placeholders(&self) -> Vec<String> {
        Vec::new()
    }
    /// The check's signal: each watch it follows, declared once through `Run::follow` (or
    /// `Run::follow_part` for a check of several watches), or a poller through `Run::poll`. The registry
    /// calls it to learn the watches (what RBAC must grant; nothing starts then) and at each start.
    fn start(&self, run: &mut Run<'_>);
}

/// How the policy relates a check's items to other checks'.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    None,
    /// Its failing items take the message of the same-named failing item of a [`Link::ProviderConfigs`] check.
    AnnotatedByProviderConfigs,
    /// Its items are ProviderConfigs.
    ProviderConfigs,
}

/// One entry of [`TYPES`].
pub struct Registration {
    pub name: &'static str,
    pub aliases: &'static [&'static str],
    read: fn(&figment::value::Value) -> Result<Arc<dyn Settings>, KeyError>,
}

impl Registration {
    pub const fn of<T: CheckType>() -> Registration {
        Registration {
            name: T::NAME,
            aliases: T::ALIASES,
            read: read::<T>,
        }
    }

    /// The registration of `type = "name"`.
    pub fn find(name: &str) -> Option<&'static Registration> {
        find_in(TYPES, name)
    }

    /// Reads a check's own keys; errors name the key (`timeout: invalid duration "abc" …`).
    pub fn read(&self, table: &figment::value::Value) -> Result<Arc<dyn Settings>, KeyError> {
        (self.read)(table)
    }
}

fn find_in(types: &'static [Registration], name: &str) -> Option<&'static Registration> {
    types
        .iter()
        .find(|t| t.name == name || t.aliases.contains(&name))
}

/// `backend-status, crossplane-provider, …`: for messages.
pub fn type_names() -> String {
    TYPES.iter().map(|t| t.name).collect::<Vec<_>>().join(", ")
}

fn read<T: CheckType>(table: &figment::value::Value) -> Result<Arc<dyn Settings>, KeyError> {
    let settings: T = crate::values::deserialize(table)?;
    Ok(Arc::new(settings))
}

/// A check type's settings behind one type: what the rest of the service uses.
pub trait Settings: Debug + Send + Sync + 'static {
    fn type_name(&self) -> &'static str;
    fn link(&self) -> Link;
    /// Whether the check may name its package ([`CheckType::PACKAGE`]).
    fn takes_package(&self) -> bool;
    fn validate(&self, cluster: Option<&str>) -> Result<(), KeyError>;
    /// What the check reads from its cluster, from its watches' declarations: exactly what its RBAC must
    /// grant. Empty: no cluster at all.
    fn targets(&self) -> Vec<WatchTarget>;
    fn placeholders(&self) -> Vec<String>;
    fn start(&self, run: &mut Run<'_>);
    /// The settings with their defaults, for `--check-config`.
    fn to_json(&self) -> serde_json::Value;
    fn as_any(&self) -> &dyn Any;
}

impl<T: CheckType> Settings for T {
    fn type_name(&self) -> &'static str {
        T::NAME
    }
    fn link(&self) -> Link {
        T::LINK
    }
    fn takes_package(&self) -> bool {
        T::PACKAGE
    }
    fn validate(&self, cluster: Option<&str>) -> Result<(), KeyError> {
        CheckType::validate(self, cluster)
    }
    fn targets(&self) -> Vec<WatchTarget> {
        let mut rows = Vec::new();
        CheckType::start(
            self,
            &mut Run {
                check: "",
                placeholders: Vec::new(),
                mode: Mode::Declare(&mut rows),
            },
        );
        rows.sort();
        rows.dedup();
        rows
    }
    fn placeholders(&self) -> Vec<String> {
        CheckType::placeholders(self)
    }
    fn start(&self, run: &mut Run<'_>) {
        CheckType::start(self, run)
    }
    fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

impl dyn Settings {
    /// The settings as their own type, if they are of type `T`.
    pub fn downcast<T: CheckType>(&self) -> Option<&T> {
        self.as_any().downcast_ref()
    }
}

/// What a check remembers across restarts of its tasks and across reloads (konnector heartbeats seen):
/// owned by the running check set, handed to the check at each start, dropped when a reload removes it.
#[derive(Clone, Default)]
pub(crate) struct Memory(Arc<Mutex<HashMap<TypeId, Box<dyn Any + Send + Sync>>>>);

impl Memory {
    /// The check's memory of type `T`, made empty on first use.
    fn slot<T: Default + Send + 'static>(&self) -> Arc<Mutex<T>> {
        let mut slots = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let slot = slots
            .entry(TypeId::of::<T>())
            .or_insert_with(|| Box::new(Arc::new(Mutex::new(T::default()))));
        // Keyed by its own type: the downcast cannot miss.
        slot.downcast_ref::<Arc<Mutex<T>>>()
            .cloned()
            .unwrap_or_default()
    }
}

/// A check's private watches that run into tallies, by part: kept across the check's restarts, each
/// stamped with the start that last claimed it (a start drops those it did not claim).
#[derive(Default)]
struct LiveTallies {
    generation: u64,
    parts: HashMap<String, (u64, LiveTally)>,
}

/// Where a restarted publisher finds its part's tally again.
struct LiveSource {
    lives: std::sync::Weak<Mutex<LiveTallies>>,
    part: String,
}

impl LiveSource {
    fn publisher<K, T: JudgedTally<K>>(
        &self,
        to: Destination,
        sink: Sink,
        stale_after: Duration,
    ) -> Option<impl Future<Output = ()> + Send + 'static> {
        let lives = self.lives.upgrade()?;
        let lives = lives.lock().unwrap_or_else(PoisonError::into_inner);
        lives
            .parts
            .get(&self.part)?
            .1
            .publisher::<K, T>(to, sink, stale_after)
    }
}

/// A check's signal being declared ([`Settings::targets`]) or started: [`CheckType::start`] says what it
/// follows and polls through this, the same way in both cases.
pub struct Run<'a> {
    check: &'a str,
    /// Items shown before the first observation.
    placeholders: Vec<String>,
    mode: Mode<'a>,
}

enum Mode<'a> {
    /// Only the watches are listed, as RBAC rows; nothing starts.
    Declare(&'a mut Vec<WatchTarget>),
    Start(Starting<'a>),
}

/// What a starting check gets: where to publish, its tasks and memory, and its cluster when it watches.
pub(crate) struct Starting<'a> {
    pub(crate) sink: &'a Sink,
    pub(crate) metrics: &'a Arc<Metrics>,
    /// The check's own tasks, stopped when a reload changes or removes the check.
    pub(crate) tasks: &'a mut Tasks,
    pub(crate) memory: &'a Memory,
    /// `None` for a check that declared no watch.
    pub(crate) kube: Option<Kube<'a>>,
}

/// The cluster of a check that watches.
pub(crate) struct Kube<'a> {
    pub(crate) client: kube::Client,
    pub(crate) cluster: Option<String>,
    pub(crate) stale_after: Duration,
    pub(crate) watches: &'a mut Watches,
}

impl<'a> Run<'a> {
    pub(crate) fn starting(
        check: &'a str,
        placeholders: Vec<String>,
        starting: Starting<'a>,
    ) -> Run<'a> {
        Run {
            check,
            placeholders,
            mode: Mode::Start(starting),
        }
    }

    /// The check's cluster (`None`: the default one, or no cluster).
    pub(crate) fn cluster(&self) -> Option<&str> {
        match &self.mode {
            Mode::Start(Starting { kube: Some(k), .. }) => k.cluster.as_deref(),
            _ => None,
        }
    }

    /// The check's memory of type `T`, kept across restarts and reloads while the check stays configured.
    pub(crate) fn memory<T: Default + Send + 'static>(&self) -> Arc<Mutex<T>> {
        match &self.mode {
            Mode::Start(s) => s.memory.slot(),
            Mode::Declare(_) => Arc::default(),
        }
    }

    /// Follows what `specs` declares — one watch (a `WatchSpec`), or two whose objects one judge reads
    /// together (a tuple of them: an AppClusterBinding and its konnector Deployment) — turning the objects
    /// into the check's items with `judge`; each watch's own state (waiting, broken, a refused WATCH) shows
    /// on the check's items and its `watch` item. `judge` may keep memory between calls; after a panic
    /// killed its task it starts again as a fresh clone of the original.
    pub(crate) fn follow<S, J>(&mut self, specs: S, judge: J)
    where
        S: Specs,
        J: FnMut(&<S::Source as Source>::Objects, &WatchState, Moment) -> Vec<Observation>
            + Clone
            + Send
            + 'static,
    {
        let to = Destination {
            check: self.check.to_string(),
            part: None,
        };
        self.follow_to(to, specs, judge);
    }

    /// Like `Run::follow`, for one of several parts of a check: its items are the part's, and the
    /// state of its watches (waiting for its sync, broken, a refused WATCH) lands on the item named `part`,
    /// not on a shared `CHECK/watch`. (Its first check type is `managed-resources`, one part per kind.)
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn follow_part<S, J>(&mut self, part: &str, specs: S, judge: J)
    where
        S: Specs,
        J: FnMut(&<S::Source as Source>::Objects, &WatchState, Moment) -> Vec<Observation>
            + Clone
            + Send
            + 'static,
    {
        let to = Destination {
            check: self.check.to_string(),
            part: Some(part.to_string()),
        };
        self.follow_to(to, specs, judge);
    }

    /// The starting check, for watches whose RBAC `rows` a check declares: `None` while the watches are
    /// only listed (the rows are recorded then), and without a cluster (which cannot happen: a check that
    /// declares a watch gets one). Its restart counter is exported at 0 from here.
    fn watching(&mut self, rows: impl FnOnce() -> Vec<WatchTarget>) -> Option<&mut Starting<'a>> {
        let check = self.check;
        let s = match &mut self.mode {
            Mode::Declare(declared) => {
                declared.extend(rows());
                return None;
            }
            Mode::Start(s) => s,
        };
        if s.kube.is_none() {
            tracing::error!(check, "a check follows a watch without a cluster");
            return None;
        }
        s.metrics.watch_restarts_from_zero(check);
        Some(s)
    }

    fn follow_to<S, J>(&mut self, to: Destination, specs: S, judge: J)
    where
        S: Specs,
        J: FnMut(&<S::Source as Source>::Objects, &WatchState, Moment) -> Vec<Observation>
            + Clone
            + Send
            + 'static,
    {
        let (check, placeholders) = (self.check, self.placeholders.clone());
        let Some(s) = self.watching(|| specs.rows()) else {
            return;
        };
        let Some(kube) = s.kube.as_mut() else { return };
        let source = specs.start(
            kube.watches,
            &kube.client,
            kube.cluster.as_deref(),
            check,
            s.metrics,
        );
        let (sink, stale_after) = (s.sink.clone(), kube.stale_after);
        s.tasks.supervise(check, s.sink, s.metrics, move || {
            follow(
                source.clone(),
                to.clone(),
                sink.clone(),
                stale_after,
                placeholders.clone(),
                judge.clone(),
            )
        });
    }

    /// Like `Run::follow_part`, for a kind of tens of thousands of objects: the check's own watch (not
    /// shared) feeds each event into `tally`, which keeps a small record per object and its counts current
    /// event by event, instead of a store of whole objects judged at every change; its items are published
    /// at each change and when a deadline it names passes. The watch fails past `max_objects` objects (the
    /// check's own key of that name). It outlives a restart of the check that watches the same (a reload
    /// that changed how objects are judged): the running tally takes the new rules and no relist happens.
    /// After a panic, a fresh clone of `tally` starts from a fresh list.
    pub(crate) fn tally_part<K, T>(
        &mut self,
        part: &str,
        spec: WatchSpec<K>,
        max_objects: usize,
        tally: T,
    ) where
        K: kube::Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
        K::DynamicType: Eq + Hash + Clone + Send + Sync,
        T: JudgedTally<K> + Clone,
    {
        let check = self.check;
        let Some(s) = self.watching(|| vec![spec.row()]) else {
            return;
        };
        let Some(kube) = s.kube.as_mut() else { return };
        let watch = kube.watches.private(
            &spec,
            kube.client.clone(),
            kube.cluster.as_deref(),
            check,
            max_objects,
        );
        let key = watch.key();
        let lives = s.memory.slot::<LiveTallies>();
        let mut lives = lives.lock().unwrap_or_else(PoisonError::into_inner);
        let generation = lives.generation;
        let kept = lives
            .parts
            .get(part)
            .filter(|(_, live)| live.watches(&key))
            .and_then(|(_, live)| live.rejudge(tally.clone()));
        if kept.is_none() {
            let live = live(watch, tally, s.sink, s.metrics);
            lives.parts.insert(part.to_string(), (generation, live));
        }
        if let Some((stamp, _)) = lives.parts.get_mut(part) {
            *stamp = generation;
        }
        drop(lives);
        let to = Destination {
            check: check.to_string(),
            part: Some(part.to_string()),
        };
        let (sink, stale_after) = (s.sink.clone(), kube.stale_after);
        let live = LiveSource {
            lives: Arc::downgrade(&s.memory.slot::<LiveTallies>()),
            part: part.to_string(),
        };
        s.tasks.supervise(check, s.sink, s.metrics, move || {
            let publisher = live.publisher::<K, T>(to.clone(), sink.clone(), stale_after);
            async move {
                if let Some(p) = publisher {
                    p.await;
                }
            }
        });
    }

    /// Runs a poller the check makes with `make(check, sink, metrics)`, supervised (a fresh one after a
    /// panic); its `outcomes` are exported at 0 from the start.
    pub(crate) fn poll<F, Fut>(&mut self, outcomes: &[&'static str], mut make: F)
    where
        F: FnMut(&str, &Sink, &Arc<Metrics>) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let Mode::Start(s) = &mut self.mode else {
            return;
        };
        s.metrics.upstream_from_zero(self.check, outcomes);
        let (check, sink, metrics) = (self.check.to_string(), s.sink.clone(), s.metrics.clone());
        s.tasks.supervise(self.check, s.sink, s.metrics, move || {
            make(&check, &sink, &metrics)
        });
    }
}

/// One configured check, as the signals need it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CheckRef<'a> {
    pub name: &'a str,
    /// `None`: the default cluster.
    pub cluster: Option<&'a str>,
    pub settings: &'a dyn Settings,
}

/// Starts one check's signal, publishing into `sink`; the check is published (at least as waiting) before
/// this returns. A cluster that cannot be used makes its items `unknown` with the reason.
async fn start_one(
    check: CheckRef<'_>,
    clusters: &Clusters<'_>,
    watches: &mut Watches,
    sink: &Sink,
    metrics: &Arc<Metrics>,
    memory: &Memory,
) -> Tasks {
    let mut tasks = Tasks::default();
    sink.clear_parts(check.name);
    let placeholders = check.settings.placeholders();
    let kube = if check.settings.targets().is_empty() {
        None
    } else {
        let client = match watches.client_for(clusters, check.cluster) {
            Ok((c, _)) => c,
            Err(e) => {
                let message = format!(
                    "cannot use cluster {}: {e}",
                    check.cluster.unwrap_or("default")
                );
                sink.waiting(
                    check.name,
                    waiting(&placeholders, &message, Timestamp::now()),
                );
                return tasks;
            }
        };
        let stale_after = clusters
            .get(check.cluster)
            .map_or(Duration::from_secs(60), |c| c.stale_after);
        Some(Kube {
            client,
            cluster: check.cluster.map(str::to_string),
            stale_after,
            watches,
        })
    };
    let lives = memory.slot::<LiveTallies>();
    lives
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .generation += 1;
    check.settings.start(&mut Run::starting(
        check.name,
        placeholders,
        Starting {
            sink,
            metrics,
            tasks: &mut tasks,
            memory,
            kube,
        },
    ));
    // The private watches this start did not claim watch what the check no longer does.
    let mut lives = lives.lock().unwrap_or_else(PoisonError::into_inner);
    let generation = lives.generation;
    lives.parts.retain(|_, (stamp, _)| *stamp == generation);
    tasks
}

/// What the check types' unit tests share: the real object shapes in `sim/fixtures/` and a hand-set clock.
#[cfg(test)]
pub(crate) mod testing {
    use std::sync::Arc;

    use jiff::Timestamp;
    use serde_json::Value;

    use crate::signals::Observation;

    pub(crate) fn fixture(name: &str) -> Value {
        let path = format!("{}/sim/fixtures/{name}.json", env!("CARGO_MANIFEST_DIR"));
        serde_json::from_str(&std::fs::read_to_string(&path).expect("fixture exists"))
            .expect("fixture is JSON")
    }

    pub(crate) fn object<T: serde::de::DeserializeOwned>(v: Value) -> Arc<T> {
        Arc::new(serde_json::from_value(v).expect("fixture has the resource's shape"))
    }

    pub(crate) fn at(s: &str) -> Timestamp {
        s.parse().expect("valid time")
    }

    /// The moment the wall clock shows `s`, on hand-set clocks that never step.
    pub(crate) fn m(s: &str) -> crate::clock::Moment {
        crate::clock::Moment::from_wall(at(s))
    }

    pub(crate) fn only(items: Vec<Observation>) -> Observation {
        assert_eq!(items.len(), 1, "{items:?}");
        items.into_iter().next().expect("one item")
    }

    /// A fake API server: `answer(path, watching)` gives each request's status and body, `None` for a watch
    /// that stays open and silent.
    pub(crate) fn fake_api(
        answer: impl Fn(&str, bool) -> Option<(u16, String)> + Clone + Send + Sync + 'static,
    ) -> kube::Client {
        let service = tower::service_fn(move |req: http::Request<kube::client::Body>| {
            let answer = answer.clone();
            async move {
                let watching = req.uri().query().is_some_and(|q| q.contains("watch=true"));
                let (code, body) = match answer(req.uri().path(), watching) {
                    Some(answered) => answered,
                    None => std::future::pending().await,
                };
                let mut r =
                    http::Response::new(http_body_util::Full::new(bytes::Bytes::from(body)));
                *r.status_mut() = http::StatusCode::from_u16(code).expect("a status");
                Ok::<_, std::convert::Infallible>(r)
            }
        });
        kube::Client::new(service, "default")
    }

    /// Starts `check` of type `settings` against `client`, as a reload starts an added check.
    pub(crate) fn started(
        settings: &dyn super::Settings,
        check: &str,
        client: kube::Client,
    ) -> (
        crate::signals::Sink,
        Arc<crate::metrics::Metrics>,
        crate::signals::Tasks,
    ) {
        let (sink, metrics, mut tasks) = (
            crate::signals::Sink::default(),
            Arc::new(crate::metrics::Metrics::new()),
            crate::signals::Tasks::default(),
        );
        settings.start(&mut super::Run::starting(
            check,
            Vec::new(),
            super::Starting {
                sink: &sink,
                metrics: &metrics,
                tasks: &mut tasks,
                // Kept for the test's life: the check's private watches live as long as its memory.
                memory: Box::leak(Box::new(super::Memory::default())),
                kube: Some(super::Kube {
                    client,
                    cluster: None,
                    stale_after: std::time::Duration::from_secs(60),
                    watches: &mut super::Watches::default(),
                }),
            },
        ));
        (sink, metrics, tasks)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Status;

    #[derive(Debug, Serialize, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Renamed {
        size: u32,
    }

    impl CheckType for Renamed {
        const NAME: &'static str = "renamed";
        const ALIASES: &'static [&'static str] = &["old-name"];
        fn start(&self, _run: &mut Run<'_>) {}
    }

    /// A check of two watches, as `managed-resources` will be: one part per watch.
    #[derive(Debug, Serialize, serde::Deserialize)]
    struct TwoKinds {}

    impl CheckType for TwoKinds {
        const NAME: &'static str = "two-kinds";
        fn start(&self, run: &mut Run<'_>) {
            use k8s_openapi::api::{apps::v1::Deployment, core::v1::Pod};
            fn count<K>(
                part: &'static str,
            ) -> impl FnMut(&[Arc<K>], &WatchState, Moment) -> Vec<Observation> + Clone
            {
                move |objects, _, now| {
                    vec![Observation::new(
                        part,
                        Status::Pass,
                        format!("{} listed", objects.len()),
                        now.wall,
                    )]
                }
            }
            run.follow_part(
                "pods",
                WatchSpec::<Pod>::namespaced("ns-a", |_| {}),
                count::<Pod>("pods"),
            );
            run.follow_part(
                "deployments",
                WatchSpec::<Deployment>::all_namespaces((), |_| {}).labels("app=x"),
                count::<Deployment>("deployments"),
            );
        }
    }

    /// A fake API server: pods list (one pod, then a watch that stays open); deployments are forbidden,
    /// or list one Deployment the same way when `deployments` says so.
    fn fake_api(deployments: bool) -> kube::Client {
        testing::fake_api(move |path, watching| {
            let listed = path.ends_with("/pods") || (deployments && path.ends_with("/deployments"));
            if watching && listed {
                return None;
            }
            Some(if path.ends_with("/pods") {
                (
                    200,
                    r#"{"kind":"PodList","apiVersion":"v1","metadata":{"resourceVersion":"5"},"items":[{"metadata":{"name":"p","namespace":"ns-a","uid":"u"}}]}"#.into(),
                )
            } else if listed {
                (
                    200,
                    r#"{"kind":"DeploymentList","apiVersion":"apps/v1","metadata":{"resourceVersion":"6"},"items":[{"metadata":{"name":"d","namespace":"ns-b","uid":"v"}}]}"#.into(),
                )
            } else {
                (
                    403,
                    r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"deployments.apps is forbidden","reason":"Forbidden","code":403}"#.into(),
                )
            })
        })
    }

    /// Starts `check` of type `settings` against [`fake_api`] (deployments forbidden), as a reload starts
    /// an added check.
    fn started(settings: &dyn Settings, check: &str) -> (Sink, Arc<Metrics>, Tasks) {
        testing::started(settings, check, fake_api(false))
    }

    #[test]
    fn each_declared_watch_is_one_rbac_row() {
        let rows = Settings::targets(&TwoKinds {});
        let row = |group: &str, resource: &str, namespace: Option<&str>| WatchTarget {
            group: group.into(),
            version: "v1".into(),
            resource: resource.into(),
            namespace: namespace.map(str::to_string),
            namespaced: true,
        };
        assert_eq!(
            rows,
            [
                row("", "pods", Some("ns-a")),
                row("apps", "deployments", None)
            ]
        );
        assert!(Settings::targets(&Renamed { size: 1 }).is_empty());
    }

    /// Each watch's state lands on its own item: the synced part judges, the forbidden one waits with the
    /// reason, and there is no shared `CHECK/watch`.
    #[tokio::test(start_paused = true)]
    async fn each_part_of_a_check_of_several_watches_shows_its_own_watch_state() {
        let (sink, _, tasks) = started(&TwoKinds {}, "c");
        tokio::time::sleep(Duration::from_secs(5)).await;
        let snapshot = sink.snapshot();
        let items = &snapshot.checks["c"];
        let names: Vec<&str> = items.iter().map(|o| o.item.as_str()).collect();
        assert_eq!(names, ["deployments", "pods"]);
        assert_eq!(
            (items[1].status, items[1].message.as_str()),
            (Status::Pass, "1 listed")
        );
        assert_eq!(items[0].status, Status::Unknown);
        assert!(
            items[0].message.starts_with(
                "waiting for initial sync of deployments.apps with labels app=x on cluster default: list on deployments.apps forbidden"
            ),
            "{}",
            items[0].message
        );
        assert_eq!(
            snapshot.unsynced.iter().collect::<Vec<_>>(),
            ["c/deployments"],
            "the part that waits, and only it"
        );
        tasks.stop();
    }

    /// A check whose one judge reads two watches together, as `app-cluster-binding` does.
    #[derive(Debug, Serialize, serde::Deserialize)]
    struct Joined {}

    impl CheckType for Joined {
        const NAME: &'static str = "joined";
        fn start(&self, run: &mut Run<'_>) {
            use k8s_openapi::api::{apps::v1::Deployment, core::v1::Pod};
            run.follow(
                (
                    WatchSpec::<Pod>::namespaced("ns-a", |_| {}),
                    WatchSpec::<Deployment>::all_namespaces((), |_| {}).labels("app=x"),
                ),
                |(pods, deployments): &(Vec<Arc<Pod>>, Vec<Arc<Deployment>>), _, now| {
                    vec![Observation::new(
                        "both",
                        Status::Pass,
                        format!("{} pods, {} deployments", pods.len(), deployments.len()),
                        now.wall,
                    )]
                },
            );
        }
    }

    #[test]
    fn watches_read_together_are_one_rbac_row_each() {
        let rows = Settings::targets(&Joined {});
        assert_eq!(
            rows.iter()
                .map(|r| (r.resource.as_str(), r.namespace.as_deref()))
                .collect::<Vec<_>>(),
            [("pods", Some("ns-a")), ("deployments", None)]
        );
    }

    /// One judge reads both watches once both have listed; until then the check waits, naming the watch
    /// that has not listed and why.
    #[tokio::test(start_paused = true)]
    async fn a_judge_of_two_watches_waits_for_both_and_reads_both() {
        let (sink, _, tasks) = testing::started(&Joined {}, "j", fake_api(true));
        tokio::time::sleep(Duration::from_secs(5)).await;
        let snapshot = sink.snapshot();
        let items = &snapshot.checks["j"];
        assert_eq!(
            (
                items[0].item.as_str(),
                items[0].status,
                items[0].message.as_str()
            ),
            ("both", Status::Pass, "1 pods, 1 deployments")
        );
        assert!(!snapshot.unsynced.contains("j"));
        tasks.stop();

        let (sink, _, tasks) = started(&Joined {}, "j");
        tokio::time::sleep(Duration::from_secs(5)).await;
        let snapshot = sink.snapshot();
        let items = &snapshot.checks["j"];
        assert_eq!(
            (items[0].item.as_str(), items[0].status),
            ("_watch", Status::Unknown)
        );
        assert!(
            items[0].message.starts_with(
                "waiting for initial sync of deployments.apps with labels app=x on cluster default: list on deployments.apps forbidden"
            ),
            "only the watch that has not listed is named: {}",
            items[0].message
        );
        assert!(snapshot.unsynced.contains("j"));
        tasks.stop();
    }

    /// A check that only watches pods, started as a reload starts an added check.
    #[derive(Debug, Serialize, serde::Deserialize)]
    struct PodsOnly {}

    impl CheckType for PodsOnly {
        const NAME: &'static str = "pods-only";
        fn start(&self, run: &mut Run<'_>) {
            run.follow(
                WatchSpec::<k8s_openapi::api::core::v1::Pod>::namespaced("ns-a", |_| {}),
                |_, _, _| Vec::new(),
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_watching_check_exports_its_watch_restarts_at_zero_from_its_start() {
        let (_sink, metrics, tasks) = started(&PodsOnly {}, "added");
        tokio::time::sleep(Duration::from_secs(5)).await;
        let text = metrics.encode_prometheus();
        assert!(
            text.contains(
                "klutch_health_watch_restarts_total{check=\"added\",reason=\"failed\"} 0\n"
            ),
            "{text}"
        );
        tasks.stop();
    }

    static ONE: &[Registration] = &[Registration::of::<Renamed>()];

    #[test]
    fn a_type_is_found_by_its_name_or_an_alias_and_reads_its_own_keys() {
        for name in ["renamed", "old-name"] {
            assert_eq!(find_in(ONE, name).map(|t| t.name), Some("renamed"));
        }
        assert!(find_in(ONE, "other").is_none());
        let table =
            figment::value::Value::serialize(serde_json::json!({"size": "big"})).expect("a table");
        let e = ONE[0].read(&table).expect_err("size is a number");
        assert_eq!(e.path, "size");
        let table =
            figment::value::Value::serialize(serde_json::json!({"size": 3})).expect("a table");
        let settings = ONE[0].read(&table).expect("valid");
        assert_eq!(settings.type_name(), "renamed");
        assert_eq!(settings.downcast::<Renamed>().map(|r| r.size), Some(3));
        assert_eq!(settings.to_json(), serde_json::json!({"size": 3}));
    }
}
