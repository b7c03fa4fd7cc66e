//! Where each caller lands in the rendered manifests: the sidecar clear of provider-anynines' ports, the
//! public listener behind its own Service (the only one the Ingress reaches, the only port open to the
//! world), ConfigMaps that keep their names so edits reload live, and exactly one way of scraping.

use crate::kustomize;

use std::collections::BTreeSet;

use kustomize::render;
use serde_json::Value;

/// provider-anynines' own ports in its pod: metrics (controller-runtime binds :8080), health server, webhooks.
const PROVIDER_PORTS: [u64; 3] = [8080, 8081, 9443];

fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} rendered"))
}

fn list(v: &Value) -> impl Iterator<Item = &Value> {
    v.as_array().into_iter().flatten()
}

/// The klutch-health container of a rendered pod spec.
fn klutch_health(pod: &Value) -> &Value {
    list(&pod["containers"])
        .find(|c| c["name"] == "klutch-health")
        .unwrap_or_else(|| panic!("no klutch-health container in {pod}"))
}

/// The container port a Service port reaches (its `targetPort`, by number or by name).
fn target(container: &Value, service_port: &Value) -> (u64, String) {
    let port = list(&container["ports"])
        .find(|p| {
            p["containerPort"] == service_port["targetPort"]
                || p["name"] == service_port["targetPort"]
        })
        .unwrap_or_else(|| panic!("{service_port} reaches no port of {container}"));
    (
        port["containerPort"].as_u64().expect("containerPort"),
        port["name"].as_str().unwrap_or_default().to_string(),
    )
}

/// The one port of Service `name`, and the container port it reaches.
fn service_target(objects: &[Value], name: &str, container: &Value) -> (String, (u64, String)) {
    let service = find(objects, "Service", name);
    let ports: Vec<&Value> = list(&service["spec"]["ports"]).collect();
    assert_eq!(ports.len(), 1, "{service}");
    (
        ports[0]["name"].as_str().unwrap_or_default().to_string(),
        target(container, ports[0]),
    )
}

fn config_listen_port(text: &str) -> u64 {
    config_port(text, "listen")
}

/// The port of `server.KEY` in a config file's text.
fn config_port(text: &str, key: &str) -> u64 {
    let config: toml::Table = text.parse().expect("TOML");
    config["server"][key]
        .as_str()
        .and_then(|l| l.rsplit_once(':'))
        .and_then(|(_, p)| p.parse().ok())
        .unwrap_or_else(|| panic!("server.{key} with a port"))
}

/// The number of the container port named `name`.
fn named_port(container: &Value, name: &str) -> u64 {
    list(&container["ports"])
        .find(|p| p["name"] == name)
        .and_then(|p| p["containerPort"].as_u64())
        .unwrap_or_else(|| panic!("no container port named {name} in {container}"))
}

#[test]
fn public_listen_is_the_container_port_named_public_in_both_variants() {
    let objects = render("deploy");
    let deployment = find(&objects, "Deployment", "klutch-health");
    let standalone = klutch_health(&deployment["spec"]["template"]["spec"]);
    let standalone_config = list(&deployment["spec"]["template"]["spec"]["volumes"])
        .find_map(|v| v["configMap"]["name"].as_str())
        .map(|name| find(&objects, "ConfigMap", name))
        .expect("the Deployment mounts its ConfigMap");
    let sidecar_objects = render("deploy/sidecar");
    let drc = find(
        &sidecar_objects,
        "DeploymentRuntimeConfig",
        "provider-anynines",
    );
    let sidecar = klutch_health(&drc["spec"]["deploymentTemplate"]["spec"]["template"]["spec"]);
    let sidecar_config = find(&sidecar_objects, "ConfigMap", "klutch-health-sidecar");
    for (variant, container, cm) in [
        ("standalone", standalone, standalone_config),
        ("sidecar", sidecar, sidecar_config),
    ] {
        let text = cm["data"]["config.toml"].as_str().expect("config.toml");
        assert_eq!(
            config_port(text, "public_listen"),
            named_port(container, "public"),
            "{variant}: server.public_listen vs the container port named public"
        );
    }
}

