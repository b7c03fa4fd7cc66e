//! Kubernetes Events (`events.k8s.io/v1`) for each transition of an item's observed status, so that
//! `kubectl describe providerconfig NAME` and `kubectl get events -A` say why klutch-health counts it as
//! failing. The engine only hands changes to a bounded channel ([`Sender::send`] never waits); a separate task
//! writes them, collapsing repeats into an Event series and rate-limiting. Only the holder of the Lease
//! ([`crate::publish::lease`]) writes, so that several replicas emit one Event per transition. Nothing here can change
//! a verdict: a failing Events API is logged, at most once a minute.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams,
};
use kube::Client;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::checks::Running;
use crate::clock::{Instant, Moment};
use crate::config::Config;
use crate::kubernetes::api_errors::Resource;
use crate::publish::lease::{self, bounded, Leadership, RequestError};
use crate::signals::{ObjectRef, Snapshot};
use crate::telemetry::LogLimiter;
use crate::verdict::report::{ItemName, Report, Status};

/// How many changes may wait for the writer before new ones are dropped.
const QUEUE: usize = 1024;
/// At most this many Events (new or series updates) a minute.
pub const PER_MINUTE: usize = 30;
/// A repeat of the same Event within this long updates its series instead of creating another.
const SERIES_WINDOW: Duration = Duration::from_secs(30 * 60);
/// The API server refuses longer notes.
const MAX_NOTE: usize = 1024;

/// One transition of an item's observed status.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub item: ItemName,
    pub status: Status,
    pub message: String,
    /// `None`: no object (or not one of the default cluster); the Event then regards klutch-health's Pod.
    pub regarding: Option<ObjectRef>,
    pub time: Timestamp,
    /// The root cause that explains the item, when one does (`kubectl describe` then names it).
    pub cause: Option<ItemName>,
}

impl Change {
    /// `Warning` on anything but a pass.
    pub fn type_(&self) -> &'static str {
        if self.status == Status::Pass {
            "Normal"
        } else {
            "Warning"
        }
    }

    pub fn reason(&self) -> &'static str {
        match self.status {
            Status::Pass => "CheckRecovered",
            Status::Warn => "CheckWarning",
            Status::Fail => "CheckFailed",
            Status::Unknown => "CheckUnknown",
        }
    }

    /// `CHECK/ITEM is fail: MESSAGE`, with ` (cause: ROOT)` when a root cause explains it, cut to what the
    /// API server accepts (the cause kept).
    pub fn note(&self) -> String {
        let cause = match (&self.cause, self.status) {
            (Some(root), s) if s != Status::Pass => format!(" (cause: {root})"),
            _ => String::new(),
        };
        let mut note = format!("{} is {}: {}", self.item, self.status, self.message);
        let room = MAX_NOTE.saturating_sub(cause.len());
        if note.len() > room {
            let mut end = room.saturating_sub(3);
            while !note.is_char_boundary(end) {
                end -= 1;
            }
            note.truncate(end);
            note.push_str("...");
        }
        note.push_str(&cause);
        // Only a cause longer than the whole note is left to cut.
        if note.len() > MAX_NOTE {
            let mut end = MAX_NOTE - 3;
            while !note.is_char_boundary(end) {
                end -= 1;
            }
            note.truncate(end);
            note.push_str("...");
        }
        note
    }
}

/// Finds the transitions of observed status between evaluations. An item's first status once its check has
/// synced is its initial state and makes no Event, nor does anything while the check still waits.
#[derive(Debug, Default)]
pub struct Transitions {
    seen: HashMap<ItemName, Status>,
    /// Checks of other clusters: their objects are not in the cluster the Events go to.
    pub remote: HashSet<String>,
}

