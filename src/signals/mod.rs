//! What the checks ([`crate::checks`]) publish: [`Observation`]s of their items, into a [`Sink`] the engine
//! reads, and the checks' supervised `Tasks`. Nothing here knows HTTP or policy: the engine evaluates
//! whatever was last published.

mod tasks;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, PoisonError};

use jiff::Timestamp;
use tokio::sync::Notify;

use crate::clock::{Due, Moment};
pub use crate::kubernetes::connection::ClusterDown;
use crate::verdict::report::{CrossplaneCounts, Passthrough, StateCounts, Status};
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
    /// The same objects as Crossplane counts them, for `crossplane_managed_resource_*{gvk}`.
    pub crossplane: Option<CrossplaneCounts>,
    /// What the item is, as links between checks read it (a check's `package`): a fact, never words
    /// parsed from its message.
    pub fact: Option<Fact>,
}

/// What an item is, beyond its status, for the rules that link one check's items to another's (a
/// check's `package`, and the root-cause rules of [`crate::verdict::causes`]).
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
            crossplane: None,
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

    /// The observation, with the counts of the objects behind it as Crossplane counts them.
    pub fn crossplane(mut self, counts: CrossplaneCounts) -> Self {
        self.crossplane = Some(counts);
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
    /// What has not delivered its first real observation yet: a check by its name, one part of a check
    /// of several watches as `CHECK/PART` (each part speaks for itself).
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
    /// Checks that a reload started again, whose earlier items stand in for the new start's placeholders.
    holds: Arc<Mutex<BTreeMap<String, Hold>>>,
}

/// One check's parts: part name → (still waiting, its items).
type Parts = BTreeMap<String, (bool, Vec<Observation>)>;

/// What a restarted check said before its restart, kept until the new start observes for itself (or
/// `until` passes): a reload never turns an item `unknown` just because the check started again.
struct Hold {
    until: Due,
    /// The whole check's items, when it had observed (a check of one watch, or a poller).
    items: Option<Arc<Vec<Observation>>>,
    /// Each part's items, for the parts that had observed and have not observed since.
    parts: BTreeMap<String, Vec<Observation>>,
    /// A task shows the parts left out once `until` passes.
    revealing: bool,
}

impl Hold {
    /// The held `items`, turning `unknown` with `message` once the hold's time is up.
    fn standing_in(&self, items: &[Observation], message: &str) -> Vec<Observation> {
        let expiry = Expiry {
            at: self.until,
            status: Status::Unknown,
            message: message.to_string(),
            fact: None,
        };
        items
            .iter()
            .map(|o| o.clone().expiring(expiry.clone()))
            .collect()
    }
}

impl Sink {
    /// Replaces what the part `part` of `check` knows (`waiting`: it has not observed anything yet). Each
    /// part is unsynced (`CHECK/PART`) while it waits. While a reload's hold lasts, a waiting part shows what
    /// it held before, and a part the check did not have before is left out until it observes (or the
    /// hold's time is up).
    pub(crate) fn publish_part(
        &self,
        check: &str,
        part: &str,
        items: Vec<Observation>,
        waiting: bool,
    ) {
        let now = Moment::now();
        let mut items = items;
        let mut unsynced = waiting;
        let mut holds = self.holds.lock().unwrap_or_else(PoisonError::into_inner);
        let hold = holds
            .get_mut(check)
            .filter(|h| h.items.is_none() && !h.until.passed(now));
        if let Some(hold) = &hold {
            if let (true, Some(held)) = (waiting, hold.parts.get(part)) {
                let message = items.first().map_or("", |o| o.message.as_str());
                items = hold.standing_in(held, message);
                unsynced = false;
            }
        }
        let mut parts = self.parts.lock().unwrap_or_else(PoisonError::into_inner);
        let of_check = parts.entry(check.to_string()).or_default();
        of_check.insert(part.to_string(), (unsynced, items));
        let mut hidden = BTreeSet::new();
        if let Some(hold) = hold {
            if !waiting {
                hold.parts.remove(part);
            }
            hidden.extend(
                of_check
                    .iter()
                    .filter(|(p, (w, _))| *w && !hold.parts.contains_key(*p))
                    .map(|(p, _)| p.clone()),
            );
            if !hidden.is_empty() && !hold.revealing {
                // Shown as they are once the hold's time is up, without waiting for another publish.
                hold.revealing = true;
                let (sink, check, at) = (self.clone(), check.to_string(), hold.until.instant(now));
                tokio::spawn(async move {
                    tokio::time::sleep_until(at).await;
                    sink.remerge(&check);
                });
            }
        }
        drop(holds);
        self.merge(check, of_check, &hidden);
    }

