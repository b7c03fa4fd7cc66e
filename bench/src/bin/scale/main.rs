//! The scale bench (bench/run's scale section): klutch-health watching 0, 1 000, 10 000 and 50 000 managed
//! resources on a **real** control plane (kube-apiserver and etcd from `controlplane/build.sh`, the simulator's
//! Klutch estate mirrored into it), side by side with kube-state-metrics on the same objects.
//!
//! At each size: the objects are seeded in parallel (plan.rs says which), then klutch-health (release build,
//! the shipped configuration) is started and timed to its first complete verdict — every object counted and
//! `/readyz` answering 200 —, its memory and CPU read from `/proc`; then kube-state-metrics the same way (its
//! first complete answer: every object's `Ready` series on `/metrics`). At the largest size both keep running
//! for the churn: status changes at a fixed rate (churn.rs says how they are timed and detected), first
//! quietly (CPU per event), then with klutch-health polled alone, then with both polled; then one relist, and
//! the midnight backup storm (storm.rs): thousands of Backups run to completion within a minute while
//! `/readyz` is probed at a fixed rate.
//!
//! Writes `OUT/results.json` and `OUT/scale.md` (the section of BENCHMARKS.md). With `--hold`, it then stops
//! kube-state-metrics, writes klutch-health's address to `OUT/ready` and keeps everything running until
//! SIGTERM, so that bench/run can measure the probe path with 50 000 objects watched.

mod churn;
mod observe;
mod plan;
mod procs;
mod report;
mod seed;
mod storm;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use clap::Parser;
use klutch_realcp::{ControlPlane, Mirror, Rest};
use klutch_sim::ManagedKind;
use klutch_sim::SimControlPlane;
use serde::{Deserialize, Serialize};

use churn::{CountsSeen, Sent, SeriesSeen};
use observe::{percentile, Http};
use plan::Split;
use procs::{Memory, Proc};

#[derive(Parser)]
#[command(
    about = "klutch-health and kube-state-metrics at 50 000 managed resources on a real control plane"
)]
struct Args {
    /// The klutch-health binary (the release build)
    #[arg(long)]
    klutch_health: PathBuf,
    /// The configuration it runs (the shipped one; its backend URL and listen addresses are replaced)
    #[arg(long, default_value = "config.toml")]
    config: PathBuf,
    /// kube-state-metrics (`controlplane/build.sh bench/ksm`); without it klutch-health is measured alone
    #[arg(long)]
    ksm: Option<PathBuf>,
    /// kube-state-metrics' custom-resource-state config
    #[arg(long, default_value = "bench/ksm/managed-resources.yaml")]
    ksm_config: PathBuf,
    /// Managed resources in total at each step (0: the shipped estate alone)
    #[arg(long, value_delimiter = ',', default_value = "0,1000,10000,50000")]
    sizes: Vec<usize>,
    /// Status changes per second during the churn
    #[arg(long, default_value_t = 100)]
    rate: u32,
    /// Seconds of each measured churn phase (half breaking, half healing)
    #[arg(long, default_value_t = 20)]
    churn_seconds: u64,
    /// The midnight backup storm at the largest size, after the relist: Backups created, run and completed
    /// (0: no storm)
    #[arg(long, default_value_t = 10_000)]
    storm_backups: usize,
    /// Seconds within which every Backup of the storm is created and completed
    #[arg(long, default_value_t = 60)]
    storm_seconds: u64,
    /// The static hyper server the storm's probes are compared with (default: beside this binary)
    #[arg(long)]
    static_server: Option<PathBuf>,
    /// Directory for logs, the control plane's files, results.json and scale.md
    #[arg(long)]
    out: PathBuf,
    /// Once measured, keep klutch-health running (its address in OUT/ready) until SIGTERM
    #[arg(long)]
    hold: bool,
    /// Measure nothing: write OUT/scale.md from an earlier run's results.json (after a change of its text)
    #[arg(long)]
    render: Option<PathBuf>,
}

/// How long a tool may take to its first complete answer before the bench gives up on it.
const FIRST_ANSWER_WITHIN: Duration = Duration::from_secs(300);
/// How often the start-up pollers ask.
const START_POLL: Duration = Duration::from_millis(10);
/// How often klutch-health is polled during the churn.
const CHURN_POLL: Duration = Duration::from_millis(2);
/// After a phase's last change, how long the pollers wait for it to show.
const DRAIN: Duration = Duration::from_secs(30);
/// Idle windows: after the first answer (settling), and to measure idle CPU.
const SETTLE: Duration = Duration::from_secs(3);
const IDLE: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Results {
    /// `uptime`'s load averages when the run began and ended.
    pub load_before: String,
    pub load_after: String,
    pub cores: usize,
    pub sizes: Vec<SizeResult>,
    pub churn: Option<ChurnResult>,
    pub relist: Option<RelistResult>,
    /// Absent from the results of runs before it existed.
    #[serde(default)]
    pub storm: Option<storm::StormResult>,
}

