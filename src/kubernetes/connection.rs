//! One connection per Kubernetes cluster, which proves that its API server is alive and ready.
//!
//! A black-holed API server (connections stay open, nothing arrives) makes no watch fail: kube reads without
//! a timeout and the watcher's idle timeout is 295 s. And a live API server is not enough: with etcd down,
//! kube-apiserver still answers `/version` and holds watches open while nothing arrives (its watch cache may
//! even send BOOKMARKs), so the data goes stale while every request succeeds. So the connection asks
//! `GET /readyz` under `probe_timeout` once per `probe_interval`, however busy the watches are: no answer
//! makes the cluster silent since the last evidence (every answer the client receives, [`super::answers`]);
//! an answer other than `200` makes it not ready since that answer; either shows on every watch of the
//! cluster. While `/readyz` is refused (401/403), it asks `GET /version` instead (any answer then proves the
//! server alive), and `/readyz` again at least every [`READYZ_RETRY`]th probe: a refusal may be an authorizer's
//! passing hiccup, and only `/readyz` sees etcd down. When the server answers again, the watches that heard
//! nothing during the outage list again (a hung LIST never returns by itself); those that kept receiving keep
//! their streams.
//!
//! The client is made on first use, and again on every request until that works: a kubeconfig that does not
//! exist yet at start is picked up when it appears.

use std::sync::{Arc, PoisonError};
use std::time::Duration;

use futures::future::BoxFuture;
use http::{Request, Response};
use kube::client::{Body, ClientBuilder};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::Client;
use tokio::sync::watch as channel;
use tokio::time::Instant;
use tower::{BoxError, Service};

use super::answers::{AnswersLayer, Evidence};
use super::settings::Cluster;
use crate::clock::Moment;
use crate::human::{error_chain, timestamp};

/// A cluster whose API server does not answer, or answers but is not ready: the evidence probe of its
/// connection says so, and every item of that cluster turns `unknown` after `stale_after`.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterDown {
    /// The last evidence of life; for a server that answers but is not ready, its first such answer.
    pub since: Moment,
    /// `API server of cluster default silent since …: no answer to GET /readyz within 10s`.
    pub message: String,
    /// It answers, but `/readyz` fails; otherwise it is silent (or cannot be used).
    pub not_ready: bool,
}

/// Whether a cluster's API server answers, and is ready.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Health {
    /// Since when, and why, it does not; `None` while it answers ready.
    pub down: Option<ClusterDown>,
    /// How often it came back: each time, its watches that heard nothing since [`Health::outage`] relist.
    pub recoveries: u64,
    /// When the probe found the outage that the last recovery ended: a watch that received anything after
    /// this kept a live stream through it.
    pub outage: Option<Instant>,
}

/// A cluster's client, and what is known of its API server.
#[derive(Clone)]
pub(crate) struct Connection {
    /// Unique among the connections this process opened: what a watch started on it remembers.
    pub id: u64,
    pub client: Client,
    pub health: channel::Receiver<Health>,
    pub settings: Cluster,
    /// Whether its server serves streaming lists, once a watch learned it: one server, one answer.
    pub lists: super::lists::Lists,
    /// The client every request goes to, once made: replaced when the credentials change.
    made: Made,
}

impl Connection {
    /// The connection to cluster `name` (`None`: the default one), with its liveness probe running.
    pub(crate) fn open(name: Option<&str>, settings: &Cluster) -> Connection {
        let evidence = Arc::new(Evidence::new());
        let made = Made::default();
        let client = client(name, settings, evidence.clone(), made.clone());
        let (tx, health) = channel::channel(Health::default());
        tokio::spawn(probe(
            client.clone(),
            evidence,
            Probe {
                every: settings.probe_interval,
                timeout: settings.probe_timeout,
                cluster: name.unwrap_or("default").into(),
            },
            tx,
        ));
        static OPENED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        Connection {
            id: OPENED.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            client,
            health,
            settings: settings.clone(),
            lists: super::lists::Lists::default(),
            made,
        }
    }

