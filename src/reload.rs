//! Live reload: on SIGHUP, and when the configuration file or `server.token_file` changes, the configuration
//! is read and validated again and applied without a restart. The files are polled (cheap: two small reads
//! every [`POLL`]) rather than watched by inode, so that a ConfigMap volume's atomic swap of its `..data`
//! symlink is seen as well as an edit in place. A file that does not validate is refused and the running
//! configuration stays; the metrics say which happened.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use tokio::sync::watch;

use crate::checks::running::Running;
use crate::config::{Check, Config, Overrides};
use crate::engine::Reloaded;
use crate::metrics::Metrics;
use crate::policy::Rules;
use crate::server::{identity, levels, Presentation, State};
use crate::signals::Sink;

/// How often the files are compared with what was last read.
pub const POLL: Duration = Duration::from_secs(2);

/// `[server]` keys a reload does not apply: the listener and its limits are bound at start-up.
pub const RESTART_ONLY: &[&str] = &[
    "listen",
    "public_listen",
    "max_connections",
    "public_max_connections",
    "header_read_timeout",
    "shutdown_delay",
];

/// Everything a reload replaces, and where the configuration comes from.
pub(crate) struct Reloader {
    pub(crate) path: PathBuf,
    pub(crate) overrides: Overrides,
    /// `[server]` as started, to name the restart-only keys a reload changes.
    pub(crate) startup: serde_json::Value,
    /// `[server]` as last loaded, so that each change is warned about once, not at every reload.
    pub(crate) loaded: serde_json::Value,
    pub(crate) token_file: Option<PathBuf>,
    pub(crate) running: Running,
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
}

impl Seen {
    async fn read(path: &Path, token_file: Option<&Path>) -> Seen {
        let token = match token_file {
            Some(t) => tokio::fs::read(t).await.ok(),
            None => None,
        };
        Seen {
            target: tokio::fs::canonicalize(path).await.ok(),
            config: tokio::fs::read(path).await.ok(),
            token,
        }
    }
}

impl Reloader {
    /// Reloads on every SIGHUP and every change of the files, until the process ends.
    pub(crate) async fn run(mut self, mut hangups: Hangups) {
        let mut seen = Seen::read(&self.path, self.token_file.as_deref()).await;
        let mut poll = tokio::time::interval(POLL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let trigger = tokio::select! {
                _ = hangups.recv() => "SIGHUP",
                _ = poll.tick() => {
                    let now = Seen::read(&self.path, self.token_file.as_deref()).await;
                    if now == seen {
                        continue;
                    }
                    "file changed"
                }
            };
            // Read before loading: a change made while loading is then seen at the next poll.
            let token_file = self.token_file.clone();
            seen = Seen::read(&self.path, token_file.as_deref()).await;
            self.reload(trigger).await;
            if self.token_file != token_file {
                seen = Seen::read(&self.path, self.token_file.as_deref()).await;
            }
        }
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
        self.state.present(Presentation {
            identity: identity(&config),
            details: config.server.details,
            token,
        });
        self.token_file = config.server.token_file.clone();
        // The policy first: were a removed check's observations dropped before, the old policy would show
        // it as `pending` (unknown) in between.
        self.engine.send_replace(Reloaded {
            rules: Rules::new(&config),
            identity: identity(&config),
            // `public_listen` keeps its start-up value: the listener that runs decides.
            levels: levels(
                config.server.details,
                !self.startup["public_listen"].is_null(),
            ),
        });
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
        let now = serde_json::to_value(&config.server).unwrap_or_default();
        for key in RESTART_ONLY {
            let (old, new) = (&self.startup[key], &now[key]);
            if old != new && self.loaded[key] != *new {
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
