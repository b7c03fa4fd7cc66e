//! The HTTP API. Every answer comes from the latest published report: no request ever waits on Kubernetes
//! or on provider-anynines. Connections are bounded in number and in how long they may take to send headers.

use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use bytes::Bytes;
use http::request::Parts;
use http::{header, HeaderValue, Method, Response, StatusCode};
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use subtle::ConstantTimeEq;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

use crate::clock::{Instant, Moment};
use crate::config::{self, DetailsPolicy};
use crate::engine::Published;
use crate::http::admission::{Admitted, Answering, Connections, Peer, Toucher};
use crate::http::routes::{self, Route, Serves};
use crate::metrics::Metrics;
use crate::render::{self, Details, Identity};
use crate::telemetry::LogLimiter;
use crate::verdict::report::{Endpoint, Served};

// Content types as ready header values: `from_static` checks its bytes, which a `static` does once, at compile
// time, instead of on every request.
const HEALTH_JSON_MEDIA: &str = "application/health+json";
static HEALTH_JSON: HeaderValue = HeaderValue::from_static(HEALTH_JSON_MEDIA);
static JSON: HeaderValue = HeaderValue::from_static("application/json");
static TEXT: HeaderValue = HeaderValue::from_static("text/plain; charset=utf-8");
static HTML: HeaderValue = HeaderValue::from_static("text/html; charset=utf-8");
static PROMETHEUS: HeaderValue =
    HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8");
static OPENMETRICS: HeaderValue =
    HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8");
static NO_STORE: HeaderValue = HeaderValue::from_static("no-store");
static NOSNIFF: HeaderValue = HeaderValue::from_static("nosniff");

/// What request handling needs: the latest report and how to show it.
pub struct State {
    latest: watch::Receiver<Arc<Published>>,
    metrics: Arc<Metrics>,
    /// Replaced as a whole by a reload (a new identity, details policy, or a rotated token); shared by the
    /// listeners of one process.
    shown: Arc<RwLock<Arc<Presentation>>>,
    audience: Audience,
    /// Shared by the listeners of one process: shutting down is the process's.
    shutting_down: Arc<AtomicBool>,
}

/// Who a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audience {
    /// Kubelet, port-forward, Prometheus, the CLI: every path, details as `server.details` says.
    Cluster,
    /// Anyone (`server.public_listen`): the health paths only, reasons always withheld.
    Public,
}

impl Audience {
    fn as_str(self) -> &'static str {
        match self {
            Audience::Cluster => "main",
            Audience::Public => "public",
        }
    }
}

/// How answers present the report: who the service says it is, and who may read details.
#[derive(Debug, Clone)]
pub struct Presentation {
    pub identity: Identity,
    pub details: DetailsPolicy,
    pub token: Option<String>,
}

impl Presentation {
    /// The server's view of a configuration (at start and at each reload): identity, details policy, the
    /// token read from `server.token_file`.
    pub fn of(config: &config::Config, token: Option<String>) -> Presentation {
        Presentation {
            identity: Identity::of(config),
            details: config.server.details,
            token,
        }
    }
}

impl State {
    pub fn new(
        latest: watch::Receiver<Arc<Published>>,
        metrics: Arc<Metrics>,
        shown: Presentation,
    ) -> State {
        State {
            latest,
            metrics,
            shown: Arc::new(RwLock::new(Arc::new(shown))),
            audience: Audience::Cluster,
            shutting_down: Arc::default(),
        }
    }

    /// The same service for the public listener: same report, same presentation, same shutdown, its own
    /// audience (which withholds every reason, whatever `details` and a token say).
    pub fn public(&self) -> State {
        State {
            latest: self.latest.clone(),
            metrics: self.metrics.clone(),
            shown: self.shown.clone(),
            audience: Audience::Public,
            shutting_down: self.shutting_down.clone(),
        }
    }

    /// Takes what a reload configured.
    pub(crate) fn present(&self, shown: Presentation) {
        *self.shown.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(shown);
    }

