//! What every test of this suite starts from: a real control plane with the vendored CRDs and `deploy/`
//! applied by the real kubectl, the simulator's whole Klutch estate mirrored into it, and klutch-health
//! running as its ServiceAccount with the shipped configuration (the backend URL pointed at the simulator's
//! fake provider-anynines).

use std::ops::{Deref, DerefMut};
use std::time::Duration;

use klutch_realcp::{ControlPlane, Identity, Mirror, Rest};
use klutch_sim::SimControlPlane;
use serde_json::Value;
use tokio::sync::{Mutex, MutexGuard};

use crate::common::{shipped_config, Service};

/// How often the simulated konnectors heartbeat.
pub const HEARTBEAT: Duration = Duration::from_secs(2);
/// How long a condition on the real server may take (a loaded 2-core machine, several API servers).
pub const DEADLINE: Duration = Duration::from_secs(90);

/// The namespace klutch-health runs in (`deploy/`).
pub const NAMESPACE: &str = "crossplane-system";

/// The control plane shared by the tests that only read and flip status, one test at a time (the estate is
/// cluster-scoped). Its processes end with the test binary (they watch their parent).
static SHARED: Mutex<Option<ControlPlane>> = Mutex::const_new(None);

/// A control plane of the test's own, or the shared one while the test holds it.
pub enum Plane {
    Own(Box<ControlPlane>),
    Shared(MutexGuard<'static, Option<ControlPlane>>),
}

impl Deref for Plane {
    type Target = ControlPlane;
    fn deref(&self) -> &ControlPlane {
        match self {
            Plane::Own(cp) => cp,
            Plane::Shared(guard) => guard.as_ref().expect("the shared control plane is started"),
        }
    }
}

impl DerefMut for Plane {
    fn deref_mut(&mut self) -> &mut ControlPlane {
        match self {
            Plane::Own(cp) => cp,
            Plane::Shared(guard) => guard.as_mut().expect("the shared control plane is started"),
        }
    }
}

pub struct Estate {
    pub cp: Plane,
    pub sim: SimControlPlane,
    pub mirror: Mirror,
    /// The test's own client, as admin.
    pub admin: Rest,
    dirs: Vec<tempfile::TempDir>,
}

/// A fresh control plane: CRDs installed, the namespaces klutch-health's manifests need, and (`standalone`)
/// `deploy/` as `kubectl apply -k deploy` installs it. `kept`: in that directory, for the shared one.
async fn prepared(standalone: bool, kept: Option<&std::path::Path>) -> ControlPlane {
    let cp = match kept {
        Some(dir) => ControlPlane::start_in(dir).await,
        None => ControlPlane::start().await,
    }
    .expect("a real control plane");
    install(cp, standalone).await
}

async fn install(cp: ControlPlane, standalone: bool) -> ControlPlane {
    cp.install_crds().await.expect("the vendored CRDs");
    cp.kubectl(
        &["apply", "-f", "-"],
        Some("apiVersion: v1\nkind: Namespace\nmetadata: {name: crossplane-system}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: bind}\n"),
    )
    .await
    .expect("namespaces");
    if standalone {
        cp.kubectl(&["apply", "-k", "deploy"], None)
            .await
            .expect("kubectl apply -k deploy");
    }
    cp
}

impl Estate {
    /// A control plane of this test's own: for tests that stop its processes or change its RBAC.
    pub async fn own() -> Estate {
        Estate::populate(Plane::Own(Box::new(prepared(true, None).await))).await
    }

    /// A control plane of this test's own without `deploy/`: for the sidecar variant, which replaces it.
    pub async fn own_without_deploy() -> Estate {
        Estate::populate(Plane::Own(Box::new(prepared(false, None).await))).await
    }

