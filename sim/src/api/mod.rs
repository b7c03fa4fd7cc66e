//! A fake Kubernetes API server on loopback, faithful enough for kube-runtime's watcher and real `kubectl`:
//! discovery, list (selectors, pagination, `resourceVersion`), get (`Status` 404), and watch as a chunked
//! stream of JSON events with replay from a `resourceVersion`, BOOKMARKs, `timeoutSeconds` and `410 Expired`
//! for compacted history. Tests drive it into faults: cut watches, compact, go down, hang, freeze, slow down,
//! forbid or break watches, page a LIST forever.

mod discovery;
mod events;
mod kinds;
mod list;
mod status;
mod store;
mod time;
mod tls;
mod watching;
mod write;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::{broadcast, watch};

use crate::net::{rebind, stop_listening};
use status::{not_found, ok, status};
use store::{Change, ResourceType, Store};

pub use kinds::{ApplyError, Kind, KINDS};
pub use store::set_condition;
pub use time::{now_rfc3339, rfc3339, rfc3339_offset};
pub use tls::{serving_certs, ServingCerts, TlsFiles, SERVICE_ACCOUNT_TOKEN};

type Body = BoxBody<Bytes, std::io::Error>;

/// The largest request body the fake reads (a real API server allows 3 MiB).
const MAX_BODY: usize = 3 * 1024 * 1024;

/// One request the fake answered (or refused to).
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    pub query: String,
    pub is_watch: bool,
    /// The `Authorization` header as sent (the bearer token a client used).
    pub authorization: Option<String>,
}

impl RecordedRequest {
    /// Whether it asked for a collection's objects: a LIST (page), or a streaming list (a WATCH with
    /// `sendInitialEvents=true`), which reads as much.
    pub fn lists(&self) -> bool {
        self.method == "GET"
            && (!self.is_watch || self.query.split('&').any(|p| p == "sendInitialEvents=true"))
    }
}

/// How watches fail while LIST keeps working.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchFault {
    /// `403 Forbidden` (a `Status`) on every `watch=true`, as RBAC without the `watch` verb answers.
    Forbidden,
    /// `200`, then one `ERROR` event (`500 InternalError`) and the end of the stream.
    ErrorEvent,
}

#[derive(Debug, Clone, Default)]
struct Faults {
    /// Requests are read and never answered.
    hang: bool,
    /// Like `hang`, and open watches send nothing either.
    frozen: bool,
    latency: Duration,
    /// BOOKMARKs are never sent, even when asked for.
    no_bookmarks: bool,
    /// Streaming lists (`sendInitialEvents`) are refused, as a server with the `WatchList` feature gate off
    /// (the default of v1.33) refuses them.
    no_streaming: bool,
    watch_fault: Option<WatchFault>,
    /// Per resource plural; wins over `watch_fault`.
    watch_fault_for: BTreeMap<String, WatchFault>,
    /// Plurals whose LIST pages never end.
    endless: BTreeSet<String>,
    /// Plurals whose LIST (not WATCH) is refused with `403 Forbidden`.
    list_forbidden: BTreeSet<String>,
    /// Plurals whose writes answer `500 InternalError`.
    failing_writes: BTreeSet<String>,
    readiness: Readiness,
}

/// What `GET /readyz` answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Readiness {
    #[default]
    Ready,
    /// `500`, etcd's checks failed, as kube-apiserver answers while its etcd is down; every other request is
    /// still served and open watches stay open (with BOOKMARKs, as its watch cache may send them).
    EtcdDown,
    /// `403 Forbidden`, as a cluster that does not let this identity read `/readyz` answers.
    Forbidden,
}

/// kube-apiserver's `/readyz` while its etcd is down (reasons are withheld from clients).
const READYZ_ETCD_DOWN: &str = "[+]ping ok\n[+]log ok\n[-]etcd failed: reason withheld\n\
[-]etcd-readiness failed: reason withheld\n[+]informer-sync ok\n[+]poststarthook/start-apiserver-admission-initializer ok\n\
[+]shutdown ok\nreadyz check failed\n";

