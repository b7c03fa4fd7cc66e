//! The control plane's service level and a fleet in one view: the shipped
//! alerts and SLO rules under `promtool test rules` (tests/full/service_level/*.yaml), every rule kept apart by
//! `control_plane` and `namespace`, the monitors' `control_plane` label, the Grafana dashboard as its
//! generator builds it, and a real Prometheus scraping two simulated control planes — one of them broken —
//! through the shipped ServiceMonitor's relabeling, where every panel's query returns data and the fleet
//! panels tell the two apart. That test draws the panels' data as a PNG and prints its path.

use crate::consumers::{drill, programs, prometheus};
use crate::kustomize;

mod dashboard;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use dashboard::{dashboard, panels, substitute, DashboardPanel, PanelQuery, DASHBOARD, GENERATOR};
use drill::Rig;
use kustomize::{render, ROOT};
use programs::{binary, encode};
use serde_json::{json, Value};

/// The runbook, where every alert's `runbook_url` points (at the section of that alert).
const RUNBOOK: &str = "docs/operators/alerts.md";
const RUNBOOK_URL: &str =
    "https://github.com/klutch-health/klutch-health/blob/main/docs/operators/alerts.md";

fn python_with(modules: &str) -> Command {
    let probe = Command::new("python3")
        .args(["-c", &format!("import {modules}")])
        .output();
    assert!(
        probe.as_ref().is_ok_and(|o| o.status.success()),
        "python3 cannot import {modules}: python3 -m pip install -r deploy/monitoring/grafana/requirements.txt \
         -r tests/full/service_level/requirements.txt (.ci/run does it): {probe:?}"
    );
    Command::new("python3")
}

// ---- promtool ---------------------------------------------------------------------------------------------

/// Runs `promtool ARGS` in a directory holding the shipped rules as `rules.yaml` and the unit tests of
/// tests/full/service_level/; returns its output, failing with it.
fn promtool(args: &[&str]) -> String {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(
        dir.path().join("rules.yaml"),
        prometheus::shipped_rules(None).0,
    )
    .expect("rules.yaml");
    for entry in std::fs::read_dir(format!("{ROOT}/tests/full/service_level"))
        .expect("tests/full/service_level")
    {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "yaml") {
            std::fs::copy(&path, dir.path().join(path.file_name().expect("name"))).expect("copy");
        }
    }
    let out = Command::new(binary("promtool", "prometheus"))
        .args(args)
        .current_dir(dir.path())
        .output()
        .expect("run promtool");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "promtool {args:?}:\n{text}");
    text
}

#[test]
fn the_shipped_rules_are_valid() {
    let out = promtool(&["check", "rules", "rules.yaml"]);
    let (_, count) = prometheus::shipped_rules(None);
    assert!(
        out.contains(&format!("SUCCESS: {count} rules found")),
        "{out}"
    );
}

#[test]
fn each_alert_fires_for_its_own_control_plane_and_stays_quiet_otherwise() {
    promtool(&["test", "rules", "alerts.yaml"]);
}

#[test]
fn availability_leaves_maintenance_out_and_burn_rates_page_and_ticket_as_the_workbook_says() {
    promtool(&["test", "rules", "slo.yaml", "slo_30s.yaml"]);
}

// ---- what every rule must say -----------------------------------------------------------------------------

/// PromQL's aggregation operators: each one in a shipped rule must keep `control_plane` and `namespace`.
const AGGREGATIONS: [&str; 7] = ["sum", "min", "max", "avg", "count", "stddev", "group"];