    fn shown(&self) -> Arc<Presentation> {
        self.shown
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// What this caller may read: nothing on the public listener, else what the presentation allows.
    fn details_for(&self, shown: &Presentation, req: &Parts) -> Details {
        match self.audience {
            Audience::Public => Details::Withheld,
            Audience::Cluster => shown.details_for(req),
        }
    }
}

impl Presentation {
    fn details_for(&self, req: &Parts) -> Details {
        match self.details {
            DetailsPolicy::Always => Details::Shown,
            DetailsPolicy::Never => Details::Withheld,
            DetailsPolicy::Token => {
                // The scheme is case-insensitive (RFC 9110 §11.1): `bearer` and `BEARER` work too.
                let offered = req
                    .headers
                    .get(header::AUTHORIZATION)
                    .map(|v| v.as_bytes())
                    .filter(|v| v.len() > 7 && v[..7].eq_ignore_ascii_case(b"Bearer "))
                    .map(|v| v[7..].trim_ascii());
                match (offered, &self.token) {
                    (Some(offered), Some(token)) if bool::from(offered.ct_eq(token.as_bytes())) => {
                        Details::Shown
                    }
                    _ => Details::Withheld,
                }
            }
        }
    }
}

/// Server limits from `[server]`, for one listener.
#[derive(Debug, Clone)]
pub(crate) struct Limits {
    pub header_read_timeout: Duration,
    pub max_connections: usize,
    pub shutdown_delay: Duration,
    /// How long in-flight requests may take to finish once the listener is closed.
    pub drain_timeout: Duration,
}

impl Limits {
    /// The main listener's limits; the public one differs in `max_connections` only.
    pub(crate) fn new(s: &config::Server, max_connections: usize) -> Limits {
        Limits {
            header_read_timeout: s.header_read_timeout,
            max_connections,
            shutdown_delay: s.shutdown_delay,
            drain_timeout: Duration::from_secs(10),
        }
    }
}

/// Serves until `shutdown` resolves, then: `/readyz` fails at once, the listener stays open for
/// `shutdown_delay` so load balancers notice, then closes, and in-flight requests finish.
pub(crate) async fn serve(
    listener: TcpListener,
    state: Arc<State>,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    // Every connection task holds a clone of `done`; `recv` returns `None` once all of them have finished.
    let (done, mut drained) = mpsc::channel::<()>(1);
    let serving = Serving {
        listener,
        state: state.clone(),
        builder: Arc::new(builder(&limits)),
        connections: Connections::new(limits.max_connections),
        done,
        limits: limits.clone(),
        refused: Default::default(),
    };
    serving.accept_until(shutdown).await;
    state.shutting_down.store(true, Ordering::SeqCst);
    state.metrics.shutting_down();
    tracing::info!(
        delay = %crate::human::duration(limits.shutdown_delay),
        listener = state.audience.as_str(),
        "shutting down: /readyz now answers 503; the listener closes after the delay"
    );
    serving
        .accept_until(tokio::time::sleep(limits.shutdown_delay))
        .await;
    let connections = serving.close();
    connections.close_all();
    if tokio::time::timeout(limits.drain_timeout, drained.recv())
        .await
        .is_err()
    {
        tracing::warn!("some connections were still busy after the drain timeout; closing them");
    }
    tracing::info!(listener = state.audience.as_str(), "stopped serving");
}

/// HTTP/1.1, and HTTP/2 with prior knowledge (h2c), with the same timeouts: a client speaking h2c must get
/// answers, not a silently closed connection.
fn builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // hyper's header read timeout also closes a keep-alive connection idle that long; the headers'
        // own timeout is the connection's watchdog (serve_connection).
        .header_read_timeout(
            KEEP_ALIVE_IDLE
                .max(limits.header_read_timeout)
                .min(HEADER_READ_TIMEOUT_MAX),
        )
        .max_buf_size(64 * 1024);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(MAX_STREAMS)
        .max_header_list_size(64 * 1024);
    builder
}

/// How long an idle keep-alive connection stays open: longer than the upstream keep-alive of the proxies and
/// load balancers in front of probes (ingress-nginx and AWS's 60 s, Google Cloud's 600 s), so that they, not
/// klutch-health, close it. A server that closes first races the proxy's next request on that connection,
/// which then fails (a 502 from the proxy). Idle connections cost a slot only until one is needed: at
/// `max_connections` they are the first closed.
const KEEP_ALIVE_IDLE: Duration = Duration::from_secs(620);

/// The longest header read timeout handed to hyper, which adds it to the standard library's `Instant` (a
/// configured one of centuries would overflow it and kill the connection's task); a day is as good as never
/// for a request's headers.
const HEADER_READ_TIMEOUT_MAX: Duration = Duration::from_secs(24 * 3600);

/// Streams one HTTP/2 connection may have open: answers are immediate, so more would only hold memory.
const MAX_STREAMS: u32 = 64;

