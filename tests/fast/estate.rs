//! The whole Klutch estate through the real binary and the simulator, with the shipped checks: every
//! Crossplane package kind, and every app cluster's konnector judged by the heartbeats it writes into its
//! ClusterBinding.

use crate::common;

use std::time::Duration;

use common::{full_config, kubeconfig, line, Resp, Service};
use klutch_sim::{PackageHealth, PackageKind, SimControlPlane};

const APP: &str = "kube-bind-7xk2p";

/// The shipped config against a simulated estate whose konnectors heartbeat every `interval`.
async fn estate(interval: Duration) -> (SimControlPlane, Service) {
    let cp = SimControlPlane::start()
        .await
        .expect("simulated control plane");
    cp.seed_estate(interval);
    let svc = Service::synced(&cp, "", &[]).await;
    svc.wait_for("/readyz?verbose", "the first heartbeat", |r| {
        r.body.contains(&format!("[+]konnectors/{APP} ok"))
    })
    .await;
    (cp, svc)
}

/// `klutch_health_check_up{check,item}` as exported, if it is.
fn up(metrics: &Resp, check: &str, item: &str) -> Option<i64> {
    let series = format!("klutch_health_check_up{{check=\"{check}\",item=\"{item}\"}} ");
    metrics
        .body
        .lines()
        .find_map(|l| l.strip_prefix(&series)?.trim().parse().ok())
}

#[tokio::test]
async fn a_healthy_estate_passes_every_shipped_check() {
    let (_cp, svc) = estate(Duration::from_secs(2)).await;
    let body = svc.get("/readyz?verbose").await.body;
    for item in [
        "providers/provider-anynines",
        "providers/provider-kubernetes",
        "configurations/anynines-dataservices",
        "functions/function-patch-and-transform",
        "konnectors/kube-bind-7xk2p",
        "konnectors/kube-bind-m4n8q",
        "konnectors/kube-bind-z9t3w",
        "anynines-backend/anynines-backend",
    ] {
        assert!(line(&body, item).ends_with(" ok"), "{item} in\n{body}");
    }
}

#[tokio::test]
async fn a_silent_konnector_fails_by_timer_without_draining_readyz() {
    let interval = Duration::from_secs(2);
    let (cp, svc) = estate(interval).await;
    // Every konnector silent: no ClusterBinding event arrives at all, only the deadline can fire.
    for ns in klutch_sim::estate::APP_CLUSTERS {
        assert!(cp.silence_konnector(ns, true));
    }
    let silenced = std::time::Instant::now();
    let r = svc
        .wait_for("/readyz?verbose", "the silent konnector", |r| {
            r.body.contains(&format!(
                "[+]konnectors/{APP} warn: konnector of app cluster {APP} silent since"
            ))
        })
        .await;
    // 2 × heartbeatInterval, plus the time the last heartbeat had already aged, plus a few seconds.
    assert!(
        silenced.elapsed() < 2 * interval + Duration::from_secs(5),
        "{:?}",
        silenced.elapsed()
    );
    assert_eq!(r.status, 200, "konnectors are warn_only: {}", r.body);
    assert!(
        line(&r.body, &format!("konnectors/{APP}")).ends_with(", heartbeat expected every 2s"),
        "{}",
        r.body
    );
    let m = svc
        .wait_for("/metrics", "the item's own metric to say fail", |m| {
            up(m, "konnectors", APP) == Some(0)
        })
        .await;
    assert_eq!(up(&m, "providers", "provider-anynines"), Some(1));
    assert_eq!(svc.get("/healthz").await.status, 200);

    // Heartbeats again: seen, and the item passes.
    assert!(cp.silence_konnector(APP, false));
    svc.wait_for("/readyz?verbose", "the konnector back", |r| {
        r.body.contains(&format!("[+]konnectors/{APP} ok"))
    })
    .await;
}

