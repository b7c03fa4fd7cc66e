//! The manifests in `deploy/`: RBAC grants exactly what the shipped checks read, the pods are locked down,
//! probes never depend on the control plane's health.

use std::collections::BTreeSet;
use std::process::Command;

use klutch_health::config::{CheckKind, Config};
use serde::Deserialize;
use serde_json::Value;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const VERBS: [&str; 3] = ["get", "list", "watch"];

/// One permission: (API group, resource, namespace or "" for cluster-wide, verb).
type Grant = (String, String, String, String);

fn render(dir: &str) -> Vec<Value> {
    let kubectl = ["/usr/bin/kubectl", "/usr/local/bin/kubectl"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("kubectl is not installed: .ci/run installs it (Debian package kubernetes-client)");
    let out = Command::new(kubectl)
        .args(["kustomize", &format!("{ROOT}/{dir}")])
        .output()
        .expect("kustomize");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_yaml_ng::Deserializer::from_slice(&out.stdout)
        .map(|doc| Value::deserialize(doc).expect("YAML object"))
        .filter(|v| !v.is_null())
        .collect()
}

/// What the checks of `config` read from the default cluster, as RBAC permissions.
fn required(config: &Config) -> BTreeSet<Grant> {
    let mut needs = BTreeSet::new();
    for check in config.checks.iter().filter(|c| c.cluster.is_none()) {
        let (group, resource, namespace) = match &check.kind {
            CheckKind::BackendStatus(_) => continue,
            CheckKind::CrossplaneProvider(_) => (
                "pkg.crossplane.io".into(),
                "providers".into(),
                String::new(),
            ),
            CheckKind::ProviderConfig(p) => (p.group.clone(), p.plural.clone(), String::new()),
            CheckKind::Deployment(d) => ("apps".into(), "deployments".into(), d.namespace.clone()),
            CheckKind::Pods(p) => (String::new(), "pods".into(), p.namespace.clone()),
        };
        for verb in VERBS {
            needs.insert((
                group.clone(),
                resource.clone(),
                namespace.clone(),
                verb.to_string(),
            ));
        }
    }
    needs
}

/// What the rendered objects grant to the ServiceAccount `namespace/name`.
fn granted(objects: &[Value], namespace: &str, name: &str) -> BTreeSet<Grant> {
    let find = |kind: &str, role: &str, ns: Option<&str>| {
        objects.iter().find(|o| {
            o["kind"] == kind
                && o["metadata"]["name"] == role
                && ns.is_none_or(|ns| o["metadata"]["namespace"] == ns)
        })
    };
    let mut grants = BTreeSet::new();
    for binding in objects
        .iter()
        .filter(|o| o["kind"] == "RoleBinding" || o["kind"] == "ClusterRoleBinding")
    {
        let binds_it = binding["subjects"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|s| {
                s["kind"] == "ServiceAccount" && s["name"] == name && s["namespace"] == namespace
            });
        if !binds_it {
            continue;
        }
        let scope = if binding["kind"] == "RoleBinding" {
            binding["metadata"]["namespace"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        } else {
            String::new()
        };
        let role_kind = binding["roleRef"]["kind"].as_str().unwrap_or_default();
        let role_name = binding["roleRef"]["name"].as_str().unwrap_or_default();
        let role_ns = (role_kind == "Role").then_some(scope.as_str());
        let role = find(role_kind, role_name, role_ns)
            .unwrap_or_else(|| panic!("{role_kind} {role_name} is not rendered"));
        for rule in role["rules"].as_array().into_iter().flatten() {
            let list = |k: &str| -> Vec<String> {
                rule[k]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            };
            for g in list("apiGroups") {
                for r in list("resources") {
                    for v in list("verbs") {
                        grants.insert((g.clone(), r.clone(), scope.clone(), v));
                    }
                }
            }
        }
    }
    grants
}

fn shipped() -> Config {
    Config::from_toml(&std::fs::read_to_string(format!("{ROOT}/config.toml")).expect("config.toml"))
        .expect("valid")
}

fn assert_exact(needed: &BTreeSet<Grant>, got: &BTreeSet<Grant>) {
    let missing: Vec<_> = needed.difference(got).collect();
    let extra: Vec<_> = got.difference(needed).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "RBAC missing {missing:?}; RBAC wider than needed {extra:?}"
    );
}

#[test]
fn standalone_rbac_grants_exactly_what_the_shipped_checks_read() {
    let objects = render("deploy");
    assert_exact(
        &required(&shipped()),
        &granted(&objects, "crossplane-system", "klutch-health"),
    );
}

#[test]
fn sidecar_rbac_grants_exactly_what_the_shipped_checks_read() {
    let objects = render("deploy/sidecar");
    assert_exact(
        &required(&shipped()),
        &granted(&objects, "crossplane-system", "provider-anynines"),
    );
}

#[test]
fn the_rbac_comparison_catches_missing_and_extra_permissions() {
    let objects = render("deploy");
    let got = granted(&objects, "crossplane-system", "klutch-health");
    let text = std::fs::read_to_string(format!("{ROOT}/config.toml")).expect("config.toml")
        + "\n[[check]]\nname = \"konnector\"\ntype = \"deployment\"\nnamespace = \"klutch-bind\"\ndeployment = \"konnector\"\n";
    let with_konnector = Config::from_toml(&text).expect("valid");
    let needed = required(&with_konnector);
    assert!(needed.contains(&(
        "apps".into(),
        "deployments".into(),
        "klutch-bind".into(),
        "get".into()
    )));
    assert!(
        !needed.is_subset(&got),
        "a check without RBAC must be noticed"
    );
    let mut wider = got.clone();
    wider.insert((
        "".into(),
        "secrets".into(),
        "crossplane-system".into(),
        "get".into(),
    ));
    assert!(
        !wider.is_subset(&required(&shipped())),
        "RBAC wider than needed must be noticed"
    );
}

fn containers(pod_spec: &Value) -> Vec<&Value> {
    pod_spec["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .collect()
}

fn assert_locked_down(c: &Value, pod_security: &Value) {
    let sc = &c["securityContext"];
    let non_root = sc["runAsNonRoot"] == true || pod_security["runAsNonRoot"] == true;
    assert!(non_root, "runAsNonRoot: {c}");
    assert_eq!(sc["readOnlyRootFilesystem"], true, "{c}");
    assert_eq!(sc["allowPrivilegeEscalation"], false, "{c}");
    assert_eq!(
        sc["capabilities"]["drop"],
        serde_json::json!(["ALL"]),
        "{c}"
    );
    let seccomp = sc["seccompProfile"]["type"]
        .as_str()
        .or(pod_security["seccompProfile"]["type"].as_str());
    assert_eq!(seccomp, Some("RuntimeDefault"), "{c}");
    for k in ["requests", "limits"] {
        for r in ["cpu", "memory"] {
            assert!(c["resources"][k][r].is_string(), "resources.{k}.{r}: {c}");
        }
    }
    for probe in ["livenessProbe", "readinessProbe"] {
        assert_eq!(
            c[probe]["httpGet"]["path"], "/livez",
            "{probe} must use /livez only: {c}"
        );
    }
}

#[test]
fn the_deployment_is_locked_down_and_probes_livez() {
    let objects = render("deploy");
    let d = objects
        .iter()
        .find(|o| o["kind"] == "Deployment")
        .expect("Deployment");
    assert_eq!(d["metadata"]["namespace"], "crossplane-system");
    assert_eq!(d["spec"]["replicas"], 2);
    let pod = &d["spec"]["template"]["spec"];
    let c = containers(pod);
    assert_eq!(c.len(), 1);
    assert_locked_down(c[0], &pod["securityContext"]);
    let grace = pod["terminationGracePeriodSeconds"]
        .as_u64()
        .expect("grace period");
    assert!(
        grace > shipped().server.shutdown_delay.as_secs() + 5,
        "grace {grace}s vs shutdown_delay"
    );
    // The ConfigMap is generated from a copy of the top-level config.toml: they must not drift apart.
    let copy =
        std::fs::read_to_string(format!("{ROOT}/deploy/config.toml")).expect("deploy/config.toml");
    let top = std::fs::read_to_string(format!("{ROOT}/config.toml")).expect("config.toml");
    assert_eq!(
        copy, top,
        "deploy/config.toml must equal config.toml (cp config.toml deploy/)"
    );
    let cm = objects
        .iter()
        .find(|o| o["kind"] == "ConfigMap")
        .expect("ConfigMap");
    assert_eq!(cm["data"]["config.toml"].as_str(), Some(top.as_str()));
    let volume = &pod["volumes"][0]["configMap"]["name"];
    assert_eq!(
        volume, &cm["metadata"]["name"],
        "the Deployment mounts the generated ConfigMap"
    );
}

#[test]
fn the_sidecar_keeps_package_runtime_and_probes_livez_only() {
    let objects = render("deploy/sidecar");
    let drc = objects
        .iter()
        .find(|o| o["kind"] == "DeploymentRuntimeConfig")
        .expect("DeploymentRuntimeConfig");
    assert_eq!(drc["apiVersion"], "pkg.crossplane.io/v1beta1");
    assert_eq!(drc["metadata"]["name"], "provider-anynines");
    assert_eq!(
        drc["spec"]["serviceAccountTemplate"]["metadata"]["name"],
        "provider-anynines"
    );
    let pod = &drc["spec"]["deploymentTemplate"]["spec"]["template"]["spec"];
    let c = containers(pod);
    assert_eq!(c[0]["name"], "package-runtime");
    let sidecar = c
        .iter()
        .find(|c| c["name"] == "klutch-health")
        .expect("sidecar container");
    assert_locked_down(sidecar, &pod["securityContext"]);
    let config = std::fs::read_to_string(format!("{ROOT}/deploy/sidecar/config.toml"))
        .expect("sidecar config");
    let top = std::fs::read_to_string(format!("{ROOT}/config.toml")).expect("config.toml");
    assert_eq!(
        config,
        top.replace(
            "http://provider-anynines-health.crossplane-system.svc:8081/backend-health",
            "http://127.0.0.1:8081/backend-health"
        ),
        "the sidecar config is the shipped one reading the backend on localhost"
    );
}

#[test]
fn services_and_ingress() {
    let objects = render("deploy");
    let health = objects
        .iter()
        .find(|o| o["kind"] == "Service" && o["metadata"]["name"] == "provider-anynines-health")
        .expect("provider-anynines-health Service");
    assert_eq!(health["metadata"]["namespace"], "crossplane-system");
    assert_eq!(
        health["spec"]["selector"],
        serde_json::json!({"pkg.crossplane.io/provider": "provider-anynines"})
    );
    assert_eq!(health["spec"]["ports"][0]["port"], 8081);
    assert_eq!(health["spec"]["ports"][0]["protocol"], "TCP");
    let ingress = objects
        .iter()
        .find(|o| o["kind"] == "Ingress")
        .expect("Ingress");
    let paths: BTreeSet<&str> = ingress["spec"]["rules"][0]["http"]["paths"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["path"].as_str())
        .collect();
    assert_eq!(paths, BTreeSet::from(["/healthz", "/livez", "/readyz"]));
    assert!(objects.iter().any(|o| o["kind"] == "PodDisruptionBudget"));
    assert!(objects.iter().any(|o| o["kind"] == "NetworkPolicy"));
}