struct Inner {
    addr: SocketAddr,
    /// Set when serving over TLS (then `url()` is `https://…`).
    tls: Option<(tokio_rustls::TlsAcceptor, TlsFiles)>,
    store: Mutex<Store>,
    changes: broadcast::Sender<Arc<Change>>,
    faults: watch::Sender<Faults>,
    bookmark_every: Mutex<Duration>,
    /// Bumped to end every open watch abruptly.
    cut: watch::Sender<u64>,
    /// Bumped to send `410 Expired` on every open watch.
    expire: watch::Sender<u64>,
    /// `true` while down: no listener, every connection closed.
    down: watch::Sender<bool>,
    /// The listening socket while up, so that going down refuses connections at once.
    listener: Mutex<Option<Arc<TcpListener>>>,
    requests: Mutex<Vec<RecordedRequest>>,
}

/// The fake API server. Cheap to clone.
#[derive(Clone)]
pub struct FakeApi {
    inner: Arc<Inner>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl FakeApi {
    pub async fn start() -> anyhow::Result<FakeApi> {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// Starts on `addr`, serving every kind in [`KINDS`].
    pub async fn start_on(addr: SocketAddr) -> anyhow::Result<FakeApi> {
        Self::start_with(addr, None).await
    }

    /// Starts on a free loopback port, serving over TLS; the CA and a service-account token are written to
    /// `dir` ([`FakeApi::tls_files`]).
    pub async fn start_tls(dir: &Path) -> anyhow::Result<FakeApi> {
        Self::start_tls_on(SocketAddr::from(([127, 0, 0, 1], 0)), dir).await
    }

    pub async fn start_tls_on(addr: SocketAddr, dir: &Path) -> anyhow::Result<FakeApi> {
        Self::start_with(addr, Some(tls::acceptor(dir)?)).await
    }

    async fn start_with(
        addr: SocketAddr,
        tls: Option<(tokio_rustls::TlsAcceptor, TlsFiles)>,
    ) -> anyhow::Result<FakeApi> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let store = Store {
            resources: KINDS.iter().map(ResourceType::from).collect(),
            ..Store::default()
        };
        let api = FakeApi {
            inner: Arc::new(Inner {
                addr,
                tls,
                store: Mutex::new(store),
                changes: broadcast::channel(4096).0,
                faults: watch::channel(Faults::default()).0,
                bookmark_every: Mutex::new(Duration::from_secs(1)),
                cut: watch::channel(0).0,
                expire: watch::channel(0).0,
                down: watch::channel(false).0,
                listener: Mutex::default(),
                requests: Mutex::default(),
            }),
        };
        api.listen(listener);
        Ok(api)
    }

    /// Serves another resource type (a no-op when it is served already).
    pub fn register(&self, group: &str, version: &str, plural: &str, kind: &str, namespaced: bool) {
        let mut store = lock(&self.inner.store);
        if let Some(r) = store
            .resources
            .iter_mut()
            .find(|r| r.group == group && r.version == version && r.plural == plural)
        {
            r.served = true;
            return;
        }
        store.resources.push(ResourceType {
            group: group.into(),
            version: version.into(),
            plural: plural.into(),
            kind: kind.into(),
            namespaced,
            short_names: Vec::new(),
            categories: Vec::new(),
            writable: false,
            served: true,
        });
    }

    /// `http://127.0.0.1:PORT`, or `https://…` when serving over TLS.
    pub fn url(&self) -> String {
        let scheme = if self.inner.tls.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", self.inner.addr)
    }

    /// The CA and token files when serving over TLS.
    pub fn tls_files(&self) -> Option<TlsFiles> {
        self.inner.tls.as_ref().map(|(_, files)| files.clone())
    }

    pub fn addr(&self) -> SocketAddr {
        self.inner.addr
    }

    /// A kubeconfig whose current context `fake` points at this server (trusting its CA when on TLS).
    pub fn write_kubeconfig(&self, path: &Path) -> std::io::Result<()> {
        let ca = match self.tls_files() {
            Some(files) => format!("\n    certificate-authority: {}", files.ca.display()),
            None => String::new(),
        };
        std::fs::write(
            path,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {}{ca}\n\
contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n    namespace: default\n\
current-context: fake\nusers:\n- name: fake\n  user:\n    token: {SERVICE_ACCOUNT_TOKEN}\n",
                self.url()
            ),
        )
    }

