//! The midnight backup storm, at the largest size after the churn and the relist: thousands of Backups created,
//! run and completed within a minute through the real API (plan.rs says which and when), while klutch-health's
//! plain `/readyz` is loaded at a fixed rate.
//!
//! - Writes: each Backup is one task that creates it, writes `queued`, then `running`, then its final status,
//!   each at its planned time; at most [`seed::PARALLEL`] requests are in flight (a fair semaphore), so a slow
//!   API server delays writes rather than piling them up. The final write's time is taken just before its
//!   request is sent, as the churn's are.
//! - Change-to-verdict: klutch-health's `/metrics` polled every 2 ms; the m-th completed Backup (in order of
//!   its write) shows once the Backups' ready count stands m above where it stood before the storm (churn.rs).
//!   Beside it, a bare watch of the Backups times when each completion arrives (the API server's part).
//! - Probes: an open-loop load at a fixed rate over keep-alive connections, alternating in equal slices
//!   between klutch-health and the static server (the same bytes), so that both are loaded under the same
//!   storm; latency from each request's send to its last byte.
//! - klutch-health's CPU from `/proc` at each slice's start (probed and not), its peak RSS from `VmHWM` reset
//!   just before the storm (`/proc/PID/clear_refs`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use klutch_sim::ManagedKind;
use serde::{Deserialize, Serialize};

use crate::churn::{self, CountsSeen, Sent};
use crate::observe::{self, percentile, Http};
use crate::plan::{self, Split, StormBackup, StormStep};
use crate::procs::{self, Memory, Proc};
use crate::{kind_slot, seed, Latency, World};

/// Probes per second offered during the storm, and the connections they use (as bench/run's `oha -c 32`).
pub const PROBE_RATE: u32 = 5000;
pub const PROBE_CONNECTIONS: usize = 32;
/// A probe with no answer after this long counts as unanswered.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often klutch-health's `/metrics` is polled (as during the churn).
const POLL: Duration = Duration::from_millis(2);
/// After the last write, how long the poller waits for klutch-health to show it.
const DRAIN: Duration = Duration::from_secs(30);
/// The plain `/readyz`'s Content-Type, which the static server sends with the same bytes.
const TEXT: &str = "text/plain; charset=utf-8";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StormResult {
    pub backups: usize,
    pub seconds: u64,
    /// Managed resources before the storm.
    pub managed: usize,
    /// Backups that ended failed instead of done.
    pub failed: usize,
    /// Requests written (creates and status writes), and from the first one sent to the last one answered (s).
    pub writes: usize,
    pub writes_seconds: f64,
    /// The load's slices: how many (half klutch-health's, half the static server's) and each one's length.
    pub slices: usize,
    pub slice_seconds: f64,
    pub probe_rate: u32,
    /// klutch-health, then the static server.
    pub probes: Vec<ProbeLoad>,
    /// klutch-health's CPU in cores: over the whole storm (from its first write until every write was
    /// answered and the load ended), over the slices it was probed, and over the slices the static server was.
    pub klutch_cpu_cores: f64,
    pub klutch_cpu_probed_cores: f64,
    pub klutch_cpu_unprobed_cores: f64,
    /// Memory at the end; `peak_kib` is the peak during the storm when `peak_reset`, else since start.
    pub klutch_memory: Memory,
    pub peak_reset: bool,
    /// The bare watch's row, then klutch-health's metric's.
    pub latency: Vec<Latency>,
    /// klutch-health's Backups counts after the storm disagree with what was written: how.
    pub mismatch: Option<String>,
    pub load_before: String,
    pub load_after: String,
}

/// One server's share of the probe load.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProbeLoad {
    pub what: String,
    pub sent: usize,
    /// Answered (any status) within the timeout; and of those, answered other than 200.
    pub answered: usize,
    pub not_200: usize,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
}

impl ProbeLoad {
    pub fn answered_percent(&self) -> f64 {
        if self.sent == 0 {
            100.0
        } else {
            self.answered as f64 * 100.0 / self.sent as f64
        }
    }
}

