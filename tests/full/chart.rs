//! The Helm chart `charts/klutch-health` with real Helm (built from its Go module, `controlplane/helm`): its
//! defaults render exactly what `kubectl kustomize deploy` renders, each variant and monitoring toggle what
//! its kustomization renders, every documented values example lints and renders, `values.schema.json` and
//! the templates refuse wrong values with a message that names them, and the runbook's base URL is a setting
//! of the chart and of the kustomize base. The chart's appVersion (the default image tag) is klutch-health's
//! version in Cargo.toml, and its kubeVersion the oldest Kubernetes API it is built for (k8s-openapi's
//! feature): Helm refuses an older one.

use crate::kustomize;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kustomize::{render, ROOT};
use serde::Deserialize;
use serde_json::Value;

const CHART: &str = "charts/klutch-health";
/// The oldest Kubernetes klutch-health supports (k8s-openapi v1_33), as `.Capabilities.KubeVersion`.
const KUBE_VERSION: &str = "1.33.0";
/// How long one `helm` command may take before the test kills it and fails.
const HELM_DEADLINE: Duration = Duration::from_secs(60);

fn helm_bin() -> PathBuf {
    klutch_realcp::helm().unwrap_or_else(|e| panic!("no helm: {e}"))
}

/// Runs `helm ARGS` from the repository's root, killed past [`HELM_DEADLINE`]: (succeeded, stdout, stderr).
fn helm(args: &[&str]) -> (bool, String, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let (out, err) = (dir.path().join("out"), dir.path().join("err"));
    let mut child = Command::new(helm_bin())
        .args(args)
        .current_dir(ROOT)
        .env("HELM_CACHE_HOME", dir.path().join("cache"))
        .env("HELM_CONFIG_HOME", dir.path().join("config"))
        .env("HELM_DATA_HOME", dir.path().join("data"))
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).expect("stdout file"))
        .stderr(std::fs::File::create(&err).expect("stderr file"))
        .spawn()
        .expect("start helm");
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for helm") {
            break status;
        }
        if start.elapsed() > HELM_DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            panic!("helm {args:?} did not finish within {HELM_DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let read = |p: &Path| std::fs::read_to_string(p).expect("helm output");
    (status.success(), read(&out), read(&err))
}

/// `helm template` of the chart into crossplane-system with `args` (values), every object as JSON.
fn template(args: &[&str]) -> Vec<Value> {
    let mut all = vec![
        "template",
        "klutch-health",
        CHART,
        "--namespace",
        "crossplane-system",
        "--kube-version",
        KUBE_VERSION,
    ];
    all.extend_from_slice(args);
    let (ok, out, err) = helm(&all);
    assert!(ok, "helm {all:?} failed:\n{err}");
    serde_yaml_ng::Deserializer::from_str(&out)
        .map(|doc| Value::deserialize(doc).expect("YAML object"))
        .filter(|v| !v.is_null())
        .collect()
}

/// `helm template` with `args` that must fail; its error.
fn refused(args: &[&str]) -> String {
    let mut all = vec![
        "template",
        "klutch-health",
        CHART,
        "--namespace",
        "crossplane-system",
        "--kube-version",
        KUBE_VERSION,
    ];
    all.extend_from_slice(args);
    let (ok, out, err) = helm(&all);
    assert!(!ok, "helm {all:?} accepted what it must refuse:\n{out}");
    err
}

/// Objects by kind, namespace and name.
fn by_name(objects: Vec<Value>) -> BTreeMap<String, Value> {
    objects
        .into_iter()
        .map(|o| {
            let key = format!(
                "{}/{}/{}",
                o["kind"].as_str().unwrap_or_default(),
                o["metadata"]["namespace"].as_str().unwrap_or_default(),
                o["metadata"]["name"].as_str().unwrap_or_default()
            );
            (key, o)
        })
        .collect()
}