    /// Makes a client from the kubeconfig as it reads now and sends the next requests through it; the
    /// requests under way (open watches) go on through the one they started on. Nothing changes when the new
    /// one cannot be made (the reason is logged).
    pub(crate) fn renew(
        &self,
        name: Option<&str>,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let (cluster, settings, made) = (
            name.unwrap_or("default").to_string(),
            self.settings.clone(),
            self.made.clone(),
        );
        async move { renew(&cluster, &settings, &made).await }
    }
}

async fn renew(cluster: &str, settings: &Cluster, made: &Made) {
    {
        match make_client(settings).await {
            Ok(client) => {
                *made.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(client);
                tracing::info!(
                    cluster,
                    "new credentials in the kubeconfig: the next requests use them; every watch goes on"
                );
            }
            Err(e) => tracing::warn!(
                cluster,
                error = %e,
                "new credentials in the kubeconfig cannot be used; the running ones stay"
            ),
        }
    }
}

/// The client a cluster's requests go to, once it could be made.
#[derive(Clone, Default)]
struct Made(Arc<std::sync::Mutex<Option<Client>>>);

impl Made {
    fn get(&self) -> Option<Client> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// The client: made on first use ([`Deferred`]), every answer recorded as evidence and bounded.
fn client(name: Option<&str>, settings: &Cluster, evidence: Arc<Evidence>, made: Made) -> Client {
    let layer = AnswersLayer {
        evidence,
        max_body: settings.max_body,
        section: section(name).into(),
    };
    let deferred = Deferred {
        name: name.map(str::to_string),
        settings: settings.clone(),
        made,
        making: Arc::default(),
    };
    ClientBuilder::new(deferred, "default")
        .with_layer(&layer)
        .build()
}

/// The kubeconfig files a cluster's connection reads: its `kubeconfig`, else (for the default cluster found
/// the standard way) those of `KUBECONFIG` or `~/.kube/config`.
pub(crate) fn kubeconfig_files(settings: &Cluster) -> Vec<std::path::PathBuf> {
    if let Some(path) = &settings.kubeconfig {
        return vec![path.clone()];
    }
    match std::env::var_os("KUBECONFIG").filter(|v| !v.is_empty()) {
        Some(paths) => std::env::split_paths(&paths).collect(),
        None => std::env::var_os("HOME")
            .map(|home| std::path::Path::new(&home).join(".kube").join("config"))
            .into_iter()
            .collect(),
    }
}

/// What a cluster's connection is made from, split by what a change of it takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Fingerprint {
    /// The cluster's settings, and the server, CA and identity its kubeconfig names (a comment or the order
    /// of keys aside): a change needs a new connection.
    pub identity: String,
    /// The kubeconfig's inline credentials (a bearer token, a password) for that identity: a change is
    /// used by the running connection's next requests ([`Connection::renew`]), and drops no watch.
    pub credentials: u64,
    /// The kubeconfig could not be read or understood: a running connection keeps what it had.
    pub unreadable: bool,
}

