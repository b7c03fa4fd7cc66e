//! Evidence, not hope: a cluster whose API server falls silent turns its items `unknown`, a quiet healthy
//! one never does, a refused watch neither hides nor hammers, an endless LIST cannot eat the memory, refusals
//! say what to grant, and a kubeconfig that appears late is picked up.

use crate::common;

use common::{eventually, full_config, kube_lines, Service};
use klutch_sim::{SimControlPlane, WatchFault};

/// Short settings scaled from the shipped ones (60 s / 10 s / 10 s): silence shows within
/// `stale_after + probe_interval + probe_timeout`.
const SHORT: [(&str, &str); 3] = [
    ("KLUTCH_HEALTH_KUBERNETES__STALE_AFTER", "2s"),
    ("KLUTCH_HEALTH_KUBERNETES__PROBE_INTERVAL", "300ms"),
    ("KLUTCH_HEALTH_KUBERNETES__PROBE_TIMEOUT", "500ms"),
];

/// The shipped config against `cp` with [`SHORT`] settings (and `extra` environment).
async fn service(cp: &SimControlPlane, extra: &[(&str, &str)]) -> Service {
    let mut env = SHORT.to_vec();
    env.extend_from_slice(extra);
    Service::against(cp, &full_config(&cp.backend.url(), ""), &env).await
}

/// [`service`] once `/readyz` passes: every watch has listed.
async fn synced_service(cp: &SimControlPlane, extra: &[(&str, &str)]) -> Service {
    let mut env = SHORT.to_vec();
    env.extend_from_slice(extra);
    Service::synced(cp, "", &env).await
}

fn lists_of(cp: &SimControlPlane, plural: &str) -> usize {
    cp.api
        .requests()
        .iter()
        .filter(|r| r.lists() && r.path.ends_with(plural))
        .count()
}

#[tokio::test]
async fn a_black_holed_api_server_turns_every_item_unknown_and_its_return_restarts_the_watches() {
    let cp = SimControlPlane::start().await.expect("sim");
    let svc = synced_service(&cp, &[]).await;
    cp.api.set_frozen(true);
    let r = svc
        .wait_for("/readyz?verbose", "every Kubernetes item unknown", |r| {
            let lines = kube_lines(r);
            !lines.is_empty()
                && lines.iter().all(|l| {
                    l.contains(" failed: API server of cluster default silent since ")
                        && l.contains(": no answer to GET /readyz within 500ms")
                })
        })
        .await;
    assert_eq!(r.status, 503);
    assert!(
        r.body.contains("[+]backend-status/"),
        "the backend poll is not a cluster's: {}",
        r.body
    );
    let json = svc.get("/readyz?format=json").await.json();
    assert_eq!(json["checks"]["providers"][0]["status"], "fail");
    // The time is to the second, as in "silent since 2026-11-25T16:02:11Z".
    let line = kube_lines(&r)[0].to_string();
    let since = line.split("silent since ").nth(1).and_then(|t| {
        t.split(':')
            .take(3)
            .collect::<Vec<_>>()
            .join(":")
            .parse::<jiff::Timestamp>()
            .ok()
    });
    assert!(since.is_some(), "{line}");
    assert!(
        svc.logs()
            .iter()
            .any(|l| l.contains("API server does not answer")),
        "the silence is logged"
    );

    // One root cause: the cluster, which is no item; it explains every line of the cluster, konnectors
    // included, and nothing of the backend poll.
    let r = svc.get("/readyz?verbose").await;
    let explained = r
        .body
        .lines()
        .filter(|l| l.ends_with(" (cause: cluster/default)"))
        .count();
    let of_cluster = r
        .body
        .lines()
        .filter(|l| l.starts_with('[') && !l.contains("]backend-status/"))
        .count();
    assert_eq!(explained, of_cluster, "{}", r.body);
    let roots: Vec<&str> = r
        .body
        .lines()
        .filter(|l| l.starts_with("root cause: "))
        .collect();
    assert_eq!(roots.len(), 1, "{}", r.body);
    assert!(
        roots[0].starts_with(
            "root cause: cluster/default (API server of cluster default silent since "
        ) && roots[0].ends_with(&format!(" explains {explained} items")),
        "{}",
        r.body
    );
    assert!(!r.body.contains("[-]cluster/"), "a cause, never an item");
    let root = "klutch_health_root_cause{check=\"cluster\",item=\"default\"}";
    assert_eq!(svc.metric(root).await, Some(1.0));

    cp.api.reset_requests();
    cp.api.set_frozen(false);
    svc.wait_for("/readyz?verbose", "recovery", |r| {
        r.status == 200 && !r.body.contains("silent since")
    })
    .await;
    assert_eq!(svc.metric(root).await, Some(0.0));
    // The watches, which heard nothing through the freeze, start over with a fresh LIST within a random
    // 0.25-2.25 s (a LIST hung by the freeze never returns by itself).
    relisted(&cp, &["/providers", "/providerconfigs"]).await;
}

