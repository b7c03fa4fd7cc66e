//! Test harness: runs the real `klutch-health` binary with a temporary configuration and talks HTTP to it.
#![allow(dead_code)]

pub mod chromium;
pub mod events;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub const BIN: &str = env!("CARGO_BIN_EXE_klutch-health");

/// How long any condition may take before a test fails.
pub const DEADLINE: Duration = Duration::from_secs(15);

/// A running klutch-health. Killed on drop.
pub struct Service {
    child: Child,
    pub addr: SocketAddr,
    logs: Arc<Mutex<Vec<String>>>,
    pub dir: tempfile::TempDir,
}

/// One HTTP answer.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub headers: HashMap<String, String>,
    pub body: String,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// Waits until `check` holds, polling every 20 ms, or panics after [`DEADLINE`] naming `what`.
pub async fn eventually<T>(what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(start.elapsed() < DEADLINE, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

impl Service {
    /// Starts the binary with `config` (TOML) and extra environment; waits until it listens.
    pub async fn start(config: &str, env: &[(&str, &str)]) -> Service {
        Self::start_with_args(config, env, &[]).await
    }

    pub async fn start_with_args(config: &str, env: &[(&str, &str)], args: &[&str]) -> Service {
        Self::spawn(config, env, args, "json").await
    }

    /// Like [`Service::start`], with human-readable text logs (the default format).
    pub async fn start_text(config: &str, env: &[(&str, &str)]) -> Service {
        Self::spawn(config, env, &[], "text").await
    }

    async fn spawn(config: &str, env: &[(&str, &str)], args: &[&str], log_format: &str) -> Service {
        let dir = tempfile::tempdir().expect("temp dir");
        Self::spawn_in(dir, config, env, args, log_format).await
    }

    /// `config` (TOML) against the simulated control plane `cp`: its kubeconfig is written into the
    /// service's own temp dir (gone with the service) and named by `KUBECONFIG`.
    pub async fn against(
        cp: &klutch_sim::SimControlPlane,
        config: &str,
        env: &[(&str, &str)],
    ) -> Service {
        let dir = tempfile::tempdir().expect("temp dir");
        let kc = kubeconfig(&cp.api, dir.path());
        let mut env = env.to_vec();
        env.push(("KUBECONFIG", &kc));
        Self::spawn_in(dir, config, &env, &[], "json").await
    }

    /// The shipped configuration (`extra` appended) against `cp`, once `/readyz` passes: every watch has
    /// listed.
    pub async fn synced(
        cp: &klutch_sim::SimControlPlane,
        extra: &str,
        env: &[(&str, &str)],
    ) -> Service {
        let svc = Service::against(cp, &full_config(&cp.backend.url(), extra), env).await;
        svc.wait_for("/readyz", "the initial sync", |r| r.status == 200)
            .await;
        svc
    }

    async fn spawn_in(
        dir: tempfile::TempDir,
        config: &str,
        env: &[(&str, &str)],
        args: &[&str],
        log_format: &str,
    ) -> Service {
        let path = dir.path().join("config.toml");
        std::fs::write(&path, config).expect("write config");
        let mut cmd = Command::new(BIN);
        cmd.arg("--config")
            .arg(&path)
            .args(["--listen", "127.0.0.1:0", "--log-format", log_format])
            .args(args)
            .env_remove("KUBECONFIG")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start klutch-health");
        let stderr = child.stderr.take().expect("stderr");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().expect("logs").push(line);
            }
        });
        let reader = logs.clone();
        let addr = eventually("klutch-health to log its listening address", async || {
            reader.lock().expect("logs").iter().find_map(|l| {
                if let Some((_, text)) = l.split_once(" listening address=") {
                    return text.split_whitespace().next()?.parse().ok();
                }
                let v: serde_json::Value = serde_json::from_str(l).ok()?;
                (v["message"] == "listening").then(|| v["address"].as_str()?.parse().ok())?
            })
        })
        .await;
        Service {
            child,
            addr,
            logs,
            dir,
        }
    }

    /// The address of the public listener (`server.public_listen`), from its `listening` log line.
    pub async fn public_addr(&self) -> SocketAddr {
        eventually("klutch-health to log its public listener", async || {
            self.logs().iter().find_map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).ok()?;
                (v["message"] == "listening" && v["key"] == "server.public_listen")
                    .then(|| v["address"].as_str()?.parse().ok())?
            })
        })
        .await
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().expect("logs").clone()
    }

    /// Waits for the process to exit and returns its exit code.
    pub async fn wait_exit(&mut self) -> Option<i32> {
        let child = &mut self.child;
        eventually("klutch-health to exit", async || {
            child.try_wait().ok().flatten().map(|s| s.code())
        })
        .await
    }

    pub async fn get(&self, path: &str) -> Resp {
        request(self.addr, "GET", path, &[]).await
    }

    pub async fn get_with(&self, path: &str, headers: &[(&str, &str)]) -> Resp {
        request(self.addr, "GET", path, headers).await
    }

    /// The value of the metric sample `name` (with its labels, if any: `klutch_health_endpoint_up{endpoint="readyz"}`)
    /// as `/metrics` exports it now.
    pub async fn metric(&self, name: &str) -> Option<f64> {
        metric_value(&self.get("/metrics").await.body, &format!("{name} "))
    }

    /// The JSON log lines whose message contains `text`.
    pub fn logged(&self, text: &str) -> Vec<serde_json::Value> {
        self.logs()
            .iter()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["message"].as_str().is_some_and(|m| m.contains(text)))
            .collect()
    }

    /// Waits until `n` reloads were applied (`configuration reloaded` logged `n` times).
    pub async fn reloads(&self, n: usize) {
        eventually(&format!("{n} applied reloads"), async || {
            (self.logged("configuration reloaded").len() >= n).then_some(())
        })
        .await;
    }

    /// Polls `path` until `check` holds; on timeout, the panic shows the last answer.
    pub async fn wait_for(&self, path: &str, what: &str, check: impl Fn(&Resp) -> bool) -> Resp {
        self.wait_for_within(DEADLINE, path, what, check).await
    }

    /// Like [`Service::wait_for`], with another deadline (a real API server on a loaded machine).
    pub async fn wait_for_within(
        &self,
        deadline: Duration,
        path: &str,
        what: &str,
        check: impl Fn(&Resp) -> bool,
    ) -> Resp {
        let start = Instant::now();
        loop {
            let r = self.get(path).await;
            if check(&r) {
                return r;
            }
            assert!(
                start.elapsed() < deadline,
                "timed out waiting for: {what}; {path} last answered {}:\n{}",
                r.status,
                r.body
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Sends the signal `name` (`TERM`, `INT`, `HUP`) to process `pid`, as `kill -NAME` would, without running a
/// program.
pub fn signal(name: &str, pid: u32) {
    let number = match name {
        "TERM" => libc::SIGTERM,
        "INT" => libc::SIGINT,
        "HUP" => libc::SIGHUP,
        "KILL" => libc::SIGKILL,
        other => panic!("no signal named {other} in this harness"),
    };
    let pid = libc::pid_t::try_from(pid).expect("a pid");
    // SAFETY: kill(2) with a child's pid and a valid signal number touches no memory of this process.
    let sent = unsafe { libc::kill(pid, number) };
    assert_eq!(
        sent,
        0,
        "kill -{name} {pid}: {}",
        std::io::Error::last_os_error()
    );
}

/// The value of the first sample line of a Prometheus exposition that starts with `prefix` (a name, or a
/// name with the start of its labels).
pub fn metric_value(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix))?
        .rsplit(' ')
        .next()?
        .parse()
        .ok()
}

/// `secs` from now, as RFC 3339 (for `until` and `from`).
pub fn in_secs(secs: u64) -> String {
    jiff::Timestamp::now()
        .checked_add(Duration::from_secs(secs))
        .expect("in range")
        .round(jiff::Unit::Second)
        .expect("rounds")
        .to_string()
}

/// The line of `item` (`CHECK/ITEM`) in a text answer (`[+]CHECK/ITEM ok`), or a panic showing the body.
pub fn line<'a>(body: &'a str, item: &str) -> &'a str {
    body.lines()
        .find(|l| {
            l.get(3..)
                .is_some_and(|l| l.starts_with(&format!("{item} ")))
        })
        .unwrap_or_else(|| panic!("no line for {item} in\n{body}"))
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How long any one test request may take: a generous guard, so that a hung answer fails the test
/// instead of hanging CI. Never a latency assertion.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// One HTTP/1.1 request on a fresh connection, bounded by [`REQUEST_TIMEOUT`]; a test fails when there is
/// no answer.
pub async fn request(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)]) -> Resp {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    exchange(addr, &req)
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

/// The tests' one raw-HTTP client: sends `request` (the whole head) on a fresh connection and reads the
/// answer to the end, bounded by [`REQUEST_TIMEOUT`]; `Err` says why there was none (refused, reset, timed
/// out, not HTTP).
pub async fn exchange(addr: SocketAddr, request: &str) -> Result<Resp, String> {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await?;
        stream.write_all(request.as_bytes()).await?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await?;
        Ok::<_, std::io::Error>(raw)
    };
    match tokio::time::timeout(REQUEST_TIMEOUT, exchange).await {
        Ok(Ok(raw)) if raw.starts_with(b"HTTP/") => Ok(parse(&raw)),
        Ok(Ok(_)) => Err("no HTTP answer".into()),
        Ok(Err(e)) => Err(e.kind().to_string()),
        Err(_) => Err(format!("no answer within {REQUEST_TIMEOUT:?}")),
    }
}