#[tokio::test]
async fn a_blind_control_plane_blames_no_konnector_and_deadlines_restart_after_recovery() {
    let (cp, svc) = estate(Duration::from_secs(3)).await;
    assert!(cp.silence_konnector(APP, true));
    cp.api.set_down(true);
    // The deadline passes while the watch is broken: unknown with the cluster's reason, never fail.
    let r = svc
        .wait_for("/readyz?verbose", "the deadline inside the break", |r| {
            line(&r.body, &format!("konnectors/{APP}"))
                .contains("clusterbindings watch broken since")
        })
        .await;
    assert!(!r.body.contains("silent since"), "{}", r.body);
    let m = svc.get("/metrics").await;
    assert!(
        m.body.contains(&format!(
            "klutch_health_check_status{{check=\"konnectors\",item=\"{APP}\",status=\"unknown\"}} 1"
        )),
        "{}",
        m.body
    );
    cp.api.set_down(false);
    // After recovery the deadline restarts from the recovery time: first not failing...
    let r = svc
        .wait_for("/readyz?verbose", "the recovery", |r| {
            !line(&r.body, &format!("konnectors/{APP}")).contains("broken since")
        })
        .await;
    assert!(
        line(&r.body, &format!("konnectors/{APP}")).ends_with(" ok"),
        "{}",
        r.body
    );
    // ...then failing once 2 × heartbeatInterval has passed with the watch live.
    svc.wait_for("/readyz?verbose", "the restarted deadline", |r| {
        line(&r.body, &format!("konnectors/{APP}")).contains("silent since")
    })
    .await;
}

#[tokio::test]
async fn skew_warns_and_new_bindings_appear() {
    let (cp, svc) = estate(Duration::from_secs(2)).await;
    assert!(cp.skew_konnector(APP, 120));
    let r = svc
        .wait_for("/readyz?verbose", "the skew", |r| {
            r.body.contains("clock skew?")
        })
        .await;
    assert!(
        line(&r.body, &format!("konnectors/{APP}")).starts_with(&format!(
            "[+]konnectors/{APP} warn: konnector clock of app cluster {APP} is 1"
        )),
        "{}",
        r.body
    );
    cp.add_cluster_binding("kube-bind-n3w4p", Duration::from_secs(2));
    svc.wait_for("/readyz?verbose", "the new binding", |r| {
        r.body.contains("[+]konnectors/kube-bind-n3w4p ok")
    })
    .await;
}

#[tokio::test]
async fn unhealthy_and_lagging_packages_are_named_in_either_crossplane_wording() {
    let (cp, svc) = estate(Duration::from_secs(2)).await;
    assert!(cp.set_package_health(
        PackageKind::Function,
        "function-patch-and-transform",
        PackageHealth::UnhealthyV2
    ));
    assert!(cp.set_package_health(
        PackageKind::Configuration,
        "anynines-dataservices",
        PackageHealth::UnhealthyV1
    ));
    let r = svc
        .wait_for("/readyz?verbose", "both failures", |r| {
            r.body.contains("[-]functions/") && r.body.contains("[-]configurations/")
        })
        .await;
    assert_eq!(
        line(&r.body, "functions/function-patch-and-transform"),
        "[-]functions/function-patch-and-transform failed: Healthy is \"False\" (UnhealthyPackageRevision): \
         Package runtime health is \"False\" with message: Deployment does not have minimum availability."
    );
    assert_eq!(
        line(&r.body, "configurations/anynines-dataservices"),
        "[-]configurations/anynines-dataservices failed: Healthy is \"False\" (UnhealthyPackageRevision): \
         post establish runtime hook failed for package: configuration package deployment is unavailable \
         with message: Deployment does not have minimum availability."
    );
    assert!(cp.set_package_health(
        PackageKind::Function,
        "function-patch-and-transform",
        PackageHealth::Healthy
    ));
    assert_eq!(
        cp.bump_package_generation(PackageKind::Function, "function-patch-and-transform"),
        Some(2)
    );
    let r = svc
        .wait_for("/readyz?verbose", "the lagging generation", |r| {
            r.body
                .contains("[+]functions/function-patch-and-transform warn:")
        })
        .await;
    assert!(
        line(&r.body, "functions/function-patch-and-transform")
            .contains("is \"True\" for generation 1, the package is at generation 2"),
        "{}",
        r.body
    );
}

