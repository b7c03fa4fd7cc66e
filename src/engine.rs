//! The engine: evaluates the policy whenever a signal publishes or a timer (flap damping, an expiring
//! observation) falls due, then publishes the report — with the common answers already rendered — for the
//! server. This is the only place where evaluation happens; probes only read its output.

use std::sync::Arc;

use jiff::Timestamp;
use tokio::sync::watch;

use crate::config::{Config, DetailsPolicy};
use crate::events::{self, Transitions};
use crate::history;
use crate::metrics::Metrics;
use crate::policy::{self, Memory, Rules};
use crate::render::{Bodies, Details, Identity};
use crate::report::Report;
use crate::signals::Sink;
use crate::telemetry::log_transitions;

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
#[derive(Debug, Clone)]
pub(crate) struct Reloaded {
    pub(crate) rules: Rules,
    pub(crate) identity: Identity,
    pub(crate) levels: Vec<Details>,
}

impl Reloaded {
    /// The engine's view of `config`; `public_listener`: whether a public listener runs (it keeps its
    /// start-up value across reloads).
    pub(crate) fn of(config: &Config, public_listener: bool) -> Reloaded {
        Reloaded {
            rules: Rules::new(config),
            identity: Identity::of(config),
            levels: levels(config.server.details, public_listener),
        }
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
        } = view;
        let snapshot = sink.snapshot();
        let evaluation = policy::evaluate(&rules, &snapshot, &Memory::default(), Timestamp::now());
        log_transitions(None, &evaluation.report);
        metrics.observe_report(&evaluation.report);
        let history = history::Shared::new(history::History::new(evaluation.report.evaluated));
        history.record(&evaluation.report);
        let mut transitions = Transitions::default();
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
            events: None,
        };
        (engine, rx)
    }

    /// Emits an Event for every later transition of an item's observed status.
    /// Items of `remote` checks (other clusters) regard klutch-health's own Pod.
    pub(crate) fn with_events(
        mut self,
        events: events::Sender,
        remote: std::collections::HashSet<String>,
    ) -> Engine {
        self.events = Some(events);
        self.transitions.remote = remote;
        self
    }

    /// Evaluates at `now` and publishes the result. Returns when to evaluate again if nothing else happens.
    pub(crate) fn step(&mut self, now: Timestamp) -> Option<Timestamp> {
        let snapshot = self.sink.snapshot();
        let evaluation = policy::evaluate(&self.rules, &snapshot, &self.memory, now);
        self.memory = evaluation.memory;
        let previous = self.tx.borrow().clone();
        log_transitions(Some(&previous.report), &evaluation.report);
        self.metrics.observe_report(&evaluation.report);
        self.history.record(&evaluation.report);
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
        } = reloads.borrow_and_update().clone();
        // Only now, with the policy that no longer names them, may removed checks' observations go.
        self.sink.retain(|check| rules.has_check(check));
        (self.rules, self.identity, self.levels) = (rules, identity, levels);
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
            let next = self.step(Timestamp::now());
            let sleep = async {
                match next {
                    Some(at) => {
                        let wait = Timestamp::now().duration_until(at).unsigned_abs();
                        tokio::time::sleep(wait).await
                    }
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
