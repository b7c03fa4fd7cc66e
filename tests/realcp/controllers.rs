//! Kubernetes' own controllers behind the checks: the estate's Deployments (the klutch-bind backend,
//! provider-anynines' package runtime, a control-plane konnector) are created as Deployments, and
//! kube-controller-manager, kube-scheduler and kwok (by the stages of `tests/realcp/kwok/stages.yaml`) make
//! their ReplicaSets, pods and status. What klutch-health judges is what a user's cluster shows through a
//! rollout, a lost pod or node, a crash loop and a namespace deletion. Each test on a control plane of its
//! own (a kube-controller-manager, a kube-scheduler and two kwoks beside etcd and the API server): about 20 s
//! alone, its start included.

use std::time::{Duration, Instant};

use klutch_realcp::{Part, Rest, KLUTCH_HEALTH, NODES, NODE_GRACE};
use serde_json::{json, Value};

use crate::common::{all_200, line, Poller, Resp, Service};
use crate::estate::{get, wait_for, Estate, DEADLINE};

const BACKEND: &str = "/apis/apps/v1/namespaces/bind/deployments/anynines-backend";
const PROVIDER: &str =
    "/apis/apps/v1/namespaces/crossplane-system/deployments/provider-anynines-3f2a9c1b7e5d";
const KONNECTOR: &str =
    "/apis/apps/v1/namespaces/klutch-bind-team-a-prod/deployments/konnector-prod";
/// The field manager of the test's own writes.
const MANAGER: &str = "klutch-test";

/// A Deployment `name` in `namespace` whose pods carry `labels`, with `replicas` spread over the nodes, a
/// rolling update that never goes below `replicas` (`maxUnavailable: 0`, `maxSurge: 1`), and pods that leave a
/// lost node after 5 s (instead of 300 s).
fn deployment(namespace: &str, name: &str, labels: Value, replicas: i32, image: &str) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [{"name": "main", "image": image}],
                    "topologySpreadConstraints": [{
                        "maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
                        "whenUnsatisfiable": "DoNotSchedule", "nodeTaintsPolicy": "Honor",
                        "labelSelector": {"matchLabels": labels}
                    }],
                    "tolerations": [
                        {"key": "node.kubernetes.io/unreachable", "operator": "Exists",
                         "effect": "NoExecute", "tolerationSeconds": 5},
                        {"key": "node.kubernetes.io/not-ready", "operator": "Exists",
                         "effect": "NoExecute", "tolerationSeconds": 5}
                    ]
                }
            }
        }
    })
}

fn backend(replicas: i32, image: &str) -> Value {
    deployment(
        "bind",
        "anynines-backend",
        json!({"app": "anynines-backend"}),
        replicas,
        image,
    )
}

/// provider-anynines' runtime Deployment with the labels Crossplane's package manager puts on it and its
/// pods (the shipped `provider-pods` check selects them).
fn provider(image: &str) -> Value {
    let mut d = deployment(
        "crossplane-system",
        "provider-anynines-3f2a9c1b7e5d",
        json!({"pkg.crossplane.io/provider": "provider-anynines"}),
        1,
        image,
    );
    d["spec"]["template"]["spec"]["containers"][0]["name"] = json!("package-runtime");
    d["spec"]["template"]["metadata"]["labels"]["pkg.crossplane.io/revision"] =
        json!("provider-anynines-3f2a9c1b7e5d");
    d
}

fn konnector() -> Value {
    deployment(
        "klutch-bind-team-a-prod",
        "konnector-prod",
        json!({"app": "konnector",
               "klutch.anynines.com/appclusterbinding-name": "prod",
               "klutch.anynines.com/appclusterbinding-namespace": "team-a"}),
        1,
        "example/konnector:v1",
    )
}

async fn apply(admin: &Rest, path: &str, obj: &Value) {
    admin
        .apply(path, obj, MANAGER)
        .await
        .and_then(|a| a.ok("apply"))
        .unwrap_or_else(|e| panic!("apply {path}: {e:#}"));
}

