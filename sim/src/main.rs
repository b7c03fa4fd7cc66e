//! `klutch-sim`: the simulated Klutch control plane as a program, for the demo, benchmarks and people.
//! (A development tool: it talks to its user on standard output.)

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use bytes::Bytes;
use clap::{Parser, Subcommand};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use klutch_sim::{BackendMode, FakeApi, FakeBackend, SimControlPlane};
use serde_json::{json, Value};
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
    #[arg(long, default_value = "127.0.0.1:0")]
    api: SocketAddr,
    /// Fake provider-anynines health server address
    #[arg(long, default_value = "127.0.0.1:0")]
    backend: SocketAddr,
    /// Control API address (flip faults with curl)
    #[arg(long, default_value = "127.0.0.1:9900")]
    control: SocketAddr,
    /// Where to write the kubeconfig [default: a temporary directory]
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
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
        /// The klutch-health configuration to start from (its backend URL is pointed at the fake)
        #[arg(long, default_value = "config.toml")]
        config: PathBuf,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Serve(a) => {
            let (cp, kubeconfig) = start(&a).await?;
            println!("fake Kubernetes API:        {}", cp.api.url());
            println!("fake provider-anynines:     {}", cp.backend.url());
            println!("kubeconfig:                 {}", kubeconfig.display());
            println!("control API:                http://{}/", a.control);
            tokio::signal::ctrl_c().await?;
            Ok(())
        }
        Command::Demo {
            addresses,
            listen,
            config,
        } => demo(&addresses, listen, &config).await,
    }
}

async fn start(a: &Addresses) -> anyhow::Result<(SimControlPlane, PathBuf)> {
    let api = FakeApi::start_on(a.api)
        .await
        .context("cannot start the fake Kubernetes API")?;
    let backend = FakeBackend::start_on(a.backend)
        .await
        .context("cannot start the fake health server")?;
    let cp = SimControlPlane::with(api, backend);
    cp.spawn_provider_loop(Duration::from_secs(180), Duration::from_secs(30));
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
    tokio::spawn(control_api(listener, cp.clone()));
    Ok((cp, kubeconfig))
}

