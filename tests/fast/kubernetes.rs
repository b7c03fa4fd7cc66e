//! The Kubernetes signals through the real binary against the fake API server: every transition, the
//! watch faults, and that probes never reach the API.

use crate::common;

use common::{full_config, kubeconfig, line, Service};
use klutch_sim::control_plane::PROVIDER_CONFIG_API;
use klutch_sim::SimControlPlane;
use serde_json::json;

async fn running(extra: &str) -> (SimControlPlane, Service) {
    running_with(extra, &[]).await
}

async fn running_with(extra: &str, env: &[(&str, &str)]) -> (SimControlPlane, Service) {
    let cp = SimControlPlane::start()
        .await
        .expect("simulated control plane");
    cp.api
        .set_bookmark_interval(std::time::Duration::from_millis(200));
    let svc = Service::synced(&cp, extra, env).await;
    (cp, svc)
}

#[tokio::test]
async fn a_healthy_control_plane_passes_and_probes_make_no_api_requests() {
    let (cp, svc) = running("").await;
    let body = svc.get("/readyz?verbose").await.body;
    for item in [
        "providers/provider-anynines ok",
        "provider-configs/postgresql-service-broker ok",
        "provider-configs/postgresql-backup-manager ok",
        "anynines-backend/anynines-backend ok",
        "provider-pods/provider-anynines-3f2a9c1b7e5d-6b8f9c7d5-x2x7q ok",
    ] {
        assert!(body.contains(&format!("[+]{item}")), "{item} in\n{body}");
    }
    // The evidence probe, the Lease and Events run on their own cadence, whatever the probes do: count
    // only reads of the watched objects.
    let data_reads = || {
        cp.api
            .requests()
            .into_iter()
            .filter(|r| {
                !(r.path == "/version"
                    || r.path == "/readyz"
                    || r.path.contains("/leases")
                    || r.path.contains("/events"))
            })
            .collect::<Vec<_>>()
    };
    // /readyz passes once every LIST is done; each WATCH opens just after: wait for them, or one would be
    // counted as caused by the probes.
    common::eventually("a watch after every list", async || {
        let reads = data_reads();
        let paths = |watching: bool| -> std::collections::BTreeSet<String> {
            reads
                .iter()
                .filter(|r| r.is_watch == watching)
                .map(|r| r.path.clone())
                .collect()
        };
        paths(false).is_subset(&paths(true)).then_some(())
    })
    .await;
    let before = data_reads().len();
    for _ in 0..200 {
        assert_eq!(svc.get("/readyz").await.status, 200);
    }
    let after = data_reads();
    assert_eq!(
        after.len(),
        before,
        "probes caused Kubernetes API requests: {:?}",
        &after[before.min(after.len())..]
    );
}

#[tokio::test]
async fn provider_healthy_flips_fail_and_recover() {
    let (cp, svc) = running("").await;
    cp.set_provider_healthy("provider-anynines", false);
    let r = svc
        .wait_for("/readyz?verbose", "the provider to fail", |r| {
            r.status == 503
        })
        .await;
    assert_eq!(
        line(&r.body, "providers/provider-anynines"),
        "[-]providers/provider-anynines failed: Healthy is \"False\" (UnhealthyPackageRevision): \
         Deployment provider-anynines-3f2a9c1b7e5d does not have minimum availability"
    );
    // healthz damps for 30s in the shipped config: the failure shows as warn, the endpoint passes.
    let h = svc.get("/healthz?verbose").await;
    assert_eq!(h.status, 200);
    assert!(
        line(&h.body, "providers/provider-anynines").contains("warn: failing for"),
        "{}",
        h.body
    );
    cp.set_provider_healthy("provider-anynines", true);
    svc.wait_for("/readyz", "recovery", |r| r.status == 200)
        .await;
}

