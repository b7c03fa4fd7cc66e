//! One watch's task: list, then watch, and on any error start again from a fresh list after a backoff that
//! resets only once a watch has held. What it sees goes to its [`Keep`] (the shared reflector store, or a
//! check's own [`Tally`]) and into the [`WatchState`] that checks read.
//!
//! A WATCH answered 429 or 5xx (an API server whose storage is reinitializing) is retried after the backoff
//! from where it was, without a LIST. A LIST page larger than `max_body` is asked again in halved pages. When
//! the cluster comes back after an outage, a watch that received something since the outage was found keeps
//! its stream; one that heard nothing relists after a short random delay, so that watches and replicas do not
//! all list at once against a recovering etcd. A `403` within 30 s of such a failure passes too: a restarted
//! kube-apiserver forbids everything until its authorizer has synced.

use std::fmt::Debug;
use std::hash::Hash;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::StreamExt;
use kube::api::{Api, ListParams};
use kube::runtime::reflector::store::Writer;
use kube::runtime::watcher::{self, watcher, Event, InitialListStrategy};
use kube::Resource;
use serde::de::DeserializeOwned;
use tokio::sync::watch as channel;

use super::super::api_errors::{self, Resource as Described, Verb};
use super::super::connection::Health;
use super::super::lists::{self, Lists};
use super::{Broken, Tally, WatchState, HELD};
use crate::clock::Moment;
use crate::metrics::{Metrics, WatchRestart};
use crate::telemetry::LogLimiter;

const BACKOFF_START: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// The longest wait after a failure that passes by itself (a server restarting, busy or out of reach): about
/// one request a second of each watch against a recovering server, and a verdict complete within a second or
/// two of its return (a restart is over in seconds; longer waits only delay the relist).
const TRANSIENT_MAX: Duration = Duration::from_secs(1);
/// Each request that looks for an object too large for `max_body`.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(30);
/// For this long after a failure that passes by itself (or its cluster coming back), a `403` passes too: a
/// kube-apiserver that has just restarted answers `403` to everyone until its authorizer has synced.
const FORBIDDEN_GRACE: Duration = Duration::from_secs(30);
/// Watches that relist when their cluster comes back spread their LISTs over this long.
const RELIST_SPREAD: Duration = Duration::from_secs(2);

/// Where a watch's objects go, event by event.
pub(super) trait Keep<K>: Send {
    /// Takes one watcher event; returns how many objects are held now.
    fn keep(&mut self, event: Event<K>) -> usize;

    /// Drops every object held (an empty relist): after `max_objects` trips, the next list starts from
    /// nothing instead of from more than the bound.
    fn empty(&mut self) {
        self.keep(Event::Init);
        self.keep(Event::InitDone);
    }
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
    /// Its cluster's name, for messages.
    pub(super) cluster: Arc<str>,
    /// How its server lists: streamed, or in pages.
    pub(super) lists: Lists,
    /// This watch lists in pages whatever its server serves: an object too large for one watch event is
    /// found (and left out) only in pages.
    pub(super) paged: bool,
    /// Until when a `403` counts as passing ([`FORBIDDEN_GRACE`] after a failure that passes by itself).
    pub(super) forgiving: Option<tokio::time::Instant>,
}

/// Why an attempt failed: the message, whether only the WATCH failed after its LIST worked, and the
/// reason it is counted under.
struct Failure {
    message: String,
    watch_only: bool,
    reason: WatchRestart,
    /// It passes by itself ([`api_errors::transient`]): the backoff stops at [`TRANSIENT_MAX`].
    transient: bool,
}

/// How one attempt (a list, then a watch) ended.
enum Ended {
    /// Relist after the backoff (shorter after a failure that passes by itself).
    Failed { transient: bool },
    /// The cluster answers again after an outage this watch heard nothing of: relist after a short random
    /// delay.
    Silent,
    /// List again at once: a LIST page was too large (smaller pages now), an object too large was left out,
    /// or the server refused a streaming list (pages now).
    Again,
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

    /// The delay after a failure that passes by itself: doubling as well, but never past [`TRANSIENT_MAX`].
    fn failed_transient(&mut self) -> Duration {
        self.failed().min(TRANSIENT_MAX)
    }

    /// What the next delay will be.
    fn upcoming(&self, transient: bool) -> Duration {
        if transient {
            self.next.min(TRANSIENT_MAX)
        } else {
            self.next
        }
    }

    fn held(&mut self) {
        self.next = BACKOFF_START;
    }
}