impl Transitions {
    pub fn changes(&mut self, report: &Report, snapshot: &Snapshot) -> Vec<Change> {
        let mut out = Vec::new();
        let mut seen = HashMap::with_capacity(report.items.len());
        for item in &report.items {
            let check = item.name.check();
            // A check, or the part of it that is this item, that has not observed yet makes no Event; its
            // other parts speak for themselves.
            if snapshot.unsynced.contains(check) || snapshot.unsynced.contains(item.name.as_str()) {
                continue;
            }
            seen.insert(item.name.clone(), item.status);
            match self.seen.get(&item.name) {
                Some(old) if *old != item.status => {}
                _ => continue,
            }
            let regarding = if self.remote.contains(check) {
                None
            } else {
                snapshot.checks.get(check).and_then(|items| {
                    items
                        .iter()
                        .find(|o| o.item == item.name.item())
                        .and_then(|o| o.regarding.clone())
                })
            };
            out.push(Change {
                item: item.name.clone(),
                status: item.status,
                message: item.message.clone(),
                regarding,
                time: report.evaluated.wall,
                cause: item.cause.as_ref().map(|c| c.root.clone()),
            });
        }
        self.seen = seen;
        out
    }
}

/// Counts of what did not become an Event, for the logs.
#[derive(Debug, Default)]
struct Counts {
    /// The queue was full.
    dropped: AtomicU64,
}

/// The engine's end of the queue. Cheap to clone; never waits.
#[derive(Clone)]
pub struct Sender {
    tx: mpsc::Sender<Change>,
    counts: Arc<Counts>,
}

impl Sender {
    /// Queues `change`, or drops and counts it when the writer is behind.
    pub fn send(&self, change: Change) {
        if self.tx.try_send(change).is_err() {
            let dropped = self.counts.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if dropped.is_power_of_two() {
                tracing::warn!(
                    dropped,
                    "the Events queue is full: transitions are dropped, not sent as Events"
                );
            }
        }
    }
}

/// Who writes the Events, and about which Pod when no other object is concerned.
#[derive(Debug, Clone)]
pub struct Reporter {
    /// `reportingInstance`: the Pod's name.
    pub instance: String,
    pub pod: ObjectRef,
}

impl Reporter {
    /// From the downward API's `POD_NAME`, `POD_NAMESPACE` and `POD_UID`, else the host name and `default`.
    pub fn from_env() -> Reporter {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let name = var("POD_NAME")
            .or_else(|| var("HOSTNAME"))
            .unwrap_or_else(|| "klutch-health".into());
        Reporter {
            instance: name.clone(),
            pod: ObjectRef {
                api_version: "v1".into(),
                kind: "Pod".into(),
                name,
                namespace: Some(var("POD_NAMESPACE").unwrap_or_else(|| "default".into())),
                uid: var("POD_UID"),
            },
        }
    }

    /// Where the Lease lives: the Pod's namespace.
    pub fn namespace(&self) -> &str {
        self.pod.namespace.as_deref().unwrap_or("default")
    }
}

/// Starts the writer; Events are written only while `leader` holds the Lease. It ends, and with it the
/// Lease loop, once every [`Sender`] is dropped.
pub fn start(client: Client, reporter: Reporter, leader: Leadership) -> Sender {
    let (tx, rx) = mpsc::channel(QUEUE);
    tokio::spawn(Writer::new(client, reporter).run(rx, leader));
    Sender {
        tx,
        counts: Arc::default(),
    }
}

/// The Events writer as the configuration asks for it: started at start-up, and again by a reload only when
/// `[kubernetes] events` or the default cluster (its settings or its kubeconfig) changed. Dropping the last
/// [`Sender`] stops the writer and, with it, its Lease loop.
#[derive(Default)]
pub struct Control {
    /// The writer, and the connection of the default cluster it writes through.
    running: Option<(u64, Sender)>,
}

