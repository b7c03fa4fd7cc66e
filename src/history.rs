//! History: each item's and each endpoint's status transitions, recorded by the engine after every
//! evaluation (never per request) so that `/history` and the status page's timelines show the past, not just
//! the present. Bounded in age and in count — an item flapping all day must not grow memory without end.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard};
use std::time::Duration;

use jiff::Timestamp;

use crate::report::{Endpoint, Report, Status};

/// How far back history reaches.
pub const MAX_AGE: Duration = Duration::from_secs(24 * 3600);
/// How many transitions are kept in all, over every item and endpoint.
pub const MAX_TRANSITIONS: usize = 10_000;

/// One change of status.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    pub time: Timestamp,
    pub status: Status,
    pub message: String,
}

/// Transitions per item (by `CHECK/ITEM`) and per endpoint, oldest first.
#[derive(Debug, Clone)]
pub struct History {
    started: Timestamp,
    items: BTreeMap<String, VecDeque<Transition>>,
    endpoints: [VecDeque<Transition>; 2],
    total: usize,
    max_age: Duration,
    max_total: usize,
}

impl History {
    pub fn new(started: Timestamp) -> History {
        History::bounded(started, MAX_AGE, MAX_TRANSITIONS)
    }

    pub fn bounded(started: Timestamp, max_age: Duration, max_total: usize) -> History {
        History {
            started,
            items: BTreeMap::new(),
            endpoints: Default::default(),
            total: 0,
            max_age,
            max_total,
        }
    }

    /// Appends every status that differs from the last one recorded, then drops what is out of bounds.
    pub fn record(&mut self, report: &Report) {
        let now = report.evaluated;
        for item in &report.items {
            let series = self.items.entry(item.name.to_string()).or_default();
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
        let present: std::collections::HashSet<&str> =
            report.items.iter().map(|i| i.name.as_str()).collect();
        self.trim(now, &present);
    }

    /// Drops what ended before `now - max_age`, clamps what began before it and still holds, forgets items
    /// gone for longer, then drops the oldest transitions anywhere until at most `max_total` are left — never
    /// a series' last one, which is its present state.
    fn trim(&mut self, now: Timestamp, present: &std::collections::HashSet<&str>) {
        let cutoff = now.checked_sub(self.max_age).unwrap_or(Timestamp::MIN);
        let mut dropped = 0;
        for series in self.items.values_mut().chain(self.endpoints.iter_mut()) {
            while series.len() > 1 && series[1].time <= cutoff {
                series.pop_front();
                dropped += 1;
            }
            if let Some(first) = series.front_mut().filter(|f| f.time < cutoff) {
                first.time = cutoff;
            }
        }
        self.items.retain(|name, series| {
            let keep =
                present.contains(name.as_str()) || series.back().is_some_and(|t| t.time > cutoff);
            if !keep {
                dropped += series.len();
            }
            keep
        });
        self.total -= dropped;
        while self.total > self.max_total {
            let oldest = self
                .items
                .values_mut()
                .chain(self.endpoints.iter_mut())
                .filter(|s| s.len() > 1)
                .min_by_key(|s| s[0].time);
            match oldest {
                Some(series) => {
                    series.pop_front();
                    self.total -= 1;
                }
                None => break,
            }
        }
    }

    /// Where the timelines begin: the start of the process, or the oldest time still kept.
    pub fn since(&self, now: Timestamp) -> Timestamp {
        let cutoff = now.checked_sub(self.max_age).unwrap_or(Timestamp::MIN);
        self.started.max(cutoff)
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
fn push(
    series: &mut VecDeque<Transition>,
    time: Timestamp,
    status: Status,
    message: &str,
) -> usize {
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
    since: Timestamp,
    now: Timestamp,
) -> Vec<(Option<Status>, f64)> {
    let total = now.duration_since(since).as_secs_f64();
    let mut out: Vec<(Option<Status>, f64)> = Vec::new();
    if total <= 0.0 {
        return out;
    }
    for (status, from, to) in segments(series, since, now) {
        let share = to.duration_since(from).as_secs_f64() / total * 100.0;
        match out.iter_mut().find(|(s, _)| *s == status) {
            Some((_, sum)) => *sum += share,
            None => out.push((status, share)),
        }
    }
    out
}

/// The series as consecutive spans `(status, from, to)` covering `since..now`.
pub fn segments(
    series: &VecDeque<Transition>,
    since: Timestamp,
    now: Timestamp,
) -> Vec<(Option<Status>, Timestamp, Timestamp)> {
    let mut out = Vec::new();
    let mut at = since;
    let mut status = None;
    for t in series {
        let time = t.time.clamp(since, now);
        if time > at {
            out.push((status, at, time));
            at = time;
        }
        status = Some(t.status);
    }
    if now > at {
        out.push((status, at, now));
    }
    out
}

/// The engine's history, read by the server. Writers hold the lock only to append.
#[derive(Debug, Clone)]
pub struct Shared(Arc<RwLock<History>>);

impl Default for Shared {
    fn default() -> Self {
        Shared::new(History::new(Timestamp::now()))
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
    use crate::report::{EndpointReport, Item, ItemName};

    pub(crate) fn at(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).expect("time")
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
                    observed: at(s),
                    since: at(s),
                })
                .collect(),
            healthz: endpoint(Endpoint::Healthz),
            readyz: endpoint(Endpoint::Readyz),
            backend: None,
            operating: Default::default(),
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
