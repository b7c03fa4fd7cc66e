//! A real Kubernetes control plane for tests: etcd and kube-apiserver built from Kubernetes' own Go modules
//! (`controlplane/`, at the release its `go.mod` pins), started the way controller-runtime's envtest starts
//! them — loopback only, RBAC, a serving certificate, service-account keys, no ServiceAccount admission, no
//! endpoint reconciler — as two child processes, so that a test can stop one without the other. By default
//! there is no controller-manager, scheduler or kubelet: the test plays their part ([`Mirror`] writes
//! status). [`ControlPlane::start_with_controllers`] adds Kubernetes' own kube-controller-manager (the
//! controllers a Deployment needs) and kube-scheduler, and kwok for the kubelet's part on fake nodes, by the
//! stages in `tests/realcp/kwok/stages.yaml`: Deployments, ReplicaSets, pods and nodes as they write them.
//!
//! Identities are static tokens: `admin` (in `system:masters`) for the test's own setup, and each
//! ServiceAccount klutch-health runs as, by its user name (`system:serviceaccount:NS:NAME`), which is what
//! RBAC matches a ServiceAccount subject by. An audit policy logs the requests of those ServiceAccounts only.
//!
//! A crate of its own beside the simulator (`klutch-sim`), as controller-runtime keeps envtest apart from its
//! fake client: only the real control plane's tests (`tests/realcp`), the full tier's Helm and the scale bench
//! use it. It takes the simulator's serving certificates and kinds, and mirrors the simulator's objects.

mod binaries;
mod mirror;
mod process;
mod proxy;
mod rest;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use serde_json::Value;

pub use binaries::{
    helm, prometheus, prometheus_operator, repo_root, Binaries, BIN_DIR_VAR, HELM_DIR_VAR,
    PROMETHEUS_DIR_VAR, PROMETHEUS_OPERATOR_DIR_VAR,
};
pub use mirror::Mirror;
pub use process::{tail, Process};
pub use proxy::{Proxy, ProxyMode};
pub use rest::{kind_of, object_path, path_of, Answer, Rest};

/// Who a kubeconfig authenticates as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Identity {
    /// `admin`, in `system:masters`: the test's own setup.
    Admin,
    /// A ServiceAccount, by namespace and name.
    ServiceAccount(&'static str, &'static str),
}

/// klutch-health's own ServiceAccount (`deploy/`).
pub const KLUTCH_HEALTH: Identity = Identity::ServiceAccount("crossplane-system", "klutch-health");
/// The sidecar's: provider-anynines' ServiceAccount, as `deploy/sidecar`'s `serviceAccountTemplate` names it.
pub const PROVIDER_ANYNINES: Identity =
    Identity::ServiceAccount("crossplane-system", "provider-anynines");

impl Identity {
    /// The user name the API server gives it.
    pub fn user(self) -> String {
        match self {
            Identity::Admin => "admin".into(),
            Identity::ServiceAccount(ns, name) => format!("system:serviceaccount:{ns}:{name}"),
        }
    }

    pub fn token(self) -> String {
        match self {
            Identity::Admin => "admin-token".into(),
            Identity::ServiceAccount(ns, name) => format!("sa-{ns}-{name}"),
        }
    }

    /// A second token of the same user, as a rotation gives it: the API server tells the two apart only by
    /// the uid it records in its audit log (the token itself).
    pub fn rotated_token(self) -> String {
        format!("{}-rotated", self.token())
    }

    /// The lines of `--token-auth-file` (token, user, uid, groups): its token, and its rotated one.
    fn token_lines(self) -> String {
        let line = self.token_line();
        let rotated = line.replacen(&self.token(), &self.rotated_token(), 2);
        format!("{line}{rotated}")
    }

    /// A line of `--token-auth-file`: token, user, uid, groups.
    fn token_line(self) -> String {
        let groups = match self {
            Identity::Admin => "system:masters".to_string(),
            Identity::ServiceAccount(ns, _) => {
                format!("system:serviceaccounts,system:serviceaccounts:{ns}")
            }
        };
        format!(
            "{},{},{},\"{groups}\"\n",
            self.token(),
            self.user(),
            self.token()
        )
    }
}

/// How long a process may take to become ready (a loaded 2-core machine starts kube-apiserver in seconds,
/// but it may take a minute).
const READY_WITHIN: Duration = Duration::from_secs(180);

