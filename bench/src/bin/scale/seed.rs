//! Writing the plan into the real API server as provider-anynines would leave it: each object created, its
//! `/status` written, and the deleting ones deleted (their finalizer holds them) — many units in parallel.

use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use futures::stream::{self, StreamExt, TryStreamExt};
use http::StatusCode;
use klutch_realcp::{Answer, Rest};
use klutch_sim::managed::{ManagedKind, ManagedState};
use serde_json::{json, Value};

use crate::plan::{self, Split};

/// Requests in flight while seeding: enough to keep kube-apiserver busy on two cores, few enough that it
/// never answers 429.
pub const PARALLEL: usize = 32;

/// `/apis/dataservices.anynines.com/v1/PLURAL`.
pub fn collection(kind: ManagedKind) -> String {
    format!("/apis/dataservices.anynines.com/v1/{}", kind.plural())
}

/// Creates every object from `from` up to `to`; how long it took.
pub async fn seed(rest: &Rest, from: &Split, to: &Split) -> anyhow::Result<Duration> {
    let start = Instant::now();
    stream::iter(plan::units(from, to).into_iter().map(Ok))
        .try_for_each_concurrent(PARALLEL, |unit| async move {
            for (kind, index) in unit {
                seed_one(rest, kind, index).await?;
            }
            anyhow::Ok(())
        })
        .await?;
    Ok(start.elapsed())
}

async fn seed_one(rest: &Rest, kind: ManagedKind, index: usize) -> anyhow::Result<()> {
    let obj = plan::object(kind, index);
    let name = plan::name(kind, index);
    let path = format!("{}/{name}", collection(kind));
    let mut body = obj.clone();
    if let Some(o) = body.as_object_mut() {
        o.remove("status");
    }
    if let Some(meta) = body["metadata"].as_object_mut() {
        // The API server sets these itself (and refuses a deletion time on create).
        meta.remove("deletionTimestamp");
        meta.remove("generation");
    }
    let (list, status_path) = (collection(kind), format!("{path}/status"));
    let status = json!({"status": obj["status"]});
    let created = retrying(|| rest.post(&list, &body)).await?;
    if created.status != StatusCode::CONFLICT {
        created.ok(&format!("create {path}"))?;
    }
    retrying(|| rest.merge(&status_path, &status))
        .await?
        .ok(&format!("write {status_path}"))?;
    if plan::state_of(kind, index) == ManagedState::Deleting {
        retrying(|| rest.delete(&path, None))
            .await?
            .ok(&format!("delete {path}"))?;
    }
    Ok(())
}

/// Merge-patches one resource's `/status`.
pub async fn write_status(
    rest: &Rest,
    kind: ManagedKind,
    index: usize,
    status: &Value,
) -> anyhow::Result<()> {
    merge_status(rest, kind, &plan::name(kind, index), status).await
}

/// Merge-patches the `/status` of the resource of `kind` named `name`.
pub async fn merge_status(
    rest: &Rest,
    kind: ManagedKind,
    name: &str,
    status: &Value,
) -> anyhow::Result<()> {
    let path = format!("{}/{name}/status", collection(kind));
    retrying(|| rest.merge(&path, status))
        .await?
        .ok(&format!("write {path}"))?;
    Ok(())
}

/// Creates `obj` (of `kind`); one that exists already is left as it is.
pub async fn create(rest: &Rest, kind: ManagedKind, obj: &Value) -> anyhow::Result<()> {
    let list = collection(kind);
    let created = retrying(|| rest.post(&list, obj)).await?;
    if created.status != StatusCode::CONFLICT {
        created.ok(&format!("create {} in {list}", obj["metadata"]["name"]))?;
    }
    Ok(())
}