impl Control {
    /// Where Events go under `config`: the running writer, a new one, or none. A new one writes through the
    /// default cluster's one connection, which the running check set keeps for its watches.
    pub(crate) async fn apply(&mut self, config: &Config, running: &mut Running) -> Option<Sender> {
        if config.kubernetes.events == Some(false) {
            if self.running.take().is_some() {
                tracing::info!(
                    "[kubernetes] events = false: this replica writes no more Kubernetes Events"
                );
            }
            return None;
        }
        let (client, key) = match running.client_for(&config.clusters(), None).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "no Kubernetes Events: the default cluster cannot be used");
                self.running = None;
                return None;
            }
        };
        if let Some((running, sender)) = &self.running {
            if *running == key {
                return Some(sender.clone());
            }
        }
        self.running = None;
        let reporter = Reporter::from_env();
        let leader = lease::start(
            client.clone(),
            reporter.namespace(),
            reporter.instance.clone(),
        );
        let sender = start(client, reporter, leader);
        self.running = Some((key, sender.clone()));
        Some(sender)
    }
}

/// Allows at most `limit` in any minute.
#[derive(Debug)]
pub struct RateLimit {
    limit: usize,
    recent: VecDeque<Instant>,
}

impl RateLimit {
    pub fn new(limit: usize) -> RateLimit {
        RateLimit {
            limit,
            recent: VecDeque::new(),
        }
    }

    pub fn allow(&mut self, now: Instant) -> bool {
        while self
            .recent
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= Duration::from_secs(60))
        {
            self.recent.pop_front();
        }
        if self.recent.len() >= self.limit {
            return false;
        }
        self.recent.push_back(now);
        true
    }
}

/// An Event already written, that a repeat updates.
#[derive(Debug, Clone)]
struct Series {
    name: String,
    count: u64,
    last: Instant,
}

/// What makes two Events the same.
type SeriesKey = (ObjectRef, &'static str, String);

struct Writer {
    client: Client,
    reporter: Reporter,
    series: HashMap<SeriesKey, Series>,
    limit: RateLimit,
    limited: LogLimiter,
    failed: LogLimiter,
    resource: ApiResource,
}

impl Writer {
    fn new(client: Client, reporter: Reporter) -> Writer {
        Writer {
            client,
            reporter,
            series: HashMap::new(),
            limit: RateLimit::new(PER_MINUTE),
            limited: LogLimiter::default(),
            failed: LogLimiter::default(),
            resource: ApiResource::from_gvk_with_plural(
                &GroupVersionKind::gvk("events.k8s.io", "v1", "Event"),
                "events",
            ),
        }
    }

    async fn run(mut self, mut rx: mpsc::Receiver<Change>, leader: Leadership) {
        while let Some(change) = rx.recv().await {
            if !leader.holds() {
                tracing::debug!(item = %change.item, "not the Lease holder: no Event");
                continue;
            }
            let now = Moment::now();
            if !self.limit.allow(now.mono) {
                if let Some(suppressed) = self.limited.allow() {
                    tracing::warn!(
                        item = %change.item,
                        suppressed,
                        "more than {PER_MINUTE} Events a minute: this transition is not sent as an Event"
                    );
                }
                continue;
            }
            if let Err(e) = self.write(&change, now).await {
                if let Some(suppressed) = self.failed.allow() {
                    let regarding = change.regarding.as_ref().unwrap_or(&self.reporter.pod);
                    let events =
                        Resource::written("events.k8s.io", "events", namespace_of(regarding));
                    tracing::warn!(
                        item = %change.item,
                        error = %e.describe(&events),
                        suppressed,
                        "cannot write a Kubernetes Event (verdicts are unaffected)"
                    );
                }
            }
        }
    }

    async fn write(&mut self, change: &Change, moment: Moment) -> Result<(), RequestError> {
        let now = moment.wall;
        let regarding = change
            .regarding
            .clone()
            .unwrap_or_else(|| self.reporter.pod.clone());
        let namespace = namespace_of(&regarding).to_string();
        let note = change.note();
        let key = (regarding.clone(), change.reason(), note.clone());
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), &namespace, &self.resource);
        if let Some(series) = self
            .series
            .get_mut(&key)
            .filter(|s| moment.mono.saturating_duration_since(s.last) < SERIES_WINDOW)
        {
            series.count += 1;
            series.last = moment.mono;
            let patch = json!({"series": {"count": series.count, "lastObservedTime": micro(now)}});
            let patched = bounded(
                "an Event's series update",
                PATCH,
                api.patch(&series.name, &PatchParams::default(), &Patch::Merge(&patch)),
            )
            .await;
            match patched {
                // The API server dropped the Event (its TTL passed): start a new one.
                Err(RequestError::Api {
                    source: kube::Error::Api(e),
                    ..
                }) if e.code == 404 => {}
                other => return other.map(|_| ()),
            }
        }
        let name = event_name(&regarding.name, now);
        let event = event(
            &name,
            &namespace,
            &regarding,
            change,
            &note,
            &self.reporter,
            now,
        );
        let object: DynamicObject =
            serde_json::from_value(event).map_err(|e| RequestError::Api {
                verb: CREATE,
                source: kube::Error::SerdeError(e),
            })?;
        bounded(
            "an Event's create",
            CREATE,
            api.create(&PostParams::default(), &object),
        )
        .await?;
        self.series
            .retain(|_, s| moment.mono.saturating_duration_since(s.last) < SERIES_WINDOW);
        self.series.insert(
            key,
            Series {
                name,
                count: 1,
                last: moment.mono,
            },
        );
        Ok(())
    }
}