/// Which of the control plane's processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Etcd,
    ApiServer,
    ControllerManager,
    Scheduler,
    /// The kwok playing the kubelet of one of [`NODES`]: stopped, the node stops heartbeating.
    Kubelet(&'static str),
}

/// The fake nodes of a control plane with controllers, each with a kwok of its own.
pub const NODES: [&str; 2] = ["kwok-node-0", "kwok-node-1"];

/// The controllers kube-controller-manager runs: what a Deployment's life needs (its ReplicaSets and pods,
/// their owners, a namespace's deletion, a lost node's pods marked and evicted, Services' endpoints) and the
/// ServiceAccount token signing. Nothing else, so that it stays light.
const CONTROLLERS: &str = "deployment-controller,replicaset-controller,garbage-collector-controller,\
                           namespace-controller,node-lifecycle-controller,taint-eviction-controller,\
                           endpointslice-controller,serviceaccount-token-controller";

/// How soon the node lifecycle controller calls a node that stopped heartbeating lost (its default is 50s);
/// kwok renews each node's Lease every quarter of [`NODE_LEASE`].
pub const NODE_GRACE: Duration = Duration::from_secs(12);
const NODE_LEASE: Duration = Duration::from_secs(8);

/// etcd and kube-apiserver on free loopback ports, with their files in a temporary directory. Both are
/// killed when it is dropped.
pub struct ControlPlane {
    bins: Binaries,
    dir: PathBuf,
    /// Removes `dir` on drop, unless the control plane lives as long as the process (see [`ControlPlane::start_in`]).
    _temporary: Option<tempfile::TempDir>,
    etcd_port: u16,
    peer_port: u16,
    api_port: u16,
    etcd: Option<Process>,
    apiserver: Option<Process>,
    controller_manager: Option<Process>,
    scheduler: Option<Process>,
    kubelets: Vec<(&'static str, Process)>,
    /// kube-apiserver's `--feature-gates`, from its next start on (empty: its defaults).
    pub feature_gates: String,
    /// The test's own client, as admin.
    pub admin: Rest,
}

impl ControlPlane {
    /// Starts etcd and kube-apiserver in a temporary directory (removed on drop) and waits until `/readyz`
    /// answers `200`.
    pub async fn start() -> anyhow::Result<ControlPlane> {
        let temporary = tempfile::Builder::new()
            .prefix("klutch-realcp-")
            .tempdir()?;
        let dir = temporary.path().to_path_buf();
        let mut cp = ControlPlane::start_at(dir).await?;
        cp._temporary = Some(temporary);
        Ok(cp)
    }

    /// Like [`ControlPlane::start`], in `dir`, emptied first: for a control plane kept until the process ends
    /// (a static is never dropped), so that each run reuses one directory instead of leaving one behind.
    pub async fn start_in(dir: &Path) -> anyhow::Result<ControlPlane> {
        if dir.exists() {
            std::fs::remove_dir_all(dir)
                .with_context(|| format!("cannot empty {}", dir.display()))?;
        }
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        ControlPlane::start_at(dir.to_path_buf()).await
    }

    async fn start_at(dir: PathBuf) -> anyhow::Result<ControlPlane> {
        let bins = tokio::task::spawn_blocking(Binaries::get).await??;
        let files = Files(dir.clone());
        let certs = klutch_sim::api::serving_certs()?;
        write(&files.ca(), &certs.ca_cert)?;
        write(&files.path("apiserver.crt"), &certs.cert)?;
        write(&files.path("apiserver.key"), &certs.key)?;
        let sa = rcgen::KeyPair::generate()?;
        write(&files.path("sa.key"), &sa.serialize_pem())?;
        write(&files.path("sa.pub"), &sa.public_key_pem())?;
        let tokens: String = [Identity::Admin, KLUTCH_HEALTH, PROVIDER_ANYNINES]
            .iter()
            .map(|i| i.token_lines())
            .collect();
        write(&files.path("tokens.csv"), &tokens)?;
        write(&files.path("audit-policy.yaml"), &audit_policy())?;
        let (etcd_port, peer_port, api_port) = (free_port()?, free_port()?, free_port()?);
        let admin_kubeconfig = files.path("admin.kubeconfig");
        write_kubeconfig(
            &admin_kubeconfig,
            &format!("https://127.0.0.1:{api_port}"),
            &files.ca(),
            Identity::Admin,
        )?;
        let admin = Rest::from_kubeconfig(&admin_kubeconfig).await?;
        let mut cp = ControlPlane {
            bins,
            dir,
            _temporary: None,
            etcd_port,
            peer_port,
            api_port,
            etcd: None,
            apiserver: None,
            controller_manager: None,
            scheduler: None,
            kubelets: Vec::new(),
            feature_gates: String::new(),
            admin,
        };
        cp.start_part(Part::Etcd).await?;
        cp.start_part(Part::ApiServer).await?;
        Ok(cp)
    }

