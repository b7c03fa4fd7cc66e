//! Live reload: on SIGHUP, and when the configuration file, `server.token_file` or a cluster's kubeconfig
//! changes, the configuration is read and validated again and applied without a restart (a cluster whose
//! kubeconfig changed gets a new connection). The files are polled (cheap: two small reads
//! every [`POLL`]) rather than watched by inode, so that a ConfigMap volume's atomic swap of its `..data`
//! symlink is seen as well as an edit in place. A file that does not validate is refused and the running
//! configuration stays; the metrics say which happened.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use tokio::sync::watch;

use crate::checks::Running;
use std::net::SocketAddr;

use crate::config::{Check, Config, Overrides, Server};
use crate::engine::Reloaded;
use crate::http::server::{Presentation, State};
use crate::metrics::Metrics;
use crate::publish::events;
use crate::signals::Sink;

/// How often the files are compared with what was last read.
pub const POLL: Duration = Duration::from_secs(2);

/// `[server]` keys a reload does not apply (the listeners and their limits are bound at start-up), each
/// named once with its type: [`RESTART_ONLY`] lists them, and a renamed key of [`Server`] fails to compile
/// here instead of silently ending its warning.
macro_rules! restart_only {
    ($($key:ident: $ty:ty),* $(,)?) => {
        /// `[server]` keys a reload does not apply.
        pub const RESTART_ONLY: &[&str] = &[$(stringify!($key)),*];

        /// The restart-only keys' values, as typed fields.
        #[derive(Debug, Clone, PartialEq)]
        pub(crate) struct RestartOnly {
            $($key: $ty),*
        }

        impl RestartOnly {
            pub(crate) fn of(server: &Server) -> RestartOnly {
                RestartOnly { $($key: server.$key.clone()),* }
            }

            /// Each key whose value differs in `other`: (key, this value, the other's).
            fn differences(&self, other: &RestartOnly) -> Vec<(&'static str, String, String)> {
                let mut out = Vec::new();
                $(
                    if self.$key != other.$key {
                        out.push((stringify!($key), shown(&self.$key), shown(&other.$key)));
                    }
                )*
                out
            }
        }
    };
}

restart_only!(
    listen: SocketAddr,
    public_listen: Option<SocketAddr>,
    max_connections: usize,
    public_max_connections: usize,
    header_read_timeout: Duration,
    shutdown_delay: Duration,
);

/// A value as the configuration writes it (`"[::]:8080"`, `"5s"`, `1024`, `null`).
fn shown(value: &impl ShownValue) -> String {
    value.shown()
}

trait ShownValue {
    fn shown(&self) -> String;
}

impl ShownValue for SocketAddr {
    fn shown(&self) -> String {
        format!("\"{self}\"")
    }
}

impl ShownValue for Option<SocketAddr> {
    fn shown(&self) -> String {
        self.as_ref()
            .map_or_else(|| "null".into(), ShownValue::shown)
    }
}

impl ShownValue for usize {
    fn shown(&self) -> String {
        self.to_string()
    }
}

impl ShownValue for Duration {
    fn shown(&self) -> String {
        format!("\"{}\"", crate::human::duration(*self))
    }
}

/// Everything a reload replaces, and where the configuration comes from.
pub(crate) struct Reloader {
    pub(crate) path: PathBuf,
    pub(crate) overrides: Overrides,
    /// The restart-only keys as started, to name those a reload changes.
    pub(crate) startup: RestartOnly,
    /// The same as last loaded, so that each change is warned about once, not at every reload.
    pub(crate) loaded: RestartOnly,
    pub(crate) token_file: Option<PathBuf>,
    /// Every cluster's kubeconfig files, watched like the configuration file.
    pub(crate) kubeconfigs: Vec<PathBuf>,
    pub(crate) running: Running,
    pub(crate) events: events::Control,
    pub(crate) sink: Sink,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) engine: watch::Sender<Reloaded>,
    pub(crate) state: Arc<State>,
}

/// What was last read of the files a reload depends on.
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    /// Where the configuration path leads, through every symlink (`..data` swaps change it).
    target: Option<PathBuf>,
    config: Option<Vec<u8>>,
    token: Option<Vec<u8>>,
    kubeconfigs: Vec<Option<Vec<u8>>>,
}

impl Seen {
    async fn read(path: &Path, token_file: Option<&Path>, kubeconfigs: &[PathBuf]) -> Seen {
        let token = match token_file {
            Some(t) => tokio::fs::read(t).await.ok(),
            None => None,
        };
        let mut contents = Vec::with_capacity(kubeconfigs.len());
        for k in kubeconfigs {
            contents.push(tokio::fs::read(k).await.ok());
        }
        Seen {
            target: tokio::fs::canonicalize(path).await.ok(),
            config: tokio::fs::read(path).await.ok(),
            token,
            kubeconfigs: contents,
        }
    }
}

/// Every kubeconfig file the clusters of `config` read.
pub(crate) fn kubeconfigs(config: &Config) -> Vec<PathBuf> {
    let clusters = config.clusters();
    std::iter::once(clusters.default)
        .chain(clusters.named.values())
        .flat_map(crate::kubernetes::connection::kubeconfig_files)
        .collect()
}

