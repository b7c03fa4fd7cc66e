//! The two ways to run: `serve` (the long-running service) and `check` (evaluate once and exit).

pub mod reload;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use futures::FutureExt;
use tokio::net::TcpListener;

use crate::checks::Running;
use crate::config::{Check, Config, Overrides};
use crate::engine::{Engine, Reloaded};
use crate::http::server::{self, Limits, Presentation};
use crate::metrics::Metrics;
use crate::publish::events;
use crate::render::{self, Details, Identity};
use crate::signals::Sink;
use crate::verdict::policy::{self, Memory, Rules};
use crate::verdict::report::Endpoint;
use reload::{Reloader, RestartOnly};

/// Starts every check's signal.
async fn start(config: &Config) -> anyhow::Result<(Arc<Metrics>, Sink, Running)> {
    let metrics = Arc::new(Metrics::new());
    let sink = Sink::default();
    let mut running = Running::default();
    running
        .apply(
            config.checks.iter().map(Check::as_ref),
            &config.clusters(),
            &sink,
            &metrics,
        )
        .await;
    Ok((metrics, sink, running))
}

/// Runs the service until SIGTERM or SIGINT, reloading `config` from `path` (read with `overrides`) on
/// SIGHUP and whenever the file changes.
pub async fn serve(config: Config, path: PathBuf, overrides: Overrides) -> anyhow::Result<()> {
    tracing::info!(
        configuration = %serde_json::to_string(&config).unwrap_or_default(),
        "starting klutch-health {}", env!("CARGO_PKG_VERSION")
    );
    let token = config.token()?;
    let hangups = reload::hangups();
    let (metrics, sink, mut running) = start(&config).await?;
    let mut events = events::Control::default();
    let sender = events.apply(&config, &mut running).await;
    let view = Reloaded::of(&config, config.server.public_listen.is_some(), sender);
    let (reloads, reloaded) = tokio::sync::watch::channel(view.clone());
    let (engine, latest) = Engine::new(view, sink.clone(), metrics.clone());
    tokio::spawn(engine.run(reloaded));
    let state = Arc::new(server::State::new(
        latest,
        metrics.clone(),
        Presentation::of(&config, token),
    ));
    // Both listeners are bound before either serves: a taken port stops the program instead of leaving half
    // of it up.
    let main = listen(config.server.listen, "server.listen")?;
    let public = match config.server.public_listen {
        Some(addr) => Some(listen(addr, "server.public_listen")?),
        None => None,
    };
    let reloader = Reloader {
        path,
        overrides,
        startup: RestartOnly::of(&config.server),
        loaded: RestartOnly::of(&config.server),
        token_file: config.server.token_file.clone(),
        kubeconfigs: reload::kubeconfigs(&config),
        running,
        events,
        sink,
        metrics,
        engine: reloads,
        state: state.clone(),
    };
    tokio::spawn(reloader.run(hangups));
    let shutdown = shutdown_signal().shared();
    let main = server::serve(
        main,
        state.clone(),
        Limits::new(&config.server, config.server.max_connections),
        shutdown.clone(),
    );
    match public {
        Some(public) => {
            let public = server::serve(
                public,
                Arc::new(state.public()),
                Limits::new(&config.server, config.server.public_max_connections),
                shutdown,
            );
            tokio::join!(main, public);
        }
        None => main.await,
    }
    Ok(())
}

/// Binds one listener and logs its address (`listening`, which tests and operators wait for).
fn listen(addr: SocketAddr, key: &'static str) -> anyhow::Result<TcpListener> {
    let listener = crate::http::listen::bind(addr, key)
        .with_context(|| format!("cannot listen on {addr} ({key})"))?;
    let address = listener.local_addr()?;
    tracing::info!(%address, key, "listening");
    Ok(listener)
}

/// Resolves on the first SIGTERM or SIGINT. A second one exits at once, without waiting for the drain: an
/// operator who presses Ctrl-C twice, or sends SIGTERM again, means it.
async fn shutdown_signal() {
    let mut signals = Signals::new();
    let first = signals.next().await;
    tracing::info!("received {}", first.name);
    tokio::spawn(async move {
        let second = signals.next().await;
        tracing::warn!("received {} during shutdown: exiting at once", second.name);
        std::process::exit(128 + second.number);
    });
}

/// A termination signal, with the number a shell reports for it (exit code 128 + number).
struct Received {
    name: &'static str,
    number: i32,
}

/// SIGTERM and SIGINT, each listened for once for the whole shutdown, so that the second one is not lost.
struct Signals {
    #[cfg(unix)]
    term: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    int: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn new() -> Signals {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let listen = |kind: SignalKind, name: &str| {
                signal(kind)
                    .inspect_err(|e| tracing::error!(error = %e, "cannot listen for {name}"))
                    .ok()
            };
            Signals {
                term: listen(SignalKind::terminate(), "SIGTERM"),
                int: listen(SignalKind::interrupt(), "SIGINT"),
            }
        }
        #[cfg(not(unix))]
        Signals {}
    }

    async fn next(&mut self) -> Received {
        #[cfg(unix)]
        {
            async fn on(s: &mut Option<tokio::signal::unix::Signal>) {
                match s {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending().await,
                }
            }
            tokio::select! {
                _ = on(&mut self.term) => Received { name: "SIGTERM", number: 15 },
                _ = on(&mut self.int) => Received { name: "SIGINT", number: 2 },
            }
        }
        #[cfg(not(unix))]
        {
            if let Err(e) = tokio::signal::ctrl_c().await {
                tracing::error!(error = %e, "cannot listen for SIGINT");
                std::future::pending::<()>().await;
            }
            Received {
                name: "SIGINT",
                number: 2,
            }
        }
    }
}

/// Output format of `check`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
}

/// Evaluates `endpoint` once, after every signal's first observation or `wait`, whichever comes first;
/// prints the verbose report and returns exit code 0 (pass) or 1 (fail). Flap damping needs history that
/// one evaluation does not have, so `fail_after` and `pass_after` do not apply here.
pub async fn check(
    mut config: Config,
    endpoint: Endpoint,
    format: Format,
    wait: Duration,
) -> anyhow::Result<ExitCode> {
    for policy in [&mut config.endpoints.healthz, &mut config.endpoints.readyz] {
        policy.fail_after = Duration::ZERO;
        policy.pass_after = Duration::ZERO;
    }
    let rules = Rules::new(&config);
    let (_metrics, sink, _running) = start(&config).await?;
    let deadline = crate::clock::later(tokio::time::Instant::now(), wait);
    while !sink.snapshot().unsynced.is_empty() {
        tokio::select! {
            _ = sink.changed() => {}
            _ = tokio::time::sleep_until(deadline) => {
                let unsynced: Vec<String> = sink.snapshot().unsynced.into_iter().collect();
                tracing::warn!(
                    unsynced = %unsynced.join(", "),
                    "--wait elapsed before every check had synced: {} never did (their items are unknown; the others are judged)",
                    unsynced.join(", ")
                );
                break;
            }
        }
    }
    let evaluation = policy::evaluate(
        &rules,
        &sink.snapshot(),
        &Memory::default(),
        crate::clock::Moment::now(),
    );
    let report = evaluation.report.endpoint(endpoint);
    let selection = report.all();
    let out = match format {
        Format::Text => {
            render::text::verbose(&evaluation.report, endpoint, &selection, Details::Shown)
        }
        Format::Json => {
            render::json::document(
                &evaluation.report,
                &Identity::of(&config),
                &selection,
                Details::Shown,
                None,
            ) + "\n"
        }
    };
    print!("{out}");
    Ok(if selection.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
