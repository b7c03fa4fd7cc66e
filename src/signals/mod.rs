//! Signals watch or poll one kind of source and publish what they see as [`Observation`]s into a [`Sink`].
//! They know nothing of HTTP or policy: the engine evaluates whatever they last published.

pub mod backend_status;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, PoisonError};

use jiff::Timestamp;
use tokio::sync::Notify;

use crate::report::{Passthrough, Status};

/// What a signal saw of one item.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    /// The item's name within its check (`provider-anynines`, `endpoint`, …).
    pub item: String,
    pub status: Status,
    pub message: String,
    pub observed: Timestamp,
    /// Set when this observation goes out of date by itself, without any new event: a ProviderConfig whose
    /// last check ages past `check_stale_after`, a pod restart leaving its window, a broken watch past
    /// `stale_after`. The engine re-evaluates at that time.
    pub expires: Option<Expiry>,
}

/// What an observation becomes at `at`.
#[derive(Debug, Clone, PartialEq)]
pub struct Expiry {
    pub at: Timestamp,
    pub status: Status,
    pub message: String,
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
            expires: None,
        }
    }

    pub fn expiring(mut self, expiry: Expiry) -> Self {
        self.expires = Some(expiry);
        self
    }

    /// Status and message as of `now`, after any expiry.
    pub fn at(&self, now: Timestamp) -> (Status, &str) {
        match &self.expires {
            Some(e) if now >= e.at => (e.status, &e.message),
            _ => (self.status, &self.message),
        }
    }
}

/// Everything the signals have published so far.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// Check name → its items, as last published.
    pub checks: BTreeMap<String, Vec<Observation>>,
    pub backend: Option<Passthrough>,
    pub last_poll: Option<Timestamp>,
    /// Checks whose signal has not delivered its first real observation yet.
    pub unsynced: BTreeSet<String>,
}

/// Where signals publish. Cheap to clone; the engine wakes on every publish.
#[derive(Clone, Default)]
pub struct Sink {
    latest: Arc<Mutex<Snapshot>>,
    changed: Arc<Notify>,
}

impl Sink {
    /// Replaces everything known about `check`.
    pub fn publish(&self, check: &str, items: Vec<Observation>) {
        self.update(|s| {
            s.unsynced.remove(check);
            s.checks.insert(check.to_string(), items);
        });
    }

    /// Publishes placeholder items for a check whose signal has not observed anything yet
    /// (`waiting for the first poll`, `waiting for initial sync`).
    pub fn waiting(&self, check: &str, items: Vec<Observation>) {
        self.update(|s| {
            s.unsynced.insert(check.to_string());
            s.checks.insert(check.to_string(), items);
        });
    }

    /// Records a poll of provider-anynines' health server, and its answer when it was a good one.
    pub fn polled(&self, at: Timestamp, good: Option<Passthrough>) {
        self.update(|s| {
            s.last_poll = Some(at);
            if good.is_some() {
                s.backend = good;
            }
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
    pub async fn changed(&self) {
        self.changed.notified().await;
    }
}

/// Starts one signal per configured check, each publishing into `sink`.
pub async fn start(
    config: &crate::config::Config,
    sink: &Sink,
    metrics: &Arc<crate::metrics::Metrics>,
) {
    use crate::config::CheckKind;
    for check in &config.checks {
        match &check.kind {
            CheckKind::BackendStatus(b) => {
                let poller = backend_status::Poller::new(
                    &check.name,
                    b.clone(),
                    sink.clone(),
                    metrics.clone(),
                );
                tokio::spawn(poller.run());
            }
            _ => sink.waiting(
                &check.name,
                vec![Observation::new(
                    "watch",
                    Status::Unknown,
                    "waiting for initial sync",
                    Timestamp::now(),
                )],
            ),
        }
    }
}