/// Repeats a request the API server refused for now (429, 5xx, no connection), up to a minute.
async fn retrying<F, Fut>(f: F) -> anyhow::Result<Answer>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Answer>>,
{
    let start = Instant::now();
    loop {
        let last = match f().await {
            Ok(a) if a.status != StatusCode::TOO_MANY_REQUESTS && !a.status.is_server_error() => {
                return Ok(a)
            }
            Ok(a) => format!("{}: {}", a.status, a.body),
            Err(e) => format!("{e:#}"),
        };
        if start.elapsed() > Duration::from_secs(60) {
            return Err(anyhow!("the API server kept refusing for a minute: {last}"));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// How many objects of `kind` the API server holds (a LIST of one, and its `remainingItemCount`).
pub async fn count(rest: &Rest, kind: ManagedKind) -> anyhow::Result<u64> {
    let list = rest
        .get(&format!("{}?limit=1", collection(kind)))
        .await?
        .ok(&format!("list {}", kind.plural()))?;
    let items = list["items"].as_array().map_or(0, Vec::len) as u64;
    let remaining = list["metadata"]["remainingItemCount"].as_u64().unwrap_or(0);
    Ok(items + remaining)
}

/// [`count`] of every kind, in [`ManagedKind::ALL`]'s order.
pub async fn counts(rest: &Rest) -> anyhow::Result<Vec<u64>> {
    stream::iter(ManagedKind::ALL)
        .then(|k| count(rest, k))
        .try_collect()
        .await
        .context("counting the managed resources")
}

/// A bare watch of the kinds in `set` from now on: when each resource's `Synced` condition first arrives with
/// the state the churn gives it (`False` once broken, `True` once healed), in `set`'s order. What neither tool
/// can beat: the API server's write, etcd and the watch stream to a client that does nothing else. Runs until
/// every change arrived or `stop` is sent.
pub async fn watch_floor(
    rest: &Rest,
    set: &[(ManagedKind, usize)],
    broken: bool,
) -> anyhow::Result<(
    tokio::sync::watch::Sender<bool>,
    tokio::task::JoinHandle<Vec<Option<Instant>>>,
)> {
    let want = if broken { "False" } else { "True" };
    let names = set.iter().map(|&(k, n)| (k, plan::name(k, n))).collect();
    watch_arrivals(rest, names, move |obj| {
        condition(obj, "Synced") == Some(want)
    })
    .await
}

/// The `status` of a condition of `obj` (`True`, `False`), if it has that condition.
pub fn condition<'a>(obj: &'a Value, type_: &str) -> Option<&'a str> {
    obj["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == type_)
        .and_then(|c| c["status"].as_str())
}

/// A bare watch of the kinds of `names` from now on: when each named resource first arrives (created or
/// modified) such that `arrived` holds of it, in `names`' order. Runs until every one arrived or `stop` is
/// sent.
///
/// Each kind is read by a task of its own that only timestamps and forwards, so that a busy bench does not
/// make the API server drop the watch as a slow reader; a watch that ends anyway (its timeout, a dropped
/// connection) resumes from the last version it saw (bookmarks keep that current), and is told on stderr.
/// Only a `410 Gone` loses events: told as well, and what it lost stays unarrived.
pub async fn watch_arrivals(
    rest: &Rest,
    names: Vec<(ManagedKind, String)>,
    arrived: impl Fn(&Value) -> bool + Send + 'static,
) -> anyhow::Result<(
    tokio::sync::watch::Sender<bool>,
    tokio::task::JoinHandle<Vec<Option<Instant>>>,
)> {
    use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};
    let (stop_tx, mut stop) = tokio::sync::watch::channel(false);
    let (events_tx, mut events) = tokio::sync::mpsc::unbounded_channel();
    let mut readers = Vec::new();
    for kind in ManagedKind::ALL {
        if !names.iter().any(|(k, _)| *k == kind) {
            continue;
        }
        // From the collection's current version: nothing sent after this is missed, however late the watch
        // connects.
        let list = rest
            .get(&format!("{}?limit=1", collection(kind)))
            .await?
            .ok(&format!("list {}", kind.plural()))?;
        let version = list["metadata"]["resourceVersion"]
            .as_str()
            .ok_or_else(|| anyhow!("no resourceVersion in the list of {}", kind.plural()))?
            .to_string();
        let resource = ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("dataservices.anynines.com", "v1", kind.kind()),
            kind.plural(),
        );
        let api: Api<DynamicObject> = Api::all_with(rest.client.clone(), &resource);
        // The first WATCH before returning: a collection the bench cannot watch fails here, not silently.
        let first = api
            .watch(&floor_params(), &version)
            .await
            .with_context(|| format!("watch {}", kind.plural()))?
            .boxed();
        readers.push(tokio::spawn(read_kind(
            api,
            kind,
            version,
            first,
            events_tx.clone(),
        )));
    }
    drop(events_tx);
    let index: std::collections::HashMap<(String, String), usize> = names
        .into_iter()
        .enumerate()
        .map(|(i, (k, n))| ((k.kind().to_string(), n), i))
        .collect();
    let task = tokio::spawn(async move {
        let mut seen = vec![None; index.len()];
        let mut left = index.len();
        while left > 0 {
            let event = tokio::select! {
                e = events.recv() => e,
                _ = stop.changed() => None,
            };
            let Some((kind, obj, at)) = event else { break };
            let obj: DynamicObject = obj;
            let key = (
                kind.kind().to_string(),
                obj.metadata.name.clone().unwrap_or_default(),
            );
            if let Some(&i) = index.get(&key) {
                if seen[i].is_none() && arrived(&obj.data) {
                    seen[i] = Some(at);
                    left -= 1;
                }
            }
        }
        for reader in readers {
            reader.abort();
        }
        seen
    });
    Ok((stop_tx, task))
}

