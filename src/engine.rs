//! The engine: evaluates the policy whenever a signal publishes or a timer (flap damping, an expiring
//! observation) falls due, then publishes the report — with the common answers already rendered — for the
//! server. This is the only place where evaluation happens; probes only read its output.

use std::collections::HashSet;
use std::sync::Arc;

use tokio::sync::watch;

use crate::clock::{Instant, Moment};
use crate::config::{Config, DetailsPolicy};
use crate::metrics::Metrics;
use crate::publish::events::{self, Transitions};
use crate::render::{Bodies, Details, Identity};
use crate::signals::{Sink, Snapshot};
use crate::telemetry::log_transitions;
use crate::verdict::history;
use crate::verdict::policy::{self, Memory, Rules};
use crate::verdict::report::{Counted, Notes, Report, Status};

/// The shortest time between two evaluations that publishes woke: a burst of publishes within it is
/// evaluated once, at its end. Short beside what any caller can tell (and beside the API server's own
/// delivery of the events); long beside one evaluation.
pub(crate) const COALESCE: std::time::Duration = std::time::Duration::from_millis(1);

/// One evaluation's output, as the server reads it.
#[derive(Debug)]
pub struct Published {
    pub report: Report,
    pub bodies: Bodies,
    /// The engine's history, for `/history` and the page's timelines.
    pub history: history::Shared,
}

impl Published {
    /// The report with its common answers rendered for each of `levels`.
    pub fn new(report: Report, identity: &Identity, levels: &[Details]) -> Published {
        Published::with_history(report, identity, levels, history::Shared::default())
    }

    /// The same, with the engine's history.
    fn with_history(
        report: Report,
        identity: &Identity,
        levels: &[Details],
        history: history::Shared,
    ) -> Published {
        let bodies = Bodies::new(identity, levels);
        Published {
            report,
            bodies,
            history,
        }
    }
}

/// The engine's view of a configuration, at start and at each reload.
#[derive(Clone)]
pub(crate) struct Reloaded {
    pub(crate) rules: Rules,
    pub(crate) identity: Identity,
    pub(crate) levels: Vec<Details>,
    /// Where Events go (`None`: `[kubernetes] events = false`, or no usable default cluster).
    pub(crate) events: Option<events::Sender>,
    /// Checks of other clusters: their objects are not where Events go, so their Events regard
    /// klutch-health's own Pod.
    pub(crate) remote: HashSet<String>,
}

impl Reloaded {
    /// The engine's view of `config`: its policy, identity and detail levels (`public_listener`: whether a
    /// public listener runs, which keeps its start-up value across reloads), and where Events go (`events`,
    /// from `events::Control`).
    pub(crate) fn of(
        config: &Config,
        public_listener: bool,
        events: Option<events::Sender>,
    ) -> Reloaded {
        Reloaded {
            rules: Rules::new(config),
            identity: Identity::of(config),
            levels: levels(config.server.details, public_listener),
            events,
            remote: Reloaded::remote(config),
        }
    }

    /// The checks of `config` that read another cluster than the default one.
    fn remote(config: &Config) -> HashSet<String> {
        config
            .checks
            .iter()
            .filter(|c| c.cluster.is_some())
            .map(|c| c.name.clone())
            .collect()
    }
}

/// The detail levels callers can be served under `details`: only those are pre-rendered. A public listener
/// always withholds.
fn levels(details: DetailsPolicy, public_listener: bool) -> Vec<Details> {
    let mut levels = match details {
        DetailsPolicy::Always => vec![Details::Shown],
        DetailsPolicy::Never => vec![Details::Withheld],
        DetailsPolicy::Token => vec![Details::Shown, Details::Withheld],
    };
    if public_listener && !levels.contains(&Details::Withheld) {
        levels.push(Details::Withheld);
    }
    levels
}

pub(crate) struct Engine {
    rules: Rules,
    identity: Identity,
    sink: Sink,
    metrics: Arc<Metrics>,
    memory: Memory,
    /// The detail levels callers can be served, so only those are pre-rendered.
    levels: Vec<Details>,
    tx: watch::Sender<Arc<Published>>,
    history: history::Shared,
    transitions: Transitions,
    /// Where Events go, when `[kubernetes] events` is on.
    events: Option<events::Sender>,
    /// Whether the silences of the policy in force were checked against the items, once every check synced.
    silences_checked: bool,
    /// The observations the last full evaluation read, and when it said to evaluate again: what a publish is
    /// compared with to tell whether only what items say changed. `None` after a reload.
    evaluated: Option<(Snapshot, Option<Instant>)>,
}

