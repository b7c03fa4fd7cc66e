//! `klutch-sim`: the simulated Klutch control plane as a program, for the demo, benchmarks and people.
//! (A development tool: it talks to its user on standard output.)

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use klutch_sim::{FakeApi, FakeBackend, SimControlPlane};
use tokio::net::TcpListener;

#[derive(Parser)]
#[command(
    about = "A simulated Klutch control plane: fake Kubernetes API + fake provider-anynines health server"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Clone)]
struct Addresses {
    /// Fake Kubernetes API server address (port 0: any free port)
    #[arg(long, default_value = "127.0.0.1:6443")]
    api: SocketAddr,
    /// Fake provider-anynines health server address (port 0: any free port)
    #[arg(long, default_value = "127.0.0.1:8081")]
    backend: SocketAddr,
    /// Control API address, to flip faults with curl (port 0: any free port)
    #[arg(long, default_value = "127.0.0.1:9900")]
    control: SocketAddr,
    /// Where to write the kubeconfig [default: a temporary directory]
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Serve the Kubernetes API over TLS, with a CA made at start; its `ca.crt` and a service-account
    /// `token` are written to this directory
    #[arg(long)]
    tls_dir: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the simulated control plane only
    Serve(#[command(flatten)] Addresses),
    /// Run the simulated control plane and klutch-health against it
    Demo {
        #[command(flatten)]
        addresses: Addresses,
        /// klutch-health's listen address
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// klutch-health's public listener, when the configuration has one (the shipped port 8081 is the fake
        /// provider-anynines' here)
        #[arg(long, default_value = "127.0.0.1:8082")]
        public_listen: SocketAddr,
        /// The klutch-health configuration to start from (its backend URL is pointed at the fake)
        #[arg(long, default_value = "config.toml")]
        config: PathBuf,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Serve(a) => {
            let sim = start(&a).await?;
            sim.print();
            shutdown_signal().await?;
            Ok(())
        }
        Command::Demo {
            addresses,
            listen,
            public_listen,
            config,
        } => demo(&addresses, (listen, public_listen), &config).await,
    }
}

/// A running simulated control plane, as the program started it.
struct Sim {
    cp: SimControlPlane,
    kubeconfig: PathBuf,
    control: String,
}

impl Sim {
    fn print(&self) {
        println!("fake Kubernetes API:        {}", self.cp.api.url());
        println!("fake provider-anynines:     {}", self.cp.backend.url());
        println!("kubeconfig:                 {}", self.kubeconfig.display());
        println!("control API:                {}/", self.control);
    }
}

/// Which signal asked us to stop, so the demo can pass the same one on.
#[derive(Clone, Copy)]
enum Stop {
    Interrupt,
    Terminate,
}

impl Stop {
    fn name(self) -> &'static str {
        match self {
            Stop::Interrupt => "INT",
            Stop::Terminate => "TERM",
        }
    }
}

async fn shutdown_signal() -> anyhow::Result<Stop> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.map(|()| Stop::Interrupt).map_err(Into::into),
        _ = term.recv() => Ok(Stop::Terminate),
    }
}

async fn start(a: &Addresses) -> anyhow::Result<Sim> {
    let api = match &a.tls_dir {
        None => FakeApi::start_on(a.api).await,
        Some(dir) => FakeApi::start_tls_on(a.api, dir).await,
    }
    .context("cannot start the fake Kubernetes API")?;
    let backend = FakeBackend::start_on(a.backend)
        .await
        .context("cannot start the fake health server")?;
    let cp = SimControlPlane::with(api, backend);
    cp.spawn_provider_loop(Duration::from_secs(180), Duration::from_secs(30));
    cp.seed_estate(Duration::from_secs(30));
    let kubeconfig = match &a.kubeconfig {
        Some(p) => p.clone(),
        None => work_dir()?.join("kubeconfig"),
    };
    cp.api.write_kubeconfig(&kubeconfig)?;
    let listener = TcpListener::bind(a.control).await.with_context(|| {
        format!(
            "cannot listen on {} for the control API (use --control)",
            a.control
        )
    })?;
    let control = format!("http://{}", listener.local_addr()?);
    tokio::spawn(klutch_sim::control_api::serve(listener, cp.clone()));
    Ok(Sim {
        cp,
        kubeconfig,
        control,
    })
}

