//! How a check follows its watches: the objects of one watch, or several read together, go through the
//! check's judge into items, published together with what is known about each watch itself (waiting for
//! its first list, broken, a refused WATCH).

use std::fmt::Debug;
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use kube::{Client, Resource};
use serde::de::DeserializeOwned;

use crate::clock::{Due, Moment};
use crate::kubernetes::watch::{Watch, WatchSpec, WatchState, WatchTarget, Watches};
use crate::metrics::Metrics;
use crate::signals::{Expiry, Observation, Sink, WATCH_ITEM};
use crate::verdict::report::Status;

/// Where a followed watch publishes: the whole check, or one part of a check that follows several watches.
/// A part's watch state (waiting, broken, not watching) lands on the part's own item, never on a shared
/// `CHECK/watch`.
#[derive(Debug, Clone)]
pub(crate) struct Destination {
    pub check: String,
    /// The part's item name; `None`: the watch is the whole check.
    pub part: Option<String>,
}

impl Destination {
    pub(super) fn publish(&self, sink: &Sink, items: Vec<Observation>) {
        match &self.part {
            None => sink.publish(&self.check, items),
            Some(part) => sink.publish_part(&self.check, part, items, false),
        }
    }

    fn waiting(&self, sink: &Sink, items: Vec<Observation>) {
        match &self.part {
            None => sink.waiting(&self.check, items),
            Some(part) => sink.publish_part(&self.check, part, items, true),
        }
    }

    /// The placeholders while waiting: the part's own item, or the check's.
    fn placeholders<'a>(&'a self, check: &'a [String]) -> std::borrow::Cow<'a, [String]> {
        match &self.part {
            Some(part) => std::borrow::Cow::Owned(vec![part.clone()]),
            None => std::borrow::Cow::Borrowed(check),
        }
    }

    /// LIST works but WATCH does not: the check's own `watch` item warns, or, for a part, its item does.
    fn not_watching(&self, items: &mut Vec<Observation>, why: &str, now: Timestamp) {
        let message =
            format!("{why}; until then the objects are relisted with backoff (at most every 60s)");
        match &self.part {
            None => items.push(Observation::new(WATCH_ITEM, Status::Warn, message, now)),
            Some(part) => {
                for o in items.iter_mut().filter(|o| &o.item == part) {
                    if o.status == Status::Pass {
                        o.status = Status::Warn;
                    }
                    o.message = format!("{}; {message}", o.message);
                    if let Some(detail) = &mut o.detail {
                        detail.push_str(&format!("; {message}"));
                    }
                }
            }
        }
    }
}

/// What one judge reads: the objects of one watch, several watches read together (an AppClusterBinding and
/// the konnector Deployment it runs), or a check's own tally of a watch; with each watch's own state.
pub(crate) trait Source: Clone + Send + 'static {
    /// What the judge is given: `[Arc<K>]` for one watch, a tuple of lists for several, the tally.
    type Objects: ?Sized;
    /// Each watch's description (`deployments.apps in namespace bind on cluster default`), for messages.
    fn whats(&self) -> Vec<Arc<str>>;
    /// Each watch's description and current state, marking the states as seen.
    fn states(&mut self) -> Vec<(Arc<str>, WatchState)>;
    /// Calls `f` with the stored objects.
    fn read<R>(&self, f: impl FnOnce(&Self::Objects) -> R) -> R;
    /// Resolves when any watch's state changes (every stored event changes it); `false` once a watch has
    /// stopped for good.
    fn changed(&mut self) -> impl std::future::Future<Output = bool> + Send;
}

