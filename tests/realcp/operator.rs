//! The shipped monitoring through the real Prometheus Operator (`controlplane/build.sh
//! controlplane/prometheus-operator`, v0.85.0) on the real API server, and the Prometheus v3.5 it requires
//! (`controlplane/build.sh controlplane/prometheus`: Debian's build lacks Kubernetes service discovery): it turns
//! `deploy/monitoring` and a `Prometheus` object into Prometheus configuration and rule files; the test takes
//! them as the operator wrote them (its Secret and ConfigMap), checks them with `promtool`, and runs the real
//! Prometheus with them. Its
//! Kubernetes service discovery reads the real API server, where the test has written an EndpointSlice of the
//! Service `klutch-health` pointing at a klutch-health process of this machine (no kubelet runs pods here; the
//! API server refuses loopback addresses in an EndpointSlice, so the EndpointSlice names an address of the
//! documentation range that nothing ever connects to, and the last relabeling step of each scrape job turns
//! it into loopback: only 127.0.0.1 is ever scraped). Every
//! series carries `control_plane` and keeps klutch-health's own `endpoint` label; the operator-loaded rules
//! fire `KlutchControlPlaneNotReady` and `KlutchHealthItemDown` (once, for the root cause) for a broken estate
//! and resolve when it heals; the recording rules evaluate.
//!
//! Two edits, both for time only: the ServiceMonitor scrapes every second instead of every 30, and every
//! rule's `for:` is two seconds. The configuration gets what the operator's config-reloader does in the pod
//! (`$(SHARD)`, `$(POD_NAME)` expanded) and the one thing a Prometheus outside the cluster needs, the API
//! server's address and credentials, added to each `kubernetes_sd_configs` entry as a `kubeconfig_file`; and
//! the address rewrite above, after the operator's own relabeling.

use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

use klutch_sim::real::{Process, KLUTCH_HEALTH};
use serde_json::{json, Value};

use crate::estate::{get, short, until, wait_for, Estate, NAMESPACE};
use crate::programs::{encode, free_port, Program};

/// The `Prometheus` object the operator configures (its Secret is `prometheus-klutch`).
const PROMETHEUS: &str = "klutch";
/// What the rules' `for:` becomes, so that alerts fire within seconds.
const RULE_FOR: &str = "2s";
/// The ProviderConfig the test breaks.
const PC: &str = "postgresql-backup-manager";