#[tokio::test]
async fn a_listed_provider_that_is_deleted_is_not_installed() {
    // The shipped check covers whatever is installed; one that lists its packages misses a deleted one.
    let (cp, svc) = running(
        "[[check]]\nname = \"listed\"\ntype = \"crossplane-provider\"\nproviders = [\"provider-anynines\"]\n",
    )
    .await;
    assert!(cp.api.delete(
        "pkg.crossplane.io/v1",
        "Provider",
        None,
        "provider-anynines"
    ));
    let r = svc
        .wait_for("/readyz?verbose", "the deletion", |r| r.status == 503)
        .await;
    assert_eq!(
        line(&r.body, "listed/provider-anynines"),
        "[-]listed/provider-anynines failed: not installed"
    );
}

#[tokio::test]
async fn degraded_provider_config_fails_and_annotates_the_backend_item() {
    let (cp, svc) = running("").await;
    cp.degrade_provider_config(
        "postgresql-backup-manager",
        "dial tcp 10.96.12.7:3000: connect: connection refused",
    );
    let r = svc
        .wait_for("/readyz?verbose", "both signals to see it", |r| {
            r.body
                .contains("[-]backend-status/postgresql-backup-manager")
                && r.body
                    .contains("[-]provider-configs/postgresql-backup-manager")
        })
        .await;
    assert_eq!(
        line(&r.body, "provider-configs/postgresql-backup-manager"),
        "[-]provider-configs/postgresql-backup-manager failed: dial tcp 10.96.12.7:3000: connect: connection refused"
    );
    assert_eq!(
        line(&r.body, "backend-status/postgresql-backup-manager"),
        "[-]backend-status/postgresql-backup-manager failed: degraded: dial tcp 10.96.12.7:3000: connect: connection refused (cause: provider-configs/postgresql-backup-manager)"
    );
    cp.heal_provider_config("postgresql-backup-manager");
    svc.wait_for("/readyz", "recovery", |r| r.status == 200)
        .await;
}

#[tokio::test]
async fn stale_and_unchecked_provider_configs_are_unknown() {
    let (cp, svc) = running("").await;
    cp.api.update(
        PROVIDER_CONFIG_API,
        "ProviderConfig",
        None,
        "postgresql-service-broker",
        |pc| {
            pc["status"]["health"]["lastCheckTime"] = json!("2024-08-20T13:10:00Z");
        },
    );
    cp.api.update(
        PROVIDER_CONFIG_API,
        "ProviderConfig",
        None,
        "postgresql-backup-manager",
        |pc| {
            pc["status"]["health"] =
                json!({"lastCheckTime": null, "lastStatus": false, "lastMessage": ""});
        },
    );
    let r = svc
        .wait_for("/readyz?verbose", "unknown items", |r| {
            r.body.matches("[-]provider-configs").count() == 2
        })
        .await;
    assert!(
        line(&r.body, "provider-configs/postgresql-service-broker")
            .contains("provider-anynines has not checked it since 2024-08-20T13:10:00Z"),
        "{}",
        r.body
    );
    assert!(line(&r.body, "provider-configs/postgresql-backup-manager")
        .ends_with("not checked yet by provider-anynines"));
    // unknown counts as warn on healthz.
    let h = svc.get("/healthz?verbose").await;
    assert!(
        line(&h.body, "provider-configs/postgresql-backup-manager").starts_with("[+]"),
        "{}",
        h.body
    );
}

#[tokio::test]
async fn deployment_unavailable_and_deleted() {
    let (cp, svc) = running("").await;
    cp.set_deployment_available("bind", "anynines-backend", false);
    let r = svc
        .wait_for("/readyz?verbose", "unavailable", |r| r.status == 503)
        .await;
    assert!(
        line(&r.body, "anynines-backend/anynines-backend")
            .contains("Available is \"False\" (MinimumReplicasUnavailable)"),
        "{}",
        r.body
    );
    cp.api
        .delete("apps/v1", "Deployment", Some("bind"), "anynines-backend");
    let r = svc
        .wait_for("/readyz?verbose", "deleted", |r| {
            r.body.contains("anynines-backend/_missing")
        })
        .await;
    assert_eq!(
        line(&r.body, "anynines-backend/_missing"),
        "[-]anynines-backend/_missing failed: none of the Deployments anynines-backend, klutch-bind-backend \
         exists in namespace bind"
    );
}

