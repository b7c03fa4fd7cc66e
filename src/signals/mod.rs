//! What the checks ([`crate::checks`]) publish: [`Observation`]s of their items, into a [`Sink`] the engine
//! reads, and the checks' supervised `Tasks`. Nothing here knows HTTP or policy: the engine evaluates
//! whatever was last published.

mod tasks;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, PoisonError};

use jiff::Timestamp;
use tokio::sync::Notify;

use crate::clock::{Due, Moment};
use crate::report::{Passthrough, StateCounts, Status};
pub(crate) use tasks::Tasks;

/// The placeholder item of a check whose watch has not listed anything yet.
pub(crate) const WATCH_ITEM: &str = crate::reserved::WATCH;

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
    /// The Kubernetes object the item is about, so that Events can name it (`None`: no object, or not
    /// one of the default cluster).
    pub regarding: Option<ObjectRef>,
    /// A fuller account than `message`, which JSON `output` and the status page show instead, even while
    /// the item passes (a managed-resources kind: its counts, and up to 20 failing resources each with its
    /// ProviderConfig, where the text names 5). `None`: the message, shown only when not passing. Dropped
    /// once an expiry has passed: it would describe what is no longer known.
    pub detail: Option<String>,
    /// The objects behind the item, counted by state (a managed-resources kind), for
    /// `klutch_health_managed_resources`.
    pub counts: Option<StateCounts>,
    /// What the item is, as links between checks read it (a check's `package`): a fact, never words
    /// parsed from its message.
    pub fact: Option<Fact>,
}

/// What an item is, beyond its status, for the rules that link one check's items to another's (a
/// check's `package`, and the root-cause rules of [`crate::causes`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fact {
    /// A Crossplane package scaled to zero until one of its ManagedResourceDefinitions is active: no pod
    /// of it runs, and none should.
    ScaledToZero,
    /// A `pods` check found no pod that has not finished.
    NoPod,
    /// A poll of a health server got no answer a running server gives: what a stopped or broken provider
    /// pod causes, unlike an answer that cannot be read.
    NoAnswer(NoAnswer),
    /// A ProviderConfig provider-anynines has not checked: never, or not within `check_stale_after`.
    Unchecked,
    /// A managed-resources kind fails only by the resources of these ProviderConfigs (each past `fail_min`
    /// and `fail_share`), by name: without them it would not fail.
    FailsWithin(Arc<[Arc<str>]>),
}

/// How a poll went unanswered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoAnswer {
    /// The connection was refused (or could not be made).
    Refused,
    /// The connection was reset or closed before an answer came: what the first poll after a crash meets
    /// on its kept-alive connection.
    Reset,
    /// Nothing came back within the poll's `timeout`.
    TimedOut,
    /// It answered with a 5xx status.
    ServerError,
}

/// A cluster whose API server does not answer, or answers but is not ready: the evidence probe of its
/// connection says so, and every item of that cluster turns `unknown` after `stale_after`.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterDown {
    /// The last evidence of life; for a server that answers but is not ready, its first such answer.
    pub since: Moment,
    /// `API server of cluster default silent since …: no answer to GET /readyz within 10s`.
    pub message: String,
    /// It answers, but `/readyz` fails; otherwise it is silent (or cannot be used).
    pub not_ready: bool,
}

/// A Kubernetes object, as an Event's `regarding` names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ObjectRef {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    /// `None` for cluster-scoped objects.
    pub namespace: Option<String>,
    pub uid: Option<String>,
}

impl ObjectRef {
    /// The object `meta` describes, of `api_version` and `kind`.
    pub fn of(api_version: &str, kind: &str, meta: &kube::api::ObjectMeta) -> ObjectRef {
        ObjectRef {
            api_version: api_version.to_string(),
            kind: kind.to_string(),
            name: meta.name.clone().unwrap_or_default(),
            namespace: meta.namespace.clone(),
            uid: meta.uid.clone(),
        }
    }

    /// An untyped object: its own `apiVersion` when it carries one (lists of custom resources do), else
    /// `api_version`.
    pub fn dynamic(api_version: &str, kind: &str, o: &kube::api::DynamicObject) -> ObjectRef {
        let api_version = o.types.as_ref().map_or(api_version, |t| &t.api_version);
        ObjectRef::of(api_version, kind, &o.metadata)
    }
}

