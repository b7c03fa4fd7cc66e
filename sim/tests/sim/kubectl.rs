//! Real `kubectl` against the fake API server: what an operator would run works the same.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use klutch_sim::{kubectl, SimControlPlane};

/// How long one kubectl command may take.
const DEADLINE: Duration = Duration::from_secs(15);

/// `kubectl --kubeconfig KUBECONFIG ARGS…`: its stdout, or a panic with its stderr.
async fn run(kubeconfig: &Path, args: &[&str]) -> String {
    let run = tokio::process::Command::new(kubectl())
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(DEADLINE, run)
        .await
        .unwrap_or_else(|_| panic!("kubectl {args:?}: no answer within {DEADLINE:?}"))
        .expect("run kubectl");
    assert!(
        out.status.success(),
        "kubectl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

#[tokio::test]
async fn kubectl_get_lists_what_klutch_health_watches() {
    let cp = SimControlPlane::start().await.expect("start");
    let dir = tempfile::tempdir().expect("dir");
    let kc = dir.path().join("kubeconfig");
    cp.api.write_kubeconfig(&kc).expect("kubeconfig");
    let providers = run(&kc, &["get", "providers"]).await;
    assert!(providers.contains("provider-anynines"), "{providers}");
    let pcs = run(&kc, &["get", "providerconfigs.dataservices.anynines.com"]).await;
    assert!(
        pcs.contains("postgresql-service-broker") && pcs.contains("postgresql-backup-manager"),
        "{pcs}"
    );
    let deployments = run(&kc, &["get", "deployments", "-n", "bind"]).await;
    assert!(
        deployments.contains("anynines-backend") && deployments.contains("konnector"),
        "{deployments}"
    );
    let pods = run(
        &kc,
        &[
            "get",
            "pods",
            "-n",
            "crossplane-system",
            "-l",
            "pkg.crossplane.io/provider=provider-anynines",
        ],
    )
    .await;
    assert!(pods.contains("provider-anynines-3f2a9c1b7e5d"), "{pods}");
    let json = run(
        &kc,
        &[
            "get",
            "provider",
            "provider-anynines",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Healthy\")].status}",
        ],
    )
    .await;
    assert_eq!(json, "True");
}

#[tokio::test(flavor = "multi_thread")]
async fn kubectl_get_watch_sees_a_change() {
    let cp = SimControlPlane::start().await.expect("start");
    let dir = tempfile::tempdir().expect("dir");
    let kc = dir.path().join("kubeconfig");
    cp.api.write_kubeconfig(&kc).expect("kubeconfig");
    let out = dir.path().join("watch.out");
    let file = std::fs::File::create(&out).expect("output file");
    let mut child = Command::new(kubectl())
        .arg("--kubeconfig")
        .arg(&kc)
        .args(["get", "providers", "-w", "-o", "custom-columns=NAME:.metadata.name,HEALTHY:.status.conditions[?(@.type==\"Healthy\")].status"])
        .stdout(Stdio::from(file))
        .stderr(Stdio::null())
        .spawn()
        .expect("kubectl -w");
    let read = || std::fs::read_to_string(&out).unwrap_or_default();
    let start = Instant::now();
    while !read().contains("provider-anynines") {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "kubectl -w listed nothing: {}",
            read()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cp.set_provider_healthy("provider-anynines", false);
    while !read()
        .lines()
        .any(|l| l.starts_with("provider-anynines") && l.ends_with("False"))
    {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "kubectl -w did not see the change: {}",
            read()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
}

#[tokio::test]
async fn kubectl_gets_every_package_kind_and_the_cluster_bindings() {
    let cp = SimControlPlane::start().await.expect("start");
    cp.seed_estate(Duration::from_secs(30));
    let dir = tempfile::tempdir().expect("dir");
    let kc = dir.path().join("kubeconfig");
    cp.api.write_kubeconfig(&kc).expect("kubeconfig");
    let packages = run(
        &kc,
        &["get", "providers,configurations,functions", "-o", "name"],
    )
    .await;
    assert_eq!(
        packages.lines().collect::<Vec<_>>(),
        [
            "provider.pkg.crossplane.io/provider-anynines",
            "provider.pkg.crossplane.io/provider-kubernetes",
            "configuration.pkg.crossplane.io/anynines-dataservices",
            "function.pkg.crossplane.io/function-patch-and-transform",
        ]
    );
    let bindings = run(&kc, &["get", "clusterbindings", "-A"]).await;
    for ns in klutch_sim::estate::APP_CLUSTERS {
        assert!(
            bindings
                .lines()
                .any(|l| l.starts_with(ns) && l.contains("cluster")),
            "{bindings}"
        );
    }
}

#[tokio::test]
async fn kubectl_reads_events_and_describe_shows_them() {
    let cp = SimControlPlane::start().await.expect("start");
    let dir = tempfile::tempdir().expect("dir");
    let kc = dir.path().join("kubeconfig");
    cp.api.write_kubeconfig(&kc).expect("kubeconfig");
    let pc = cp
        .api
        .get(
            "dataservices.anynines.com/v1",
            "ProviderConfig",
            None,
            "postgresql-backup-manager",
        )
        .expect("pc");
    let now = klutch_sim::api::now_rfc3339();
    let event = serde_json::json!({"apiVersion": "events.k8s.io/v1", "kind": "Event",
        "metadata": {"name": "postgresql-backup-manager.1", "namespace": "default"},
        "eventTime": now.replace('Z', ".000000Z"), "reportingController": "klutch-health",
        "reportingInstance": "klutch-health-0", "action": "Check", "reason": "HealthCheckFailed", "type": "Warning",
        "note": "connection refused", "regarding": {"apiVersion": "dataservices.anynines.com/v1",
        "kind": "ProviderConfig", "name": "postgresql-backup-manager", "uid": pc["metadata"]["uid"]}});
    let file = dir.path().join("event.json");
    std::fs::write(&file, event.to_string()).expect("event file");
    // No OpenAPI documents: the fake serves none, so kubectl cannot validate client-side.
    let created = run(
        &kc,
        &[
            "create",
            "--validate=false",
            "-f",
            file.to_str().unwrap_or_default(),
        ],
    )
    .await;
    assert!(created.contains("created"), "{created}");
    let all = run(&kc, &["get", "events", "-A"]).await;
    assert!(
        all.lines()
            .any(|l| l.starts_with("default") && l.contains("postgresql-backup-manager.1")),
        "{all}"
    );
    let columns = "custom-columns=REASON:.reason,OBJECT:.involvedObject.name,MESSAGE:.message";
    let in_default = run(&kc, &["get", "events", "-n", "default", "-o", columns]).await;
    assert!(
        in_default.contains("HealthCheckFailed   postgresql-backup-manager   connection refused"),
        "{in_default}"
    );
    let described = run(
        &kc,
        &[
            "describe",
            "providerconfig.dataservices.anynines.com",
            "postgresql-backup-manager",
        ],
    )
    .await;
    let events = described
        .split_once("Events:")
        .map(|(_, e)| e)
        .unwrap_or_default();
    assert!(
        events.contains("HealthCheckFailed") && events.contains("connection refused"),
        "{described}"
    );
}
