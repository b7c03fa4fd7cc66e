//! What a real control plane does, survived without a restart of klutch-health: etcd stopped under a running
//! API server, the API server killed and started again (etcd compacted meanwhile), a watched CRD deleted and
//! created again (and one that appears only after start-up), RBAC taken away while running, and a black hole
//! and resets between klutch-health and the API server. Each on a control plane of its own.

use klutch_realcp::{Part, Proxy, ProxyMode, KLUTCH_HEALTH};

use crate::common::{kube_lines, Resp, Service};
use crate::estate::{short, wait_for, Estate};
use crate::rbac::all_ok;

const PC: &str = "postgresql-backup-manager";

/// Waits until every item of the cluster says `words` (and `/readyz` fails); the answer.
async fn every_kube_item(svc: &Service, what: &str, words: &[&str]) -> Resp {
    let r = wait_for(svc, "/readyz?verbose", what, |r| {
        let lines = kube_lines(r);
        !lines.is_empty() && lines.iter().all(|l| words.iter().all(|w| l.contains(w)))
    })
    .await;
    assert_eq!(r.status, 503, "{}", r.body);
    r
}

/// A change made now shows: the watches deliver again.
async fn a_later_change_shows(estate: &Estate, svc: &Service) {
    estate
        .sim
        .degrade_provider_config(PC, "backup manager unreachable");
    estate.mirror.caught_up().await.expect("mirrored");
    wait_for(svc, "/readyz?verbose", "a change after recovery", |r| {
        r.body.contains(&format!(
            "[-]provider-configs/{PC} failed: backup manager unreachable"
        ))
    })
    .await;
    estate.sim.heal_provider_config(PC);
    estate.mirror.caught_up().await.expect("mirrored");
    wait_for(svc, "/readyz?verbose", "healed", |r| {
        r.status == 200 && all_ok(&r.body)
    })
    .await;
}

#[tokio::test]
async fn etcd_stopped_under_a_running_api_server_turns_items_unknown_and_they_recover() {
    let mut estate = Estate::own().await;
    let svc = estate
        .klutch_health(
            KLUTCH_HEALTH,
            "klutch-health-0",
            None,
            crate::estate::short_patient_of_etcd,
        )
        .await;
    wait_for(&svc, "/readyz?verbose", "synced", |r| all_ok(&r.body)).await;

    estate.cp.stop(Part::Etcd);
    // The API server still answers /version and holds the watches open: only /readyz tells.
    let version = estate.admin.get("/version").await.expect("GET /version");
    assert_eq!(version.status, 200, "{}", version.body);
    every_kube_item(
        &svc,
        "every Kubernetes item unknown",
        &[
            " failed: API server of cluster default not ready since ",
            ": /readyz answered 500 ([-]etcd failed",
        ],
    )
    .await;

    estate.cp.start_part(Part::Etcd).await.expect("etcd again");
    estate
        .cp
        .wait_ready()
        .await
        .expect("the API server ready again");
    wait_for(&svc, "/readyz?verbose", "recovery", |r| {
        r.status == 200 && all_ok(&r.body)
    })
    .await;
    a_later_change_shows(&estate, &svc).await;
}

#[tokio::test]
async fn the_api_server_killed_and_started_again_after_a_compaction_is_followed_again() {
    let mut estate = Estate::own().await;
    let svc = estate
        .klutch_health(KLUTCH_HEALTH, "klutch-health-0", None, short)
        .await;
    wait_for(&svc, "/readyz?verbose", "synced", |r| all_ok(&r.body)).await;

    estate.cp.stop(Part::ApiServer);
    every_kube_item(&svc, "every Kubernetes item unknown", &[" failed: "]).await;
    // Every resourceVersion klutch-health knows is compacted away while the API server is gone.
    estate.cp.compact().await.expect("compaction");
    estate
        .cp
        .start_part(Part::ApiServer)
        .await
        .expect("the API server again");
    wait_for(&svc, "/readyz?verbose", "recovery", |r| {
        r.status == 200 && all_ok(&r.body)
    })
    .await;
    a_later_change_shows(&estate, &svc).await;
}