    /// Like [`ControlPlane::start`], with kube-controller-manager, kube-scheduler and a kwok for each of
    /// [`NODES`], and waits until every node is Ready.
    pub async fn start_with_controllers() -> anyhow::Result<ControlPlane> {
        let mut cp = ControlPlane::start().await?;
        cp.start_part(Part::ControllerManager).await?;
        cp.start_part(Part::Scheduler).await?;
        for node in NODES {
            cp.admin
                .apply(
                    &format!("/api/v1/nodes/{node}"),
                    &fake_node(node),
                    "klutch-test",
                )
                .await
                .and_then(|a| a.ok("create a fake node"))?;
            cp.start_part(Part::Kubelet(node)).await?;
        }
        Ok(cp)
    }

    /// The end of each controller's log (kube-controller-manager, kube-scheduler, each kwok), for a failing
    /// test to show.
    pub fn controller_logs(&self) -> String {
        let mut logs = vec![
            "controller-manager.log".to_string(),
            "scheduler.log".to_string(),
        ];
        logs.extend(NODES.iter().map(|n| format!("kwok-{n}.log")));
        logs.iter()
            .map(|l| format!("--- {l}:\n{}", tail(&self.files().path(l), 15)))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Waits until `node`'s Ready condition has `status` (`"True"`, or `"Unknown"` once it stopped
    /// heartbeating and the node lifecycle controller noticed).
    pub async fn wait_node(&mut self, node: &str, status: &str) -> anyhow::Result<()> {
        let start = Instant::now();
        loop {
            for (what, p) in self.kubelets.iter_mut().filter(|(n, _)| *n == node) {
                if let Some(why) = p.exited() {
                    return Err(anyhow!("the kwok of {what}: {why}"));
                }
            }
            let answer = tokio::time::timeout(
                Duration::from_secs(5),
                self.admin.get(&format!("/api/v1/nodes/{node}")),
            )
            .await;
            if let Ok(Ok(a)) = answer {
                let ready = a.body["status"]["conditions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|c| c["type"] == "Ready");
                if ready.is_some_and(|c| c["status"] == status) {
                    return Ok(());
                }
            }
            anyhow::ensure!(
                start.elapsed() < READY_WITHIN,
                "node {node} not Ready={status} within {READY_WITHIN:?}; the controllers' logs:\n{}",
                self.controller_logs()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn files(&self) -> Files {
        Files(self.dir.clone())
    }

    /// `https://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.api_port)
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.api_port))
    }

    pub fn binaries(&self) -> &Binaries {
        &self.bins
    }

    /// The directory holding the control plane's files and logs (`etcd.log`, `apiserver.log`, `audit.log`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes a kubeconfig for `identity`, reaching the API server at `server` (its own URL, or a proxy's
    /// `https://127.0.0.1:PORT`: the certificate names 127.0.0.1).
    pub fn write_kubeconfig(
        &self,
        path: &Path,
        identity: Identity,
        server: Option<&str>,
    ) -> anyhow::Result<()> {
        write_kubeconfig(
            path,
            server.unwrap_or(&self.url()),
            &self.files().ca(),
            identity,
        )
    }

    pub fn admin_kubeconfig(&self) -> PathBuf {
        self.files().path("admin.kubeconfig")
    }

    /// kube-apiserver's process id while it runs: its CPU and memory are what a client's lists cost it.
    pub fn apiserver_pid(&self) -> Option<u32> {
        self.apiserver.as_ref().map(Process::pid)
    }

    /// Kills one process (SIGKILL, as a crash or an OOM kill would).
    pub fn stop(&mut self, part: Part) {
        match part {
            Part::Etcd => self.etcd = None,
            Part::ApiServer => self.apiserver = None,
            Part::ControllerManager => self.controller_manager = None,
            Part::Scheduler => self.scheduler = None,
            Part::Kubelet(node) => self.kubelets.retain(|(n, _)| *n != node),
        }
    }

    /// Starts one process again (on the same port and data) and waits until it serves: etcd until it
    /// answers, kube-apiserver until `/readyz` answers `200`.
    pub async fn start_part(&mut self, part: Part) -> anyhow::Result<()> {
        let files = self.files();
        match part {
            Part::Etcd => {
                let ready = files.path("etcd.ready");
                let _ = std::fs::remove_file(&ready);
                let mut cmd = std::process::Command::new(&self.bins.controlplane);
                cmd.arg("etcd")
                    .arg("--data-dir")
                    .arg(files.path("etcd"))
                    .arg(format!("--client-port={}", self.etcd_port))
                    .arg(format!("--peer-port={}", self.peer_port))
                    .arg("--ready-file")
                    .arg(&ready);
                let mut etcd = Process::spawn("etcd", cmd, &files.path("etcd.log"))?;
                let start = Instant::now();
                while !ready.exists() {
                    if let Some(why) = etcd.exited() {
                        return Err(anyhow!(why));
                    }
                    anyhow::ensure!(
                        start.elapsed() < READY_WITHIN,
                        "etcd not ready within {READY_WITHIN:?}: {}",
                        tail(&files.path("etcd.log"), 30)
                    );
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                self.etcd = Some(etcd);
                Ok(())
            }
            Part::ApiServer => {
                let mut cmd = std::process::Command::new(&self.bins.controlplane);
                cmd.arg("apiserver").args(self.apiserver_args());
                self.apiserver = Some(Process::spawn(
                    "kube-apiserver",
                    cmd,
                    &files.path("apiserver.log"),
                )?);
                self.wait_ready().await
            }
            Part::ControllerManager => {
                let mut cmd = std::process::Command::new(&self.bins.controlplane);
                cmd.arg("controller-manager")
                    .args(self.controller_manager_args());
                let process = Process::spawn(
                    "kube-controller-manager",
                    cmd,
                    &files.path("controller-manager.log"),
                )?;
                self.controller_manager = Some(process);
                Ok(())
            }
            Part::Scheduler => {
                let mut cmd = std::process::Command::new(&self.bins.controlplane);
                cmd.arg("scheduler").args([
                    format!("--kubeconfig={}", self.admin_kubeconfig().display()),
                    "--leader-elect=false".into(),
                    // No serving: nothing here scrapes or probes it.
                    "--secure-port=0".into(),
                ]);
                let process = Process::spawn("kube-scheduler", cmd, &files.path("scheduler.log"))?;
                self.scheduler = Some(process);
                Ok(())
            }
            Part::Kubelet(node) => {
                let index = NODES.iter().position(|n| *n == node).unwrap_or(0);
                let stages = repo_root().join("tests/realcp/kwok/stages.yaml");
                let mut cmd = std::process::Command::new(&self.bins.kwok);
                cmd.args([
                    format!("--kubeconfig={}", self.admin_kubeconfig().display()),
                    format!("--config={}", stages.display()),
                    format!("--manage-single-node={node}"),
                    format!("--node-lease-duration-seconds={}", NODE_LEASE.as_secs()),
                    format!("--cidr=10.244.{index}.0/24"),
                    format!("--node-ip=10.0.1.{}", index + 1),
                ]);
                // SAFETY: prctl is async-signal-safe. kwok does not watch its parent as `controlplane` does:
                // this ends it with the test process even when that is killed without unwinding. (The
                // signal follows the spawning thread, the test's own, which outlives its control plane.)
                unsafe {
                    std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
                        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                        Ok(())
                    });
                }
                let process =
                    Process::spawn("kwok", cmd, &files.path(&format!("kwok-{node}.log")))?;
                self.kubelets.retain(|(n, _)| *n != node);
                self.kubelets.push((node, process));
                self.wait_node(node, "True").await
            }
        }
    }

    /// kube-controller-manager as the admin, without serving or leader election, quick to call a node lost.
    fn controller_manager_args(&self) -> Vec<String> {
        let f = self.files();
        vec![
            format!("--kubeconfig={}", self.admin_kubeconfig().display()),
            format!("--controllers={}", CONTROLLERS.replace(' ', "")),
            "--leader-elect=false".into(),
            "--secure-port=0".into(),
            "--use-service-account-credentials=false".into(),
            format!(
                "--service-account-private-key-file={}",
                f.path("sa.key").display()
            ),
            format!("--root-ca-file={}", f.ca().display()),
            "--node-monitor-period=1s".into(),
            format!("--node-monitor-grace-period={}s", NODE_GRACE.as_secs()),
            "--kube-api-qps=200".into(),
            "--kube-api-burst=400".into(),
        ]
    }

    /// envtest's flags, and what a loopback-only control plane without controllers needs.
    fn apiserver_args(&self) -> Vec<String> {
        let f = self.files();
        let p = |name: &str| f.path(name).display().to_string();
        let mut args = vec![
            format!("--etcd-servers=http://127.0.0.1:{}", self.etcd_port),
            format!("--secure-port={}", self.api_port),
            "--bind-address=127.0.0.1".into(),
            "--advertise-address=127.0.0.1".into(),
            // Kubernetes refuses a loopback address for its own Endpoints; nothing here needs them.
            "--endpoint-reconciler-type=none".into(),
            format!("--cert-dir={}", p("certs")),
            format!("--tls-cert-file={}", p("apiserver.crt")),
            format!("--tls-private-key-file={}", p("apiserver.key")),
            "--authorization-mode=RBAC".into(),
            format!("--token-auth-file={}", p("tokens.csv")),
            format!("--service-account-issuer={}", self.url()),
            format!("--service-account-key-file={}", p("sa.pub")),
            format!("--service-account-signing-key-file={}", p("sa.key")),
            "--service-cluster-ip-range=10.0.0.0/24".into(),
            "--allow-privileged=true".into(),
            // Nothing creates the default ServiceAccounts a Pod would need.
            "--disable-admission-plugins=ServiceAccount".into(),
            format!("--audit-policy-file={}", p("audit-policy.yaml")),
            format!("--audit-log-path={}", p("audit.log")),
            "--audit-log-mode=blocking".into(),
        ];
        if !self.feature_gates.is_empty() {
            args.push(format!("--feature-gates={}", self.feature_gates));
        }
        args
    }

    /// Waits until kube-apiserver's `/readyz` answers `200`.
    pub async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let start = Instant::now();
        loop {
            if let Some(why) = self.apiserver.as_mut().and_then(Process::exited) {
                return Err(anyhow!(why));
            }
            let last = match tokio::time::timeout(Duration::from_secs(5), self.admin.get("/readyz"))
                .await
            {
                Ok(Ok(a)) if a.status == http::StatusCode::OK => return Ok(()),
                Ok(Ok(a)) => format!("{}: {}", a.status, a.body),
                Ok(Err(e)) => format!("{e:#}"),
                Err(_) => "no answer within 5s".into(),
            };
            anyhow::ensure!(
                start.elapsed() < READY_WITHIN,
                "kube-apiserver not ready within {READY_WITHIN:?} (last: {last}); the end of its log:\n{}",
                tail(&self.files().path("apiserver.log"), 30)
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Runs the real kubectl as admin; its output, or an error with its stderr.
    pub async fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> anyhow::Result<String> {
        let out = self.kubectl_output(args, stdin).await?;
        anyhow::ensure!(
            out.status.success(),
            "kubectl {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Like [`ControlPlane::kubectl`], whatever the exit code.
    pub async fn kubectl_output(
        &self,
        args: &[&str],
        stdin: Option<&str>,
    ) -> anyhow::Result<std::process::Output> {
        use tokio::io::AsyncWriteExt;
        let mut cmd = tokio::process::Command::new(&self.bins.kubectl);
        cmd.arg("--kubeconfig")
            .arg(self.admin_kubeconfig())
            .args(args)
            .current_dir(repo_root())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().context("cannot start kubectl")?;
        let mut input = child.stdin.take().context("kubectl's stdin")?;
        input.write_all(stdin.unwrap_or("").as_bytes()).await?;
        drop(input);
        tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
            .await
            .map_err(|_| anyhow!("kubectl {} took over 120s", args.join(" ")))?
            .context("kubectl")
    }

    /// Installs the repository's vendored CRDs (`crds/`; the Crossplane 1.17 variants of the packages) and
    /// waits until they are established.
    pub async fn install_crds(&self) -> anyhow::Result<()> {
        let mut args = vec!["apply", "--server-side", "--field-manager=klutch-test"];
        let files = crd_files()?;
        for f in &files {
            args.extend(["-f", f.as_str()]);
        }
        self.kubectl(&args, None).await?;
        self.crds_established().await
    }

    /// Waits until every CRD the server holds is established (its resources served).
    pub async fn crds_established(&self) -> anyhow::Result<()> {
        self.kubectl(
            &[
                "wait",
                "--for=condition=Established",
                "crd",
                "--all",
                "--timeout=120s",
            ],
            None,
        )
        .await?;
        Ok(())
    }

    /// Compacts etcd's history up to now: a watch resumed from an older `resourceVersion` gets `410 Gone`.
    pub async fn compact(&self) -> anyhow::Result<()> {
        let out = tokio::process::Command::new(&self.bins.controlplane)
            .arg("compact")
            .arg(format!("--etcd=http://127.0.0.1:{}", self.etcd_port))
            .kill_on_drop(true)
            .output()
            .await?;
        anyhow::ensure!(
            out.status.success(),
            "compaction failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    }

    /// The audit log's events (the requests of klutch-health's ServiceAccounts, see [`audit_policy`]).
    pub fn audit_events(&self) -> Vec<Value> {
        std::fs::read_to_string(self.files().path("audit.log"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

/// A Node for kwok to play: Ready once its kwok starts, roomy enough for any test.
fn fake_node(name: &str) -> Value {
    serde_json::json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
                       "kubernetes.io/arch": "amd64", "type": "kwok"}
        },
        "status": {
            "allocatable": {"cpu": "32", "memory": "256Gi", "pods": "110"},
            "capacity": {"cpu": "32", "memory": "256Gi", "pods": "110"}
        }
    })
}

/// Paths in the control plane's directory.
struct Files(PathBuf);

impl Files {
    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    fn ca(&self) -> PathBuf {
        self.path("ca.crt")
    }
}

fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

/// A free loopback port (bound and released: envtest's way; the window for a collision is tiny).
fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind(("127.0.0.1", 0))?
        .local_addr()?
        .port())
}

fn write_kubeconfig(
    path: &Path,
    server: &str,
    ca: &Path,
    identity: Identity,
) -> anyhow::Result<()> {
    write(
        path,
        &format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: real\n  cluster:\n    server: {server}\n    \
             certificate-authority: {}\ncontexts:\n- name: real\n  context:\n    cluster: real\n    user: user\n    \
             namespace: default\ncurrent-context: real\nusers:\n- name: user\n  user:\n    token: {}\n",
            ca.display(),
            identity.token()
        ),
    )
}

/// Logs every request of klutch-health's ServiceAccounts (metadata only) and nothing else: the tests count
/// the refused ones.
fn audit_policy() -> String {
    let users: Vec<String> = [KLUTCH_HEALTH, PROVIDER_ANYNINES]
        .iter()
        .map(|i| format!("\"{}\"", i.user()))
        .collect();
    format!(
        "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [\"RequestReceived\"]\nrules:\n\
         - level: Metadata\n  users: [{}]\n- level: None\n",
        users.join(", ")
    )
}

/// The vendored CRDs to install: every file of `crds/`, the Crossplane packages in their 1.17 variant
/// (the v2 ones define the same resources).
pub fn crd_files() -> anyhow::Result<Vec<String>> {
    let dir = repo_root().join("crds");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .with_context(|| format!("cannot read {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .filter(|p| !p.to_string_lossy().contains(".v2-head."))
        .map(|p| p.display().to_string())
        .collect();
    files.sort();
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_account_tokens_carry_the_user_and_groups_rbac_matches() {
        assert_eq!(
            KLUTCH_HEALTH.token_line(),
            "sa-crossplane-system-klutch-health,system:serviceaccount:crossplane-system:klutch-health,\
             sa-crossplane-system-klutch-health,\"system:serviceaccounts,system:serviceaccounts:crossplane-system\"\n"
        );
        assert!(Identity::Admin
            .token_line()
            .ends_with("\"system:masters\"\n"));
    }

    #[test]
    fn the_crds_are_vendored_once_per_resource() {
        let files = crd_files().unwrap();
        assert!(files
            .iter()
            .any(|f| f.ends_with("dataservices.anynines.com_providerconfigs.yaml")));
        assert!(files
            .iter()
            .any(|f| f.ends_with("pkg.crossplane.io_providers.v1.17.0.yaml")));
        assert!(!files.iter().any(|f| f.contains("v2-head")));
    }
}