/// What the kubeconfig of `settings` says now, as [`Fingerprint`] splits it. Fixing a kubeconfig in place
/// is picked up at the next reload (which a change of the file triggers by itself).
pub(crate) async fn fingerprint(settings: &Cluster) -> Fingerprint {
    use std::hash::{Hash, Hasher};
    let settings_json = serde_json::to_string(settings).unwrap_or_default();
    let files: Vec<std::path::PathBuf> = kubeconfig_files(settings)
        .into_iter()
        .filter(|p| settings.kubeconfig.is_some() || p.exists())
        .collect();
    if files.is_empty() {
        // In-cluster: the service account's token file is read again by the client itself.
        return Fingerprint {
            identity: format!("{settings_json}#in-cluster"),
            credentials: 0,
            unreadable: false,
        };
    }
    let mut merged: Option<Kubeconfig> = None;
    for path in &files {
        let read = Kubeconfig::read_from(path).and_then(|k| match merged.take() {
            Some(m) => m.merge(k),
            None => Ok(k),
        });
        match read {
            Ok(k) => merged = Some(k),
            Err(e) => {
                let mut bytes = std::collections::hash_map::DefaultHasher::new();
                tokio::fs::read(path).await.ok().hash(&mut bytes);
                return Fingerprint {
                    identity: format!(
                        "{settings_json}#unreadable {}: {e} #{:x}",
                        path.display(),
                        bytes.finish()
                    ),
                    credentials: 0,
                    unreadable: true,
                };
            }
        }
    }
    let config = merged.unwrap_or_default();
    let context_name = settings
        .context
        .clone()
        .or_else(|| config.current_context.clone())
        .unwrap_or_default();
    let context = config
        .contexts
        .iter()
        .find(|c| c.name == context_name)
        .and_then(|c| c.context.clone());
    let cluster = context.as_ref().and_then(|c| {
        config
            .clusters
            .iter()
            .find(|n| n.name == c.cluster)
            .and_then(|n| n.cluster.clone())
    });
    let user = context
        .as_ref()
        .and_then(|c| c.user.as_ref())
        .and_then(|u| config.auth_infos.iter().find(|n| &n.name == u))
        .and_then(|n| n.auth_info.clone())
        .unwrap_or_default();
    let mut user_json = serde_json::to_value(&user).unwrap_or_default();
    let mut credentials = std::collections::hash_map::DefaultHasher::new();
    if let Some(fields) = user_json.as_object_mut() {
        for secret in ["token", "password"] {
            fields
                .remove(secret)
                .map(|v| v.to_string())
                .hash(&mut credentials);
        }
    }
    // Files it names are part of what it is: a CA or a client certificate replaced in place.
    let mut named_files = std::collections::hash_map::DefaultHasher::new();
    let paths = [
        cluster
            .as_ref()
            .and_then(|c| c.certificate_authority.clone()),
        user.client_certificate.clone(),
        user.client_key.clone(),
    ];
    for path in paths.iter().flatten() {
        tokio::fs::read(path).await.ok().hash(&mut named_files);
    }
    let identity = serde_json::json!({
        "settings": settings_json,
        "context": context_name,
        "cluster": cluster,
        "user_name": context.as_ref().and_then(|c| c.user.clone()),
        "user": user_json,
        "files": format!("{:x}", named_files.finish()),
    });
    Fingerprint {
        identity: identity.to_string(),
        credentials: credentials.finish(),
        unreadable: false,
    }
}

/// The config section of a cluster, for messages that name the key to change.
pub(crate) fn section(name: Option<&str>) -> String {
    match name {
        None => "[kubernetes]".to_string(),
        Some(n) => format!("[clusters.{n}]"),
    }
}

/// While `/readyz` is refused, every this many probes ask it again.
const READYZ_RETRY: u32 = 5;

struct Probe {
    every: Duration,
    timeout: Duration,
    cluster: Arc<str>,
}