fn work_dir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("klutch-sim-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

async fn demo(a: &Addresses, listen: SocketAddr, config: &Path) -> anyhow::Result<()> {
    let binary = std::env::current_exe()?
        .parent()
        .map(|d| d.join("klutch-health"))
        .filter(|p| p.is_file())
        .context("klutch-health is not built next to klutch-sim: build it first with `cargo build --workspace`")?;
    let (cp, kubeconfig) = start(a).await?;
    let text = std::fs::read_to_string(config).with_context(|| {
        format!(
            "cannot read {} (run from the repository root or pass --config)",
            config.display()
        )
    })?;
    let demo_config = work_dir()?.join("config.toml");
    std::fs::write(
        &demo_config,
        demo_config_text(&text, &cp.backend.url(), listen)?,
    )?;
    let mut child = tokio::process::Command::new(&binary)
        .arg("--config")
        .arg(&demo_config)
        .env("KUBECONFIG", &kubeconfig)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot start {}", binary.display()))?;
    let base = format!("http://{listen}");
    let control = format!("http://{}", a.control);
    println!(
        "\nklutch-health is running against a simulated Klutch control plane.\n\n\
Try:\n  curl -s '{base}/readyz?verbose'\n  curl -s '{base}/healthz?verbose'\n  curl -s '{base}/readyz?format=json'\n  \
curl -s {base}/metrics\n  curl -s {base}/backend-health\n  open {base}/ in a browser\n\n\
Break something (and heal it again):\n  \
curl -X POST {control}/providerconfig/postgresql-backup-manager/degrade   # …/heal\n  \
curl -X POST {control}/provider/provider-anynines/unhealthy                 # …/healthy\n  \
curl -X POST {control}/deployment/bind/anynines-backend/unavailable         # …/available\n  \
curl -X POST {control}/backend/mode/500                                     # …/healthy\n  \
curl -X POST {control}/api/down                                             # …/up\n\n\
kubectl works too: KUBECONFIG={} kubectl get providers\n\nCtrl-C stops everything.\n",
        kubeconfig.display()
    );
    tokio::select! {
        status = child.wait() => bail!("klutch-health exited: {}", status?),
        _ = tokio::signal::ctrl_c() => {
            if let Some(pid) = child.id() {
                let _ = std::process::Command::new("kill").arg("-TERM").arg(pid.to_string()).status();
            }
            let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
        }
    }
    Ok(())
}

/// The given configuration with every backend-status URL pointed at the fake and `server.listen` set.
fn demo_config_text(text: &str, backend_url: &str, listen: SocketAddr) -> anyhow::Result<String> {
    let mut doc: toml::Table = text
        .parse()
        .context("the configuration is not valid TOML")?;
    let server = doc
        .entry("server")
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    if let Some(server) = server.as_table_mut() {
        server.insert("listen".into(), toml::Value::String(listen.to_string()));
    }
    if let Some(checks) = doc.get_mut("check").and_then(toml::Value::as_array_mut) {
        for check in checks.iter_mut().filter_map(toml::Value::as_table_mut) {
            if check.get("type").and_then(toml::Value::as_str) == Some("backend-status") {
                check.insert("url".into(), toml::Value::String(backend_url.to_string()));
            }
        }
    }
    Ok(toml::to_string(&doc)?)
}

async fn control_api(listener: TcpListener, cp: SimControlPlane) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let cp = cp.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let cp = cp.clone();
                async move { Ok::<_, std::convert::Infallible>(control(&cp, req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

const HELP: &str = "klutch-sim control API (POST unless noted):
  /provider/NAME/healthy | /provider/NAME/unhealthy
  /providerconfig/NAME/degrade | /providerconfig/NAME/heal
  /deployment/NAMESPACE/NAME/available | /deployment/NAMESPACE/NAME/unavailable
  /backend/mode/healthy|500|hang|slow|garbage|not-object|huge|truncated|reset|refuse
  /api/down | /api/up | /api/cut-watches | /api/compact | /api/expire | /api/hang | /api/unhang
  /objects            apply a JSON object or an array of objects (body)
  GET /stats          request counts of both fakes
";

async fn control(cp: &SimControlPlane, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let answer = |code: StatusCode, text: String| {
        let mut r = Response::new(Full::new(Bytes::from(text)));
        *r.status_mut() = code;
        r
    };
    if method == Method::GET {
        return match parts.as_slice() {
            ["stats"] => {
                let requests = cp.api.requests();
                let watches = requests.iter().filter(|r| r.is_watch).count();
                let stats = json!({"api_requests": requests.len(), "api_watch_requests": watches,
                                   "backend_requests": cp.backend.request_count(),
                                   "backend_connections": cp.backend.connection_count()});
                answer(StatusCode::OK, format!("{stats}\n"))
            }
            _ => answer(StatusCode::OK, HELP.to_string()),
        };
    }
    if method != Method::POST {
        return answer(StatusCode::METHOD_NOT_ALLOWED, HELP.to_string());
    }
    match parts.as_slice() {
        ["provider", name, "healthy"] => cp.set_provider_healthy(name, true),
        ["provider", name, "unhealthy"] => cp.set_provider_healthy(name, false),
        ["providerconfig", name, "degrade"] => cp.degrade_provider_config(
            name,
            "Get \"http://example-backup-manager.example.svc:3000/instances\": dial tcp 10.96.12.7:3000: connect: connection refused",
        ),
        ["providerconfig", name, "heal"] => cp.heal_provider_config(name),
        ["deployment", ns, name, "available"] => cp.set_deployment_available(ns, name, true),
        ["deployment", ns, name, "unavailable"] => cp.set_deployment_available(ns, name, false),
        ["backend", "mode", mode] => {
            let mode = match *mode {
                "healthy" => BackendMode::Healthy,
                "500" => BackendMode::Status500,
                "hang" => BackendMode::Hang,
                "slow" => BackendMode::Slow(Duration::from_secs(5)),
                "garbage" => BackendMode::Garbage,
                "not-object" => BackendMode::NotObject,
                "huge" => BackendMode::Huge(2 * 1024 * 1024),
                "truncated" => BackendMode::Truncated,
                "reset" => BackendMode::Reset,
                "refuse" => BackendMode::Refuse,
                other => return answer(StatusCode::BAD_REQUEST, format!("unknown mode {other:?}\n{HELP}")),
            };
            cp.backend.set_mode(mode)
        }
        ["api", "down"] => cp.api.set_down(true),
        ["api", "up"] => cp.api.set_down(false),
        ["api", "cut-watches"] => cp.api.cut_watches(),
        ["api", "compact"] => cp.api.compact(),
        ["api", "expire"] => cp.api.expire_watches(),
        ["api", "hang"] => cp.api.set_hang(true),
        ["api", "unhang"] => cp.api.set_hang(false),
        ["objects"] => {
            let body = match req.into_body().collect().await {
                Ok(b) => b.to_bytes(),
                Err(e) => return answer(StatusCode::BAD_REQUEST, format!("cannot read body: {e}\n")),
            };
            match serde_json::from_slice::<Value>(&body) {
                Ok(Value::Array(items)) => items.into_iter().for_each(|o| cp.api.apply(o)),
                Ok(obj) => cp.api.apply(obj),
                Err(e) => return answer(StatusCode::BAD_REQUEST, format!("invalid JSON: {e}\n")),
            }
        }
        _ => return answer(StatusCode::NOT_FOUND, HELP.to_string()),
    };
    answer(StatusCode::OK, "done\n".to_string())
}
