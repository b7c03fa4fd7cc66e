//! History: each item's and each endpoint's status transitions, recorded by the engine after every
//! evaluation (never per request) so that `/history` and the status page's timelines show the past, not just
//! the present. Bounded in age and in count whatever the churn: an item flapping all day, or item names that
//! change on every rollout or poll, must not grow memory without end. Times are [`Moment`]s: ages and the
//! bounds run on the monotonic clock, and the wall times shown are derived from the moment of rendering, so
//! `since`, every transition and `now` stay in order even when the wall clock steps back.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard};
use std::time::Duration;

use crate::clock::{Instant, Moment};
use crate::verdict::report::{Endpoint, Report, Status};

/// How far back history reaches.
pub const MAX_AGE: Duration = Duration::from_secs(24 * 3600);
/// How many transitions are kept in all, over every item and endpoint.
pub const MAX_TRANSITIONS: usize = 10_000;

/// One change of status.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    pub time: Moment,
    pub status: Status,
    pub message: String,
}

/// Transitions per item (by `CHECK/ITEM`) and per endpoint, oldest first.
#[derive(Debug, Clone)]
pub struct History {
    started: Moment,
    items: BTreeMap<String, VecDeque<Transition>>,
    endpoints: [VecDeque<Transition>; 2],
    total: usize,
    max_age: Duration,
    max_total: usize,
    /// When the count bound last dropped transitions that the age bound would still have kept.
    truncated_at: Option<Instant>,
}

impl History {
    pub fn new(started: Moment) -> History {
        History::bounded(started, MAX_AGE, MAX_TRANSITIONS)
    }

    pub fn bounded(started: Moment, max_age: Duration, max_total: usize) -> History {
        History {
            started,
            items: BTreeMap::new(),
            endpoints: Default::default(),
            total: 0,
            max_age,
            max_total,
            truncated_at: None,
        }
    }

    /// Appends every status that differs from the last one recorded, then drops what is out of bounds.
    pub fn record(&mut self, report: &Report) {
        let now = report.evaluated;
        for item in &report.items {
            let series = match self.items.get_mut(item.name.as_str()) {
                Some(series) => series,
                None => self.items.entry(item.name.to_string()).or_default(),
            };
            self.total += push(series, now, item.status, &item.message);
        }
        for e in Endpoint::ALL {
            let r = report.endpoint(e);
            let failing: Vec<&str> = r
                .items
                .iter()
                .filter(|c| c.status != Status::Pass)
                .map(|c| c.name.as_str())
                .collect();
            let message = if failing.is_empty() {
                String::new()
            } else {
                format!("{}: {}", r.status(), failing.join(", "))
            };
            self.total += push(&mut self.endpoints[e.index()], now, r.status(), &message);
        }
        let present: HashSet<&str> = report.items.iter().map(|i| i.name.as_str()).collect();
        self.trim(now, &present);
    }

    /// The instant `max_age` before `now`, if the monotonic clock reaches back that far.
    fn cutoff(&self, now: Moment) -> Option<Instant> {
        now.mono.checked_sub(self.max_age)
    }

    /// Drops what ended before `now - max_age`, clamps what began before it and still holds, and forgets
    /// items gone for longer; then keeps at most `max_total` transitions: first the series of items that are
    /// gone are dropped whole, oldest first; then the oldest transitions anywhere, never a series' last one
    /// (its present state); only when the items present at once outnumber the bound, the series whose present
    /// state is oldest.
    fn trim(&mut self, now: Moment, present: &HashSet<&str>) {
        if let Some(cutoff) = self.cutoff(now) {
            let mut dropped = 0;
            for series in self.items.values_mut().chain(self.endpoints.iter_mut()) {
                while series.len() > 1 && series[1].time.mono <= cutoff {
                    series.pop_front();
                    dropped += 1;
                }
                if let Some(first) = series.front_mut().filter(|f| f.time.mono < cutoff) {
                    first.time = now.at(cutoff);
                }
            }
            self.items.retain(|name, series| {
                let keep = present.contains(name.as_str())
                    || series.back().is_some_and(|t| t.time.mono > cutoff);
                if !keep {
                    dropped += series.len();
                }
                keep
            });
            self.total -= dropped;
        }
        if self.total <= self.max_total {
            return;
        }
        self.truncated_at = Some(now.mono);
        self.drop_whole(now, |name| !present.contains(name));
        while self.total > self.max_total {
            let oldest = self
                .items
                .values_mut()
                .chain(self.endpoints.iter_mut())
                .filter(|s| s.len() > 1)
                .min_by_key(|s| s[0].time.mono);
            match oldest {
                Some(series) => {
                    series.pop_front();
                    self.total -= 1;
                }
                None => break,
            }
        }
        self.drop_whole(now, |_| true);
    }