/// Why `expr` could let one control plane hide another: an aggregation without `by (…control_plane,
/// namespace…)`, or a vector match `on (…)` without both.
fn mixing(expr: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let is_word = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut words = Vec::new();
    let mut start = None;
    for (i, c) in expr.char_indices().chain([(expr.len(), ' ')]) {
        match (is_word(c), start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                words.push((s, &expr[s..i]));
                start = None;
            }
            _ => {}
        }
    }
    for (at, word) in words {
        let rest = expr[at + word.len()..].trim_start();
        let grouping = |rest: &str| -> Option<BTreeSet<String>> {
            let list = rest.strip_prefix('(')?.split(')').next()?;
            Some(list.split(',').map(|l| l.trim().to_string()).collect())
        };
        let keeps = |labels: &BTreeSet<String>| {
            labels.contains("control_plane") && labels.contains("namespace")
        };
        if AGGREGATIONS.contains(&word) {
            match rest.strip_prefix("by") {
                Some(list) if grouping(list.trim_start()).is_some_and(|l| keeps(&l)) => {}
                _ => problems.push(format!(
                    "`{word}` at {at} does not keep control_plane and namespace"
                )),
            }
        }
        if word == "on" && !grouping(rest).is_some_and(|l| keeps(&l)) {
            problems.push(format!(
                "`on` at {at} does not match on control_plane and namespace"
            ));
        }
    }
    problems
}

/// The anchors GitHub gives the runbook's headings.
fn runbook_anchors() -> BTreeSet<String> {
    let runbook = std::fs::read_to_string(format!("{ROOT}/{RUNBOOK}")).expect(RUNBOOK);
    runbook
        .lines()
        .filter_map(|l| l.strip_prefix('#'))
        .map(|h| h.trim_start_matches('#').trim())
        .map(|h| {
            h.to_lowercase()
                .chars()
                .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
                .map(|c| if c == ' ' { '-' } else { c })
                .collect()
        })
        .collect()
}

#[test]
fn every_rule_keeps_control_planes_apart_and_every_alert_has_a_runbook() {
    // The check itself sees a rule that groups by namespace only, the mistake that blinds a fleet.
    assert_eq!(
        mixing("min by (namespace, pod) (x) unless on (namespace) max by (namespace) (x)").len(),
        3
    );
    assert_eq!(mixing("sum(rate(x[5m]))").len(), 1);
    assert!(mixing("max by (control_plane, namespace) (max_over_time(x[1d]))").is_empty());

    let (text, _) = prometheus::shipped_rules(None);
    let doc: Value = serde_yaml_ng::from_str(&text).expect("rules");
    let anchors = runbook_anchors();
    let mut alerts = BTreeSet::new();
    for rule in doc["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|g| g["rules"].as_array().into_iter().flatten())
    {
        let name = rule["alert"]
            .as_str()
            .or(rule["record"].as_str())
            .expect("name");
        let expr = rule["expr"].as_str().expect("expr");
        let problems = mixing(expr);
        assert!(problems.is_empty(), "{name}: {problems:?} in\n{expr}");
        if rule.get("record").is_some() {
            continue;
        }
        alerts.insert(name.to_string());
        let severity = rule["labels"]["severity"].as_str();
        assert!(
            matches!(severity, Some("critical" | "warning")),
            "{name}: severity {severity:?}"
        );
        let runbook = rule["annotations"]["runbook_url"]
            .as_str()
            .unwrap_or_default();
        let anchor = runbook
            .strip_prefix(RUNBOOK_URL)
            .and_then(|a| a.strip_prefix('#'))
            .unwrap_or_else(|| panic!("{name}: runbook_url {runbook:?} is not into {RUNBOOK_URL}"));
        assert_eq!(
            anchor,
            name.to_lowercase(),
            "{name}: its own runbook section"
        );
        assert!(
            anchors.contains(anchor),
            "{name}: {RUNBOOK} has no heading #{anchor}"
        );
        assert!(
            rule["annotations"]["summary"].is_string(),
            "{name}: summary"
        );
    }
    assert!(
        alerts.contains("KlutchControlPlaneErrorBudgetBurn"),
        "{alerts:?}"
    );
    assert!(
        alerts.contains("KlutchControlPlaneErrorBudgetBurnSlow"),
        "{alerts:?}"
    );
}

// ---- the control_plane label ------------------------------------------------------------------------------

fn find<'a>(objects: &'a [Value], kind: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} rendered"))
}

fn service_monitor_relabelings(objects: &[Value]) -> Value {
    find(objects, "ServiceMonitor")["spec"]["endpoints"][0]["relabelings"].clone()
}

