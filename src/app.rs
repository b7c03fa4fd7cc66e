//! The two ways to run: `serve` (the long-running service) and `check` (evaluate once and exit).

use std::collections::HashSet;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use jiff::Timestamp;
use tokio::net::TcpListener;

use crate::config::{Check, Config, DetailsPolicy};
use crate::engine::Engine;
use crate::events;
use crate::lease;
use crate::metrics::Metrics;
use crate::policy::{self, Memory, Rules};
use crate::render::{self, Details, Identity};
use crate::report::Endpoint;
use crate::server::{self, Limits};
use crate::signals::watch::Watches;
use crate::signals::{self, Sink};

fn identity(config: &Config) -> Identity {
    Identity {
        service_id: config.server.service_id.clone(),
        description: config.server.description.clone(),
    }
}

/// Compiles the policy and starts every check's signal.
async fn start(config: &Config) -> anyhow::Result<(Rules, Arc<Metrics>, Sink)> {
    let rules = Rules::new(config);
    let metrics = Arc::new(Metrics::new());
    let sink = Sink::default();
    signals::start(
        config.checks.iter().map(Check::as_ref),
        &config.clusters(),
        &sink,
        &metrics,
    )
    .await;
    Ok((rules, metrics, sink))
}

/// Runs the service until SIGTERM or SIGINT.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    tracing::info!(
        configuration = %serde_json::to_string(&config).unwrap_or_default(),
        "starting klutch-health {}", env!("CARGO_PKG_VERSION")
    );
    let token = config.token()?;
    let (rules, metrics, sink) = start(&config).await?;
    let levels = match config.server.details {
        DetailsPolicy::Always => vec![Details::Shown],
        DetailsPolicy::Never => vec![Details::Withheld],
        DetailsPolicy::Token => vec![Details::Shown, Details::Withheld],
    };
    let (engine, latest) = Engine::new(rules, identity(&config), levels, sink, metrics.clone());
    let engine = match events(&config).await {
        Some((sender, remote)) => engine.with_events(sender, remote),
        None => engine,
    };
    tokio::spawn(engine.run());
    let listener = TcpListener::bind(config.server.listen)
        .await
        .with_context(|| format!("cannot listen on {} (server.listen)", config.server.listen))?;
    let address = listener.local_addr()?;
    tracing::info!(%address, "listening");
    let state = Arc::new(server::State::new(
        latest,
        metrics,
        identity(&config),
        config.server.details,
        token,
    ));
    server::serve(
        listener,
        state,
        Limits::from(&config.server),
        shutdown_signal(),
    )
    .await;
    Ok(())
}

/// Starts the Events Lease loop and writer when `[kubernetes] events` is on and the default cluster can be
/// used; returns the engine's end and the checks of other clusters.
async fn events(config: &Config) -> Option<(events::Sender, HashSet<String>)> {
    if config.kubernetes.events == Some(false) {
        return None;
    }
    let client = match Watches::default().client(&config.clusters(), None).await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "no Kubernetes Events: the default cluster cannot be used");
            return None;
        }
    };
    let reporter = events::Reporter::from_env();
    let leader = lease::start(
        client.clone(),
        reporter.namespace(),
        reporter.instance.clone(),
    );
    let remote = config
        .checks
        .iter()
        .filter(|c| c.cluster.is_some())
        .map(|c| c.name.clone())
        .collect();
    Some((events::start(client, reporter, leader), remote))
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
    let (rules, _metrics, sink) = start(&config).await?;
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
