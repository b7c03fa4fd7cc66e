//! The Helm chart on the real control plane with real Helm (`controlplane/build.sh controlplane/helm`):
//! `helm install` with the monitors, the rules and the dashboard (the real API server validates every object
//! against the vendored CRDs); klutch-health as the chart's ServiceAccount with the chart's ConfigMap syncs
//! every shipped check, writes Events, holds the Lease and reloads without one refused request; `helm upgrade`
//! of the config changes the ConfigMap and leaves the Deployment alone (the running pod reloads it), one of a
//! pod value rolls the Deployment; `helm uninstall` removes every object it installed and leaves what
//! klutch-health wrote itself (the Lease).

use std::path::Path;
use std::time::Duration;

use klutch_realcp::{KLUTCH_HEALTH, PROVIDER_ANYNINES};
use serde_json::{json, Value};

use crate::common::{config_for_test, Service};
use crate::estate::{get, until, wait_for, Estate, NAMESPACE};
use crate::rbac::{a_whole_run_without_a_403, all_ok};
use crate::sidecar::klutchs_runtime_config;

const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/klutch-health");
/// How long one `helm` command may take before the test kills it and fails.
const HELM_DEADLINE: Duration = Duration::from_secs(120);

/// `helm ARGS` against the control plane as admin, killed past [`HELM_DEADLINE`]: (succeeded, stdout, stderr).
async fn helm_output(kubeconfig: &Path, home: &Path, args: &[&str]) -> (bool, String, String) {
    let bin = klutch_realcp::helm().unwrap_or_else(|e| panic!("no helm: {e}"));
    let run = tokio::process::Command::new(bin)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"))
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(HELM_DEADLINE, run)
        .await
        .unwrap_or_else(|_| panic!("helm {args:?}: no answer within {HELM_DEADLINE:?}"))
        .expect("run helm");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Like [`helm_output`]; its standard output, or a failure showing its errors.
async fn helm(kubeconfig: &Path, home: &Path, args: &[&str]) -> String {
    let (ok, out, err) = helm_output(kubeconfig, home, args).await;
    assert!(ok, "helm {args:?} failed: {err}");
    out
}

/// The installed config.toml (the ConfigMap klutch-health-config).
async fn installed_config(estate: &Estate) -> String {
    let cm = get(
        &estate.admin,
        &format!("/api/v1/namespaces/{NAMESPACE}/configmaps/klutch-health-config"),
    )
    .await
    .expect("the chart's ConfigMap klutch-health-config");
    cm["data"]["config.toml"]
        .as_str()
        .expect("config.toml in the ConfigMap")
        .to_string()
}

async fn deployment(estate: &Estate) -> Value {
    get(
        &estate.admin,
        &format!("/apis/apps/v1/namespaces/{NAMESPACE}/deployments/klutch-health"),
    )
    .await
    .expect("the chart's Deployment")
}

#[tokio::test]
async fn the_chart_installs_upgrades_and_uninstalls_on_the_real_control_plane() {
    let estate = Estate::own_without_deploy().await;
    let kubeconfig = estate.cp.admin_kubeconfig();
    let home = tempfile::tempdir().expect("helm's home");
    let release = ["klutch-health", CHART, "-n", NAMESPACE];

    // Install: every object the chart renders, the monitoring ones included, accepted by the real server.
    let monitoring =
        "monitoring.serviceMonitor=true,monitoring.prometheusRule=true,monitoring.dashboard=true";
    let mut install = vec!["install"];
    install.extend(release);
    install.extend(["--set", monitoring]);
    helm(&kubeconfig, home.path(), &install).await;
    let manifest = helm(
        &kubeconfig,
        home.path(),
        &["get", "manifest", "klutch-health", "-n", NAMESPACE],
    )
    .await;
    let manifest_file = home.path().join("manifest.yaml");
    std::fs::write(&manifest_file, &manifest).expect("manifest");
    let manifest_path = manifest_file.display().to_string();
    let installed = estate
        .cp
        .kubectl(&["get", "-f", &manifest_path, "-o", "name"], None)
        .await
        .expect("kubectl get the release's objects");
    for kind in [
        "deployment.apps/klutch-health",
        "configmap/klutch-health-config",
        "clusterrole.rbac.authorization.k8s.io/klutch-health",
        "servicemonitor.monitoring.coreos.com/klutch-health",
        "prometheusrule.monitoring.coreos.com/klutch-health",
        "configmap/klutch-health-dashboard",
        "ingress.networking.k8s.io/klutch-health",
    ] {
        assert!(
            installed.contains(kind),
            "{kind} not installed:\n{installed}"
        );
    }

    // klutch-health as the chart's ServiceAccount, with the chart's config (as the pod would mount it).
    let dir = tempfile::tempdir().expect("dir");
    let kc = dir.path().join("kubeconfig");
    estate
        .cp
        .write_kubeconfig(&kc, KLUTCH_HEALTH, None)
        .expect("kubeconfig");
    let backend = estate.sim.backend.url();
    let config = config_for_test(&installed_config(&estate).await, &backend, "");
    let kc = kc.display().to_string();
    let uid = "00000000-0000-4000-8000-000000000001";
    let env = [
        ("KUBECONFIG", kc.as_str()),
        ("POD_NAME", "klutch-health-0"),
        ("POD_NAMESPACE", NAMESPACE),
        ("POD_UID", uid),
    ];
    let svc = Service::start(&config, &env).await;
    let r = wait_for(&svc, "/readyz?verbose", "every shipped check synced", |r| {
        r.status == 200 && all_ok(&r.body)
    })
    .await;
    assert!(!r.body.contains("[-]"), "{}", r.body);
    until("the Events Lease held", async || {
        get(
            &estate.admin,
            &format!(
                "/apis/coordination.k8s.io/v1/namespaces/{NAMESPACE}/leases/klutch-health-events"
            ),
        )
        .await
        .filter(|l| l["spec"]["holderIdentity"] == "klutch-health-0")
    })
    .await;

    // Upgrade of the config: the ConfigMap changes, the Deployment does not (no rollout); the running pod
    // reloads the file the kubelet would write from the ConfigMap.
    let before = deployment(&estate).await;
    let changed = installed_config(&estate).await.replace(
        "description = \"Klutch control plane\"",
        "description = \"upgraded by helm\"",
    );
    assert!(
        changed.contains("upgraded by helm"),
        "the shipped description moved"
    );
    let changed_file = home.path().join("config.toml");
    std::fs::write(&changed_file, &changed).expect("config");
    let set_file = format!("config={}", changed_file.display());
    let mut upgrade = vec!["upgrade"];
    upgrade.extend(release);
    upgrade.extend(["--reuse-values", "--set-file", &set_file]);
    helm(&kubeconfig, home.path(), &upgrade).await;
    let now = installed_config(&estate).await;
    assert_eq!(now, changed, "the upgraded ConfigMap");
    let after = deployment(&estate).await;
    assert_eq!(
        after["metadata"]["generation"], before["metadata"]["generation"],
        "a config change must not roll the Deployment"
    );
    assert_eq!(after["spec"]["template"], before["spec"]["template"]);
    let path = svc.dir.path().join("config.toml");
    std::fs::write(&path, config_for_test(&now, &backend, "")).expect("write config");
    wait_for(
        &svc,
        "/readyz?format=json",
        "the upgraded description, reloaded",
        |r| r.json()["description"] == "upgraded by helm",
    )
    .await;

    // A value of the pod itself rolls the Deployment.
    let mut upgrade = vec!["upgrade"];
    upgrade.extend(release);
    upgrade.extend(["--reuse-values", "--set", "resources.limits.memory=400Mi"]);
    helm(&kubeconfig, home.path(), &upgrade).await;
    let rolled = deployment(&estate).await;
    assert_ne!(
        rolled["metadata"]["generation"], before["metadata"]["generation"],
        "a changed memory limit reaches the Deployment"
    );
    assert_eq!(
        rolled["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"],
        "400Mi"
    );

    // The whole run with the installed RBAC: not one request refused.
    assert_eq!(estate.refused(), Vec::<String>::new());
    drop(svc);

    // Uninstall: nothing of the release is left; what klutch-health wrote itself (the Lease) stays.
    helm(
        &kubeconfig,
        home.path(),
        &["uninstall", "klutch-health", "-n", NAMESPACE],
    )
    .await;
    until("every object of the release deleted", async || {
        let left = estate
            .cp
            .kubectl(
                &[
                    "get",
                    "-f",
                    &manifest_path,
                    "--ignore-not-found",
                    "-o",
                    "name",
                ],
                None,
            )
            .await
            .expect("kubectl get");
        left.trim().is_empty().then_some(())
    })
    .await;
    assert!(
        get(
            &estate.admin,
            &format!(
                "/apis/coordination.k8s.io/v1/namespaces/{NAMESPACE}/leases/klutch-health-events"
            ),
        )
        .await
        .is_some(),
        "the Lease klutch-health wrote stays, as the install page says"
    );
}

/// The containers of the DeploymentRuntimeConfig `provider-anynines`, by name.
fn container_names(drc: &Value) -> Vec<String> {
    drc["spec"]["deploymentTemplate"]["spec"]["template"]["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str().map(str::to_string))
        .collect()
}

/// The sidecar variant by Helm, as the install page says: Helm refuses to install over Klutch's own
/// DeploymentRuntimeConfig, and adopting it does not work (Helm patches a custom resource by comparing its
/// own manifests, so the adopted object keeps Klutch's containers without the sidecar); deleted first, the
/// chart's object has Klutch's probe and the sidecar, the chart's RBAC is all provider-anynines'
/// ServiceAccount needs, and `helm uninstall` deletes the object.
#[tokio::test]
async fn the_charts_sidecar_replaces_klutchs_runtime_config_as_the_install_page_says() {
    let mut estate = Estate::own_without_deploy().await;
    let kubeconfig = estate.cp.admin_kubeconfig();
    let home = tempfile::tempdir().expect("helm's home");
    let drc = "/apis/pkg.crossplane.io/v1beta1/deploymentruntimeconfigs/provider-anynines";
    estate
        .cp
        .kubectl(&["apply", "-f", "-"], Some(&klutchs_runtime_config()))
        .await
        .expect("Klutch's DeploymentRuntimeConfig");
    let install = [
        "install",
        "klutch-health",
        CHART,
        "-n",
        NAMESPACE,
        "--set",
        "variant=sidecar",
    ];
    let (ok, _, err) = helm_output(&kubeconfig, home.path(), &install).await;
    assert!(
        !ok,
        "helm installed over Klutch's DeploymentRuntimeConfig without adopting it"
    );
    assert!(err.contains("invalid ownership metadata"), "{err}");

    // Adopted: Helm takes it over and leaves it as it was.
    for args in [
        vec![
            "label",
            "deploymentruntimeconfig",
            "provider-anynines",
            "app.kubernetes.io/managed-by=Helm",
        ],
        vec![
            "annotate",
            "deploymentruntimeconfig",
            "provider-anynines",
            "meta.helm.sh/release-name=klutch-health",
            "meta.helm.sh/release-namespace=crossplane-system",
        ],
    ] {
        estate.cp.kubectl(&args, None).await.expect("adopt");
    }
    helm(&kubeconfig, home.path(), &install).await;
    let adopted = get(&estate.admin, drc)
        .await
        .expect("the DeploymentRuntimeConfig");
    assert_eq!(
        container_names(&adopted),
        ["package-runtime"],
        "the install page says an adopted object keeps Klutch's containers: {adopted}"
    );
    helm(
        &kubeconfig,
        home.path(),
        &["uninstall", "klutch-health", "-n", NAMESPACE],
    )
    .await;

    // The documented way: Klutch's object deleted first, the chart's in its place.
    let _ = estate
        .cp
        .kubectl(
            &[
                "delete",
                "deploymentruntimeconfig",
                "provider-anynines",
                "--ignore-not-found",
            ],
            None,
        )
        .await;
    helm(&kubeconfig, home.path(), &install).await;
    let installed = get(&estate.admin, drc)
        .await
        .expect("the chart's DeploymentRuntimeConfig");
    assert_eq!(
        container_names(&installed),
        ["package-runtime", "klutch-health"],
        "{installed}"
    );
    assert_eq!(
        installed["spec"]["deploymentTemplate"]["spec"]["template"]["spec"]["containers"][0]
            ["readinessProbe"],
        json!({"httpGet": {"path": "/healthz", "port": 8081}}),
        "Klutch's probe of package-runtime: {installed}"
    );

    a_whole_run_without_a_403(&mut estate, "deploy/sidecar/config.toml", PROVIDER_ANYNINES).await;

    helm(
        &kubeconfig,
        home.path(),
        &["uninstall", "klutch-health", "-n", NAMESPACE],
    )
    .await;
    until(
        "the DeploymentRuntimeConfig deleted with the release",
        async || get(&estate.admin, drc).await.is_none().then_some(()),
    )
    .await;
}