#[test]
fn the_monitors_label_every_series_with_a_control_plane_the_operator_chooses() {
    let monitoring = render("deploy/monitoring");
    let relabelings = service_monitor_relabelings(&monitoring);
    // First, so that the documented patch of relabelings/0 sets it.
    assert_eq!(
        relabelings[0],
        json!({"action": "replace", "targetLabel": "control_plane", "replacement": "default"})
    );
    // The PodMonitor gives the same labels.
    let pod_monitor = render("deploy/monitoring/podmonitor");
    assert_eq!(
        find(&pod_monitor, "PodMonitor")["spec"]["podMetricsEndpoints"][0]["relabelings"],
        relabelings
    );
    // The example of docs/operators/alerts.md ("One control plane or a fleet") names its control plane and sets its own
    // objective and runbook; nothing else differs.
    let example = render("deploy/fleet-example");
    let mut named = service_monitor_relabelings(&example);
    assert_eq!(named[0]["replacement"], "prod-eu-1");
    named[0]["replacement"] = "default".into();
    assert_eq!(named, relabelings);
    let rules = |objects: &[Value]| find(objects, "PrometheusRule")["spec"]["groups"].clone();
    let mut example_rules = rules(&example);
    let objective = &mut example_rules[1]["rules"][0];
    assert_eq!(objective["record"], "klutch_health:slo_objective:ratio");
    assert_eq!(objective["expr"], "vector(0.995)");
    objective["expr"] = "vector(0.999)".into();
    let fleet_runbook =
        "https://git.example.com/platform/klutch-health/-/blob/main/docs/operators/alerts.md#";
    for group in example_rules.as_array_mut().expect("groups") {
        for rule in group["rules"].as_array_mut().expect("rules") {
            if let Some(url) = rule["annotations"]["runbook_url"].as_str() {
                let anchor = url
                    .strip_prefix(fleet_runbook)
                    .unwrap_or_else(|| panic!("the example's runbook_url {url}"));
                rule["annotations"]["runbook_url"] = format!("{RUNBOOK_URL}#{anchor}").into();
            }
        }
    }
    assert_eq!(example_rules, rules(&monitoring));
}

// ---- the dashboard ----------------------------------------------------------------------------------------