#[tokio::test]
async fn at_start_up_the_api_servers_status_write_decides_not_the_konnector_clock() {
    let cp = SimControlPlane::start()
        .await
        .expect("simulated control plane");
    cp.seed_estate(Duration::from_secs(2));
    // A konnector whose clock runs two minutes ahead beats once more, then dies before klutch-health starts:
    // by its own lastHeartbeatTime it would look alive for two more minutes.
    assert!(cp.skew_konnector(APP, 120));
    common::eventually("a skewed heartbeat", async || {
        let b = cp.api.get(
            klutch_sim::estate::CLUSTER_BINDING_API,
            "ClusterBinding",
            Some(APP),
            "cluster",
        )?;
        let beat: jiff::Timestamp = b["status"]["lastHeartbeatTime"].as_str()?.parse().ok()?;
        (beat > jiff::Timestamp::now()).then_some(())
    })
    .await;
    assert!(cp.silence_konnector(APP, true));
    let dir = tempfile::tempdir().expect("dir");
    let kc = kubeconfig(&cp.api, dir.path());
    let svc = Service::start(&full_config(&cp.backend.url(), ""), &[("KUBECONFIG", &kc)]).await;
    svc.wait_for("/readyz?verbose", "the dead konnector", |r| {
        r.body.contains(&format!(
            "[+]konnectors/{APP} warn: konnector of app cluster {APP} silent since"
        ))
    })
    .await;
}

/// One tenant's ClusterBinding cannot break the check for every tenant: a `heartbeatInterval` that overflows
/// any deadline, a zero one, and a heartbeat years ahead with no API server write time are warnings of that
/// konnector alone (no usable interval; clock skew), while the others keep passing on their heartbeats and
/// no check task ever dies. Such an interval once panicked the judge, froze every item, and a minute later
/// made every healthy konnector read "silent since".
#[tokio::test]
async fn one_tenants_odd_cluster_binding_is_a_warning_of_its_own() {
    let interval = Duration::from_secs(2);
    let (cp, svc) = estate(interval).await;
    let [odd, other, _] = klutch_sim::estate::APP_CLUSTERS;
    assert!(
        cp.silence_konnector(odd, true),
        "its heartbeats are written here"
    );
    let write = |status: &dyn Fn(&mut serde_json::Value)| {
        assert!(cp.api.update(
            klutch_sim::estate::CLUSTER_BINDING_API,
            "ClusterBinding",
            Some(odd),
            "cluster",
            |b| status(b),
        ));
    };
    let started = std::time::Instant::now();
    for (beat, every) in [
        ("2030-01-01T00:00:01Z", "10000000000000000000s"),
        ("2030-01-01T00:00:02Z", "0s"),
    ] {
        write(&|b| {
            b["status"]["heartbeatInterval"] = every.into();
            b["status"]["lastHeartbeatTime"] = beat.into();
        });
        let r = svc
            .wait_for("/readyz?verbose", &format!("interval {every}"), |r| {
                r.body.contains(&format!(
                    "heartbeatInterval \"{every}\" is no usable interval"
                ))
            })
            .await;
        assert!(
            line(&r.body, &format!("konnectors/{odd}"))
                .starts_with(&format!("[+]konnectors/{odd} warn: heartbeatInterval")),
            "{}",
            r.body
        );
    }
    write(&|b| {
        b["status"]["heartbeatInterval"] = "2s".into();
        b["status"]["lastHeartbeatTime"] = "2099-01-01T00:00:00Z".into();
        b["metadata"]["managedFields"] = serde_json::Value::Null;
    });
    svc.wait_for("/readyz?verbose", "the heartbeat from the future", |r| {
        line(&r.body, &format!("konnectors/{odd}")).contains(
            "ahead of the API server's (lastHeartbeatTime 2099-01-01T00:00:00Z): clock skew?",
        )
    })
    .await;
    // Well past 2 × heartbeatInterval since the first odd write, the others still pass on their heartbeats.
    let past = started + 4 * interval;
    common::eventually(
        "the other konnectors passing past their deadlines",
        async || {
            let metrics = svc.get("/metrics").await;
            let r = svc.get("/readyz?verbose").await;
            assert!(
                line(&r.body, &format!("konnectors/{other}")).ends_with(" ok"),
                "{}",
                r.body
            );
            assert_eq!(up(&metrics, "konnectors", other), Some(1));
            assert!(
                metrics
                    .body
                    .contains("klutch_health_check_task_panics_total{check=\"konnectors\"} 0"),
                "{}",
                metrics.body
            );
            (std::time::Instant::now() > past).then_some(())
        },
    )
    .await;
}