/// What an observation becomes at `at`.
#[derive(Debug, Clone, PartialEq)]
pub struct Expiry {
    pub at: Due,
    pub status: Status,
    pub message: String,
    /// What the item is from then on (replacing the observation's own fact).
    pub fact: Option<Fact>,
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
            regarding: None,
            detail: None,
            counts: None,
            fact: None,
        }
    }

    /// The observation, with a fuller account for JSON and the status page (see [`Observation::detail`]).
    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// The observation, with the counts of the objects behind it.
    pub fn counts(mut self, counts: StateCounts) -> Self {
        self.counts = Some(counts);
        self
    }

    /// The observation, with its message worth showing while it passes (a provider scaled to zero): its
    /// message is its fuller account.
    pub fn notable(mut self) -> Self {
        self.detail = Some(self.message.clone());
        self
    }

    /// The observation, with what it is for links between checks.
    pub fn with_fact(mut self, fact: Fact) -> Self {
        self.fact = Some(fact);
        self
    }

    /// The observation, about `object`.
    pub fn regarding(mut self, object: ObjectRef) -> Self {
        self.regarding = Some(object);
        self
    }

    pub fn expiring(mut self, expiry: Expiry) -> Self {
        self.expires.push(expiry);
        self
    }

    /// Status and message as of `now`, after the latest expiry that has passed.
    pub fn at(&self, now: Moment) -> (Status, &str) {
        self.expired(now)
            .map_or((self.status, &self.message), |e| (e.status, &e.message))
    }

    /// What the item is as of `now`: the fact of the latest expiry that has passed, else its own.
    pub fn fact_at(&self, now: Moment) -> Option<Fact> {
        self.expired(now)
            .map_or(self.fact.clone(), |e| e.fact.clone())
    }

    /// The latest expiry passed at `now`, if any: then the observation no longer says what was observed.
    pub fn expired(&self, now: Moment) -> Option<&Expiry> {
        self.expires
            .iter()
            .filter(|e| e.at.passed(now))
            .max_by_key(|e| e.at.instant(now))
    }
}

/// Everything the signals have published so far.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// Check name → its items, as last published.
    /// Shared, so that taking a snapshot for each evaluation copies no observation.
    pub checks: BTreeMap<String, Arc<Vec<Observation>>>,
    /// Each `backend-status` check's last poll outcome, by check name.
    pub polls: BTreeMap<String, Passthrough>,
    /// Checks whose signal has not delivered its first real observation yet.
    pub unsynced: BTreeSet<String>,
    /// Clusters whose API server is down now, by name (`None`: the default cluster), as their connections'
    /// evidence probes last said.
    pub clusters: BTreeMap<Option<String>, ClusterDown>,
}

/// Where signals publish. Cheap to clone; the engine wakes on every publish.
#[derive(Clone, Default)]
pub struct Sink {
    latest: Arc<Mutex<Snapshot>>,
    changed: Arc<Notify>,
    /// The parts of checks that follow several watches: check → part → (still waiting, its items). Each
    /// part publishes alone; the check's items are all its parts' items, in part order.
    parts: Arc<Mutex<BTreeMap<String, Parts>>>,
}

/// One check's parts: part name → (still waiting, its items).
type Parts = BTreeMap<String, (bool, Vec<Observation>)>;

impl Sink {
    /// Replaces what the part `part` of `check` knows (`waiting`: it has not observed anything yet); the
    /// check is waiting while any of its parts is.
    pub(crate) fn publish_part(
        &self,
        check: &str,
        part: &str,
        items: Vec<Observation>,
        waiting: bool,
    ) {
        let mut parts = self.parts.lock().unwrap_or_else(PoisonError::into_inner);
        let of_check = parts.entry(check.to_string()).or_default();
        of_check.insert(part.to_string(), (waiting, items));
        let unsynced = of_check.values().any(|(w, _)| *w);
        let merged: Vec<Observation> = of_check
            .values()
            .flat_map(|(_, items)| items.iter().cloned())
            .collect();
        self.update(|s| {
            if unsynced {
                s.unsynced.insert(check.to_string());
            } else {
                s.unsynced.remove(check);
            }
            s.checks.insert(check.to_string(), Arc::new(merged));
        });
    }