/// One listener while it accepts.
struct Serving {
    listener: TcpListener,
    state: Arc<State>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    connections: Arc<Connections>,
    done: mpsc::Sender<()>,
    limits: Limits,
    /// Newcomers closed at once because every slot was answering, for the log.
    refused: std::sync::Mutex<LogLimiter>,
}

impl Serving {
    /// Closes the listener; what is left is its connections.
    fn close(self) -> Arc<Connections> {
        self.connections
    }

    async fn accept_until(&self, until: impl Future<Output = ()>) {
        tokio::pin!(until);
        loop {
            let stream = tokio::select! {
                r = self.listener.accept() => match r {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        // Out of file descriptors and the like: pause briefly rather than spin.
                        tracing::warn!(error = %e, "cannot accept a connection");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = &mut until => return,
            };
            self.spawn(stream);
        }
    }

    fn spawn(&self, stream: TcpStream) {
        let _ = stream.set_nodelay(true);
        let peer = Peer::of(&stream);
        let Some(admitted) = self.connections.admit(peer) else {
            // Every slot is answering a request: none may be cut off, so the newcomer goes at once.
            let mut refused = self.refused.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(left_out) = refused.allow() {
                tracing::warn!(
                    listener = self.state.audience.as_str(),
                    max_connections = self.limits.max_connections,
                    left_out,
                    "a new connection was closed at once: every connection slot is answering a request"
                );
            }
            return;
        };
        let toucher = admitted.activity();
        let state = self.state.clone();
        let service = TowerToHyperService::new(tower::service_fn(move |req: http::Request<_>| {
            let answering = toucher.answering(req.version() == http::Version::HTTP_2);
            let state = state.clone();
            async move {
                let (parts, _body) = http::Request::into_parts(req);
                let latest = state.latest.borrow().clone();
                let response = handle(&state, &latest, &parts);
                Ok::<_, Infallible>(response.map(|body| Sending {
                    body,
                    _answering: answering,
                }))
            }
        }));
        let builder = self.builder.clone();
        let done = self.done.clone();
        let limits = self.limits.clone();
        tokio::spawn(async move {
            serve_connection(stream, &builder, service, &admitted, &limits).await;
            drop(admitted);
            drop(done);
        });
    }
}

/// Serves one connection until it ends or the table asks it to close; then in-flight requests finish.
async fn serve_connection<S>(
    stream: TcpStream,
    builder: &auto::Builder<TokioExecutor>,
    service: S,
    admitted: &Admitted,
    limits: &Limits,
) where
    S: hyper::service::Service<http::Request<hyper::body::Incoming>, Response = Response<Sending>>
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    // The protocol is sniffed from the first bytes, which nothing else times: a client that connects and
    // sends nothing is closed after header_read_timeout, as HTTP/1 clients that stop mid-header are.
    let mut first = [0u8; 1];
    tokio::select! {
        r = tokio::time::timeout(limits.header_read_timeout, stream.peek(&mut first)) => {
            if !matches!(r, Ok(Ok(n)) if n > 0) {
                return;
            }
            admitted.arrived();
        }
        _ = admitted.closing() => return,
    }
    let stream = Watched {
        stream,
        activity: admitted.activity(),
    };
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => return,
        _ = admitted.closing() => {}
        // A request begun and not finished within header_read_timeout (a slowloris): closed at once.
        _ = admitted.headers_overdue(limits.header_read_timeout) => return,
    }
    conn.as_mut().graceful_shutdown();
    let _ = tokio::time::timeout(limits.drain_timeout, conn).await;
}

/// A connection's socket that tells its admission entry when bytes arrive: a new request's first ones start
/// the header read timeout.
struct Watched {
    stream: TcpStream,
    activity: Toucher,
}

impl tokio::io::AsyncRead for Watched {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = std::pin::Pin::new(&mut self.stream).poll_read(cx, buf);
        if matches!(polled, std::task::Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.arrived();
        }
        polled
    }
}