    /// A control plane of this test's own with Kubernetes' controllers and kwok's nodes, `deploy/` applied:
    /// the simulator's estate is mirrored into it except Deployments and pods, which the test creates as
    /// Deployments and the controllers run.
    pub async fn with_controllers() -> Estate {
        let cp = ControlPlane::start_with_controllers()
            .await
            .expect("a real control plane with controllers");
        let cp = install(cp, true).await;
        Estate::populate_leaving(Plane::Own(Box::new(cp)), &["Deployment", "Pod"]).await
    }

    /// The shared control plane, held until the estate is dropped.
    pub async fn shared() -> Estate {
        let mut guard = SHARED.lock().await;
        if guard.is_none() {
            // Never dropped (a static): one directory under target/ that the next run empties.
            let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("realcp-shared");
            *guard = Some(prepared(true, Some(&dir)).await);
        }
        Estate::populate(Plane::Shared(guard)).await
    }

    async fn populate(cp: Plane) -> Estate {
        Estate::populate_leaving(cp, &[]).await
    }

    /// The simulator's estate, mirrored except the kinds `left` to the real controllers.
    async fn populate_leaving(cp: Plane, left: &'static [&'static str]) -> Estate {
        // A client per test: a client's connections live on the runtime that made them.
        let admin = Rest::from_kubeconfig(&cp.admin_kubeconfig())
            .await
            .expect("admin client");
        let sim = SimControlPlane::start().await.expect("the simulator");
        sim.seed_estate(HEARTBEAT);
        let mirror = Mirror::start_leaving(&sim.api, admin.clone(), left);
        mirror
            .caught_up()
            .await
            .expect("the simulated estate in the real API server");
        let estate = Estate {
            cp,
            sim,
            mirror,
            admin,
            dirs: Vec::new(),
        };
        estate.forget_klutch_healths_writes().await;
        estate
    }

    /// Removes the Events and the Lease an earlier klutch-health wrote: each test starts without them.
    async fn forget_klutch_healths_writes(&self) {
        let events = self
            .admin
            .get("/apis/events.k8s.io/v1/events")
            .await
            .and_then(|a| a.ok("list Events"))
            .expect("Events");
        for e in events["items"].as_array().into_iter().flatten() {
            let (ns, name) = (
                e["metadata"]["namespace"].as_str().unwrap_or_default(),
                e["metadata"]["name"].as_str().unwrap_or_default(),
            );
            let _ = self
                .admin
                .delete(
                    &format!("/apis/events.k8s.io/v1/namespaces/{ns}/events/{name}"),
                    None,
                )
                .await;
        }
        let _ = self
            .admin
            .delete(
                &format!(
                    "/apis/coordination.k8s.io/v1/namespaces/{NAMESPACE}/leases/klutch-health-events"
                ),
                None,
            )
            .await;
    }

    /// klutch-health with the shipped configuration, authenticated as `identity`, as the Pod `pod` (the
    /// downward API's variables), reaching the API server at `server` (default: directly); `tweak` may change
    /// the configuration first.
    pub async fn klutch_health(
        &mut self,
        identity: Identity,
        pod: &str,
        server: Option<&str>,
        tweak: impl FnOnce(&mut toml::Table),
    ) -> Service {
        self.klutch_health_with("config.toml", identity, pod, server, tweak)
            .await
    }

    /// Like [`Estate::klutch_health`], with another shipped configuration file (`deploy/sidecar/config.toml`).
    pub async fn klutch_health_with(
        &mut self,
        file: &str,
        identity: Identity,
        pod: &str,
        server: Option<&str>,
        tweak: impl FnOnce(&mut toml::Table),
    ) -> Service {
        let dir = tempfile::tempdir().expect("dir");
        let kubeconfig = dir.path().join("kubeconfig");
        self.cp
            .write_kubeconfig(&kubeconfig, identity, server)
            .expect("kubeconfig");
        let mut doc: toml::Table = shipped_config(file, &self.sim.backend.url(), "")
            .parse()
            .expect("TOML");
        tweak(&mut doc);
        let config = toml::to_string(&doc).expect("TOML");
        let kubeconfig = kubeconfig.display().to_string();
        let uid = format!("00000000-0000-4000-8000-{:012}", pod.len());
        let env = [
            ("KUBECONFIG", kubeconfig.as_str()),
            ("POD_NAME", pod),
            ("POD_NAMESPACE", NAMESPACE),
            ("POD_UID", uid.as_str()),
        ];
        self.dirs.push(dir);
        Service::start(&config, &env).await
    }