/// The longest Event name the API server accepts (a DNS subdomain); longer ones are refused with 422.
const MAX_NAME: usize = 253;

/// An Event's name: the object's name and the time, as client-go names them (`NAME.HEXNANOS`), valid for any
/// object name. A name too long for the time to fit (or not a DNS subdomain) is cut, lowercased and followed
/// by a hash of the whole name, so that one object always gets the same prefix and two long names that
/// share their first characters still differ.
fn event_name(object: &str, now: Timestamp) -> String {
    let time = format!(".{:x}", now.as_nanosecond().unsigned_abs());
    let room = MAX_NAME - time.len();
    if object.len() <= room && is_subdomain(object) {
        return format!("{object}{time}");
    }
    let hash = format!("{:016x}", fnv1a(object.as_bytes()));
    let mut kept: String = object
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9') => c,
            _ => '-',
        })
        .take(room - hash.len() - 1)
        .collect();
    kept = kept.trim_matches('-').to_string();
    if kept.is_empty() {
        format!("{hash}{time}")
    } else {
        format!("{kept}-{hash}{time}")
    }
}

/// A DNS-1123 subdomain: lowercase letters, digits, `-` and `.`, each dot-separated part starting and ending
/// with a letter or digit.
fn is_subdomain(s: &str) -> bool {
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    !s.is_empty()
        && s.split('.').all(|part| {
            part.starts_with(alnum)
                && part.ends_with(alnum)
                && part.chars().all(|c| alnum(c) || c == '-')
        })
}

/// FNV-1a, 64 bits: the same on every build and every replica (the standard hasher promises neither).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// `MicroTime`: RFC 3339 with microseconds.
fn micro(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

fn event(
    name: &str,
    namespace: &str,
    regarding: &ObjectRef,
    change: &Change,
    note: &str,
    reporter: &Reporter,
    now: Timestamp,
) -> Value {
    let mut object = json!({
        "apiVersion": regarding.api_version,
        "kind": regarding.kind,
        "name": regarding.name,
    });
    if let Some(ns) = &regarding.namespace {
        object["namespace"] = json!(ns);
    }
    if let Some(uid) = &regarding.uid {
        object["uid"] = json!(uid);
    }
    json!({
        "apiVersion": "events.k8s.io/v1",
        "kind": "Event",
        "metadata": {"name": name, "namespace": namespace},
        "eventTime": micro(now),
        "reportingController": "klutch-health",
        "reportingInstance": reporter.instance,
        "action": "Check",
        "reason": change.reason(),
        "note": note,
        "type": change.type_(),
        "regarding": object,
    })
}

/// The verbs the writer uses on Events: create a new one, merge-patch a series.
pub const VERBS: [&str; 2] = [CREATE, PATCH];
const CREATE: &str = "create";
const PATCH: &str = "patch";

/// One RBAC permission that writing Events needs.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Permission {
    pub group: &'static str,
    pub resource: &'static str,
    /// `resourceNames`: `None` for any (a create cannot be limited by name).
    pub name: Option<&'static str>,
    /// `None`: in every namespace (a ClusterRole).
    pub namespace: Option<String>,
    pub verb: &'static str,
}