pub fn parse(raw: &[u8]) -> Resp {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Resp {
        status,
        headers,
        body: body.to_string(),
    }
}

/// The lines of items that come from the cluster: not the backend poll, nor the konnectors (`warn_only` in
/// the shipped config, so they never read `failed`).
pub fn kube_lines(r: &Resp) -> Vec<&str> {
    r.body
        .lines()
        .filter(|l| {
            // The poll is no cluster's; konnectors and app-cluster-bindings are warn_only (`[+]… warn:`).
            l.starts_with('[')
                && !l.contains("]backend-status/")
                && !l.contains("]konnectors/")
                && !l.contains("]app-cluster-bindings/")
        })
        .collect()
}

/// A configuration with only a `backend-status` check polling `url`.
pub fn backend_config(url: &str, extra: &str) -> String {
    format!(
        "[[check]]\nname = \"backend-status\"\ntype = \"backend-status\"\nurl = \"{url}\"\ninterval = \"100ms\"\ntimeout = \"500ms\"\n{extra}"
    )
}

/// A configuration with every check of the shipped one, against the simulated control plane.
pub fn full_config(backend_url: &str, extra: &str) -> String {
    shipped_config("config.toml", backend_url, extra)
}

/// Like [`full_config`], from another shipped file (`deploy/sidecar/config.toml`).
pub fn shipped_config(file: &str, backend_url: &str, extra: &str) -> String {
    let path = format!("{}/{file}", env!("CARGO_MANIFEST_DIR"));
    let shipped = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    config_for_test(&shipped, backend_url, extra)
}