#[tokio::test]
async fn a_not_ready_api_server_turns_items_unknown_even_while_its_watches_deliver() {
    let cp = SimControlPlane::start().await.expect("sim");
    // BOOKMARKs every 50 ms on every watch: answers keep arriving, as a watch cache sends them with etcd down.
    cp.api
        .set_bookmark_interval(std::time::Duration::from_millis(50));
    let svc = synced_service(&cp, &[]).await;
    // etcd down: /readyz fails, everything else answers.
    cp.api.set_readiness(klutch_sim::Readiness::EtcdDown);
    let r = svc
        .wait_for("/readyz?verbose", "every Kubernetes item unknown", |r| {
            let lines = kube_lines(r);
            !lines.is_empty()
                && lines.iter().all(|l| {
                    l.contains(" failed: API server of cluster default not ready since ")
                        && l.ends_with(
                            ": /readyz answered 500 ([-]etcd failed, [-]etcd-readiness failed) (cause: cluster/default)",
                        )
                })
        })
        .await;
    assert_eq!(r.status, 503);
    assert!(
        r.body.contains(
            "root cause: cluster/default (API server of cluster default not ready since "
        ),
        "a not ready API server is a cause too: {}",
        r.body
    );
    cp.api.reset_requests();
    cp.api.set_readiness(klutch_sim::Readiness::Ready);
    svc.wait_for("/readyz?verbose", "recovery", |r| {
        r.status == 200 && !r.body.contains("not ready since")
    })
    .await;
    // BOOKMARKs are no changes: the watches heard nothing through the outage, so they start over.
    relisted(&cp, &["/providerconfigs"]).await;
}