impl<K> Source for Watch<K>
where
    K: Resource + Clone + Send + Sync + 'static,
    K::DynamicType: Eq + Hash + Clone + Send + Sync,
{
    type Objects = [Arc<K>];

    fn whats(&self) -> Vec<Arc<str>> {
        vec![self.what.clone()]
    }

    fn states(&mut self) -> Vec<(Arc<str>, WatchState)> {
        vec![(self.what.clone(), self.state.borrow_and_update().clone())]
    }

    fn read<R>(&self, f: impl FnOnce(&[Arc<K>]) -> R) -> R {
        f(&self.store.state())
    }

    async fn changed(&mut self) -> bool {
        self.state.changed().await.is_ok()
    }
}

impl<A, B> Source for (Watch<A>, Watch<B>)
where
    A: Resource + Clone + Send + Sync + 'static,
    A::DynamicType: Eq + Hash + Clone + Send + Sync,
    B: Resource + Clone + Send + Sync + 'static,
    B::DynamicType: Eq + Hash + Clone + Send + Sync,
{
    type Objects = (Vec<Arc<A>>, Vec<Arc<B>>);

    fn whats(&self) -> Vec<Arc<str>> {
        vec![self.0.what.clone(), self.1.what.clone()]
    }

    fn states(&mut self) -> Vec<(Arc<str>, WatchState)> {
        let mut states = self.0.states();
        states.extend(self.1.states());
        states
    }

    fn read<R>(&self, f: impl FnOnce(&Self::Objects) -> R) -> R {
        f(&(self.0.store.state(), self.1.store.state()))
    }

    async fn changed(&mut self) -> bool {
        tokio::select! {
            a = self.0.state.changed() => a.is_ok(),
            b = self.1.state.changed() => b.is_ok(),
        }
    }
}

/// What a check declares it follows: one watch (a [`WatchSpec`]), or two read together by one judge (a
/// tuple of them). Both the RBAC rows and the running watches come from it.
pub(crate) trait Specs {
    type Source: Source;
    /// What RBAC must grant, one row per watch.
    fn rows(&self) -> Vec<WatchTarget>;
    /// Each watch, started on first use (else shared), with `check` subscribed to its restart counter.
    fn start(
        self,
        watches: &mut Watches,
        client: &Client,
        cluster: Option<&str>,
        check: &str,
        metrics: &Arc<Metrics>,
    ) -> Self::Source;
}

impl<K> Specs for WatchSpec<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Eq + Hash + Clone + Send + Sync,
{
    type Source = Watch<K>;

    fn rows(&self) -> Vec<WatchTarget> {
        vec![self.row()]
    }

    fn start(
        self,
        watches: &mut Watches,
        client: &Client,
        cluster: Option<&str>,
        check: &str,
        metrics: &Arc<Metrics>,
    ) -> Watch<K> {
        watches.watch(self, client.clone(), cluster, check, metrics)
    }
}

impl<A, B> Specs for (WatchSpec<A>, WatchSpec<B>)
where
    A: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    A::DynamicType: Eq + Hash + Clone + Send + Sync,
    B: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    B::DynamicType: Eq + Hash + Clone + Send + Sync,
{
    type Source = (Watch<A>, Watch<B>);

    fn rows(&self) -> Vec<WatchTarget> {
        let mut rows = self.0.rows();
        rows.extend(self.1.rows());
        rows
    }

    fn start(
        self,
        watches: &mut Watches,
        client: &Client,
        cluster: Option<&str>,
        check: &str,
        metrics: &Arc<Metrics>,
    ) -> Self::Source {
        (
            self.0.start(watches, client, cluster, check, metrics),
            self.1.start(watches, client, cluster, check, metrics),
        )
    }
}

/// Follows a watch, or several read together, for one check (or one part of it): whenever a watch changes,
/// `judge` turns the objects into items, which are published together with what is known about each watch
/// itself. It is published as waiting at once (before the returned future first runs), so it is never
/// missing from the first report.
pub(crate) fn follow<S: Source>(
    source: S,
    to: Destination,
    sink: Sink,
    stale_after: Duration,
    placeholders: Vec<String>,
    mut judge: impl FnMut(&S::Objects, &WatchState, Moment) -> Vec<Observation> + Send + 'static,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    following(
        source,
        to,
        sink,
        stale_after,
        placeholders,
        move |o, s, now| (judge(o, s, now), None),
    )
}