impl Engine {
    /// Evaluates once at once, so the server has a report from its first request on.
    pub(crate) fn new(
        view: Reloaded,
        sink: Sink,
        metrics: Arc<Metrics>,
    ) -> (Engine, watch::Receiver<Arc<Published>>) {
        let Reloaded {
            rules,
            identity,
            levels,
            events,
            remote,
        } = view;
        let snapshot = sink.snapshot();
        let evaluation = policy::evaluate(&rules, &snapshot, &Memory::default(), Moment::now());
        log_transitions(None, &evaluation.report);
        metrics.observe_report(&evaluation.report);
        let history = history::Shared::new(history::History::new(evaluation.report.evaluated));
        history.record(&evaluation.report);
        let mut transitions = Transitions::default();
        transitions.remote = remote;
        transitions.changes(&evaluation.report, &snapshot);
        let published =
            Published::with_history(evaluation.report, &identity, &levels, history.clone());
        let (tx, rx) = watch::channel(Arc::new(published));
        let engine = Engine {
            rules,
            identity,
            sink,
            metrics,
            memory: evaluation.memory,
            levels,
            tx,
            history,
            transitions,
            events,
            silences_checked: false,
            evaluated: Some((snapshot, evaluation.next)),
        };
        (engine, rx)
    }

    /// Evaluates at `now` and publishes the result. Returns when to evaluate again if nothing else happens.
    pub(crate) fn step(&mut self, now: Moment) -> Option<Instant> {
        let snapshot = self.sink.snapshot();
        if let Some((last, next)) = &self.evaluated {
            let due = next.is_some_and(|n| now.mono >= n);
            let previous = self.tx.borrow().clone();
            if let Some(report) = (!due)
                .then(|| words_only(&previous.report, last, &snapshot, now))
                .flatten()
            {
                let next = *next;
                self.metrics.evaluated(false);
                self.metrics.observe_counts(&report);
                self.tx.send_replace(Arc::new(Published::with_history(
                    report,
                    &self.identity,
                    &self.levels,
                    self.history.clone(),
                )));
                self.evaluated = Some((snapshot, next));
                return next;
            }
        }
        let evaluation = policy::evaluate(&self.rules, &snapshot, &self.memory, now);
        self.metrics.evaluated(true);
        self.memory = evaluation.memory;
        let previous = self.tx.borrow().clone();
        log_transitions(Some(&previous.report), &evaluation.report);
        self.metrics.observe_report(&evaluation.report);
        self.history.record(&evaluation.report);
        if !self.silences_checked && snapshot.unsynced.is_empty() {
            self.silences_checked = true;
            for s in self.rules.silences_matching_nothing(&evaluation.report) {
                tracing::warn!(
                    pattern = s.pattern.as_str(),
                    "silence matches no item now that every check has synced: it silences nothing (check its match)"
                );
            }
        }
        for change in self.transitions.changes(&evaluation.report, &snapshot) {
            if let Some(events) = &self.events {
                events.send(change);
            }
        }
        self.tx.send_replace(Arc::new(Published::with_history(
            evaluation.report,
            &self.identity,
            &self.levels,
            self.history.clone(),
        )));
        self.evaluated = Some((snapshot, evaluation.next));
        evaluation.next
    }

    fn reload(&mut self, reloads: &mut watch::Receiver<Reloaded>) {
        let Reloaded {
            rules,
            identity,
            levels,
            events,
            remote,
        } = reloads.borrow_and_update().clone();
        // Only now, with the policy that no longer names them, may removed checks' observations go.
        self.sink.retain(|check| rules.has_check(check));
        (self.rules, self.identity, self.levels) = (rules, identity, levels);
        (self.events, self.transitions.remote) = (events, remote);
        self.silences_checked = false;
        self.evaluated = None;
    }