    /// Publishes the parts of `check` again, as they are (a hold's time is up).
    fn remerge(&self, check: &str) {
        let mut parts = self.parts.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(of_check) = parts.get_mut(check) {
            self.merge(check, of_check, &BTreeSet::new());
        }
    }

    /// The check's items are all its parts' items, in part order, but the `hidden` ones.
    fn merge(&self, check: &str, of_check: &Parts, hidden: &BTreeSet<String>) {
        let merged: Vec<Observation> = of_check
            .iter()
            .filter(|(p, _)| !hidden.contains(*p))
            .flat_map(|(_, (_, items))| items.iter().cloned())
            .collect();
        let unsynced: Vec<String> = of_check
            .iter()
            .filter(|(_, (w, _))| *w)
            .map(|(p, _)| format!("{check}/{p}"))
            .collect();
        let prefix = format!("{check}/");
        self.update(|s| {
            s.unsynced.remove(check);
            s.unsynced.retain(|u| !u.starts_with(&prefix));
            s.unsynced.extend(unsynced);
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

    /// `check` starts again (a reload changed it): what it observed so far stands in for the placeholders
    /// of its new start until that observes for itself, or at most until `until`, when they turn
    /// `unknown` with the placeholders' words. A check that had not observed anything holds nothing.
    pub(crate) fn hold(&self, check: &str, until: Due) {
        let parts: BTreeMap<String, Vec<Observation>> = self
            .parts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(check)
            .unwrap_or_default()
            .into_iter()
            .filter(|(_, (waiting, _))| !waiting)
            .map(|(part, (_, items))| (part, items))
            .collect();
        let items = {
            let s = self.latest.lock().unwrap_or_else(PoisonError::into_inner);
            let partial = s.unsynced.iter().any(|u| {
                u == check
                    || u.strip_prefix(check)
                        .is_some_and(|rest| rest.starts_with('/'))
            });
            match s.checks.get(check) {
                Some(items) if parts.is_empty() && !partial => Some(items.clone()),
                _ => None,
            }
        };
        let mut holds = self.holds.lock().unwrap_or_else(PoisonError::into_inner);
        if items.is_none() && parts.is_empty() {
            holds.remove(check);
        } else {
            holds.insert(
                check.to_string(),
                Hold {
                    until,
                    items,
                    parts,
                    revealing: false,
                },
            );
        }
    }

    /// Replaces everything known about `check`.
    pub fn publish(&self, check: &str, items: Vec<Observation>) {
        self.holds
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(check);
        self.update(|s| {
            s.unsynced.remove(check);
            s.checks.insert(check.to_string(), Arc::new(items));
        });
    }

    /// Publishes placeholder items for a check whose signal has not observed anything yet
    /// (`waiting for the first poll`, `waiting for initial sync`), unless a reload's hold stands in.
    pub(crate) fn waiting(&self, check: &str, items: Vec<Observation>) {
        {
            let holds = self.holds.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(hold) = holds.get(check) {
                if let (Some(held), false) = (&hold.items, hold.until.passed(Moment::now())) {
                    let message = items.first().map_or("", |o| o.message.as_str());
                    let standing = hold.standing_in(held, message);
                    drop(holds);
                    self.update(|s| {
                        s.unsynced.remove(check);
                        s.checks.insert(check.to_string(), Arc::new(standing));
                    });
                    return;
                }
            }
        }
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
        self.holds
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|c, _| configured(c));
        let mut s = self.latest.lock().unwrap_or_else(PoisonError::into_inner);
        s.unsynced
            .retain(|c| configured(c.split_once('/').map_or(c.as_str(), |(check, _)| check)));
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn item(name: &str, status: Status, message: &str) -> Observation {
        Observation::new(name, status, message, Timestamp::now())
    }

    fn said(sink: &Sink, check: &str) -> Vec<(String, Status, String)> {
        let now = Moment::now();
        sink.snapshot().checks[check]
            .iter()
            .map(|o| {
                let (status, message) = o.at(now);
                (o.item.clone(), status, message.to_string())
            })
            .collect()
    }

    /// A restarted check's earlier items stand in for its placeholders until it observes, and turn
    /// `unknown` with the placeholders' words once the hold's time is up.
    #[tokio::test(start_paused = true)]
    async fn a_held_check_shows_what_it_observed_until_it_observes_again_or_the_hold_ends() {
        let sink = Sink::default();
        sink.publish("c", vec![item("a", Status::Pass, "ok")]);
        sink.hold("c", Due::after(Moment::now(), Duration::from_secs(60)));
        sink.waiting("c", vec![item("_watch", Status::Unknown, "waiting for x")]);
        assert_eq!(said(&sink, "c"), [("a".into(), Status::Pass, "ok".into())]);
        assert!(sink.snapshot().unsynced.is_empty());
        tokio::time::advance(Duration::from_secs(61)).await;
        assert_eq!(
            said(&sink, "c"),
            [("a".into(), Status::Unknown, "waiting for x".into())]
        );
        sink.publish("c", vec![item("a", Status::Warn, "new")]);
        assert_eq!(said(&sink, "c"), [("a".into(), Status::Warn, "new".into())]);
        // A check that had not observed anything holds nothing.
        sink.waiting("w", vec![item("_watch", Status::Unknown, "waiting")]);
        sink.hold("w", Due::after(Moment::now(), Duration::from_secs(60)));
        sink.waiting("w", vec![item("_watch", Status::Unknown, "waiting again")]);
        assert_eq!(
            said(&sink, "w"),
            [("_watch".into(), Status::Unknown, "waiting again".into())]
        );
        assert!(sink.snapshot().unsynced.contains("w"));
    }

    /// A check of parts: each held part stands in for itself until it observes; a part it did not have
    /// before is left out while the hold lasts and shows as it is once the hold's time is up.
    #[tokio::test(start_paused = true)]
    async fn held_parts_stand_in_for_themselves_and_new_parts_show_when_they_observe_or_the_hold_ends(
    ) {
        let sink = Sink::default();
        sink.publish_part("mr", "a", vec![item("a", Status::Pass, "a ok")], false);
        sink.publish_part("mr", "b", vec![item("b", Status::Pass, "b ok")], false);
        sink.hold("mr", Due::after(Moment::now(), Duration::from_secs(60)));
        sink.clear_parts("mr");
        for part in ["a", "b", "c"] {
            let waiting = item(part, Status::Unknown, &format!("waiting for {part}"));
            sink.publish_part("mr", part, vec![waiting], true);
        }
        assert_eq!(
            said(&sink, "mr"),
            [
                ("a".into(), Status::Pass, "a ok".into()),
                ("b".into(), Status::Pass, "b ok".into())
            ]
        );
        assert_eq!(
            sink.snapshot().unsynced.iter().collect::<Vec<_>>(),
            ["mr/c"]
        );
        sink.publish_part("mr", "a", vec![item("a", Status::Fail, "a failed")], false);
        assert_eq!(said(&sink, "mr")[0].1, Status::Fail);
        tokio::time::sleep(Duration::from_secs(61)).await;
        assert_eq!(
            said(&sink, "mr"),
            [
                ("a".into(), Status::Fail, "a failed".into()),
                ("b".into(), Status::Unknown, "waiting for b".into()),
                ("c".into(), Status::Unknown, "waiting for c".into())
            ]
        );
    }
}
