//! One watch's task: list, then watch, and on any error start again from a fresh list after a backoff that
//! resets only once a watch has held. What it sees goes to its [`Keep`] (the shared reflector store, or a
//! check's own [`Tally`]) and into the [`WatchState`] that checks read.

use std::fmt::Debug;
use std::hash::Hash;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::StreamExt;
use kube::api::Api;
use kube::runtime::reflector::store::Writer;
use kube::runtime::watcher::{self, watcher, Event};
use kube::Resource;
use serde::de::DeserializeOwned;
use tokio::sync::watch as channel;

use super::super::api_errors::{self, Resource as Described, Verb};
use super::super::connection::Health;
use super::{Broken, Tally, WatchState, HELD};
use crate::clock::Moment;
use crate::metrics::Metrics;
use crate::telemetry::LogLimiter;

const BACKOFF_START: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(60);

/// Where a watch's objects go, event by event.
pub(super) trait Keep<K>: Send {
    /// Takes one watcher event; returns how many objects are held now.
    fn keep(&mut self, event: Event<K>) -> usize;
}

/// The shared reflector store, each object stripped of what no judge reads before it is stored.
pub(super) struct Stored<K>
where
    K: Resource + Clone + 'static,
    K::DynamicType: Eq + Hash + Clone,
{
    pub(super) writer: Writer<K>,
    pub(super) strip: fn(&mut K),
}

impl<K> Keep<K> for Stored<K>
where
    K: Resource + Clone + Send + Sync + 'static,
    K::DynamicType: Eq + Hash + Clone + Send + Sync,
{
    fn keep(&mut self, event: Event<K>) -> usize {
        let event = event.modify(|obj| {
            // First, so that a check can keep the one managedFields fact it reads.
            (self.strip)(obj);
            let meta = obj.meta_mut();
            meta.managed_fields = None;
            meta.annotations = None;
        });
        self.writer.apply_watcher_event(&event);
        self.writer.as_reader().len()
    }
}

/// A check's own tally, shared with the task that publishes its items.
pub(super) struct Tallied<T>(pub(super) Arc<Mutex<T>>);

impl<K, T: Tally<K>> Keep<K> for Tallied<T> {
    fn keep(&mut self, event: Event<K>) -> usize {
        let mut tally = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        tally.apply(event);
        tally.len()
    }
}

/// One watch's task: list, watch, and on any error start again from a fresh list after a backoff.
pub(super) struct Runner<K, S>
where
    K: Resource + Clone + 'static,
    K::DynamicType: Eq + Hash + Clone,
{
    pub(super) api: Api<K>,
    pub(super) config: watcher::Config,
    pub(super) keep: S,
    pub(super) tx: Arc<channel::Sender<WatchState>>,
    /// What is watched, for messages.
    pub(super) what: Arc<str>,
    /// Checks reading this watch, each counted in `klutch_health_watch_restarts_total`.
    pub(super) subscribers: Arc<Mutex<Vec<String>>>,
    pub(super) metrics: Arc<Metrics>,
    pub(super) health: channel::Receiver<Health>,
    pub(super) resource: Described,
    pub(super) max_objects: usize,
    /// `[kubernetes]` or `[clusters.NAME]`, for messages naming a key.
    pub(super) section: String,
}

/// Why an attempt failed: the message, and whether only the WATCH failed after its LIST worked.
struct Failure {
    message: String,
    watch_only: bool,
}

/// How one attempt (a list, then a watch) ended.
enum Ended {
    Failed,
    /// The cluster answers again after a silence: start over at once.
    Restart,
}

/// Exponential backoff that starts over only when told that a watch held.
#[derive(Debug)]
struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            next: BACKOFF_START,
        }
    }
}

impl Backoff {
    /// The delay before the next attempt after a failure.
    fn failed(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(BACKOFF_MAX);
        delay
    }

    fn held(&mut self) {
        self.next = BACKOFF_START;
    }
}

/// The next health of the cluster; never resolves when nobody reports it any more.
async fn next_health(health: &mut channel::Receiver<Health>) -> Health {
    if health.changed().await.is_err() {
        std::future::pending::<()>().await;
    }
    health.borrow_and_update().clone()
}

