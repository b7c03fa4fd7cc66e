//! The measured processes (klutch-health, kube-state-metrics): started with their output in a log file,
//! killed when dropped, and read from `/proc` (resident memory, CPU time).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use tokio::process::{Child, Command};

/// A running process; killed and reaped on drop.
pub struct Proc {
    child: Child,
    pub pid: u32,
    pub what: &'static str,
    pub log: PathBuf,
    /// Just before it was spawned: what "time to first complete verdict" counts from.
    pub started: Instant,
}

impl Proc {
    pub fn spawn(what: &'static str, mut cmd: Command, log: &Path) -> anyhow::Result<Proc> {
        let file = std::fs::File::create(log)
            .with_context(|| format!("cannot create {}", log.display()))?;
        cmd.stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .kill_on_drop(true);
        // SAFETY: prctl is async-signal-safe. It ends the child with the bench, even when the bench is
        // killed without unwinding (kill_on_drop needs a drop).
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let started = Instant::now();
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start {what}"))?;
        let pid = child.id().ok_or_else(|| anyhow!("{what} exited at once"))?;
        Ok(Proc {
            child,
            pid,
            what,
            log: log.to_path_buf(),
            started,
        })
    }

    /// An error with the end of its log once it has exited.
    pub fn check_running(&mut self) -> anyhow::Result<()> {
        match self.child.try_wait()? {
            None => Ok(()),
            Some(status) => Err(anyhow!(
                "{} exited ({status}); the end of {}:\n{}",
                self.what,
                self.log.display(),
                tail(&self.log, 20)
            )),
        }
    }

    pub fn memory(&self) -> anyhow::Result<Memory> {
        Memory::of(self.pid)
    }

    pub fn cpu_seconds(&self) -> anyhow::Result<f64> {
        cpu_seconds(self.pid)
    }

    /// Waits until its log has a line containing every one of `needles`, and returns that line.
    pub async fn wait_log_line(
        &mut self,
        needles: &[&str],
        within: Duration,
    ) -> anyhow::Result<String> {
        let start = Instant::now();
        loop {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            if let Some(line) = text.lines().find(|l| needles.iter().all(|n| l.contains(n))) {
                return Ok(line.to_string());
            }
            self.check_running()?;
            anyhow::ensure!(
                start.elapsed() < within,
                "{} logged no line with {needles:?} within {within:?}; the end of its log:\n{}",
                self.what,
                tail(&self.log, 20)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops it with SIGTERM and waits (at most 30 s, then SIGKILL).
    pub async fn stop(mut self) {
        // SAFETY: kill(2) on our own child's pid, which is not reaped yet (we hold the Child).
        unsafe {
            libc::kill(self.pid as i32, libc::SIGTERM);
        }
        if tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

/// The address a klutch-health `listening` log line (JSON) names.
pub fn listening_address(line: &str) -> anyhow::Result<SocketAddr> {
    let v: serde_json::Value =
        serde_json::from_str(line).with_context(|| format!("not a JSON log line: {line}"))?;
    // `--log-format json` flattens the event's fields into the line.
    let address = v["address"]
        .as_str()
        .ok_or_else(|| anyhow!("no address in {line}"))?;
    address
        .parse()
        .with_context(|| format!("address {address:?} in {line}"))
}

/// Resident memory of a process, in KiB, as `/proc/PID/status` says it.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Memory {
    /// `VmRSS`: resident now.
    pub rss_kib: u64,
    /// `VmHWM`: the peak of `VmRSS` since start.
    pub peak_kib: u64,
    /// `RssAnon`: the heap and stacks (what grows with objects).
    pub anon_kib: u64,
    /// `RssFile`: the mapped binary and libraries (shared, reclaimable).
    pub file_kib: u64,
}

impl Memory {
    pub fn of(pid: u32) -> anyhow::Result<Memory> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .with_context(|| format!("process {pid} is gone"))?;
        Ok(Memory::parse(&text))
    }

    fn parse(status: &str) -> Memory {
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|rest| rest.trim_start_matches(':').split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        Memory {
            rss_kib: field("VmRSS"),
            peak_kib: field("VmHWM"),
            anon_kib: field("RssAnon"),
            file_kib: field("RssFile"),
        }
    }
}

/// What a client's list costs kube-apiserver: its CPU from the client's start until the client was complete,
/// and its peak RSS over that time (`VmHWM` reset at the start) above its RSS at the start.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ServerLoad {
    pub cpu_s: f64,
    pub rss_before_kib: u64,
    pub peak_kib: u64,
    /// Whether the peak is over that time alone (`clear_refs` worked); else it is since the server started.
    pub peak_reset: bool,
}

/// A [`ServerLoad`] being measured: the process and where it stood at the start.
pub struct LoadFrom {
    pid: u32,
    cpu_s: f64,
    rss_kib: u64,
    peak_reset: bool,
}

/// Starts measuring [`ServerLoad`] of process `pid` (none: nothing to measure).
pub fn server_load_from(pid: Option<u32>) -> Option<LoadFrom> {
    let pid = pid?;
    let peak_reset = std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok();
    Some(LoadFrom {
        pid,
        cpu_s: cpu_seconds(pid).ok()?,
        rss_kib: Memory::of(pid).ok()?.rss_kib,
        peak_reset,
    })
}

/// Ends the measurement [`server_load_from`] started.
pub fn server_load_to(from: Option<LoadFrom>) -> Option<ServerLoad> {
    let from = from?;
    Some(ServerLoad {
        cpu_s: cpu_seconds(from.pid).ok()? - from.cpu_s,
        rss_before_kib: from.rss_kib,
        peak_kib: Memory::of(from.pid).ok()?.peak_kib,
        peak_reset: from.peak_reset,
    })
}

/// User plus system CPU time of a process so far, in seconds (`/proc/PID/stat`, fields 14 and 15).
pub fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("process {pid} is gone"))?;
    let ticks = stat_ticks(&text).ok_or_else(|| anyhow!("unreadable /proc/{pid}/stat"))?;
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Ok(ticks as f64 / per_second)
}