/// [`follow`], with a judge that also says when its items next go out of date by themselves: they are
/// judged again then, without any event.
pub(super) fn following<S: Source>(
    mut source: S,
    to: Destination,
    sink: Sink,
    stale_after: Duration,
    placeholders: Vec<String>,
    judge: impl FnMut(&S::Objects, &WatchState, Moment) -> (Vec<Observation>, Option<Due>)
        + Send
        + 'static,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    let placeholders = to.placeholders(&placeholders).into_owned();
    let whats: Vec<String> = source.whats().iter().map(|w| w.to_string()).collect();
    let message = format!("waiting for initial sync of {}", whats.join(" and "));
    to.waiting(&sink, waiting(&placeholders, &message, Timestamp::now()));
    async move { follow_loop(&mut source, &to, &sink, stale_after, &placeholders, judge).await }
}

async fn follow_loop<S: Source>(
    source: &mut S,
    to: &Destination,
    sink: &Sink,
    stale_after: Duration,
    placeholders: &[String],
    mut judge: impl FnMut(&S::Objects, &WatchState, Moment) -> (Vec<Observation>, Option<Due>),
) {
    loop {
        let states = source.states();
        let moment = Moment::now();
        let now = moment.wall;
        let mut due = None;
        let unsynced: Vec<String> = states
            .iter()
            .filter(|(_, s)| !s.synced)
            .map(|(what, state)| {
                let mut part = what.to_string();
                if let Some(b) = &state.broken {
                    part.push_str(&format!(": {}", b.error));
                }
                if let Some(why) = &state.not_watching {
                    part.push_str(&format!(": {why}"));
                }
                part
            })
            .collect();
        if unsynced.is_empty() {
            let combined = combined(&states);
            let (mut items, next) = source.read(|objects| judge(objects, &combined, moment));
            due = next;
            for (what, state) in &states {
                if let Some(broken) = &state.broken {
                    let expiry = Expiry {
                        at: Due::after(broken.since, stale_after),
                        status: Status::Unknown,
                        message: broken.message(what),
                        fact: None,
                    };
                    items = items
                        .into_iter()
                        .map(|o| o.expiring(expiry.clone()))
                        .collect();
                }
                if let Some(why) = &state.not_watching {
                    to.not_watching(&mut items, why, now);
                }
            }
            to.publish(sink, items);
        } else {
            let message = format!("waiting for initial sync of {}", unsynced.join(" and "));
            to.waiting(sink, waiting(placeholders, &message, now));
        }
        let wake = due.map(|d| d.instant(moment));
        tokio::select! {
            changed = source.changed() => if !changed { return },
            () = tokio::time::sleep_until(wake.unwrap_or(moment.mono)), if wake.is_some() => {}
        }
    }
}

/// The state of several watches as one judge sees it: all synced; broken since the earliest break; not
/// watching for the first reason.
fn combined(states: &[(Arc<str>, WatchState)]) -> WatchState {
    WatchState {
        synced: states.iter().all(|(_, s)| s.synced),
        broken: states
            .iter()
            .filter_map(|(_, s)| s.broken.clone())
            .min_by_key(|b| b.since.mono),
        not_watching: states.iter().find_map(|(_, s)| s.not_watching.clone()),
    }
}

/// Unknown placeholder items: the named ones, or the single `watch` item.
pub(crate) fn waiting(items: &[String], message: &str, now: Timestamp) -> Vec<Observation> {
    if items.is_empty() {
        return vec![Observation::new(WATCH_ITEM, Status::Unknown, message, now)];
    }
    items
        .iter()
        .map(|i| Observation::new(i.clone(), Status::Unknown, message, now))
        .collect()
}
