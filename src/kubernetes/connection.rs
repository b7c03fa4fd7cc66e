//! One connection per Kubernetes cluster, which proves that its API server is alive.
//!
//! A black-holed API server (connections stay open, nothing arrives) makes no watch fail: kube reads without
//! a timeout and the watcher's idle timeout is 295 s. So every answer the client receives is recorded as
//! evidence ([`super::answers`]), and when nothing arrived for `probe_interval` the connection asks
//! `GET /version` under `probe_timeout`. A busy cluster is never probed; a quiet healthy one answers the
//! probe; one that does not answer is down since the last evidence, which every watch of the cluster shows.
//! When it answers again, the watches restart (a hung LIST never returns by itself).
//!
//! The client is made on first use, and again on every request until that works: a kubeconfig that does not
//! exist yet at start is picked up when it appears.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use http::{Request, Response};
use kube::client::{Body, ClientBuilder};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::Client;
use tokio::sync::{watch as channel, OnceCell};
use tokio::time::Instant;
use tower::{BoxError, Service};

use super::answers::{AnswersLayer, Evidence};
use super::settings::Cluster;
use crate::clock::Moment;
use crate::human::{error_chain, timestamp};

/// Whether a cluster's API server answers.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Health {
    /// Since when, and why, it does not; `None` while it answers.
    pub down: Option<Down>,
    /// How often it came back: each time, its watches restart.
    pub recoveries: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Down {
    /// The last evidence of life.
    pub since: Moment,
    pub message: String,
}

/// A cluster's client, and what is known of its API server.
#[derive(Clone)]
pub(crate) struct Connection {
    pub client: Client,
    pub health: channel::Receiver<Health>,
    pub settings: Cluster,
}

impl Connection {
    /// The connection to cluster `name` (`None`: the default one), with its liveness probe running.
    pub(crate) fn open(name: Option<&str>, settings: &Cluster) -> Connection {
        let evidence = Arc::new(Evidence::new());
        let layer = AnswersLayer {
            evidence: evidence.clone(),
            max_body: settings.max_body,
            section: section(name).into(),
        };
        let deferred = Deferred {
            name: name.map(str::to_string),
            settings: settings.clone(),
            client: Arc::default(),
        };
        let client = ClientBuilder::new(deferred, "default")
            .with_layer(&layer)
            .build();
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
        Connection {
            client,
            health,
            settings: settings.clone(),
        }
    }
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

/// What a cluster's connection is made from: its settings and its kubeconfig files as they read now. Any
/// change makes a new connection, so a kubeconfig fixed in place is picked up at the next reload (which a
/// change of the file triggers by itself).
pub(crate) async fn fingerprint(settings: &Cluster) -> String {
    use std::hash::{Hash, Hasher};
    let mut files = std::collections::hash_map::DefaultHasher::new();
    for path in kubeconfig_files(settings) {
        path.hash(&mut files);
        tokio::fs::read(&path).await.ok().hash(&mut files);
    }
    format!(
        "{}#{:x}",
        serde_json::to_string(settings).unwrap_or_default(),
        files.finish()
    )
}

/// The config section of a cluster, for messages that name the key to change.
pub(crate) fn section(name: Option<&str>) -> String {
    match name {
        None => "[kubernetes]".to_string(),
        Some(n) => format!("[clusters.{n}]"),
    }
}

struct Probe {
    every: Duration,
    timeout: Duration,
    cluster: Arc<str>,
}

/// Probes once at start, then while the cluster is quiet: at most one request per `every`, none while
/// answers keep arriving.
async fn probe(client: Client, evidence: Arc<Evidence>, probe: Probe, tx: channel::Sender<Health>) {
    let mut last_probe: Option<Instant> = None;
    loop {
        if tx.is_closed() {
            return;
        }
        // The first probe goes out at once: a cluster that cannot be used (a kubeconfig not there yet) is
        // then known to be down, and its return restarts the watches within one interval.
        let due = match last_probe {
            None => Instant::now(),
            Some(at) => crate::clock::later(evidence.last().max(at), probe.every),
        };
        if Instant::now() < due {
            tokio::time::sleep_until(due).await;
            continue;
        }
        last_probe = Some(Instant::now());
        let outcome = match tokio::time::timeout(probe.timeout, client.apiserver_version()).await {
            Err(_) => Err(Silence::Silent(format!(
                "no answer to GET /version within {}",
                crate::human::duration(probe.timeout)
            ))),
            // Any answer, even a refusal, proves the server is alive; the watches report refusals.
            Ok(Ok(_)) | Ok(Err(kube::Error::Api(_))) => Ok(()),
            Ok(Err(e)) => Err(match unusable(&e) {
                Some(why) => Silence::Unusable(why),
                None => Silence::Silent(format!("GET /version: {}", error_chain(&e))),
            }),
        };
        match outcome {
            Ok(()) => {
                evidence.record();
                if tx.borrow().down.is_some() {
                    tracing::info!(cluster = %probe.cluster, "API server answers again; restarting its watches");
                    tx.send_modify(|h| {
                        h.down = None;
                        h.recoveries += 1;
                    });
                }
            }
            Err(silence) => {
                let since = Moment::now().at(evidence.last());
                let message = match silence {
                    Silence::Unusable(why) => why,
                    Silence::Silent(why) => format!(
                        "API server of cluster {} silent since {}: {why}",
                        probe.cluster,
                        timestamp(since.wall)
                    ),
                };
                if tx.borrow().down.as_ref().map(|d| &d.message) != Some(&message) {
                    tracing::warn!(cluster = %probe.cluster, %message, "API server does not answer");
                    tx.send_modify(|h| h.down = Some(Down { since, message }));
                }
            }
        }
    }
}

/// Why a probe got no answer.
enum Silence {
    /// The client cannot be made (a missing kubeconfig, say).
    Unusable(String),
    /// Nothing came back.
    Silent(String),
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
    client: Arc<OnceCell<Client>>,
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
            let client = this
                .client
                .get_or_try_init(|| async {
                    let made = make_client(&this.settings).await;
                    match &made {
                        Ok(_) => tracing::info!(cluster = this.name.as_deref().unwrap_or("default"), "cluster client ready"),
                        Err(e) => tracing::debug!(cluster = this.name.as_deref().unwrap_or("default"), error = %e, "cannot use cluster yet"),
                    }
                    made.map_err(|source| Unusable {
                        cluster: this.name.clone().unwrap_or_else(|| "default".into()),
                        source,
                    })
                })
                .await?;
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
                    let body = match req.uri().path() {
                        "/version" => {
                            r#"{"major":"1","minor":"33","gitVersion":"v1.33.0","gitCommit":"","gitTreeState":"","buildDate":"","goVersion":"","compiler":"","platform":""}"#
                        }
                        _ => "ok",
                    };
                    Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from(body))))
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
    async fn a_busy_api_server_is_never_probed_after_the_first_time() {
        let fake = Fake::default();
        let (evidence, health) = start(&fake);
        let busy = tokio::spawn(async move {
            loop {
                evidence.record();
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        tokio::time::sleep(Duration::from_secs(600)).await;
        busy.abort();
        assert_eq!(
            fake.probes(),
            1,
            "answers that keep arriving are evidence enough"
        );
        assert_eq!(health.borrow().down, None);
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
}
