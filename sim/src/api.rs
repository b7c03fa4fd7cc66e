//! A fake Kubernetes API server on loopback, faithful enough for kube-runtime's watcher and real `kubectl`:
//! discovery, list (selectors, pagination, `resourceVersion`), get (`Status` 404), and watch as a chunked
//! stream of JSON events with replay from a `resourceVersion`, BOOKMARKs, `timeoutSeconds` and `410 Expired`
//! for compacted history. Tests drive it into faults: cut watches, compact, go down, hang, slow down.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::{broadcast, watch};
use tokio_stream::wrappers::ReceiverStream;

use crate::net::{rebind, stop_listening};
use crate::selector::{field, label, Selector};

type Body = BoxBody<Bytes, std::io::Error>;

/// One request the fake answered (or refused to).
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    pub query: String,
    pub is_watch: bool,
}

#[derive(Debug, Clone)]
struct ResourceType {
    group: String,
    version: String,
    plural: String,
    kind: String,
    namespaced: bool,
}

impl ResourceType {
    fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }
}

/// A change, as kept in history and sent to watchers.
#[derive(Debug, Clone)]
struct Change {
    rv: u64,
    resource: usize,
    kind: &'static str,
    object: Value,
}

#[derive(Default)]
struct Store {
    resources: Vec<ResourceType>,
    /// (resource index, namespace or "", name) → object.
    objects: BTreeMap<(usize, String, String), Value>,
    rv: u64,
    history: Vec<Change>,
    /// Watches from a resourceVersion below this get `410 Expired`.
    compacted: u64,
}

#[derive(Debug, Clone, Copy, Default)]
struct Faults {
    hang: bool,
    latency: Duration,
}

struct Inner {
    addr: SocketAddr,
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