    /// Runs until the process ends, taking each reloaded policy from `reloads` and evaluating it at once.
    /// Memory is keyed by item, so damping of unchanged checks survives a reload.
    pub(crate) async fn run(mut self, mut reloads: watch::Receiver<Reloaded>) {
        let mut reloading = true;
        loop {
            // Also when a publish woke the engine first: a reload changes the policy before the signals.
            if reloads.has_changed().unwrap_or(false) {
                self.reload(&mut reloads);
            }
            let stepped = Instant::now();
            let next = self.step(Moment::now());
            let sleep = async {
                match next {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = self.sink.changed() => {
                    // A burst (a storm of watch events) is evaluated once per `COALESCE` at most: what
                    // arrives meanwhile is read by the next step, which always follows the last publish.
                    if Instant::now() < stepped + COALESCE {
                        tokio::time::sleep_until(stepped + COALESCE).await;
                    }
                }
                _ = sleep => {}
                changed = reloads.changed(), if reloading => match changed {
                    Ok(()) => self.reload(&mut reloads),
                    Err(_) => reloading = false,
                },
            }
        }
    }
}

/// `last` (the report `snapshot` was evaluated into) with what items say replaced, when `next` differs from
/// `snapshot` only in that: the messages, details, counts and times of items that pass (or warn) before and
/// after, are counted so with no note by each endpoint, and have no expiry passed. Then no status, damping,
/// cause (only failing and unknown items are causes), silence or annotation can differ, and a full
/// evaluation gives exactly this (a table test holds both to that). `None`: evaluate in full.
fn words_only(last: &Report, snapshot: &Snapshot, next: &Snapshot, now: Moment) -> Option<Report> {
    if snapshot.polls != next.polls
        || snapshot.unsynced != next.unsynced
        || snapshot.clusters != next.clusters
        || snapshot.checks.len() != next.checks.len()
    {
        return None;
    }
    let mut report: Option<Report> = None;
    for ((check, was), (named, is)) in snapshot.checks.iter().zip(&next.checks) {
        if check != named || was.len() != is.len() {
            return None;
        }
        if Arc::ptr_eq(was, is) {
            continue;
        }
        for (a, b) in was.iter().zip(is.iter()) {
            if a == b {
                continue;
            }
            let (status, message) = b.at(now);
            let same = a.item == b.item
                && matches!(a.status, Status::Pass | Status::Warn)
                && status == a.status
                && a.expires == b.expires
                && a.fact == b.fact
                && a.regarding == b.regarding;
            if !same {
                return None;
            }
            let report = report.get_or_insert_with(|| last.clone());
            let index = report
                .items
                .iter()
                .position(|i| i.name.check() == check.as_str() && i.name.item() == b.item)?;
            let item = &mut report.items[index];
            if item.status != status {
                return None;
            }
            item.message = message.to_string();
            item.detail = b.detail.clone();
            item.counts = b.counts.clone();
            item.crossplane = b.crossplane.clone();
            item.observed = b.observed;
            for endpoint in [&mut report.healthz, &mut report.readyz] {
                let counted = endpoint.items.iter_mut().filter(|c| c.item == Some(index));
                for c in counted {
                    if !plain(c, status) {
                        return None;
                    }
                    c.message = message.to_string();
                }
            }
            // A warning explained by nothing is a root cause, which says what the item says.
            for root in report
                .causes
                .roots
                .iter_mut()
                .filter(|r| r.item == Some(index))
            {
                root.message = message.to_string();
            }
        }
    }
    let mut report = report?;
    report.evaluated = now;
    Some(report)
}

/// Counted as observed (`status`), with no word of the policy's about it.
fn plain(c: &Counted, status: Status) -> bool {
    c.status == status && c.notes == Notes::default()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::signals::Observation;
    use crate::verdict::report::{Endpoint, Status};

    /// An engine of `config` reading `sink`, running on its own task: its latest publication, and the sender
    /// of reloads (kept for the engine's life).
    fn running(
        config: &crate::config::Config,
        sink: Sink,
        metrics: Arc<Metrics>,
    ) -> (watch::Receiver<Arc<Published>>, watch::Sender<Reloaded>) {
        let start = Reloaded {
            rules: Rules::new(config),
            identity: Identity {
                service_id: "s".into(),
                description: "d".into(),
            },
            levels: vec![Details::Shown],
            events: None,
            remote: HashSet::new(),
        };
        let (reloads, reloaded) = watch::channel(start.clone());
        let (engine, latest) = Engine::new(start, sink, metrics);
        tokio::spawn(engine.run(reloaded));
        (latest, reloads)
    }

    /// The engine runs on the monotonic clock of tokio: with time paused, `fail_after` is reached by the
    /// damping timer alone, at its instant, with no new observation and no real waiting.
    #[tokio::test(start_paused = true)]
    async fn damping_fires_by_timer_on_a_paused_clock() {
        let config = crate::config::Config::from_toml(
            "[[check]]\nname = \"a\"\ntype = \"backend-status\"\nurl = \"http://x:1/\"\n\
             [endpoints.readyz]\nfail_after = \"30s\"\n",
        )
        .expect("valid");
        let sink = Sink::default();
        sink.publish(
            "a",
            vec![Observation::new(
                "x",
                Status::Fail,
                "down",
                jiff::Timestamp::now(),
            )],
        );
        let (latest, _reloads) = running(&config, sink, Arc::new(Metrics::new()));
        let shown = || {
            let p = latest.borrow().clone();
            p.report.endpoint(Endpoint::Readyz).items[0].status
        };
        let t0 = Instant::now();
        tokio::time::sleep_until(t0 + Duration::from_secs(29)).await;
        assert_eq!(shown(), Status::Warn, "failing for 29s of 30s");
        tokio::time::sleep_until(t0 + Duration::from_secs(30)).await;
        for _ in 0..100 {
            if shown() == Status::Fail {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(shown(), Status::Fail, "the timer fired at 30s");
        assert_eq!(Instant::now(), t0 + Duration::from_secs(30));
    }

    /// What a publish changed, and whether the last report with the new words is exactly what a full
    /// evaluation gives (`true`), or a full evaluation is needed (`false`).
    #[test]
    fn only_what_passing_items_say_is_patched_and_the_patch_is_what_a_full_evaluation_gives() {
        use crate::signals::{Expiry, Observation as O};
        let config = crate::config::Config::from_toml(
            "[[check]]\nname = \"a\"\ntype = \"backend-status\"\nurl = \"http://x:1/\"\n\
             [[check]]\nname = \"b\"\ntype = \"backend-status\"\nurl = \"http://x:2/\"\n\
             [endpoints.healthz]\npass_after = \"30s\"\n",
        )
        .expect("valid");
        let rules = Rules::new(&config);
        let t0 = Moment::now();
        let wall = t0.wall;
        let base = |b: Status| {
            let mut s = Snapshot::default();
            s.checks.insert(
                "a".into(),
                Arc::new(vec![
                    O::new("x", Status::Pass, "ok", wall),
                    O::new("y", Status::Pass, "ok", wall),
                ]),
            );
            s.checks
                .insert("b".into(), Arc::new(vec![O::new("z", b, "down", wall)]));
            s
        };
        let with = |s: &Snapshot, check: &str, i: usize, f: &dyn Fn(&mut O)| {
            let mut s = s.clone();
            let mut items = (*s.checks[check]).clone();
            f(&mut items[i]);
            s.checks.insert(check.into(), Arc::new(items));
            s
        };
        let failing = base(Status::Fail);
        let warning = base(Status::Warn);
        // z failed (counted failed at once), then passes: healthz counts it failed for 30 s more, with a note.
        let recovering = with(&failing, "b", 0, &|o| o.status = Status::Pass);
        let t = |s: u64| Moment {
            mono: t0.mono + std::time::Duration::from_secs(s),
            wall: t0.wall + jiff::SignedDuration::from_secs(s as i64),
        };
        let cases: Vec<(&str, Vec<Snapshot>, Snapshot, bool)> = vec![
            (
                "a passing item's message",
                vec![failing.clone()],
                with(&failing, "a", 0, &|o| o.message = "ok, 12 ready".into()),
                true,
            ),
            (
                "a passing item's detail and time",
                vec![failing.clone()],
                with(&failing, "a", 1, &|o| {
                    o.detail = Some("12 ready".into());
                    o.observed = t(2).wall;
                }),
                true,
            ),
            (
                "a warning item's message",
                vec![warning.clone()],
                with(&warning, "b", 0, &|o| o.message = "slow, 3 waiting".into()),
                true,
            ),
            (
                "a failing item's message",
                vec![failing.clone()],
                with(&failing, "b", 0, &|o| o.message = "still down".into()),
                false,
            ),
            (
                "a status",
                vec![failing.clone()],
                with(&failing, "a", 0, &|o| o.status = Status::Warn),
                false,
            ),
            (
                "an item fewer",
                vec![failing.clone()],
                {
                    let mut s = failing.clone();
                    s.checks.insert(
                        "a".into(),
                        Arc::new(vec![O::new("x", Status::Pass, "ok", wall)]),
                    );
                    s
                },
                false,
            ),
            (
                "a check waiting",
                vec![failing.clone()],
                {
                    let mut s = failing.clone();
                    s.unsynced.insert("a".into());
                    s
                },
                false,
            ),
            (
                "an expiry passed",
                vec![failing.clone()],
                with(&failing, "a", 0, &|o| {
                    o.message = "ok again".into();
                    o.expires.push(Expiry {
                        at: crate::clock::Due::after(t0, std::time::Duration::ZERO),
                        status: Status::Unknown,
                        message: "stale".into(),
                        fact: None,
                    });
                }),
                false,
            ),
            (
                "a passing item counted failed with a note",
                vec![failing.clone(), recovering.clone()],
                with(&recovering, "b", 0, &|o| o.message = "up".into()),
                false,
            ),
        ];
        for (what, history, after, fast) in cases {
            let mut memory = Memory::default();
            let mut last = None;
            for (i, before) in history.iter().enumerate() {
                let e = policy::evaluate(&rules, before, &memory, t(i as u64));
                memory = e.memory;
                last = Some(e.report);
            }
            let (last, before) = (last.expect("a report"), history.last().expect("one"));
            let now = t(history.len() as u64 + 1);
            let full = policy::evaluate(&rules, &after, &memory, now).report;
            match words_only(&last, before, &after, now) {
                Some(patched) => {
                    assert!(fast, "{what}: patched, but needs a full evaluation");
                    assert_eq!(
                        patched, full,
                        "{what}: the patch is what a full evaluation gives"
                    );
                }
                None => assert!(
                    !fast,
                    "{what}: evaluated in full, though only words changed"
                ),
            }
        }
    }

    /// A burst of publishes within [`COALESCE`] is evaluated once, after it; the report says what the last
    /// publish said.
    #[tokio::test(start_paused = true)]
    async fn a_burst_of_publishes_is_evaluated_once_and_the_last_is_served() {
        let config = crate::config::Config::from_toml(
            "[[check]]\nname = \"a\"\ntype = \"backend-status\"\nurl = \"http://x:1/\"\n",
        )
        .expect("valid");
        let sink = Sink::default();
        let say = |n: usize| {
            let text = format!("ok, change {n}");
            sink.publish(
                "a",
                vec![Observation::new(
                    "x",
                    Status::Pass,
                    text,
                    jiff::Timestamp::now(),
                )],
            );
        };
        say(0);
        let metrics = Arc::new(Metrics::new());
        let (latest, _reloads) = running(&config, sink.clone(), metrics.clone());
        let evaluations = || -> u64 {
            let text = metrics.encode_prometheus();
            ["full", "patched"]
                .iter()
                .map(|how| {
                    let series = format!("klutch_health_evaluations_total{{how=\"{how}\"}} ");
                    text.lines()
                        .find_map(|l| l.strip_prefix(series.as_str()))
                        .and_then(|v| v.parse::<u64>().ok())
                        .unwrap_or_else(|| panic!("no {series} in {text}"))
                })
                .sum()
        };
        let shown = || latest.borrow().report.items[0].message.clone();
        // The first step, at once.
        tokio::task::yield_now().await;
        let before = evaluations();
        for n in 1..=100 {
            say(n);
            tokio::task::yield_now().await;
        }
        tokio::time::sleep(COALESCE * 3).await;
        assert_eq!(shown(), "ok, change 100");
        let burst = evaluations() - before;
        assert!(
            (1..=2).contains(&burst),
            "{burst} evaluations for a burst of 100 publishes"
        );
        // A publish after a quiet spell is evaluated at once.
        say(101);
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert_eq!(shown(), "ok, change 101", "no waiting after a quiet spell");
    }
}