/// Probes once at start, then once per `every`.
async fn probe(client: Client, evidence: Arc<Evidence>, probe: Probe, tx: channel::Sender<Health>) {
    let mut last_probe: Option<Instant> = None;
    // Probes since `/readyz` was last refused; `None` while it is allowed.
    let mut refused: Option<u32> = None;
    // When the current outage was found.
    let mut outage: Option<Instant> = None;
    loop {
        if tx.is_closed() {
            return;
        }
        // The first probe goes out at once: a cluster that cannot be used (a kubeconfig not there yet) is
        // then known to be down, and its return restarts the watches within one interval.
        if let Some(at) = last_probe {
            tokio::time::sleep_until(crate::clock::later(at, probe.every)).await;
        }
        last_probe = Some(Instant::now());
        let path = match refused {
            Some(n) if n % READYZ_RETRY != 0 => Path::Version,
            _ => Path::Readyz,
        };
        let outcome = match tokio::time::timeout(probe.timeout, ask(&client, path)).await {
            Err(_) => Err(ProbeFailure::Silent(format!(
                "no answer to GET {} within {}",
                path.as_str(),
                crate::human::duration(probe.timeout)
            ))),
            Ok(Ok(answer)) => match (path, answer) {
                (Path::Readyz, Answer::Refused(code)) => {
                    if refused.is_none() {
                        tracing::info!(cluster = %probe.cluster, code,
                            "GET /readyz is refused here: the liveness probe asks GET /version instead (a server whose etcd is down still answers it), and /readyz again every {READYZ_RETRY} probes");
                    }
                    // Asks `/version` at once: this probe still proves the server alive.
                    refused = Some(1);
                    last_probe = None;
                    continue;
                }
                (Path::Readyz, answer) => {
                    if refused.take().is_some() {
                        tracing::info!(cluster = %probe.cluster,
                            "GET /readyz is allowed again: the liveness probe asks it instead of GET /version");
                    }
                    match answer {
                        Answer::NotReady(why) => Err(ProbeFailure::NotReady(why)),
                        _ => Ok(()),
                    }
                }
                (Path::Version, _) => {
                    refused = refused.map(|n| n + 1);
                    Ok(())
                }
            },
            Ok(Err(e)) => Err(match unusable(&e) {
                Some(why) => ProbeFailure::Unusable(why),
                None => ProbeFailure::Silent(format!("GET {}: {}", path.as_str(), error_chain(&e))),
            }),
        };
        match outcome {
            Ok(()) => {
                evidence.record();
                if tx.borrow().down.is_some() {
                    tracing::info!(cluster = %probe.cluster, "API server answers again; relisting the watches that heard nothing since it went down");
                    tx.send_modify(|h| {
                        h.down = None;
                        h.recoveries += 1;
                        h.outage = outage.take();
                    });
                }
            }
            Err(failure) => {
                let last_answer = Moment::now().at(evidence.last());
                let (since, message, not_ready) = match failure {
                    ProbeFailure::Unusable(why) => (last_answer, why, false),
                    ProbeFailure::Silent(why) => {
                        let message = format!(
                            "API server of cluster {} silent since {}: {why}",
                            probe.cluster,
                            timestamp(last_answer.wall)
                        );
                        (last_answer, message, false)
                    }
                    ProbeFailure::NotReady(why) => {
                        // Not ready since the first answer that said so: its answers keep arriving.
                        let since = match &tx.borrow().down {
                            Some(d) if d.not_ready => d.since,
                            _ => Moment::now(),
                        };
                        let message = format!(
                            "API server of cluster {} not ready since {}: {why}",
                            probe.cluster,
                            timestamp(since.wall)
                        );
                        (since, message, true)
                    }
                };
                outage.get_or_insert_with(Instant::now);
                if tx.borrow().down.as_ref().map(|d| &d.message) != Some(&message) {
                    tracing::warn!(cluster = %probe.cluster, %message, "API server does not answer");
                    tx.send_modify(|h| {
                        h.down = Some(ClusterDown {
                            since,
                            message,
                            not_ready,
                        })
                    });
                }
            }
        }
    }
}

/// The probe of a cluster served by `client`, for tests of what its health does to watches.
#[cfg(test)]
pub(crate) fn probing(client: Client, every: Duration) -> channel::Receiver<Health> {
    let (tx, health) = channel::channel(Health::default());
    tokio::spawn(probe(
        client,
        Arc::new(Evidence::new()),
        Probe {
            every,
            timeout: every,
            cluster: "default".into(),
        },
        tx,
    ));
    health
}

/// What the liveness probe asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Path {
    Readyz,
    Version,
}

impl Path {
    fn as_str(self) -> &'static str {
        match self {
            Path::Readyz => "/readyz",
            Path::Version => "/version",
        }
    }
}

/// How an API server answered the probe.
#[derive(Debug, Clone, PartialEq)]
enum Answer {
    Ready,
    /// 401 or 403: this identity may not ask.
    Refused(u16),
    /// Any other status, with what failed: `/readyz answered 500 ([-]etcd failed)`.
    NotReady(String),
}

/// One `GET` of `path`; any HTTP answer is an [`Answer`], only a failed exchange an error.
async fn ask(client: &Client, path: Path) -> Result<Answer, kube::Error> {
    use http_body_util::BodyExt;
    let request = Request::get(path.as_str())
        .body(Body::empty())
        .map_err(kube::Error::HttpError)?;
    let response = client.send(request).await?;
    let code = response.status().as_u16();
    if code == 200 {
        return Ok(Answer::Ready);
    }
    if code == 401 || code == 403 {
        return Ok(Answer::Refused(code));
    }
    // The body is bounded by the client's answers layer (`max_body`).
    let body = match response.into_body().collect().await {
        Ok(b) => String::from_utf8_lossy(&b.to_bytes()).into_owned(),
        Err(_) => String::new(),
    };
    Ok(Answer::NotReady(format!(
        "{} answered {code}{}",
        path.as_str(),
        failing_checks(&body)
    )))
}