    /// Ends every open watch stream abruptly, in the middle of an event.
    pub fn cut_watches(&self) {
        self.inner.cut.send_modify(|g| *g += 1);
    }

    /// Sends `410 Expired` on every open watch and ends it (history is compacted first, as a real
    /// server's would be).
    pub fn expire_watches(&self) {
        self.compact();
        self.inner.expire.send_modify(|g| *g += 1);
    }

    /// Down: connections are refused and open ones closed. Up: listening again on the same port.
    pub fn set_down(&self, down: bool) {
        let was = *self.inner.down.borrow();
        if was == down {
            return;
        }
        self.inner.down.send_replace(down);
        if down {
            if let Some(listener) = lock(&self.inner.listener).take() {
                stop_listening(&listener);
            }
            return;
        }
        // Rebinding the same port succeeds at once: std sets SO_REUSEADDR.
        match rebind(self.inner.addr) {
            Ok(listener) => self.listen(listener),
            Err(e) => eprintln!("fake API cannot listen again on {}: {e}", self.inner.addr),
        }
    }

    /// Accepts requests but answers none while set (open watches keep streaming).
    pub fn set_hang(&self, hang: bool) {
        self.inner.faults.send_modify(|f| f.hang = hang);
    }

    /// A black-holed API server: connections are accepted and kept open, no request is answered (`/version`
    /// included) and open watches send nothing, until unfrozen.
    pub fn set_frozen(&self, frozen: bool) {
        self.inner.faults.send_modify(|f| f.frozen = frozen);
    }

    /// Delays every answer.
    pub fn set_latency(&self, latency: Duration) {
        self.inner.faults.send_modify(|f| f.latency = latency);
    }

    pub fn set_bookmark_interval(&self, every: Duration) {
        *lock(&self.inner.bookmark_every) = every;
    }

    /// `false`: no BOOKMARK is ever sent, even to watches that allow them (a quiet real API server).
    pub fn set_bookmarks(&self, on: bool) {
        self.inner.faults.send_modify(|f| f.no_bookmarks = !on);
    }

    /// Serves streaming lists (`sendInitialEvents=true`), as v1.34 and later do by default, or refuses them
    /// with `422 Invalid`, as a server with the `WatchList` feature gate off does.
    pub fn set_streaming(&self, on: bool) {
        self.inner.faults.send_modify(|f| f.no_streaming = !on);
    }

    /// Makes every new watch fail this way (`None`: watches work); LIST keeps working.
    pub fn set_watch_fault(&self, fault: Option<WatchFault>) {
        self.inner.faults.send_modify(|f| f.watch_fault = fault);
    }

    /// Like [`FakeApi::set_watch_fault`], for watches of resource `plural` (e.g. `"pods"`) only.
    pub fn set_watch_fault_for(&self, plural: &str, fault: Option<WatchFault>) {
        self.inner.faults.send_modify(|f| match fault {
            Some(fault) => {
                f.watch_fault_for.insert(plural.to_string(), fault);
            }
            None => {
                f.watch_fault_for.remove(plural);
            }
        });
    }

    /// How a new watch of `plural` fails, if it does.
    fn watch_fault(&self, plural: &str) -> Option<WatchFault> {
        let faults = self.inner.faults.borrow();
        faults
            .watch_fault_for
            .get(plural)
            .copied()
            .or(faults.watch_fault)
    }

    /// While on, every LIST page of resource `plural` (e.g. `"pods"`) holds new objects and another
    /// `continue` token, forever.
    pub fn set_endless_list(&self, plural: &str, on: bool) {
        self.inner
            .faults
            .send_modify(|f| toggle(&mut f.endless, plural, on));
    }

    /// While on, every LIST of resource `plural` is refused with `403 Forbidden`, as RBAC without the
    /// `list` verb answers (watches are not affected).
    pub fn set_list_forbidden(&self, plural: &str, on: bool) {
        self.inner
            .faults
            .send_modify(|f| toggle(&mut f.list_forbidden, plural, on));
    }

