//! A check's own watch that runs into its tally ([`JudgedTally`]) instead of a shared store: kept across the
//! check's restarts while it watches the same, so that new rules re-judge what is held instead of listing it
//! again.

use std::any::Any;
use std::fmt::Debug;
use std::hash::Hash;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use kube::Resource;
use serde::de::DeserializeOwned;
use tokio::sync::watch as channel;

use super::follow::{following, Destination, Source};
use crate::clock::{Due, Moment};
use crate::kubernetes::watch::{Private, Tally, WatchState};
use crate::metrics::Metrics;
use crate::signals::{Observation, Sink, Tasks};

/// A check's own [`Tally`] of its watch's objects, judged into the check's items.
pub(crate) trait JudgedTally<K>: Tally<K> {
    /// Judges what it holds by the rules of `fresh`, an empty tally made from new settings.
    fn rejudge(&mut self, fresh: Self)
    where
        Self: Sized;
    /// The items as of `now`, and when they next go out of date by themselves (a deadline passes).
    fn observe(&mut self, state: &WatchState, now: Moment) -> (Vec<Observation>, Option<Due>);
}

/// A private watch's tally, read as a [`Source`].
struct Counted<T> {
    what: Arc<str>,
    state: channel::Receiver<WatchState>,
    tally: Arc<Mutex<T>>,
}

impl<T> Clone for Counted<T> {
    fn clone(&self) -> Self {
        Counted {
            what: self.what.clone(),
            state: self.state.clone(),
            tally: self.tally.clone(),
        }
    }
}

impl<T: Send + 'static> Source for Counted<T> {
    type Objects = Mutex<T>;

    fn whats(&self) -> Vec<Arc<str>> {
        vec![self.what.clone()]
    }

    fn states(&mut self) -> Vec<(Arc<str>, WatchState)> {
        vec![(self.what.clone(), self.state.borrow_and_update().clone())]
    }

    fn read<R>(&self, f: impl FnOnce(&Mutex<T>) -> R) -> R {
        f(&self.tally)
    }

    async fn changed(&mut self) -> bool {
        self.state.changed().await.is_ok()
    }
}

/// Starts `private` into a fresh clone of `tally`, supervised on its own: after a panic a fresh clone of
/// the tally (of the latest rules) starts from a fresh list. It runs while the returned [`LiveTally`] is
/// kept, across restarts of its check's publishing task.
pub(crate) fn live<K, T>(
    private: Private<K>,
    tally: T,
    sink: &Sink,
    metrics: &Arc<Metrics>,
) -> LiveTally
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Eq + Hash + Clone + Send + Sync,
    T: JudgedTally<K> + Clone,
{
    let key = private.key();
    let handles = TallyHandles {
        tally: Arc::new(Mutex::new(tally.clone())),
        template: Arc::new(Mutex::new(tally)),
    };
    let (tx, state) = channel::channel(WatchState::default());
    let tx = Arc::new(tx);
    let what = private.what();
    let check = private.check().to_string();
    let subscribers = Arc::new(Mutex::new(vec![check.clone()]));
    let metrics_for_runner = metrics.clone();
    let (live_tally, template) = (handles.tally.clone(), handles.template.clone());
    let mut runner = Tasks::default();
    runner.supervise(&check, sink, metrics, move || {
        let fresh = template
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        *live_tally.lock().unwrap_or_else(PoisonError::into_inner) = fresh;
        tx.send_replace(WatchState::default());
        private.run(
            live_tally.clone(),
            tx.clone(),
            subscribers.clone(),
            &metrics_for_runner,
        )
    });
    LiveTally {
        key,
        what,
        state,
        handles: Box::new(handles),
        runner,
    }
}

/// A check's private watch running into its tally: kept by the check across its restarts while what it
/// watches stays the same, so that new rules re-judge what is held instead of listing it again. Dropping
/// it stops the watch.
pub(crate) struct LiveTally {
    key: String,
    what: Arc<str>,
    state: channel::Receiver<WatchState>,
    /// The [`TallyHandles`] of its tally type.
    handles: Box<dyn Any + Send + Sync>,
    runner: Tasks,
}

struct TallyHandles<T> {
    /// The tally the watch keeps current.
    tally: Arc<Mutex<T>>,
    /// An empty tally of the latest rules: what a restarted watch starts from.
    template: Arc<Mutex<T>>,
}

impl Drop for LiveTally {
    fn drop(&mut self) {
        std::mem::take(&mut self.runner).stop();
    }
}

impl LiveTally {
    /// Whether it still watches what `key` names.
    pub(crate) fn watches(&self, key: &str) -> bool {
        self.key == key
    }

    /// Adopts the rules of `fresh` (an empty tally of new settings) for what is held, and for whatever
    /// a restart of the watch starts from; `None` if it keeps another tally type.
    pub(crate) fn rejudge<K, T: JudgedTally<K> + Clone>(&self, fresh: T) -> Option<()> {
        let handles = self.handles.downcast_ref::<TallyHandles<T>>()?;
        handles
            .tally
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .rejudge(fresh.clone());
        *handles
            .template
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = fresh;
        Some(())
    }

    /// Publishes what the tally observes, like [`follow`](super::follow::follow): at each change, and when a deadline the tally
    /// names passes. Published as waiting at once (a reload's hold stands in for that while the tally has
    /// listed). `None` if it keeps another tally type than `T`.
    pub(crate) fn publisher<K, T: JudgedTally<K>>(
        &self,
        to: Destination,
        sink: Sink,
        stale_after: Duration,
    ) -> Option<impl std::future::Future<Output = ()> + Send + 'static> {
        let handles = self.handles.downcast_ref::<TallyHandles<T>>()?;
        let source = Counted {
            what: self.what.clone(),
            state: self.state.clone(),
            tally: handles.tally.clone(),
        };
        Some(following(
            source,
            to,
            sink,
            stale_after,
            Vec::new(),
            |tally, state, now| {
                tally
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .observe(state, now)
            },
        ))
    }
}