#[test]
fn the_committed_dashboard_is_what_its_generator_builds() {
    let out = python_with("grafana_foundation_sdk")
        .args([&format!("{ROOT}/{GENERATOR}"), "--stdout"])
        .output()
        .expect("run the generator");
    assert!(
        out.status.success(),
        "{GENERATOR}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let committed = std::fs::read_to_string(format!("{ROOT}/{DASHBOARD}")).expect(DASHBOARD);
    assert!(
        String::from_utf8_lossy(&out.stdout) == committed,
        "{DASHBOARD} is not what {GENERATOR} builds: run `python3 {GENERATOR}` and commit the result"
    );
    // The ConfigMap the Grafana sidecar discovers carries exactly that JSON.
    let objects = render("deploy/monitoring/grafana");
    let config_map = find(&objects, "ConfigMap");
    assert_eq!(config_map["metadata"]["labels"]["grafana_dashboard"], "1");
    assert_eq!(config_map["metadata"]["name"], "klutch-health-dashboard");
    assert_eq!(config_map["data"]["klutch-health.json"], committed.as_str());
    // Every panel asks something of the chosen control planes, and the variable offers them.
    let board = dashboard();
    for panel in panels(&board) {
        assert!(!panel.queries.is_empty(), "{}: no query", panel.title);
        for q in &panel.queries {
            assert!(
                q.expr.contains("$control_plane"),
                "{}: {}",
                panel.title,
                q.expr
            );
        }
    }
    let variables = board["templating"]["list"].as_array().expect("variables");
    let cp = variables
        .iter()
        .find(|v| v["name"] == "control_plane")
        .expect("a control_plane variable");
    assert_eq!(cp["multi"], true);
    assert_eq!(cp["includeAll"], true);
}

// ---- two control planes, one Prometheus ---------------------------------------------------------------------

/// The simulated control planes' names, as each one's ServiceMonitor would be patched to set them.
const FLEET: [&str; 2] = ["cp-a", "cp-b"];

/// `for:` of every shipped rule in the test's Prometheus.
const RULE_FOR: &str = "3s";

/// A prometheus-operator `RelabelConfig`'s fields and their names in Prometheus' `relabel_config`, as the
/// operator writes them (generateRelabelConfig in pkg/prometheus/promcfg.go, which also lowercases `action`).
const RELABEL_FIELDS: [(&str, &str); 7] = [
    ("sourceLabels", "source_labels"),
    ("separator", "separator"),
    ("targetLabel", "target_label"),
    ("regex", "regex"),
    ("modulus", "modulus"),
    ("replacement", "replacement"),
    ("action", "action"),
];

/// One ServiceMonitor relabeling as the Prometheus Operator writes it into the scrape configuration.
fn relabel_config(relabeling: &Value) -> Value {
    let mut out = serde_json::Map::new();
    for (field, value) in relabeling.as_object().expect("a relabeling") {
        let (_, name) = RELABEL_FIELDS
            .iter()
            .find(|(f, _)| f == field)
            .unwrap_or_else(|| panic!("relabeling field {field} is not translated"));
        let value = match *name {
            "action" => value.as_str().expect("action").to_lowercase().into(),
            _ => value.clone(),
        };
        out.insert(name.to_string(), value);
    }
    Value::Object(out)
}

/// The scrape job the Prometheus Operator makes of the shipped ServiceMonitor in control plane `name`, whose
/// klutch-health listens on `target`: Kubernetes discovery becomes a static target with the discovery's meta
/// labels; the operator's own relabelings (namespace, service, pod, container, job, endpoint: promcfg.go's
/// generateServiceMonitorConfig) come first, then the ServiceMonitor's, with `control_plane` set to `name` as
/// deploy/fleet-example patches it. Only the interval is shortened.
fn scrape_job(service_monitor: &Value, name: &str, target: SocketAddr) -> Value {
    let namespace = &service_monitor["spec"]["namespaceSelector"]["matchNames"][0];
    let endpoint = &service_monitor["spec"]["endpoints"][0];
    let mut relabelings = endpoint["relabelings"].clone();
    assert_eq!(relabelings[0]["targetLabel"], "control_plane");
    relabelings[0]["replacement"] = name.into();
    let mut relabel_configs = vec![
        json!({"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"}),
        json!({"source_labels": ["__meta_kubernetes_service_name"], "target_label": "service"}),
        json!({"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"}),
        json!({"source_labels": ["__meta_kubernetes_pod_container_name"], "target_label": "container"}),
        json!({"source_labels": ["__meta_kubernetes_service_name"], "target_label": "job"}),
        json!({"target_label": "endpoint", "replacement": endpoint["port"]}),
    ];
    relabel_configs.extend(
        relabelings
            .as_array()
            .expect("relabelings")
            .iter()
            .map(relabel_config),
    );
    json!({
        // Unique per control plane in this one Prometheus; the `job` label comes from the relabelings.
        "job_name": format!("serviceMonitor/{}/klutch-health/0/{name}", namespace.as_str().unwrap_or_default()),
        "metrics_path": endpoint["path"],
        "scrape_interval": "1s",
        "scrape_timeout": "1s",
        "static_configs": [{
            "targets": [target.to_string()],
            "labels": {
                "__meta_kubernetes_namespace": namespace,
                "__meta_kubernetes_service_name": "klutch-health",
                "__meta_kubernetes_pod_name": format!("klutch-health-{name}-0"),
                "__meta_kubernetes_pod_container_name": "klutch-health",
            },
        }],
        "relabel_configs": relabel_configs,
    })
}

#[test]
fn the_translation_covers_every_relabeling_field_the_crd_allows() {
    let text = std::fs::read_to_string(format!(
        "{ROOT}/crds/monitoring.coreos.com_servicemonitors.yaml"
    ))
    .expect("vendored ServiceMonitor CRD");
    let crd: Value = serde_yaml_ng::from_str(&text).expect("CRD");
    let fields: BTreeSet<&str> = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        ["properties"]["spec"]["properties"]["endpoints"]["items"]["properties"]["relabelings"]
        ["items"]["properties"]
        .as_object()
        .expect("RelabelConfig properties")
        .keys()
        .map(String::as_str)
        .collect();
    let translated: BTreeSet<&str> = RELABEL_FIELDS.iter().map(|(f, _)| *f).collect();
    assert_eq!(fields, translated);
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64()
}

/// The latest alerts (pending or firing) as (name, control plane, state).
async fn alerts(prom: SocketAddr) -> BTreeSet<(String, String, String)> {
    let data = prometheus::api(prom, "/api/v1/alerts")
        .await
        .unwrap_or_default();
    data["alerts"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| {
            let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
            (
                text(&a["labels"]["alertname"]),
                text(&a["labels"]["control_plane"]),
                text(&a["state"]),
            )
        })
        .collect()
}

/// `{{label}}` of a legend filled in from a series' labels; every label when the legend is empty (a table).
fn legend(format: &str, labels: &Value) -> String {
    let labels = labels.as_object().cloned().unwrap_or_default();
    if format.is_empty() {
        return labels
            .iter()
            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
            .collect::<Vec<_>>()
            .join(" ");
    }
    labels.iter().fold(format.to_string(), |text, (k, v)| {
        text.replace(&format!("{{{{{k}}}}}"), v.as_str().unwrap_or_default())
    })
}

/// One series a panel shows: its legend, its control plane, its points (one for an instant query).
#[derive(Debug)]
struct Shown {
    name: String,
    control_plane: String,
    points: Vec<(f64, f64)>,
}

/// What `q` returns from Prometheus with the test's variables: a range query over `start..end`, or an
/// instant query at `end`.
async fn run(prom: SocketAddr, q: &PanelQuery, start: f64, end: f64) -> Vec<Shown> {
    let expr = substitute(&q.expr, &FLEET);
    let path = if q.instant {
        format!("/api/v1/query?query={}&time={end}", encode(&expr))
    } else {
        format!(
            "/api/v1/query_range?query={}&start={start}&end={end}&step=1",
            encode(&expr)
        )
    };
    let data = prometheus::api(prom, &path)
        .await
        .unwrap_or_else(|| panic!("Prometheus refused {expr}"));
    let number = |v: &Value| -> (f64, f64) {
        let t = v[0].as_f64().unwrap_or_default();
        let x = v[1]
            .as_str()
            .and_then(|s| s.parse().ok())
            .unwrap_or(f64::NAN);
        (t, x)
    };
    data["result"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| Shown {
            name: legend(&q.legend, &s["metric"]),
            control_plane: s["metric"]["control_plane"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            points: match s.get("values") {
                Some(values) => values
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(number)
                    .collect(),
                None => vec![number(&s["value"])],
            },
        })
        .collect()
}

/// The panels' data as render.py reads it.
fn picture_data(shown: &[(&DashboardPanel, Vec<Shown>)]) -> Value {
    let panels: Vec<Value> = shown
        .iter()
        .map(|(p, series)| {
            json!({
                "row": p.row, "title": p.title, "kind": p.kind, "unit": p.unit, "mappings": p.mappings,
                "series": series.iter().map(|s| json!({
                    "name": s.name,
                    "points": s.points.iter().map(|(t, v)| json!([t, if v.is_finite() { *v } else { 0.0 }]))
                        .collect::<Vec<_>>(),
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({"title": "Klutch control planes: cp-a healthy, cp-b broken (tests/full/service_level.rs)", "panels": panels})
}

/// Draws the panels' data with tests/full/service_level/render.py; returns the PNG's path.
fn draw(data: &Value) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("service_level");
    std::fs::create_dir_all(&dir).expect("picture dir");
    let (json_path, png) = (
        dir.join("fleet-dashboard.json"),
        dir.join("fleet-dashboard.png"),
    );
    std::fs::write(&json_path, data.to_string()).expect("panel data");
    let _ = std::fs::remove_file(&png);
    let out = python_with("matplotlib")
        .arg(format!("{ROOT}/tests/full/service_level/render.py"))
        .args([&json_path, &png])
        .output()
        .expect("run render.py");
    assert!(
        out.status.success(),
        "render.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        std::fs::metadata(&png).is_ok_and(|m| m.len() > 10_000),
        "no picture at {png:?}"
    );
    png
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_shows_two_control_planes_apart_on_every_panel() {
    let (a, b) = (Rig::start().await, Rig::start().await);
    let service_monitor = find(&render("deploy/monitoring"), "ServiceMonitor").clone();
    let dir = tempfile::tempdir().expect("temp dir");
    let scrape = json!([
        scrape_job(&service_monitor, FLEET[0], a.svc.addr),
        scrape_job(&service_monitor, FLEET[1], b.svc.addr),
    ]);
    let (mut proc, prom) = prometheus::start(dir.path(), scrape, RULE_FOR).await;

    // Both control planes available, each under its own name, for a few evaluations.
    let start = unix_now();
    let history = prometheus::query("count by (control_plane) (count_over_time(control_plane:klutch_health_available:max[1m]) >= 5)");
    proc.wait_until("both control planes' availability", async || {
        let data = prometheus::api(prom, &history).await?;
        (data["result"].as_array()?.len() == FLEET.len()).then_some(())
    })
    .await;
    let targets = prometheus::api(prom, "/api/v1/targets")
        .await
        .expect("targets");
    for target in targets["activeTargets"].as_array().expect("targets") {
        assert_eq!(target["health"], "up", "{target}");
        // The labels every shipped rule and panel relies on.
        for label in ["control_plane", "namespace", "pod", "job"] {
            assert!(
                target["labels"][label].is_string(),
                "{label} missing on {target}"
            );
        }
    }

    // No label of klutch-health's own is pushed aside by a target label (it would become `exported_…`).
    let series = prometheus::api(
        prom,
        &prometheus::query(r#"{__name__=~"klutch_health_.+"}"#),
    )
    .await
    .expect("klutch-health's series");
    for s in series["result"].as_array().expect("series") {
        let labels = s["metric"].as_object().expect("labels");
        assert!(
            labels.keys().all(|k| !k.starts_with("exported_")),
            "a clashing label: {s}"
        );
    }

    // cp-b breaks: a ProviderConfig fails (so /readyz does) and a konnector falls silent.
    b.cp.degrade_provider_config("postgresql-service-broker", "connection refused");
    assert!(b.cp.silence_konnector("kube-bind-7xk2p", true));
    let expected: BTreeSet<(String, String, String)> = [
        "KlutchControlPlaneNotReady",
        "KlutchControlPlaneErrorBudgetBurn",
        "KlutchKonnectorSilent",
    ]
    .into_iter()
    .map(|name| (name.to_string(), "cp-b".to_string(), "firing".to_string()))
    .collect();
    let firing = proc
        .wait_until(
            "cp-b's page, budget burn and silent konnector",
            async || {
                let now = alerts(prom).await;
                now.is_superset(&expected).then_some(now)
            },
        )
        .await;
    // cp-a's health is never mixed with cp-b's.
    assert!(
        firing.iter().all(|(_, cp, _)| cp == "cp-b"),
        "an alert about cp-a: {firing:?}"
    );

    let end = unix_now();
    let board = dashboard();
    let mut shown = Vec::new();
    let dashboard_panels = panels(&board);
    for panel in &dashboard_panels {
        let mut series = Vec::new();
        for q in &panel.queries {
            let result = run(prom, q, start, end).await;
            assert!(
                !result.is_empty(),
                "panel {:?} ({}): no data for {}",
                panel.title,
                panel.row,
                q.expr
            );
            series.extend(result);
        }
        if panel.row == "Fleet" {
            // Every control plane, each with its own value now.
            let last: BTreeMap<&str, f64> = series
                .iter()
                .map(|s| {
                    (
                        s.control_plane.as_str(),
                        s.points.last().expect("a point").1,
                    )
                })
                .collect();
            assert_eq!(
                last.keys().copied().collect::<Vec<_>>(),
                FLEET,
                "{}: {series:?}",
                panel.title
            );
            assert_ne!(
                last["cp-a"], last["cp-b"],
                "{}: cannot tell them apart",
                panel.title
            );
        }
        shown.push((panel, series));
    }
    let verdict = &shown
        .iter()
        .find(|(p, _)| p.title == "Verdict")
        .expect("Verdict")
        .1;
    let now: BTreeMap<&str, f64> = verdict
        .iter()
        .map(|s| (s.control_plane.as_str(), s.points[0].1))
        .collect();
    assert_eq!(now, BTreeMap::from([("cp-a", 1.0), ("cp-b", 0.0)]));

    let png = draw(&picture_data(&shown));
    eprintln!("DASHBOARD every panel's data, drawn: {}", png.display());
    proc.assert_running();
}

/// The fleet by federation, as docs/operators/alerts.md describes it: each control plane's own Prometheus
/// scrapes its klutch-health through the shipped ServiceMonitor's relabeling, and a central one scrapes both
/// at `/federate` (`honor_labels`, klutch-health's series only) and evaluates the shipped rules. There the
/// broken control plane pages under its own name, the healthy one never, and one whose klutch-health goes dark
/// is reported absent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_central_prometheus_federating_two_control_planes_alerts_for_each_apart() {
    let (a, b) = (Rig::start().await, Rig::start().await);
    let service_monitor = find(&render("deploy/monitoring"), "ServiceMonitor").clone();
    let dirs: Vec<_> = (0..3)
        .map(|_| tempfile::tempdir().expect("temp dir"))
        .collect();
    let (_pa, prom_a) = prometheus::start(
        dirs[0].path(),
        json!([scrape_job(&service_monitor, FLEET[0], a.svc.addr)]),
        RULE_FOR,
    )
    .await;
    let (_pb, prom_b) = prometheus::start(
        dirs[1].path(),
        json!([scrape_job(&service_monitor, FLEET[1], b.svc.addr)]),
        RULE_FOR,
    )
    .await;
    let federate = json!([{
        "job_name": "federate",
        "honor_labels": true,
        "metrics_path": "/federate",
        "params": {"match[]": ["{__name__=~\"klutch_health_.*\"}"]},
        "scrape_interval": "1s",
        "scrape_timeout": "1s",
        "static_configs": [{"targets": [prom_a.to_string(), prom_b.to_string()]}],
    }]);
    // Federated samples carry their timestamps, so the central Prometheus never marks them stale: a dark
    // control plane's last samples stand for the lookback delta (5 minutes by default), shortened here.
    let (mut central, prom) = prometheus::start_with(
        dirs[2].path(),
        federate,
        RULE_FOR,
        &["--query.lookback-delta=10s"],
    )
    .await;

    // Both control planes' series arrive, each under its own name, with the labels the rules use.
    let readyz = prometheus::query(r#"klutch_health_endpoint_up{endpoint="readyz"}"#);
    let series = central
        .wait_until("both control planes federated", async || {
            let data = prometheus::api(prom, &readyz).await?;
            let result = data["result"].as_array()?.clone();
            (result.len() == FLEET.len()).then_some(result)
        })
        .await;
    let names: BTreeSet<&str> = series
        .iter()
        .map(|s| s["metric"]["control_plane"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(names, FLEET.into_iter().collect(), "{series:?}");
    for s in &series {
        for label in ["namespace", "pod"] {
            assert!(s["metric"][label].is_string(), "{label} missing on {s}");
        }
    }

    // cp-b breaks: the central Prometheus pages for cp-b, never for cp-a.
    b.cp.degrade_provider_config("postgresql-service-broker", "connection refused");
    let page = (
        "KlutchControlPlaneNotReady".to_string(),
        "cp-b".to_string(),
        "firing".to_string(),
    );
    let firing = central
        .wait_until("cp-b's page at the central Prometheus", async || {
            let now = alerts(prom).await;
            now.contains(&page).then_some(now)
        })
        .await;
    assert!(
        firing.iter().all(|(_, cp, _)| cp == "cp-b"),
        "an alert not about cp-b: {firing:?}"
    );

    // cp-b's klutch-health goes dark: its Prometheus marks the series stale, /federate stops carrying them,
    // and once the lookback delta has passed the central one reports cp-b absent.
    drop(b);
    let absent = (
        "KlutchHealthAbsent".to_string(),
        "cp-b".to_string(),
        "firing".to_string(),
    );
    let now = central
        .wait_until("cp-b absent at the central Prometheus", async || {
            let now = alerts(prom).await;
            now.contains(&absent).then_some(now)
        })
        .await;
    assert!(
        now.iter().all(|(_, cp, _)| cp == "cp-b"),
        "an alert not about cp-b: {now:?}"
    );
}