    /// Drops whole the series of the items `which` picks, the one whose last transition is oldest first,
    /// until at most `max_total` transitions are left.
    fn drop_whole(&mut self, now: Moment, which: impl Fn(&str) -> bool) {
        let mut picked: Vec<(Instant, String)> = self
            .items
            .iter()
            .filter(|(name, _)| which(name))
            .map(|(name, s)| (s.back().map_or(now.mono, |t| t.time.mono), name.clone()))
            .collect();
        picked.sort();
        for (_, name) in picked {
            if self.total <= self.max_total {
                return;
            }
            if let Some(series) = self.items.remove(&name) {
                self.total -= series.len();
            }
        }
    }

    /// Where the timelines begin: the start of the process, or the oldest time still kept.
    pub fn since(&self, now: Moment) -> Moment {
        match self.cutoff(now) {
            Some(cutoff) if cutoff > self.started.mono => now.at(cutoff),
            _ => self.started,
        }
    }

    /// Whether the count bound dropped transitions that would otherwise still be shown (within `max_age`
    /// of `now`): the history is then incomplete.
    pub fn truncated(&self, now: Moment) -> bool {
        self.truncated_at
            .is_some_and(|at| self.cutoff(now).is_none_or(|cutoff| at > cutoff))
    }

    pub fn items(&self) -> &BTreeMap<String, VecDeque<Transition>> {
        &self.items
    }

    pub fn endpoint(&self, e: Endpoint) -> &VecDeque<Transition> {
        &self.endpoints[e.index()]
    }

    /// How many transitions are kept.
    pub fn len(&self) -> usize {
        self.total
    }

    pub fn is_empty(&self) -> bool {
        self.total == 0
    }
}

/// Appends `status` unless it is the series' last one; returns how many were added.
fn push(series: &mut VecDeque<Transition>, time: Moment, status: Status, message: &str) -> usize {
    if series.back().is_some_and(|t| t.status == status) {
        return 0;
    }
    series.push_back(Transition {
        time,
        status,
        message: message.to_string(),
    });
    1
}

/// Each status's share of the time from `since` to `now`, in percent; time before the first transition
/// counts as `None` (not observed yet).
pub fn shares(
    series: &VecDeque<Transition>,
    since: Moment,
    now: Moment,
) -> Vec<(Option<Status>, f64)> {
    let total = now.since(since).as_secs_f64();
    let mut out: Vec<(Option<Status>, f64)> = Vec::new();
    if total <= 0.0 {
        return out;
    }
    for (status, from, to) in segments(series, since, now) {
        let share = to.since(from).as_secs_f64() / total * 100.0;
        match out.iter_mut().find(|(s, _)| *s == status) {
            Some((_, sum)) => *sum += share,
            None => out.push((status, share)),
        }
    }
    out
}

/// The series as consecutive spans `(status, from, to)` covering `since..now`, in order on the monotonic
/// clock, each wall time as `now` names it.
pub fn segments(
    series: &VecDeque<Transition>,
    since: Moment,
    now: Moment,
) -> Vec<(Option<Status>, Moment, Moment)> {
    let mut out = Vec::new();
    let mut at = now.at(since.mono);
    let mut status = None;
    for t in series {
        let time = now.at(t.time.mono.max(since.mono).min(now.mono));
        if time.mono > at.mono {
            out.push((status, at, time));
            at = time;
        }
        status = Some(t.status);
    }
    if now.mono > at.mono {
        out.push((status, at, now));
    }
    out
}

