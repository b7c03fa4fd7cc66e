//! The manifests in `deploy/`: RBAC grants exactly what the shipped checks read, the pods are locked down,
//! probes never depend on the control plane's health.

use crate::kustomize;

use std::collections::BTreeSet;

use klutch_health::checks::WatchTarget;
use klutch_health::config::Config;
use klutch_health::publish::events;
use kustomize::{render, ROOT};
use serde_json::Value;

const VERBS: [&str; 3] = WatchTarget::VERBS;

/// One permission: (API group, resource, namespace or "" for cluster-wide, verb).
type Grant = (String, String, String, String);

/// What the checks of `config` read from the default cluster, as RBAC permissions: derived from each check
/// type's own watch targets.
fn required(config: &Config) -> BTreeSet<Grant> {
    let mut needs = read(config);
    needs.extend(
        events::permissions(config, "crossplane-system")
            .into_iter()
            .map(|p| {
                (
                    p.group.into(),
                    named(p.resource, p.name),
                    p.namespace.unwrap_or_default(),
                    p.verb.into(),
                )
            }),
    );
    needs
}

/// A resource as granted: `leases[klutch-health-events]` when limited to `resourceNames`.
fn named(resource: &str, name: Option<&str>) -> String {
    match name {
        Some(n) => format!("{resource}[{n}]"),
        None => resource.to_string(),
    }
}