#[tokio::test]
async fn a_crd_absent_at_start_then_created_deleted_and_created_again_is_followed_without_a_restart(
) {
    let mut estate = Estate::own().await;
    let crd = "providerconfigs.dataservices.anynines.com";
    let file = "crds/dataservices.anynines.com_providerconfigs.yaml";
    estate
        .cp
        .kubectl(&["delete", "crd", crd, "--wait=true"], None)
        .await
        .expect("delete the CRD");
    let svc = estate
        .klutch_health(KLUTCH_HEALTH, "klutch-health-0", None, short)
        .await;
    let missing = format!("the API server no longer serves {crd}: is provider-anynines installed?");
    wait_for(&svc, "/readyz?verbose", "the missing CRD at start", |r| {
        r.body.contains(&missing)
    })
    .await;

    // Installed after start-up: its objects appear (the mirror writes them again) and pass.
    let install = async |estate: &Estate| {
        estate
            .cp
            .kubectl(&["apply", "--server-side", "-f", file], None)
            .await
            .expect("install the CRD");
        estate
            .cp
            .kubectl(
                &[
                    "wait",
                    "--for=condition=Established",
                    "crd",
                    crd,
                    "--timeout=120s",
                ],
                None,
            )
            .await
            .expect("established");
        for name in klutch_sim::control_plane::PROVIDER_CONFIGS {
            estate.sim.heal_provider_config(name);
        }
        estate.mirror.caught_up().await.expect("mirrored");
    };
    install(&estate).await;
    wait_for(
        &svc,
        "/readyz?verbose",
        "the CRD installed after start-up",
        |r| r.status == 200 && all_ok(&r.body),
    )
    .await;

    // Deleted while running (the API server deletes its objects first), then created again.
    estate
        .cp
        .kubectl(&["delete", "crd", crd, "--wait=true"], None)
        .await
        .expect("delete the CRD");
    let r = wait_for(&svc, "/readyz?verbose", "the deleted CRD", |r| {
        r.body.contains(&missing)
    })
    .await;
    assert_eq!(r.status, 503, "{}", r.body);
    install(&estate).await;
    wait_for(&svc, "/readyz?verbose", "the CRD created again", |r| {
        r.status == 200 && all_ok(&r.body)
    })
    .await;
    a_later_change_shows(&estate, &svc).await;
}

#[tokio::test]
async fn rbac_taken_away_while_running_says_what_to_grant_and_its_return_heals_without_a_restart() {
    let mut estate = Estate::own().await;
    let proxy = Proxy::start(estate.cp.addr()).await.expect("proxy");
    let server = format!("https://{}", proxy.addr());
    let svc = estate
        .klutch_health(KLUTCH_HEALTH, "klutch-health-0", Some(&server), short)
        .await;
    wait_for(&svc, "/readyz?verbose", "synced", |r| all_ok(&r.body)).await;

    // The providerconfigs rule is the second of the ClusterRole (deploy/rbac.yaml).
    estate
        .cp
        .kubectl(
            &[
                "patch",
                "clusterrole/klutch-health",
                "--type=json",
                "-p=[{\"op\":\"remove\",\"path\":\"/rules/1\"}]",
            ],
            None,
        )
        .await
        .expect("take the rule away");
    // Open watches keep their authorization: the next request is what is refused. Connections are reset,
    // as a restarted load balancer or API server would.
    proxy.set(ProxyMode::Reset);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    proxy.set(ProxyMode::Pass);
    wait_for(&svc, "/readyz?verbose", "the refusal in words", |r| {
        r.body.contains("grant the verb \"list\" on \"providerconfigs\" in API group \"dataservices.anynines.com\" cluster-wide (a ClusterRole)")
    })
    .await;
    estate
        .cp
        .kubectl(&["apply", "-k", "deploy"], None)
        .await
        .expect("restore the RBAC");
    wait_for(&svc, "/readyz?verbose", "recovery", |r| {
        r.status == 200 && all_ok(&r.body)
    })
    .await;
}

#[tokio::test]
async fn a_black_hole_and_resets_between_klutch_health_and_the_api_server_are_survived() {
    let mut estate = Estate::own().await;
    let proxy = Proxy::start(estate.cp.addr()).await.expect("proxy");
    let server = format!("https://{}", proxy.addr());
    let svc = estate
        .klutch_health(KLUTCH_HEALTH, "klutch-health-0", Some(&server), short)
        .await;
    wait_for(&svc, "/readyz?verbose", "synced", |r| all_ok(&r.body)).await;

    proxy.set(ProxyMode::BlackHole);
    every_kube_item(
        &svc,
        "silence",
        &[
            " failed: API server of cluster default silent since ",
            ": no answer to GET /readyz within 2s",
        ],
    )
    .await;
    proxy.set(ProxyMode::Pass);
    wait_for(
        &svc,
        "/readyz?verbose",
        "recovery from the black hole",
        |r| r.status == 200 && all_ok(&r.body),
    )
    .await;

    proxy.set(ProxyMode::Reset);
    every_kube_item(&svc, "the resets", &[" failed: "]).await;
    proxy.set(ProxyMode::Pass);
    wait_for(&svc, "/readyz?verbose", "recovery from the resets", |r| {
        r.status == 200 && all_ok(&r.body)
    })
    .await;
    a_later_change_shows(&estate, &svc).await;
}