#[tokio::test]
async fn the_backend_deployment_is_found_under_the_other_installers_name() {
    let (cp, svc) = running("").await;
    cp.rename_backend_deployment("klutch-bind-backend");
    let r = svc
        .wait_for("/readyz?verbose", "the renamed backend", |r| {
            r.status == 200
                && r.body
                    .contains("[+]anynines-backend/klutch-bind-backend ok")
        })
        .await;
    assert!(
        !r.body.contains("anynines-backend/anynines-backend"),
        "{}",
        r.body
    );
    // A rollout in progress passes, and JSON says so.
    cp.set_deployment_lagging("bind", "klutch-bind-backend");
    let r = svc
        .wait_for("/readyz?format=json", "the rollout lag", |r| {
            r.json()["checks"]["anynines-backend"][0]["output"]
                .as_str()
                .is_some_and(|o| {
                    o.starts_with(
                        "rolling out: Waiting for deployment \"klutch-bind-backend\" spec update to be \
                         observed (observed generation",
                    )
                })
        })
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
}

#[tokio::test]
async fn a_pod_that_is_not_ready_fails() {
    let (cp, svc) = running("").await;
    cp.api.update(
        "v1",
        "Pod",
        Some("crossplane-system"),
        "provider-anynines-3f2a9c1b7e5d-6b8f9c7d5-x2x7q",
        |p| {
            p["status"]["conditions"][1] = json!({"type": "Ready", "status": "False",
            "message": "containers with unready status: [package-runtime]"});
        },
    );
    let r = svc
        .wait_for("/readyz?verbose", "not ready", |r| r.status == 503)
        .await;
    assert!(
        r.body
            .contains("containers with unready status: [package-runtime]"),
        "{}",
        r.body
    );
}

#[tokio::test]
async fn before_the_initial_sync_items_are_waiting() {
    let cp = SimControlPlane::start()
        .await
        .expect("simulated control plane");
    cp.api.set_hang(true);
    let dir = tempfile::tempdir().expect("dir");
    let kc = kubeconfig(&cp.api, dir.path());
    let svc = Service::start(&full_config(&cp.backend.url(), ""), &[("KUBECONFIG", &kc)]).await;
    let r = svc.get("/readyz?verbose").await;
    assert_eq!(r.status, 503);
    assert!(
        r.body.contains(
            "[-]providers/_watch failed: waiting for initial sync of providers.pkg.crossplane.io"
        ),
        "{}",
        r.body
    );
    assert_eq!(
        svc.get("/healthz").await.status,
        200,
        "unknown is warn on healthz"
    );
    cp.api.set_hang(false);
    svc.wait_for("/readyz", "the sync once the API answers", |r| {
        r.status == 200
    })
    .await;
}

#[tokio::test]
async fn cut_watches_and_410_lead_to_a_relist_that_sees_later_changes() {
    let (cp, svc) = running("").await;
    cp.api.cut_watches();
    cp.set_provider_healthy("provider-anynines", false);
    svc.wait_for("/readyz", "the change after a cut", |r| r.status == 503)
        .await;
    for _ in 0..3 {
        cp.api.expire_watches();
    }
    cp.set_provider_healthy("provider-anynines", true);
    svc.wait_for("/readyz", "the change after a 410 storm", |r| {
        r.status == 200
    })
    .await;
    // A 410 is an ordinary relist, not a refused WATCH: no `_watch` warning for it.
    let body = svc.get("/readyz?verbose").await.body;
    assert!(!body.contains("_watch"), "{body}");
    let m = svc.get("/metrics").await.body;
    assert!(
        m.lines().any(
            |l| l.starts_with("klutch_health_watch_restarts_total{check=\"providers\",reason=")
        ),
        "{m}"
    );
}

#[tokio::test]
async fn api_down_longer_than_stale_after_turns_items_unknown_then_recovers() {
    let (cp, svc) = running_with("", &[("KLUTCH_HEALTH_KUBERNETES__STALE_AFTER", "1s")]).await;
    cp.api.set_down(true);
    let r = svc
        .wait_for("/readyz?verbose", "stale items", |r| {
            r.body
                .contains("[-]providers/provider-anynines failed: watch of")
        })
        .await;
    assert!(
        line(&r.body, "providers/provider-anynines").contains("broken since"),
        "{}",
        r.body
    );
    cp.api.set_down(false);
    svc.wait_for("/readyz", "recovery after the API is back", |r| {
        r.status == 200
    })
    .await;
    assert!(svc.get("/livez").await.status == 200);
}