impl tokio::io::AsyncWrite for Watched {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// An answer's body, which keeps its connection counted as answering (never cut off to admit another)
/// until hyper has sent it and drops it.
pub(crate) struct Sending {
    body: Full<Bytes>,
    _answering: Answering,
}

impl hyper::body::Body for Sending {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Infallible>>> {
        std::pin::Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// Answers one request from `latest`, the report last published. Synchronous and body-free: everything it
/// needs is in memory and in the request's head, so tests call it in-process.
pub fn handle(state: &State, latest: &Published, req: &Parts) -> Response<Full<Bytes>> {
    let (route, mut response) = route(state, latest, req);
    state
        .metrics
        .http_request(route, response.status().as_u16());
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, NO_STORE.clone());
    if req.method == Method::HEAD {
        let size = hyper::body::Body::size_hint(response.body())
            .exact()
            .unwrap_or(0);
        response
            .headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(size));
        *response.body_mut() = Full::new(Bytes::new());
    }
    response
}

fn route(state: &State, latest: &Published, req: &Parts) -> (&'static str, Response<Full<Bytes>>) {
    let path = req.uri.path();
    let found = Route::find(path).filter(|(r, _)| r.public || state.audience != Audience::Public);
    let Some((route, name)) = found else {
        return (
            routes::OTHER,
            plain(
                StatusCode::NOT_FOUND,
                format!("404 page not found: {path}\n"),
            ),
        );
    };
    if req.method != Method::GET && req.method != Method::HEAD {
        let mut r = plain(
            StatusCode::METHOD_NOT_ALLOWED,
            "405 method not allowed: use GET or HEAD\n".into(),
        );
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return (route.path, r);
    }
    let response = match route.serves {
        Serves::Livez => ok(),
        Serves::Metrics => {
            if accepts(&req.headers, "application/openmetrics-text") {
                let body = state.metrics.encode_openmetrics().into();
                with_type(StatusCode::OK, &OPENMETRICS, body)
            } else {
                let body = state.metrics.encode_prometheus().into();
                with_type(StatusCode::OK, &PROMETHEUS, body)
            }
        }
        Serves::Passthrough => passthrough(latest),
        Serves::History => {
            let history = latest.history.read();
            let details = state.details_for(&state.shown(), req);
            let body = render::history::json(&history, details, present(latest));
            with_type(StatusCode::OK, &JSON, body.into())
        }
        Serves::Page => {
            let shown = state.shown();
            let page = render::html::page(
                &latest.report,
                &shown.identity,
                state.details_for(&shown, req),
                present(latest),
                &latest.history.read(),
            );
            with_type(StatusCode::OK, &HTML, page.into())
        }
        Serves::Health(endpoint) => health(state, req, latest, endpoint, None),
        Serves::HealthOf(endpoint) => health(state, req, latest, endpoint, name),
    };
    (route.path, response)
}

/// Query parameters of a health request.
#[derive(Debug, Default, PartialEq)]
pub struct Query {
    pub verbose: bool,
    pub exclude: Vec<String>,
    pub json: bool,
}

/// Reads `verbose`, repeatable `exclude` and `format=json`; anything else is ignored, nothing is an error.
pub fn parse_query(query: Option<&str>) -> Query {
    let mut q = Query::default();
    for (k, v) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        match &*k {
            "verbose" => q.verbose = !matches!(&*v, "false" | "0"),
            "exclude" => q.exclude.push(v.into_owned()),
            "format" => q.json = v == "json",
            _ => {}
        }
    }
    q
}

/// Whether the request's `Accept` names `media` as acceptable: exactly (no wildcards: a browser's `*/*` gets
/// text), and not with `q=0`, which RFC 9110 §12.4.2 defines as "not acceptable".
fn accepts(headers: &http::HeaderMap, media: &str) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|range| {
            let mut parts = range.split(';').map(str::trim);
            let named = parts.next().is_some_and(|m| m.eq_ignore_ascii_case(media));
            named
                && !parts.any(|p| {
                    p.split_once('=').is_some_and(|(k, q)| {
                        k.trim().eq_ignore_ascii_case("q")
                            && q.trim().parse::<f32>().is_ok_and(|q| q <= 0.0)
                    })
                })
        })
}

/// The content type a JSON-asking caller gets, or `None` for text.
fn json_type(req: &Parts, q: &Query) -> Option<&'static HeaderValue> {
    if q.json || accepts(&req.headers, HEALTH_JSON_MEDIA) {
        Some(&HEALTH_JSON)
    } else if accepts(&req.headers, "application/json") {
        Some(&JSON)
    } else {
        None
    }
}