    pub async fn start_on(addr: SocketAddr) -> anyhow::Result<FakeApi> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let api = FakeApi {
            inner: Arc::new(Inner {
                addr,
                store: Mutex::default(),
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
        for (g, v, plural, kind, namespaced) in [
            ("", "v1", "pods", "Pod", true),
            ("", "v1", "namespaces", "Namespace", false),
            ("apps", "v1", "deployments", "Deployment", true),
            ("pkg.crossplane.io", "v1", "providers", "Provider", false),
            (
                "dataservices.anynines.com",
                "v1",
                "providerconfigs",
                "ProviderConfig",
                false,
            ),
            (
                "kubernetes.crossplane.io",
                "v1alpha1",
                "providerconfigs",
                "ProviderConfig",
                false,
            ),
        ] {
            api.register(g, v, plural, kind, namespaced);
        }
        api.listen(listener);
        Ok(api)
    }

    /// Serves another resource type.
    pub fn register(&self, group: &str, version: &str, plural: &str, kind: &str, namespaced: bool) {
        lock(&self.inner.store).resources.push(ResourceType {
            group: group.into(),
            version: version.into(),
            plural: plural.into(),
            kind: kind.into(),
            namespaced,
        });
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.inner.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.inner.addr
    }

    /// A kubeconfig whose current context `fake` points at this server.
    pub fn write_kubeconfig(&self, path: &Path) -> std::io::Result<()> {
        std::fs::write(
            path,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {}\n\
contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n    namespace: default\n\
current-context: fake\nusers:\n- name: fake\n  user:\n    token: fake-token\n",
                self.url()
            ),
        )
    }

    /// Creates or replaces an object; it gets a new `resourceVersion`.
    pub fn apply(&self, mut obj: Value) {
        let mut store = lock(&self.inner.store);
        let api_version = obj["apiVersion"].as_str().unwrap_or_default().to_string();
        let kind = obj["kind"].as_str().unwrap_or_default().to_string();
        let Some(resource) = store.find_kind(&api_version, &kind) else {
            return;
        };
        let ns = obj
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let name = obj
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let key = (resource, ns, name);
        let existed = store.objects.contains_key(&key);
        if obj.pointer("/metadata/uid").is_none() {
            obj["metadata"]["uid"] = json!(format!("00000000-0000-4000-8000-{:012}", store.rv + 1));
        }
        if obj.pointer("/metadata/creationTimestamp").is_none() {
            obj["metadata"]["creationTimestamp"] = json!(now_rfc3339());
        }
        let kind = if existed { "MODIFIED" } else { "ADDED" };
        self.commit(&mut store, key, obj, kind);
    }

    /// Modifies an object in place; `false` when it does not exist.
    pub fn update(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
        f: impl FnOnce(&mut Value),
    ) -> bool {
        let mut store = lock(&self.inner.store);
        let Some(key) = store.key(api_version, kind, namespace, name) else {
            return false;
        };
        let Some(mut obj) = store.objects.get(&key).cloned() else {
            return false;
        };
        f(&mut obj);
        self.commit(&mut store, key, obj, "MODIFIED");
        true
    }

    /// Sets one condition in `status.conditions`, moving `lastTransitionTime` when its status changes.
    #[allow(clippy::too_many_arguments)]
    pub fn set_condition(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
        type_: &str,
        status: &str,
        reason: &str,
        message: &str,
    ) -> bool {
        self.update(api_version, kind, namespace, name, |obj| {
            if !obj["status"]["conditions"].is_array() {
                obj["status"]["conditions"] = json!([]);
            }
            let Some(conditions) = obj["status"]["conditions"].as_array_mut() else {
                return;
            };
            let now = now_rfc3339();
            let mut condition = json!({"type": type_, "status": status, "reason": reason,
                                       "lastTransitionTime": now});
            if !message.is_empty() {
                condition["message"] = json!(message);
            }
            match conditions.iter_mut().find(|c| c["type"] == type_) {
                Some(c) => {
                    if c["status"] == status {
                        condition["lastTransitionTime"] = c["lastTransitionTime"].clone();
                    }
                    *c = condition;
                }
                None => conditions.push(condition),
            }
        })
    }

    pub fn delete(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> bool {
        let mut store = lock(&self.inner.store);
        let Some(key) = store.key(api_version, kind, namespace, name) else {
            return false;
        };
        let Some(obj) = store.objects.remove(&key) else {
            return false;
        };
        store.rv += 1;
        let mut obj = obj;
        obj["metadata"]["resourceVersion"] = json!(store.rv.to_string());
        let change = Change {
            rv: store.rv,
            resource: key.0,
            kind: "DELETED",
            object: obj,
        };
        store.record(change.clone());
        let _ = self.inner.changes.send(Arc::new(change));
        true
    }

    pub fn get(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Option<Value> {
        let store = lock(&self.inner.store);
        let key = store.key(api_version, kind, namespace, name)?;
        store.objects.get(&key).cloned()
    }

    fn commit(
        &self,
        store: &mut Store,
        key: (usize, String, String),
        mut obj: Value,
        kind: &'static str,
    ) {
        store.rv += 1;
        obj["metadata"]["resourceVersion"] = json!(store.rv.to_string());
        let change = Change {
            rv: store.rv,
            resource: key.0,
            kind,
            object: obj.clone(),
        };
        store.objects.insert(key, obj);
        store.record(change.clone());
        // Sent under the store lock, so a watch that subscribes under the same lock misses nothing.
        let _ = self.inner.changes.send(Arc::new(change));
    }

    /// Ends every open watch stream abruptly, in the middle of an event.
    pub fn cut_watches(&self) {
        self.inner.cut.send_modify(|g| *g += 1);
    }

    /// Forgets history: watches from an older `resourceVersion` get `410 Expired`.
    pub fn compact(&self) {
        let mut store = lock(&self.inner.store);
        store.compacted = store.rv;
        store.history.clear();
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

    /// The newest `resourceVersion` handed out.
    pub fn resource_version(&self) -> u64 {
        lock(&self.inner.store).rv
    }

    /// Accepts requests but answers none while set.
    pub fn set_hang(&self, hang: bool) {
        self.inner.faults.send_modify(|f| f.hang = hang);
    }

    /// Delays every answer.
    pub fn set_latency(&self, latency: Duration) {
        self.inner.faults.send_modify(|f| f.latency = latency);
    }

    pub fn set_bookmark_interval(&self, every: Duration) {
        *lock(&self.inner.bookmark_every) = every;
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
            let api = self.clone();
            let mut down = self.inner.down.subscribe();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let api = api.clone();
                    async move { Ok::<_, Infallible>(api.handle(req).await) }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service);
                tokio::select! {
                    _ = conn => {}
                    _ = went_down(&mut down) => {}
                }
            });
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
        });
        let mut faults = self.inner.faults.subscribe();
        let _ = faults.wait_for(|f| !f.hang).await;
        let latency = faults.borrow().latency;
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        if req.method() != Method::GET {
            return status(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                "the fake API server is read-only",
            );
        }
        let segments: Vec<&str> = path
            .trim_matches('/')
            .split('/')
            .filter(|s| !s.is_empty())
            .collect();
        match segments.as_slice() {
            ["version"] => ok(json!({"major": "1", "minor": "33", "gitVersion": "v1.33.0",
                                     "gitCommit": "fake", "platform": "linux/amd64", "goVersion": "go1.24"})),
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
            ["api", "v1", rest @ ..] => self.resource_request("", "v1", rest, &query, is_watch),
            ["apis", group, version, rest @ ..] => {
                self.resource_request(group, version, rest, &query, is_watch)
            }
            _ => not_found("the server could not find the requested resource"),
        }
    }

    fn group_list(&self) -> Value {
        let store = lock(&self.inner.store);
        let mut groups: Vec<String> = Vec::new();
        for r in store.resources.iter().filter(|r| !r.group.is_empty()) {
            if !groups.contains(&r.group) {
                groups.push(r.group.clone());
            }
        }
        drop(store);
        let groups: Vec<Value> = groups.iter().filter_map(|g| self.group(g)).collect();
        json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
    }

    fn group(&self, group: &str) -> Option<Value> {
        let store = lock(&self.inner.store);
        let versions: Vec<Value> = store
            .resources
            .iter()
            .filter(|r| r.group == group)
            .map(|r| r.version.clone())
            .fold(Vec::<String>::new(), |mut acc, v| {
                if !acc.contains(&v) {
                    acc.push(v);
                }
                acc
            })
            .into_iter()
            .map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v}))
            .collect();
        let preferred = versions.first()?.clone();
        Some(
            json!({"kind": "APIGroup", "apiVersion": "v1", "name": group, "versions": versions,
                    "preferredVersion": preferred}),
        )
    }

    fn resource_list(&self, group: &str, version: &str) -> Value {
        let store = lock(&self.inner.store);
        let resources: Vec<Value> = store
            .resources
            .iter()
            .filter(|r| r.group == group && r.version == version)
            .map(|r| {
                let mut v = json!({"name": r.plural, "singularName": r.kind.to_lowercase(), "namespaced": r.namespaced,
                    "kind": r.kind, "verbs": ["get", "list", "watch"]});
                let short: &[&str] = match r.plural.as_str() {
                    "pods" => &["po"],
                    "namespaces" => &["ns"],
                    "deployments" => &["deploy"],
                    _ => &[],
                };
                if !short.is_empty() {
                    v["shortNames"] = json!(short);
                }
                if r.group == "pkg.crossplane.io" || r.group.ends_with("crossplane.io") || r.group.contains("anynines") {
                    v["categories"] = json!(["crossplane"]);
                }
                v
            })
            .collect();
        let gv = if group.is_empty() {
            version.to_string()
        } else {
            format!("{group}/{version}")
        };
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources})
    }

    fn resource_request(
        &self,
        group: &str,
        version: &str,
        rest: &[&str],
        query: &HashMap<String, String>,
        is_watch: bool,
    ) -> Response<Body> {
        let (namespace, plural, name) = match rest {
            ["namespaces", ns, plural] => (Some(*ns), *plural, None),
            ["namespaces", ns, plural, name] => (Some(*ns), *plural, Some(*name)),
            [plural] => (None, *plural, None),
            [plural, name] => (None, *plural, Some(*name)),
            _ => return not_found("the server could not find the requested resource"),
        };
        let store = lock(&self.inner.store);
        let Some(resource) = store
            .resources
            .iter()
            .position(|r| r.group == group && r.version == version && r.plural == plural)
        else {
            return not_found(&format!(
                "the server could not find the requested resource ({plural})"
            ));
        };
        let rt = store.resources[resource].clone();
        let parse = |key: &str, f: fn(&Value, &str) -> Option<String>| {
            query
                .get(key)
                .map(|s| Selector::parse(s).map(|sel| (sel, f)))
                .transpose()
        };
        let (labels, fields) = match (parse("labelSelector", label), parse("fieldSelector", field))
        {
            (Ok(l), Ok(f)) => (l, f),
            (Err(e), _) | (_, Err(e)) => return status(StatusCode::BAD_REQUEST, "BadRequest", &e),
        };
        let number = |key: &str| -> Result<Option<u64>, String> {
            match query.get(key).map(String::as_str) {
                None | Some("") => Ok(None),
                Some(v) => v
                    .parse()
                    .map(Some)
                    .map_err(|_| format!("invalid {key} {v:?}: expected a non-negative integer")),
            }
        };
        let (rv, limit, timeout) = match (
            number("resourceVersion"),
            number("limit"),
            number("timeoutSeconds"),
        ) {
            (Ok(rv), Ok(limit), Ok(timeout)) => (rv, limit, timeout),
            (Err(e), ..) | (_, Err(e), _) | (.., Err(e)) => {
                return status(StatusCode::BAD_REQUEST, "BadRequest", &e)
            }
        };
        let in_namespace = namespace.map(str::to_string);
        let matches = move |obj: &Value| {
            let ns_ok = in_namespace.as_deref().is_none_or(|ns| {
                obj.pointer("/metadata/namespace").and_then(Value::as_str) == Some(ns)
            });
            ns_ok
                && labels
                    .as_ref()
                    .is_none_or(|(s, f)| s.matches(|k| f(obj, k)))
                && fields
                    .as_ref()
                    .is_none_or(|(s, f)| s.matches(|k| f(obj, k)))
        };
        if let Some(name) = name {
            let key = (
                resource,
                namespace.unwrap_or("").to_string(),
                name.to_string(),
            );
            return match store.objects.get(&key) {
                Some(obj) => ok(obj.clone()),
                None => status_with(
                    StatusCode::NOT_FOUND,
                    "NotFound",
                    &format!("{}.{} \"{name}\" not found", rt.plural, rt.group)
                        .replace(". \"", " \""),
                    json!({"name": name, "group": rt.group, "kind": rt.plural}),
                ),
            };
        }
        if is_watch {
            let bookmarks = query
                .get("allowWatchBookmarks")
                .is_some_and(|v| v == "true");
            let timeout = Duration::from_secs(timeout.unwrap_or(1800));
            return self.watch(store, resource, &rt, rv, bookmarks, timeout, matches);
        }
        if let Some(rv) =
            rv.filter(|_| query.get("resourceVersionMatch").map(String::as_str) == Some("Exact"))
        {
            if rv < store.compacted {
                return status(
                    StatusCode::GONE,
                    "Expired",
                    &format!("too old resource version: {rv} ({})", store.rv),
                );
            }
        }
        let all: Vec<&Value> = store
            .objects
            .range(
                (resource, String::new(), String::new())
                    ..(resource + 1, String::new(), String::new()),
            )
            .map(|(_, v)| v)
            .filter(|o| matches(o))
            .collect();
        let start: usize = match query.get("continue").map(String::as_str) {
            None | Some("") => 0,
            Some(c) => match c.parse() {
                Ok(start) => start,
                Err(_) => {
                    return status(
                        StatusCode::BAD_REQUEST,
                        "BadRequest",
                        &format!("invalid continue token {c:?}"),
                    )
                }
            },
        };
        let limit = limit
            .filter(|l| *l > 0)
            .and_then(|l| usize::try_from(l).ok())
            .unwrap_or(usize::MAX);
        let page: Vec<Value> = all
            .iter()
            .skip(start)
            .take(limit)
            .map(|o| (*o).clone())
            .collect();
        let mut metadata = json!({"resourceVersion": store.rv.to_string()});
        if start.saturating_add(limit) < all.len() {
            metadata["continue"] = json!((start + limit).to_string());
            metadata["remainingItemCount"] = json!(all.len() - start - limit);
        }
        ok(
            json!({"apiVersion": rt.api_version(), "kind": format!("{}List", rt.kind), "metadata": metadata, "items": page}),
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn watch(
        &self,
        store: MutexGuard<'_, Store>,
        resource: usize,
        rt: &ResourceType,
        from: Option<u64>,
        bookmarks: bool,
        timeout: Duration,
        matches: impl Fn(&Value) -> bool + Send + 'static,
    ) -> Response<Body> {
        // "0" means "any version": start with the current state, like no version at all.
        let from = from.filter(|rv| *rv != 0);
        let mut first: Vec<Value> = Vec::new();
        let mut expired = false;
        match from {
            None => {
                for ((r, ..), obj) in store.objects.iter() {
                    if *r == resource && matches(obj) {
                        first.push(json!({"type": "ADDED", "object": obj}));
                    }
                }
            }
            Some(rv) if rv < store.compacted => expired = true,
            Some(rv) => {
                let start = store.history.partition_point(|c| c.rv <= rv);
                for c in store.history[start..]
                    .iter()
                    .filter(|c| c.resource == resource)
                {
                    if matches(&c.object) {
                        first.push(json!({"type": c.kind, "object": c.object}));
                    }
                }
            }
        }
        if expired {
            let rv = from.unwrap_or(0);
            first.push(expired_event(rv, store.compacted));
        }
        let mut changes = self.inner.changes.subscribe();
        let rv_now = store.rv;
        drop(store);
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(64);
        let inner = self.inner.clone();
        let (api_version, kind) = (rt.api_version(), rt.kind.clone());
        tokio::spawn(async move {
            let send = |v: &Value| Ok(Frame::data(Bytes::from(format!("{v}\n"))));
            for e in &first {
                if tx.send(send(e)).await.is_err() {
                    return;
                }
            }
            if expired {
                return;
            }
            let mut cut = inner.cut.subscribe();
            let mut expire = inner.expire.subscribe();
            let mut last_rv = rv_now;
            let every = *lock(&inner.bookmark_every);
            let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            let end = tokio::time::sleep(timeout);
            tokio::pin!(end);
            loop {
                tokio::select! {
                    c = changes.recv() => match c {
                        Ok(c) => {
                            last_rv = c.rv;
                            if c.resource == resource && matches(&c.object) {
                                let ev = json!({"type": c.kind, "object": c.object});
                                if tx.send(send(&ev)).await.is_err() { return; }
                            }
                        }
                        // Too slow a reader: end its stream, as the real server does.
                        Err(_) => return,
                    },
                    _ = ticks.tick(), if bookmarks => {
                        let ev = json!({"type": "BOOKMARK", "object": {"apiVersion": api_version, "kind": kind,
                                        "metadata": {"resourceVersion": last_rv.to_string()}}});
                        if tx.send(send(&ev)).await.is_err() { return; }
                    }
                    _ = cut.changed() => {
                        // Half an event, then the connection dies: a cut in the middle of an event.
                        let _ = tx.send(Ok(Frame::data(Bytes::from_static(b"{\"type\":\"MODIFIED\",\"obj")))).await;
                        let _ = tx.send(Err(std::io::Error::other("watch cut by the test"))).await;
                        return;
                    }
                    _ = expire.changed() => {
                        let _ = tx.send(send(&expired_event(last_rv, last_rv))).await;
                        return;
                    }
                    _ = &mut end => return,
                    // The client went away (or the server went down): nothing more to send.
                    _ = tx.closed() => return,
                }
            }
        });
        let body = StreamBody::new(ReceiverStream::new(rx)).boxed();
        let mut r = Response::new(body);
        r.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        r
    }
}

/// History kept for watch replay; older changes are compacted away (a real server keeps about 5 minutes).
const HISTORY_LIMIT: usize = 100_000;

impl Store {
    fn record(&mut self, change: Change) {
        self.history.push(change);
        if self.history.len() > HISTORY_LIMIT {
            self.history.drain(..HISTORY_LIMIT / 2);
            if let Some(first) = self.history.first() {
                self.compacted = first.rv - 1;
            }
        }
    }

    fn find_kind(&self, api_version: &str, kind: &str) -> Option<usize> {
        self.resources
            .iter()
            .position(|r| r.api_version() == api_version && r.kind == kind)
    }

    fn key(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Option<(usize, String, String)> {
        Some((
            self.find_kind(api_version, kind)?,
            namespace.unwrap_or("").to_string(),
            name.to_string(),
        ))
    }
}

/// Resolves once the server is set down (the borrowed value is not `Send`, so it is not kept).
async fn went_down(down: &mut watch::Receiver<bool>) {
    let _ = down.wait_for(|d| *d).await;
}

fn expired_event(rv: u64, now: u64) -> Value {
    json!({"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": format!("too old resource version: {rv} ({now})"), "reason": "Expired", "code": 410}})
}

/// Now, as Kubernetes writes times.
pub fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    rfc3339(secs)
}

/// Seconds since the epoch as `YYYY-MM-DDTHH:MM:SSZ` (the civil-from-days algorithm).
pub fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn json_body(code: StatusCode, v: &Value) -> Response<Body> {
    let mut r = Response::new(
        Full::new(Bytes::from(v.to_string()))
            .map_err(|e| match e {})
            .boxed(),
    );
    *r.status_mut() = code;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}

fn ok(v: Value) -> Response<Body> {
    json_body(StatusCode::OK, &v)
}

fn status(code: StatusCode, reason: &str, message: &str) -> Response<Body> {
    status_with(code, reason, message, Value::Null)
}

fn status_with(code: StatusCode, reason: &str, message: &str, details: Value) -> Response<Body> {
    let mut v = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                       "message": message, "reason": reason, "code": code.as_u16()});
    if !details.is_null() {
        v["details"] = details;
    }
    json_body(code, &v)
}

fn not_found(message: &str) -> Response<Body> {
    status(StatusCode::NOT_FOUND, "NotFound", message)
}
