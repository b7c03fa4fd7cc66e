//! The HTTP API. Every answer comes from the latest published report: no request ever waits on Kubernetes
//! or on provider-anynines. Connections are bounded in number and in how long they may take to send headers.

use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::request::Parts;
use http::{header, HeaderValue, Method, Response, StatusCode};
use http_body_util::Full;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use jiff::Timestamp;
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

use crate::config::{self, DetailsPolicy};
use crate::engine::Published;
use crate::metrics::Metrics;
use crate::render::{self, Details, Identity};
use crate::report::Endpoint;

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

/// What request handling needs: the latest report and how to show it.
pub struct State {
    latest: watch::Receiver<Arc<Published>>,
    metrics: Arc<Metrics>,
    identity: Identity,
    details: DetailsPolicy,
    token: Option<String>,
    shutting_down: AtomicBool,
}

impl State {
    pub fn new(
        latest: watch::Receiver<Arc<Published>>,
        metrics: Arc<Metrics>,
        identity: Identity,
        details: DetailsPolicy,
        token: Option<String>,
    ) -> State {
        State {
            latest,
            metrics,
            identity,
            details,
            token,
            shutting_down: AtomicBool::new(false),
        }
    }

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

/// Server limits from `[server]`.
#[derive(Debug, Clone)]
pub(crate) struct Limits {
    pub header_read_timeout: Duration,
    pub max_connections: usize,
    pub shutdown_delay: Duration,
    /// How long in-flight requests may take to finish once the listener is closed.
    pub drain_timeout: Duration,
}

impl From<&config::Server> for Limits {
    fn from(s: &config::Server) -> Limits {
        Limits {
            header_read_timeout: s.header_read_timeout,
            max_connections: s.max_connections,
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
    let graceful = GracefulShutdown::new();
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    accept_until(&listener, &state, &limits, &permits, &graceful, shutdown).await;
    state.shutting_down.store(true, Ordering::SeqCst);
    tracing::info!(
        delay = %crate::human::duration(limits.shutdown_delay),
        "shutting down: /readyz now answers 503; the listener closes after the delay"
    );
    accept_until(
        &listener,
        &state,
        &limits,
        &permits,
        &graceful,
        tokio::time::sleep(limits.shutdown_delay),
    )
    .await;
    drop(listener);
    if tokio::time::timeout(limits.drain_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("some connections were still busy after the drain timeout; closing them");
    }
    tracing::info!("stopped serving");
}

async fn accept_until(
    listener: &TcpListener,
    state: &Arc<State>,
    limits: &Limits,
    permits: &Arc<Semaphore>,
    graceful: &GracefulShutdown,
    until: impl Future<Output = ()>,
) {
    tokio::pin!(until);
    loop {
        // Waiting for a permit before accepting leaves excess clients in the kernel's backlog: backpressure
        // instead of unbounded tasks.
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
            _ = &mut until => return,
        };
        let stream = tokio::select! {
            r = listener.accept() => match r {
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
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        let service = TowerToHyperService::new(tower::service_fn(move |req| {
            let state = state.clone();
            async move {
                let (parts, _body) = http::Request::into_parts(req);
                let latest = state.latest.borrow().clone();
                Ok::<_, Infallible>(handle(&state, &latest, &parts))
            }
        }));
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout)
            .max_buf_size(64 * 1024)
            .serve_connection(TokioIo::new(stream), service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            let _ = conn.await;
            drop(permit);
        });
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
    let route: &'static str = match path {
        "/healthz" => "/healthz",
        "/readyz" => "/readyz",
        "/livez" => "/livez",
        "/metrics" => "/metrics",
        "/backend-health" => "/backend-health",
        "/backend-status" => "/backend-status",
        "/history" => "/history",
        "/" => "/",
        p if p.starts_with("/healthz/") => "/healthz/{name}",
        p if p.starts_with("/readyz/") => "/readyz/{name}",
        _ => {
            return (
                "other",
                plain(
                    StatusCode::NOT_FOUND,
                    format!("404 page not found: {path}\n"),
                ),
            )
        }
    };
    if req.method != Method::GET && req.method != Method::HEAD {
        let mut r = plain(
            StatusCode::METHOD_NOT_ALLOWED,
            "405 method not allowed: use GET or HEAD\n".into(),
        );
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return (route, r);
    }
    let response = match route {
        "/livez" => ok(),
        "/metrics" => {
            let openmetrics = req
                .headers
                .get(header::ACCEPT)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|a| a.contains("application/openmetrics-text"));
            if openmetrics {
                let body = state.metrics.encode_openmetrics().into();
                with_type(StatusCode::OK, &OPENMETRICS, body)
            } else {
                let body = state.metrics.encode_prometheus().into();
                with_type(StatusCode::OK, &PROMETHEUS, body)
            }
        }
        "/backend-health" | "/backend-status" => passthrough(latest),
        "/history" => {
            let history = latest.history.read();
            let body = render::history::json(&history, state.details_for(req), Timestamp::now());
            with_type(StatusCode::OK, &JSON, body.into())
        }
        "/" => {
            let page = render::html::page(
                &latest.report,
                &state.identity,
                state.details_for(req),
                Timestamp::now(),
                &latest.history.read(),
            );
            with_type(StatusCode::OK, &HTML, page.into())
        }
        _ => {
            let (endpoint, only) = match path.split_once('/').map(|(_, rest)| rest.split_once('/'))
            {
                Some(Some((e, name))) => (e, Some(name)),
                _ => (path.trim_start_matches('/'), None),
            };
            let endpoint = if endpoint == "readyz" {
                Endpoint::Readyz
            } else {
                Endpoint::Healthz
            };
            health(state, req, latest, endpoint, only)
        }
    };
    (route, response)
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

/// The content type a JSON-asking caller gets, or `None` for text.
fn json_type(req: &Parts, q: &Query) -> Option<&'static HeaderValue> {
    let accepts = |media: &str| {
        req.headers
            .get_all(header::ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.contains(media))
    };
    if q.json || accepts(HEALTH_JSON_MEDIA) {
        Some(&HEALTH_JSON)
    } else if accepts("application/json") {
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
    let details = state.details_for(req);
    let json = json_type(req, &q);
    let report = latest.report.endpoint(endpoint);
    if endpoint == Endpoint::Readyz && state.shutting_down.load(Ordering::SeqCst) {
        return match json {
            Some(ct) => {
                let selection = report.all();
                let doc = render::json::document(
                    &latest.report,
                    &state.identity,
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
            .then(|| latest.bodies.json(endpoint, details))
            .flatten();
        let body = cached.unwrap_or_else(|| {
            let selection = selection.unwrap_or_else(all);
            render::json::document(&latest.report, &state.identity, &selection, details, None)
                .into()
        });
        return with_type(code, ct, body);
    }
    if passed && !q.verbose {
        return ok();
    }
    let cached = common
        .then(|| latest.bodies.verbose(endpoint, details))
        .flatten();
    let body = cached.unwrap_or_else(|| {
        render::text::verbose(endpoint, &selection.unwrap_or_else(all), details).into()
    });
    with_type(code, &TEXT, body)
}

fn passthrough(latest: &Published) -> Response<Full<Bytes>> {
    let Some(b) = &latest.report.backend else {
        return plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "no answer from provider-anynines' health server yet\n".into(),
        );
    };
    let code = StatusCode::from_u16(b.status).unwrap_or(StatusCode::OK);
    let ct = b
        .content_type
        .as_deref()
        .and_then(|ct| HeaderValue::from_str(ct).ok())
        .unwrap_or_else(|| JSON.clone());
    let mut r = with_type(code, &ct, b.body.clone());
    let age = Timestamp::now().duration_since(b.fetched).as_secs().max(0);
    r.headers_mut().insert(header::AGE, HeaderValue::from(age));
    r
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