fn health(
    state: &State,
    req: &Parts,
    latest: &Published,
    endpoint: Endpoint,
    only: Option<&str>,
) -> Response<Full<Bytes>> {
    let q = parse_query(req.uri.query());
    let shown = state.shown();
    let details = state.details_for(&shown, req);
    let json = json_type(req, &q);
    let report = latest.report.endpoint(endpoint);
    if endpoint == Endpoint::Readyz && state.shutting_down.load(Ordering::SeqCst) {
        return match json {
            Some(ct) => {
                let selection = report.all();
                let doc = render::json::document(
                    &latest.report,
                    &shown.identity,
                    &selection,
                    details,
                    Some("shutting down"),
                );
                with_type(StatusCode::SERVICE_UNAVAILABLE, ct, doc.into())
            }
            None => plain(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n".into()),
        };
    }
    // The common request (the whole endpoint) needs no selection: its verdict and bodies are ready.
    let common = only.is_none() && q.exclude.is_empty();
    let selection = if common {
        None
    } else if let Some(selection) = report.select(only, &q.exclude) {
        Some(selection)
    } else {
        let name = only.unwrap_or_default();
        return plain(
            StatusCode::NOT_FOUND,
            format!(
                "404 no check or item named {name:?} on /{}\n",
                endpoint.as_str()
            ),
        );
    };
    let passed = selection
        .as_ref()
        .map_or_else(|| report.passed(), |s| s.passed());
    let code = if passed {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let all = || report.all();
    if let Some(ct) = json {
        let cached = common
            .then(|| latest.bodies.json(&latest.report, endpoint, details))
            .flatten();
        let body = cached.unwrap_or_else(|| {
            let selection = selection.unwrap_or_else(all);
            render::json::document(&latest.report, &shown.identity, &selection, details, None)
                .into()
        });
        return with_type(code, ct, body);
    }
    if passed && !q.verbose {
        return ok();
    }
    if !q.verbose {
        // Only what does not pass: a keyword monitor looking for `ok` must not find it in a failure.
        let body = render::text::failing(
            &latest.report,
            endpoint,
            &selection.unwrap_or_else(all),
            details,
        );
        return with_type(code, &TEXT, body.into());
    }
    let cached = common
        .then(|| latest.bodies.verbose(&latest.report, endpoint, details))
        .flatten();
    let body = cached.unwrap_or_else(|| {
        render::text::verbose(
            &latest.report,
            endpoint,
            &selection.unwrap_or_else(all),
            details,
        )
        .into()
    });
    with_type(code, &TEXT, body)
}

/// The last poll's outcome of the check that serves `/backend-health`, never an older one: a monitor pointed
/// here sees what it would see upstream, or `502`/`504` with the reason there was no answer, or `503` before
/// the first poll; `404` when no `backend-status` check is configured. The content type comes from what the
/// body is, never from upstream's header, and `nosniff` keeps browsers from guessing another.
fn passthrough(latest: &Published) -> Response<Full<Bytes>> {
    let mut r = match &latest.report.backend {
        None => plain(
            StatusCode::NOT_FOUND,
            "404 no backend-status check is configured, so there is no poll to pass through\n"
                .into(),
        ),
        Some(Served { check, last: None }) => plain(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("check {check} has not polled provider-anynines' health server yet\n"),
        ),
        Some(Served { last: Some(b), .. }) => {
            let code = StatusCode::from_u16(b.status).unwrap_or(StatusCode::BAD_GATEWAY);
            let ct = if b.json { &JSON } else { &TEXT };
            let mut r = with_type(code, ct, b.body.clone());
            let age = Instant::now()
                .saturating_duration_since(b.at.mono)
                .as_secs();
            r.headers_mut().insert(header::AGE, HeaderValue::from(age));
            r
        }
    };
    r.headers_mut()
        .insert(header::X_CONTENT_TYPE_OPTIONS, NOSNIFF.clone());
    r
}

/// Now, as the report's clocks name it: its wall time advanced by the monotonic time since, so that a page
/// or history rendered between evaluations never contradicts the report's own times (a wall clock step is
/// taken up by the next evaluation).
fn present(latest: &Published) -> Moment {
    latest.report.evaluated.at(Instant::now())
}

fn plain(code: StatusCode, body: String) -> Response<Full<Bytes>> {
    with_type(code, &TEXT, body.into())
}

fn ok() -> Response<Full<Bytes>> {
    with_type(StatusCode::OK, &TEXT, Bytes::from_static(b"ok"))
}

fn with_type(code: StatusCode, content_type: &HeaderValue, body: Bytes) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = code;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, content_type.clone());
    r
}
