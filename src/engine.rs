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
use crate::signals::Sink;
use crate::telemetry::log_transitions;
use crate::verdict::history;
use crate::verdict::policy::{self, Memory, Rules};
use crate::verdict::report::Report;

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
        let bodies = Bodies::new(&report, identity, levels);
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
        };
        (engine, rx)
    }

    /// Evaluates at `now` and publishes the result. Returns when to evaluate again if nothing else happens.
    pub(crate) fn step(&mut self, now: Moment) -> Option<Instant> {
        let snapshot = self.sink.snapshot();
        let evaluation = policy::evaluate(&self.rules, &snapshot, &self.memory, now);
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
            let next = self.step(Moment::now());
            let sleep = async {
                match next {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = self.sink.changed() => {}
                _ = sleep => {}
                changed = reloads.changed(), if reloading => match changed {
                    Ok(()) => self.reload(&mut reloads),
                    Err(_) => reloading = false,
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::signals::Observation;
    use crate::verdict::report::{Endpoint, Status};

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
        let start = Reloaded {
            rules: Rules::new(&config),
            identity: Identity {
                service_id: "s".into(),
                description: "d".into(),
            },
            levels: vec![Details::Shown],
            events: None,
            remote: HashSet::new(),
        };
        let (_reloads, reloaded) = watch::channel(start.clone());
        let (engine, latest) = Engine::new(start, sink, Arc::new(Metrics::new()));
        tokio::spawn(engine.run(reloaded));
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
}