#[tokio::test]
async fn an_unreachable_extra_cluster_is_unknown_and_the_rest_keeps_working() {
    let dir = tempfile::tempdir().expect("dir");
    let dead = dir.path().join("dead.kubeconfig");
    std::fs::write(
        &dead,
        "apiVersion: v1\nkind: Config\nclusters:\n- name: app\n  cluster:\n    server: http://127.0.0.1:1\n\
contexts:\n- name: app\n  context:\n    cluster: app\n    user: app\ncurrent-context: app\nusers:\n- name: app\n  user: {}\n",
    )
    .expect("kubeconfig");
    let extra = format!(
        "[clusters.app]\nkubeconfig = \"{}\"\n\n[[check]]\nname = \"konnector\"\ntype = \"deployment\"\n\
cluster = \"app\"\nnamespace = \"bind\"\ndeployment = \"konnector\"\n",
        dead.display()
    );
    let cp = SimControlPlane::start()
        .await
        .expect("simulated control plane");
    let kc = kubeconfig(&cp.api, dir.path());
    let config = full_config(&cp.backend.url(), "");
    // The extra check must come after the shipped ones' tables: insert it before [endpoints.*].
    let (head, tail) = config.split_once("[endpoints").expect("endpoints section");
    let config = format!("{head}{extra}\n[endpoints{tail}");
    let svc = Service::start(&config, &[("KUBECONFIG", &kc)]).await;
    let r = svc
        .wait_for("/readyz?verbose", "the app cluster failure", |r| {
            r.body.contains("[-]konnector/konnector failed: waiting for initial sync of deployments.apps in namespace bind on cluster app")
                && r.body.contains("[+]providers/provider-anynines ok")
        })
        .await;
    assert_eq!(r.status, 503);
    // The other checks may still be syncing when the providers pass: wait for them, not for a fixed moment.
    svc.wait_for("/readyz?exclude=konnector", "the rest to pass", |r| {
        r.status == 200
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn check_command_exits_0_when_healthy_and_1_when_not() {
    let cp = SimControlPlane::start()
        .await
        .expect("simulated control plane");
    let dir = tempfile::tempdir().expect("dir");
    let kc = kubeconfig(&cp.api, dir.path());
    let config = dir.path().join("config.toml");
    std::fs::write(&config, full_config(&cp.backend.url(), "")).expect("config");
    let run = |args: &[&str]| {
        let out = std::process::Command::new(common::BIN)
            .arg("--config")
            .arg(&config)
            .arg("check")
            .args(args)
            .env("KUBECONFIG", &kc)
            .output()
            .expect("run check");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).to_string(),
        )
    };
    let (code, out) = tokio::task::block_in_place(|| run(&[]));
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.ends_with("readyz check passed\n") && out.contains("[+]providers/provider-anynines ok"),
        "{out}"
    );
    cp.set_deployment_available("bind", "anynines-backend", false);
    let (code, out) = tokio::task::block_in_place(|| run(&["--format", "json"]));
    assert_eq!(code, Some(1), "{out}");
    let doc: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(doc["status"], "fail");
    assert_eq!(doc["checks"]["anynines-backend"][0]["status"], "fail");
    cp.api.set_down(true);
    let (code, out) =
        tokio::task::block_in_place(|| run(&["--wait", "300ms", "--endpoint", "healthz"]));
    assert_eq!(code, Some(0), "unknown is warn on healthz: {out}");
    assert!(out.contains("warn: waiting for initial sync"), "{out}");
}