async fn merge(admin: &Rest, path: &str, patch: Value) {
    admin
        .merge(path, &patch)
        .await
        .and_then(|a| a.ok("patch"))
        .unwrap_or_else(|e| panic!("patch {path}: {e:#}"));
}

/// Waits until the Deployment at `path` has rolled out its current spec completely (what `kubectl rollout
/// status` waits for); the panic shows its status and the controllers' logs.
async fn rolled_out(estate: &Estate, path: &str) {
    let start = Instant::now();
    loop {
        let d = get(&estate.admin, path).await.unwrap_or(Value::Null);
        let want = d["spec"]["replicas"].as_i64().unwrap_or(1);
        let s = &d["status"];
        let n = |k: &str| s[k].as_i64().unwrap_or(0);
        if s["observedGeneration"].as_i64() >= d["metadata"]["generation"].as_i64()
            && d["metadata"]["generation"].is_i64()
            && n("updatedReplicas") == want
            && n("replicas") == want
            && n("availableReplicas") == want
        {
            return;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "{path} not rolled out within {DEADLINE:?}: {:#}\n{}",
            d["status"],
            estate.cp.controller_logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The pods of a Deployment (`selector` as `key=value`), by name, with their node.
async fn pods(admin: &Rest, namespace: &str, selector: &str) -> Vec<Value> {
    let answer = admin
        .get(&format!(
            "/api/v1/namespaces/{namespace}/pods?labelSelector={selector}"
        ))
        .await
        .and_then(|a| a.ok("list pods"))
        .expect("pods");
    answer["items"].as_array().cloned().unwrap_or_default()
}

/// `/readyz?format=json` asked every 50 ms from now until [`Poller::stop`].
fn poll_readyz(svc: &Service) -> Poller {
    Poller::start(svc.addr, "/readyz?format=json", Duration::from_millis(50))
}

/// The JSON `output` of `check/item` in an answer (`None` when the item says nothing beyond its status).
fn output(answer: &Resp, check: &str, item: &str) -> Option<String> {
    answer.json()["checks"][check]
        .as_array()
        .into_iter()
        .flatten()
        .find(|i| i["componentId"] == item)
        .and_then(|i| i["output"].as_str().map(str::to_string))
}

/// The estate with the backend (two replicas), provider-anynines (one) and a konnector as Deployments,
/// rolled out, and klutch-health with the shipped configuration, every item passing.
async fn running() -> (Estate, Service) {
    let mut estate = Estate::with_controllers().await;
    apply(
        &estate.admin,
        BACKEND,
        &backend(2, "example/anynines-backend:v1"),
    )
    .await;
    apply(
        &estate.admin,
        PROVIDER,
        &provider("example/provider-anynines:v1"),
    )
    .await;
    apply(&estate.admin, KONNECTOR, &konnector()).await;
    for path in [BACKEND, PROVIDER, KONNECTOR] {
        rolled_out(&estate, path).await;
    }
    let svc = estate
        .klutch_health(KLUTCH_HEALTH, "klutch-health-0", None, |_| {})
        .await;
    wait_for(&svc, "/readyz?verbose", "every item passing", |r| {
        r.status == 200
            && !r.body.contains(" warn: ")
            && r.body.contains("[+]app-cluster-bindings/team-a.prod ok\n")
            && r.body.contains("[+]anynines-backend/anynines-backend ok\n")
    })
    .await;
    (estate, svc)
}

/// A routine rolling update pages nobody: `/readyz` answers 200 all through it, and the item says it is
/// rolling out while it does.
#[tokio::test]
async fn a_rolling_update_of_the_backend_never_fails_readyz() {
    let (estate, svc) = running().await;
    let poller = poll_readyz(&svc);
    merge(
        &estate.admin,
        BACKEND,
        json!({"spec": {"template": {"spec": {"containers": [
            {"name": "main", "image": "example/anynines-backend:v2"}]}}}}),
    )
    .await;
    rolled_out(&estate, BACKEND).await;
    wait_for(&svc, "/readyz?format=json", "the rollout done", |r| {
        output(r, "anynines-backend", "anynines-backend").is_none()
    })
    .await;
    let answers = poller.stop().await;
    all_200(&answers, "a rolling update");
    let said: Vec<String> = answers
        .iter()
        .filter_map(|r| output(r, "anynines-backend", "anynines-backend"))
        .collect();
    assert!(
        said.iter().any(|o| o.starts_with(
            "rolling out: Waiting for deployment \"anynines-backend\" rollout to finish: "
        )),
        "the item never said it was rolling out: {said:?}"
    );
}

/// A rollout whose new pods never become ready warns while the old replicas serve (naming the rollout,
/// then the controller's `ProgressDeadlineExceeded`), and never fails `/readyz` while they do.
#[tokio::test]
async fn a_stuck_rollout_warns_and_fails_only_when_too_few_serve() {
    let (estate, svc) = running().await;
    let poller = poll_readyz(&svc);
    // The stall shows after half of the 10 s deadline without progress, the deadline itself after 10 s.
    merge(
        &estate.admin,
        BACKEND,
        json!({"spec": {"progressDeadlineSeconds": 10, "template": {
            "metadata": {"labels": {"klutch-health.test/stage": "never-ready"}},
            "spec": {"containers": [{"name": "main", "image": "example/anynines-backend:broken"}]}}}}),
    )
    .await;
    let r = wait_for(&svc, "/readyz?verbose", "the stalled rollout", |r| {
        line(&r.body, "anynines-backend/anynines-backend").starts_with(
            "[+]anynines-backend/anynines-backend warn: rolling out without progress since ",
        )
    })
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = wait_for(&svc, "/readyz?verbose", "the progress deadline", |r| {
        line(&r.body, "anynines-backend/anynines-backend").starts_with(
            "[+]anynines-backend/anynines-backend warn: deployment \"anynines-backend\" exceeded its \
             progress deadline",
        )
    })
    .await;
    assert!(
        line(&r.body, "anynines-backend/anynines-backend").ends_with("; 2 of 2 replicas available"),
        "{}",
        r.body
    );
    all_200(
        &poller.stop().await,
        "a stuck rollout while the old replicas serve",
    );

    // Too few serve: both nodes stop heartbeating, and the node lifecycle controller marks the old pods not
    // Ready.
    let mut estate = estate;
    for node in NODES {
        estate.cp.stop(Part::Kubelet(node));
    }
    let r = svc
        .wait_for_within(
            DEADLINE + NODE_GRACE,
            "/readyz?verbose",
            "fewer than min_available",
            |r| {
                line(&r.body, "anynines-backend/anynines-backend")
                    .starts_with("[-]anynines-backend/anynines-backend failed: ")
            },
        )
        .await;
    let item = line(&r.body, "anynines-backend/anynines-backend");
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(
        item.contains("exceeded its progress deadline")
            // The simulator's words for an unavailable Deployment, here from the controller's own status.
            && item.contains(
                "Available is \"False\" (MinimumReplicasUnavailable): Deployment does not have minimum \
                 availability.",
            )
            && item.ends_with("0 of 2 replicas available, min_available is 1"),
        "{}",
        r.body
    );
}

/// With two replicas and `min_available = 1`, losing one (its pod deleted; its node gone silent until the
/// eviction) never fails `/readyz`; no replica fails it; the Deployment deleted fails it, and created again
/// leaves no stale item behind.
#[tokio::test]
async fn a_lost_pod_or_node_never_fails_readyz_and_no_replica_does() {
    let (mut estate, svc) = running().await;

    let poller = poll_readyz(&svc);
    let victim = pods(&estate.admin, "bind", "app=anynines-backend").await[0].clone();
    let name = victim["metadata"]["name"].as_str().expect("a pod name");
    estate
        .admin
        .delete(&format!("/api/v1/namespaces/bind/pods/{name}"), None)
        .await
        .expect("delete a pod");
    crate::estate::until("the deleted pod gone", async || {
        let left = pods(&estate.admin, "bind", "app=anynines-backend").await;
        (!left.iter().any(|p| p["metadata"]["name"] == name)).then_some(())
    })
    .await;
    rolled_out(&estate, BACKEND).await;
    wait_for(&svc, "/readyz?verbose", "the replacement", |r| {
        r.body.contains("[+]anynines-backend/anynines-backend ok")
    })
    .await;
    all_200(&poller.stop().await, "a pod deleted");

    // A node stops heartbeating: its pod turns not Ready once the node lifecycle controller calls the node
    // lost, is evicted 5 s later and replaced on the other node. The node lost is one that does not run
    // provider-anynines' one replica: losing that would be a real outage of the provider.
    let poller = poll_readyz(&svc);
    let provider_nodes: Vec<String> = pods(
        &estate.admin,
        "crossplane-system",
        "pkg.crossplane.io/provider=provider-anynines",
    )
    .await
    .iter()
    .filter_map(|p| p["spec"]["nodeName"].as_str().map(str::to_string))
    .collect();
    let on = pods(&estate.admin, "bind", "app=anynines-backend").await;
    let node = on
        .iter()
        .filter_map(|p| p["spec"]["nodeName"].as_str())
        .find(|n| !provider_nodes.iter().any(|p| p == n))
        .expect(
            "a backend pod on a node without provider-anynines (the two replicas spread over both)",
        );
    let node = *NODES.iter().find(|n| **n == node).expect("a kwok node");
    estate.cp.stop(Part::Kubelet(node));
    estate
        .cp
        .wait_node(node, "Unknown")
        .await
        .expect("the node lost");
    let r = wait_for(&svc, "/readyz?verbose", "one replica lost", |r| {
        line(&r.body, "anynines-backend/anynines-backend").contains("1 of 2 replicas available")
    })
    .await;
    assert!(
        line(&r.body, "anynines-backend/anynines-backend")
            .starts_with("[+]anynines-backend/anynines-backend warn: Available is \"False\" (MinimumReplicasUnavailable)"),
        "{}",
        r.body
    );
    svc.wait_for_within(
        DEADLINE + NODE_GRACE,
        "/readyz?verbose",
        "the replacement on the other node",
        |r| r.body.contains("[+]anynines-backend/anynines-backend ok"),
    )
    .await;
    all_200(&poller.stop().await, "a node lost");

    // No replica: fails; back: passes.
    merge(&estate.admin, BACKEND, json!({"spec": {"replicas": 0}})).await;
    let r = wait_for(&svc, "/readyz?verbose", "scaled to zero", |r| {
        r.status == 503
    })
    .await;
    assert!(
        line(&r.body, "anynines-backend/anynines-backend")
            .ends_with("0 of 0 replicas available, min_available is 1"),
        "{}",
        r.body
    );
    merge(&estate.admin, BACKEND, json!({"spec": {"replicas": 2}})).await;
    wait_for(&svc, "/readyz?verbose", "scaled back", |r| {
        r.status == 200 && r.body.contains("[+]anynines-backend/anynines-backend ok")
    })
    .await;

    // Deleted, then created again: `_missing` comes and goes.
    estate
        .admin
        .delete(BACKEND, None)
        .await
        .expect("delete the Deployment");
    let r = wait_for(&svc, "/readyz?verbose", "the Deployment gone", |r| {
        r.body.contains("anynines-backend/_missing")
    })
    .await;
    assert_eq!(r.status, 503, "{}", r.body);
    apply(
        &estate.admin,
        BACKEND,
        &backend(2, "example/anynines-backend:v1"),
    )
    .await;
    let r = wait_for(&svc, "/readyz?verbose", "the Deployment back", |r| {
        r.body.contains("[+]anynines-backend/anynines-backend ok")
    })
    .await;
    assert!(!r.body.contains("_missing"), "{}", r.body);
}

/// provider-anynines as Crossplane runs it: a healthy rollout of its Deployment answers 200 throughout; a
/// new revision that crash-loops (by kwok's stage) beside the old one warns naming CrashLoopBackOff and its
/// restarts; every pod crash-looping fails the pods check, which is the root cause of the Provider and the
/// health endpoint.
#[tokio::test]
async fn a_crash_looping_provider_is_named_and_is_the_root_cause() {
    let (estate, svc) = running().await;
    let poller = poll_readyz(&svc);
    merge(
        &estate.admin,
        PROVIDER,
        json!({"spec": {"template": {"spec": {"containers": [
            {"name": "package-runtime", "image": "example/provider-anynines:v2"}]}}}}),
    )
    .await;
    rolled_out(&estate, PROVIDER).await;
    wait_for(&svc, "/readyz?verbose", "one provider pod again", |r| {
        r.body.matches("provider-pods/").count() == 1
    })
    .await;
    all_200(
        &poller.stop().await,
        "a healthy rollout of provider-anynines",
    );

    merge(
        &estate.admin,
        PROVIDER,
        json!({"spec": {"template": {
            "metadata": {"labels": {"klutch-health.test/stage": "crash-loop"}},
            "spec": {"containers": [{"name": "package-runtime", "image": "example/provider-anynines:v3"}]}}}}),
    )
    .await;
    let r = wait_for(
        &svc,
        "/readyz?verbose",
        "the new revision crash-looping",
        |r| {
            r.body.lines().any(|l| {
                l.starts_with("[+]provider-pods/")
                    && l.contains(" warn: container package-runtime in CrashLoopBackOff (")
                    && !l.contains("(1 restarts)")
            })
        },
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);

    // Every pod crash-looping: the serving one's container starts failing too, and Crossplane reports the
    // Provider unhealthy while its health server refuses (the simulator writes what Crossplane would).
    for pod in pods(
        &estate.admin,
        "crossplane-system",
        "pkg.crossplane.io/provider=provider-anynines",
    )
    .await
    {
        let name = pod["metadata"]["name"].as_str().expect("a pod name");
        merge(
            &estate.admin,
            &format!("/api/v1/namespaces/crossplane-system/pods/{name}"),
            json!({"metadata": {"labels": {"klutch-health.test/stage": "crash-loop"}}}),
        )
        .await;
    }
    estate.sim.crash_loop_provider(true);
    estate.mirror.caught_up().await.expect("mirrored");
    // The simulator's words for a crash-looping provider pod (DETECTION.md), here from kwok's stage: while
    // its container waits between restarts.
    let crash_looping =
        " failed: not ready (Running): containers with unready status: [package-runtime]; \
                         container package-runtime in CrashLoopBackOff (";
    let r = wait_for(&svc, "/readyz?verbose", "the root cause", |r| {
        let lines: Vec<&str> = r.body.lines().collect();
        r.body.contains("root cause: provider-pods/")
            && lines.iter().any(|l| {
                l.starts_with("[-]providers/provider-anynines failed: ")
                    && l.contains("(cause: provider-pods/")
            })
            && lines
                .iter()
                .any(|l| l.starts_with("[-]provider-pods/") && l.contains(crash_looping))
    })
    .await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(
        r.body.lines().any(|l| {
            l.starts_with("[-]backend-status/_endpoint failed: ")
                && l.contains("(cause: provider-pods/")
        }),
        "{}",
        r.body
    );
}

/// A control-plane konnector's namespace deleted: the namespace controller removes its Deployment, and the
/// binding's item says the konnector is missing (`warn` on both endpoints: the shipped `warn_only`).
#[tokio::test]
async fn a_konnector_namespace_deleted_is_a_missing_konnector() {
    let (estate, svc) = running().await;
    estate
        .admin
        .delete("/api/v1/namespaces/klutch-bind-team-a-prod", None)
        .await
        .expect("delete the namespace");
    let r = wait_for(&svc, "/readyz?verbose", "the konnector missing", |r| {
        line(&r.body, "app-cluster-bindings/team-a.prod").contains(
            "konnector Deployment klutch-bind-team-a-prod/konnector-prod not found (spec.konnector.deploy is true)",
        )
    })
    .await;
    assert!(
        line(&r.body, "app-cluster-bindings/team-a.prod")
            .starts_with("[+]app-cluster-bindings/team-a.prod warn: "),
        "{}",
        r.body
    );
}
