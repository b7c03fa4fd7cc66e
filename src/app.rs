//! The two ways to run: `serve` (the long-running service) and `check` (evaluate once and exit).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use jiff::Timestamp;
use tokio::net::TcpListener;

use crate::config::{Check, Config, Overrides};
use crate::engine::{Engine, Reloaded};
use crate::metrics::Metrics;
use crate::policy::{self, Memory, Rules};
use crate::reload::{self, Reloader};
use crate::render::{self, Details};
use crate::report::Endpoint;
use crate::server::{self, identity, levels, Limits};
use crate::signals::running::Running;
use crate::signals::Sink;

/// Compiles the policy and starts every check's signal.
async fn start(config: &Config) -> anyhow::Result<(Rules, Arc<Metrics>, Sink, Running)> {
    let rules = Rules::new(config);
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
    Ok((rules, metrics, sink, running))
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
    let (rules, metrics, sink, running) = start(&config).await?;
    let reload = Reloaded {
        rules,
        identity: identity(&config),
        levels: levels(config.server.details),
    };
    let (reloads, reloaded) = tokio::sync::watch::channel(reload.clone());
    let (engine, latest) = Engine::new(
        reload.rules,
        reload.identity,
        reload.levels,
        sink.clone(),
        metrics.clone(),
    );
    tokio::spawn(engine.run(reloaded));
    let listener = TcpListener::bind(config.server.listen)
        .await
        .with_context(|| format!("cannot listen on {} (server.listen)", config.server.listen))?;
    let address = listener.local_addr()?;
    tracing::info!(%address, "listening");
    let state = Arc::new(server::State::new(
        latest,
        metrics.clone(),
        identity(&config),
        config.server.details,
        token,
    ));
    let reloader = Reloader {
        path,
        overrides,
        startup: serde_json::to_value(&config.server).unwrap_or_default(),
        loaded: serde_json::to_value(&config.server).unwrap_or_default(),
        token_file: config.server.token_file.clone(),
        running,
        sink,
        metrics,
        engine: reloads,
        state: state.clone(),
    };
    tokio::spawn(reloader.run(hangups));
    server::serve(
        listener,
        state,
        Limits::from(&config.server),
        shutdown_signal(),
    )
    .await;
    Ok(())
}

/// Resolves on the first SIGTERM or SIGINT.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("received SIGINT"),
        _ = term => tracing::info!("received SIGTERM"),
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
    let (rules, _metrics, sink, _running) = start(&config).await?;
    let deadline = tokio::time::Instant::now() + wait;
    while !sink.snapshot().unsynced.is_empty() {
        tokio::select! {
            _ = sink.changed() => {}
            _ = tokio::time::sleep_until(deadline) => {
                tracing::warn!(unsynced = ?sink.snapshot().unsynced, "--wait elapsed before every check had synced");
                break;
            }
        }
    }
    let evaluation = policy::evaluate(
        &rules,
        &sink.snapshot(),
        &Memory::default(),
        Timestamp::now(),
    );
    let report = evaluation.report.endpoint(endpoint);
    let selection = report.all();
    let out = match format {
        Format::Text => render::text::verbose(endpoint, &selection, Details::Shown),
        Format::Json => {
            render::json::document(
                &evaluation.report,
                &identity(&config),
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