/// How the two sets of objects differ, object by object, field for field (nothing: the same objects).
fn differences(chart: Vec<Value>, kustomize: Vec<Value>) -> Vec<String> {
    let (chart, kustomize) = (by_name(chart), by_name(kustomize));
    let mut problems = Vec::new();
    for key in kustomize.keys().filter(|k| !chart.contains_key(*k)) {
        problems.push(format!("{key}: only in the kustomize render"));
    }
    for key in chart.keys().filter(|k| !kustomize.contains_key(*k)) {
        problems.push(format!("{key}: only in the chart's render"));
    }
    for (key, object) in &chart {
        if let Some(other) = kustomize.get(key) {
            if object != other {
                problems.push(format!(
                    "{key} differs:\n--- chart\n{}\n--- kustomize\n{}",
                    serde_yaml_ng::to_string(object).expect("YAML"),
                    serde_yaml_ng::to_string(other).expect("YAML")
                ));
            }
        }
    }
    problems
}

fn assert_same(what: &str, chart: Vec<Value>, kustomize: Vec<Value>) {
    let problems = differences(chart, kustomize);
    assert!(
        problems.is_empty(),
        "{what}: the chart and kustomize render different objects:\n{}",
        problems.join("\n")
    );
}

/// The objects of `objects` of these kinds.
fn kinds(objects: &[Value], kinds: &[&str]) -> Vec<Value> {
    objects
        .iter()
        .filter(|o| kinds.contains(&o["kind"].as_str().unwrap_or_default()))
        .cloned()
        .collect()
}

#[test]
fn the_charts_defaults_render_what_kustomize_renders() {
    // The comparison itself sees one changed field and one missing object.
    let mut changed = render("deploy");
    changed[0]["metadata"]["labels"]["extra"] = "1".into();
    assert_eq!(differences(render("deploy"), changed.clone()).len(), 1);
    changed.pop();
    assert_eq!(differences(render("deploy"), changed).len(), 2);

    assert_same("defaults", template(&[]), render("deploy"));
    assert_same(
        "variant=sidecar",
        template(&["--set", "variant=sidecar"]),
        render("deploy/sidecar"),
    );
    let monitoring = template(&[
        "--set",
        "monitoring.serviceMonitor=true,monitoring.prometheusRule=true",
    ]);
    assert_same(
        "monitoring.serviceMonitor, monitoring.prometheusRule",
        kinds(&monitoring, &["ServiceMonitor", "PrometheusRule"]),
        render("deploy/monitoring"),
    );
    assert_same(
        "monitoring.podMonitor",
        kinds(
            &template(&["--set", "monitoring.podMonitor=true"]),
            &["PodMonitor"],
        ),
        render("deploy/monitoring/podmonitor"),
    );
    assert_same(
        "examples/fleet.yaml",
        kinds(
            &template(&["-f", &format!("{CHART}/examples/fleet.yaml")]),
            &["ServiceMonitor", "PrometheusRule"],
        ),
        render("deploy/fleet-example"),
    );
    // The dashboard's kustomization leaves the namespace to `kubectl apply -n`; the chart says it.
    let mut dashboard = kinds(
        &template(&["--set", "monitoring.dashboard=true"]),
        &["ConfigMap"],
    );
    dashboard.retain(|c| c["metadata"]["name"] == "klutch-health-dashboard");
    assert_eq!(dashboard.len(), 1, "the dashboard ConfigMap: {dashboard:?}");
    assert_eq!(dashboard[0]["metadata"]["namespace"], "crossplane-system");
    dashboard[0]["metadata"]
        .as_object_mut()
        .expect("metadata")
        .remove("namespace");
    assert_same(
        "monitoring.dashboard",
        dashboard,
        render("deploy/monitoring/grafana"),
    );
}

/// The values examples of charts/klutch-health/examples, each named in the install page.
fn examples() -> Vec<String> {
    let dir = Path::new(ROOT).join(CHART).join("examples");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml"))
        .collect();
    names.sort();
    assert!(!names.is_empty(), "{}: no examples", dir.display());
    names
}