#[test]
fn the_sidecar_listens_clear_of_the_providers_ports() {
    let objects = render("deploy/sidecar");
    let drc = find(&objects, "DeploymentRuntimeConfig", "provider-anynines");
    let pod = &drc["spec"]["deploymentTemplate"]["spec"]["template"]["spec"];
    let sidecar = klutch_health(pod);
    let ports: BTreeSet<u64> = list(&sidecar["ports"])
        .filter_map(|p| p["containerPort"].as_u64())
        .collect();
    assert_eq!(ports, BTreeSet::from([8090, 8091]));
    let cm = find(&objects, "ConfigMap", "klutch-health-sidecar");
    let listen = config_listen_port(cm["data"]["config.toml"].as_str().expect("config.toml"));
    assert_eq!(listen, 8090);
    for service in ["klutch-health", "klutch-health-public"] {
        let port = &find(&objects, "Service", service)["spec"]["ports"][0];
        assert!(
            !PROVIDER_PORTS.contains(&port["port"].as_u64().expect("port")),
            "{port}"
        );
    }
    assert_eq!(
        service_target(&objects, "klutch-health", sidecar),
        ("http".into(), (8090, "klutch-health".into()))
    );
    assert_eq!(
        service_target(&objects, "klutch-health-public", sidecar),
        ("public".into(), (8091, "public".into()))
    );
    // Klutch's own readiness probe of the provider stays (a client-side apply would otherwise drop it).
    let runtime = list(&pod["containers"])
        .find(|c| c["name"] == "package-runtime")
        .expect("package-runtime");
    assert_eq!(runtime["readinessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(runtime["readinessProbe"]["httpGet"]["port"], 8081);
}

#[test]
fn outside_callers_reach_only_the_public_listener() {
    let objects = render("deploy");
    let deployment = find(&objects, "Deployment", "klutch-health");
    let container = klutch_health(&deployment["spec"]["template"]["spec"]);
    assert_eq!(
        service_target(&objects, "klutch-health", container),
        ("http".into(), (8080, "http".into()))
    );
    assert_eq!(
        service_target(&objects, "klutch-health-public", container),
        ("public".into(), (8081, "public".into()))
    );
    let ingress = find(&objects, "Ingress", "klutch-health");
    let backends: BTreeSet<(String, String)> = list(&ingress["spec"]["rules"])
        .flat_map(|r| list(&r["http"]["paths"]))
        .map(|p| {
            let s = &p["backend"]["service"];
            (
                s["name"].as_str().unwrap_or_default().to_string(),
                s["port"]["name"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    assert_eq!(
        backends,
        BTreeSet::from([("klutch-health-public".into(), "public".into())])
    );

    // The NetworkPolicy opens each port on its own terms: the public one to anyone, the main one (full
    // reasons, /metrics, the page) only to pods of the cluster.
    let policy = find(&objects, "NetworkPolicy", "klutch-health");
    let rules: Vec<&Value> = list(&policy["spec"]["ingress"]).collect();
    let rule_for = |port: u64| -> &Value {
        let matching: Vec<&&Value> = rules
            .iter()
            .filter(|r| list(&r["ports"]).any(|p| p["port"] == port))
            .collect();
        assert_eq!(matching.len(), 1, "one ingress rule for {port}: {rules:?}");
        matching[0]
    };
    let public = rule_for(8081);
    assert!(
        public["from"].is_null(),
        "the public port is open to all: {public}"
    );
    let main = rule_for(8080);
    assert_eq!(
        main["from"],
        serde_json::json!([{"namespaceSelector": {}}]),
        "the main port only from the cluster's pods"
    );
    for rule in [public, main] {
        assert_eq!(list(&rule["ports"]).count(), 1, "one port per rule: {rule}");
    }
}

/// Both ConfigMaps keep their names (no hash suffix): an edit reaches the volume of the running pods, which
/// reload it, instead of a rollout (standalone) or a stale config (sidecar).
#[test]
fn config_maps_keep_their_names_so_edits_reach_the_pods() {
    for (variant, name) in [
        ("deploy", "klutch-health-config"),
        ("deploy/sidecar", "klutch-health-sidecar"),
    ] {
        let objects = render(variant);
        find(&objects, "ConfigMap", name);
        let mounted: Vec<&str> = objects
            .iter()
            .flat_map(|o| {
                list(&o["spec"]["template"]["spec"]["volumes"]).chain(list(
                    &o["spec"]["deploymentTemplate"]["spec"]["template"]["spec"]["volumes"],
                ))
            })
            .filter_map(|v| v["configMap"]["name"].as_str())
            .collect();
        assert_eq!(mounted, [name], "{variant}");
    }
}

/// Whether a label selector (`matchLabels` only) selects an object with `labels`.
fn selects(selector: &Value, labels: &Value) -> bool {
    selector["matchLabels"]
        .as_object()
        .into_iter()
        .flatten()
        .all(|(k, v)| labels[k] == *v)
}

fn relabel_targets(endpoint: &Value) -> BTreeSet<(String, String)> {
    list(&endpoint["relabelings"])
        .map(|r| {
            (
                r["sourceLabels"][0]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                r["targetLabel"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// The labels the alerts' texts use, from the scrape configuration's relabelings.
fn alert_labels() -> BTreeSet<(String, String)> {
    BTreeSet::from([
        ("__meta_kubernetes_namespace".into(), "namespace".into()),
        ("__meta_kubernetes_pod_name".into(), "pod".into()),
    ])
}

#[test]
fn the_service_monitor_scrapes_the_main_listener_of_either_variant_once() {
    let monitoring = render("deploy/monitoring");
    let kinds: BTreeSet<&str> = monitoring
        .iter()
        .filter_map(|o| o["kind"].as_str())
        .collect();
    // Never a PodMonitor beside the ServiceMonitor: each pod would be scraped twice.
    assert_eq!(kinds, BTreeSet::from(["PrometheusRule", "ServiceMonitor"]));
    let sm = find(&monitoring, "ServiceMonitor", "klutch-health");
    let endpoints: Vec<&Value> = list(&sm["spec"]["endpoints"]).collect();
    assert_eq!(endpoints.len(), 1);
    assert_eq!(endpoints[0]["path"], "/metrics");
    assert!(relabel_targets(endpoints[0]).is_superset(&alert_labels()));
    for variant in ["deploy", "deploy/sidecar"] {
        let objects = render(variant);
        let selected: Vec<&str> = objects
            .iter()
            .filter(|o| o["kind"] == "Service")
            .filter(|o| {
                sm["spec"]["namespaceSelector"]["matchNames"][0] == o["metadata"]["namespace"]
            })
            .filter(|o| selects(&sm["spec"]["selector"], &o["metadata"]["labels"]))
            .filter(|o| list(&o["spec"]["ports"]).any(|p| p["name"] == endpoints[0]["port"]))
            .filter_map(|o| o["metadata"]["name"].as_str())
            .collect();
        assert_eq!(
            selected,
            ["klutch-health"],
            "{variant}: the main listener only"
        );
    }

    let alternative = render("deploy/monitoring/podmonitor");
    let pm = find(&alternative, "PodMonitor", "klutch-health");
    assert_eq!(alternative.len(), 1, "the PodMonitor comes alone");
    let endpoint = &pm["spec"]["podMetricsEndpoints"][0];
    assert!(relabel_targets(endpoint).is_superset(&alert_labels()));
    let standalone = render("deploy");
    let deployment = find(&standalone, "Deployment", "klutch-health");
    assert!(selects(
        &pm["spec"]["selector"],
        &deployment["spec"]["template"]["metadata"]["labels"]
    ));
    let container = klutch_health(&deployment["spec"]["template"]["spec"]);
    let port = list(&container["ports"])
        .find(|p| p["name"] == endpoint["port"])
        .expect("the PodMonitor's port");
    assert_eq!(
        port["containerPort"], 8080,
        "the main listener serves /metrics"
    );
}