/// What the checks of `config` read, from each check type's own watch targets. A cluster-wide need covers
/// the namespaced needs of the same resource and verb: only it is left (a namespaced Role beside the
/// ClusterRole would be a second grant of the same).
fn read(config: &Config) -> BTreeSet<Grant> {
    let mut needs = BTreeSet::new();
    for check in config.checks.iter().filter(|c| c.cluster.is_none()) {
        for target in check.settings.targets() {
            for verb in WatchTarget::VERBS {
                needs.insert((
                    target.group.clone(),
                    target.resource.clone(),
                    target.namespace.clone().unwrap_or_default(),
                    verb.to_string(),
                ));
            }
        }
    }
    let everywhere = needs.clone();
    needs.retain(|(group, resource, namespace, verb)| {
        namespace.is_empty()
            || !everywhere.contains(&(group.clone(), resource.clone(), String::new(), verb.clone()))
    });
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
        assert!(
            role["aggregationRule"].is_null(),
            "{role_kind} {role_name}: an aggregated role grants whatever its sources grant"
        );
        for rule in role["rules"].as_array().into_iter().flatten() {
            let list = |k: &str| -> Vec<String> {
                rule[k]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            };
            for u in list("nonResourceURLs") {
                for v in list("verbs") {
                    grants.insert(("nonResourceURLs".into(), u.clone(), scope.clone(), v));
                }
            }
            let names = list("resourceNames");
            let resources = |r: &str| -> Vec<String> {
                if names.is_empty() {
                    vec![r.to_string()]
                } else {
                    names.iter().map(|n| named(r, Some(n))).collect()
                }
            };
            for g in list("apiGroups") {
                for r in list("resources").iter().flat_map(|r| resources(r)) {
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

fn grant(group: &str, resource: &str, namespace: &str) -> BTreeSet<Grant> {
    VERBS
        .iter()
        .map(|v| {
            (
                group.into(),
                resource.into(),
                namespace.into(),
                v.to_string(),
            )
        })
        .collect()
}

fn config(checks: &str) -> Config {
    Config::from_toml(checks).unwrap_or_else(|e| panic!("{e}\n{checks}"))
}

#[test]
fn required_rbac_follows_the_check_types() {
    // backend-status reads nothing from Kubernetes.
    let backend = "[[check]]\nname = \"b\"\ntype = \"backend-status\"\nurl = \"http://127.0.0.1:8081/backend-health\"\n";
    assert_eq!(read(&config(backend)), BTreeSet::new());

    let text = format!(
        "{backend}\
         [[check]]\nname = \"p\"\ntype = \"crossplane-provider\"\n\
         [[check]]\nname = \"pc\"\ntype = \"provider-config\"\n\
         [[check]]\nname = \"k8s-pc\"\ntype = \"provider-config\"\ngroup = \"kubernetes.crossplane.io\"\nversion = \"v1alpha1\"\nplural = \"providerconfigs\"\n\
         [[check]]\nname = \"d\"\ntype = \"deployment\"\nnamespace = \"bind\"\ndeployment = \"anynines-backend\"\n\
         [[check]]\nname = \"pods\"\ntype = \"pods\"\nnamespace = \"crossplane-system\"\nselector = \"a=b\"\n\
         [[check]]\nname = \"fn\"\ntype = \"crossplane-package\"\nkind = \"functions\"\n\
         [[check]]\nname = \"konnectors\"\ntype = \"cluster-binding\"\n\
         [clusters.app]\nkubeconfig = \"/x\"\n\
         [[check]]\nname = \"konnector\"\ntype = \"deployment\"\ncluster = \"app\"\nnamespace = \"bind\"\ndeployment = \"konnector\"\n"
    );
    let mut want = BTreeSet::new();
    want.extend(grant("pkg.crossplane.io", "providers", ""));
    want.extend(grant("pkg.crossplane.io", "functions", ""));
    // ClusterBindings live in one namespace per consumer: cluster-wide.
    want.extend(grant("klutch.anynines.com", "clusterbindings", ""));
    // The provider-config defaults are provider-anynines' ProviderConfigs.
    want.extend(grant("dataservices.anynines.com", "providerconfigs", ""));
    want.extend(grant("kubernetes.crossplane.io", "providerconfigs", ""));
    want.extend(grant("apps", "deployments", "bind"));
    want.extend(grant("", "pods", "crossplane-system"));
    // A check of another cluster needs RBAC there, not here.
    assert_eq!(read(&config(&text)), want);

    // AppClusterBindings cluster-wide, and their konnector Deployments in every namespace (by label), which
    // covers the namespaced Deployment need of `d`.
    let with_app_bindings = config(&format!(
        "{text}[[check]]\nname = \"acb\"\ntype = \"app-cluster-binding\"\n"
    ));
    want.extend(grant("klutch.anynines.com", "appclusterbindings", ""));
    want.extend(grant("apps", "deployments", ""));
    for covered in grant("apps", "deployments", "bind") {
        want.remove(&covered);
    }
    assert_eq!(read(&with_app_bindings), want);
}

#[test]
fn events_need_their_namespaces_and_the_lease_unless_turned_off() {
    let text = "[[check]]\nname = \"pc\"\ntype = \"provider-config\"\n\
         [[check]]\nname = \"d\"\ntype = \"deployment\"\nnamespace = \"bind\"\ndeployment = \"anynines-backend\"\n\
         [clusters.app]\nkubeconfig = \"/x\"\n\
         [[check]]\nname = \"konnector\"\ntype = \"deployment\"\ncluster = \"app\"\nnamespace = \"far\"\ndeployment = \"konnector\"\n";
    let on = required(&config(text));
    let events_in: BTreeSet<String> = on
        .iter()
        .filter(|g| g.1 == "events")
        .map(|g| g.2.clone())
        .collect();
    // Cluster-scoped objects' Events go to default; the pod's own namespace takes those with no object.
    assert_eq!(
        events_in,
        BTreeSet::from(["bind".into(), "crossplane-system".into(), "default".into()])
    );
    let lease: BTreeSet<(String, String)> = on
        .iter()
        .filter(|g| g.0 == "coordination.k8s.io")
        .map(|g| (g.1.clone(), g.3.clone()))
        .collect();
    assert_eq!(
        lease,
        BTreeSet::from([
            ("leases".into(), "create".into()),
            ("leases[klutch-health-events]".into(), "get".into()),
            ("leases[klutch-health-events]".into(), "update".into()),
        ])
    );
    let off = config(&format!("[kubernetes]\nevents = false\n{text}"));
    assert_eq!(required(&off), read(&off));

    // ClusterBindings, one per consumer namespace, regard objects in namespaces nobody can list in advance:
    // their Events need create and patch in every namespace, which covers all the others.
    let konnectors = config(&format!(
        "{text}[[check]]\nname = \"konnectors\"\ntype = \"cluster-binding\"\n"
    ));
    let events: BTreeSet<(String, String)> = required(&konnectors)
        .into_iter()
        .filter(|g| g.1 == "events")
        .map(|g| (g.2, g.3))
        .collect();
    assert_eq!(
        events,
        BTreeSet::from([("".into(), "create".into()), ("".into(), "patch".into())])
    );
}

#[test]
fn the_rbac_comparison_catches_missing_and_extra_permissions() {
    let objects = render("deploy");
    let got = granted(&objects, "crossplane-system", "klutch-health");

    // A pods check in another namespace has no RBAC: reported missing.
    let text = std::fs::read_to_string(format!("{ROOT}/config.toml")).expect("config.toml")
        + "\n[[check]]\nname = \"konnector-pods\"\ntype = \"pods\"\nnamespace = \"klutch-bind\"\nselector = \"app=konnector\"\n";
    let needed = required(&config(&text));
    let missing: BTreeSet<_> = needed.difference(&got).cloned().collect();
    assert_eq!(missing, grant("", "pods", "klutch-bind"));

    // Events only where the watched objects' namespaces are known (as once shipped: crossplane-system,
    // default, bind) leave out the konnectors' consumer namespaces: reported missing. Without the shipped
    // config's cluster-binding check, an Event namespace of another check is missing the same way.
    let namespaced_events: Vec<Value> = objects
        .iter()
        .filter(|o| o["kind"] != "ClusterRoleBinding" || o["metadata"]["name"] != "klutch-health-events")
        .cloned()
        .chain(["crossplane-system", "default", "bind"].map(|ns| {
            serde_json::json!({"kind": "RoleBinding", "metadata": {"name": "ev", "namespace": ns},
                "roleRef": {"kind": "ClusterRole", "name": "klutch-health-events"},
                "subjects": [{"kind": "ServiceAccount", "name": "klutch-health", "namespace": "crossplane-system"}]})
        }))
        .collect();
    let got_namespaced = granted(&namespaced_events, "crossplane-system", "klutch-health");
    let missing: BTreeSet<_> = required(&shipped())
        .difference(&got_namespaced)
        .cloned()
        .collect();
    let everywhere: BTreeSet<Grant> = events::VERBS
        .iter()
        .map(|v| {
            (
                "events.k8s.io".into(),
                "events".into(),
                "".into(),
                v.to_string(),
            )
        })
        .collect();
    assert_eq!(missing, everywhere);
    let without_konnectors = config(&format!(
        "{}\n[[check]]\nname = \"far\"\ntype = \"deployment\"\nnamespace = \"far\"\ndeployment = \"x\"\n",
        std::fs::read_to_string(format!("{ROOT}/config.toml"))
            .expect("config.toml")
            .replace("type = \"cluster-binding\"", "type = \"crossplane-package\"\nkind = \"functions\"")
            .replace(
                "type = \"app-cluster-binding\"",
                "type = \"crossplane-package\"\nkind = \"configurations\"",
            )
    ));
    let missing: BTreeSet<_> = required(&without_konnectors)
        .difference(&got_namespaced)
        .filter(|g| g.1 == "events")
        .cloned()
        .collect();
    let far: BTreeSet<Grant> = events::VERBS
        .iter()
        .map(|v| {
            (
                "events.k8s.io".into(),
                "events".into(),
                "far".into(),
                v.to_string(),
            )
        })
        .collect();
    assert_eq!(missing, far);

    // Wider than needed: an extra verb, a wildcard, a cluster-wide grant where a Role suffices.
    let shipped = required(&shipped());
    let role = |kind: &str, rules: Value| {
        let mut objects = objects.clone();
        objects.push(serde_json::json!({
            "kind": kind, "metadata": {"name": "extra", "namespace": "crossplane-system"}, "rules": rules,
        }));
        let binding = if kind == "Role" {
            "RoleBinding"
        } else {
            "ClusterRoleBinding"
        };
        objects.push(serde_json::json!({
            "kind": binding, "metadata": {"name": "extra", "namespace": "crossplane-system"},
            "roleRef": {"kind": kind, "name": "extra"},
            "subjects": [{"kind": "ServiceAccount", "name": "klutch-health", "namespace": "crossplane-system"}],
        }));
        granted(&objects, "crossplane-system", "klutch-health")
    };
    let extra = |got: BTreeSet<Grant>| got.difference(&shipped).cloned().collect::<Vec<_>>();
    assert_eq!(
        extra(role(
            "Role",
            serde_json::json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["delete"]}])
        )),
        [(
            "".into(),
            "pods".into(),
            "crossplane-system".into(),
            "delete".into()
        )]
    );
    assert_eq!(
        extra(role(
            "ClusterRole",
            serde_json::json!([{"apiGroups": ["apps"], "resources": ["*"], "verbs": ["get"]}])
        )),
        [("apps".into(), "*".into(), "".into(), "get".into())]
    );
    assert_eq!(
        extra(role(
            "ClusterRole",
            serde_json::json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}])
        )),
        grant("", "pods", "").into_iter().collect::<Vec<_>>()
    );
    assert_eq!(
        extra(role(
            "ClusterRole",
            serde_json::json!([{"nonResourceURLs": ["/metrics"], "verbs": ["get"]}])
        )),
        [(
            "nonResourceURLs".into(),
            "/metrics".into(),
            "".into(),
            "get".into()
        )]
    );
    // A Role for Deployments beside their cluster-wide grant (as once shipped for bind) grants the same
    // twice: reported as wider than needed.
    assert_eq!(
        extra(role(
            "Role",
            serde_json::json!([{"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get", "list", "watch"]}])
        )),
        grant("apps", "deployments", "crossplane-system")
            .into_iter()
            .collect::<Vec<_>>()
    );
    // A binding to another ServiceAccount grants klutch-health nothing.
    assert_eq!(
        granted(&objects, "crossplane-system", "someone-else"),
        BTreeSet::new()
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
    // /readyz and /healthz reflect the control plane, not this process: probing them would restart or
    // unready klutch-health (or, as a sidecar, provider-anynines itself) whenever the control plane fails.
    for probe in ["livenessProbe", "readinessProbe"] {
        assert_eq!(
            c[probe]["httpGet"]["path"], "/livez",
            "{probe} must use /livez only: {c}"
        );
    }
    if !c["startupProbe"].is_null() {
        assert_eq!(c["startupProbe"]["httpGet"]["path"], "/livez", "{c}");
    }
    // Appended to the image's ENTRYPOINT, which already names the config (tests/full/container.rs).
    assert_eq!(
        c["args"],
        serde_json::json!(["--log-format", "json"]),
        "{c}"
    );
}

