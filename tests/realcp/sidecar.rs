//! The sidecar variant against the real API server: `kubectl apply --server-side` of `deploy/sidecar` onto
//! the `provider-anynines` DeploymentRuntimeConfig as Klutch ships it keeps everything of Klutch's (the
//! `readinessProbe` of `package-runtime` above all) beside the new container, and the sidecar's own RBAC is
//! all its ServiceAccount needs. Every rendered manifest passes the real server's validation.

use klutch_realcp::PROVIDER_ANYNINES;
use serde_json::Value;

use crate::estate::{get, Estate};
use crate::rbac::a_whole_run_without_a_403;

const DRC: &str = "/apis/pkg.crossplane.io/v1beta1/deploymentruntimeconfigs/provider-anynines";

/// The DeploymentRuntimeConfig document of Klutch's install manifest (the Provider beside it names a
/// placeholder package; the mirrored estate has its own).
pub fn klutchs_runtime_config() -> String {
    let install = include_str!("../fixtures/klutch-provider-anynines-install.yaml");
    install
        .split("\n---\n")
        .find(|doc| doc.contains("kind: DeploymentRuntimeConfig"))
        .expect("Klutch's DeploymentRuntimeConfig")
        .to_string()
}

/// Where `inner` is not contained in `outer`: every field of `inner` with the same value, list items
/// matched by `name` when they have one. `None` when all of it is there.
fn missing(outer: &Value, inner: &Value, at: &str) -> Option<String> {
    match (outer, inner) {
        (Value::Object(o), Value::Object(i)) => i.iter().find_map(|(k, v)| match o.get(k) {
            Some(ov) => missing(ov, v, &format!("{at}.{k}")),
            None => Some(format!("{at}.{k} is gone")),
        }),
        (Value::Array(o), Value::Array(i)) => i.iter().find_map(|item| {
            let found = match item.get("name") {
                Some(name) => o.iter().find(|x| x.get("name") == Some(name)),
                None => o.iter().find(|x| missing(x, item, at).is_none()),
            };
            match found {
                Some(x) => missing(x, item, &format!("{at}[{}]", item["name"])),
                None => Some(format!("{at}: {item} is gone")),
            }
        }),
        (o, i) if o == i => None,
        (o, i) => Some(format!("{at}: {i} became {o}")),
    }
}

#[tokio::test]
async fn the_sidecar_merges_into_klutchs_runtime_config_keeping_its_probe_and_needs_no_more_rbac() {
    let mut estate = Estate::own_without_deploy().await;
    // As Klutch's installer applies it (client-side), then the sidecar as docs/operators/install.md says.
    estate
        .cp
        .kubectl(&["apply", "-f", "-"], Some(&klutchs_runtime_config()))
        .await
        .expect("Klutch's DeploymentRuntimeConfig");
    let klutchs = get(&estate.admin, DRC).await.expect("stored");
    estate
        .cp
        .kubectl(&["apply", "--server-side", "-k", "deploy/sidecar"], None)
        .await
        .expect("kubectl apply --server-side -k deploy/sidecar");
    let merged = get(&estate.admin, DRC).await.expect("stored");

    let containers =
        &merged["spec"]["deploymentTemplate"]["spec"]["template"]["spec"]["containers"];
    let names: Vec<&str> = containers
        .as_array()
        .expect("containers")
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(names, ["package-runtime", "klutch-health"], "{merged}");
    assert_eq!(
        containers[0]["readinessProbe"],
        serde_json::json!({"httpGet": {"path": "/healthz", "port": 8081}}),
        "Klutch's probe of package-runtime: {merged}"
    );
    assert_eq!(
        containers[1]["readinessProbe"]["httpGet"]["path"], "/livez",
        "the sidecar's own probe never makes the provider pod NotReady: {merged}"
    );
    assert_eq!(
        missing(&merged["spec"], &klutchs["spec"], "spec"),
        None,
        "nothing of Klutch's is lost: {merged}"
    );

    // The sidecar's RBAC is all provider-anynines' ServiceAccount needs for the sidecar's configuration.
    a_whole_run_without_a_403(&mut estate, "deploy/sidecar/config.toml", PROVIDER_ANYNINES).await;
}

#[tokio::test]
async fn every_rendered_manifest_passes_the_real_servers_validation() {
    let estate = Estate::shared().await;
    for dir in [
        "deploy",
        "deploy/monitoring",
        "deploy/monitoring/podmonitor",
    ] {
        let out = estate
            .cp
            .kubectl(&["apply", "--dry-run=server", "-k", dir], None)
            .await
            .unwrap_or_else(|e| panic!("{dir}: {e:#}"));
        assert!(out.contains("(server dry run)"), "{dir}: {out}");
    }
}

#[test]
fn missing_names_what_is_gone() {
    let klutch = serde_json::json!({"containers": [{"name": "a", "probe": {"port": 1}}], "x": 1});
    let kept = serde_json::json!({"containers": [{"name": "b"}, {"name": "a", "probe": {"port": 1}, "y": 2}], "x": 1});
    assert_eq!(missing(&kept, &klutch, "spec"), None);
    let lost = serde_json::json!({"containers": [{"name": "a"}], "x": 1});
    assert_eq!(
        missing(&lost, &klutch, "spec").as_deref(),
        Some("spec.containers[\"a\"].probe is gone")
    );
}