impl Reloader {
    /// Reloads on every SIGHUP and every change of the files, until the process ends.
    pub(crate) async fn run(mut self, mut hangups: Hangups) {
        let mut seen = self.seen().await;
        let mut poll = tokio::time::interval(POLL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let trigger = tokio::select! {
                _ = hangups.recv() => "SIGHUP",
                _ = poll.tick() => {
                    if self.seen().await == seen {
                        continue;
                    }
                    "file changed"
                }
            };
            // Read before loading: a change made while loading is then seen at the next poll.
            let files = (self.token_file.clone(), self.kubeconfigs.clone());
            seen = self.seen().await;
            self.reload(trigger).await;
            if (&self.token_file, &self.kubeconfigs) != (&files.0, &files.1) {
                seen = self.seen().await;
            }
        }
    }

    /// What the files read now (cloned first: the reloader itself is not `Sync`).
    fn seen(&self) -> impl std::future::Future<Output = Seen> + Send + 'static {
        let (path, token, kubeconfigs) = (
            self.path.clone(),
            self.token_file.clone(),
            self.kubeconfigs.clone(),
        );
        async move { Seen::read(&path, token.as_deref(), &kubeconfigs).await }
    }

    async fn reload(&mut self, trigger: &str) {
        let config = Config::load(&self.path, &self.overrides).and_then(|c| {
            let token = c.token()?;
            Ok((c, token))
        });
        let (config, token) = match config {
            Ok(c) => c,
            Err(e) => {
                // The words of `--check-config`, so the fix is the same.
                tracing::error!(
                    trigger,
                    "reload refused, the running configuration stays: {e} (in {})",
                    self.path.display()
                );
                self.metrics.config_reload(None);
                return;
            }
        };
        self.warn_restart_only(&config);
        self.state.present(Presentation::of(&config, token));
        self.token_file = config.server.token_file.clone();
        self.kubeconfigs = kubeconfigs(&config);
        // The policy first: were a removed check's observations dropped before, the old policy would show
        // it as `_pending` (unknown) in between. `public_listen` keeps its start-up value: the listener that
        // runs decides.
        let sender = self.events.apply(&config, &mut self.running).await;
        self.engine.send_replace(Reloaded::of(
            &config,
            self.startup.public_listen.is_some(),
            sender,
        ));
        let changes = self
            .running
            .apply(
                config.checks.iter().map(Check::as_ref),
                &config.clusters(),
                &self.sink,
                &self.metrics,
            )
            .await;
        self.metrics.config_reload(Some(Timestamp::now()));
        tracing::info!(
            trigger,
            added = ?changes.added,
            restarted = ?changes.restarted,
            removed = ?changes.removed,
            unchanged = changes.unchanged.len(),
            "configuration reloaded"
        );
    }

    fn warn_restart_only(&mut self, config: &Config) {
        let now = RestartOnly::of(&config.server);
        // Once per change: a key still at the value last loaded was warned about then.
        let changed: Vec<&str> = self
            .loaded
            .differences(&now)
            .into_iter()
            .map(|(key, _, _)| key)
            .collect();
        for (key, old, new) in self.startup.differences(&now) {
            if changed.contains(&key) {
                tracing::warn!(
                    key = format!("server.{key}"),
                    "server.{key} changed from {old} to {new}, but keeps its start-up value until the process restarts"
                );
            }
        }
        self.loaded = now;
    }
}

/// SIGHUP, which would otherwise end the process: taken over before the service listens, so that a reload
/// can never kill it. Never resolves where there is no such signal.
pub(crate) fn hangups() -> Hangups {
    #[cfg(unix)]
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(s) => return Hangups(Some(s)),
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGHUP; reload by changing the file")
        }
    }
    Hangups(None)
}

#[cfg(unix)]
pub(crate) struct Hangups(Option<tokio::signal::unix::Signal>);
#[cfg(not(unix))]
pub(crate) struct Hangups(Option<std::convert::Infallible>);

impl Hangups {
    async fn recv(&mut self) {
        #[cfg(unix)]
        if let Some(s) = &mut self.0 {
            if s.recv().await.is_some() {
                return;
            }
        }
        std::future::pending::<()>().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_restart_only_key_that_changed_is_named_with_both_values() {
        let old = Server::default();
        let mut new = Server::default();
        assert!(RestartOnly::of(&old)
            .differences(&RestartOnly::of(&new))
            .is_empty());
        new.listen = "127.0.0.1:9000".parse().expect("an address");
        new.shutdown_delay = Duration::from_secs(30);
        new.public_listen = Some("[::]:8081".parse().expect("an address"));
        // Not restart-only: a reload applies it.
        new.description = "another".into();
        assert_eq!(
            RestartOnly::of(&old).differences(&RestartOnly::of(&new)),
            [
                (
                    "listen",
                    "\"0.0.0.0:8080\"".into(),
                    "\"127.0.0.1:9000\"".into()
                ),
                ("public_listen", "null".into(), "\"[::]:8081\"".into()),
                ("shutdown_delay", "\"5s\"".into(), "\"30s\"".into()),
            ]
        );
        assert_eq!(
            RESTART_ONLY,
            [
                "listen",
                "public_listen",
                "max_connections",
                "public_max_connections",
                "header_read_timeout",
                "shutdown_delay"
            ]
        );
    }
}