/// A delay between [`BACKOFF_START`] and that plus [`RELIST_SPREAD`], at random: what a watch waits before
/// it relists when its cluster comes back.
fn spread() -> Duration {
    use std::hash::{BuildHasher, Hasher};
    // Randomly keyed per process and per call: enough to spread the LISTs, without a random-number crate.
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    BACKOFF_START + RELIST_SPREAD.mul_f64((random >> 11) as f64 / (1u64 << 53) as f64)
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
            let delay = match self
                .attempt(&mut backoff, &mut errors, &mut recoveries)
                .await
            {
                Ended::Failed { transient: false } => backoff.failed(),
                Ended::Failed { transient: true } => backoff.failed_transient(),
                Ended::Silent => spread(),
                Ended::Again => continue,
            };
            self.pause(delay, &mut recoveries).await;
        }
    }

    /// Waits `delay` before the next try; the cluster coming back cuts it to a short random delay (the
    /// failure was likely the outage's).
    async fn pause(&mut self, delay: Duration, recoveries: &mut u64) {
        let mut until = tokio::time::Instant::now() + delay;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(until) => return,
                health = next_health(&mut self.health) => {
                    if health.recoveries != *recoveries {
                        *recoveries = health.recoveries;
                        self.recovered();
                        until = until.min(tokio::time::Instant::now() + spread());
                    }
                    self.silent(&health);
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
        self.config.initial_list_strategy = if self.paged {
            InitialListStrategy::ListWatch
        } else {
            self.lists.strategy()
        };
        let streaming = self.config.initial_list_strategy == InitialListStrategy::StreamingList;
        let mut stream = std::pin::pin!(watcher(self.api.clone(), self.config.clone()));
        // When this attempt's list completed, until the watch has held.
        let mut listed: Option<tokio::time::Instant> = None;
        // Objects this list has delivered, while it lists.
        let mut relisting: Option<usize> = None;
        // When this attempt last received anything.
        let mut heard: Option<tokio::time::Instant> = None;
        loop {
            let hold = listed.map(|at| at + HELD);
            tokio::select! {
                event = stream.next() => {
                    let outcome = match event {
                        Some(Ok(event)) => {
                            heard = Some(tokio::time::Instant::now());
                            self.apply(event, &mut relisting)
                        }
                        Some(Err(e)) if streaming && lists::refuses_streaming(&e) => {
                            self.lists.refused(&self.cluster, &api_errors::describe(&e, &self.resource));
                            return Ended::Again;
                        }
                        Some(Err(e)) if streaming && api_errors::forbidden_watch(&e) && !self.forgives() => {
                            // Without the verb "watch" a LIST may still work: pages tell, and keep the
                            // objects as current as relists make them, until a WATCH holds.
                            self.paged = true;
                            return Ended::Again;
                        }
                        Some(Err(e)) if streaming && relisting.is_some() && super::super::answers::too_large(&e) => {
                            tracing::info!(watch = %self.what, error = %api_errors::describe(&e, &self.resource),
                                "an object is larger than max_body for one watch event; listing this watch in pages to find it");
                            self.paged = true;
                            self.count(WatchRestart::TooLarge);
                            self.keep.keep(Event::Init);
                            return Ended::Again;
                        }
                        Some(Err(e)) => Err(self.failure(&e, listed.is_some())),
                        None => {
                            self.forgive();
                            Err(Failure {
                                message: "the watch stream ended".to_string(),
                                watch_only: false,
                                reason: WatchRestart::Failed,
                                transient: true,
                            })
                        }
                    };
                    match outcome {
                        Ok(Event::InitDone) => {
                            listed = Some(tokio::time::Instant::now());
                            if streaming {
                                self.lists.served(&self.cluster);
                            }
                        }
                        Ok(Event::Apply(_) | Event::Delete(_)) if listed.is_some() => {
                            listed = None;
                            self.held(backoff, errors);
                        }
                        Ok(_) => {}
                        Err(failure) if failure.reason == WatchRestart::Throttled => {
                            // The stream's next poll asks the WATCH again from its resourceVersion.
                            self.failed(failure, backoff, errors);
                            let delay = backoff.failed_transient();
                            self.pause(delay, recoveries).await;
                            listed = Some(tokio::time::Instant::now());
                        }
                        Err(failure) if failure.reason == WatchRestart::TooLarge
                            && self.config.page_size.is_some_and(|n| n > 1) =>
                        {
                            let size = self.config.page_size.map_or(1, |n| (n / 2).max(1));
                            tracing::info!(watch = %self.what, error = %failure.message, page_size = size,
                                "a LIST page is larger than max_body; listing again in smaller pages");
                            self.config.page_size = Some(size);
                            self.count(WatchRestart::TooLarge);
                            self.keep.keep(Event::Init);
                            return Ended::Again;
                        }
                        Err(failure) if failure.reason == WatchRestart::TooLarge
                            && self.skip_too_large(relisting.unwrap_or(0), &failure.message).await =>
                        {
                            // Left out by its field selector, which a streaming list honours as well.
                            self.paged = false;
                            self.count(WatchRestart::TooLarge);
                            self.keep.keep(Event::Init);
                            return Ended::Again;
                        }
                        Err(failure) => {
                            let (reason, transient) = (failure.reason, failure.transient);
                            self.failed(failure, backoff, errors);
                            if reason == WatchRestart::MaxObjects {
                                // Starting the next list from more than the bound would trip it again at once.
                                self.keep.empty();
                            } else {
                                // Drops what a failed list had buffered.
                                self.keep.keep(Event::Init);
                            }
                            return Ended::Failed { transient };
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
                        self.recovered();
                        let live = heard.zip(health.outage).is_some_and(|(heard, outage)| heard >= outage);
                        if !live {
                            tracing::info!(watch = %self.what, "the API server is back and this watch heard nothing since it went down; relisting");
                            self.count(WatchRestart::Silent);
                            self.keep.keep(Event::Init);
                            return Ended::Silent;
                        }
                        continue;
                    }
                    self.silent(&health);
                }
            }
        }
    }

    /// A page of one object is larger than `max_body`: finds that object (the one after the `at` this list
    /// delivered, by a metadata-only LIST in the same order), makes sure it alone is too large, and leaves it
    /// out of the watch by a field selector, with a warning naming it. `false` when it cannot be found.
    async fn skip_too_large(&mut self, at: usize, error: &str) -> bool {
        let Some((namespace, name)) = self.object_at(at).await else {
            return false;
        };
        let mut alone = format!("metadata.name={name}");
        if let Some(ns) = &namespace {
            alone.push_str(&format!(",metadata.namespace={ns}"));
        }
        let mut params = ListParams::default().fields(&alone).limit(1);
        params.label_selector = self.config.label_selector.clone();
        match tokio::time::timeout(LOOKUP_TIMEOUT, self.api.list(&params)).await {
            Ok(Err(e)) if super::super::answers::too_large(&e) => {}
            _ => return false,
        }
        let named = match &namespace {
            Some(ns) => format!("{ns}/{name}"),
            None => name.clone(),
        };
        // A field selector cannot pair a name with its namespace: same-named objects elsewhere go with it.
        let also = if self.resource.namespace.is_none() && namespace.is_some() {
            format!("; objects named {name} in other namespaces are left out with it")
        } else {
            String::new()
        };
        tracing::warn!(watch = %self.what, object = %named, %error,
            "{named} alone is larger than max_body: left out of the watch until klutch-health restarts{also}; raise max_body to judge it");
        let exclude = format!("metadata.name!={name}");
        let fields = match self.config.field_selector.take() {
            Some(f) => format!("{f},{exclude}"),
            None => exclude,
        };
        self.config.field_selector = Some(fields);
        true
    }

    /// Namespace and name of the object at position `at` of this watch's LIST, asked metadata only (small).
    async fn object_at(&self, at: usize) -> Option<(Option<String>, String)> {
        let mut params = ListParams::default().limit(500);
        params.label_selector = self.config.label_selector.clone();
        params.field_selector = self.config.field_selector.clone();
        let mut seen = 0;
        loop {
            let page = tokio::time::timeout(LOOKUP_TIMEOUT, self.api.list_metadata(&params))
                .await
                .ok()?
                .ok()?;
            if let Some(object) = page.items.get(at - seen) {
                let meta = &object.metadata;
                return Some((meta.namespace.clone(), meta.name.clone()?));
            }
            seen += page.items.len();
            params.continue_token = Some(page.metadata.continue_?).filter(|c| !c.is_empty());
            params.continue_token.as_ref()?;
        }
    }

    /// Opens (or extends) the time in which a `403` passes.
    fn forgive(&mut self) {
        self.forgiving = Some(tokio::time::Instant::now() + FORBIDDEN_GRACE);
    }

    /// Whether a `403` now is likely the server's passing state rather than a missing grant.
    fn forgives(&self) -> bool {
        self.forgiving
            .is_some_and(|until| tokio::time::Instant::now() < until)
    }

    /// What a watcher error means for this watch; `listed`: its LIST worked and the watch has not held yet.
    /// A failure that passes by itself opens [`FORBIDDEN_GRACE`], in which a `403` passes as well.
    fn failure(&mut self, e: &watcher::Error, listed: bool) -> Failure {
        let message = api_errors::describe(e, &self.resource);
        let reason = if api_errors::throttled(e) {
            WatchRestart::Throttled
        } else if api_errors::verb(e) == Verb::List && super::super::answers::too_large(e) {
            WatchRestart::TooLarge
        } else {
            WatchRestart::Failed
        };
        let transient = if api_errors::transient(e) {
            self.forgive();
            true
        } else {
            api_errors::forbidden(e) && self.forgives()
        };
        Failure {
            message,
            watch_only: reason == WatchRestart::Failed
                && listed
                && api_errors::verb(e) == Verb::Watch
                && api_errors::refused(e),
            reason,
            transient,
        }
    }

    /// Stores one event and updates the state; `Err` when the watch must fail (too many objects). Returns
    /// the event's kind for the caller's bookkeeping. While a list runs (`relisting`: what it delivered so
    /// far), only what it delivered counts: a store keeps the objects of the last list until this one ends.
    fn apply(
        &mut self,
        event: Event<K>,
        relisting: &mut Option<usize>,
    ) -> Result<Event<()>, Failure> {
        let kind = match &event {
            Event::Init => {
                *relisting = Some(0);
                Event::Init
            }
            Event::InitApply(_) => {
                let arrived = relisting.get_or_insert(0);
                *arrived += 1;
                if *arrived > self.max_objects {
                    return Err(self.too_many());
                }
                Event::InitApply(())
            }
            Event::InitDone => {
                *relisting = None;
                Event::InitDone
            }
            Event::Apply(_) => Event::Apply(()),
            Event::Delete(_) => Event::Delete(()),
        };
        let held = self.keep.keep(event);
        if relisting.is_none() && held > self.max_objects {
            return Err(self.too_many());
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

    fn too_many(&self) -> Failure {
        Failure {
            message: format!(
                "more than {} objects in {} (max_objects of {}; raise it if the cluster really holds that many)",
                self.max_objects, self.what, self.section
            ),
            watch_only: false,
            reason: WatchRestart::MaxObjects,
            transient: false,
        }
    }

    /// Counts one relist (or reconnect) for every check reading this watch.
    fn count(&self, reason: WatchRestart) {
        for check in self
            .subscribers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
        {
            self.metrics.watch_restart(check, reason);
        }
    }

    /// The watch held: the backoff and the error log start over, and a warning about relisting ends.
    fn held(&mut self, backoff: &mut Backoff, errors: &mut LogLimiter) {
        backoff.held();
        *errors = LogLimiter::default();
        // A WATCH works: a forbidden streaming list was a passing refusal (an API server whose authorizer
        // had not synced after a restart), so the next list streams again where the server serves it.
        self.paged = false;
        // A retried WATCH gives no sign that it started: holding this long is the sign.
        self.tx.send_if_modified(|s| match &s.broken {
            Some(b) if !b.cluster && s.synced => {
                s.broken = None;
                true
            }
            _ => false,
        });
        if self.tx.borrow().not_watching.is_some() {
            tracing::info!(watch = %self.what, "watch holds again");
            self.tx.send_modify(|s| s.not_watching = None);
        }
    }

    /// The cluster answers again: its outage no longer breaks this watch (which keeps a live stream, or
    /// relists within [`RELIST_SPREAD`]); a failure of the watch's own stays.
    fn recovered(&mut self) {
        self.forgive();
        self.tx.send_if_modified(|s| match &s.broken {
            Some(b) if b.cluster => {
                s.broken = None;
                true
            }
            _ => false,
        });
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
            reason,
            transient,
        } = failure;
        let retry_in = backoff.upcoming(transient);
        if let Some(left_out) = errors.allow() {
            if reason == WatchRestart::Throttled {
                tracing::warn!(watch = %self.what, %error, ?retry_in, left_out, "watch throttled; asking again from where it was");
            } else {
                tracing::warn!(watch = %self.what, %error, ?retry_in, left_out, "watch failed; relisting");
            }
        }
        self.count(reason);
        if watch_only {
            // LIST works: the objects stay as current as the relists make them.
            self.tx.send_modify(|s| s.not_watching = Some(error));
            return;
        }
        self.tx.send_modify(|s| {
            // Whatever an earlier refused WATCH said ("LIST works") no longer holds: the next list that
            // works starts from a clean state (a CRD deleted and recreated is not a refused WATCH after).
            s.not_watching = None;
            if reason == WatchRestart::MaxObjects {
                // What it held is dropped: nothing to judge until a list fits.
                s.synced = false;
            }
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

    #[test]
    fn after_failures_that_pass_by_themselves_the_backoff_stops_at_a_second() {
        let mut b = Backoff::default();
        let delays: Vec<u64> = (0..8)
            .map(|_| b.failed_transient().as_millis() as u64)
            .collect();
        assert_eq!(delays, [250, 500, 1000, 1000, 1000, 1000, 1000, 1000]);
        // A refusal after them waits as long as the doubling has reached.
        assert_eq!(b.failed(), Duration::from_secs(60));
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

    /// A fake API server of pods in namespace `x`, counting its LISTs and WATCHes: LIST answers the
    /// `pods` it holds now, in pages of the asked `limit`; WATCH answers `watch_code`, or stays open and sends
    /// a MODIFIED event every second while `ticking`. `/readyz` answers `readyz` (0: 200).
    #[derive(Clone, Default)]
    struct FakeApi {
        pods: Arc<std::sync::atomic::AtomicUsize>,
        /// Bytes of padding in each pod (an annotation), to make pages large.
        padding: usize,
        /// A pod padded with 50 KiB, by index.
        big: Option<usize>,
        lists: Arc<std::sync::atomic::AtomicUsize>,
        watches: Arc<std::sync::atomic::AtomicUsize>,
        /// Answers to the next WATCHes, first to last; an open stream once none is left.
        watch_codes: Arc<Mutex<Vec<u16>>>,
        /// A pod the next WATCH adds, by index.
        add: Arc<Mutex<Option<usize>>>,
        ticking: Arc<std::sync::atomic::AtomicBool>,
        readyz: Arc<std::sync::atomic::AtomicU16>,
        /// Serves streaming lists (`sendInitialEvents`); else refuses them as a server with the `WatchList`
        /// feature gate off does, counted in `refused_streams`.
        streaming: bool,
        refused_streams: Arc<std::sync::atomic::AtomicUsize>,
        /// Until then, every LIST and WATCH past the `watch_codes` is answered `403`, as a kube-apiserver
        /// whose authorizer has not synced after its restart answers.
        forbidden_until: Arc<Mutex<Option<tokio::time::Instant>>>,
    }

    type FakeBody = http_body_util::combinators::BoxBody<bytes::Bytes, std::io::Error>;

    impl FakeApi {
        fn pod(&self, i: usize) -> String {
            let padding = if self.big == Some(i) {
                50 * 1024
            } else {
                self.padding
            };
            format!(
                r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"p{i}","namespace":"x","uid":"u{i}","resourceVersion":"5","annotations":{{"pad":"{}"}}}}}}"#,
                "x".repeat(padding)
            )
        }

        fn answer(&self, req: &http::Request<kube::client::Body>) -> (u16, FakeBody) {
            use http_body_util::BodyExt;
            use std::sync::atomic::Ordering;
            let full = |code: u16, body: String| {
                (
                    code,
                    http_body_util::Full::new(bytes::Bytes::from(body))
                        .map_err(|never| match never {})
                        .boxed(),
                )
            };
            if req.uri().path() == "/readyz" {
                return match self.readyz.load(Ordering::SeqCst) {
                    0 => full(200, "ok".into()),
                    code => full(code, "[-]etcd failed: reason withheld\n".into()),
                };
            }
            let query = req.uri().query().unwrap_or_default().to_string();
            let param = |key: &str| {
                query
                    .split('&')
                    .find_map(|p| p.strip_prefix(key)?.strip_prefix('='))
                    .map(str::to_string)
            };
            let fields = param("fieldSelector")
                .unwrap_or_default()
                .replace("%21", "!")
                .replace("%3D", "=")
                .replace("%2C", ",");
            let selected = |i: usize| {
                let name = format!("p{i}");
                fields.split(',').filter(|f| !f.is_empty()).all(|f| {
                    if let Some(not) = f.strip_prefix("metadata.name!=") {
                        not != name
                    } else if let Some(is) = f.strip_prefix("metadata.name=") {
                        is == name
                    } else {
                        true
                    }
                })
            };
            let initial_events = param("sendInitialEvents").is_some_and(|v| v == "true");
            let forbidden = || {
                self.forbidden_until
                    .lock()
                    .expect("forbidden")
                    .is_some_and(|until| tokio::time::Instant::now() < until)
            };
            let refusal = |verb: &str| {
                full(
                    403,
                    format!(
                        r#"{{"kind":"Status","apiVersion":"v1","metadata":{{}},"status":"Failure","message":"pods is forbidden: User \"system:serviceaccount:crossplane-system:klutch-health\" cannot {verb} resource \"pods\" in API group \"\" in the namespace \"x\"","reason":"Forbidden","code":403}}"#
                    ),
                )
            };
            if initial_events && !self.streaming {
                self.refused_streams.fetch_add(1, Ordering::SeqCst);
                return full(422, crate::kubernetes::lists::WATCH_LIST_OFF.into());
            }
            if param("watch").is_some() {
                self.watches.fetch_add(1, Ordering::SeqCst);
                let code = {
                    let mut codes = self.watch_codes.lock().expect("codes");
                    (!codes.is_empty()).then(|| codes.remove(0))
                };
                if let Some(code) = code {
                    return full(
                        code,
                        format!(
                            r#"{{"kind":"Status","apiVersion":"v1","metadata":{{}},"status":"Failure","message":"storage is (re)initializing","reason":"TooManyRequests","code":{code}}}"#
                        ),
                    );
                }
                if forbidden() {
                    return refusal("watch");
                }
                let added = self.add.lock().expect("add").take().map(|i| {
                    // It exists from now on: later LISTs hold it too.
                    self.pods.fetch_max(i + 1, Ordering::SeqCst);
                    self.pod(i)
                });
                if initial_events {
                    // A streaming list: every pod, then the BOOKMARK that ends the initial events.
                    let mut lines: String = (0..self.pods.load(Ordering::SeqCst))
                        .filter(|i| selected(*i))
                        .map(|i| format!("{{\"type\":\"ADDED\",\"object\":{}}}\n", self.pod(i)))
                        .collect();
                    lines.push_str(r#"{"type":"BOOKMARK","object":{"apiVersion":"v1","kind":"Pod","metadata":{"resourceVersion":"5","annotations":{"k8s.io/initial-events-end":"true"}}}}"#);
                    lines.push('\n');
                    let first = futures::stream::once(async move {
                        Ok::<_, std::io::Error>(hyper::body::Frame::data(bytes::Bytes::from(lines)))
                    });
                    let open = futures::stream::pending();
                    return (
                        200,
                        BodyExt::boxed(http_body_util::StreamBody::new(first.chain(open))),
                    );
                }
                let ticking = self.ticking.clone();
                let stream = futures::stream::unfold(
                    (added, ticking, 6u64),
                    |(added, ticking, rv)| async move {
                        if let Some(pod) = added {
                            let line = format!("{{\"type\":\"ADDED\",\"object\":{pod}}}\n");
                            return Some((
                                Ok(hyper::body::Frame::data(bytes::Bytes::from(line))),
                                (None, ticking, rv),
                            ));
                        }
                        loop {
                            tokio::time::sleep(Duration::from_secs(1)).await;
                            if ticking.load(Ordering::SeqCst) {
                                break;
                            }
                        }
                        let line = format!(
                            r#"{{"type":"MODIFIED","object":{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"p0","namespace":"x","uid":"u0","resourceVersion":"{rv}"}}}}}}"#
                        ) + "\n";
                        Some((
                            Ok(hyper::body::Frame::data(bytes::Bytes::from(line))),
                            (None, ticking, rv + 1),
                        ))
                    },
                );
                return (200, BodyExt::boxed(http_body_util::StreamBody::new(stream)));
            }
            self.lists.fetch_add(1, Ordering::SeqCst);
            if forbidden() {
                return refusal("list");
            }
            let pods = self.pods.load(Ordering::SeqCst);
            let from: usize = param("continue").and_then(|c| c.parse().ok()).unwrap_or(0);
            let limit: usize = param("limit").and_then(|l| l.parse().ok()).unwrap_or(pods);
            // Metadata only, or the whole pods; `metadata.name=` and `metadata.name!=` field selectors.
            let metadata_only = req.headers().get(http::header::ACCEPT).is_some_and(|a| {
                a.to_str()
                    .unwrap_or_default()
                    .contains("as=PartialObjectMetadataList")
            });
            let all: Vec<usize> = (0..pods).filter(|i| selected(*i)).collect();
            let pods = all.len();
            let to = (from + limit).min(pods);
            let items: Vec<String> = all[from.min(pods)..to]
                .iter()
                .map(|&i| {
                    if metadata_only {
                        format!(r#"{{"apiVersion":"meta.k8s.io/v1","kind":"PartialObjectMetadata","metadata":{{"name":"p{i}","namespace":"x"}}}}"#)
                    } else {
                        self.pod(i)
                    }
                })
                .collect();
            let more = if to < pods {
                format!(r#","continue":"{to}""#)
            } else {
                String::new()
            };
            full(
                200,
                format!(
                    r#"{{"kind":"PodList","apiVersion":"v1","metadata":{{"resourceVersion":"5"{more}}},"items":[{}]}}"#,
                    items.join(",")
                ),
            )
        }

        /// Its client, each answer bounded by `max_body` as a cluster's client is.
        fn client(&self, max_body: u64) -> kube::Client {
            let fake = self.clone();
            let service = tower::service_fn(move |req: http::Request<kube::client::Body>| {
                let (code, body) = fake.answer(&req);
                async move {
                    let mut r = http::Response::new(body);
                    *r.status_mut() = http::StatusCode::from_u16(code).expect("a status");
                    Ok::<_, std::convert::Infallible>(r)
                }
            });
            let layer = super::super::super::answers::AnswersLayer {
                evidence: Arc::new(super::super::super::answers::Evidence::new()),
                max_body,
                section: "[kubernetes]".into(),
            };
            kube::client::ClientBuilder::new(service, "default")
                .with_layer(&layer)
                .build()
        }

        fn count(&self, of: &std::sync::atomic::AtomicUsize) -> usize {
            of.load(std::sync::atomic::Ordering::SeqCst)
        }
    }

    /// A shared watch of the pods `fake` serves at `max_objects`, following `health`.
    struct Watched {
        store: kube::runtime::reflector::Store<k8s_openapi::api::core::v1::Pod>,
        state: channel::Receiver<WatchState>,
        metrics: Arc<Metrics>,
    }

    impl Watched {
        fn start(
            fake: &FakeApi,
            max_body: u64,
            max_objects: usize,
            health: Option<channel::Receiver<Health>>,
        ) -> Watched {
            Watched::start_on(fake, max_body, max_objects, health, Lists::default())
        }

        /// The same, on a connection whose way of listing is `lists`.
        fn start_on(
            fake: &FakeApi,
            max_body: u64,
            max_objects: usize,
            health: Option<channel::Receiver<Health>>,
            lists: Lists,
        ) -> Watched {
            use super::super::{WatchSpec, Watches};
            let spec = WatchSpec::<k8s_openapi::api::core::v1::Pod>::namespaced("x", |_| {});
            let mut prepared = Watches::default().prepare(&spec, fake.client(max_body), None);
            prepared.lists = lists;
            if let Some(health) = health {
                prepared.health = health;
            }
            let writer = Writer::new(());
            let store = writer.as_reader();
            let (tx, state) = channel::channel(WatchState::default());
            let metrics = Arc::new(Metrics::new());
            metrics.watch_restarts_from_zero("c");
            let runner = prepared.runner(
                Stored {
                    writer,
                    strip: |_| {},
                },
                Arc::new(tx),
                Arc::new(Mutex::new(vec!["c".to_string()])),
                &metrics,
                max_objects,
            );
            tokio::spawn(runner.run());
            Watched {
                store,
                state,
                metrics,
            }
        }

        /// The names of the pods the store holds, sorted.
        fn names(&self) -> Vec<String> {
            let mut names: Vec<String> = self
                .store
                .state()
                .iter()
                .filter_map(|p| p.metadata.name.clone())
                .collect();
            names.sort();
            names
        }

        /// `klutch_health_watch_restarts_total` of check `c` for `reason`.
        fn restarts(&self, reason: &str) -> u64 {
            let text = self.metrics.encode_prometheus();
            let series =
                format!("klutch_health_watch_restarts_total{{check=\"c\",reason=\"{reason}\"}} ");
            text.lines()
                .find_map(|l| l.strip_prefix(series.as_str()))
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("no {series} in {text}"))
        }

        fn state(&self) -> WatchState {
            self.state.borrow().clone()
        }
    }

    /// A streaming server of two pods that answers the first WATCH `503` (restarting), then every request
    /// `403` for `forbidden`, and a shared watch of it.
    fn restarted_then_forbidden(forbidden: Duration) -> (FakeApi, Watched) {
        let fake = FakeApi {
            streaming: true,
            ..FakeApi::default()
        };
        fake.pods.store(2, std::sync::atomic::Ordering::SeqCst);
        *fake.watch_codes.lock().expect("codes") = vec![503];
        *fake.forbidden_until.lock().expect("forbidden") =
            Some(tokio::time::Instant::now() + forbidden);
        let watched = Watched::start(&fake, 1 << 20, 100, None);
        (fake, watched)
    }

    /// An API server that restarts (a `503` first) and then refuses everyone with `403` for 20 s, as
    /// kube-apiserver does until its authorizer has synced: the `403`s pass like the `503` (the backoff stops
    /// at a second), so the watch is back a second after the server is, streaming, with no LIST.
    #[tokio::test(start_paused = true)]
    async fn forbidden_right_after_a_restart_passes_like_the_restart() {
        let (fake, watched) = restarted_then_forbidden(Duration::from_secs(20));
        // Tries at 0.25, 0.75, 1.75, then every second: one at 20.75 s is the first past 20 s. A refusal's
        // doubling would wait until 31.75 s.
        tokio::time::sleep(Duration::from_secs(22)).await;
        let state = watched.state();
        assert!(state.synced && state.broken.is_none(), "{state:?}");
        assert_eq!(watched.names(), ["p0", "p1"]);
        assert_eq!(fake.count(&fake.lists), 0, "streamed again, not in pages");
    }

    /// The same `403`s for good: after 30 s they are a refusal again, and the backoff doubles to a minute.
    #[tokio::test(start_paused = true)]
    async fn forbidden_for_good_after_a_restart_backs_off_as_a_refusal() {
        let (fake, watched) = restarted_then_forbidden(Duration::from_secs(3600));
        tokio::time::sleep(Duration::from_secs(600)).await;
        let state = watched.state();
        let broken = state.broken.expect("broken");
        assert!(broken.error.contains("forbidden"), "{}", broken.error);
        // About 30 tries in the first 30 s, then doubling to one a minute (every second: about 600).
        let tries = fake.count(&fake.watches) + fake.count(&fake.lists);
        assert!(
            (30..=60).contains(&tries),
            "{tries} requests in ten minutes"
        );
    }

    /// A pod added past `max_objects` trips the watch; what it held is dropped and listed afresh after the
    /// backoff, so that once two pods are deleted it lists, holds and reports them again.
    #[tokio::test(start_paused = true)]
    async fn a_max_objects_trip_lists_afresh_and_recovers_once_under_the_bound() {
        use std::sync::atomic::Ordering;
        let fake = FakeApi::default();
        fake.pods.store(5, Ordering::SeqCst);
        *fake.add.lock().expect("add") = Some(5);
        let watched = Watched::start(&fake, 1 << 20, 5, None);
        tokio::time::sleep(Duration::from_secs(2)).await;
        let state = watched.state();
        assert!(!state.synced, "{state:?}");
        let broken = state.broken.expect("the trip breaks the watch");
        assert_eq!(
            broken.error,
            "more than 5 objects in pods in namespace x on cluster default (max_objects of [kubernetes]; raise it if the cluster really holds that many)"
        );
        // The 6 pods are listed again at every backoff, each list failing on its own sixth pod.
        tokio::time::sleep(Duration::from_secs(20)).await;
        assert!(
            watched.store.state().is_empty(),
            "nothing above the bound is kept"
        );
        let lists = fake.count(&fake.lists);
        assert!(lists >= 4, "{lists} LISTs: retried after each backoff");
        fake.pods.store(4, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(40)).await;
        let state = watched.state();
        assert!(state.synced && state.broken.is_none(), "{state:?}");
        assert_eq!(watched.store.state().len(), 4);
        assert!(fake.count(&fake.lists) > lists, "listed again");
        assert!(watched.restarts("max_objects") >= 4);
    }

    /// `/readyz` answering 500 for one probe while the watch keeps delivering: it keeps its stream (one LIST,
    /// one WATCH). A watch that heard nothing during the outage relists, after a short random delay, counted
    /// as `silent`.
    #[tokio::test(start_paused = true)]
    async fn a_readiness_flap_relists_only_a_watch_that_heard_nothing() {
        use std::sync::atomic::Ordering;
        const EVERY: Duration = Duration::from_secs(10);
        let fake = FakeApi::default();
        fake.pods.store(3, Ordering::SeqCst);
        fake.ticking.store(true, Ordering::SeqCst);
        let mut health = super::super::super::connection::probing(fake.client(1 << 20), EVERY);
        let watched = Watched::start(&fake, 1 << 20, 100, Some(health.clone()));
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(watched.state().synced);
        assert_eq!((fake.count(&fake.lists), fake.count(&fake.watches)), (1, 1));

        fake.readyz.store(500, Ordering::SeqCst);
        health.changed().await.expect("the probe reports");
        assert!(health.borrow_and_update().down.is_some());
        fake.readyz.store(0, Ordering::SeqCst);
        health.changed().await.expect("the probe reports");
        assert_eq!(health.borrow_and_update().recoveries, 1);
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(
            (fake.count(&fake.lists), fake.count(&fake.watches)),
            (1, 1),
            "a live stream is kept through a one-probe flap"
        );
        let state = watched.state();
        assert!(state.synced && state.broken.is_none(), "{state:?}");
        assert_eq!(watched.restarts("silent"), 0);

        // The watch goes quiet (a hung stream looks the same), then the cluster flaps.
        fake.ticking.store(false, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(2)).await;
        fake.readyz.store(500, Ordering::SeqCst);
        health.changed().await.expect("the probe reports");
        fake.readyz.store(0, Ordering::SeqCst);
        health.changed().await.expect("the probe reports");
        let back = tokio::time::Instant::now();
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(
            fake.count(&fake.lists),
            2,
            "a watch that heard nothing during the outage relists once"
        );
        assert_eq!(watched.restarts("silent"), 1);
        assert!(back.elapsed() >= BACKOFF_START);
        let state = watched.state();
        assert!(state.synced && state.broken.is_none(), "{state:?}");
    }

    /// A WATCH answered 429 (storage reinitializing) or 503 is throttling: it is asked again after the
    /// backoff from where it was, without a LIST and without a refused-WATCH warning.
    #[tokio::test(start_paused = true)]
    async fn a_throttled_watch_start_retries_the_watch_without_relisting_or_warning() {
        use std::sync::atomic::Ordering;
        let fake = FakeApi::default();
        fake.pods.store(2, Ordering::SeqCst);
        *fake.watch_codes.lock().expect("codes") = vec![429, 503, 429];
        let watched = Watched::start(&fake, 1 << 20, 100, None);
        let mut seen = Vec::new();
        let mut state = watched.state.clone();
        let watching = async {
            loop {
                let s = state.borrow_and_update().clone();
                seen.push(s.not_watching.clone());
                state.changed().await.expect("runs");
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(10), watching).await;
        assert!(seen.iter().all(Option::is_none), "{seen:?}");
        assert_eq!(fake.count(&fake.lists), 1, "no relist");
        assert_eq!(fake.count(&fake.watches), 4);
        assert_eq!(watched.restarts("throttled"), 3);
        assert_eq!(watched.restarts("failed"), 0);
        tokio::time::sleep(HELD).await;
        let state = watched.state();
        assert!(
            state.synced && state.broken.is_none() && state.not_watching.is_none(),
            "{state:?}"
        );
        assert_eq!(watched.store.state().len(), 2);
    }

    /// Pages of 100 pods of 1 KiB each exceed a `max_body` of 20 KiB: the list is asked again in halved pages
    /// until a page fits (12), and the kind is listed whole.
    #[tokio::test(start_paused = true)]
    async fn a_list_page_larger_than_max_body_is_listed_again_in_smaller_pages() {
        use std::sync::atomic::Ordering;
        let fake = FakeApi {
            padding: 1024,
            ..FakeApi::default()
        };
        fake.pods.store(30, Ordering::SeqCst);
        let watched = Watched::start(&fake, 20 * 1024, 100, None);
        tokio::time::sleep(Duration::from_secs(5)).await;
        let state = watched.state();
        assert!(state.synced && state.broken.is_none(), "{state:?}");
        assert_eq!(watched.store.state().len(), 30);
        assert_eq!(watched.restarts("too_large"), 3, "100, 50 and 25 too large");
        assert_eq!(
            fake.count(&fake.lists),
            3 + 3,
            "three failed pages, then 30 pods in pages of 12"
        );
    }

    /// One pod alone larger than `max_body`: the pages halve down to one, then that pod is found, named and
    /// left out, and the others are listed and watched.
    #[tokio::test(start_paused = true)]
    async fn an_object_alone_larger_than_max_body_is_left_out_and_the_rest_listed() {
        use std::sync::atomic::Ordering;
        let fake = FakeApi {
            padding: 100,
            big: Some(17),
            ..FakeApi::default()
        };
        fake.pods.store(30, Ordering::SeqCst);
        let watched = Watched::start(&fake, 20 * 1024, 100, None);
        tokio::time::sleep(Duration::from_secs(5)).await;
        let state = watched.state();
        assert!(state.synced && state.broken.is_none(), "{state:?}");
        let names = watched.names();
        assert_eq!(names.len(), 29, "{names:?}");
        assert!(!names.contains(&"p17".to_string()), "{names:?}");
        assert_eq!(
            watched.restarts("too_large"),
            7,
            "pages of 100, 50, 25, 12, 6, 3 and 1 too large"
        );
    }

    /// A server that serves streaming lists fills the store from one WATCH: no LIST at all.
    #[tokio::test(start_paused = true)]
    async fn a_streaming_list_fills_the_store_from_one_watch_without_a_list() {
        use std::sync::atomic::Ordering;
        let fake = FakeApi {
            streaming: true,
            ..FakeApi::default()
        };
        fake.pods.store(30, Ordering::SeqCst);
        let watched = Watched::start(&fake, 1 << 20, 100, None);
        tokio::time::sleep(Duration::from_secs(5)).await;
        let state = watched.state();
        assert!(state.synced && state.broken.is_none(), "{state:?}");
        assert_eq!(watched.store.state().len(), 30);
        assert_eq!(fake.count(&fake.lists), 0, "no LIST");
        assert_eq!(fake.count(&fake.watches), 1, "one WATCH");
        assert_eq!(watched.restarts("failed"), 0);
    }

    /// A server that refuses streaming lists (`422`, its `WatchList` gate off) is asked once: that watch and
    /// every later one of the same connection list in pages, with no failure counted or shown.
    #[tokio::test(start_paused = true)]
    async fn a_refused_streaming_list_turns_the_server_to_pages_once_for_all_its_watches() {
        use std::sync::atomic::Ordering;
        let fake = FakeApi::default();
        fake.pods.store(30, Ordering::SeqCst);
        let lists = Lists::default();
        let first = Watched::start_on(&fake, 1 << 20, 100, None, lists.clone());
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(
            first.state().synced && first.state().broken.is_none(),
            "{:?}",
            first.state()
        );
        assert_eq!(first.store.state().len(), 30);
        assert_eq!(fake.count(&fake.refused_streams), 1);
        assert_eq!(lists.known(), super::super::super::lists::Known::Pages);
        assert_eq!(
            first.restarts("failed"),
            0,
            "a refused streaming list is no failure"
        );
        let second = Watched::start_on(&fake, 1 << 20, 100, None, lists);
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(second.state().synced, "{:?}", second.state());
        assert_eq!(second.store.state().len(), 30);
        assert_eq!(
            fake.count(&fake.refused_streams),
            1,
            "the server was asked once"
        );
        assert_eq!(fake.count(&fake.lists), 2, "one LIST each");
    }

    /// A streamed object larger than `max_body` for one watch event: the watch lists in pages to find it,
    /// leaves it out by a field selector, and streams again without it.
    #[tokio::test(start_paused = true)]
    async fn an_object_too_large_for_a_watch_event_is_found_in_pages_and_the_rest_streamed() {
        use std::sync::atomic::Ordering;
        let fake = FakeApi {
            streaming: true,
            padding: 100,
            big: Some(17),
            ..FakeApi::default()
        };
        fake.pods.store(30, Ordering::SeqCst);
        let watched = Watched::start(&fake, 20 * 1024, 100, None);
        tokio::time::sleep(Duration::from_secs(5)).await;
        let state = watched.state();
        assert!(state.synced && state.broken.is_none(), "{state:?}");
        let names = watched.names();
        assert_eq!(names.len(), 29, "{names:?}");
        assert!(!names.contains(&"p17".to_string()), "{names:?}");
        assert_eq!(
            fake.count(&fake.watches),
            2,
            "the streaming list that met it, then the one without it"
        );
    }

    /// A streaming list refused `403` (an API server whose authorizer has not synced after a restart) lists
    /// in pages, and streams again at its next list once a WATCH has held.
    #[tokio::test(start_paused = true)]
    async fn a_forbidden_streaming_list_lists_in_pages_until_a_watch_holds() {
        use std::sync::atomic::Ordering;
        let fake = FakeApi {
            streaming: true,
            ..FakeApi::default()
        };
        fake.pods.store(3, Ordering::SeqCst);
        fake.watch_codes.lock().expect("codes").push(403);
        fake.ticking.store(true, Ordering::SeqCst);
        let (health, watching) = channel::channel(Health::default());
        let watched = Watched::start(&fake, 1 << 20, 100, Some(watching));
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(watched.state().synced, "{:?}", watched.state());
        assert_eq!(fake.count(&fake.lists), 1, "in pages after the 403");
        // The WATCH held (events arrive); then the stream goes quiet through an outage, and it relists.
        fake.ticking.store(false, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(2)).await;
        health.send_modify(|h| {
            h.recoveries += 1;
            h.outage = Some(tokio::time::Instant::now());
        });
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(watched.restarts("silent"), 1);
        assert_eq!(fake.count(&fake.lists), 1, "streamed again: no LIST");
        assert_eq!(watched.names(), ["p0", "p1", "p2"]);
    }
}