impl<K, S> Runner<K, S>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Eq + Hash + Clone,
    S: Keep<K>,
{
    pub(super) async fn run(mut self) {
        let mut backoff = Backoff::default();
        let mut errors = LogLimiter::default();
        let mut recoveries = self.health.borrow_and_update().recoveries;
        loop {
            if let Ended::Restart = self
                .attempt(&mut backoff, &mut errors, &mut recoveries)
                .await
            {
                continue;
            }
            let delay = backoff.failed();
            let until = tokio::time::Instant::now() + delay;
            loop {
                tokio::select! {
                    _ = tokio::time::sleep_until(until) => break,
                    health = next_health(&mut self.health) => {
                        if health.recoveries != recoveries {
                            recoveries = health.recoveries;
                            break;
                        }
                        self.silent(&health);
                    }
                }
            }
        }
    }

    async fn attempt(
        &mut self,
        backoff: &mut Backoff,
        errors: &mut LogLimiter,
        recoveries: &mut u64,
    ) -> Ended {
        let mut stream = std::pin::pin!(watcher(self.api.clone(), self.config.clone()));
        // When this attempt's list completed, until the watch has held.
        let mut listed: Option<tokio::time::Instant> = None;
        let mut arrived = 0usize;
        loop {
            let hold = listed.map(|at| at + HELD);
            tokio::select! {
                event = stream.next() => {
                    let outcome = match event {
                        Some(Ok(event)) => self.apply(event, &mut arrived),
                        Some(Err(e)) => Err(Failure {
                            message: api_errors::describe(&e, &self.resource),
                            watch_only: listed.is_some()
                                && api_errors::verb(&e) == Verb::Watch
                                && api_errors::refused(&e),
                        }),
                        None => Err(Failure {
                            message: "the watch stream ended".to_string(),
                            watch_only: false,
                        }),
                    };
                    match outcome {
                        Ok(Event::InitDone) => {
                            listed = Some(tokio::time::Instant::now());
                        }
                        Ok(Event::Apply(_) | Event::Delete(_)) if listed.is_some() => {
                            listed = None;
                            self.held(backoff, errors);
                        }
                        Ok(_) => {}
                        Err(failure) => {
                            self.failed(failure, backoff, errors);
                            // Drops what a failed list had buffered.
                            self.keep.keep(Event::Init);
                            return Ended::Failed;
                        }
                    }
                }
                _ = tokio::time::sleep_until(hold.unwrap_or_else(tokio::time::Instant::now)), if hold.is_some() => {
                    listed = None;
                    self.held(backoff, errors);
                }
                health = next_health(&mut self.health) => {
                    if health.recoveries != *recoveries {
                        *recoveries = health.recoveries;
                        self.keep.keep(Event::Init);
                        return Ended::Restart;
                    }
                    self.silent(&health);
                }
            }
        }
    }

    /// Stores one event and updates the state; `Err` when the watch must fail (too many objects). Returns
    /// the event's kind for the caller's bookkeeping.
    fn apply(&mut self, event: Event<K>, arrived: &mut usize) -> Result<Event<()>, Failure> {
        let kind = match &event {
            Event::Init => {
                *arrived = 0;
                Event::Init
            }
            Event::InitApply(_) => {
                *arrived += 1;
                Event::InitApply(())
            }
            Event::InitDone => Event::InitDone,
            Event::Apply(_) => Event::Apply(()),
            Event::Delete(_) => Event::Delete(()),
        };
        let held = self.keep.keep(event);
        if *arrived > self.max_objects || held > self.max_objects {
            return Err(Failure {
                message: format!(
                    "more than {} objects in {} (max_objects of {}; raise it if the cluster really holds that many)",
                    self.max_objects, self.what, self.section
                ),
                watch_only: false,
            });
        }
        Ok(match kind {
            Event::InitDone => {
                if self.tx.borrow().broken.is_some() {
                    tracing::info!(watch = %self.what, "watch works again");
                }
                self.tx.send_modify(|s| {
                    s.synced = true;
                    s.broken = None;
                });
                Event::InitDone
            }
            // Every change notifies: the checks re-read the store when the state channel changes.
            Event::Apply(_) => {
                self.tx.send_modify(|s| s.broken = None);
                Event::Apply(())
            }
            Event::Delete(_) => {
                self.tx.send_modify(|s| s.broken = None);
                Event::Delete(())
            }
            Event::Init => Event::Init,
            Event::InitApply(_) => Event::InitApply(()),
        })
    }

    /// The watch held: the backoff and the error log start over, and a warning about relisting ends.
    fn held(&mut self, backoff: &mut Backoff, errors: &mut LogLimiter) {
        backoff.held();
        *errors = LogLimiter::default();
        if self.tx.borrow().not_watching.is_some() {
            tracing::info!(watch = %self.what, "watch holds again");
            self.tx.send_modify(|s| s.not_watching = None);
        }
    }

    /// A silent cluster breaks this watch since the cluster's last answer (unless it is broken already).
    fn silent(&mut self, health: &Health) {
        let Some(down) = &health.down else { return };
        self.tx.send_if_modified(|s| match &s.broken {
            Some(b) if !b.cluster || b.error == down.message => false,
            _ => {
                s.broken = Some(Broken {
                    since: down.since,
                    error: down.message.clone(),
                    cluster: true,
                });
                true
            }
        });
    }

    fn failed(&mut self, failure: Failure, backoff: &Backoff, errors: &mut LogLimiter) {
        let Failure {
            message: error,
            watch_only,
        } = failure;
        if let Some(left_out) = errors.allow() {
            tracing::warn!(watch = %self.what, %error, retry_in = ?backoff.next, left_out, "watch failed; relisting");
        }
        for check in self
            .subscribers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
        {
            self.metrics.watch_restart(check);
        }
        if watch_only {
            // LIST works: the objects stay as current as the relists make them.
            self.tx.send_modify(|s| s.not_watching = Some(error));
            return;
        }
        self.tx.send_modify(|s| {
            // Whatever an earlier refused WATCH said ("LIST works") no longer holds: the next list that
            // works starts from a clean state (a CRD deleted and recreated is not a refused WATCH after).
            s.not_watching = None;
            let since = s.broken.as_ref().map_or_else(Moment::now, |b| b.since);
            s.broken = Some(Broken {
                since,
                error,
                cluster: false,
            });
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_a_minute_and_starts_over_only_when_a_watch_held() {
        let mut b = Backoff::default();
        let delays: Vec<u64> = (0..12).map(|_| b.failed().as_millis() as u64).collect();
        assert_eq!(
            delays,
            [250, 500, 1000, 2000, 4000, 8000, 16000, 32000, 60000, 60000, 60000, 60000]
        );
        b.held();
        assert_eq!(b.failed(), BACKOFF_START);
    }

    /// A WATCH that is refused while its LIST works, on tokio's paused clock: the objects stay, the state
    /// says what to grant, and ten minutes hold a few relists (the backoff up to 60 s), not a hot loop.
    #[tokio::test(start_paused = true)]
    async fn a_refused_watch_relists_with_backoff_not_in_a_hot_loop() {
        use std::sync::atomic::{AtomicUsize, Ordering};

        use bytes::Bytes;
        use http_body_util::Full;
        use k8s_openapi::api::core::v1::Pod;

        use super::super::{WatchSpec, Watches};

        let lists = Arc::new(AtomicUsize::new(0));
        let counted = lists.clone();
        let service = tower::service_fn(move |req: http::Request<kube::client::Body>| {
            let lists = counted.clone();
            async move {
                let watching = req.uri().query().is_some_and(|q| q.contains("watch=true"));
                let (code, body) = if watching {
                    (
                        403,
                        r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"pods is forbidden: User \"system:serviceaccount:crossplane-system:klutch-health\" cannot watch resource \"pods\" in API group \"\" in the namespace \"x\"","reason":"Forbidden","code":403}"#,
                    )
                } else {
                    lists.fetch_add(1, Ordering::SeqCst);
                    (
                        200,
                        r#"{"kind":"PodList","apiVersion":"v1","metadata":{"resourceVersion":"5"},"items":[{"metadata":{"name":"p","namespace":"x","uid":"u"}}]}"#,
                    )
                };
                let mut r = http::Response::new(Full::new(Bytes::from(body)));
                *r.status_mut() = http::StatusCode::from_u16(code).expect("a status");
                Ok::<_, std::convert::Infallible>(r)
            }
        });
        let client = kube::Client::new(service, "default");
        let metrics = Arc::new(Metrics::new());
        let watch = Watches::default().watch(
            WatchSpec::<Pod>::namespaced("x", |_| {}),
            client,
            None,
            "c",
            &metrics,
        );
        tokio::time::sleep(Duration::from_secs(600)).await;
        let state = watch.state.borrow().clone();
        assert!(state.synced && state.broken.is_none(), "{state:?}");
        let why = state.not_watching.expect("the refusal is kept");
        assert!(
            why.starts_with("watch on pods forbidden: grant the verb \"watch\" on \"pods\" in the core API group in namespace x"),
            "{why}"
        );
        assert_eq!(watch.store.state().len(), 1, "the listed objects stay");
        // 0.25 + 0.5 + … + 32 s, then one a minute: 17 lists in ten minutes (a hot loop: thousands).
        let lists = lists.load(Ordering::SeqCst);
        assert!((15..=19).contains(&lists), "{lists} LISTs in ten minutes");
    }
}