/// Slices of the load over `seconds`: an even number (half per server), each about 5 s.
pub fn slices(seconds: u64) -> (usize, Duration) {
    let pairs = ((seconds as f64 / 10.0).round() as usize).max(1);
    (2 * pairs, Duration::from_secs(seconds) / (2 * pairs) as u32)
}

/// CPU cores used over slices of the load, from readings `(at, cpu seconds)` at each slice's start and at
/// its end: (over the slices of even index, over those of odd index).
pub fn cpu_by_slice(readings: &[(Instant, f64)]) -> (f64, f64) {
    let mut sums = [(0.0, 0.0); 2];
    for (i, w) in readings.windows(2).enumerate() {
        let (dt, cpu) = ((w[1].0 - w[0].0).as_secs_f64(), w[1].1 - w[0].1);
        sums[i % 2].0 += cpu;
        sums[i % 2].1 += dt;
    }
    let rate = |(cpu, dt): (f64, f64)| if dt > 0.0 { cpu / dt } else { 0.0 };
    (rate(sums[0]), rate(sums[1]))
}

/// The storm, with klutch-health (at `addr`) loaded beside the static server `static_bin`.
pub async fn run(
    args: &crate::Args,
    world: &World,
    http: &Http,
    split: &Split,
    klutch: &crate::Running,
) -> anyhow::Result<StormResult> {
    let (backups, seconds, out) = (args.storm_backups, args.storm_seconds, &args.out);
    let static_bin = args.static_bin()?;
    let (klutch, addr) = (&klutch.proc, klutch.addr);
    let plan = plan::storm(split, backups, seconds)?;
    let load_before = crate::load();
    // The static server sends what klutch-health's plain /readyz sends now.
    let (status, body) = http.get(addr, "/readyz").await?;
    let body_file = out.join("storm-readyz-body");
    std::fs::write(&body_file, &body)?;
    let mut cmd = tokio::process::Command::new(&static_bin);
    cmd.arg("127.0.0.1:0")
        .arg(&body_file)
        .arg(status.to_string())
        .arg(TEXT);
    let mut static_server = Proc::spawn("static-server", cmd, &out.join("static-server.log"))
        .with_context(|| {
            format!(
                "{} (build it: cargo build --release -p klutch-bench)",
                static_bin.display()
            )
        })?;
    let line = static_server
        .wait_log_line(&["listening on "], Duration::from_secs(30))
        .await?;
    let static_addr: SocketAddr = line
        .trim()
        .trim_start_matches("listening on ")
        .parse()
        .with_context(|| format!("static-server said {line:?}"))?;

    let backup = kind_slot(ManagedKind::Backup);
    let before = counts(http, addr).await?;
    let base: Vec<u64> = ManagedKind::ALL
        .iter()
        .map(|k| {
            before
                .get(&(k.plural().into(), "ready".into()))
                .copied()
                .unwrap_or(0)
        })
        .collect();
    let names = plan
        .iter()
        .map(|b| (ManagedKind::Backup, b.name()))
        .collect();
    let (floor_stop, floor_task) = seed::watch_arrivals(&world.admin, names, |obj| {
        seed::condition(obj, "Ready") == Some("True")
    })
    .await?;
    let peak_reset = std::fs::write(format!("/proc/{}/clear_refs", klutch.pid), "5").is_ok();
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let poller = poll_metric(http.clone(), addr, stop);
    eprintln!(
        "scale: the midnight backup storm ({backups} Backups in {seconds} s, /readyz at {PROBE_RATE}/s)"
    );

    let cpu0 = klutch.cpu_seconds()?;
    let t0 = Instant::now();
    let (n_slices, slice) = slices(seconds);
    let loader = load([addr, static_addr], klutch.pid, n_slices, slice);
    let writer = write_storm(world, &plan, t0);
    let (loaded, written) = tokio::join!(loader, writer);
    let (samples, readings) = loaded?;
    let (finals, writes, writes_seconds) = written?;
    let klutch_cpu = (klutch.cpu_seconds()? - cpu0) / t0.elapsed().as_secs_f64();

    // Drain: klutch-health has shown every completion and every failure.
    let done = finals.iter().filter(|(_, _, fails)| !fails).count() as u64;
    let failed = finals.len() as u64 - done;
    let failing_before = before
        .get(&("backups".into(), "failing".into()))
        .copied()
        .unwrap_or(0);
    let drained = Instant::now();
    let mut after = counts(http, addr).await?;
    while drained.elapsed() < DRAIN {
        let get = |state: &str| {
            after
                .get(&("backups".into(), state.into()))
                .copied()
                .unwrap_or(0)
        };
        if get("ready") >= base[backup] + done && get("failing") >= failing_before + failed {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        after = counts(http, addr).await?;
    }
    stop_tx.send(true)?;
    let seen = poller.await??;
    let _ = floor_stop.send(true);
    let arrivals = floor_task.await?;
    let klutch_memory = klutch.memory()?;
    static_server.stop().await;

    let mut sent: Vec<Sent> = finals
        .iter()
        .filter(|(_, _, fails)| !fails)
        .map(|&(object, at, _)| Sent {
            kind: backup,
            object,
            at,
        })
        .collect();
    sent.sort_by_key(|s| s.at);
    let floor = churn::arrived(&sent, &arrivals);
    let metric = churn::visible_in_counts(&sent, &seen, &base, false);
    let mismatch = check_counts(&before, &after, done, failed);
    let (probed, unprobed) = cpu_by_slice(&readings);
    let [k, s] = samples;
    Ok(StormResult {
        backups,
        seconds,
        managed: split.total(),
        failed: failed as usize,
        writes,
        writes_seconds,
        slices: n_slices,
        slice_seconds: slice.as_secs_f64(),
        probe_rate: PROBE_RATE,
        probes: vec![
            probe_load("klutch-health `/readyz`", &k),
            probe_load("static hyper server, same bytes", &s),
        ],
        klutch_cpu_cores: klutch_cpu,
        klutch_cpu_probed_cores: probed,
        klutch_cpu_unprobed_cores: unprobed,
        klutch_memory,
        peak_reset,
        latency: vec![
            Latency::of(crate::report::FLOOR, &floor),
            Latency::of("klutch-health metric", &metric),
        ],
        mismatch,
        load_before,
        load_after: crate::load(),
    })
}

/// klutch-health's `klutch_health_managed_resources`: (kind, state) → resources.
async fn counts(
    http: &Http,
    addr: SocketAddr,
) -> anyhow::Result<std::collections::HashMap<(String, String), u64>> {
    let (_, metrics) = http.get(addr, "/metrics").await?;
    Ok(observe::managed_counts(std::str::from_utf8(&metrics)?))
}

/// What klutch-health counts after the storm against what was written: every storm Backup judged (each is its
/// instance's only one), so the Backups' ready count rose by the completed ones, failing by the failed ones,
/// and creating is back where it was.
pub fn check_counts(
    before: &std::collections::HashMap<(String, String), u64>,
    after: &std::collections::HashMap<(String, String), u64>,
    done: u64,
    failed: u64,
) -> Option<String> {
    let get = |m: &std::collections::HashMap<(String, String), u64>, state: &str| {
        m.get(&("backups".to_string(), state.to_string()))
            .copied()
            .unwrap_or(0)
    };
    let wrong: Vec<String> = [
        ("ready", done),
        ("failing", failed),
        ("creating", 0),
        ("superseded", 0),
    ]
    .into_iter()
    .filter_map(|(state, added)| {
        let (b, a) = (get(before, state), get(after, state));
        (a != b + added).then(|| format!("{state} {b} → {a}, expected {}", b + added))
    })
    .collect();
    (!wrong.is_empty()).then(|| wrong.join("; "))
}

/// Writes every Backup of the storm at its planned times from `t0`: the final write of each (its place in
/// the plan, when its request was sent, whether it failed), the number of requests, and the seconds from `t0`
/// until the last one was answered.
async fn write_storm(
    world: &World,
    plan: &[StormBackup],
    t0: Instant,
) -> anyhow::Result<(Vec<(usize, Instant, bool)>, usize, f64)> {
    let permits = Arc::new(tokio::sync::Semaphore::new(seed::PARALLEL));
    let mut tasks = tokio::task::JoinSet::new();
    for b in plan.iter().copied() {
        let (admin, permits) = (world.admin.clone(), permits.clone());
        tasks.spawn(async move {
            let name = b.name();
            let mut final_at = t0;
            for (i, (step, at_ms)) in b.steps().into_iter().enumerate() {
                tokio::time::sleep_until((t0 + Duration::from_millis(at_ms)).into()).await;
                let _permit = permits.acquire().await?;
                if i == 0 {
                    seed::create(&admin, ManagedKind::Backup, &b.object()).await?;
                }
                let status = b.status(step, &klutch_sim::api::now_rfc3339());
                final_at = Instant::now();
                seed::merge_status(&admin, ManagedKind::Backup, &name, &status).await?;
            }
            anyhow::Ok((b.index, final_at, b.steps()[2].0 == StormStep::Failed))
        });
    }
    let mut finals = Vec::with_capacity(plan.len());
    while let Some(r) = tasks.join_next().await {
        finals.push(r??);
    }
    let took = t0.elapsed().as_secs_f64();
    finals.sort_by_key(|f| f.0);
    Ok((finals, plan.len() * 4, took))
}

/// Polls klutch-health's `/metrics` every [`POLL`] until `stop`, keeping each answer whose ready counts
/// differ from the last one's (one last poll after `stop`).
fn poll_metric(
    http: Http,
    addr: SocketAddr,
    stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<anyhow::Result<Vec<CountsSeen>>> {
    tokio::spawn(async move {
        let mut seen: Vec<CountsSeen> = Vec::new();
        let mut tick = tokio::time::interval(POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let last = *stop.borrow();
            tick.tick().await;
            let counts = counts(&http, addr).await?;
            let at = Instant::now();
            let ready = observe::ready_by_kind(&counts);
            if seen.last().is_none_or(|c| c.ready != ready) {
                seen.push(CountsSeen { at, ready });
            }
            if last {
                break;
            }
        }
        Ok(seen)
    })
}

/// One probe: its latency, and whether it was answered and with 200.
#[derive(Debug, Clone, Copy)]
struct Probe {
    latency: Duration,
    answered: bool,
    ok: bool,
}

fn probe_load(what: &str, probes: &[Probe]) -> ProbeLoad {
    let ms: Vec<f64> = probes
        .iter()
        .filter(|p| p.answered)
        .map(|p| p.latency.as_secs_f64() * 1000.0)
        .collect();
    ProbeLoad {
        what: what.into(),
        sent: probes.len(),
        answered: ms.len(),
        not_200: probes.iter().filter(|p| p.answered && !p.ok).count(),
        p50_ms: percentile(&ms, 0.5),
        p99_ms: percentile(&ms, 0.99),
        max_ms: ms.iter().copied().reduce(f64::max),
    }
}

/// Probes `GET /readyz` at [`PROBE_RATE`] over [`PROBE_CONNECTIONS`] keep-alive connections for `n` slices of
/// `slice`, the even slices to `targets[0]`, the odd ones to `targets[1]`: each target's probes, and
/// `(at, CPU seconds of pid)` at each slice's start and at the end.
async fn load(
    targets: [SocketAddr; 2],
    pid: u32,
    n: usize,
    slice: Duration,
) -> anyhow::Result<([Vec<Probe>; 2], Vec<(Instant, f64)>)> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<usize>();
    let rx = Arc::new(tokio::sync::Mutex::new(rx));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..PROBE_CONNECTIONS {
        let rx = rx.clone();
        workers.spawn(async move {
            let mut conns: [Option<hyper::client::conn::http1::SendRequest<Empty<Bytes>>>; 2] =
                [None, None];
            let mut probes: [Vec<Probe>; 2] = [Vec::new(), Vec::new()];
            loop {
                let Some(t) = rx.lock().await.recv().await else {
                    break;
                };
                let start = Instant::now();
                let answer =
                    tokio::time::timeout(PROBE_TIMEOUT, probe(&mut conns[t], targets[t])).await;
                let latency = start.elapsed();
                let (answered, ok) = match answer {
                    Ok(Ok(status)) => (true, status == 200),
                    _ => {
                        conns[t] = None;
                        (false, false)
                    }
                };
                probes[t].push(Probe {
                    latency,
                    answered,
                    ok,
                });
            }
            probes
        });
    }
    let start = Instant::now();
    let total = slice * n as u32;
    let mut readings = vec![(start, procs::cpu_seconds(pid)?)];
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut issued = 0u64;
    let mut current = 0usize;
    loop {
        tick.tick().await;
        let elapsed = start.elapsed();
        if elapsed >= total {
            break;
        }
        let now_slice = (elapsed.as_nanos() / slice.as_nanos()) as usize;
        if now_slice != current {
            current = now_slice;
            readings.push((Instant::now(), procs::cpu_seconds(pid)?));
        }
        let due = (elapsed.as_secs_f64() * f64::from(PROBE_RATE)) as u64;
        while issued < due {
            tx.send(current % 2)?;
            issued += 1;
        }
    }
    readings.push((Instant::now(), procs::cpu_seconds(pid)?));
    drop(tx);
    let mut all: [Vec<Probe>; 2] = [Vec::new(), Vec::new()];
    while let Some(r) = workers.join_next().await {
        let [a, b] = r?;
        all[0].extend(a);
        all[1].extend(b);
    }
    Ok((all, readings))
}

/// One `GET /readyz` on the keep-alive connection `conn` (opened when missing): its status.
async fn probe(
    conn: &mut Option<hyper::client::conn::http1::SendRequest<Empty<Bytes>>>,
    addr: SocketAddr,
) -> anyhow::Result<u16> {
    if conn.as_ref().is_none_or(|c| c.is_closed()) {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (send, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        *conn = Some(send);
    }
    let send = conn.as_mut().expect("opened above");
    send.ready().await?;
    let req = hyper::Request::get("/readyz")
        .header("host", addr.to_string())
        .body(Empty::<Bytes>::new())?;
    let res = send.send_request(req).await?;
    let status = res.status().as_u16();
    res.into_body().collect().await?;
    Ok(status)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn the_load_alternates_in_an_even_number_of_slices_of_about_5_s() {
        assert_eq!(slices(60), (12, Duration::from_secs(5)));
        assert_eq!(slices(15), (4, Duration::from_millis(3750)));
        assert_eq!(slices(20), (4, Duration::from_secs(5)));
        assert_eq!(slices(3), (2, Duration::from_millis(1500)));
    }

    #[test]
    fn cpu_is_split_by_the_slices_each_server_was_probed() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        // 0.5 core in the even slices, 0.1 in the odd ones.
        let readings = [(at(0), 10.0), (at(5), 12.5), (at(10), 13.0), (at(15), 15.5)];
        let (probed, unprobed) = cpu_by_slice(&readings);
        assert!((probed - 0.5).abs() < 1e-9, "{probed}");
        assert!((unprobed - 0.1).abs() < 1e-9, "{unprobed}");
        assert_eq!(cpu_by_slice(&readings[..1]), (0.0, 0.0));
    }

    #[test]
    fn the_counts_after_the_storm_add_what_was_written() {
        let m = |ready: u64, failing: u64, creating: u64| {
            HashMap::from([
                (("backups".to_string(), "ready".to_string()), ready),
                (("backups".to_string(), "failing".to_string()), failing),
                (("backups".to_string(), "creating".to_string()), creating),
                (("serviceinstances".to_string(), "ready".to_string()), 7),
            ])
        };
        assert_eq!(check_counts(&m(100, 1, 2), &m(498, 3, 2), 398, 2), None);
        assert_eq!(
            check_counts(&m(100, 1, 2), &m(497, 3, 3), 398, 2).as_deref(),
            Some("ready 100 → 497, expected 498; creating 2 → 3, expected 2")
        );
    }

    #[test]
    fn probes_count_answers_and_latencies_of_the_answered_only() {
        let p = |ms: u64, answered: bool, ok: bool| Probe {
            latency: Duration::from_millis(ms),
            answered,
            ok,
        };
        let load = probe_load(
            "x",
            &[p(1, true, true), p(3, true, false), p(10_000, false, false)],
        );
        assert_eq!((load.sent, load.answered, load.not_200), (3, 2, 1));
        assert_eq!(load.p99_ms, Some(3.0));
        assert!((load.answered_percent() - 66.666).abs() < 0.01);
    }
}
