//! The `klutch-health` command: parses the command line and starts the chosen mode.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use klutch_health::app::{self, Format};
use klutch_health::config::{self, Config, Overrides};
use klutch_health::telemetry::{self, LogFormat};
use klutch_health::verdict::report::Endpoint;

/// One trustworthy health URL for a Klutch control plane.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    /// Configuration file [default: $KLUTCH_HEALTH_CONFIG, else ./config.toml]
    #[arg(long, global = true, overrides_with = "config")]
    config: Option<PathBuf>,
    /// Listen address, overriding server.listen
    #[arg(long, global = true)]
    listen: Option<std::net::SocketAddr>,
    /// Log format
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    /// Validate the configuration, print the effective configuration, and exit (0 valid, 2 invalid)
    #[arg(long)]
    check_config: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the service (the default)
    Serve,
    /// Evaluate once, print the verbose report, exit 0 (pass), 1 (fail) or 2 (configuration error)
    Check {
        /// Which endpoint's policy to apply
        #[arg(long, value_parser = parse_endpoint, default_value = "readyz")]
        endpoint: Endpoint,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
        /// How long to wait for every check's first observation
        #[arg(long, value_parser = humantime::parse_duration, default_value = "30s")]
        wait: Duration,
    },
}

fn parse_endpoint(s: &str) -> Result<Endpoint, String> {
    match s {
        "healthz" => Ok(Endpoint::Healthz),
        "readyz" => Ok(Endpoint::Readyz),
        _ => Err(format!("unknown endpoint {s:?}: use healthz or readyz")),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init(cli.log_format);
    let path = config::config_path(cli.config.as_deref());
    let overrides = Overrides { listen: cli.listen };
    let config = match Config::load(&path, &overrides) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("{e} (in {})", path.display());
            return ExitCode::from(2);
        }
    };
    if cli.check_config {
        print!("{}", config.to_toml());
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            tracing::error!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command.unwrap_or(Command::Serve) {
            Command::Serve => app::serve(config, path, overrides)
                .await
                .map(|()| ExitCode::SUCCESS),
            Command::Check {
                endpoint,
                format,
                wait,
            } => app::check(config, endpoint, format, wait).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::from(2)
        }
    }
}
