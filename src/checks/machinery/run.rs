//! Running a check: [`start_one`] hands a check type's `start` a [`Run`] to declare through what it follows
//! and polls; the same `start` also only lists the watches (for RBAC), when nothing runs.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::fmt::Debug;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use jiff::Timestamp;
use serde::de::DeserializeOwned;

use super::{follow, live, waiting, Destination, JudgedTally, LiveTally, Source, Specs};
use crate::checks::Settings;
use crate::clock::Moment;
use crate::kubernetes::settings::Clusters;
use crate::kubernetes::watch::{WatchSpec, WatchState, WatchTarget, Watches};
use crate::metrics::Metrics;
use crate::signals::{Observation, Sink, Tasks};

/// What a check keeps across restarts of its tasks and across reloads (konnector heartbeats seen), one slot
/// per type: owned by the running check set, handed to the check at each start, dropped when a reload
/// removes it. (What the policy remembers between evaluations is its `Memory`.)
#[derive(Clone, Default)]
pub(crate) struct Stash(Arc<Mutex<HashMap<TypeId, Box<dyn Any + Send + Sync>>>>);

impl Stash {
    /// The check's slot of type `T`, made empty on first use.
    pub(crate) fn slot<T: Default + Send + 'static>(&self) -> Arc<Mutex<T>> {
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

/// What a starting check gets: where to publish, its tasks and stash, and its cluster when it watches.
pub(crate) struct Starting<'a> {
    pub(crate) sink: &'a Sink,
    pub(crate) metrics: &'a Arc<Metrics>,
    /// The check's own tasks, stopped when a reload changes or removes the check.
    pub(crate) tasks: &'a mut Tasks,
    pub(crate) stash: &'a Stash,
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
    /// A run that only lists the watches `start` declares, as RBAC rows, into `rows`.
    pub(crate) fn declaring(rows: &'a mut Vec<WatchTarget>) -> Run<'a> {
        Run {
            check: "",
            placeholders: Vec::new(),
            mode: Mode::Declare(rows),
        }
    }

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

    /// The check's stash of type `T`, kept across restarts and reloads while the check stays configured.
    pub(crate) fn stash<T: Default + Send + 'static>(&self) -> Arc<Mutex<T>> {
        match &self.mode {
            Mode::Start(s) => s.stash.slot(),
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
        let lives = s.stash.slot::<LiveTallies>();
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
            lives: Arc::downgrade(&s.stash.slot::<LiveTallies>()),
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
pub(crate) async fn start_one(
    check: CheckRef<'_>,
    clusters: &Clusters<'_>,
    watches: &mut Watches,
    sink: &Sink,
    metrics: &Arc<Metrics>,
    stash: &Stash,
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
    let lives = stash.slot::<LiveTallies>();
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
            stash,
            kube,
        },
    ));
    // The private watches this start did not claim watch what the check no longer does.
    let mut lives = lives.lock().unwrap_or_else(PoisonError::into_inner);
    let generation = lives.generation;
    lives.parts.retain(|_, (stamp, _)| *stamp == generation);
    tasks
}
