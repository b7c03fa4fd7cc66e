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
//! and resolve when it heals; the recording rules evaluate. With two control planes named as the docs say
//! (deploy/monitoring's `default` and deploy/fleet-example's `prod-eu-1`), every query of every panel of the
//! committed Grafana dashboard returns series for both from that one Prometheus.
//!
//! Two edits, both for time only: the ServiceMonitor scrapes every second instead of every 30, and every
//! rule's `for:` is two seconds. The configuration gets what the operator's config-reloader does in the pod
//! (`$(SHARD)`, `$(POD_NAME)` expanded) and the one thing a Prometheus outside the cluster needs, the API
//! server's address and credentials, added to each `kubernetes_sd_configs` entry as a `kubeconfig_file`; and
//! the address rewrite above, after the operator's own relabeling.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

use klutch_realcp::{Process, KLUTCH_HEALTH};
use klutch_sim::SimControlPlane;
use serde_json::{json, Value};

use crate::common::{shipped_config, Service};
use crate::dashboard;
use crate::estate::{get, short, until, wait_for, Estate, DEADLINE, HEARTBEAT, NAMESPACE};
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

/// What `kubectl kustomize DIR` renders, each object as JSON, for the test's Prometheus: every ServiceMonitor
/// scraping every second and every rule's `for:` at [`RULE_FOR`].
async fn rendered(estate: &Estate, dir: &str) -> Vec<Value> {
    let rendered = estate
        .cp
        .kubectl(&["kustomize", dir], None)
        .await
        .unwrap_or_else(|e| panic!("kubectl kustomize {dir}: {e:#}"));
    let mut objects = Vec::new();
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
        objects.push(obj);
    }
    objects
}

/// Applies each of `objects` as admin.
async fn apply(estate: &Estate, objects: &[Value]) {
    for object in objects {
        estate
            .cp
            .kubectl(&["apply", "-f", "-"], Some(&object.to_string()))
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "apply {} {}: {e:#}",
                    object["kind"], object["metadata"]["name"]
                )
            });
    }
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
    klutch_realcp::prometheus()
        .unwrap_or_else(|e| panic!("no Prometheus: {e}"))
        .with_file_name(name)
}

/// The operator's own CRDs beyond the vendored monitors and rules (Prometheus, and Probe: it watches them)
/// installed, and the operator started against the control plane as admin, watching `namespaces`; killed
/// with the test.
async fn start_operator(estate: &Estate, namespaces: &[&str], dir: &Path) -> Process {
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
        .crds_established()
        .await
        .expect("CRDs established");
    let operator = klutch_realcp::prometheus_operator()
        .unwrap_or_else(|e| panic!("no Prometheus Operator: {e}"));
    let mut cmd = Command::new(operator);
    cmd.env("KUBECONFIG", estate.cp.admin_kubeconfig()).args([
        format!("--web.listen-address=127.0.0.1:{}", free_port()),
        format!("--namespaces={}", namespaces.join(",")),
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

/// A Pod object `klutch-health-0` and an EndpointSlice of the Service `klutch-health` in `namespace` naming
/// the klutch-health listening on loopback port `port`, as the kubelet and the endpointslice controller would
/// write them.
fn named_pod(namespace: &str, port: u16) -> [Value; 2] {
    [
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "klutch-health-0", "namespace": namespace, "labels": {"app": "klutch-health"}},
            "spec": {
                "serviceAccountName": "klutch-health", "automountServiceAccountToken": false,
                "containers": [{"name": "klutch-health", "image": "ghcr.io/klutch-health/klutch-health:0.1.0"}]
            }
        }),
        json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {
                "name": "klutch-health-loopback", "namespace": namespace,
                "labels": {"kubernetes.io/service-name": "klutch-health"}
            },
            "addressType": "IPv4",
            "endpoints": [{
                "addresses": [NAMED_ADDRESS],
                "conditions": {"ready": true},
                "targetRef": {"kind": "Pod", "name": "klutch-health-0", "namespace": namespace}
            }],
            "ports": [{"name": "http", "port": port, "protocol": "TCP"}]
        }),
    ]
}