/// The checks a `/readyz` body says failed: ` ([-]etcd failed, [-]etcd-readiness failed)`, or nothing.
fn failing_checks(body: &str) -> String {
    const MOST: usize = 5;
    let failed: Vec<&str> = body
        .lines()
        .filter(|l| l.starts_with("[-]"))
        .map(|l| l.split_once(": ").map_or(l, |(check, _why)| check))
        .collect();
    match failed.len() {
        0 => String::new(),
        n if n <= MOST => format!(" ({})", failed.join(", ")),
        n => format!(" ({} and {} more)", failed[..MOST].join(", "), n - MOST),
    }
}

/// Why a probe got no good answer.
enum ProbeFailure {
    /// The client cannot be made (a missing kubeconfig, say).
    Unusable(String),
    /// Nothing came back.
    Silent(String),
    /// `/readyz` answered, but not `200`.
    NotReady(String),
}

/// The reason when the client itself cannot be made (a missing kubeconfig, say), rather than the server
/// being silent.
fn unusable(e: &kube::Error) -> Option<String> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if let Some(c) = s.downcast_ref::<Unusable>() {
            return Some(c.to_string());
        }
        source = s.source();
    }
    None
}

/// Why a cluster cannot be used. Each message carries its causes on one line, as hyper's and kube's
/// top-level errors alone say little.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnectError {
    #[error("cannot read kubeconfig {}: {}", .path.display(), error_chain(.source))]
    ReadKubeconfig {
        path: std::path::PathBuf,
        #[source]
        source: kube::config::KubeconfigError,
    },
    #[error("kubeconfig {}: {}", .path.display(), error_chain(.source))]
    Kubeconfig {
        path: std::path::PathBuf,
        #[source]
        source: kube::config::KubeconfigError,
    },
    #[error("kubeconfig: {}", error_chain(.0))]
    DefaultKubeconfig(#[source] kube::config::KubeconfigError),
    #[error("no in-cluster service account and no usable kubeconfig ({}); set KUBECONFIG or [kubernetes] kubeconfig", error_chain(.0))]
    Infer(#[source] kube::config::InferConfigError),
    #[error("cannot create a Kubernetes client: {}", error_chain(.0))]
    Client(#[source] kube::Error),
}

/// A [`ConnectError`] on a request: the cluster, what is wrong, and that it is retried.
#[derive(Debug, thiserror::Error)]
#[error("cannot use cluster {cluster}: {source} (retrying until it works)")]
struct Unusable {
    cluster: String,
    #[source]
    source: ConnectError,
}

/// Makes the real client on first use and forwards every request to it; until it can be made, each request
/// fails with the reason, and the next one tries again.
#[derive(Clone)]
struct Deferred {
    name: Option<String>,
    settings: Cluster,
    made: Made,
    /// One request makes the client while the others wait for it.
    making: Arc<tokio::sync::Mutex<()>>,
}

impl Service<Request<Body>> for Deferred {
    type Response = Response<Body>;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<Response<Body>, BoxError>>;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), BoxError>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let client = match this.made.get() {
                Some(client) => client,
                None => {
                    let _making = this.making.lock().await;
                    match this.made.get() {
                        Some(client) => client,
                        None => {
                            let cluster = this.name.as_deref().unwrap_or("default");
                            let made = make_client(&this.settings).await;
                            match &made {
                                Ok(_) => tracing::info!(cluster, "cluster client ready"),
                                Err(e) => {
                                    tracing::debug!(cluster, error = %e, "cannot use cluster yet")
                                }
                            }
                            let client = made.map_err(|source| Unusable {
                                cluster: cluster.to_string(),
                                source,
                            })?;
                            *this.made.0.lock().unwrap_or_else(PoisonError::into_inner) =
                                Some(client.clone());
                            client
                        }
                    }
                }
            };
            Ok(client.send(req).await?)
        })
    }
}