/// The engine's history, read by the server. Writers hold the lock only to append.
#[derive(Debug, Clone)]
pub struct Shared(Arc<RwLock<History>>);

impl Default for Shared {
    fn default() -> Self {
        Shared::new(History::new(Moment::now()))
    }
}

impl Shared {
    pub fn new(history: History) -> Shared {
        Shared(Arc::new(RwLock::new(history)))
    }

    pub fn record(&self, report: &Report) {
        self.0
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .record(report);
    }

    pub fn read(&self) -> RwLockReadGuard<'_, History> {
        self.0.read().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::verdict::report::{EndpointReport, Item, ItemName};

    pub(crate) fn at(s: i64) -> Moment {
        Moment::from_wall(jiff::Timestamp::from_second(1_800_000_000 + s).expect("time"))
    }

    /// A report at `s` seconds whose items (of the check `pcs`) have these statuses.
    pub(crate) fn report(s: i64, items: &[(&str, Status)]) -> Report {
        let endpoint = |endpoint| EndpointReport {
            endpoint,
            items: Vec::new(),
        };
        Report {
            evaluated: at(s),
            items: items
                .iter()
                .map(|(name, status)| Item {
                    check_type: "provider-config",
                    name: ItemName::new("pcs", name),
                    status: *status,
                    message: format!("{name} is {status}"),
                    observed: at(s).wall,
                    since: at(s).wall,
                    detail: None,
                    counts: None,
                    crossplane: None,
                    cause: None,
                })
                .collect(),
            healthz: endpoint(Endpoint::Healthz),
            readyz: endpoint(Endpoint::Readyz),
            backend: None,
            operating: Default::default(),
            causes: Default::default(),
        }
    }

    fn flip(i: i64) -> Status {
        if i % 2 == 0 {
            Status::Pass
        } else {
            Status::Fail
        }
    }

    #[test]
    fn only_changes_are_recorded() {
        let mut h = History::new(at(0));
        h.record(&report(0, &[("a", Status::Pass)]));
        h.record(&report(1, &[("a", Status::Pass)]));
        h.record(&report(2, &[("a", Status::Fail)]));
        let a: Vec<_> = h.items()["pcs/a"]
            .iter()
            .map(|t| (t.time, t.status))
            .collect();
        assert_eq!(a, [(at(0), Status::Pass), (at(2), Status::Fail)]);
        // Both endpoints count nothing here: one `pass` each.
        assert_eq!(h.len(), 4);
    }

    #[test]
    fn the_count_bound_drops_the_oldest_transitions_anywhere() {
        let mut h = History::bounded(at(0), MAX_AGE, 100);
        for i in 0..1000 {
            h.record(&report(
                i,
                &[("a", flip(i)), ("b", flip(i + 1)), ("steady", Status::Pass)],
            ));
        }
        assert_eq!(h.len(), 100);
        // The oldest of all is a present state: kept, as it was.
        let steady: Vec<_> = h.items()["pcs/steady"].iter().map(|t| t.time).collect();
        assert_eq!(steady, [at(0)]);
        let oldest = |n: &str| h.items()[n][0].time;
        // Both series lost their oldest first; the endpoints keep their one (present) state.
        assert!(oldest("pcs/a") >= at(951) && oldest("pcs/b") >= at(951));
        assert_eq!(h.endpoint(Endpoint::Readyz).len(), 1);
        assert_eq!(h.items()["pcs/a"].back().map(|t| t.time), Some(at(999)));
    }

    #[test]
    fn the_age_bound_drops_what_ended_a_day_ago_and_keeps_the_state_then() {
        let mut h = History::new(at(0));
        // One transition an hour for two days.
        for i in 0..48 {
            h.record(&report(i * 3600, &[("a", flip(i))]));
        }
        let now = at(47 * 3600);
        let a = &h.items()["pcs/a"];
        let cutoff = at(23 * 3600);
        assert!(a.iter().all(|t| t.time >= cutoff), "{a:?}");
        // The state at the cutoff is kept, clamped to it: the timeline starts known.
        assert_eq!((a[0].time, a[0].status), (cutoff, flip(23)));
        assert_eq!(a.len(), 25);
        assert_eq!(h.since(now), cutoff);
        let shares = shares(a, h.since(now), now);
        let pass = shares.iter().find(|(s, _)| *s == Some(Status::Pass));
        assert!(
            pass.is_some_and(|(_, p)| (p - 50.0).abs() < 0.01),
            "{shares:?}"
        );
    }

