//! Where the real control plane's binaries are: `$KLUTCH_CONTROLPLANE_BIN_DIR` (set by `.ci/run`), else what
//! `controlplane/build.sh` builds or finds in its cache (minutes when cold, at once when warm); Helm's likewise
//! (`$KLUTCH_HELM_BIN_DIR`, else `controlplane/build.sh controlplane/helm`) and the Prometheus Operator's
//! (`$KLUTCH_PROMETHEUS_OPERATOR_BIN_DIR`, else `controlplane/build.sh controlplane/prometheus-operator`) and
//! Prometheus' (`$KLUTCH_PROMETHEUS_BIN_DIR`, else `controlplane/build.sh controlplane/prometheus`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The environment variable naming the directory that holds `controlplane` and `kubectl`.
pub const BIN_DIR_VAR: &str = "KLUTCH_CONTROLPLANE_BIN_DIR";

/// The built binaries: `controlplane` (its `etcd`, `apiserver`, `controller-manager` and `scheduler`
/// subcommands), `kubectl` and `kwok`, all at the Kubernetes release `controlplane/go.mod` pins.
#[derive(Debug, Clone)]
pub struct Binaries {
    pub controlplane: PathBuf,
    pub kubectl: PathBuf,
    pub kwok: PathBuf,
}

/// The repository's root (this crate lives in `realcp/`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(".."))
}

impl Binaries {
    /// Found or built once per process; every later call gets the same answer (an error included, so that a
    /// failed build is not retried by every test).
    pub fn get() -> anyhow::Result<Binaries> {
        static FOUND: OnceLock<Result<Binaries, String>> = OnceLock::new();
        FOUND
            .get_or_init(|| locate().map_err(|e| format!("{e:#}")))
            .clone()
            .map_err(|e| anyhow::anyhow!(e))
    }
}

fn locate() -> anyhow::Result<Binaries> {
    let dir = match std::env::var_os(BIN_DIR_VAR) {
        Some(dir) => PathBuf::from(dir),
        None => build(None)?,
    };
    let bins = Binaries {
        controlplane: dir.join("controlplane"),
        kubectl: dir.join("kubectl"),
        kwok: dir.join("kwok"),
    };
    for bin in [&bins.controlplane, &bins.kubectl, &bins.kwok] {
        anyhow::ensure!(
            bin.is_file(),
            "{} is missing: run controlplane/build.sh and set {BIN_DIR_VAR} to the directory it prints",
            bin.display()
        );
    }
    Ok(bins)
}

/// The environment variable naming the directory that holds `helm`.
pub const HELM_DIR_VAR: &str = "KLUTCH_HELM_BIN_DIR";
/// The environment variable naming the directory that holds the Prometheus Operator's `operator`.
pub const PROMETHEUS_OPERATOR_DIR_VAR: &str = "KLUTCH_PROMETHEUS_OPERATOR_BIN_DIR";

/// Helm (`helm`, from the release `controlplane/helm/go.mod` pins): found or built once per process, like
/// [`Binaries::get`].
pub fn helm() -> anyhow::Result<PathBuf> {
    static FOUND: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    tool(&FOUND, HELM_DIR_VAR, "controlplane/helm", "helm")
}

/// The Prometheus Operator (`operator`, from the release `controlplane/prometheus-operator/go.mod` pins):
/// found or built once per process, like [`Binaries::get`].
pub fn prometheus_operator() -> anyhow::Result<PathBuf> {
    static FOUND: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    tool(
        &FOUND,
        PROMETHEUS_OPERATOR_DIR_VAR,
        "controlplane/prometheus-operator",
        "operator",
    )
}

/// The environment variable naming the directory that holds `prometheus` and `promtool` built with
/// Kubernetes service discovery.
pub const PROMETHEUS_DIR_VAR: &str = "KLUTCH_PROMETHEUS_BIN_DIR";

/// Prometheus (`prometheus`, with `promtool` beside it, from the release `controlplane/prometheus/go.mod`
/// pins): found or built once per process, like [`Binaries::get`].
pub fn prometheus() -> anyhow::Result<PathBuf> {
    static FOUND: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    tool(
        &FOUND,
        PROMETHEUS_DIR_VAR,
        "controlplane/prometheus",
        "prometheus",
    )
}

/// `binary` in `$VAR`, else in what `controlplane/build.sh MODULE` builds; found once per process (a failure
/// included, so that a failed build is not retried by every test).
fn tool(
    found: &'static OnceLock<Result<PathBuf, String>>,
    var: &str,
    module: &str,
    binary: &str,
) -> anyhow::Result<PathBuf> {
    found
        .get_or_init(|| {
            let dir = match std::env::var_os(var) {
                Some(dir) => PathBuf::from(dir),
                None => build(Some(module)).map_err(|e| format!("{e:#}"))?,
            };
            let path = dir.join(binary);
            if path.is_file() {
                Ok(path)
            } else {
                Err(format!(
                    "{} is missing: run controlplane/build.sh {module} and set {var} to the directory it prints",
                    path.display()
                ))
            }
        })
        .clone()
        .map_err(|e| anyhow::anyhow!(e))
}

/// Runs `controlplane/build.sh [MODULE]` (its progress goes to this process's stderr) and reads the directory
/// it prints.
fn build(module: Option<&str>) -> anyhow::Result<PathBuf> {
    let script = repo_root().join("controlplane/build.sh");
    let out = Command::new("bash")
        .arg(&script)
        .args(module.map(|m| repo_root().join(m)))
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| anyhow::anyhow!("cannot run {}: {e}", script.display()))?;
    anyhow::ensure!(
        out.status.success(),
        "{} {} failed ({}): it cannot be built here (it needs Go and the Go module proxy)",
        script.display(),
        module.unwrap_or_default(),
        out.status
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let dir = text.lines().last().unwrap_or_default().trim();
    anyhow::ensure!(!dir.is_empty(), "{} printed no directory", script.display());
    Ok(PathBuf::from(dir))
}