/// utime + stime in clock ticks; the command name (field 2) may hold spaces and parentheses, so fields are
/// counted from the last `)`.
fn stat_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3, so utime (14) and stime (15) are at 11 and 12.
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// The last `lines` lines of a file.
pub fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// KiB as MiB with one decimal.
pub fn mib(kib: u64) -> f64 {
    (kib as f64 / 1024.0 * 10.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_fields_come_from_proc_status() {
        let status = "Name:\tklutch-health\nVmHWM:\t  131072 kB\nVmRSS:\t   98304 kB\nRssAnon:\t   90000 kB\n\
                      RssFile:\t    8304 kB\nThreads:\t3\n";
        assert_eq!(
            Memory::parse(status),
            Memory {
                rss_kib: 98304,
                peak_kib: 131072,
                anon_kib: 90000,
                file_kib: 8304
            }
        );
        assert_eq!(mib(98304), 96.0);
    }

    #[test]
    fn cpu_ticks_are_counted_after_the_command_name() {
        // A command name with a space and a parenthesis must not shift the fields.
        let stat = "4242 (kube (state) x) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 9 0 123 0 0";
        assert_eq!(stat_ticks(stat), Some(325));
        assert_eq!(stat_ticks("garbage"), None);
        assert!(cpu_seconds(std::process::id()).is_ok());
    }

    #[test]
    fn the_listening_line_names_the_bound_address() {
        let line = r#"{"timestamp":"2026-12-06T17:00:00Z","level":"INFO","message":"listening","address":"127.0.0.1:41234","key":"server.listen","target":"klutch_health::app"}"#;
        assert_eq!(
            listening_address(line).unwrap(),
            "127.0.0.1:41234".parse::<SocketAddr>().unwrap()
        );
        assert!(listening_address("listening on 1.2.3.4").is_err());
    }
}