async fn make_client(settings: &Cluster) -> Result<Client, ConnectError> {
    let options = KubeConfigOptions {
        context: settings.context.clone(),
        ..KubeConfigOptions::default()
    };
    let kube_config = match &settings.kubeconfig {
        Some(path) => {
            let file =
                Kubeconfig::read_from(path).map_err(|source| ConnectError::ReadKubeconfig {
                    path: path.clone(),
                    source,
                })?;
            kube::Config::from_custom_kubeconfig(file, &options)
                .await
                .map_err(|source| ConnectError::Kubeconfig {
                    path: path.clone(),
                    source,
                })?
        }
        None if settings.context.is_some() => kube::Config::from_kubeconfig(&options)
            .await
            .map_err(ConnectError::DefaultKubeconfig)?,
        None => kube::Config::infer().await.map_err(ConnectError::Infer)?,
    };
    Client::try_from(kube_config).map_err(ConnectError::Client)
}

#[cfg(test)]
mod tests {
    //! The probe's cadence on tokio's paused clock: minutes of a quiet, a busy and a black-holed API server
    //! in milliseconds, exactly.

    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use bytes::Bytes;
    use http_body_util::Full;

    use super::*;

    /// A fake API server answering the liveness probe, counting the probes; while `hang` is set it
    /// accepts and never answers (a black hole).
    #[derive(Clone, Default)]
    struct Fake {
        probes: Arc<AtomicUsize>,
        hang: Arc<AtomicBool>,
        /// What `/readyz` answers (0: 200), as kube-apiserver does with etcd down (500) or where it is
        /// refused (403).
        readyz: Arc<std::sync::atomic::AtomicU16>,
        versions: Arc<AtomicUsize>,
    }

    impl Fake {
        fn client(&self) -> Client {
            let fake = self.clone();
            let service = tower::service_fn(move |req: Request<Body>| {
                let fake = fake.clone();
                async move {
                    fake.probes.fetch_add(1, Ordering::SeqCst);
                    if fake.hang.load(Ordering::SeqCst) {
                        std::future::pending::<()>().await;
                    }
                    let (code, body) = match req.uri().path() {
                        "/version" => {
                            fake.versions.fetch_add(1, Ordering::SeqCst);
                            (200, r#"{"major":"1","minor":"33","gitVersion":"v1.33.0","gitCommit":"","gitTreeState":"","buildDate":"","goVersion":"","compiler":"","platform":""}"#)
                        }
                        _ => match fake.readyz.load(Ordering::SeqCst) {
                            0 => (200, "ok"),
                            code => (code, "[+]ping ok\n[-]etcd failed: reason withheld\nreadyz check failed\n"),
                        },
                    };
                    let mut response = Response::new(Full::new(Bytes::from(body)));
                    *response.status_mut() = http::StatusCode::from_u16(code).expect("status");
                    Ok::<_, std::convert::Infallible>(response)
                }
            });
            Client::new(service, "default")
        }

        fn probes(&self) -> usize {
            self.probes.load(Ordering::SeqCst)
        }
    }

    const EVERY: Duration = Duration::from_secs(10);
    const TIMEOUT: Duration = Duration::from_secs(10);

    /// Starts the probe of a cluster served by `fake`; returns its evidence and health.
    fn start(fake: &Fake) -> (Arc<Evidence>, channel::Receiver<Health>) {
        let evidence = Arc::new(Evidence::new());
        let (tx, health) = channel::channel(Health::default());
        tokio::spawn(probe(
            fake.client(),
            evidence.clone(),
            Probe {
                every: EVERY,
                timeout: TIMEOUT,
                cluster: "default".into(),
            },
            tx,
        ));
        (evidence, health)
    }

