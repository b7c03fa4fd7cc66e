//! Routine operation on a real API server with thousands of managed resources: editing how objects are
//! judged and rotating the kubeconfig's token never turn `/readyz` red and list nothing again.

use std::time::Duration;

use klutch_realcp::KLUTCH_HEALTH;
use klutch_sim::{ManagedKind, ManagedState};

use crate::common;
use crate::estate::{short, until, wait_for, Estate};

/// Managed resources present while the operations run.
const INSTANCES: usize = 2000;

/// The lists (LISTs and streaming lists) klutch-health asked for since audit event `from`.
fn lists_since(estate: &Estate, from: usize) -> Vec<String> {
    estate.cp.audit_events()[from..]
        .iter()
        .filter(|e| e["user"]["username"] == KLUTCH_HEALTH.user() && crate::estate::a_list(e))
        .map(|e| e["requestURI"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[tokio::test]
async fn editing_thresholds_and_rotating_the_token_never_fail_readyz_and_list_nothing() {
    let mut estate = Estate::own().await;
    estate.sim.add_many_managed(
        ManagedKind::ServiceInstance,
        INSTANCES,
        ManagedState::Ready,
        None,
    );
    estate.mirror.caught_up().await.expect("mirrored");
    let dir = tempfile::tempdir().expect("dir");
    let kubeconfig = dir.path().join("kubeconfig");
    estate
        .cp
        .write_kubeconfig(&kubeconfig, KLUTCH_HEALTH, None)
        .expect("kubeconfig");
    let path = kubeconfig.display().to_string();
    let svc = estate
        .klutch_health(KLUTCH_HEALTH, "klutch-health-0", None, |doc| {
            short(doc);
            doc["kubernetes"]
                .as_table_mut()
                .expect("[kubernetes]")
                .insert("kubeconfig".into(), path.clone().into());
        })
        .await;
    until("every instance listed", async || {
        let ready = svc
            .metric("klutch_health_managed_resources{check=\"managed-resources\",kind=\"serviceinstances\",state=\"ready\"}")
            .await;
        (ready == Some((INSTANCES + 1) as f64)).then_some(())
    })
    .await;
    wait_for(&svc, "/readyz", "green", |r| r.status == 200).await;

    let config_path = svc.dir.path().join("config.toml");
    let mut doc: toml::Table = std::fs::read_to_string(&config_path)
        .expect("config")
        .parse()
        .expect("TOML");
    let managed = |doc: &mut toml::Table, key: &str, value: toml::Value| {
        doc["check"]
            .as_array_mut()
            .expect("checks")
            .iter_mut()
            .filter_map(toml::Value::as_table_mut)
            .find(|c| c["name"].as_str() == Some("managed-resources"))
            .expect("the managed-resources check")
            .insert(key.into(), value);
    };
    let audit_from = estate.cp.audit_events().len();
    let poller = common::Poller::start(svc.addr, "/readyz?verbose", Duration::from_millis(30));
    let mut reloads = svc.logged("configuration reloaded").len();
    for (key, value) in [
        ("fail_share", toml::Value::from("29%")),
        ("ignore", toml::Value::Array(vec!["tenant-x-*".into()])),
        ("create_timeout", "1h".into()),
    ] {
        managed(&mut doc, key, value);
        std::fs::write(&config_path, toml::to_string(&doc).expect("TOML")).expect("write config");
        common::signal("HUP", svc.pid());
        reloads += 1;
        svc.reloads(reloads).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // The kubeconfig rewritten as a token refresher does: a comment, and a new token of the same user.
    let written = std::fs::read_to_string(&kubeconfig).expect("kubeconfig");
    let rotated = written.replace(&KLUTCH_HEALTH.token(), &KLUTCH_HEALTH.rotated_token());
    assert_ne!(rotated, written);
    std::fs::write(&kubeconfig, format!("# refreshed\n{rotated}")).expect("rotate");
    common::signal("HUP", svc.pid());
    reloads += 1;
    svc.reloads(reloads).await;
    until("a request with the rotated token", async || {
        estate.cp.audit_events()[audit_from..]
            .iter()
            .any(|e| e["user"]["uid"] == KLUTCH_HEALTH.rotated_token())
            .then_some(())
    })
    .await;
    // A change after the rotation still shows: the watches went on.
    estate.sim.set_managed(
        ManagedKind::ServiceInstance,
        "pg-prod-7",
        ManagedState::Failing,
    );
    estate.mirror.caught_up().await.expect("mirrored");
    wait_for(
        &svc,
        "/readyz?verbose",
        "a change after the rotation",
        |r| r.body.contains("1 failing: pg-prod-7"),
    )
    .await;

    let answers = poller.stop().await;
    assert!(answers.len() > 20, "{} polls", answers.len());
    common::all_200(&answers, "the reloads and the rotation");
    assert_eq!(lists_since(&estate, audit_from), Vec::<String>::new());
    std::mem::forget(dir);
}