/// The `Prometheus` object the operator configures: every ServiceMonitor and rule of the namespaces the
/// operator watches.
fn prometheus_object() -> Value {
    json!({
        "apiVersion": "monitoring.coreos.com/v1", "kind": "Prometheus",
        "metadata": {"name": PROMETHEUS, "namespace": NAMESPACE},
        "spec": {
            "version": "v3.5.0",
            "serviceDiscoveryRole": "EndpointSlice",
            "serviceMonitorSelector": {},
            "serviceMonitorNamespaceSelector": {},
            "ruleSelector": {},
            "scrapeInterval": "1s",
            "evaluationInterval": "1s"
        }
    })
}

/// The operator's scrape job for the ServiceMonitor `klutch-health` of `namespace`.
fn job(namespace: &str) -> String {
    format!("serviceMonitor/{namespace}/klutch-health/0")
}

/// The real Prometheus running what the operator wrote for [`PROMETHEUS`] once its configuration has each
/// of `jobs`: the configuration (gzipped in its Secret) and the rule files (its ConfigMap), made to run
/// outside the cluster as the module's doc says, accepted by `promtool`. On a loopback port of its own.
async fn operator_prometheus(
    estate: &Estate,
    operator: &mut Process,
    dir: &Path,
    jobs: &[String],
) -> (Program, SocketAddr) {
    let secret_path = format!("/api/v1/namespaces/{NAMESPACE}/secrets/prometheus-{PROMETHEUS}");
    let config_b64 = until(
        &format!("the operator's configuration Secret with the jobs {jobs:?}"),
        async || {
            if let Some(why) = operator.exited() {
                panic!("{why}");
            }
            let secret = get(&estate.admin, &secret_path).await?;
            let b64 = secret["data"]["prometheus.yaml.gz"].as_str()?.to_string();
            std::fs::write(dir.join("config.b64"), &b64).ok()?;
            let gz = run(Command::new("base64").arg("-d").arg(dir.join("config.b64")));
            std::fs::write(dir.join("config.gz"), gz).ok()?;
            let text = String::from_utf8(run(Command::new("gzip")
                .args(["-dc"])
                .arg(dir.join("config.gz"))))
            .ok()?;
            jobs.iter()
                .all(|j| text.contains(j.as_str()))
                .then_some(text)
        },
    )
    .await;
    let rules_dir = dir.join("rules");
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
    let admin_kubeconfig = estate.cp.admin_kubeconfig();
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
    let config_file = dir.join("prometheus.yaml");
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
    let prometheus = Program::start(
        &prometheus_program("prometheus"),
        &[
            format!("--config.file={}", config_file.display()),
            format!("--storage.tsdb.path={}", dir.join("data").display()),
            format!("--web.listen-address={prom}"),
        ],
        dir,
    );
    (prometheus, prom)
}