    #[test]
    fn an_item_gone_for_a_day_is_forgotten() {
        let mut h = History::new(at(0));
        h.record(&report(
            0,
            &[("gone", Status::Fail), ("stays", Status::Pass)],
        ));
        h.record(&report(3600, &[("stays", Status::Pass)]));
        assert!(h.items().contains_key("pcs/gone"));
        h.record(&report(25 * 3600, &[("stays", Status::Pass)]));
        assert_eq!(h.items().keys().collect::<Vec<_>>(), ["pcs/stays"]);
        assert_eq!(h.len(), 3);
    }

    /// Item names that change on every poll (pod names on each rollout, a backend whose keys change) keep
    /// the history within its bound: the series of items that are gone go first, oldest first, each whole;
    /// the present items keep their state; and the history says it was truncated.
    #[test]
    fn item_name_churn_stays_within_the_bound_and_says_it_was_truncated() {
        let mut h = History::bounded(at(0), MAX_AGE, 1000);
        let mut names: Vec<String> = Vec::new();
        for poll in 0..100 {
            names = (0..200).map(|k| format!("key-{poll}-{k}")).collect();
            let mut items: Vec<(&str, Status)> =
                names.iter().map(|n| (n.as_str(), flip(poll))).collect();
            items.push(("steady", Status::Pass));
            h.record(&report(poll, &items));
            assert!(h.len() <= 1000, "{} transitions after poll {poll}", h.len());
            // 200 per poll, plus steady and the two endpoints: past 1000 at the fifth poll.
            assert_eq!(h.truncated(at(poll)), poll >= 4, "poll {poll}");
        }
        for name in names
            .iter()
            .map(|n| format!("pcs/{n}"))
            .chain(["pcs/steady".to_string()])
        {
            assert_eq!(
                h.items()[&name].len(),
                1,
                "{name}: a present item keeps its state"
            );
        }
        assert_eq!(h.items()["pcs/steady"][0].time, at(0));
        // What is left of the gone ones is the newest of them: 797 = 1000 - 200 present - steady - endpoints.
        let polls: Vec<u64> = h
            .items()
            .keys()
            .filter_map(|n| n.strip_prefix("pcs/key-")?.split('-').next()?.parse().ok())
            .filter(|poll| *poll < 99)
            .collect();
        assert_eq!(polls.len(), 797);
        assert_eq!(polls.iter().filter(|p| **p >= 96).count(), 600);
        assert!(polls.iter().all(|p| *p >= 95), "only the oldest went");
        assert!(h.truncated(at(99)));
        // A day after the last drop the window holds nothing it lost.
        assert!(!h.truncated(at(99 + 24 * 3600 + 1)));
    }

    /// Should more items be present at once than the bound allows, the bound still holds.
    #[test]
    fn the_bound_holds_even_when_more_items_are_present_than_it_allows() {
        let mut h = History::bounded(at(0), MAX_AGE, 100);
        let names: Vec<String> = (0..150).map(|k| format!("key-{k}")).collect();
        let items: Vec<(&str, Status)> = names.iter().map(|n| (n.as_str(), Status::Pass)).collect();
        h.record(&report(0, &items));
        assert_eq!(h.len(), 100);
        assert!(h.truncated(at(0)));
        assert_eq!(
            h.endpoint(Endpoint::Readyz).len(),
            1,
            "the endpoints keep theirs"
        );
    }

    #[test]
    fn time_before_the_first_transition_is_not_observed() {
        let series: VecDeque<Transition> = [Transition {
            time: at(25),
            status: Status::Fail,
            message: String::new(),
        }]
        .into();
        assert_eq!(
            segments(&series, at(0), at(100)),
            [(None, at(0), at(25)), (Some(Status::Fail), at(25), at(100))]
        );
        assert_eq!(
            shares(&series, at(0), at(100)),
            [(None, 25.0), (Some(Status::Fail), 75.0)]
        );
    }
}
