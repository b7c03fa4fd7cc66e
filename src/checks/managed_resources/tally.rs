//! One kind's tally: a small record per managed resource, and counts kept current event by event (by
//! state, per ProviderConfig, the failing ones by name, the deadlines of the creating and deleting ones, the
//! newest Backup per claimed instance and Restore per claimed backup), so that judging a kind never walks all
//! its resources.
//! Its item is a pure function of the counts, the settings and the time.

use std::borrow::Cow;
use std::cmp::{Ordering, Reverse};
use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use globset::GlobSet;
use jiff::Timestamp;
use kube::runtime::watcher::Event;

use super::judge::{judge, State};
use super::object::Managed;
use super::Share;
use crate::checks::{JudgedTally, Tally, WatchState};
use crate::clock::{Due, Moment};
use crate::human;
use crate::signals::{Fact, Observation};
use crate::verdict::report::{CrossplaneCounts, StateCounts, Status};

/// Reasons the text line shows, the most frequent first, and failing resources it names per reason.
pub const REASONS_IN_TEXT: usize = 3;
pub const NAMED_PER_REASON_IN_TEXT: usize = 3;
/// Reasons shown in JSON `output` and on the status page, and failing resources named there in all, each
/// with its ProviderConfig (at least 2 per reason).
pub const REASONS_IN_DETAIL: usize = 10;
pub const NAMED_IN_DETAIL: usize = 20;
/// ProviderConfigs named when several fail systemically.
const NAMED_PROVIDER_CONFIGS: usize = 5;

/// Which older resources a newer one supersedes: only the newest of each group is judged. The names are
/// claim names, meant in the claim's namespace (the `crossplane.io/claim-namespace` label): two tenants'
/// claims called `daily` are two groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Supersede {
    /// Backups: the newest per claim namespace and `spec.forProvider.instanceName`.
    ByInstance,
    /// Restores: the newest per claim namespace and `spec.forProvider.backupName`.
    ByBackup,
}

/// How one kind is judged: the check's settings for it.
#[derive(Debug, Clone)]
pub struct KindRules {
    /// The resource's plural (`serviceinstances`): the item's name.
    pub kind: String,
    /// Its group, version and kind as Crossplane's metrics label them
    /// (`dataservices.anynines.com/v1, Kind=ServiceInstance`).
    pub gvk: Arc<str>,
    pub create_timeout: Duration,
    pub delete_timeout: Duration,
    /// Objects whose names match are left out entirely.
    pub ignore: GlobSet,
    pub fail_min: u64,
    pub fail_share: Share,
    pub max_objects: usize,
    pub supersede: Option<Supersede>,
}

/// What is kept of one resource (about 100 bytes with its name): the state table's verdict, not the
/// object.
#[derive(Debug, Clone, PartialEq)]
struct Record {
    state: State,
    /// Creating or deleting for longer than its timeout: counts as failing.
    timed_out: bool,
    /// Its `Ready` and its `Synced` condition are `True`: what Crossplane's metrics count, whatever its state.
    ready_true: bool,
    synced_true: bool,
    /// Creating or deleting since (Unix seconds).
    since: Option<i64>,
    /// Its creation (Unix seconds), which orders Backups and Restores.
    created: i64,
    /// The relist that last saw it.
    epoch: u32,
    /// `spec.providerConfigRef.name`, shared by the records of one ProviderConfig.
    provider_config: Arc<str>,
    /// The instance (Backups) or backup (Restores) it belongs to: [`group_key`].
    group: Option<Arc<str>>,
    /// The conditions' words, when not ready.
    why: Option<Box<str>>,
}

impl Record {
    /// Its state as counted: a timed-out one fails.
    fn counted(&self) -> State {
        if self.timed_out {
            State::Failing
        } else {
            self.state
        }
    }
}

/// The counts of the judged resources (the newest of each group, and every ungrouped one).
#[derive(Debug, Clone, Default)]
struct Counts {
    by_state: [u64; 5],
    /// Per ProviderConfig, by state: what the thresholds are judged on.
    by_provider_config: HashMap<Arc<str>, [u64; 5]>,
    /// Not judged: an older Backup of the same instance, an older Restore of the same backup.
    superseded: u64,
    /// Every resource held (judged or superseded) with `Ready=True`, and with `Synced=True`.
    ready_true: u64,
    synced_true: u64,
    failing: BTreeSet<Arc<str>>,
    /// The failing ones by why they fail ([`reason`]), and those reasons by how many fail for each, the
    /// most first: what the messages group by, kept per event so that showing the top few is cheap.
    reasons: HashMap<Arc<str>, BTreeSet<Arc<str>>>,
    by_frequency: BTreeSet<(Reverse<usize>, Arc<str>)>,
    /// (deadline in Unix seconds, name) of each creating or deleting resource not yet timed out.
    deadlines: BTreeSet<(i64, Arc<str>)>,
}

/// One kind's tally. Cloning an empty one makes the fresh tally a restarted watch starts with.
#[derive(Debug, Clone)]
pub struct KindTally {
    rules: Arc<KindRules>,
    records: HashMap<Arc<str>, Record>,
    /// The records of resources that `ignore` leaves out: held, never counted, so that a changed `ignore`
    /// re-judges them without a relist.
    ignored: HashMap<Arc<str>, Record>,
    /// Members of each group, sorted by creation, then name in [`natural`] order: the last one is judged. A
    /// sorted `Vec`, not a `BTreeSet`: most groups hold one member, and a B-tree node costs about 290 bytes.
    groups: HashMap<Arc<str>, Vec<(i64, Arc<str>)>>,
    counts: Counts,
    epoch: u32,
}

fn seconds(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

impl Counts {
    /// Adds (or takes away) one judged resource.
    fn count(&mut self, rules: &KindRules, name: &Arc<str>, r: &Record, add: bool) {
        let state = r.counted();
        let step = |n: &mut u64| {
            *n = if add {
                n.saturating_add(1)
            } else {
                n.saturating_sub(1)
            }
        };
        step(&mut self.by_state[state.index()]);
        let per = self
            .by_provider_config
            .entry(r.provider_config.clone())
            .or_default();
        step(&mut per[state.index()]);
        if per.iter().all(|n| *n == 0) {
            self.by_provider_config.remove(&r.provider_config);
        }
        if state == State::Failing {
            if add {
                self.failing.insert(name.clone());
            } else {
                self.failing.remove(name);
            }
            self.regroup(&reason(rules, r), name, add);
        }
        if let Some(deadline) = deadline(rules, r) {
            if add {
                self.deadlines.insert((deadline, name.clone()));
            } else {
                self.deadlines.remove(&(deadline, name.clone()));
            }
        }
    }
}

impl Counts {
    /// Adds `name` to (or takes it from) the failing resources of `reason`.
    fn regroup(&mut self, reason: &str, name: &Arc<str>, add: bool) {
        let key = self
            .reasons
            .get_key_value(reason)
            .map_or_else(|| Arc::from(reason), |(k, _)| k.clone());
        let members = self.reasons.entry(key.clone()).or_default();
        self.by_frequency
            .remove(&(Reverse(members.len()), key.clone()));
        if add {
            members.insert(name.clone());
        } else {
            members.remove(name);
        }
        if members.is_empty() {
            self.reasons.remove(reason);
        } else {
            self.by_frequency.insert((Reverse(members.len()), key));
        }
    }

    /// Adds (or takes away) one held resource's `Ready=True` and `Synced=True`.
    fn conditions(&mut self, r: &Record, add: bool) {
        for (n, on) in [
            (&mut self.ready_true, r.ready_true),
            (&mut self.synced_true, r.synced_true),
        ] {
            if on {
                *n = if add {
                    n.saturating_add(1)
                } else {
                    n.saturating_sub(1)
                };
            }
        }
    }
}

/// Why a failing resource fails, as its failing resources are grouped: its conditions' words, or how long
/// it may be creating or deleting (not since when: that differs for each).
fn reason<'a>(rules: &KindRules, r: &'a Record) -> Cow<'a, str> {
    let words = r.why.as_deref().unwrap_or("");
    match (r.timed_out, r.state) {
        (true, State::Creating) => Cow::Owned(format!(
            "creating longer than create_timeout {} ({words})",
            human::duration(rules.create_timeout)
        )),
        (true, State::Deleting) => Cow::Owned(format!(
            "deleting longer than delete_timeout {}: a finalizer that is never removed?",
            human::duration(rules.delete_timeout)
        )),
        _ => Cow::Borrowed(words),
    }
}