impl Args {
    /// `--static-server`, or `static-server` beside this binary (bench/run builds both).
    fn static_bin(&self) -> anyhow::Result<PathBuf> {
        match &self.static_server {
            Some(p) => Ok(p.clone()),
            None => Ok(std::env::current_exe()?
                .parent()
                .ok_or_else(|| anyhow!("this binary has no directory"))?
                .join("static-server")),
        }
    }
}

/// Every watch relisting at the largest size: etcd compacted and kube-apiserver restarted, so that each
/// watch's resume gets `410 Gone` and lists everything again (what the memory limit must hold).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RelistResult {
    /// From kube-apiserver's restart to its first `200` on `/readyz`.
    pub apiserver_ready_ms: f64,
    /// A resource broken just after that: from its write to klutch-health's verdict showing it.
    pub change_shown_ms: f64,
    /// The same change, to a bare watch opened just before it (the restarted server's part).
    #[serde(default)]
    pub floor_shown_ms: Option<f64>,
    /// `klutch_health_watch_restarts_total` of the check over the restart (its watches did resume).
    pub watch_restarts: f64,
    /// Every object counted again and `/readyz` 200 afterwards.
    pub complete: bool,
    /// Peak RSS since start, after the relist.
    pub klutch_memory: Memory,
    /// kube-apiserver from its restart until klutch-health was complete again (its own start, the watch
    /// cache filled from etcd, and both tools' relists together): CPU seconds and peak RSS.
    #[serde(default)]
    pub apiserver_cpu_s: Option<f64>,
    #[serde(default)]
    pub apiserver_peak_kib: Option<u64>,
    pub ksm_memory: Option<Memory>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SizeResult {
    pub managed: usize,
    pub split: [usize; 4],
    /// Objects of the four kinds the API server held (the estate's own included).
    pub listed: u64,
    /// Seconds to seed this step, and objects per second.
    pub seed_seconds: f64,
    pub klutch: Start,
    pub ksm: Option<Start>,
}