/// The output of a command run to completion (gzip, base64, promtool), failing with its errors.
fn run(cmd: &mut Command) -> Vec<u8> {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// `deploy/monitoring` as kustomize renders it, scraping every second and every `for:` at [`RULE_FOR`].
async fn monitoring(estate: &Estate) -> String {
    let rendered = estate
        .cp
        .kubectl(&["kustomize", "deploy/monitoring"], None)
        .await
        .expect("kubectl kustomize deploy/monitoring");
    let mut docs = Vec::new();
    for doc in serde_yaml_ng::Deserializer::from_str(&rendered) {
        let mut obj: Value = serde::Deserialize::deserialize(doc).expect("rendered YAML");
        match obj["kind"].as_str() {
            Some("ServiceMonitor") => {
                for e in obj["spec"]["endpoints"].as_array_mut().expect("endpoints") {
                    e["interval"] = "1s".into();
                    e["scrapeTimeout"] = "1s".into();
                }
            }
            Some("PrometheusRule") => {
                for g in obj["spec"]["groups"].as_array_mut().expect("groups") {
                    for r in g["rules"].as_array_mut().expect("rules") {
                        if r.get("for").is_some() {
                            r["for"] = RULE_FOR.into();
                        }
                    }
                }
            }
            _ => {}
        }
        docs.push(serde_yaml_ng::to_string(&obj).expect("YAML"));
    }
    docs.join("---\n")
}

/// The `data` of a successful answer of Prometheus' HTTP API at `path`.
async fn api(prom: SocketAddr, path: &str) -> Option<Value> {
    let r = crate::programs::get(prom, path).await.ok()?;
    let v: Value = serde_json::from_str(&r.body).ok()?;
    (v["status"] == "success").then(|| v["data"].clone())
}

/// The series an instant query of `expr` returns (empty while there are none).
async fn query(prom: SocketAddr, expr: &str) -> Option<Vec<Value>> {
    api(prom, &format!("/api/v1/query?query={}", encode(expr)))
        .await?
        .get("result")?
        .as_array()
        .cloned()
}

/// The firing alerts named `name`, by their labels.
async fn firing(prom: SocketAddr, name: &str) -> Option<Vec<Value>> {
    let data = api(prom, "/api/v1/alerts").await?;
    Some(
        data["alerts"]
            .as_array()?
            .iter()
            .filter(|a| a["labels"]["alertname"] == name && a["state"] == "firing")
            .map(|a| a["labels"].clone())
            .collect(),
    )
}

/// The address the EndpointSlice names for klutch-health: the API server refuses loopback there, and no
/// kubelet runs pods here. It is of the documentation range (RFC 5737) and never connected to: each scrape
/// job's last relabeling step rewrites it to 127.0.0.1, where klutch-health listens.
const NAMED_ADDRESS: &str = "192.0.2.200";

fn prometheus_program(name: &str) -> std::path::PathBuf {
    klutch_sim::real::prometheus()
        .unwrap_or_else(|e| panic!("no Prometheus: {e}"))
        .with_file_name(name)
}

/// Starts the operator against the control plane as admin, killed with the test.
fn start_operator(kubeconfig: &Path, dir: &Path) -> Process {
    let operator = klutch_sim::real::prometheus_operator()
        .unwrap_or_else(|e| panic!("no Prometheus Operator: {e}"));
    let mut cmd = Command::new(operator);
    cmd.env("KUBECONFIG", kubeconfig).args([
        format!("--web.listen-address=127.0.0.1:{}", free_port()),
        format!("--namespaces={NAMESPACE}"),
    ]);
    // Ends with the test thread that started it, even if the test process is killed before its Drop runs.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    Process::spawn("the Prometheus Operator", cmd, &dir.join("operator.log"))
        .expect("start the Prometheus Operator")
}

#[tokio::test]
async fn the_operator_makes_the_shipped_monitoring_work_alerts_fire_and_resolve() {
    let mut estate = Estate::own().await;
    let admin_kubeconfig = estate.cp.admin_kubeconfig();
    let dir = tempfile::tempdir().expect("dir");

    // The operator's own CRDs beyond the vendored monitors and rules: Prometheus, and Probe (it watches them).
    let crds = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/controlplane/prometheus-operator/crds"
    );
    estate
        .cp
        .kubectl(&["apply", "--server-side", "-f", crds], None)
        .await
        .expect("the Prometheus and Probe CRDs");
    estate
        .cp
        .kubectl(
            &[
                "wait",
                "--for=condition=Established",
                "crd",
                "--all",
                "--timeout=120s",
            ],
            None,
        )
        .await
        .expect("CRDs established");
    let mut operator = start_operator(&admin_kubeconfig, dir.path());

    // klutch-health on loopback as its ServiceAccount; a Pod object and an EndpointSlice of the Service
    // klutch-health name it, as the kubelet and the endpointslice controller would.
    let svc = estate
        .klutch_health(KLUTCH_HEALTH, "klutch-health-0", None, short)
        .await;
    wait_for(&svc, "/readyz", "klutch-health ready", |r| r.status == 200).await;
    let target = SocketAddr::new(NAMED_ADDRESS.parse().expect("an address"), svc.addr.port());
    let objects = json!([
        {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "klutch-health-0", "namespace": NAMESPACE, "labels": {"app": "klutch-health"}},
            "spec": {
                "serviceAccountName": "klutch-health", "automountServiceAccountToken": false,
                "containers": [{"name": "klutch-health", "image": "ghcr.io/klutch-health/klutch-health:0.1.0"}]
            }
        },
        {
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {
                "name": "klutch-health-loopback", "namespace": NAMESPACE,
                "labels": {"kubernetes.io/service-name": "klutch-health"}
            },
            "addressType": "IPv4",
            "endpoints": [{
                "addresses": [target.ip().to_string()],
                "conditions": {"ready": true},
                "targetRef": {"kind": "Pod", "name": "klutch-health-0", "namespace": NAMESPACE}
            }],
            "ports": [{"name": "http", "port": target.port(), "protocol": "TCP"}]
        },
        {
            "apiVersion": "monitoring.coreos.com/v1", "kind": "Prometheus",
            "metadata": {"name": PROMETHEUS, "namespace": NAMESPACE},
            "spec": {
                "version": "v3.5.0",
                "serviceDiscoveryRole": "EndpointSlice",
                "serviceMonitorSelector": {},
                "ruleSelector": {},
                "scrapeInterval": "1s",
                "evaluationInterval": "1s"
            }
        }
    ]);
    for object in objects.as_array().expect("objects") {
        estate
            .cp
            .kubectl(&["apply", "-f", "-"], Some(&object.to_string()))
            .await
            .unwrap_or_else(|e| panic!("apply {}: {e:#}", object["kind"]));
    }
    let monitoring = monitoring(&estate).await;
    estate
        .cp
        .kubectl(&["apply", "-f", "-"], Some(&monitoring))
        .await
        .expect("apply deploy/monitoring");

    // What the operator wrote: the configuration (gzipped in its Secret) and the rule files (its ConfigMap).
    let secret_path = format!("/api/v1/namespaces/{NAMESPACE}/secrets/prometheus-{PROMETHEUS}");
    let config_b64 = until(
        "the operator's configuration Secret with the ServiceMonitor's job",
        async || {
            if let Some(why) = operator.exited() {
                panic!("{why}");
            }
            let secret = get(&estate.admin, &secret_path).await?;
            let b64 = secret["data"]["prometheus.yaml.gz"].as_str()?.to_string();
            std::fs::write(dir.path().join("config.b64"), &b64).ok()?;
            let gz = run(Command::new("base64")
                .arg("-d")
                .arg(dir.path().join("config.b64")));
            std::fs::write(dir.path().join("config.gz"), gz).ok()?;
            let text = String::from_utf8(run(Command::new("gzip")
                .args(["-dc"])
                .arg(dir.path().join("config.gz"))))
            .ok()?;
            text.contains("serviceMonitor/crossplane-system/klutch-health/0")
                .then_some(text)
        },
    )
    .await;
    let rules_dir = dir.path().join("rules");
    std::fs::create_dir_all(&rules_dir).expect("rules dir");
    let cm_path =
        format!("/api/v1/namespaces/{NAMESPACE}/configmaps/prometheus-{PROMETHEUS}-rulefiles-0");
    let rule_files = until("the operator's rule files", async || {
        let cm = get(&estate.admin, &cm_path).await?;
        let data = cm["data"].as_object()?.clone();
        (!data.is_empty()).then_some(data)
    })
    .await;
    for (name, text) in &rule_files {
        std::fs::write(rules_dir.join(name), text.as_str().expect("rule file"))
            .expect("write rules");
    }

    // What the operator's config-reloader does in the Prometheus pod: expand $(SHARD) and $(POD_NAME) (the
    // one shard, the pod), refusing any other variable. Then what running outside the cluster needs: the API
    // server's address and credentials for discovery, the rules' local path.
    let expanded = config_b64
        .replace("$(SHARD)", "0")
        .replace("$(POD_NAME)", "prometheus-klutch-0");
    assert!(
        !expanded.contains("$("),
        "a variable of the config-reloader the test does not expand:\n{expanded}"
    );
    let mut config: Value =
        serde_yaml_ng::from_str(&expanded).expect("the operator's config is YAML");
    let mut sd = 0;
    for job in config["scrape_configs"]
        .as_array_mut()
        .expect("scrape_configs")
    {
        for k in job["kubernetes_sd_configs"]
            .as_array_mut()
            .into_iter()
            .flatten()
        {
            k["kubeconfig_file"] = admin_kubeconfig.display().to_string().into();
            sd += 1;
        }
        // After everything the operator wrote: the named address is loopback's (see NAMED_ADDRESS).
        if let Some(steps) = job["relabel_configs"].as_array_mut() {
            steps.push(json!({
                "source_labels": ["__address__"],
                "regex": format!("{}:(\\d+)", NAMED_ADDRESS.replace('.', "\\.")),
                "target_label": "__address__",
                "replacement": "127.0.0.1:$1",
                "action": "replace",
            }));
        }
    }
    assert!(
        sd > 0,
        "no kubernetes_sd_configs in the operator's config:\n{config_b64}"
    );
    assert_eq!(
        config["rule_files"].as_array().map(Vec::len),
        Some(1),
        "{config_b64}"
    );
    config["rule_files"] = json!([format!("{}/*.yaml", rules_dir.display())]);
    let config_file = dir.path().join("prometheus.yaml");
    std::fs::write(
        &config_file,
        serde_yaml_ng::to_string(&config).expect("YAML"),
    )
    .expect("config");
    let promtool = prometheus_program("promtool");
    run(Command::new(&promtool)
        .arg("check")
        .arg("config")
        .arg(&config_file));

    let prom = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let mut prometheus = Program::start(
        &prometheus_program("prometheus"),
        &[
            format!("--config.file={}", config_file.display()),
            format!("--storage.tsdb.path={}", dir.path().join("data").display()),
            format!("--web.listen-address={prom}"),
        ],
        dir.path(),
    );

    // Every series carries control_plane, namespace and pod, and klutch-health's own endpoint label.
    let up = prometheus
        .wait_until(
            "klutch-health scraped through the operator's job",
            async || {
                query(prom, "klutch_health_endpoint_up{endpoint=\"readyz\"}")
                    .await
                    .filter(|r| !r.is_empty())
            },
        )
        .await;
    let labels = &up[0]["metric"];
    assert_eq!(labels["control_plane"], "default", "{labels}");
    assert_eq!(labels["namespace"], NAMESPACE, "{labels}");
    assert_eq!(labels["pod"], "klutch-health-0", "{labels}");
    for (what, expr) in [
        (
            "series without control_plane",
            "count({__name__=~\"klutch_health_.*\", control_plane=\"\"})",
        ),
        (
            "series with exported_endpoint",
            "count({__name__=~\"klutch_health_.*\", exported_endpoint!=\"\"})",
        ),
    ] {
        assert_eq!(
            query(prom, expr).await.expect(what),
            Vec::<Value>::new(),
            "{what}"
        );
    }
    // The recording rules evaluate.
    for record in [
        "klutch_health:slo_objective:ratio",
        "control_plane:klutch_health_available:max",
    ] {
        prometheus
            .wait_until(record, async || {
                query(prom, record).await.filter(|r| !r.is_empty())
            })
            .await;
    }

    // A broken estate: both alerts fire, the item alert once, for the root cause.
    estate
        .sim
        .degrade_provider_config(PC, "backup manager unreachable");
    estate.mirror.caught_up().await.expect("mirrored");
    wait_for(&svc, "/readyz", "the degraded ProviderConfig", |r| {
        r.status == 503
    })
    .await;
    let not_ready = prometheus
        .wait_until("KlutchControlPlaneNotReady firing", async || {
            firing(prom, "KlutchControlPlaneNotReady")
                .await
                .filter(|a| !a.is_empty())
        })
        .await;
    assert_eq!(not_ready.len(), 1, "{not_ready:?}");
    assert_eq!(not_ready[0]["pod"], "klutch-health-0");
    let down = prometheus
        .wait_until("KlutchHealthItemDown firing", async || {
            firing(prom, "KlutchHealthItemDown")
                .await
                .filter(|a| !a.is_empty())
        })
        .await;
    assert_eq!(down.len(), 1, "one alert, for the root cause: {down:?}");
    assert_eq!(down[0]["check"], "provider-configs", "{down:?}");
    assert_eq!(down[0]["item"], PC, "{down:?}");
    assert_eq!(down[0]["control_plane"], "default", "{down:?}");

    // Healed: both resolve.
    estate.sim.heal_provider_config(PC);
    estate.mirror.caught_up().await.expect("mirrored");
    for alert in ["KlutchControlPlaneNotReady", "KlutchHealthItemDown"] {
        prometheus
            .wait_until(&format!("{alert} resolved"), async || {
                firing(prom, alert).await.filter(Vec::is_empty)
            })
            .await;
    }
    drop(prometheus);
    drop(operator);
}