/// When a creating or deleting resource starts to count as failing (Unix seconds).
fn deadline(rules: &KindRules, r: &Record) -> Option<i64> {
    let timeout = match (r.state, r.timed_out) {
        (_, true) => return None,
        (State::Creating, _) => rules.create_timeout,
        (State::Deleting, _) => rules.delete_timeout,
        _ => return None,
    };
    Some(r.since?.saturating_add(seconds(timeout)))
}

impl KindTally {
    pub fn new(rules: KindRules) -> KindTally {
        KindTally {
            rules: Arc::new(rules),
            records: HashMap::new(),
            ignored: HashMap::new(),
            groups: HashMap::new(),
            counts: Counts::default(),
            epoch: 0,
        }
    }

    pub fn rules(&self) -> &KindRules {
        &self.rules
    }

    /// Takes in one resource as it is now (added, changed, or listed again).
    pub fn upsert(&mut self, object: Managed) {
        let Some(name) = object.name() else { return };
        let ignored = self.rules.ignore.is_match(name);
        let key = self
            .key(name)
            .or_else(|| self.ignored.get_key_value(name).map(|(k, _)| k.clone()))
            .unwrap_or_else(|| name.into());
        let facts = object.facts;
        let judged = judge(&facts);
        let provider_config: &str = facts.provider_config.as_deref().unwrap_or("");
        let provider_config = self
            .counts
            .by_provider_config
            .get_key_value(provider_config)
            .map_or_else(|| provider_config.into(), |(k, _)| k.clone());
        let group = match self.rules.supersede {
            Some(Supersede::ByInstance) => facts.instance_name,
            Some(Supersede::ByBackup) => facts.backup_name,
            None => None,
        }
        .map(|g| {
            let g = group_key(facts.claim_namespace.as_deref(), &g);
            self.groups
                .get_key_value(g.as_str())
                .map_or_else(|| g.as_str().into(), |(k, _)| k.clone())
        });
        let record = Record {
            state: judged.state,
            timed_out: false,
            ready_true: facts.ready.as_ref().is_some_and(|c| c.is("True")),
            synced_true: facts.synced.as_ref().is_some_and(|c| c.is("True")),
            since: judged.since.map(|t| t.as_second()),
            created: facts.created.map_or(0, |t| t.as_second()),
            epoch: self.epoch,
            provider_config,
            group,
            why: judged.why.map(String::into_boxed_str),
        };
        self.place(key, record, ignored);
    }

    /// Keeps `record` as judged, or as left out by `ignore`.
    fn place(&mut self, key: Arc<str>, record: Record, ignored: bool) {
        if ignored {
            if self.records.contains_key(&key) {
                self.change(&key, None);
            }
            self.ignored.insert(key, record);
        } else {
            self.ignored.remove(&key);
            self.change(&key, Some(record));
        }
    }

    /// Judges what is held by new `rules` (a reload changed the check's thresholds, timeouts or
    /// `ignore`): the counts are made again from the records, without a relist.
    pub fn set_rules(&mut self, rules: KindRules) {
        let held: Vec<(Arc<str>, Record)> = std::mem::take(&mut self.records)
            .into_iter()
            .chain(std::mem::take(&mut self.ignored))
            .collect();
        self.rules = Arc::new(rules);
        self.groups.clear();
        self.counts = Counts::default();
        for (key, mut record) in held {
            record.timed_out = false;
            let ignored = self.rules.ignore.is_match(&*key);
            self.place(key, record, ignored);
        }
    }

    /// Forgets a resource that was deleted.
    pub fn remove(&mut self, name: &str) {
        self.ignored.remove(name);
        if let Some(key) = self.key(name) {
            self.change(&key, None);
        }
    }

    /// The stored name, shared by the sets that hold it.
    fn key(&self, name: &str) -> Option<Arc<str>> {
        self.records.get_key_value(name).map(|(k, _)| k.clone())
    }

    /// Replaces the record of `name` (`None`: removes it), keeping every count current: the counts of the
    /// groups it leaves and joins are taken away first and added back after, since a new or removed member
    /// can change which one is the newest.
    fn change(&mut self, name: &Arc<str>, new: Option<Record>) {
        let old_group = self.records.get(name).map(|r| r.group.clone());
        let new_group = new.as_ref().map(|r| r.group.clone());
        let mut groups: Vec<Arc<str>> = Vec::new();
        for g in [&old_group, &new_group].into_iter().flatten().flatten() {
            if !groups.contains(g) {
                groups.push(g.clone());
            }
        }
        for g in &groups {
            self.count_group(g, false);
        }
        if let Some(old) = self.records.get(name).filter(|r| r.group.is_none()) {
            self.counts.count(&self.rules, name, old, false);
        }
        if let Some(old) = self.records.remove(name) {
            self.counts.conditions(&old, false);
            if let Some(g) = &old.group {
                if let Some(members) = self.groups.get_mut(g) {
                    let member = (old.created, name.clone());
                    if let Ok(i) = members.binary_search_by(|m| older(m, &member)) {
                        members.remove(i);
                    }
                    if members.is_empty() {
                        self.groups.remove(g);
                    }
                }
            }
        }
        if let Some(record) = new {
            self.counts.conditions(&record, true);
            if let Some(g) = &record.group {
                let members = self.groups.entry(g.clone()).or_default();
                let member = (record.created, name.clone());
                if let Err(i) = members.binary_search_by(|m| older(m, &member)) {
                    members.insert(i, member);
                }
            } else {
                self.counts.count(&self.rules, name, &record, true);
            }
            self.records.insert(name.clone(), record);
        }
        for g in &groups {
            self.count_group(g, true);
        }
    }

    /// Adds (or takes away) a group: its newest member judged, the others superseded.
    fn count_group(&mut self, g: &Arc<str>, add: bool) {
        let Some(members) = self.groups.get(g) else {
            return;
        };
        let Some((_, newest)) = members.last() else {
            return;
        };
        let older = members.len() as u64 - 1;
        self.counts.superseded = if add {
            self.counts.superseded.saturating_add(older)
        } else {
            self.counts.superseded.saturating_sub(older)
        };
        if let Some(r) = self.records.get(newest) {
            self.counts.count(&self.rules, newest, r, add);
        }
    }