/// `providers/NAME` in the JSON report, as an item object.
fn json_item(doc: &serde_json::Value, check: &str, item: &str) -> serde_json::Value {
    doc["checks"][check]
        .as_array()
        .and_then(|items| items.iter().find(|i| i["componentId"] == item))
        .cloned()
        .unwrap_or_else(|| panic!("{check}/{item} in {doc}"))
}

/// Crossplane 2 scales idle providers to zero: the seeded provider-kubernetes, and provider-anynines once
/// flipped, pass saying so (JSON and the page; the text line stays `ok`), and the shipped `provider-pods`
/// check, which names its package, passes with no pod — until a pod is missing while the provider is active.
#[tokio::test]
async fn a_provider_scaled_to_zero_passes_and_so_does_no_pod_of_it() {
    const SCALED: &str = "scaled to zero until a ManagedResourceDefinition is active";
    let (cp, svc) = estate(Duration::from_secs(2)).await;
    let doc = svc.get("/readyz?format=json").await.json();
    assert_eq!(
        json_item(&doc, "providers", "provider-kubernetes")["output"],
        SCALED
    );
    assert!(json_item(&doc, "providers", "provider-anynines")
        .get("output")
        .is_none());

    assert!(cp.set_provider_scaled_to_zero("provider-anynines", true));
    let r = svc
        .wait_for("/readyz?verbose", "no pod, and that is fine", |r| {
            r.body.contains("[+]provider-pods/_none ok")
        })
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        r.body.contains("[+]providers/provider-anynines ok\n"),
        "{}",
        r.body
    );
    let doc = svc.get("/readyz?format=json").await.json();
    assert_eq!(
        json_item(&doc, "provider-pods", "_none")["output"],
        format!("no pod, as none should run: providers/provider-anynines is {SCALED}")
    );
    assert_eq!(
        json_item(&doc, "providers", "provider-anynines")["output"],
        SCALED
    );
    let page = svc.get("/").await.body;
    assert!(
        page.contains(&format!("providers/provider-anynines is {SCALED}")),
        "{page}"
    );

    // Active again: its pod is back and judged as always.
    assert!(cp.set_provider_scaled_to_zero("provider-anynines", false));
    svc.wait_for("/readyz?verbose", "the pod back", |r| {
        r.body
            .contains("[+]provider-pods/provider-anynines-3f2a9c1b7e5d-6b8f9c7d5-x2x7q ok")
    })
    .await;
    // No pod while the provider is active fails, as before.
    assert!(cp.api.delete(
        "v1",
        "Pod",
        Some("crossplane-system"),
        "provider-anynines-3f2a9c1b7e5d-6b8f9c7d5-x2x7q"
    ));
    let r = svc
        .wait_for("/readyz?verbose", "no pod, failing", |r| {
            r.body
                .contains("[-]provider-pods/_none failed: no pod matches")
        })
        .await;
    assert_eq!(r.status, 503);
}