#[tokio::test]
async fn the_operator_makes_the_shipped_monitoring_work_alerts_fire_and_resolve() {
    let mut estate = Estate::own().await;
    let dir = tempfile::tempdir().expect("dir");
    let mut operator = start_operator(&estate, &[NAMESPACE], dir.path()).await;

    // klutch-health on loopback as its ServiceAccount; a Pod object and an EndpointSlice of the Service
    // klutch-health name it, as the kubelet and the endpointslice controller would.
    let svc = estate
        .klutch_health(KLUTCH_HEALTH, "klutch-health-0", None, short)
        .await;
    wait_for(&svc, "/readyz", "klutch-health ready", |r| r.status == 200).await;
    let mut objects = named_pod(NAMESPACE, svc.addr.port()).to_vec();
    objects.push(prometheus_object());
    apply(&estate, &objects).await;
    apply(&estate, &rendered(&estate, "deploy/monitoring").await).await;
    let (mut prometheus, prom) =
        operator_prometheus(&estate, &mut operator, dir.path(), &[job(NAMESPACE)]).await;

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

/// The namespace of the second control plane's klutch-health in the one API server the operator watches (in
/// a fleet each control plane is a cluster of its own; here both are namespaces of one, so that one
/// operator-run Prometheus discovers both).
const SECOND_NAMESPACE: &str = "second-control-plane";

/// The dashboard's panels that show nothing for a healthy control plane, by design: the items not passing
/// lists only items that warn, fail or are unknown. The second control plane is broken so that they show
/// it, and the healthy first one must be absent from them (a healthy control plane listed there would be a
/// wrong panel). Every other query shows both control planes.
const ONLY_THE_BROKEN: [&str; 1] = ["Items not passing"];

/// The `control_plane` a rendered ServiceMonitor sets (its first relabeling, which deploy/fleet-example
/// patches).
fn control_plane_of(service_monitor: &Value) -> String {
    let first = &service_monitor["spec"]["endpoints"][0]["relabelings"][0];
    assert_eq!(first["targetLabel"], "control_plane", "{service_monitor}");
    first["replacement"]
        .as_str()
        .expect("a control_plane name")
        .to_string()
}

/// The `control_plane` of each series of `result`, and its value.
fn by_control_plane(result: &[Value]) -> Vec<(String, f64)> {
    result
        .iter()
        .map(|s| {
            (
                s["metric"]["control_plane"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                s["value"][1]
                    .as_str()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(f64::NAN),
            )
        })
        .collect()
}

/// Two control planes, as the docs name them, scraped by the one operator-run Prometheus: the first is the
/// real API server's estate with deploy/monitoring as shipped (`control_plane="default"`), the second a
/// simulated estate of its own (klutch-sim's API server and provider-anynines, broken: a ProviderConfig
/// fails) whose ServiceMonitor is deploy/fleet-example's (`prod-eu-1`), moved into its own namespace. Every
/// query of every panel of the committed dashboard, Grafana's variables filled in (both control planes
/// selected), returns series through `/api/v1/query` for both control planes (the panels of
/// [`ONLY_THE_BROKEN`] for the broken one only), and the fleet's verdict and root causes tell them apart.
#[tokio::test]
async fn every_dashboard_query_shows_two_control_planes_through_the_operator() {
    let mut estate = Estate::own().await;
    let dir = tempfile::tempdir().expect("dir");
    let mut operator = start_operator(&estate, &[NAMESPACE, SECOND_NAMESPACE], dir.path()).await;

    // The first control plane: healthy, on the real API server.
    let first = estate
        .klutch_health(KLUTCH_HEALTH, "klutch-health-0", None, short)
        .await;
    wait_for(&first, "/readyz", "the first klutch-health ready", |r| {
        r.status == 200
    })
    .await;
    // The second: a simulated control plane of its own, one ProviderConfig failing from the start.
    let sim = SimControlPlane::start()
        .await
        .expect("the second simulator");
    sim.seed_estate(HEARTBEAT);
    sim.degrade_provider_config(PC, "backup manager unreachable");
    let second = Service::against(
        &sim,
        &shipped_config("config.toml", &sim.backend.url(), ""),
        &[
            ("POD_NAME", "klutch-health-0"),
            ("POD_NAMESPACE", NAMESPACE),
        ],
    )
    .await;
    wait_for(
        &second,
        "/readyz?verbose",
        "the second klutch-health failing on its ProviderConfig",
        |r| r.status == 503 && r.body.contains(PC),
    )
    .await;

    // The second control plane's namespace holds what deploy/ installs for the scrape (the ServiceAccount and
    // the Service the ServiceMonitor selects), its Pod and EndpointSlice, and deploy/fleet-example's
    // ServiceMonitor. The rules are deploy/monitoring's, once: one Prometheus evaluates them for both.
    let mut objects = vec![json!({
        "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": SECOND_NAMESPACE}
    })];
    for mut object in rendered(&estate, "deploy").await {
        let kind = object["kind"].as_str().unwrap_or_default();
        if ["ServiceAccount", "Service"].contains(&kind)
            && object["metadata"]["name"] == "klutch-health"
        {
            object["metadata"]["namespace"] = SECOND_NAMESPACE.into();
            objects.push(object);
        }
    }
    assert_eq!(
        objects.len(),
        3,
        "deploy/'s Service and ServiceAccount: {objects:?}"
    );
    objects.extend(named_pod(NAMESPACE, first.addr.port()));
    objects.extend(named_pod(SECOND_NAMESPACE, second.addr.port()));
    objects.push(prometheus_object());
    apply(&estate, &objects).await;
    let monitoring = rendered(&estate, "deploy/monitoring").await;
    let mut fleet_example: Vec<Value> = rendered(&estate, "deploy/fleet-example")
        .await
        .into_iter()
        .filter(|o| o["kind"] == "ServiceMonitor")
        .collect();
    assert_eq!(fleet_example.len(), 1, "{fleet_example:?}");
    let second_monitor = &mut fleet_example[0];
    second_monitor["metadata"]["namespace"] = SECOND_NAMESPACE.into();
    second_monitor["spec"]["namespaceSelector"]["matchNames"] = json!([SECOND_NAMESPACE]);
    let first_monitor = monitoring
        .iter()
        .find(|o| o["kind"] == "ServiceMonitor")
        .expect("deploy/monitoring's ServiceMonitor");
    let names = [
        control_plane_of(first_monitor),
        control_plane_of(second_monitor),
    ];
    assert_ne!(names[0], names[1], "two control planes, two names");
    let (healthy, broken) = (names[0].as_str(), names[1].as_str());
    apply(&estate, &monitoring).await;
    apply(&estate, &fleet_example).await;
    let (mut prometheus, prom) = operator_prometheus(
        &estate,
        &mut operator,
        dir.path(),
        &[job(NAMESPACE), job(SECOND_NAMESPACE)],
    )
    .await;

    // Every query of every panel, until each shows what it should (the rules need a few evaluations, the
    // rates a few scrapes), within the deadline.
    let panels = dashboard::panels(&dashboard::dashboard());
    for title in ONLY_THE_BROKEN {
        assert!(
            panels.iter().any(|p| p.title == title),
            "no panel {title:?} in the dashboard"
        );
    }
    let queries: Vec<(&str, String, BTreeSet<&str>)> = panels
        .iter()
        .flat_map(|p| {
            let shows: BTreeSet<&str> = if ONLY_THE_BROKEN.contains(&p.title.as_str()) {
                [broken].into()
            } else {
                [healthy, broken].into()
            };
            p.queries.iter().map(move |q| {
                (
                    p.title.as_str(),
                    dashboard::substitute(&q.expr, &[healthy, broken]),
                    shows.clone(),
                )
            })
        })
        .collect();
    assert!(queries.len() >= panels.len(), "{panels:?}");
    let start = std::time::Instant::now();
    loop {
        prometheus.assert_running();
        let mut wrong = Vec::new();
        for (title, expr, shows) in &queries {
            let result = query(prom, expr).await;
            let shown: Option<BTreeSet<String>> = result
                .as_ref()
                .map(|r| by_control_plane(r).into_iter().map(|(cp, _)| cp).collect());
            let want: BTreeSet<String> = shows.iter().map(|s| s.to_string()).collect();
            if shown.as_ref() != Some(&want) {
                wrong.push(format!(
                    "{title}: {expr}\n  shows {shown:?}, should show {want:?}: {result:?}"
                ));
            }
        }
        if wrong.is_empty() {
            break;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "{} of {} dashboard queries wrong after {DEADLINE:?}:\n{}",
            wrong.len(),
            queries.len(),
            wrong.join("\n")
        );
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }

    // The fleet row tells them apart: one ready without root causes, one not ready with its ProviderConfig.
    let now = async |title: &str| {
        let (_, expr, _) = queries
            .iter()
            .find(|(t, _, _)| *t == title)
            .unwrap_or_else(|| panic!("no panel {title:?}"));
        let result = query(prom, expr).await.expect(title);
        by_control_plane(&result)
            .into_iter()
            .collect::<BTreeMap<String, f64>>()
    };
    let verdict = now("Verdict").await;
    assert_eq!(
        verdict,
        BTreeMap::from([(healthy.to_string(), 1.0), (broken.to_string(), 0.0)]),
        "the verdict: 1 ready, 0 not ready"
    );
    let root_causes = now("Root causes").await;
    assert_eq!(root_causes[healthy], 0.0, "{root_causes:?}");
    assert!(root_causes[broken] >= 1.0, "{root_causes:?}");
    eprintln!(
        "DASHBOARD {} queries of {} panels answered for {healthy} and {broken} through the operator",
        queries.len(),
        panels.len()
    );
    drop(prometheus);
    drop(operator);
}