    /// Creating and deleting resources past their deadline count as failing from now on (until they
    /// change).
    fn expire(&mut self, now: Timestamp) {
        let now = now.as_second();
        while let Some((deadline, name)) = self.counts.deadlines.first().cloned() {
            if deadline > now {
                break;
            }
            let Some(r) = self.records.get(&name) else {
                self.counts.deadlines.pop_first();
                continue;
            };
            self.counts.count(&self.rules, &name, r, false);
            let mut r = r.clone();
            r.timed_out = true;
            self.counts.count(&self.rules, &name, &r, true);
            self.records.insert(name, r);
        }
    }

    /// A relist begins: what it does not list again is gone at its end.
    fn relisting(&mut self) {
        self.epoch = self.epoch.wrapping_add(1);
    }

    /// A relist ended: forgets what it did not list.
    fn listed(&mut self) {
        let gone: Vec<Arc<str>> = self
            .records
            .iter()
            .filter(|(_, r)| r.epoch != self.epoch)
            .map(|(k, _)| k.clone())
            .collect();
        for name in gone {
            self.change(&name, None);
        }
        let epoch = self.epoch;
        self.ignored.retain(|_, r| r.epoch == epoch);
    }

    /// Resources held, judged or left out by `ignore`.
    pub fn held(&self) -> usize {
        self.records.len() + self.ignored.len()
    }

    /// The kind's item as of `now`, and the next deadline.
    pub fn item(&mut self, now: Moment) -> (Observation, Option<Due>) {
        self.expire(now.wall);
        let rules = &self.rules;
        let c = &self.counts;
        let judged: u64 = c.by_state.iter().sum();
        let n = |s: State| c.by_state[s.index()];
        let mut counts: Vec<(&'static str, u64)> =
            State::ALL.iter().map(|s| (s.as_str(), n(*s))).collect();
        counts.push(("superseded", c.superseded));
        let next = c
            .deadlines
            .first()
            .and_then(|(d, _)| Timestamp::from_second(*d).ok())
            .map(Due::Wall);

        let (mut status, mut summary) = if judged == 0 {
            (Status::Pass, format!("no {}", rules.kind))
        } else {
            let mut s = format!("{} of {judged} ready", n(State::Ready));
            if c.superseded > 0 {
                s.push_str(&format!(" ({} superseded)", c.superseded));
            }
            for state in [
                State::Creating,
                State::Deleting,
                State::Paused,
                State::Failing,
            ] {
                if n(state) > 0 {
                    s.push_str(&format!(", {} {}", n(state), state.as_str()));
                }
            }
            let status = match n(State::Failing) {
                0 => Status::Pass,
                _ => Status::Warn,
            };
            (status, s)
        };
        let mut text_names = String::new();
        let mut detail_names = String::new();
        if n(State::Failing) > 0 {
            text_names = self.grouped(false, now.wall);
            detail_names = self.grouped(true, now.wall);
        }
        let systemic = self.systemic();
        let mut tail = String::new();
        if !systemic.is_empty() {
            status = Status::Fail;
            let shown: Vec<String> = systemic
                .iter()
                .take(NAMED_PROVIDER_CONFIGS)
                .map(|(pc, failing, of)| format!("{} ({failing} of {of} failing)", show_pc(pc)))
                .collect();
            let more = systemic.len().saturating_sub(NAMED_PROVIDER_CONFIGS);
            tail.push_str(&format!(
                "; at least {} and more than {} of one ProviderConfig's {} fail: {}{}",
                rules.fail_min,
                rules.fail_share,
                rules.kind,
                shown.join(", "),
                if more > 0 {
                    format!(" and {more} more")
                } else {
                    String::new()
                }
            ));
        }
        let held = self.held();
        if held.saturating_mul(5) > rules.max_objects.saturating_mul(4) {
            status = status.max(Status::Warn);
            tail.push_str(&format!(
                "; {held} {} held, over 80% of max_objects ({}): raise it (and the containers' memory limit) before the watch fails",
                rules.kind, rules.max_objects
            ));
        }
        let detail = format!("{summary}{detail_names}{tail}");
        summary.push_str(&text_names);
        summary.push_str(&tail);
        let mut item = Observation::new(rules.kind.clone(), status, summary, now.wall)
            .detail(detail)
            .counts(StateCounts::from(counts))
            .crossplane(CrossplaneCounts {
                gvk: rules.gvk.clone(),
                exists: self.records.len() as u64,
                ready: c.ready_true,
                synced: c.synced_true,
            });
        if !systemic.is_empty() {
            item = item.with_fact(Fact::FailsWithin(
                systemic.into_iter().map(|(pc, _, _)| pc).collect(),
            ));
        }
        (item, next)
    }

    /// The failing resources grouped by why they fail, the most frequent reason first: `: 98×
    /// Synced=False, ReconcileError: quota exceeded — pg-00000, pg-00001, pg-00002 and 95 more; pg-prod-7
    /// (Synced=False, ReconcileError: …)` (a reason of one resource reads as that resource with its words).
    /// In `detail`, more reasons and names, each name with its ProviderConfig.
    fn grouped(&self, detail: bool, now: Timestamp) -> String {
        let c = &self.counts;
        let (reasons, named) = if detail {
            let shown = c.by_frequency.len().clamp(1, REASONS_IN_DETAIL);
            (REASONS_IN_DETAIL, (NAMED_IN_DETAIL / shown).max(2))
        } else {
            (REASONS_IN_TEXT, NAMED_PER_REASON_IN_TEXT)
        };
        // Written into one buffer: this runs at every change of a kind with failing resources.
        let mut out = String::from(": ");
        let mut first_group = true;
        for (Reverse(n), reason) in c.by_frequency.iter().take(reasons) {
            let Some(members) = c.reasons.get(reason) else {
                continue;
            };
            if !std::mem::take(&mut first_group) {
                out.push_str("; ");
            }
            if *n != 1 {
                let _ = write!(out, "{n}× {reason} — ");
            }
            let mut shown = 0;
            for (name, r) in members
                .iter()
                .take(named)
                .filter_map(|name| Some((name, self.records.get(name)?)))
            {
                if shown > 0 {
                    out.push_str(", ");
                }
                shown += 1;
                out.push_str(name);
                match (*n, detail) {
                    (1, false) => {
                        out.push_str(" (");
                        self.why_into(&mut out, r, now);
                        out.push(')');
                    }
                    (1, true) => {
                        out.push_str(" (providerConfigRef ");
                        out.push_str(show_pc(&r.provider_config));
                        out.push_str("; ");
                        self.why_into(&mut out, r, now);
                        out.push(')');
                    }
                    (_, false) => {}
                    (_, true) => {
                        out.push_str(" (providerConfigRef ");
                        out.push_str(show_pc(&r.provider_config));
                        out.push(')');
                    }
                }
            }
            let more = n.saturating_sub(shown);
            if more > 0 {
                let _ = write!(out, " and {more} more");
            }
        }
        let left: usize = c
            .by_frequency
            .iter()
            .skip(reasons)
            .map(|(Reverse(n), _)| n)
            .sum();
        if left > 0 {
            let other = c.by_frequency.len() - reasons;
            if !first_group {
                out.push_str("; ");
            }
            let _ = write!(
                out,
                "and {left} more failing for {other} other reason{}",
                if other == 1 { "" } else { "s" }
            );
        }
        out
    }

    /// [`Self::why`], appended to `out`.
    fn why_into(&self, out: &mut String, r: &Record, now: Timestamp) {
        if r.timed_out {
            out.push_str(&self.why(r, now));
        } else {
            out.push_str(r.why.as_deref().unwrap_or(""));
        }
    }

    /// Why a failing resource fails: its conditions, or how long it has been creating or deleting.
    fn why(&self, r: &Record, now: Timestamp) -> String {
        let words = r.why.as_deref().unwrap_or("");
        let since = r
            .since
            .and_then(|s| Timestamp::from_second(s).ok())
            .unwrap_or(now);
        match (r.timed_out, r.state) {
            (true, State::Creating) => format!(
                "creating since {}, longer than create_timeout {} ({words})",
                human::timestamp(since),
                human::duration(self.rules.create_timeout)
            ),
            (true, State::Deleting) => format!(
                "deleting since {}, longer than delete_timeout {}: a finalizer that is never removed?",
                human::timestamp(since),
                human::duration(self.rules.delete_timeout)
            ),
            _ => words.to_string(),
        }
    }

    /// The ProviderConfigs whose failing resources pass both thresholds: (name, failing, of all judged),
    /// by name.
    fn systemic(&self) -> Vec<(Arc<str>, u64, u64)> {
        let rules = &self.rules;
        let mut out: Vec<(Arc<str>, u64, u64)> = self
            .counts
            .by_provider_config
            .iter()
            .filter_map(|(pc, n)| {
                let failing = n[State::Failing.index()];
                let all: u64 = n.iter().sum();
                (failing >= rules.fail_min && rules.fail_share.exceeded_by(failing, all))
                    .then(|| (pc.clone(), failing, all))
            })
            .collect();
        out.sort();
        out
    }
}

/// The group of a Backup or Restore naming the claim `name`: `NAMESPACE/NAME` with the claim's namespace,
/// `/NAME` without one (a resource made without a claim). A label value holds no `/`, so no two differ
/// only in where the namespace ends.
pub fn group_key(claim_namespace: Option<&str>, name: &str) -> String {
    format!("{}/{name}", claim_namespace.unwrap_or(""))
}

/// The order of a group's members, oldest first: by creation (whole seconds), then by name in [`natural`]
/// order, so that `backup-10` is newer than `backup-9` made in the same second.
fn older(a: &(i64, Arc<str>), b: &(i64, Arc<str>)) -> Ordering {
    a.0.cmp(&b.0).then_with(|| natural(&a.1, &b.1))
}

/// Names in natural order (`backup-9` before `backup-10`): runs of digits compare as numbers, other bytes as
/// bytes; names that are equal that way (`b-01`, `b-1`) compare by their bytes, so only equal names are equal.
pub fn natural(a: &str, b: &str) -> Ordering {
    let (mut x, mut y) = (a.as_bytes(), b.as_bytes());
    loop {
        match (x.first(), y.first()) {
            (None, None) => return a.cmp(b),
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(c), Some(d)) if c.is_ascii_digit() && d.is_ascii_digit() => {
                let (n, rest_x) = digits(x);
                let (m, rest_y) = digits(y);
                let by_value = n.len().cmp(&m.len()).then_with(|| n.cmp(m));
                if by_value != Ordering::Equal {
                    return by_value;
                }
                (x, y) = (rest_x, rest_y);
            }
            (Some(c), Some(d)) => {
                if c != d {
                    return c.cmp(d);
                }
                (x, y) = (&x[1..], &y[1..]);
            }
        }
    }
}