/// A tool from its start to its first complete answer, then idle.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Start {
    pub first_complete_ms: f64,
    /// CPU time spent up to the first complete answer.
    pub cpu_to_first_s: f64,
    /// Memory after settling.
    pub memory: Memory,
    /// CPU over [`IDLE`] with nothing changing, in percent of one core.
    pub idle_cpu_percent: f64,
    /// One scrape of its `/metrics` once complete: milliseconds and bytes.
    pub scrape_ms: f64,
    pub scrape_bytes: usize,
    /// What it counted disagrees with what was seeded (klutch-health's counts per kind): why.
    pub mismatch: Option<String>,
    /// kube-apiserver's CPU and peak memory from this tool's start to its first complete answer.
    #[serde(default)]
    pub apiserver: Option<procs::ServerLoad>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChurnResult {
    pub rate: u32,
    pub phase_seconds: u64,
    /// CPU per status change (µs), from the quiet phase: the CPU over the phase less the idle rate.
    pub klutch_us_per_event: f64,
    pub ksm_us_per_event: Option<f64>,
    pub quiet_changes: usize,
    /// klutch-health polled alone (kube-state-metrics running, not scraped).
    pub alone: Vec<Latency>,
    /// Both polled, side by side.
    pub side_by_side: Vec<Latency>,
    /// Memory once the churn is over.
    pub klutch_memory: Memory,
    pub ksm_memory: Option<Memory>,
    /// The scrapes of kube-state-metrics during the side-by-side phase: their mean duration (ms).
    pub ksm_scrape_ms: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Latency {
    /// `klutch-health metric`, `klutch-health verdict`, `kube-state-metrics /metrics`.
    pub what: String,
    pub changes: usize,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
    /// Changes that never showed within the phase and [`DRAIN`].
    pub missing: usize,
}

impl Latency {
    fn of(what: &str, latencies: &[Option<Duration>]) -> Latency {
        let (ms, missing) = churn::in_ms(latencies);
        Latency {
            what: what.into(),
            changes: latencies.len(),
            p50_ms: percentile(&ms, 0.5),
            p99_ms: percentile(&ms, 0.99),
            max_ms: ms.iter().copied().reduce(f64::max),
            missing,
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    std::fs::create_dir_all(&args.out)?;
    let results = match &args.render {
        Some(path) => serde_json::from_slice(
            &std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?,
        )
        .with_context(|| format!("{} is not a results.json of this bench", path.display()))?,
        None => run(&args).await?,
    };
    std::fs::write(
        args.out.join("results.json"),
        serde_json::to_string_pretty(&results)?,
    )?;
    std::fs::write(args.out.join("scale.md"), report::markdown(&results))?;
    eprintln!("scale: wrote {}", args.out.join("scale.md").display());
    Ok(())
}

/// The world the tools watch: the real control plane with the simulated estate mirrored into it.
struct World {
    cp: ControlPlane,
    sim: SimControlPlane,
    _mirror: Mirror,
    admin: Rest,
}

async fn world(out: &Path) -> anyhow::Result<World> {
    eprintln!(
        "scale: starting the real control plane (controlplane/build.sh builds it when missing)"
    );
    let cp = ControlPlane::start_in(&out.join("controlplane")).await?;
    cp.install_crds().await?;
    let admin = Rest::from_kubeconfig(&cp.admin_kubeconfig()).await?;
    let sim = SimControlPlane::start().await?;
    // As `klutch-sim serve` runs it: konnectors heartbeat every 30 s, provider-anynines re-checks its
    // ProviderConfigs (so they never go stale during a long run).
    sim.seed_estate(Duration::from_secs(30));
    sim.spawn_provider_loop(Duration::from_secs(180), Duration::from_secs(30));
    let mirror = Mirror::start(&sim.api, admin.clone());
    mirror.caught_up().await?;
    Ok(World {
        cp,
        sim,
        _mirror: mirror,
        admin,
    })
}

async fn run(args: &Args) -> anyhow::Result<Results> {
    let load_before = load();
    if args.storm_backups > 0 && args.storm_seconds > 0 {
        // Found out now rather than after seeding and the churn.
        plan::storm(
            &Split::of(args.sizes.last().copied().unwrap_or(0)),
            args.storm_backups,
            args.storm_seconds,
        )?;
        let static_bin = args.static_bin()?;
        anyhow::ensure!(
            static_bin.exists(),
            "no static server at {} for the storm's probes (cargo build --release -p klutch-bench, or --static-server)",
            static_bin.display()
        );
    }
    let mut world = world(&args.out).await?;
    let config = klutch_config(args, &world)?;
    let http = Http::new();
    let mut sizes = Vec::new();
    let mut seeded = Split::default();
    let mut running: Option<(Running, Option<Running>)> = None;
    let last = args.sizes.last().copied().unwrap_or(0);
    for &n in &args.sizes {
        let target = Split::of(n);
        eprintln!(
            "scale: seeding {} managed resources ({})",
            n,
            target.words()
        );
        let seed_time = seed::seed(&world.admin, &seeded, &target).await?;
        eprintln!(
            "scale: seeded {} in {:.1} s",
            target.total() - seeded.total(),
            seed_time.as_secs_f64()
        );
        seeded = target;
        let listed = seed::counts(&world.admin).await?;
        let klutch = start_klutch(args, &config, &world, &http, &listed).await?;
        let ksm = match &args.ksm {
            Some(bin) => Some(start_ksm(args, bin, &world, &http, &listed).await?),
            None => None,
        };
        eprintln!(
            "scale: {n}: klutch-health complete after {:.0} ms, {:.1} MiB; kube-state-metrics {}",
            klutch.start.first_complete_ms,
            procs::mib(klutch.start.memory.rss_kib),
            ksm.as_ref().map_or("not run".into(), |k| format!(
                "after {:.0} ms, {:.1} MiB",
                k.start.first_complete_ms,
                procs::mib(k.start.memory.rss_kib)
            ))
        );
        sizes.push(SizeResult {
            managed: n,
            split: target.0,
            listed: listed.iter().sum(),
            seed_seconds: seed_time.as_secs_f64(),
            klutch: klutch.start.clone(),
            ksm: ksm.as_ref().map(|k| k.start.clone()),
        });
        if n == last {
            running = Some((klutch, ksm));
        } else {
            klutch.proc.stop().await;
            if let Some(k) = ksm {
                k.proc.stop().await;
            }
        }
    }
    let churn = match running.as_mut() {
        Some((klutch, ksm)) if args.rate > 0 && args.churn_seconds > 0 => {
            Some(run_churn(args, &world, &http, &seeded, klutch, ksm.as_mut()).await?)
        }
        _ => None,
    };
    let relist = match running.as_mut() {
        Some((klutch, ksm)) => {
            Some(run_relist(&mut world, &http, &seeded, klutch, ksm.as_mut()).await?)
        }
        None => None,
    };
    let storm = match running.as_mut() {
        Some((klutch, ksm)) if args.storm_backups > 0 && args.storm_seconds > 0 => {
            // Alone with the API server, as for the probe path afterwards.
            if let Some(k) = ksm.take() {
                k.proc.stop().await;
            }
            Some(storm::run(args, &world, &http, &seeded, klutch).await?)
        }
        _ => None,
    };
    let results = Results {
        load_before,
        load_after: load(),
        relist,
        storm,
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        sizes,
        churn,
    };
    if args.hold {
        if let Some((klutch, ksm)) = running {
            if let Some(k) = ksm {
                k.proc.stop().await;
            }
            // Written before holding, so that bench/run has them while the probes run.
            std::fs::write(
                args.out.join("results.json"),
                serde_json::to_string_pretty(&results)?,
            )?;
            std::fs::write(args.out.join("scale.md"), report::markdown(&results))?;
            std::fs::write(args.out.join("ready"), klutch.addr.to_string())?;
            eprintln!(
                "scale: holding klutch-health at {} until SIGTERM",
                klutch.addr
            );
            hold().await?;
            klutch.proc.stop().await;
        }
    }
    drop(world);
    Ok(results)
}

async fn hold() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        _ = term.recv() => {}
    }
    Ok(())
}

/// `uptime`'s load averages.
fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// The configuration klutch-health runs: `--config` with the backend pointed at the simulator's fake
/// provider-anynines and both listeners on ports of their own.
fn klutch_config(args: &Args, world: &World) -> anyhow::Result<PathBuf> {
    let text = std::fs::read_to_string(&args.config)
        .with_context(|| format!("cannot read {}", args.config.display()))?;
    let text = rewrite_config(&text, &world.sim.backend.url());
    let path = args.out.join("config.toml");
    std::fs::write(&path, text)?;
    Ok(path)
}

fn rewrite_config(text: &str, backend: &str) -> String {
    text.lines()
        .map(|line| {
            if line.starts_with("listen = ") {
                "listen = \"127.0.0.1:0\"".to_string()
            } else if line.starts_with("public_listen = ") {
                "public_listen = \"127.0.0.1:0\"".to_string()
            } else if line.starts_with("url = ") && line.contains("/backend-health") {
                format!("url = \"{backend}\"")
            } else {
                line.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

/// A tool started and complete.
struct Running {
    proc: Proc,
    addr: SocketAddr,
    start: Start,
}

async fn start_klutch(
    args: &Args,
    config: &Path,
    world: &World,
    http: &Http,
    listed: &[u64],
) -> anyhow::Result<Running> {
    let mut cmd = tokio::process::Command::new(&args.klutch_health);
    cmd.arg("--config")
        .arg(config)
        .arg("--log-format")
        .arg("json")
        .env("KUBECONFIG", world.cp.admin_kubeconfig())
        .env(
            "RUST_LOG",
            "warn,klutch_health::app=info,klutch_health::kubernetes=info",
        );
    let load = procs::server_load_from(world.cp.apiserver_pid());
    let mut proc = Proc::spawn("klutch-health", cmd, &args.out.join("klutch-health.log"))?;
    let line = proc
        .wait_log_line(&["\"listening\"", "server.listen"], FIRST_ANSWER_WITHIN)
        .await?;
    let addr = procs::listening_address(&line)?;
    let mut mismatch = None;
    let first = poll_until(&mut proc, FIRST_ANSWER_WITHIN, || async {
        let (_, metrics) = http.get(addr, "/metrics").await?;
        let counts = observe::managed_counts(std::str::from_utf8(&metrics)?);
        let totals = observe::managed_totals(&counts);
        let complete = totals.is_empty()
            || ManagedKind::ALL
                .iter()
                .zip(listed)
                .all(|(k, n)| totals.get(k.plural()) == Some(n));
        if !complete {
            return Ok(false);
        }
        let (status, _) = http.get(addr, "/readyz").await?;
        Ok(status == 200)
    })
    .await?;
    let cpu_to_first = proc.cpu_seconds()?;
    let apiserver = procs::server_load_to(load);
    let (metrics, scrape_ms) = timed_get(http, addr, "/metrics").await?;
    let counts = observe::managed_counts(std::str::from_utf8(&metrics)?);
    let totals = observe::managed_totals(&counts);
    for (k, n) in ManagedKind::ALL.iter().zip(listed) {
        if totals.get(k.plural()) != Some(n) {
            mismatch = Some(format!(
                "{}: counted {:?}, listed {n}",
                k.plural(),
                totals.get(k.plural())
            ));
        }
    }
    let (memory, idle_cpu_percent) = settle_and_idle(&proc).await?;
    Ok(Running {
        start: Start {
            first_complete_ms: first.as_secs_f64() * 1000.0,
            cpu_to_first_s: cpu_to_first,
            memory,
            idle_cpu_percent,
            scrape_ms,
            scrape_bytes: metrics.len(),
            mismatch,
            apiserver,
        },
        proc,
        addr,
    })
}

async fn start_ksm(
    args: &Args,
    bin: &Path,
    world: &World,
    http: &Http,
    listed: &[u64],
) -> anyhow::Result<Running> {
    let (port, telemetry) = (free_port()?, free_port()?);
    let mut cmd = tokio::process::Command::new(bin);
    cmd.arg(format!(
        "--kubeconfig={}",
        world.cp.admin_kubeconfig().display()
    ))
    .arg("--custom-resource-state-only")
    .arg(format!(
        "--custom-resource-state-config-file={}",
        args.ksm_config.display()
    ))
    .arg("--host=127.0.0.1")
    .arg(format!("--port={port}"))
    .arg("--telemetry-host=127.0.0.1")
    .arg(format!("--telemetry-port={telemetry}"));
    let load = procs::server_load_from(world.cp.apiserver_pid());
    let mut proc = Proc::spawn("kube-state-metrics", cmd, &args.out.join("ksm.log"))?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let want: u64 = listed.iter().sum();
    let first = poll_until(&mut proc, FIRST_ANSWER_WITHIN, || async {
        let Ok((200, metrics)) = http.get(addr, "/metrics").await else {
            return Ok(false);
        };
        let (ready, _) = observe::ksm_conditions(std::str::from_utf8(&metrics)?, &HashMap::new());
        Ok(ready == want)
    })
    .await?;
    let cpu_to_first = proc.cpu_seconds()?;
    let apiserver = procs::server_load_to(load);
    let (metrics, scrape_ms) = timed_get(http, addr, "/metrics").await?;
    let (memory, idle_cpu_percent) = settle_and_idle(&proc).await?;
    Ok(Running {
        start: Start {
            first_complete_ms: first.as_secs_f64() * 1000.0,
            cpu_to_first_s: cpu_to_first,
            memory,
            idle_cpu_percent,
            scrape_ms,
            scrape_bytes: metrics.len(),
            mismatch: None,
            apiserver,
        },
        proc,
        addr,
    })
}

/// A free loopback port for a program that cannot report the one it bound (bound and released at once).
fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind(("127.0.0.1", 0))?
        .local_addr()?
        .port())
}

/// Polls `done` every [`START_POLL`] until it holds; the time since the process was started.
async fn poll_until<F, Fut>(
    proc: &mut Proc,
    within: Duration,
    mut done: F,
) -> anyhow::Result<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    let mut last = String::new();
    loop {
        match done().await {
            Ok(true) => return Ok(proc.started.elapsed()),
            Ok(false) => {}
            Err(e) => last = format!("{e:#}"),
        }
        proc.check_running()?;
        if proc.started.elapsed() > within {
            return Err(anyhow!(
                "{} gave no complete answer within {within:?} (last error: {last}); the end of its log:\n{}",
                proc.what,
                procs::tail(&proc.log, 20)
            ));
        }
        tokio::time::sleep(START_POLL).await;
    }
}

async fn timed_get(
    http: &Http,
    addr: SocketAddr,
    path: &str,
) -> anyhow::Result<(bytes::Bytes, f64)> {
    let start = Instant::now();
    let (status, body) = http.get(addr, path).await?;
    anyhow::ensure!(status == 200, "GET {path} of {addr} answered {status}");
    Ok((body, start.elapsed().as_secs_f64() * 1000.0))
}

/// Memory after [`SETTLE`], and the CPU used over the following [`IDLE`] (percent of one core).
async fn settle_and_idle(proc: &Proc) -> anyhow::Result<(Memory, f64)> {
    tokio::time::sleep(SETTLE).await;
    let memory = proc.memory()?;
    let before = proc.cpu_seconds()?;
    tokio::time::sleep(IDLE).await;
    let used = proc.cpu_seconds()? - before;
    Ok((memory, used / IDLE.as_secs_f64() * 100.0))
}

/// The churn at the largest size: a quiet phase for CPU per event, then klutch-health polled alone, then both
/// polled side by side; each phase breaks a fresh set of ready resources and heals it again.
async fn run_churn(
    args: &Args,
    world: &World,
    http: &Http,
    split: &Split,
    klutch: &mut Running,
    mut ksm: Option<&mut Running>,
) -> anyhow::Result<ChurnResult> {
    let sets = plan::ChurnSets::of(split, args.rate, args.churn_seconds)?;
    let (quiet_set, alone_set, side_set) = (&sets.quiet[..], &sets.alone[..], &sets.side[..]);
    let quiet = quiet_set.len();
    let rate = args.rate;

    // Quiet: nothing polled; CPU per event from the CPU over the phase less the idle rate before it.
    eprintln!("scale: churn, quiet ({} changes at {rate}/s)", quiet * 2);
    let idle_k = cpu_rate(&klutch.proc, IDLE).await?;
    let idle_s = match ksm.as_deref() {
        Some(k) => Some(cpu_rate(&k.proc, Duration::ZERO).await?),
        None => None,
    };
    let cpu0 = (
        klutch.proc.cpu_seconds()?,
        ksm.as_deref().map(|k| k.proc.cpu_seconds()).transpose()?,
    );
    let t0 = Instant::now();
    for broken in [true, false] {
        send_changes(&world.admin, quiet_set, broken, rate).await?;
    }
    // Let the last events arrive and be processed.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let window = t0.elapsed().as_secs_f64();
    let events = (quiet * 2) as f64;
    let klutch_us =
        ((klutch.proc.cpu_seconds()? - cpu0.0) - idle_k * window).max(0.0) / events * 1e6;
    let ksm_us = match (ksm.as_deref(), cpu0.1, idle_s) {
        (Some(k), Some(c0), Some(idle)) => {
            Some(((k.proc.cpu_seconds()? - c0) - idle * window).max(0.0) / events * 1e6)
        }
        _ => None,
    };

    eprintln!(
        "scale: churn, klutch-health polled ({} changes)",
        alone_set.len() * 2
    );
    let alone = measured_phase(world, http, klutch, alone_set, rate).await?;
    eprintln!("scale: churn, both polled ({} changes)", side_set.len() * 2);
    let (side_by_side, ksm_scrape_ms) = match ksm.as_deref_mut() {
        Some(k) => {
            let (l, scrape) =
                measured_phase_with_ksm(world, http, klutch, k, side_set, rate).await?;
            (l, Some(scrape))
        }
        None => (Vec::new(), None),
    };
    Ok(ChurnResult {
        rate,
        phase_seconds: args.churn_seconds,
        klutch_us_per_event: klutch_us,
        ksm_us_per_event: ksm_us,
        quiet_changes: quiet * 2,
        alone,
        side_by_side,
        klutch_memory: klutch.proc.memory()?,
        ksm_memory: ksm.as_deref().map(|k| k.proc.memory()).transpose()?,
        ksm_scrape_ms,
    })
}

/// Compacts etcd and restarts kube-apiserver, so that every watch's resume is answered `410 Gone` and lists
/// everything again; then breaks one ready resource (`probe`) as soon as the server answers and times how
/// long that change takes to reach klutch-health's verdict (through the relist or the watch after it).
async fn run_relist(
    world: &mut World,
    http: &Http,
    split: &Split,
    klutch: &mut Running,
    ksm: Option<&mut Running>,
) -> anyhow::Result<RelistResult> {
    eprintln!("scale: relist (etcd compacted, kube-apiserver restarted)");
    let probe = plan::ChurnSets::relist_probe(split)?;
    let slot = kind_slot(probe.0);
    let restarts = |text: &str| -> f64 {
        observe::samples(text, "klutch_health_watch_restarts_total")
            .filter(|s| s.label("check") == Some("managed-resources"))
            .map(|s| s.value)
            .sum()
    };
    let (_, metrics) = http.get(klutch.addr, "/metrics").await?;
    let restarts_before = restarts(std::str::from_utf8(&metrics)?);
    let (_, base) = klutch_ready(http, klutch.addr).await?;
    world.cp.compact().await?;
    world.cp.stop(klutch_realcp::Part::ApiServer);
    let restarted = Instant::now();
    world.cp.start_part(klutch_realcp::Part::ApiServer).await?;
    let apiserver_ready = restarted.elapsed();
    // A new process: its CPU and peak are since its start.
    let apiserver_pid = world.cp.apiserver_pid();
    // The floor: a bare watch opened now sees the change only once the restarted server's watch cache is
    // filled (its own start); asked again while the server still refuses.
    let floor = loop {
        match seed::watch_floor(&world.admin, &[probe], true).await {
            Ok(floor) => break Some(floor),
            Err(e) if restarted.elapsed() < FIRST_ANSWER_WITHIN => {
                eprintln!("scale: the relist's bare watch: {e:#}; asking again");
                tokio::time::sleep(START_POLL).await;
            }
            Err(e) => {
                eprintln!("scale: the relist's bare watch never started: {e:#}");
                break None;
            }
        }
    };
    let sent = send_changes(&world.admin, &[probe], true, 1000).await?;
    let change_at = sent[0].at;
    let shown = loop {
        klutch.proc.check_running()?;
        if let Ok((_, verdict)) = klutch_ready(http, klutch.addr).await {
            if verdict[slot] < base[slot] {
                break change_at.elapsed();
            }
        }
        anyhow::ensure!(
            restarted.elapsed() < FIRST_ANSWER_WITHIN,
            "klutch-health's verdict did not show a change made after the API server's restart within \
             {FIRST_ANSWER_WITHIN:?}"
        );
        tokio::time::sleep(START_POLL).await;
    };
    let floor_shown = match floor {
        Some((stop, task)) => {
            let waited = tokio::time::timeout(FIRST_ANSWER_WITHIN, task).await;
            let _ = stop.send(true);
            match waited {
                Ok(Ok(arrived)) => arrived[0].map(|at| at.duration_since(change_at)),
                _ => None,
            }
        }
        None => None,
    };
    // Every object counted again, /readyz 200.
    let listed = seed::counts(&world.admin).await?;
    let mut complete = false;
    while !complete && restarted.elapsed() < FIRST_ANSWER_WITHIN {
        let (_, metrics) = http.get(klutch.addr, "/metrics").await?;
        let totals =
            observe::managed_totals(&observe::managed_counts(std::str::from_utf8(&metrics)?));
        complete = ManagedKind::ALL
            .iter()
            .zip(&listed)
            .all(|(k, n)| totals.get(k.plural()) == Some(n))
            && matches!(http.get(klutch.addr, "/readyz").await, Ok((200, _)));
        tokio::time::sleep(START_POLL).await;
    }
    let (_, metrics) = http.get(klutch.addr, "/metrics").await?;
    let watch_restarts = restarts(std::str::from_utf8(&metrics)?) - restarts_before;
    let apiserver_cpu_s = apiserver_pid.and_then(|pid| procs::cpu_seconds(pid).ok());
    let apiserver_peak_kib = apiserver_pid.and_then(|pid| Some(Memory::of(pid).ok()?.peak_kib));
    tokio::time::sleep(SETTLE).await;
    Ok(RelistResult {
        apiserver_ready_ms: apiserver_ready.as_secs_f64() * 1000.0,
        change_shown_ms: shown.as_secs_f64() * 1000.0,
        floor_shown_ms: floor_shown.map(|d| d.as_secs_f64() * 1000.0),
        watch_restarts,
        complete,
        klutch_memory: klutch.proc.memory()?,
        ksm_memory: ksm.map(|k| k.proc.memory()).transpose()?,
        apiserver_cpu_s,
        apiserver_peak_kib,
    })
}

/// CPU seconds per second over `window` (none: the rate since start is not wanted, so measure 5 s).
async fn cpu_rate(proc: &Proc, window: Duration) -> anyhow::Result<f64> {
    let window = if window.is_zero() { IDLE } else { window };
    let before = proc.cpu_seconds()?;
    tokio::time::sleep(window).await;
    Ok((proc.cpu_seconds()? - before) / window.as_secs_f64())
}

/// Sends one change per `1/rate` s, each request on its own task so that a slow answer never delays the
/// next; returns when every request is answered. Each change's time is taken just before it is sent.
async fn send_changes(
    admin: &Rest,
    set: &[(ManagedKind, usize)],
    broken: bool,
    rate: u32,
) -> anyhow::Result<Vec<Sent>> {
    let mut tick = tokio::time::interval(Duration::from_secs(1) / rate);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut tasks = tokio::task::JoinSet::new();
    let mut sent = Vec::with_capacity(set.len());
    for (i, &(kind, index)) in set.iter().enumerate() {
        tick.tick().await;
        let status = plan::flipped_status(kind, index, broken);
        let admin = admin.clone();
        let at = Instant::now();
        sent.push(Sent {
            kind: kind_slot(kind),
            object: i,
            at,
        });
        tasks.spawn(async move { seed::write_status(&admin, kind, index, &status).await });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    Ok(sent)
}

fn kind_slot(kind: ManagedKind) -> usize {
    ManagedKind::ALL
        .iter()
        .position(|k| *k == kind)
        .expect("one of ALL")
}

/// klutch-health's ready counts per kind, from its metric and from its verdict.
async fn klutch_ready(http: &Http, addr: SocketAddr) -> anyhow::Result<(Vec<u64>, Vec<u64>)> {
    let (_, metrics) = http.get(addr, "/metrics").await?;
    let counts = observe::managed_counts(std::str::from_utf8(&metrics)?);
    let metric = observe::ready_by_kind(&counts);
    let (_, json) = http
        .get(addr, "/readyz/managed-resources?format=json")
        .await?;
    let verdict = observe::verdict_ready(&serde_json::from_slice(&json)?);
    let verdict = ManagedKind::ALL
        .iter()
        .map(|k| verdict.get(k.plural()).copied().unwrap_or(0))
        .collect();
    Ok((metric, verdict))
}

/// What the klutch-health poller saw: from its metric, and from its verdict.
#[derive(Default)]
struct KlutchSeen {
    metric: Vec<CountsSeen>,
    verdict: Vec<CountsSeen>,
}

/// Polls klutch-health every [`CHURN_POLL`] until `stop`, keeping each answer that differs from the last.
fn poll_klutch(
    http: Http,
    addr: SocketAddr,
    stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<anyhow::Result<KlutchSeen>> {
    tokio::spawn(async move {
        let mut seen = KlutchSeen::default();
        let mut tick = tokio::time::interval(CHURN_POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // One last poll after `stop`: it is sent once a check has seen every change, which this poller
        // must see too.
        loop {
            let last = *stop.borrow();
            tick.tick().await;
            let (metric, verdict) = klutch_ready(&http, addr).await?;
            let at = Instant::now();
            if seen.metric.last().is_none_or(|c| c.ready != metric) {
                seen.metric.push(CountsSeen { at, ready: metric });
            }
            if seen.verdict.last().is_none_or(|c| c.ready != verdict) {
                seen.verdict.push(CountsSeen { at, ready: verdict });
            }
            if last {
                break;
            }
        }
        Ok(seen)
    })
}

/// Scrapes kube-state-metrics back to back, keeping the `Synced` value of each watched object per scrape,
/// until every change has been sent (`sent`) and a scrape shows all of them at `want`, or [`DRAIN`] after
/// the last was sent. Also returns each scrape's duration (ms).
fn poll_ksm(
    http: Http,
    addr: SocketAddr,
    wanted: Arc<HashMap<(String, String), usize>>,
    want: f64,
    sent: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<anyhow::Result<(Vec<SeriesSeen>, Vec<f64>)>> {
    tokio::spawn(async move {
        let mut seen = Vec::new();
        let mut durations = Vec::new();
        let mut all_sent: Option<Instant> = None;
        loop {
            if all_sent.is_none() && *sent.borrow() {
                all_sent = Some(Instant::now());
            }
            let start = Instant::now();
            let (_, metrics) = http.get(addr, "/metrics").await?;
            let at = Instant::now();
            durations.push((at - start).as_secs_f64() * 1000.0);
            let (_, synced) = observe::ksm_conditions(std::str::from_utf8(&metrics)?, &wanted);
            let complete = synced.len() == wanted.len() && synced.values().all(|v| *v == want);
            seen.push(SeriesSeen { at, synced });
            match all_sent {
                Some(_) if complete => break,
                Some(t) if t.elapsed() > DRAIN => break,
                _ => {}
            }
        }
        Ok((seen, durations))
    })
}

/// A break-then-heal phase with klutch-health polled.
async fn measured_phase(
    world: &World,
    http: &Http,
    klutch: &Running,
    set: &[(ManagedKind, usize)],
    rate: u32,
) -> anyhow::Result<Vec<Latency>> {
    let mut metric = Vec::new();
    let mut verdict = Vec::new();
    let mut floor = Vec::new();
    for broken in [true, false] {
        let (base, _) = klutch_ready(http, klutch.addr).await?;
        let (floor_stop, floor_task) = seed::watch_floor(&world.admin, set, broken).await?;
        let (stop_tx, stop) = tokio::sync::watch::channel(false);
        let poller = poll_klutch(http.clone(), klutch.addr, stop);
        let sent = send_changes(&world.admin, set, broken, rate).await?;
        wait_shown(http, klutch.addr, &base, &sent, broken).await;
        stop_tx.send(true)?;
        let seen = poller.await??;
        let _ = floor_stop.send(true);
        floor.extend(churn::arrived(&sent, &floor_task.await?));
        metric.extend(churn::visible_in_counts(&sent, &seen.metric, &base, broken));
        verdict.extend(churn::visible_in_counts(
            &sent,
            &seen.verdict,
            &base,
            broken,
        ));
    }
    Ok(vec![
        Latency::of(report::FLOOR, &floor),
        Latency::of("klutch-health metric", &metric),
        Latency::of("klutch-health verdict", &verdict),
    ])
}

/// Waits (up to [`DRAIN`]) until klutch-health's counts have moved by every change sent.
async fn wait_shown(http: &Http, addr: SocketAddr, base: &[u64], sent: &[Sent], broken: bool) {
    let mut per_kind = vec![0u64; base.len()];
    for s in sent {
        per_kind[s.kind] += 1;
    }
    let start = Instant::now();
    while start.elapsed() < DRAIN {
        if let Ok((metric, verdict)) = klutch_ready(http, addr).await {
            let done = |now: &[u64]| {
                (0..base.len()).all(|k| {
                    if broken {
                        now[k] + per_kind[k] <= base[k]
                    } else {
                        now[k] >= base[k] + per_kind[k]
                    }
                })
            };
            if done(&metric) && done(&verdict) {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A break-then-heal phase with klutch-health polled and kube-state-metrics scraped back to back.
async fn measured_phase_with_ksm(
    world: &World,
    http: &Http,
    klutch: &Running,
    ksm: &Running,
    set: &[(ManagedKind, usize)],
    rate: u32,
) -> anyhow::Result<(Vec<Latency>, f64)> {
    let wanted: Arc<HashMap<(String, String), usize>> = Arc::new(
        set.iter()
            .enumerate()
            .map(|(i, &(k, index))| ((k.kind().to_string(), plan::name(k, index)), i))
            .collect(),
    );
    let mut metric = Vec::new();
    let mut verdict = Vec::new();
    let mut series = Vec::new();
    let mut scrapes = Vec::new();
    for broken in [true, false] {
        let (base, _) = klutch_ready(http, klutch.addr).await?;
        let (stop_tx, stop) = tokio::sync::watch::channel(false);
        let (sent_tx, all_sent) = tokio::sync::watch::channel(false);
        let kp = poll_klutch(http.clone(), klutch.addr, stop);
        let sp = poll_ksm(
            http.clone(),
            ksm.addr,
            wanted.clone(),
            if broken { 0.0 } else { 1.0 },
            all_sent,
        );
        let sent = send_changes(&world.admin, set, broken, rate).await?;
        sent_tx.send(true)?;
        // klutch-health's poller runs until its counts have followed every change; the scraper stops by
        // itself once a scrape shows every change (or DRAIN after the last was sent).
        wait_shown(http, klutch.addr, &base, &sent, broken).await;
        stop_tx.send(true)?;
        let seen = kp.await??;
        let (scraped, durations) = sp.await??;
        scrapes.extend(durations);
        metric.extend(churn::visible_in_counts(&sent, &seen.metric, &base, broken));
        verdict.extend(churn::visible_in_counts(
            &sent,
            &seen.verdict,
            &base,
            broken,
        ));
        series.extend(churn::visible_in_series(&sent, &scraped, broken));
    }
    let mean = scrapes.iter().sum::<f64>() / scrapes.len().max(1) as f64;
    Ok((
        vec![
            Latency::of("klutch-health metric", &metric),
            Latency::of("klutch-health verdict", &verdict),
            Latency::of("kube-state-metrics /metrics", &series),
        ],
        mean,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_points_at_the_fake_backend_and_binds_free_ports() {
        let shipped = include_str!("../../../../config.toml");
        let out = rewrite_config(shipped, "http://127.0.0.1:4321/backend-health");
        assert!(out.contains("url = \"http://127.0.0.1:4321/backend-health\""));
        assert!(out.contains("listen = \"127.0.0.1:0\""));
        assert!(!out.contains("provider-anynines-health.crossplane-system.svc"));
        assert_eq!(
            out.lines().count(),
            shipped.lines().count(),
            "only values change"
        );
    }
}