    /// Forgets the parts of `check`, before it starts again with the parts it has now.
    pub(crate) fn clear_parts(&self, check: &str) {
        self.parts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(check);
    }

    /// Replaces everything known about `check`.
    pub fn publish(&self, check: &str, items: Vec<Observation>) {
        self.update(|s| {
            s.unsynced.remove(check);
            s.checks.insert(check.to_string(), Arc::new(items));
        });
    }

    /// Publishes placeholder items for a check whose signal has not observed anything yet
    /// (`waiting for the first poll`, `waiting for initial sync`).
    pub(crate) fn waiting(&self, check: &str, items: Vec<Observation>) {
        self.update(|s| {
            s.unsynced.insert(check.to_string());
            s.checks.insert(check.to_string(), Arc::new(items));
        });
    }

    /// Turns every item of `check` `unknown` with `message`: its task died, so nothing keeps them current.
    pub(crate) fn failed(&self, check: &str, message: &str) {
        let now = Timestamp::now();
        self.update(|s| {
            let items: Vec<Observation> = match s.checks.get(check) {
                Some(items) if !items.is_empty() => items
                    .iter()
                    .map(|o| Observation {
                        status: Status::Unknown,
                        message: message.to_string(),
                        observed: now,
                        expires: Vec::new(),
                        detail: None,
                        ..o.clone()
                    })
                    .collect(),
                _ => vec![Observation::new(WATCH_ITEM, Status::Unknown, message, now)],
            };
            s.checks.insert(check.to_string(), Arc::new(items));
        });
    }

    /// Drops what checks that are no longer configured published.
    pub(crate) fn retain(&self, configured: impl Fn(&str) -> bool) {
        self.parts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|c, _| configured(c));
        let mut s = self.latest.lock().unwrap_or_else(PoisonError::into_inner);
        s.unsynced.retain(|c| configured(c));
        s.checks.retain(|c, _| configured(c));
        s.polls.retain(|c, _| configured(c));
    }

    /// Records what the evidence probe of `cluster` (`None`: the default one) says now: down since when and
    /// why, or answering (`None`).
    pub fn cluster(&self, cluster: Option<&str>, down: Option<ClusterDown>) {
        let key = cluster.map(str::to_string);
        let mut s = self.latest.lock().unwrap_or_else(PoisonError::into_inner);
        if s.clusters.get(&key) == down.as_ref() {
            return;
        }
        match down {
            Some(d) => s.clusters.insert(key, d),
            None => s.clusters.remove(&key),
        };
        drop(s);
        self.changed.notify_one();
    }

    /// Forgets the clusters no connection reports any more.
    pub(crate) fn retain_clusters(&self, kept: impl Fn(Option<&str>) -> bool) {
        self.latest
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clusters
            .retain(|c, _| kept(c.as_deref()));
    }

    /// Records the outcome of `check`'s poll of provider-anynines' health server, good or not.
    pub fn polled(&self, check: &str, outcome: Passthrough) {
        self.update(|s| {
            s.polls.insert(check.to_string(), outcome);
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
    pub(crate) async fn changed(&self) {
        self.changed.notified().await;
    }
}

/// One item per wanted name (every object's name when `wanted` is `None`), judged with the object of that
/// name (`None`: there is none); when there is no name at all, the single `none` item warns with `empty`.
pub(crate) fn named_items(
    objects: &[Arc<kube::api::DynamicObject>],
    wanted: Option<&[String]>,
    empty: &str,
    now: Timestamp,
    judge: impl Fn(String, Option<&kube::api::DynamicObject>) -> Observation,
) -> Vec<Observation> {
    let name_of = |o: &kube::api::DynamicObject| o.metadata.name.clone().unwrap_or_default();
    let names: Vec<String> = match wanted {
        Some(w) => w.to_vec(),
        None => objects.iter().map(|o| name_of(o)).collect(),
    };
    if names.is_empty() {
        return vec![Observation::new(
            crate::reserved::NONE,
            Status::Warn,
            empty,
            now,
        )];
    }
    names
        .into_iter()
        .map(|name| {
            let object = objects.iter().find(|o| name_of(o) == name);
            judge(name, object.map(|o| &**o))
        })
        .collect()
}