    /// While on, every write (create, update, patch) of resource `plural` (e.g. `"events"`) answers
    /// `500 InternalError`, as an overloaded or broken API server does; reads keep working.
    pub fn set_failing_writes(&self, plural: &str, on: bool) {
        self.inner
            .faults
            .send_modify(|f| toggle(&mut f.failing_writes, plural, on));
    }

    /// What `/readyz` answers from now on.
    pub fn set_readiness(&self, readiness: Readiness) {
        self.inner.faults.send_modify(|f| f.readiness = readiness);
    }

    fn write_fails(&self, plural: &str) -> bool {
        self.inner.faults.borrow().failing_writes.contains(plural)
    }

    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.inner.requests).clone()
    }

    pub fn request_count(&self) -> usize {
        lock(&self.inner.requests).len()
    }

    pub fn reset_requests(&self) {
        lock(&self.inner.requests).clear();
    }

    fn listen(&self, listener: TcpListener) {
        let listener = Arc::new(listener);
        *lock(&self.inner.listener) = Some(listener.clone());
        tokio::spawn(self.clone().accept(listener));
    }

    async fn accept(self, listener: Arc<TcpListener>) {
        let mut down = self.inner.down.subscribe();
        loop {
            let stream = tokio::select! {
                biased;
                _ = went_down(&mut down) => return,
                r = listener.accept() => match r {
                    Ok((s, _)) => s,
                    // Out of file descriptors, or the listener was shut down: do not spin.
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                },
            };
            tokio::spawn(self.clone().serve(stream));
        }
    }

    /// Serves one connection (after the TLS handshake when on TLS) until it ends or the server goes down.
    async fn serve(self, stream: tokio::net::TcpStream) {
        let mut down = self.inner.down.subscribe();
        match self
            .inner
            .tls
            .as_ref()
            .map(|(acceptor, _)| acceptor.clone())
        {
            None => self.serve_io(TokioIo::new(stream), &mut down).await,
            Some(acceptor) => {
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                self.serve_io(TokioIo::new(tls), &mut down).await;
            }
        }
    }

    async fn serve_io<IO>(&self, io: TokioIo<IO>, down: &mut watch::Receiver<bool>)
    where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let api = self.clone();
        let service = hyper::service::service_fn(move |req| {
            let api = api.clone();
            async move { Ok::<_, Infallible>(api.handle(req).await) }
        });
        let conn = hyper::server::conn::http1::Builder::new().serve_connection(io, service);
        tokio::select! {
            _ = conn => {}
            _ = went_down(down) => {}
        }
    }

    async fn handle(&self, req: Request<Incoming>) -> Response<Body> {
        let path = req.uri().path().to_string();
        let query_text = req.uri().query().unwrap_or("").to_string();
        let query: HashMap<String, String> = url::form_urlencoded::parse(query_text.as_bytes())
            .filter(|(k, _)| !k.is_empty())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        let is_watch = matches!(query.get("watch").map(String::as_str), Some("true" | "1"));
        lock(&self.inner.requests).push(RecordedRequest {
            method: req.method().to_string(),
            path: path.clone(),
            query: query_text,
            is_watch,
            authorization: req
                .headers()
                .get(http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
        });
        let mut faults = self.inner.faults.subscribe();
        let _ = faults.wait_for(|f| !f.hang && !f.frozen).await;
        let latency = faults.borrow().latency;
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        let method = req.method().clone();
        let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        if method == Method::GET {
            return self.route(&segments, &query, is_watch);
        }
        let body = match http_body_util::Limited::new(req.into_body(), MAX_BODY)
            .collect()
            .await
        {
            Ok(b) => b.to_bytes(),
            Err(e) => {
                return status(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    &format!("cannot read the body: {e}"),
                )
            }
        };
        let (group, version, rest) = match segments.as_slice() {
            ["api", "v1", rest @ ..] => ("", "v1", rest),
            ["apis", group, version, rest @ ..] => (*group, *version, rest),
            _ => return not_found("the server could not find the requested resource"),
        };
        self.write_request(&method, group, version, rest, &body)
    }

    fn route(
        &self,
        segments: &[&str],
        query: &HashMap<String, String>,
        is_watch: bool,
    ) -> Response<Body> {
        match segments {
            ["version"] => ok(json!({"major": "1", "minor": "33", "gitVersion": "v1.33.0",
                                     "gitCommit": "fake", "platform": "linux/amd64", "goVersion": "go1.24"})),
            ["readyz"] => match self.inner.faults.borrow().readiness {
                Readiness::Ready => status::text(StatusCode::OK, "ok"),
                Readiness::EtcdDown => status::text(StatusCode::INTERNAL_SERVER_ERROR, READYZ_ETCD_DOWN),
                Readiness::Forbidden => status(
                    StatusCode::FORBIDDEN,
                    "Forbidden",
                    "forbidden: User \"system:serviceaccount:crossplane-system:klutch-health\" cannot get path \"/readyz\"",
                ),
            },
            ["api"] => ok(json!({"kind": "APIVersions", "versions": ["v1"],
                "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": self.inner.addr.to_string()}]})),
            ["apis"] => ok(self.group_list()),
            ["api", "v1"] => ok(self.resource_list("", "v1")),
            ["apis", group] => match self.group(group) {
                Some(g) => ok(g),
                None => not_found(&format!(
                    "the server could not find the requested resource (group {group})"
                )),
            },
            ["apis", group, version] => {
                let list = self.resource_list(group, version);
                if list["resources"].as_array().is_some_and(|r| r.is_empty()) {
                    not_found(&format!(
                        "the server could not find the requested resource ({group}/{version})"
                    ))
                } else {
                    ok(list)
                }
            }
            ["api", "v1", rest @ ..] => self.resource_request("", "v1", rest, query, is_watch),
            ["apis", group, version, rest @ ..] => {
                self.resource_request(group, version, rest, query, is_watch)
            }
            _ => not_found("the server could not find the requested resource"),
        }
    }
}