    #[tokio::test(start_paused = true)]
    async fn a_quiet_api_server_is_probed_once_per_interval_and_stays_trusted() {
        let fake = Fake::default();
        let (_evidence, health) = start(&fake);
        // Ten minutes without a change and without a BOOKMARK: one probe at once, then one per interval.
        tokio::time::sleep(Duration::from_secs(600) + Duration::from_millis(1)).await;
        assert_eq!(fake.probes(), 61);
        assert_eq!(*health.borrow(), Health::default(), "never silent");
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_api_server_is_still_probed_once_per_interval() {
        let fake = Fake::default();
        let (evidence, health) = start(&fake);
        let busy = tokio::spawn(async move {
            loop {
                evidence.record();
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        tokio::time::sleep(Duration::from_secs(600) + Duration::from_millis(1)).await;
        busy.abort();
        assert_eq!(
            fake.probes(),
            61,
            "answers that keep arriving are no proof of readiness (a watch cache sends BOOKMARKs with etcd down)"
        );
        assert_eq!(health.borrow().down, None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_readyz_other_than_200_is_not_ready_since_its_first_such_answer_and_200_recovers() {
        let fake = Fake::default();
        let (_evidence, mut health) = start(&fake);
        tokio::time::sleep(Duration::from_secs(1)).await;
        fake.readyz.store(500, Ordering::SeqCst);
        health.changed().await.expect("the probe reports");
        let down = health.borrow_and_update().down.clone().expect("down");
        assert!(down.not_ready, "{down:?}");
        assert!(
            down.message
                .starts_with("API server of cluster default not ready since ")
                && down
                    .message
                    .ends_with(": /readyz answered 500 ([-]etcd failed)"),
            "{}",
            down.message
        );
        // Its answers keep arriving: the time stays that of the first one that said so.
        tokio::time::sleep(EVERY * 3).await;
        assert_eq!(
            health.borrow().down.as_ref().map(|d| d.since),
            Some(down.since)
        );
        fake.readyz.store(0, Ordering::SeqCst);
        health.changed().await.expect("the probe reports");
        assert_eq!(
            (health.borrow().down.clone(), health.borrow().recoveries),
            (None, 1)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn where_readyz_is_refused_the_probe_asks_version_instead() {
        let fake = Fake::default();
        fake.readyz.store(403, Ordering::SeqCst);
        let (_evidence, health) = start(&fake);
        tokio::time::sleep(EVERY * 3 + Duration::from_millis(1)).await;
        assert_eq!(
            fake.versions.load(Ordering::SeqCst),
            4,
            "at once, then once per interval"
        );
        assert_eq!(fake.probes(), 5, "/readyz asked once");
        assert_eq!(health.borrow().down, None, "a refused /readyz is no outage");
    }

    /// One refusal (an authorizer's hiccup after an API server restart) must not switch etcd-down detection
    /// off: `/readyz` is asked again within five probes, and a 500 there is seen.
    #[tokio::test(start_paused = true)]
    async fn one_refused_readyz_falls_back_to_version_only_until_readyz_is_allowed_again() {
        let fake = Fake::default();
        fake.readyz.store(403, Ordering::SeqCst);
        let (_evidence, mut health) = start(&fake);
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(fake.versions.load(Ordering::SeqCst), 1, "/version at once");
        fake.readyz.store(500, Ordering::SeqCst);
        let refused_at = Instant::now();
        tokio::time::timeout(EVERY * 6, health.changed())
            .await
            .expect("not ready is seen")
            .expect("the probe reports");
        let waited = refused_at.elapsed();
        assert!(
            waited <= EVERY * 5,
            "not ready seen within five probes, not after {waited:?}"
        );
        let down = health.borrow_and_update().down.clone().expect("down");
        assert!(down.not_ready, "{down:?}");
        let versions = fake.versions.load(Ordering::SeqCst);
        tokio::time::sleep(EVERY * 10 + Duration::from_millis(1)).await;
        assert_eq!(
            fake.versions.load(Ordering::SeqCst),
            versions,
            "/readyz answers (500): no /version any more"
        );
        // Refused for good: /version, with /readyz asked again every fifth probe.
        fake.readyz.store(403, Ordering::SeqCst);
        let (probes, versions) = (fake.probes(), fake.versions.load(Ordering::SeqCst));
        tokio::time::sleep(EVERY * 20).await;
        let (probes, versions) = (
            fake.probes() - probes,
            fake.versions.load(Ordering::SeqCst) - versions,
        );
        assert_eq!(
            (probes - versions, versions),
            (5, 20),
            "20 intervals: /readyz at the first and every fifth probe slot after, /version in each slot"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_black_holed_api_server_is_silent_within_interval_and_timeout_and_its_return_is_a_recovery(
    ) {
        let fake = Fake::default();
        let (_evidence, mut health) = start(&fake);
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(fake.probes(), 1);
        fake.hang.store(true, Ordering::SeqCst);
        let silent_at = Instant::now();
        health.changed().await.expect("the probe reports");
        let waited = silent_at.elapsed();
        assert!(
            waited <= EVERY + TIMEOUT,
            "silence shows within probe_interval + probe_timeout, not after {waited:?}"
        );
        let down = health.borrow_and_update().down.clone().expect("down");
        assert!(
            down.message
                .starts_with("API server of cluster default silent since "),
            "{}",
            down.message
        );
        assert_eq!(health.borrow().recoveries, 0);

        fake.hang.store(false, Ordering::SeqCst);
        health.changed().await.expect("the probe reports");
        let back = health.borrow().clone();
        assert_eq!(
            (back.down, back.recoveries),
            (None, 1),
            "its return restarts the watches"
        );
    }

    /// What a kubeconfig rewrite takes: nothing for a comment or reordered keys, the running connection's
    /// next requests for a new token, a new connection for another server, CA or user.
    #[tokio::test]
    async fn a_kubeconfig_fingerprint_tells_identity_from_credentials_and_ignores_form() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("kubeconfig");
        let settings = Cluster {
            kubeconfig: Some(path.clone()),
            ..Cluster::default()
        };
        let of = async |text: &str| {
            std::fs::write(&path, text).expect("write");
            fingerprint(&settings).await
        };
        let config = |server: &str, ca: &str, user: &str, token: &str| {
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca}\n\
                 contexts:\n- name: c\n  context:\n    cluster: c\n    user: {user}\ncurrent-context: c\n\
                 users:\n- name: {user}\n  user:\n    token: {token}\n"
            )
        };
        let base = of(&config("https://a:6443", "Q0E=", "u", "t1")).await;
        assert!(!base.unreadable, "{base:?}");
        let reordered = "# rotated by a refresher\ncurrent-context: c\nkind: Config\napiVersion: v1\n\
            users:\n- user:\n    token: t1\n  name: u\ncontexts:\n- context:\n    user: u\n    cluster: c\n  name: c\n\
            clusters:\n- cluster:\n    certificate-authority-data: Q0E=\n    server: https://a:6443\n  name: c\n";
        assert_eq!(of(reordered).await, base, "a comment and the order of keys");
        let rotated = of(&config("https://a:6443", "Q0E=", "u", "t2")).await;
        assert_eq!(
            rotated.identity, base.identity,
            "a new token, the same identity"
        );
        assert_ne!(rotated.credentials, base.credentials);
        for (what, text) in [
            ("server", config("https://b:6443", "Q0E=", "u", "t1")),
            ("CA", config("https://a:6443", "Q0I=", "u", "t1")),
            ("user", config("https://a:6443", "Q0E=", "v", "t1")),
        ] {
            assert_ne!(of(&text).await.identity, base.identity, "another {what}");
        }
        let broken = of("clusters: [").await;
        assert!(broken.unreadable, "{broken:?}");
    }

    #[test]
    fn a_failing_readyz_body_names_its_failed_checks_without_the_withheld_reasons() {
        let body = "[+]ping ok\n[+]log ok\n[-]etcd failed: reason withheld\n[-]etcd-readiness failed: reason withheld\n[+]informer-sync ok\nreadyz check failed\n";
        assert_eq!(
            failing_checks(body),
            " ([-]etcd failed, [-]etcd-readiness failed)"
        );
        assert_eq!(failing_checks("Internal Server Error"), "");
        let many: String = (0..8).map(|i| format!("[-]c{i} failed\n")).collect();
        assert_eq!(
            failing_checks(&many),
            " ([-]c0 failed, [-]c1 failed, [-]c2 failed, [-]c3 failed, [-]c4 failed and 3 more)"
        );
    }
}