#[test]
fn every_documented_values_example_lints_and_renders() {
    let install = std::fs::read_to_string(format!("{ROOT}/docs/operators/install.md"))
        .expect("docs/operators/install.md");
    let (ok, out, err) = helm(&["lint", "--strict", "--kube-version", KUBE_VERSION, CHART]);
    assert!(ok, "helm lint {CHART}:\n{out}{err}");
    for example in examples() {
        let path = format!("{CHART}/examples/{example}");
        assert!(
            install.contains(&path),
            "docs/operators/install.md does not show {path}: document each example (or remove it)"
        );
        let (ok, out, err) = helm(&[
            "lint",
            "--strict",
            "--kube-version",
            KUBE_VERSION,
            CHART,
            "-f",
            &path,
        ]);
        assert!(ok, "helm lint -f {path}:\n{out}{err}");
        let objects = template(&["-f", &path]);
        assert!(
            objects
                .iter()
                .any(|o| o["kind"] == "Deployment" || o["kind"] == "DeploymentRuntimeConfig"),
            "{path}: renders no klutch-health"
        );
    }
}

#[test]
fn wrong_values_are_refused_with_a_message_that_names_them() {
    for (set, says) in [
        // values.schema.json
        ("variant=daemonset", "variant"),
        ("replicas=0", "replicas"),
        ("resources.limits.memory=lots", "memory"),
        ("monitoring.runbookUrl=wiki/alerts#x", "runbookUrl"),
        ("monitoring.serviceMontor=true", "serviceMontor"),
        // the templates
        (
            "monitoring.serviceMonitor=true,monitoring.podMonitor=true",
            "scraped twice",
        ),
        ("config=listen = \"[::]:9000\"", "listen"),
    ] {
        let err = refused(&["--set", set]);
        assert!(
            err.contains(says),
            "--set {set}: the error does not name {says:?}:\n{err}"
        );
    }
    let err = refused(&["--set", "variant=sidecar,config=listen = \"[::]:8080\""]);
    assert!(err.contains("8090"), "the sidecar's port: {err}");
}

/// Every alert's runbook_url in `objects`' PrometheusRule: (alert, URL).
fn runbook_urls(objects: &[Value]) -> Vec<(String, String)> {
    kinds(objects, &["PrometheusRule"])
        .iter()
        .flat_map(|r| r["spec"]["groups"].as_array().cloned().unwrap_or_default())
        .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
        .filter_map(|r| {
            Some((
                r["alert"].as_str()?.to_string(),
                r["annotations"]["runbook_url"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            ))
        })
        .collect()
}

#[test]
fn the_runbooks_base_url_is_a_setting_of_the_chart_and_the_kustomize_base() {
    // The default: the runbook page in the repository Cargo.toml declares.
    let cargo: toml::Table =
        toml::from_str(&std::fs::read_to_string(format!("{ROOT}/Cargo.toml")).expect("Cargo.toml"))
            .expect("Cargo.toml is TOML");
    let repository = cargo["package"]["repository"]
        .as_str()
        .expect("Cargo.toml declares package.repository");
    let default = format!("{repository}/blob/main/docs/operators/alerts.md");
    let values: Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(format!("{ROOT}/{CHART}/values.yaml")).expect("values.yaml"),
    )
    .expect("values.yaml is YAML");
    assert_eq!(values["monitoring"]["runbookUrl"], default.as_str());

    let wiki = "https://wiki.example.org/platform/klutch-alerts";
    let fleet =
        "https://git.example.com/platform/klutch-health/-/blob/main/docs/operators/alerts.md";
    for (what, objects, base) in [
        (
            "deploy/monitoring",
            render("deploy/monitoring"),
            default.as_str(),
        ),
        (
            "deploy/fleet-example",
            render("deploy/fleet-example"),
            fleet,
        ),
        (
            "the chart's default",
            template(&["--set", "monitoring.prometheusRule=true"]),
            default.as_str(),
        ),
        (
            "the chart's monitoring.runbookUrl",
            template(&[
                "--set",
                "monitoring.prometheusRule=true",
                "--set",
                &format!("monitoring.runbookUrl={wiki}"),
            ]),
            wiki,
        ),
    ] {
        let urls = runbook_urls(&objects);
        assert!(urls.len() >= 5, "{what}: alerts {urls:?}");
        for (alert, url) in urls {
            assert_eq!(
                url,
                format!("{base}#{}", alert.to_lowercase()),
                "{what}: {alert}'s runbook_url"
            );
        }
    }
}