    /// klutch-health with the shipped configuration against the simulator's fake API server instead (its
    /// Events and Lease go there too): the other side of a parity comparison.
    pub async fn klutch_health_on_sim(&mut self, pod: &str) -> Service {
        let dir = tempfile::tempdir().expect("dir");
        let kubeconfig = crate::common::kubeconfig(&self.sim.api, dir.path());
        let config = shipped_config("config.toml", &self.sim.backend.url(), "");
        let env = [
            ("KUBECONFIG", kubeconfig.as_str()),
            ("POD_NAME", pod),
            ("POD_NAMESPACE", NAMESPACE),
        ];
        self.dirs.push(dir);
        Service::start(&config, &env).await
    }

    /// The requests of klutch-health's ServiceAccounts the API server refused (from its audit log).
    pub fn refused(&self) -> Vec<String> {
        self.cp
            .audit_events()
            .iter()
            .filter(|e| e["responseStatus"]["code"] == 403)
            .map(|e| {
                format!(
                    "{} {} {}",
                    e["user"]["username"].as_str().unwrap_or_default(),
                    e["verb"].as_str().unwrap_or_default(),
                    e["requestURI"].as_str().unwrap_or_default()
                )
            })
            .collect()
    }
}

/// Polls `path` of `svc` until `check` holds, within [`DEADLINE`]; the panic shows the last answer.
pub async fn wait_for(
    svc: &Service,
    path: &str,
    what: &str,
    check: impl Fn(&crate::common::Resp) -> bool,
) -> crate::common::Resp {
    svc.wait_for_within(DEADLINE, path, what, check).await
}

/// Short settings (as the simulator's drills use): silence, unreadiness and refusals show within seconds,
/// and recovery is not held up by a long backoff.
pub fn short(doc: &mut toml::Table) {
    if let Some(k) = doc
        .get_mut("kubernetes")
        .and_then(toml::Value::as_table_mut)
    {
        k.insert("stale_after".into(), "2s".into());
        k.insert("probe_interval".into(), "1s".into());
        k.insert("probe_timeout".into(), "2s".into());
    }
}

/// [`short`], with a probe timeout above kube-apiserver's etcd readiness timeout (2 s): a server whose etcd
/// is down then answers `/readyz` 500 within it, which tells "not ready" from "silent".
pub fn short_patient_of_etcd(doc: &mut toml::Table) {
    short(doc);
    if let Some(k) = doc
        .get_mut("kubernetes")
        .and_then(toml::Value::as_table_mut)
    {
        k.insert("probe_timeout".into(), "6s".into());
    }
}

/// Waits until `check` gives a value, within [`DEADLINE`].
pub async fn until<T>(what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let start = std::time::Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(start.elapsed() < DEADLINE, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The JSON of an object, as admin (`None` when absent).
pub async fn get(admin: &Rest, path: &str) -> Option<Value> {
    let a = admin.get(path).await.expect("GET");
    a.status.is_success().then_some(a.body)
}

/// Whether audit event `e` is a list of a collection as it completed: a LIST, or a streaming list (a WATCH
/// asking for initial events, audited as it starts since it stays open).
pub fn a_list(e: &Value) -> bool {
    let uri = e["requestURI"].as_str().unwrap_or_default();
    let streaming = uri.split(['?', '&']).any(|p| p == "sendInitialEvents=true");
    (e["verb"] == "list" && e["stage"] == "ResponseComplete")
        || (e["verb"] == "watch" && streaming && e["stage"] == "ResponseStarted")
}