/// Waits, within a deadline, until each of `paths` has been listed since the requests were reset.
async fn relisted(cp: &SimControlPlane, paths: &[&str]) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !paths.iter().all(|p| lists_of(cp, p) > 0) {
        assert!(
            std::time::Instant::now() < deadline,
            "the watches start over: {:#?}",
            cp.api.requests()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_forbidden_watch_keeps_the_items_and_warns_what_to_grant() {
    let cp = SimControlPlane::start().await.expect("sim");
    let svc = synced_service(&cp, &[]).await;
    cp.api
        .set_watch_fault_for("providerconfigs", Some(WatchFault::Forbidden));
    cp.api.cut_watches();
    let r = svc
        .wait_for("/readyz?verbose", "the watch warning", |r| {
            r.body.contains("[+]provider-configs/_watch warn: watch on providerconfigs.dataservices.anynines.com forbidden: grant the verb \"watch\" on \"providerconfigs\" in API group \"dataservices.anynines.com\" cluster-wide")
        })
        .await;
    assert_eq!(r.status, 200, "LIST works: the items keep their status");
    assert!(
        r.body
            .contains("[+]provider-configs/postgresql-service-broker ok"),
        "{}",
        r.body
    );
    assert!(
        !r.body.contains("Status {") && !r.body.contains("ApiError"),
        "no debug dump: {}",
        r.body
    );
    // That it relists with backoff, not in a hot loop: kubernetes::watch::task's paused-clock unit test.
    // The logs say it in words too: kube-runtime's own line with a Debug dump of the Status is kept out.
    let logs = svc.logs();
    assert!(
        logs.iter().any(|l| l.contains("watch failed; relisting")),
        "{logs:#?}"
    );
    let dumps: Vec<_> = logs
        .iter()
        .filter(|l| l.contains("Status {") || l.contains("ApiError"))
        .collect();
    assert!(dumps.is_empty(), "debug dumps in the logs: {dumps:#?}");
}

#[tokio::test]
async fn an_error_event_on_the_watch_is_a_warning_naming_it() {
    let cp = SimControlPlane::start().await.expect("sim");
    let svc = synced_service(&cp, &[]).await;
    cp.api
        .set_watch_fault_for("providers", Some(WatchFault::ErrorEvent));
    cp.api.cut_watches();
    let r = svc
        .wait_for("/readyz?verbose", "the watch warning", |r| {
            r.body.contains("[+]providers/_watch warn: watch on providers.pkg.crossplane.io failed (an ERROR event on the open watch): 500 InternalError")
        })
        .await;
    assert!(
        r.body.contains("[+]providers/provider-anynines ok"),
        "{}",
        r.body
    );
}

#[tokio::test]
async fn a_forbidden_list_says_what_to_grant() {
    let cp = SimControlPlane::start().await.expect("sim");
    // A LIST is refused, so the server lists in pages (a streaming list is authorized as a WATCH).
    cp.api.set_streaming(false);
    cp.api.set_list_forbidden("deployments", true);
    let svc = service(&cp, &[]).await;
    let r = svc
        .wait_for("/readyz?verbose", "the refusal", |r| {
            r.body.contains("[-]anynines-backend/_watch failed: waiting for initial sync of deployments.apps in namespace bind on cluster default: list on deployments.apps forbidden: grant the verb \"list\" on \"deployments\" in API group \"apps\" in namespace bind (a Role)")
        })
        .await;
    assert!(
        !r.body.contains("Status {") && !r.body.contains("ApiError"),
        "no debug dump: {}",
        r.body
    );
}

#[tokio::test]
async fn an_endless_list_fails_its_watch_at_max_objects() {
    let cp = SimControlPlane::start().await.expect("sim");
    // Endless pages: a server that lists in pages.
    cp.api.set_streaming(false);
    cp.api.set_endless_list("pods", true);
    let svc = service(&cp, &[("KLUTCH_HEALTH_KUBERNETES__MAX_OBJECTS", "300")]).await;
    let r = svc
        .wait_for("/readyz?verbose", "the bound", |r| {
            r.body.contains("more than 300 objects in pods in namespace crossplane-system with labels pkg.crossplane.io/provider=provider-anynines on cluster default (max_objects of [kubernetes]; raise it")
        })
        .await;
    assert!(r.body.contains("[-]provider-pods/"), "{}", r.body);
    assert!(
        r.body.contains("[+]providers/provider-anynines ok"),
        "other watches are not affected: {}",
        r.body
    );
    // It stopped paging at the bound (100 objects a page) and backs off instead of paging on.
    let pages = lists_of(&cp, "/pods");
    assert!(pages < 30, "{pages} pages");
}

#[tokio::test]
async fn a_kubeconfig_that_appears_after_start_is_picked_up() {
    let cp = SimControlPlane::start().await.expect("sim");
    let dir = tempfile::tempdir().expect("dir");
    let later = dir.path().join("later.kubeconfig");
    let path = later.display().to_string();
    let svc = Service::start(
        &full_config(&cp.backend.url(), ""),
        &[("KLUTCH_HEALTH_KUBERNETES__KUBECONFIG", &path), SHORT[1]],
    )
    .await;
    let r = svc
        .wait_for("/readyz?verbose", "the reason", |r| {
            r.body.contains(&format!("[-]providers/_watch failed: waiting for initial sync of providers.pkg.crossplane.io on cluster default: watch on providers.pkg.crossplane.io failed: cannot use cluster default: cannot read kubeconfig {path}: ")) && r.body.contains("(retrying until it works)")
        })
        .await;
    assert_eq!(r.status, 503);
    // The lists are retried while the file is missing (and the probe finds the cluster unusable).
    svc.wait_for("/metrics", "retried lists", |r| {
        r.body.lines().any(|l| {
            l.strip_prefix(
                "klutch_health_watch_restarts_total{check=\"providers\",reason=\"failed\"} ",
            )
            .and_then(|n| n.trim().parse::<f64>().ok())
            .is_some_and(|n| n >= 2.0)
        })
    })
    .await;
    cp.api
        .write_kubeconfig(&later)
        .expect("write the kubeconfig");
    eventually("the sync, without a restart", async || {
        (svc.get("/readyz").await.status == 200).then_some(())
    })
    .await;
}

#[test]
fn liveness_and_memory_keys_are_validated_per_cluster() {
    let check = common::backend_config("http://127.0.0.1:1/backend-health", "");
    for (table, key) in [
        (
            "[kubernetes]\nprobe_interval = \"0s\"\n",
            "kubernetes.probe_interval: must be more than 0s",
        ),
        (
            "[clusters.app]\nkubeconfig = \"/x\"\nmax_objects = 0\n",
            "clusters.app.max_objects: must be at least 1",
        ),
        (
            "[kubernetes]\nmax_body = 10\n",
            "kubernetes.max_body: must be at least 4096 bytes",
        ),
    ] {
        let e = klutch_health::config::Config::from_toml(&format!("{table}{check}"))
            .expect_err(key)
            .to_string();
        assert!(e.contains(key), "{e}");
    }
    let ok = klutch_health::config::Config::from_toml(&format!(
        "[kubernetes]\nprobe_interval = \"1s\"\nprobe_timeout = \"2s\"\nmax_objects = 5\nmax_body = 4096\n{check}"
    ))
    .expect("valid");
    assert_eq!(ok.kubernetes.max_objects, 5);
}