/// The bare watch's WATCH: bookmarks on, so that a resume starts from a recent version.
fn floor_params() -> kube::api::WatchParams {
    let mut params = kube::api::WatchParams::default().timeout(290);
    params.bookmarks = true;
    params
}

type Arrival = (ManagedKind, kube::api::DynamicObject, Instant);

/// Reads one kind's watch into `to`, each object timestamped as it arrives, resuming from the last version
/// seen whenever the stream ends; returns once `to` is closed or the version is gone.
async fn read_kind(
    api: kube::Api<kube::api::DynamicObject>,
    kind: ManagedKind,
    mut version: String,
    first: futures::stream::BoxStream<
        'static,
        kube::Result<kube::api::WatchEvent<kube::api::DynamicObject>>,
    >,
    to: tokio::sync::mpsc::UnboundedSender<Arrival>,
) {
    use kube::api::WatchEvent;
    let mut stream = first;
    loop {
        while let Some(event) = stream.next().await {
            let at = Instant::now();
            match event {
                Ok(WatchEvent::Added(obj) | WatchEvent::Modified(obj)) => {
                    if let Some(v) = &obj.metadata.resource_version {
                        version.clone_from(v);
                    }
                    if to.send((kind, obj, at)).is_err() {
                        return;
                    }
                }
                Ok(WatchEvent::Bookmark(b)) => version = b.metadata.resource_version,
                Ok(WatchEvent::Deleted(_)) => {}
                Ok(WatchEvent::Error(e)) if e.code == 410 => {
                    eprintln!(
                        "scale: the bare watch of {} lost events (410 Gone at {version}): its row misses them",
                        kind.plural()
                    );
                    return;
                }
                Ok(WatchEvent::Error(e)) => {
                    eprintln!(
                        "scale: the bare watch of {}: {e:?}; resuming",
                        kind.plural()
                    );
                    break;
                }
                Err(e) => {
                    eprintln!("scale: the bare watch of {}: {e}; resuming", kind.plural());
                    break;
                }
            }
        }
        if to.is_closed() {
            return;
        }
        stream = loop {
            match api.watch(&floor_params(), &version).await {
                Ok(s) => break s.boxed(),
                Err(e) => {
                    eprintln!("scale: resuming the bare watch of {}: {e}", kind.plural());
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        };
    }
}