/// The leading run of digits of `s` without its leading zeros, and the rest.
fn digits(s: &[u8]) -> (&[u8], &[u8]) {
    let end = s
        .iter()
        .position(|c| !c.is_ascii_digit())
        .unwrap_or(s.len());
    let (run, rest) = s.split_at(end);
    let zeros = run.iter().take_while(|c| **c == b'0').count();
    (&run[zeros..], rest)
}

/// A ProviderConfig's name for messages (`(none)` for resources that name none).
fn show_pc(pc: &str) -> &str {
    if pc.is_empty() {
        "(none)"
    } else {
        pc
    }
}

impl Tally<Managed> for KindTally {
    fn apply(&mut self, event: Event<Managed>) {
        match event {
            Event::Init => self.relisting(),
            Event::InitApply(o) | Event::Apply(o) => self.upsert(o),
            Event::InitDone => self.listed(),
            Event::Delete(o) => {
                if let Some(name) = o.name() {
                    self.remove(name);
                }
            }
        }
    }

    fn len(&self) -> usize {
        self.held()
    }
}

impl JudgedTally<Managed> for KindTally {
    fn rejudge(&mut self, fresh: KindTally) {
        self.set_rules(Arc::unwrap_or_clone(fresh.rules));
    }

    fn observe(&mut self, _state: &WatchState, now: Moment) -> (Vec<Observation>, Option<Due>) {
        let (item, next) = self.item(now);
        (vec![item], next)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;
    use crate::checks::managed_resources::object::{Condition, Facts};
    use crate::checks::testing::{at, m};

    const T0: &str = "2026-12-01T12:00:00Z";

    fn rules(kind: &str) -> KindRules {
        let settings = crate::checks::managed_resources::ManagedResources::default();
        settings.rules(kind)
    }

    fn cond(status: &str, reason: &str, message: &str, since: &str) -> Option<Condition> {
        Some(Condition {
            status: status.into(),
            reason: reason.into(),
            message: message.into(),
            since: Some(at(since)),
        })
    }

    /// A resource of ProviderConfig `pc` in one of the table's situations.
    fn mr(name: &str, pc: &str, what: &str) -> Managed {
        let mut f = Facts {
            created: Some(at("2026-12-01T11:00:00Z")),
            provider_config: Some(pc.into()),
            ready: cond("True", "Available", "", "2026-12-01T11:05:00Z"),
            synced: cond("True", "ReconcileSuccess", "", "2026-12-01T11:00:01Z"),
            ..Facts::default()
        };
        match what {
            "ready" => {}
            "failing" => {
                f.synced = cond(
                    "False",
                    "ReconcileError",
                    "cannot provision: quota exceeded",
                    T0,
                )
            }
            "creating" => f.ready = cond("False", "Creating", "", "2026-12-01T11:50:00Z"),
            "deleting" => f.deleting = Some(at("2026-12-01T11:55:00Z")),
            "paused" => f.paused = true,
            other => panic!("no such situation {other}"),
        }
        Managed::new(name, f)
    }

    fn tally_of(kind: &str, objects: impl IntoIterator<Item = Managed>) -> KindTally {
        let mut t = KindTally::new(rules(kind));
        for o in objects {
            t.upsert(o);
        }
        t
    }

    fn item(t: &mut KindTally, now: &str) -> Observation {
        t.item(m(now)).0
    }

    fn count(o: &Observation, state: &str) -> u64 {
        o.counts
            .as_ref()
            .and_then(|c| c.iter().find(|(s, _)| *s == state).map(|(_, n)| *n))
            .expect("every state is counted")
    }

    #[test]
    fn the_message_counts_and_names_as_the_spec_words_it() {
        let mut objects = vec![mr("pg-prod-7", "pg", "failing")];
        objects.extend((0..412).map(|i| mr(&format!("pg-{i}"), "pg", "ready")));
        objects.extend((0..2).map(|i| mr(&format!("pg-new-{i}"), "pg", "creating")));
        let mut t = tally_of("serviceinstances", objects);
        let o = item(&mut t, T0);
        assert_eq!(o.status, Status::Warn, "1 of 415 is one tenant's fault");
        assert_eq!(
            o.message,
            "412 of 415 ready, 2 creating, 1 failing: pg-prod-7 (Synced=False, ReconcileError: cannot provision: quota exceeded)"
        );
        assert_eq!(
            o.detail.as_deref(),
            Some("412 of 415 ready, 2 creating, 1 failing: pg-prod-7 (providerConfigRef pg; Synced=False, ReconcileError: cannot provision: quota exceeded)")
        );
        assert_eq!(o.item, "serviceinstances");
        for (state, n) in [
            ("ready", 412),
            ("creating", 2),
            ("failing", 1),
            ("deleting", 0),
            ("paused", 0),
            ("superseded", 0),
        ] {
            assert_eq!(count(&o, state), n, "{state}");
        }
    }

    #[test]
    fn a_passing_kind_says_so_and_zero_resources_pass() {
        let mut t = tally_of(
            "serviceinstances",
            [mr("a", "pg", "ready"), mr("b", "pg", "paused")],
        );
        let o = item(&mut t, T0);
        assert_eq!(
            (o.status, o.message.as_str()),
            (Status::Pass, "1 of 2 ready, 1 paused")
        );
        assert_eq!(o.detail.as_deref(), Some("1 of 2 ready, 1 paused"));
        let mut empty = tally_of("backups", []);
        let o = item(&mut empty, T0);
        assert_eq!((o.status, o.message.as_str()), (Status::Pass, "no backups"));
        assert_eq!(
            o.detail.as_deref(),
            Some("no backups"),
            "shown in JSON and on the page"
        );
    }

    /// A failing resource of one fault with its reason when its reason is its own.
    fn failing_with(name: &str, pc: &str, message: &str) -> Managed {
        let mut o = mr(name, pc, "failing");
        o.facts.synced = cond("False", "ReconcileError", message, T0);
        o
    }

    #[test]
    fn failing_resources_are_grouped_by_reason_the_most_frequent_first() {
        let mut t = tally_of(
            "serviceinstances",
            (0..25).map(|i| mr(&format!("r-{i:02}"), "redis", "failing")),
        );
        let o = item(&mut t, T0);
        assert_eq!(
            o.message,
            "0 of 25 ready, 25 failing: 25× Synced=False, ReconcileError: cannot provision: quota exceeded — \
r-00, r-01, r-02 and 22 more; at least 3 and more than 10% of one ProviderConfig's serviceinstances fail: redis (25 of 25 failing)"
        );
        let detail = o.detail.expect("detail");
        assert_eq!(
            detail.matches("(providerConfigRef redis)").count(),
            NAMED_IN_DETAIL,
            "{detail}"
        );
        assert!(
            detail.contains("r-19 (providerConfigRef redis) and 5 more;"),
            "{detail}"
        );

        // Two faults among many: both visible in the one line, each counted once, with a few names.
        for i in 0..3 {
            t.upsert(failing_with(
                &format!("pg-{i}"),
                "pg",
                "create failed: plan postgresql-nano is unknown",
            ));
        }
        t.upsert(failing_with("pg-9", "pg", "connection refused"));
        let o = item(&mut t, T0);
        assert!(
            o.message.starts_with(
                "0 of 29 ready, 29 failing: 25× Synced=False, ReconcileError: cannot provision: quota exceeded — \
r-00, r-01, r-02 and 22 more; 3× Synced=False, ReconcileError: create failed: plan postgresql-nano is unknown — \
pg-0, pg-1, pg-2; pg-9 (Synced=False, ReconcileError: connection refused); at least"
            ),
            "{}",
            o.message
        );
        let detail = o.detail.expect("detail");
        assert!(
            detail.contains(
                "3× Synced=False, ReconcileError: create failed: plan postgresql-nano is unknown — \
pg-0 (providerConfigRef pg), pg-1 (providerConfigRef pg), pg-2 (providerConfigRef pg); \
pg-9 (providerConfigRef pg; Synced=False, ReconcileError: connection refused)"
            ),
            "{detail}"
        );

        // More reasons than the line shows: the rest are counted, not dropped.
        for i in 0..4 {
            t.upsert(failing_with(&format!("x-{i}"), "x", &format!("fault {i}")));
        }
        let o = item(&mut t, T0);
        assert!(
            o.message
                .contains("; and 4 more failing for 4 other reasons; at least"),
            "{}",
            o.message
        );
        // A group that shrinks to one resource reads as that resource again.
        for i in 0..2 {
            t.remove(&format!("pg-{i}"));
        }
        let o = item(&mut t, T0);
        assert!(
            o.message.contains(
                "; pg-2 (Synced=False, ReconcileError: create failed: plan postgresql-nano is unknown)"
            ),
            "{}",
            o.message
        );
    }

    /// 80 failing Redis instances beside 1 000 healthy PostgreSQL ones: 7 % of the kind, but every one of
    /// the Redis broker's: a systemic fault of one broker, so the kind fails.
    #[test]
    fn thresholds_hold_within_each_provider_config() {
        let mut objects: Vec<Managed> = (0..1000)
            .map(|i| mr(&format!("pg-{i}"), "postgresql-broker", "ready"))
            .collect();
        objects.extend((0..80).map(|i| mr(&format!("redis-{i}"), "redis-broker", "failing")));
        let mut t = tally_of("serviceinstances", objects);
        let o = item(&mut t, T0);
        assert_eq!(o.status, Status::Fail, "{}", o.message);
        assert!(
            o.message.contains("fail: redis-broker (80 of 80 failing)"),
            "{}",
            o.message
        );
        // For the root-cause rules: the kind fails by the Redis broker's resources alone.
        assert_eq!(
            o.fact,
            Some(Fact::FailsWithin(vec![Arc::from("redis-broker")].into()))
        );

        // One tenant's bad parameters: below fail_min, or not more than fail_share of its ProviderConfig.
        let cases = [
            (2, 0, Status::Warn),  // 2 of 2: fewer than fail_min
            (3, 0, Status::Fail),  // 3 of 3
            (3, 27, Status::Warn), // 3 of 30: exactly 10%, not more
            (4, 26, Status::Fail), // 4 of 30: more than 10%
        ];
        for (failing, ready, want) in cases {
            let mut objects: Vec<Managed> = (0..failing)
                .map(|i| mr(&format!("f-{i}"), "pc", "failing"))
                .collect();
            objects.extend((0..ready).map(|i| mr(&format!("r-{i}"), "pc", "ready")));
            let o = item(&mut tally_of("serviceinstances", objects), T0);
            assert_eq!(
                o.status, want,
                "{failing} failing beside {ready} ready: {}",
                o.message
            );
            assert_eq!(o.fact.is_some(), want == Status::Fail, "{}", o.message);
        }

        // At 29 %: 29 of 100 is not more (in floating point 0.29 × 100 is 28.999…), 30 is; said as written.
        let mut r = rules("serviceinstances");
        r.fail_share = Share::parse("29%").expect("a share");
        for (failing, want) in [(29, Status::Warn), (30, Status::Fail)] {
            let mut t = KindTally::new(r.clone());
            for i in 0..100 {
                let what = if i < failing { "failing" } else { "ready" };
                t.upsert(mr(&format!("o-{i}"), "pc", what));
            }
            let o = item(&mut t, T0);
            assert_eq!(o.status, want, "{failing} of 100: {}", o.message);
            assert_eq!(
                o.message
                    .contains("at least 3 and more than 29% of one ProviderConfig's"),
                want == Status::Fail,
                "{}",
                o.message
            );
        }
    }

    #[test]
    fn only_the_newest_backup_per_instance_and_restore_per_backup_is_judged() {
        let backup = |name: &str, instance: &str, created: &str, what: &str| {
            let mut o = mr(name, "backup-manager", what);
            o.facts.instance_name = Some(instance.into());
            o.facts.created = Some(at(created));
            o
        };
        let mut t = tally_of(
            "backups",
            [
                backup("a-1", "pg-a", "2026-11-29T00:00:00Z", "ready"),
                backup("a-2", "pg-a", "2026-11-30T00:00:00Z", "ready"),
                backup("a-3", "pg-a", "2026-12-01T00:00:00Z", "failing"),
                backup("b-1", "pg-b", "2026-11-30T00:00:00Z", "failing"),
                backup("b-2", "pg-b", "2026-12-01T00:00:00Z", "ready"),
            ],
        );
        let o = item(&mut t, T0);
        assert_eq!(
            o.message,
            "1 of 2 ready (3 superseded), 1 failing: a-3 (Synced=False, ReconcileError: cannot provision: quota exceeded)"
        );
        assert_eq!(count(&o, "superseded"), 3);
        // The newest failing backup deleted: the one before it is judged again.
        t.remove("a-3");
        let o = item(&mut t, T0);
        assert_eq!(
            (o.status, o.message.as_str()),
            (Status::Pass, "2 of 2 ready (2 superseded)")
        );
        // A newer one arrives, creating: it is the one judged now.
        t.upsert(backup("b-3", "pg-b", "2026-12-01T11:00:00Z", "creating"));
        assert_eq!(
            item(&mut t, T0).message,
            "1 of 2 ready (3 superseded), 1 creating"
        );
        // A backup moved to another instance leaves its old group.
        t.upsert(backup("b-3", "pg-c", "2026-12-01T11:00:00Z", "failing"));
        let o = item(&mut t, T0);
        assert!(
            o.message
                .starts_with("2 of 3 ready (2 superseded), 1 failing: b-3"),
            "{}",
            o.message
        );

        let restore = |name: &str, of: &str, created: &str, what: &str| {
            let mut o = mr(name, "backup-manager", what);
            o.facts.backup_name = Some(of.into());
            o.facts.instance_name = Some("ignored-for-restores".into());
            o.facts.created = Some(at(created));
            o
        };
        let mut t = tally_of(
            "restores",
            [
                restore("r-1", "a-1", "2026-11-30T00:00:00Z", "failing"),
                restore("r-2", "a-1", "2026-12-01T00:00:00Z", "ready"),
                restore("r-3", "a-2", "2026-12-01T00:00:00Z", "ready"),
            ],
        );
        assert_eq!(item(&mut t, T0).message, "2 of 2 ready (1 superseded)");
        // Instances and bindings are never superseded.
        let mut t = tally_of(
            "servicebindings",
            [
                restore("s-1", "x", "2026-11-30T00:00:00Z", "ready"),
                restore("s-2", "x", T0, "ready"),
            ],
        );
        assert_eq!(item(&mut t, T0).message, "2 of 2 ready");
    }

    /// `instanceName` and `backupName` name claims, in the claim's namespace: two tenants' claims called
    /// `daily` are two groups, and one's failing Restore is not superseded by the other's newer one.
    #[test]
    fn backups_and_restores_are_grouped_per_claim_namespace_and_name() {
        let restore = |name: &str, namespace: Option<&str>, created: &str, what: &str| {
            let mut o = mr(name, "backup-manager", what);
            o.facts.backup_name = Some("daily".into());
            o.facts.claim_namespace = namespace.map(str::to_string);
            o.facts.created = Some(at(created));
            o
        };
        let mut t = tally_of(
            "restores",
            [
                restore("daily-a", Some("team-a"), "2026-11-30T00:00:00Z", "failing"),
                restore("daily-b", Some("team-b"), "2026-12-01T00:00:00Z", "ready"),
                // No label: grouped by the name alone, apart from both tenants.
                restore("daily-x", None, "2026-12-01T01:00:00Z", "ready"),
                restore("daily-y", None, "2026-12-01T02:00:00Z", "ready"),
            ],
        );
        let o = item(&mut t, T0);
        assert!(
            o.message
                .starts_with("2 of 3 ready (1 superseded), 1 failing: daily-a (Synced=False"),
            "{}",
            o.message
        );
        // The same tenant's newer Restore of the same claim supersedes it.
        t.upsert(restore(
            "daily-a2",
            Some("team-a"),
            "2026-12-01T00:00:00Z",
            "ready",
        ));
        assert_eq!(item(&mut t, T0).message, "3 of 3 ready (2 superseded)");
        assert_eq!(group_key(Some("team-a"), "daily"), "team-a/daily");
        assert_eq!(group_key(None, "daily"), "/daily");
    }

    /// Creation times are whole seconds: within one, names decide in natural order.
    #[test]
    fn the_newest_of_one_second_is_the_highest_number_not_the_last_in_bytes() {
        let cases = [
            ("backup-9", "backup-10", Ordering::Less),
            ("backup-10", "backup-9", Ordering::Greater),
            ("backup-2", "backup-2", Ordering::Equal),
            ("backup-01", "backup-1", Ordering::Less),
            ("backup-1a", "backup-1b", Ordering::Less),
            ("b-9-x", "b-10", Ordering::Less),
            (
                "b-99999999999999999999999",
                "b-100000000000000000000000",
                Ordering::Less,
            ),
            ("b", "b-1", Ordering::Less),
            ("b-1", "b-a", Ordering::Less),
            ("pg-2026-12-01", "pg-2026-11-30", Ordering::Greater),
        ];
        for (a, b, want) in cases {
            assert_eq!(natural(a, b), want, "{a} vs {b}");
            assert_eq!(natural(b, a), want.reverse(), "{b} vs {a}");
        }
        let backup = |name: &str, what: &str| {
            let mut o = mr(name, "backup-manager", what);
            o.facts.instance_name = Some("pg".into());
            o
        };
        // Created in the same second as mr's: backup-10 is the newest, whichever arrives first.
        for order in [["backup-9", "backup-10"], ["backup-10", "backup-9"]] {
            let mut t = tally_of(
                "backups",
                order.map(|n| backup(n, if n == "backup-10" { "failing" } else { "ready" })),
            );
            let o = item(&mut t, T0);
            assert!(
                o.message
                    .starts_with("0 of 1 ready (1 superseded), 1 failing: backup-10 ("),
                "{order:?}: {}",
                o.message
            );
        }
    }

    #[test]
    fn creating_and_deleting_too_long_fail_by_the_clock_and_paused_never_fails() {
        let mut t = tally_of(
            "serviceinstances",
            [
                mr("new", "pg", "creating"),  // Ready=False Creating since 11:50
                mr("gone", "pg", "deleting"), // deleting since 11:55
                mr("held", "pg", "paused"),
            ],
        );
        let (o, next) = t.item(m("2026-12-01T12:05:00Z"));
        assert_eq!(
            (o.status, o.message.as_str()),
            (
                Status::Pass,
                "0 of 3 ready, 1 creating, 1 deleting, 1 paused"
            )
        );
        assert_eq!(
            next,
            Some(Due::Wall(at("2026-12-01T12:10:00Z"))),
            "deleting since 11:55 + 15m"
        );
        let (o, next) = t.item(m("2026-12-01T12:10:00Z"));
        assert_eq!(o.status, Status::Warn);
        assert_eq!(
            o.message,
            "0 of 3 ready, 1 creating, 1 paused, 1 failing: gone (deleting since 2026-12-01T11:55:00Z, longer than delete_timeout 15m: a finalizer that is never removed?)"
        );
        assert_eq!(count(&o, "failing"), 1, "in the metric too");
        assert_eq!(
            next,
            Some(Due::Wall(at("2026-12-01T12:20:00Z"))),
            "creating since 11:50 + 30m"
        );
        let (o, next) = t.item(m("2026-12-01T13:00:00Z"));
        assert!(o.message.contains("new (creating since 2026-12-01T11:50:00Z, longer than create_timeout 30m (Ready=False, Creating))"), "{}", o.message);
        assert_eq!(count(&o, "failing"), 2);
        assert_eq!(next, None);
        // It changes (ready at last): judged afresh.
        t.upsert(mr("new", "pg", "ready"));
        assert_eq!(count(&item(&mut t, "2026-12-01T13:00:00Z"), "failing"), 1);

        // Timeouts per kind.
        let mut settings = crate::checks::managed_resources::ManagedResources::default();
        settings.create_timeouts.insert(
            "backups".into(),
            crate::checks::managed_resources::Timeout(Duration::from_secs(7200)),
        );
        let mut t = KindTally::new(settings.rules("backups"));
        t.upsert(mr("slow", "pg", "creating"));
        assert_eq!(t.item(m("2026-12-01T13:00:00Z")).0.status, Status::Pass);
        assert_eq!(t.item(m("2026-12-01T13:50:00Z")).0.status, Status::Warn);
        assert_eq!(
            settings.rules("serviceinstances").create_timeout,
            Duration::from_secs(1800)
        );
    }

    #[test]
    fn ignored_objects_are_left_out() {
        let settings = crate::checks::managed_resources::ManagedResources {
            ignore: vec!["test-*".into()],
            ..Default::default()
        };
        let mut t = KindTally::new(settings.rules("serviceinstances"));
        t.upsert(mr("test-1", "pg", "failing"));
        t.upsert(mr("prod-1", "pg", "ready"));
        assert_eq!(
            t.held(),
            2,
            "held (a changed ignore re-judges it), not judged"
        );
        assert_eq!(item(&mut t, T0).message, "1 of 1 ready");
        t.remove("test-1");
        assert_eq!(t.held(), 1);
        assert_eq!(item(&mut t, T0).message, "1 of 1 ready");
    }

    /// New rules judge what is held, as a tally built from scratch under them would: an `ignore` taken
    /// away or added, a threshold, a timeout.
    #[test]
    fn new_rules_rejudge_what_is_held_as_a_tally_from_scratch_would() {
        let objects = || {
            [
                mr("test-1", "pg", "failing"),
                mr("test-2", "pg", "failing"),
                mr("prod-1", "pg", "failing"),
                mr("prod-2", "pg", "ready"),
                mr("prod-3", "pg", "creating"),
            ]
        };
        let settings = |ignore: &[&str], fail_min: u64, create: u64| {
            crate::checks::managed_resources::ManagedResources {
                ignore: ignore.iter().map(|s| s.to_string()).collect(),
                fail_min,
                create_timeout: Duration::from_secs(create),
                ..Default::default()
            }
            .rules("serviceinstances")
        };
        let mut live = KindTally::new(settings(&["test-*"], 3, 3600));
        for o in objects() {
            live.upsert(o);
        }
        let late = "2026-12-01T12:10:00Z";
        for rules in [
            settings(&[], 3, 3600),
            settings(&["prod-*"], 1, 3600),
            settings(&["test-*"], 1, 60),
            settings(&["test-*"], 3, 3600),
        ] {
            JudgedTally::rejudge(&mut live, KindTally::new(rules.clone()));
            let mut fresh = KindTally::new(rules);
            for o in objects() {
                fresh.upsert(o);
            }
            let (a, b) = (item(&mut live, late), item(&mut fresh, late));
            assert_eq!((a.status, &a.message), (b.status, &b.message));
            assert_eq!(live.held(), 5);
        }
    }

    #[test]
    fn a_kind_past_80_percent_of_max_objects_warns() {
        let mut r = rules("serviceinstances");
        r.max_objects = 10;
        let mut t = KindTally::new(r);
        for i in 0..8 {
            t.upsert(mr(&format!("pg-{i}"), "pg", "ready"));
        }
        assert_eq!(item(&mut t, T0).status, Status::Pass, "80% exactly");
        t.upsert(mr("pg-8", "pg", "ready"));
        let o = item(&mut t, T0);
        assert_eq!(o.status, Status::Warn);
        assert_eq!(
            o.message,
            "9 of 9 ready; 9 serviceinstances held, over 80% of max_objects (10): raise it (and the containers' memory limit) before the watch fails"
        );
    }

    #[test]
    fn a_relist_forgets_what_it_did_not_list() {
        let mut t = KindTally::new(rules("serviceinstances"));
        let apply = |t: &mut KindTally, e| Tally::apply(t, e);
        apply(&mut t, Event::Init);
        for name in ["a", "b", "c"] {
            apply(&mut t, Event::InitApply(mr(name, "pg", "failing")));
        }
        apply(&mut t, Event::InitDone);
        apply(&mut t, Event::Delete(mr("c", "pg", "failing")));
        assert_eq!(Tally::len(&t), 2);
        apply(&mut t, Event::Init);
        apply(&mut t, Event::InitApply(mr("b", "pg", "ready")));
        apply(&mut t, Event::InitDone);
        assert_eq!(Tally::len(&t), 1);
        assert_eq!(item(&mut t, T0).message, "1 of 1 ready");
    }

    /// What a stored resource costs, measured: the record itself, its name, its map entry. Whatever the
    /// object's size on the wire, this is what stays.
    /// Crossplane counts every resource held (superseded ones too) and its conditions as they are: a
    /// resource `Ready=True` but `Synced=False` is ready and not synced there, and failing here.
    #[test]
    fn crossplane_counts_every_resource_and_its_conditions_as_they_are() {
        let mut backups = mr("b-old", "pc", "ready");
        backups.facts.instance_name = Some("pg".into());
        let mut newer = mr("b-new", "pc", "failing");
        newer.facts.instance_name = Some("pg".into());
        newer.facts.created = Some(at("2026-12-01T11:30:00Z"));
        let mut t = tally_of(
            "backups",
            [
                backups,
                newer,
                mr("a", "pc", "ready"),
                mr("b", "pc", "creating"),
                mr("c", "pc", "deleting"),
                mr("d", "pc", "paused"),
            ],
        );
        let o = item(&mut t, "2026-12-01T12:00:00Z");
        assert_eq!(
            (
                count(&o, "ready"),
                count(&o, "failing"),
                count(&o, "superseded")
            ),
            (1, 1, 1)
        );
        assert_eq!(
            o.crossplane,
            Some(CrossplaneCounts {
                gvk: "dataservices.anynines.com/v1, Kind=Backup".into(),
                exists: 6,
                // All but the creating one; the failing one among them.
                ready: 5,
                synced: 5,
            })
        );
        t.remove("b-new");
        let o = item(&mut t, "2026-12-01T12:00:00Z");
        assert_eq!(
            o.crossplane.map(|c| (c.exists, c.ready, c.synced)),
            Some((5, 4, 5))
        );
    }

    #[test]
    fn a_record_is_small() {
        assert!(
            std::mem::size_of::<Record>() <= 96,
            "{}",
            std::mem::size_of::<Record>()
        );
    }

    // The incremental tally against the table applied to every resource from scratch, for random histories
    // of adds, changes, deletes, relists and time passing.

    #[derive(Debug, Clone)]
    enum Op {
        Upsert {
            name: u8,
            pc: u8,
            group: u8,
            created: u8,
            what: u8,
            namespace: u8,
        },
        Delete(u8),
        Relist(Vec<u8>),
        Ignore(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (0..20u8, 0..3u8, 0..4u8, 0..5u8, 0..5u8, 0..3u8).prop_map(|(name, pc, group, created, what, namespace)| Op::Upsert { name, pc, group, created, what, namespace }),
            2 => (0..20u8).prop_map(Op::Delete),
            1 => proptest::collection::vec(0..20u8, 0..10).prop_map(Op::Relist),
            1 => (0..20u8).prop_map(Op::Ignore),
        ]
    }

    /// Namespace 0: no claim-namespace label.
    fn object(name: u8, pc: u8, group: u8, created: u8, what: u8, namespace: u8) -> Managed {
        let whats = ["ready", "failing", "creating", "deleting", "paused"];
        let mut o = mr(
            &format!("o-{name}"),
            &format!("pc-{pc}"),
            whats[what as usize % 5],
        );
        o.facts.instance_name = Some(format!("i-{group}"));
        o.facts.claim_namespace = (namespace > 0).then(|| format!("ns-{namespace}"));
        o.facts.created =
            Some(at("2026-12-01T00:00:00Z") + jiff::SignedDuration::from_hours(created as i64));
        o
    }

    /// Counts by state (superseded last) and the failing names, from every resource at once.
    fn from_scratch(
        objects: &BTreeMap<String, Managed>,
        r: &KindRules,
        now: Timestamp,
    ) -> (Vec<u64>, Vec<String>) {
        let group = |o: &Managed| {
            (
                o.facts.claim_namespace.clone(),
                o.facts.instance_name.clone().unwrap_or_default(),
            )
        };
        let mut newest: BTreeMap<_, (i64, Arc<str>)> = BTreeMap::new();
        for (name, o) in objects {
            let key = (
                o.facts.created.map_or(0, |t| t.as_second()),
                Arc::from(name.as_str()),
            );
            if newest
                .get(&group(o))
                .is_none_or(|n| older(n, &key) == Ordering::Less)
            {
                newest.insert(group(o), key);
            }
        }
        let mut counts = vec![0u64; 6];
        let mut failing = Vec::new();
        for (name, o) in objects {
            if *newest[&group(o)].1 != **name {
                counts[5] += 1;
                continue;
            }
            let j = judge(&o.facts);
            let timeout = match j.state {
                State::Creating => Some(r.create_timeout),
                State::Deleting => Some(r.delete_timeout),
                _ => None,
            };
            let late = timeout.zip(j.since).is_some_and(|(t, since)| {
                since.as_second() + t.as_secs() as i64 <= now.as_second()
            });
            let state = if late { State::Failing } else { j.state };
            counts[state.index()] += 1;
            if state == State::Failing {
                failing.push(name.clone());
            }
        }
        (counts, failing)
    }

    proptest! {
        #[test]
        fn the_tally_kept_event_by_event_equals_the_table_applied_from_scratch(ops in proptest::collection::vec(op(), 1..60), minutes in 0..120i64) {
            let r = rules("backups");
            let mut t = KindTally::new(r.clone());
            let mut truth: BTreeMap<String, Managed> = BTreeMap::new();
            let mut ignored = std::collections::BTreeSet::new();
            for op in ops {
                match op {
                    Op::Upsert { name, pc, group, created, what, namespace } => {
                        let o = object(name, pc, group, created, what, namespace);
                        if !ignored.contains(&name) {
                            truth.insert(format!("o-{name}"), o.clone());
                        }
                        let mut o = o;
                        if ignored.contains(&name) {
                            // Stands for an object the rules leave out: a name that never arrives.
                            continue;
                        }
                        Tally::apply(&mut t, Event::Apply(std::mem::take(&mut o)));
                    }
                    Op::Delete(name) => {
                        truth.remove(&format!("o-{name}"));
                        Tally::apply(&mut t, Event::Delete(Managed::new(&format!("o-{name}"), Facts::default())));
                    }
                    Op::Relist(keep) => {
                        truth.retain(|name, _| keep.iter().any(|k| *name == format!("o-{k}")));
                        Tally::apply(&mut t, Event::Init);
                        for o in truth.values() {
                            Tally::apply(&mut t, Event::InitApply(o.clone()));
                        }
                        Tally::apply(&mut t, Event::InitDone);
                    }
                    Op::Ignore(name) => {
                        ignored.insert(name);
                        truth.remove(&format!("o-{name}"));
                        Tally::apply(&mut t, Event::Delete(Managed::new(&format!("o-{name}"), Facts::default())));
                    }
                }
                // Time passes between events too: expiries must survive later changes.
                let _ = t.item(m("2026-12-01T11:30:00Z"));
            }
            let now = at("2026-12-01T12:00:00Z") + jiff::SignedDuration::from_mins(minutes);
            let o = t.item(crate::clock::Moment::from_wall(now)).0;
            let counts: Vec<u64> = o.counts.as_ref().expect("counts").iter().map(|(_, n)| *n).collect();
            let (want, failing) = from_scratch(&truth, &r, now);
            prop_assert_eq!(counts, want);
            let is_true = |c: &Option<Condition>| c.as_ref().is_some_and(|c| c.is("True"));
            let crossplane = o.crossplane.as_ref().expect("Crossplane's counts");
            prop_assert_eq!(
                (crossplane.exists, crossplane.ready, crossplane.synced),
                (
                    truth.len() as u64,
                    truth.values().filter(|o| is_true(&o.facts.ready)).count() as u64,
                    truth.values().filter(|o| is_true(&o.facts.synced)).count() as u64,
                )
            );
            prop_assert_eq!(t.counts.failing.iter().map(|n| n.to_string()).collect::<Vec<_>>(), failing);
            prop_assert_eq!(t.held(), truth.len());
            // The groups by reason are the failing ones, each under its own reason, counted by size.
            let mut reasons: BTreeMap<String, std::collections::BTreeSet<String>> = BTreeMap::new();
            for name in &t.counts.failing {
                let r = &t.records[name];
                reasons.entry(reason(t.rules(), r).into_owned()).or_default().insert(name.to_string());
            }
            let kept: BTreeMap<String, std::collections::BTreeSet<String>> = t
                .counts
                .reasons
                .iter()
                .map(|(k, v)| (k.to_string(), v.iter().map(|n| n.to_string()).collect()))
                .collect();
            prop_assert_eq!(&kept, &reasons);
            let sizes: Vec<(usize, String)> = t.counts.by_frequency.iter().map(|(Reverse(n), k)| (*n, k.to_string())).collect();
            let mut want: Vec<(usize, String)> = reasons.iter().map(|(k, v)| (v.len(), k.clone())).collect();
            want.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
            prop_assert_eq!(sizes, want);
        }
    }
}