fn work_dir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("klutch-sim-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// `listen`: klutch-health's main and public listen addresses.
async fn demo(
    a: &Addresses,
    listen: (SocketAddr, SocketAddr),
    config: &Path,
) -> anyhow::Result<()> {
    let binary = std::env::current_exe()?
        .parent()
        .map(|d| d.join("klutch-health"))
        .filter(|p| p.is_file())
        .context(
            "klutch-health is not next to klutch-sim: build it first: cargo build --workspace",
        )?;
    let sim = start(a).await?;
    let Sim {
        cp,
        kubeconfig,
        control,
    } = &sim;
    let text = std::fs::read_to_string(config).with_context(|| {
        format!(
            "cannot read {} (run from the repository root or pass --config)",
            config.display()
        )
    })?;
    let demo_config = work_dir()?.join("config.toml");
    std::fs::write(
        &demo_config,
        demo_config_text(&text, &cp.backend.url(), listen, kubeconfig)?,
    )?;
    let mut child = tokio::process::Command::new(&binary)
        .arg("--config")
        .arg(&demo_config)
        .env("KUBECONFIG", kubeconfig)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot start {}", binary.display()))?;
    let base = format!("http://{}", listen.0);
    let public = format!("http://{}", listen.1);
    sim.print();
    println!(
        "\nklutch-health is running against a simulated Klutch control plane.\n\n\
Try:\n  curl -s '{base}/readyz?verbose'\n  curl -s '{base}/healthz?verbose'\n  curl -s '{base}/readyz?format=json'\n  \
curl -s {base}/metrics\n  curl -s {base}/backend-health\n  open {base}/ in a browser\n  \
curl -s '{public}/readyz?verbose'    # the public listener (if configured): reasons withheld\n\n\
Break something (and heal it again):\n  \
curl -X POST {control}/providerconfig/postgresql-backup-manager/degrade   # …/heal\n  \
curl -X POST {control}/provider/provider-anynines/unhealthy                 # …/healthy\n  \
curl -X POST {control}/package/functions/function-patch-and-transform/unhealthy-v2   # …/healthy, …/bump-generation\n  \
curl -X POST {control}/package/providers/provider-anynines/scaled-to-zero   # …/activate (Crossplane 2, no pods)\n  \
curl -X POST {control}/deployment/bind/anynines-backend/unavailable         # …/available, …/lagging, …/deadline-exceeded\n  \
curl -X POST {control}/konnector/kube-bind-7xk2p/silence                    # …/resume, …/skew/3600\n  \
curl -X POST {control}/clusterbinding/kube-bind-new01/add                   # another app cluster\n  \
curl -X POST {control}/appclusterbinding/team-a/prod/konnector-missing      # …/konnector-back, …/secret-invalid, …/ready\n  \
curl -X POST {control}/pod/evicted/add                                      # …/remove; completed, terminating, unschedulable\n  \
curl -X POST {control}/managed/serviceinstances/pg-prod-7/failing           # …/ready, creating, deleting, paused, pending, remove\n  \
curl -X POST {control}/managed/serviceinstances/many/100/failing/redis-service-broker   # 100 more; …/many/10000\n  \
curl -X POST {control}/crd/backups.dataservices.anynines.com/delete        # …/create\n  \
curl -X POST {control}/backend/mode/500                                     # …/healthy, duplicate-keys, html\n  \
curl -X POST {control}/backend/entries/empty                                # …/seeded, endpoint, invalid-names, many\n  \
curl -X POST {control}/api/freeze                                           # …/unfreeze; …/down, …/up\n  \
curl -X POST {control}/api/watch/forbidden                                  # …/error, …/ok; …/bookmarks/off\n  \
curl {control}/                                                             # every verb\n\n\
kubectl works too: KUBECONFIG={} kubectl get providers,configurations,functions; kubectl get clusterbindings,appclusterbindings -A; kubectl get managed\n\nCtrl-C stops everything.\n",
        kubeconfig.display()
    );
    let status = tokio::select! {
        status = child.wait() => status?,
        stop = shutdown_signal() => {
            if let Some(pid) = child.id() {
                let _ = std::process::Command::new("kill")
                    .arg(format!("-{}", stop?.name()))
                    .arg(pid.to_string())
                    .status();
            }
            // klutch-health waits `shutdown_delay` (5 s by default) before it exits.
            match tokio::time::timeout(Duration::from_secs(30), child.wait()).await {
                Ok(status) => status?,
                Err(_) => {
                    child.kill().await?;
                    bail!("klutch-health did not stop within 30 s; killed it");
                }
            }
        }
    };
    // Exit as the child did (128 + signal when a signal ended it, as shells report it).
    let code = status
        .code()
        .or_else(|| std::os::unix::process::ExitStatusExt::signal(&status).map(|s| 128 + s))
        .unwrap_or(1);
    std::process::exit(code)
}

/// The given configuration, comments and all, with every backend-status URL pointed at the fake,
/// `server.listen` set (and `server.public_listen`, if the file has one), and a `kubernetes.kubeconfig`
/// (if the file names one) pointed at the fake's.
fn demo_config_text(
    text: &str,
    backend_url: &str,
    (listen, public_listen): (SocketAddr, SocketAddr),
    kubeconfig: &Path,
) -> anyhow::Result<String> {
    let mut doc: toml_edit::DocumentMut = text
        .parse()
        .context("the configuration is not valid TOML")?;
    let server = doc
        .entry("server")
        .or_insert_with(toml_edit::table)
        .as_table_like_mut()
        .context("`server` is not a table")?;
    set(server, "listen", listen.to_string());
    if server.contains_key("public_listen") {
        set(server, "public_listen", public_listen.to_string());
    }
    if let Some(kubernetes) = doc
        .get_mut("kubernetes")
        .and_then(toml_edit::Item::as_table_like_mut)
    {
        if kubernetes.contains_key("kubeconfig") {
            set(kubernetes, "kubeconfig", kubeconfig.display().to_string());
            kubernetes.remove("context");
        }
    }
    if let Some(checks) = doc
        .get_mut("check")
        .and_then(toml_edit::Item::as_array_of_tables_mut)
    {
        for check in checks.iter_mut() {
            if check.get("type").and_then(toml_edit::Item::as_str) == Some("backend-status") {
                check["url"] = toml_edit::value(backend_url);
            }
        }
    }
    Ok(doc.to_string())
}

/// Sets a value, keeping the key's comments.
fn set(table: &mut dyn toml_edit::TableLike, key: &str, value: String) {
    match table.get_mut(key) {
        Some(item) => *item = toml_edit::value(value),
        None => {
            table.insert(key, toml_edit::value(value));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_config_points_at_the_fakes_and_keeps_the_rest() {
        let shipped = include_str!("../../config.toml");
        let out = demo_config_text(
            shipped,
            "http://127.0.0.1:1234/backend-health",
            (
                "127.0.0.1:8080".parse().expect("addr"),
                "127.0.0.1:8082".parse().expect("addr"),
            ),
            Path::new("/tmp/kc"),
        )
        .expect("rewritten");
        let doc: toml_edit::DocumentMut = out.parse().expect("valid TOML");
        assert_eq!(doc["server"]["listen"].as_str(), Some("127.0.0.1:8080"));
        // Not the shipped 8081: the fake provider-anynines answers there.
        assert_eq!(
            doc["server"]["public_listen"].as_str(),
            Some("127.0.0.1:8082")
        );
        assert_eq!(doc["server"]["details"].as_str(), Some("always"));
        let urls: Vec<_> = doc["check"]
            .as_array_of_tables()
            .expect("checks")
            .iter()
            .filter_map(|c| c.get("url").and_then(toml_edit::Item::as_str))
            .collect();
        assert_eq!(urls, ["http://127.0.0.1:1234/backend-health"]);
        assert!(out.contains("# klutch-health — the shipped Klutch default configuration."));
        let lines = |t: &str| t.lines().count();
        assert_eq!(lines(&out), lines(shipped), "only values change");

        let with_kubeconfig = demo_config_text(
            "[kubernetes]\nkubeconfig = \"/etc/kc\"\ncontext = \"prod\"\n",
            "u",
            (
                "127.0.0.1:1".parse().expect("addr"),
                "127.0.0.1:2".parse().expect("addr"),
            ),
            Path::new("/tmp/kc"),
        )
        .expect("rewritten");
        assert!(with_kubeconfig.contains("kubeconfig = \"/tmp/kc\""));
        assert!(!with_kubeconfig.contains("prod"));
        for broken in ["server = 3", "[[["] {
            let listen = (
                "127.0.0.1:1".parse().expect("addr"),
                "127.0.0.1:2".parse().expect("addr"),
            );
            let rewritten = demo_config_text(broken, "u", listen, Path::new("k"));
            assert!(rewritten.is_err(), "{broken}");
        }
    }
}
