//! WATCH: a chunked stream of JSON events, replayed from a `resourceVersion`, with BOOKMARKs, `timeoutSeconds`,
//! `410 Expired`, cuts, and the faults of a wedged server (freeze, no BOOKMARKs, ERROR events).

use std::sync::{Arc, MutexGuard};

use bytes::Bytes;
use http::StatusCode;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use serde_json::{json, Value};
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;

use super::list::ListQuery;
use super::status::{expired_event, status_object};
use super::store::{Change, ResourceType, Store};
use super::{lock, Body, FakeApi, Faults, Inner, WatchFault};

type Tx = mpsc::Sender<Result<Frame<Bytes>, std::io::Error>>;

fn frame(v: &Value) -> Result<Frame<Bytes>, std::io::Error> {
    Ok(Frame::data(Bytes::from(format!("{v}\n"))))
}

impl FakeApi {
    pub(super) fn watch(
        &self,
        store: MutexGuard<'_, Store>,
        resource: usize,
        rt: &ResourceType,
        q: &ListQuery,
        matches: impl Fn(&Value) -> bool + Send + 'static,
    ) -> http::Response<Body> {
        // "0" means "any version": start with the current state, like no version at all. A streaming list
        // starts with the current state whatever version it names (this store is never behind), and marks
        // its end with a BOOKMARK.
        let from = q.rv.filter(|rv| *rv != 0 && !q.initial_events);
        let mut first = initial_events(&store, resource, from, &matches);
        if q.initial_events {
            let mut object = json!({"apiVersion": rt.api_version(), "kind": rt.kind});
            object["metadata"] = json!({
                "resourceVersion": store.rv.to_string(),
                "annotations": {"k8s.io/initial-events-end": "true"},
            });
            first.push(json!({"type": "BOOKMARK", "object": object}));
        }
        let expired = from.is_some_and(|rv| rv < store.compacted);
        if expired {
            first = vec![expired_event(from.unwrap_or(0), store.compacted)];
        }
        let fault = self.watch_fault(&rt.plural);
        if fault == Some(WatchFault::ErrorEvent) {
            let status = status_object(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                "an error on the server (\"watch chan error: etcdserver: mvcc: required revision has been compacted\") has prevented the request from succeeding",
            );
            first = vec![json!({"type": "ERROR", "object": status})];
        }
        let ends_at_once = expired || fault == Some(WatchFault::ErrorEvent);
        let stream = EventStream {
            inner: self.inner.clone(),
            changes: self.inner.changes.subscribe(),
            resource,
            last_rv: store.rv,
            bookmark: json!({"apiVersion": rt.api_version(), "kind": rt.kind}),
            bookmarks: q.bookmarks,
            timeout: q.timeout,
        };
        drop(store);
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(async move {
            for e in &first {
                if tx.send(frame(e)).await.is_err() {
                    return;
                }
            }
            if !ends_at_once {
                stream.run(tx, matches).await;
            }
        });
        let mut r = http::Response::new(StreamBody::new(ReceiverStream::new(rx)).boxed());
        r.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        r
    }
}

/// The events a new watch starts with: the current state, or the history after `from`.
fn initial_events(
    store: &Store,
    resource: usize,
    from: Option<u64>,
    matches: &impl Fn(&Value) -> bool,
) -> Vec<Value> {
    match from {
        None => store
            .of(resource)
            .filter(|o| matches(o))
            .map(|obj| json!({"type": "ADDED", "object": obj}))
            .collect(),
        Some(rv) => {
            let start = store.history.partition_point(|c| c.rv <= rv);
            store.history[start..]
                .iter()
                .filter(|c| c.resource == resource && matches(&c.object))
                .map(|c| json!({"type": c.kind, "object": c.object}))
                .collect()
        }
    }
}

/// One open watch after its initial events.
struct EventStream {
    inner: Arc<Inner>,
    changes: broadcast::Receiver<Arc<Change>>,
    resource: usize,
    last_rv: u64,
    /// `apiVersion` and `kind` of this watch's BOOKMARK objects.
    bookmark: Value,
    bookmarks: bool,
    timeout: std::time::Duration,
}

impl EventStream {
    async fn run(mut self, tx: Tx, matches: impl Fn(&Value) -> bool) {
        let mut faults = self.inner.faults.subscribe();
        let mut cut = self.inner.cut.subscribe();
        let mut expire = self.inner.expire.subscribe();
        let every = *lock(&self.inner.bookmark_every);
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        let end = tokio::time::sleep(self.timeout);
        tokio::pin!(end);
        loop {
            // Frozen: nothing at all goes out (not even the end of the stream) until unfrozen.
            if faults.wait_for(|f| !f.frozen).await.is_err() {
                return;
            }
            let bookmarks = self.bookmarks && !faults.borrow().no_bookmarks;
            let event = tokio::select! {
                c = self.changes.recv() => match c {
                    Ok(c) => {
                        self.last_rv = c.rv;
                        if c.resource != self.resource || !matches(&c.object) {
                            continue;
                        }
                        json!({"type": c.kind, "object": c.object})
                    }
                    // Too slow a reader: end its stream, as the real server does.
                    Err(_) => return,
                },
                _ = ticks.tick(), if bookmarks => {
                    let mut object = self.bookmark.clone();
                    object["metadata"] = json!({"resourceVersion": self.last_rv.to_string()});
                    json!({"type": "BOOKMARK", "object": object})
                }
                _ = faults.changed() => continue,
                _ = cut.changed() => {
                    // Half an event, then the connection dies: a cut in the middle of an event.
                    let _ = tx.send(Ok(Frame::data(Bytes::from_static(b"{\"type\":\"MODIFIED\",\"obj")))).await;
                    let _ = tx.send(Err(std::io::Error::other("watch cut by the test"))).await;
                    return;
                }
                _ = expire.changed() => expired_event(self.last_rv, self.last_rv),
                _ = &mut end => return,
                // The client went away (or the server went down): nothing more to send.
                _ = tx.closed() => return,
            };
            if self.inner.faults.borrow().frozen {
                // Frozen while this event was chosen: hold it back until unfrozen.
                if faults.wait_for(|f: &Faults| !f.frozen).await.is_err() {
                    return;
                }
            }
            let is_error = event["type"] == "ERROR";
            if tx.send(frame(&event)).await.is_err() || is_error {
                return;
            }
        }
    }
}