#[tokio::test]
async fn an_evicted_pod_beside_a_ready_replacement_leaves_readyz_passing() {
    let (cp, svc) = running("").await;
    let evicted = cp.add_provider_pod(klutch_sim::PodState::Evicted);
    // Applied after the evicted one: once it shows, the watch has delivered both.
    let terminating = cp.add_provider_pod(klutch_sim::PodState::Terminating);
    let r = svc
        .wait_for("/readyz?verbose", "the terminating pod", |r| {
            r.body.contains(&terminating)
        })
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        line(&r.body, &format!("provider-pods/{terminating}")).starts_with(&format!(
            "[+]provider-pods/{terminating} warn: terminating (deletion requested at "
        )),
        "{}",
        r.body
    );
    assert!(!r.body.contains(&evicted), "{}", r.body);
    // A pod the scheduler cannot place says why; beside a Ready one, it warns: the package serves.
    let pending = cp.add_provider_pod(klutch_sim::PodState::Unschedulable);
    let r = svc
        .wait_for("/readyz?verbose", "the pending pod", |r| {
            r.body.contains(&pending)
        })
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        line(&r.body, &format!("provider-pods/{pending}"))
            .contains(" warn: not scheduled (Pending): Unschedulable: 0/3 nodes are available: "),
        "{}",
        r.body
    );
}

/// Events and the watches share the default cluster's one connection: its client is made once.
#[tokio::test]
async fn events_and_watches_share_one_connection_to_the_cluster() {
    let (_cp, svc) = running("").await;
    let ready: Vec<String> = svc
        .logs()
        .into_iter()
        .filter(|l| l.contains("cluster client ready"))
        .collect();
    assert_eq!(ready.len(), 1, "{ready:#?}");
}

/// The requests that asked for a streaming list (a WATCH with `sendInitialEvents=true`).
fn streaming_lists(cp: &SimControlPlane) -> usize {
    cp.api
        .requests()
        .iter()
        .filter(|r| r.is_watch && r.lists())
        .count()
}

/// LISTs of watched collections (the paginated way).
fn paged_lists(cp: &SimControlPlane) -> usize {
    cp.api
        .requests()
        .iter()
        .filter(|r| r.lists() && !r.is_watch && r.query.contains("limit="))
        .count()
}

#[tokio::test]
async fn a_server_that_serves_streaming_lists_is_never_listed_in_pages() {
    let (cp, svc) = running("").await;
    assert!(streaming_lists(&cp) > 0, "{:?}", cp.api.requests());
    assert_eq!(paged_lists(&cp), 0, "{:?}", cp.api.requests());
    assert_eq!(
        svc.logged("the API server serves streaming lists").len(),
        1,
        "said once"
    );
    // Every watch relists (a 410 on each): streamed again.
    let before = streaming_lists(&cp);
    cp.api.expire_watches();
    common::eventually("every watch streamed again", async || {
        (streaming_lists(&cp) >= 2 * before).then_some(())
    })
    .await;
    svc.wait_for("/readyz", "synced again", |r| r.status == 200)
        .await;
    assert_eq!(paged_lists(&cp), 0);
}

#[tokio::test]
async fn a_server_that_refuses_streaming_lists_is_listed_in_pages_and_asked_no_more() {
    let cp = SimControlPlane::start()
        .await
        .expect("simulated control plane");
    cp.api.set_streaming(false);
    let svc = Service::synced(&cp, "", &[]).await;
    let refused = streaming_lists(&cp);
    // The watches that started before the first refusal came back each asked once, no more.
    assert!(refused >= 1, "{:?}", cp.api.requests());
    assert!(paged_lists(&cp) > 0);
    let said = svc.logged("does not serve streaming lists");
    assert_eq!(said.len(), 1, "said once: {said:?}");
    assert!(
        said[0]["answer"]
            .as_str()
            .is_some_and(|a| a.contains("WatchList feature gate")),
        "{said:?}"
    );
    assert!(
        svc.logged("watch failed").is_empty(),
        "a refused streaming list is no failure"
    );
    // Every watch relists: in pages at once, the server not asked again.
    let lists = paged_lists(&cp);
    cp.api.expire_watches();
    common::eventually("every watch listed again", async || {
        (paged_lists(&cp) >= 2 * lists).then_some(())
    })
    .await;
    svc.wait_for("/readyz", "synced again", |r| r.status == 200)
        .await;
    assert_eq!(streaming_lists(&cp), refused, "asked no more");
}