/// charts/klutch-health/Chart.yaml.
fn chart_yaml() -> Value {
    let path = format!("{ROOT}/{CHART}/Chart.yaml");
    serde_yaml_ng::from_str(&std::fs::read_to_string(&path).expect("Chart.yaml")).expect("YAML")
}

/// The root Cargo.toml.
fn cargo_toml() -> toml::Table {
    toml::from_str(&std::fs::read_to_string(format!("{ROOT}/Cargo.toml")).expect("Cargo.toml"))
        .expect("Cargo.toml is TOML")
}

/// The image of every klutch-health container in `objects`.
fn klutch_health_images(objects: &[Value]) -> Vec<String> {
    fn walk(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(map) => {
                if map.get("name").and_then(Value::as_str) == Some("klutch-health") {
                    if let Some(image) = map.get("image").and_then(Value::as_str) {
                        out.push(image.to_string());
                    }
                }
                map.values().for_each(|v| walk(v, out));
            }
            Value::Array(items) => items.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    objects.iter().for_each(|o| walk(o, &mut out));
    out
}

#[test]
fn the_charts_app_version_and_default_image_are_klutch_healths_version() {
    let cargo = cargo_toml();
    let version = cargo["package"]["version"]
        .as_str()
        .expect("Cargo.toml's package.version");
    assert_eq!(
        chart_yaml()["appVersion"].as_str(),
        Some(version),
        "{CHART}/Chart.yaml: appVersion must be klutch-health's version, {version} (Cargo.toml)"
    );
    // The image's default tag is the appVersion, in both variants; deploy/ names the same image (the
    // chart's defaults render what it renders).
    let image = format!("ghcr.io/klutch-health/klutch-health:{version}");
    for (what, objects) in [
        ("the chart's defaults", template(&[])),
        (
            "the chart's sidecar",
            template(&["--set", "variant=sidecar"]),
        ),
        ("deploy/", render("deploy")),
        ("deploy/sidecar", render("deploy/sidecar")),
    ] {
        let images = klutch_health_images(&objects);
        assert!(!images.is_empty(), "{what}: no klutch-health container");
        assert!(
            images.iter().all(|i| *i == image),
            "{what}: {images:?}, not {image} (Cargo.toml's version)"
        );
    }
    // A tag set is the tag run.
    let images = klutch_health_images(&template(&["--set", "image.tag=9.9.9"]));
    assert_eq!(
        images,
        ["ghcr.io/klutch-health/klutch-health:9.9.9"],
        "--set image.tag"
    );
}

#[test]
fn the_chart_refuses_a_kubernetes_older_than_the_api_klutch_health_is_built_for() {
    // k8s-openapi's feature v1_NN: the oldest Kubernetes API klutch-health's types are built for.
    let cargo = cargo_toml();
    let features = cargo["dependencies"]["k8s-openapi"]["features"]
        .as_array()
        .expect("k8s-openapi's features in Cargo.toml");
    let minor: u32 = features
        .iter()
        .find_map(|f| f.as_str()?.strip_prefix("v1_")?.parse().ok())
        .expect("a v1_NN feature of k8s-openapi");
    let oldest = format!(">=1.{minor}.0-0");
    assert_eq!(
        chart_yaml()["kubeVersion"].as_str(),
        Some(oldest.as_str()),
        "{CHART}/Chart.yaml: kubeVersion must follow k8s-openapi's feature v1_{minor}"
    );
    assert!(
        KUBE_VERSION.starts_with(&format!("1.{minor}.")),
        "the tests render for {KUBE_VERSION}, not the oldest supported 1.{minor}"
    );
    let older = format!("1.{}.0", minor - 1);
    let (ok, out, err) = helm(&[
        "template",
        "klutch-health",
        CHART,
        "--namespace",
        "crossplane-system",
        "--kube-version",
        &older,
    ]);
    assert!(!ok, "helm template --kube-version {older} rendered:\n{out}");
    assert!(
        err.contains(&format!(
            "chart requires kubeVersion: {oldest} which is incompatible with Kubernetes v{older}"
        )),
        "helm's refusal of {older} does not say why:\n{err}"
    );
}