/// One change of the fake's objects, as a follower ([`FakeApi::follow`]) sees it.
#[derive(Debug, Clone)]
pub struct ObjectChange {
    /// The `resourceVersion` the change got.
    pub rv: u64,
    /// `ADDED`, `MODIFIED` or `DELETED`.
    pub kind: &'static str,
    pub object: serde_json::Value,
}

/// The changes after a snapshot, in order.
pub struct Follower {
    changes: broadcast::Receiver<Arc<Change>>,
}

impl Follower {
    /// The next change; `Some(Err(n))` when `n` changes were missed (the follower fell behind: take a new
    /// snapshot), `None` once the fake is gone.
    pub async fn next(&mut self) -> Option<Result<ObjectChange, u64>> {
        match self.changes.recv().await {
            Ok(c) => Some(Ok(ObjectChange {
                rv: c.rv,
                kind: c.kind,
                object: c.object.clone(),
            })),
            Err(broadcast::error::RecvError::Lagged(n)) => Some(Err(n)),
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }
}

impl FakeApi {
    /// Every object now, the `resourceVersion` they are at, and every change after them: what a follower such
    /// as the real control plane's mirror needs to copy the fake's objects without missing one.
    pub fn follow(&self) -> (Vec<serde_json::Value>, u64, Follower) {
        let store = lock(&self.inner.store);
        // Subscribed under the store lock, under which every change is sent: none falls between the two.
        let changes = self.inner.changes.subscribe();
        let objects = store.objects.values().cloned().collect();
        (objects, store.rv, Follower { changes })
    }
}

/// Resolves once the server is set down (the borrowed value is not `Send`, so it is not kept).
async fn went_down(down: &mut watch::Receiver<bool>) {
    let _ = down.wait_for(|d| *d).await;
}

/// Puts `plural` into a fault set, or takes it out.
fn toggle(set: &mut BTreeSet<String>, plural: &str, on: bool) {
    if on {
        set.insert(plural.to_string());
    } else {
        set.remove(plural);
    }
}