/// The namespace an Event about `regarding` is written to (and `kubectl describe` shows it in): the object's
/// own, `default` for a cluster-scoped one.
pub fn namespace_of(regarding: &ObjectRef) -> &str {
    regarding.namespace.as_deref().unwrap_or("default")
}

/// What RBAC must grant for Events under `config`, with klutch-health's Pod in `pod_namespace`: Events in
/// every namespace of the objects the default cluster's checks watch (`default` for cluster-scoped ones) and
/// the Pod's own (for items with no object) — in every namespace when a check watches a namespaced
/// resource cluster-wide (ClusterBindings, one per consumer namespace) — and the one Lease. Nothing when
/// `[kubernetes] events = false`.
pub fn permissions(config: &Config, pod_namespace: &str) -> BTreeSet<Permission> {
    let mut out = BTreeSet::new();
    if config.kubernetes.events == Some(false) {
        return out;
    }
    let mut namespaces = BTreeSet::from([Some(pod_namespace.to_string())]);
    for check in config.checks.iter().filter(|c| c.cluster.is_none()) {
        for target in check.settings.targets() {
            namespaces.insert(match (target.namespace, target.namespaced) {
                (Some(ns), _) => Some(ns),
                (None, false) => Some("default".into()),
                (None, true) => None,
            });
        }
    }
    if namespaces.contains(&None) {
        namespaces = BTreeSet::from([None]);
    }
    for namespace in namespaces {
        for verb in VERBS {
            out.insert(Permission {
                group: "events.k8s.io",
                resource: "events",
                name: None,
                namespace: namespace.clone(),
                verb,
            });
        }
    }
    let on_lease = |name, verb| Permission {
        group: "coordination.k8s.io",
        resource: "leases",
        name,
        namespace: Some(pod_namespace.to_string()),
        verb,
    };
    out.insert(on_lease(None, lease::CREATE));
    for verb in lease::VERBS_BY_NAME {
        out.insert(on_lease(Some(lease::NAME), verb));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signals::Observation;
    use crate::verdict::history::tests::{at, report};

    fn snapshot(unsynced: bool, regarding: &str) -> Snapshot {
        let object = ObjectRef {
            api_version: "dataservices.anynines.com/v1".into(),
            kind: "ProviderConfig".into(),
            name: regarding.into(),
            namespace: None,
            uid: Some("u-1".into()),
        };
        let observation =
            Observation::new(regarding, Status::Fail, "", at(0).wall).regarding(object);
        let mut s = Snapshot::default();
        s.checks.insert("pcs".into(), Arc::new(vec![observation]));
        if unsynced {
            s.unsynced.insert("pcs".into());
        }
        s
    }

    #[test]
    fn only_changes_after_the_initial_state_of_a_synced_check_count() {
        let mut t = Transitions::default();
        let fail = [("a", Status::Fail)];
        let pass = [("a", Status::Pass)];
        // While the check waits, and for its first synced state: nothing.
        assert_eq!(t.changes(&report(0, &pass), &snapshot(true, "a")), []);
        assert_eq!(t.changes(&report(1, &fail), &snapshot(false, "a")), []);
        assert_eq!(t.changes(&report(2, &fail), &snapshot(false, "a")), []);
        let changes = t.changes(&report(3, &pass), &snapshot(false, "a"));
        assert_eq!(changes.len(), 1, "{changes:?}");
        let c = &changes[0];
        assert_eq!(
            (c.item.as_str(), c.status, c.time, c.type_(), c.reason()),
            (
                "pcs/a",
                Status::Pass,
                at(3).wall,
                "Normal",
                "CheckRecovered"
            )
        );
        assert_eq!(
            c.regarding.as_ref().map(|r| r.kind.as_str()),
            Some("ProviderConfig")
        );
        // A check of another cluster: its objects are not where the Events go.
        t.remote.insert("pcs".into());
        let changes = t.changes(&report(4, &fail), &snapshot(false, "a"));
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].regarding, None);
    }

    /// A part of a check that has not synced (a kind whose CRD is missing) keeps no other part from
    /// writing its Events.
    #[test]
    fn each_part_of_a_check_writes_its_events_whatever_another_part_waits_for() {
        let mut t = Transitions::default();
        let waiting_b = |regarding| {
            let mut s = snapshot(false, regarding);
            s.unsynced.insert("pcs/b".into());
            s
        };
        let items = |a, b| [("a", a), ("b", b)];
        t.changes(
            &report(0, &items(Status::Fail, Status::Unknown)),
            &waiting_b("a"),
        );
        let changes = t.changes(
            &report(1, &items(Status::Pass, Status::Fail)),
            &waiting_b("a"),
        );
        assert_eq!(
            changes.iter().map(|c| c.item.as_str()).collect::<Vec<_>>(),
            ["pcs/a"],
            "{changes:?}"
        );
    }

    #[test]
    fn at_most_the_limit_passes_in_any_minute() {
        let t0 = Instant::now();
        let mut limit = RateLimit::new(3);
        let at = |s: u64| t0 + Duration::from_secs(s);
        let allowed: Vec<bool> = [0, 1, 2, 3, 59, 60, 61, 62]
            .into_iter()
            .map(|s| limit.allow(at(s)))
            .collect();
        assert_eq!(allowed, [true, true, true, false, false, true, true, true]);
    }

    /// The API server refuses an Event name over 253 characters (422): a 240-character ProviderConfig name
    /// still gets a valid one, the same prefix each time, and two such names differ.
    #[test]
    fn event_names_are_valid_for_any_object_name() {
        let t = |s: i64| Timestamp::from_second(1_800_000_000 + s).expect("a time");
        assert_eq!(
            event_name("pc-1", t(0)),
            "pc-1.18fae27693b40000",
            "as client-go names them"
        );
        let long = "p".repeat(240);
        let other = format!("{}q", "p".repeat(239));
        let names = [
            event_name(&long, t(0)),
            event_name(&long, t(1)),
            event_name(&other, t(0)),
            event_name(&"x".repeat(400), t(0)),
            event_name("Klutch_Health Pod", t(0)),
            event_name("...", t(0)),
        ];
        for name in &names {
            assert!(name.len() <= MAX_NAME, "{} > 253: {name}", name.len());
            assert!(is_subdomain(name), "not a DNS subdomain: {name}");
        }
        let prefix = |n: &str| n.rsplit_once('.').expect("a time").0.to_string();
        assert_eq!(
            prefix(&names[0]),
            prefix(&names[1]),
            "one object, one prefix"
        );
        assert_ne!(
            prefix(&names[0]),
            prefix(&names[2]),
            "two objects, two prefixes"
        );
        assert!(names[4].starts_with("klutch-health-pod-"), "{}", names[4]);
    }

    #[test]
    fn a_long_note_is_cut_on_a_character_boundary() {
        let change = Change {
            item: ItemName::new("provider-config", "pc"),
            status: Status::Fail,
            message: "é".repeat(2000),
            regarding: None,
            time: Timestamp::UNIX_EPOCH,
            cause: None,
        };
        let note = change.note();
        assert!(note.len() <= MAX_NOTE && note.ends_with("..."), "{note}");
        assert_eq!(
            (change.type_(), change.reason()),
            ("Warning", "CheckFailed")
        );
    }
}