/// The downward API gives the container the names Events and the Lease use.
fn assert_knows_its_pod(c: &Value) {
    for (name, field) in [
        ("POD_NAME", "metadata.name"),
        ("POD_NAMESPACE", "metadata.namespace"),
        ("POD_UID", "metadata.uid"),
    ] {
        let env = c["env"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|e| e["name"] == name);
        assert_eq!(
            env.map(|e| &e["valueFrom"]["fieldRef"]["fieldPath"]),
            Some(&Value::from(field)),
            "{name} in {}",
            c["name"]
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
    assert_knows_its_pod(c[0]);
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
    assert_knows_its_pod(sidecar);
    // Crossplane fills in package-runtime: only Klutch's own readinessProbe is kept beside its name.
    assert_eq!(
        c[0],
        &serde_json::json!({"name": "package-runtime",
            "readinessProbe": {"httpGet": {"path": "/healthz", "port": 8081}}})
    );
    let sidecar_port = sidecar["ports"][0]["containerPort"].clone();
    assert_eq!(sidecar_port, 8090);
    let config = std::fs::read_to_string(format!("{ROOT}/deploy/sidecar/config.toml"))
        .expect("sidecar config");
    let cm = objects
        .iter()
        .find(|o| o["kind"] == "ConfigMap")
        .expect("ConfigMap");
    assert_eq!(cm["metadata"]["namespace"], "crossplane-system");
    assert_eq!(cm["data"]["config.toml"].as_str(), Some(config.as_str()));
    let mounted: Vec<&Value> = pod["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| {
            v["configMap"]["name"]
                .as_str()
                .map(|_| &v["configMap"]["name"])
        })
        .collect();
    assert_eq!(
        mounted,
        [&cm["metadata"]["name"]],
        "the sidecar mounts the generated ConfigMap"
    );
    let service = objects
        .iter()
        .find(|o| o["kind"] == "Service" && o["metadata"]["name"] == "klutch-health")
        .expect("Service");
    assert_eq!(service["metadata"]["namespace"], "crossplane-system");
    assert_eq!(
        service["spec"]["selector"],
        serde_json::json!({"pkg.crossplane.io/provider": "provider-anynines"})
    );
    assert_eq!(service["spec"]["ports"][0]["port"], 8090);
    assert_eq!(service["spec"]["ports"][0]["targetPort"], sidecar_port);
    let top = std::fs::read_to_string(format!("{ROOT}/config.toml")).expect("config.toml");
    assert_eq!(
        config,
        top.replace(
            "http://provider-anynines-health.crossplane-system.svc:8081/backend-health",
            "http://127.0.0.1:8081/backend-health"
        )
        .replace(
            "/backend-health, /).\nlisten = \"[::]:8080\"",
            "/backend-health, /). In the sidecar\n# not 8080 (provider-anynines' metrics), 8081 (its health \
             server) or 9443 (its webhooks): they share the pod.\nlisten = \"[::]:8090\""
        )
        .replace(
            "\npublic_listen = \"[::]:8081\"\n",
            "\npublic_listen = \"[::]:8091\"\n"
        ),
        "the sidecar config is the shipped one reading the backend on localhost, listening on 8090 and 8091"
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
    assert_eq!(health["spec"]["ports"].as_array().map(Vec::len), Some(1));
    assert_eq!(health["spec"]["ports"][0]["port"], 8081);
    assert_eq!(health["spec"]["ports"][0]["targetPort"], 8081);
    assert_eq!(health["spec"]["ports"][0]["protocol"], "TCP");
    // The shipped backend-status check reads it by that name.
    assert!(shipped().checks.iter().any(|c| c
        .settings
        .downcast::<klutch_health::checks::backend_status::BackendStatus>()
        .is_some_and(|b| b
            .url
            .to_string()
            .starts_with("http://provider-anynines-health.crossplane-system.svc:8081/"))));

    let proxy = objects
        .iter()
        .find(|o| o["kind"] == "Service" && o["metadata"]["name"] == "klutch-health")
        .expect("klutch-health Service");
    assert_eq!(
        proxy["spec"]["selector"],
        serde_json::json!({"app": "klutch-health"})
    );
    assert_eq!(proxy["spec"]["ports"][0]["port"], 8080);
    assert_eq!(proxy["spec"]["ports"][0]["targetPort"], "http");
    let deployment = objects
        .iter()
        .find(|o| o["kind"] == "Deployment")
        .expect("Deployment");
    assert_eq!(
        deployment["spec"]["template"]["spec"]["containers"][0]["ports"][0],
        serde_json::json!({"name": "http", "containerPort": 8080, "protocol": "TCP"})
    );
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
    assert_eq!(ingress["spec"]["rules"].as_array().map(Vec::len), Some(1));
    for p in ingress["spec"]["rules"][0]["http"]["paths"]
        .as_array()
        .into_iter()
        .flatten()
    {
        // Exact: a Prefix /healthz would also expose /healthz/NAME; nothing else leaves the cluster.
        assert_eq!(p["pathType"], "Exact", "{p}");
        assert_eq!(
            p["backend"]["service"]["name"], "klutch-health-public",
            "{p}"
        );
    }
    assert!(ingress["spec"]["defaultBackend"].is_null());

    let pdb = objects
        .iter()
        .find(|o| o["kind"] == "PodDisruptionBudget")
        .expect("PDB");
    assert_eq!(pdb["spec"]["minAvailable"], 1);
    assert_eq!(
        pdb["spec"]["selector"]["matchLabels"],
        serde_json::json!({"app": "klutch-health"})
    );

    let policy = objects
        .iter()
        .find(|o| o["kind"] == "NetworkPolicy")
        .expect("NetworkPolicy");
    assert_eq!(
        policy["spec"]["policyTypes"],
        serde_json::json!(["Ingress", "Egress"])
    );
    let ports = |dir: &str| -> BTreeSet<(u64, String)> {
        policy["spec"][dir]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|r| r["ports"].as_array().into_iter().flatten())
            .map(|p| {
                (
                    p["port"].as_u64().unwrap_or(0),
                    p["protocol"].as_str().unwrap_or("TCP").to_string(),
                )
            })
            .collect()
    };
    assert_eq!(
        ports("ingress"),
        BTreeSet::from([(8080, "TCP".to_string()), (8081, "TCP".to_string())])
    );
    for needed in [
        (53, "UDP"),
        (53, "TCP"),
        (443, "TCP"),
        (6443, "TCP"),
        (8081, "TCP"),
        // A `broker` check's brokers, at the port of Klutch's examples.
        (3000, "TCP"),
    ] {
        assert!(
            ports("egress").contains(&(needed.0, needed.1.to_string())),
            "egress to {needed:?}"
        );
    }
}