/// A configuration as shipped (`shipped`: its text, e.g. from an installed ConfigMap) made to run in a test:
/// its public listener on a free port, its backend-status checks polling `backend_url`, `extra` appended.
pub fn config_for_test(shipped: &str, backend_url: &str, extra: &str) -> String {
    let mut doc: toml::Table = shipped.parse().expect("shipped config is TOML");
    // The shipped public port would collide between tests: a free one instead, found by `public_addr`.
    if let Some(server) = doc.get_mut("server").and_then(toml::Value::as_table_mut) {
        if server.contains_key("public_listen") {
            server.insert("public_listen".into(), "127.0.0.1:0".into());
        }
    }
    if let Some(checks) = doc.get_mut("check").and_then(toml::Value::as_array_mut) {
        for check in checks.iter_mut().filter_map(toml::Value::as_table_mut) {
            if check.get("type").and_then(toml::Value::as_str) == Some("backend-status") {
                check.insert("url".into(), backend_url.into());
                check.insert("interval".into(), "100ms".into());
                check.insert("timeout".into(), "500ms".into());
            }
        }
    }
    format!("{}\n{extra}", toml::to_string(&doc).expect("TOML"))
}

/// Writes the kubeconfig of `api` into the service's future directory and returns its path.
pub fn kubeconfig(api: &klutch_sim::FakeApi, dir: &std::path::Path) -> String {
    let path = dir.join("kubeconfig");
    api.write_kubeconfig(&path).expect("kubeconfig");
    path.display().to_string()
}

/// `path` asked every `every` from now until [`Poller::stop`], each answer kept (each request bounded by
/// [`REQUEST_TIMEOUT`]): what a load balancer saw across a change.
pub struct Poller {
    stop: Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<Vec<Resp>>,
}

impl Poller {
    pub fn start(addr: SocketAddr, path: &str, every: Duration) -> Poller {
        use std::sync::atomic::{AtomicBool, Ordering};
        let stop = Arc::new(AtomicBool::new(false));
        let (flag, path) = (stop.clone(), path.to_string());
        let task = tokio::spawn(async move {
            let mut answers = Vec::new();
            let mut tick = tokio::time::interval(every);
            while !flag.load(Ordering::SeqCst) {
                tick.tick().await;
                answers.push(request(addr, "GET", &path, &[]).await);
            }
            answers
        });
        Poller { stop, task }
    }

    /// Every answer since the start.
    pub async fn stop(self) -> Vec<Resp> {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        self.task.await.expect("the poller")
    }
}

/// Asserts that there were answers and every one was 200; `what` names the scenario.
pub fn all_200(answers: &[Resp], what: &str) {
    let failing: Vec<&Resp> = answers.iter().filter(|r| r.status != 200).collect();
    assert!(
        !answers.is_empty() && failing.is_empty(),
        "{what}: {} of {} answers were not 200; the first:\n{}",
        failing.len(),
        answers.len(),
        failing.first().map_or("", |r| r.body.as_str())
    );
}