/// klutch-bind's control-plane mode through the real binary: one item per AppClusterBinding (`NS.NAME`),
/// judged from both watches (the bindings, and the konnector Deployments found by their label), warn_only
/// like `konnectors` but failing in its own metrics.
#[tokio::test]
async fn app_cluster_bindings_and_the_konnectors_the_control_plane_runs() {
    const PROD: &str = "app-cluster-bindings/team-a.prod";
    let (cp, svc) = estate(Duration::from_secs(2)).await;
    let r = svc
        .wait_for("/readyz?verbose", "both bindings", |r| {
            r.body.contains(&format!("[+]{PROD} ok"))
                && r.body.contains("[+]app-cluster-bindings/team-b.dev ok")
        })
        .await;
    assert_eq!(r.status, 200);
    let doc = svc.get("/readyz?format=json").await.json();
    let prod = json_item(&doc, "app-cluster-bindings", "team-a.prod");
    assert_eq!(prod["componentType"], "app-cluster-binding");
    assert_eq!(prod["status"], "pass");
    let page = svc.get("/").await.body;
    assert!(
        page.contains(
            "<h2>app-cluster-bindings <small>app-cluster-binding · all 2 ok</small></h2>"
        ) && page.contains("team-a.prod")
            && page.contains("team-b.dev"),
        "{page}"
    );

    // KonnectorDeployed stays "True" while the Deployment is gone: the item says what is missing.
    assert!(cp.remove_app_konnector("team-a", "prod"));
    let r = svc
        .wait_for("/readyz?verbose", "the missing konnector", |r| {
            line(&r.body, PROD).contains("not found")
        })
        .await;
    assert_eq!(
        line(&r.body, PROD),
        format!(
            "[+]{PROD} warn: konnector Deployment klutch-bind-team-a-prod/konnector-prod not found \
             (spec.konnector.deploy is true)"
        )
    );
    assert_eq!(r.status, 200, "warn_only: {}", r.body);
    svc.wait_for("/metrics", "the item's own metric to say fail", |m| {
        up(m, "app-cluster-bindings", "team-a.prod") == Some(0)
    })
    .await;

    // Back, then unavailable: a change of the Deployment alone is judged again.
    assert!(cp.restore_app_konnector("team-a", "prod"));
    svc.wait_for("/readyz?verbose", "the konnector back", |r| {
        r.body.contains(&format!("[+]{PROD} ok"))
    })
    .await;
    cp.set_deployment_available("klutch-bind-team-a-prod", "konnector-prod", false);
    svc.wait_for("/readyz?verbose", "the konnector unavailable", |r| {
        line(&r.body, PROD).starts_with(&format!(
            "[+]{PROD} warn: konnector klutch-bind-team-a-prod/konnector-prod: Available is \"False\""
        ))
    })
    .await;

    // A binding whose kubeconfig Secret is invalid, without any konnector on the control plane.
    assert!(cp.set_app_cluster_binding(
        "team-b",
        "dev",
        klutch_sim::estate::BindingState::SecretInvalid
    ));
    svc.wait_for("/readyz?verbose", "the invalid secret", |r| {
        line(&r.body, "app-cluster-bindings/team-b.dev").starts_with(
            "[+]app-cluster-bindings/team-b.dev warn: SecretValid is \"False\" (KubeconfigInvalid)",
        )
    })
    .await;
}

/// A Crossplane 2 provider whose runtime is unhealthy names `RuntimeHealthy` with its own reason and message,
/// where Crossplane 1.x packages keep `Healthy`'s words (above).
#[tokio::test]
async fn a_crossplane_2_provider_names_the_health_part_that_is_false() {
    let (cp, svc) = estate(Duration::from_secs(2)).await;
    assert!(cp.set_package_health(
        PackageKind::Provider,
        "provider-kubernetes",
        PackageHealth::UnhealthyV2
    ));
    let r = svc
        .wait_for("/readyz?verbose", "the unhealthy runtime", |r| {
            r.body.contains("[-]providers/provider-kubernetes")
        })
        .await;
    assert_eq!(
        line(&r.body, "providers/provider-kubernetes"),
        "[-]providers/provider-kubernetes failed: RuntimeHealthy is \"False\" (UnhealthyPackageRevision): \
         Deployment does not have minimum availability."
    );
}
