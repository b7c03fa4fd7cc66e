//! Slow reload drills: a ConfigMap volume's `..data` swaps carrying a maintenance window that must outlast
//! two polls of the file and end by itself.

use std::path::Path;

use crate::common::{self, backend_config, eventually, Service};
use klutch_sim::FakeBackend;

/// The layout the kubelet gives a ConfigMap volume: `config.toml -> ..data/config.toml`, `..data -> ..TS`.
fn configmap_version(dir: &Path, version: &str, config: &str) {
    let data = dir.join(version);
    std::fs::create_dir(&data).expect("version dir");
    std::fs::write(data.join("config.toml"), config).expect("write");
    let tmp = dir.join("..data_tmp");
    std::os::unix::fs::symlink(version, &tmp).expect("symlink");
    // The kubelet's atomic swap: rename a new symlink over the old one.
    std::fs::rename(&tmp, dir.join("..data")).expect("swap ..data");
}

#[tokio::test]
async fn a_configmap_swap_reloads_and_an_invalid_one_is_refused_while_serving_on() {
    let backend = FakeBackend::start().await.expect("fake backend");
    backend.set_entry("postgresql-service-broker", "ok");
    let config = backend_config(&backend.url(), "");
    let svc = Service::start(&config, &[]).await;
    svc.wait_for("/readyz", "passing", |r| r.status == 200)
        .await;
    let dir = svc.dir.path();

    // Turn the plain file into the kubelet's layout (the same text: the checks keep running).
    configmap_version(dir, "..2026_11_25_10_00_00.1", &config);
    let link = dir.join("config.toml.new");
    std::os::unix::fs::symlink("..data/config.toml", &link).expect("symlink");
    std::fs::rename(&link, dir.join("config.toml")).expect("replace the file by the link");
    svc.reloads(1).await;

    // A maintenance window, delivered by swapping ..data: /readyz drains, /healthz and /livez do not.
    // Long enough to outlast two polls of the file; the test waits for its end.
    let until = common::in_secs(12);
    let window =
        format!("[maintenance]\nuntil = \"{until}\"\nreason = \"control plane upgrade\"\n");
    configmap_version(dir, "..2026_11_25_10_05_00.2", &format!("{config}{window}"));
    let r = svc
        .wait_for("/readyz?verbose", "the maintenance window", |r| {
            r.status == 503
        })
        .await;
    assert!(
        r.body
            .contains(&format!("maintenance until {until}: control plane upgrade")),
        "{}",
        r.body
    );
    assert_eq!(svc.get("/healthz").await.status, 200);
    assert_eq!(svc.get("/livez").await.status, 200);
    assert_eq!(svc.metric("klutch_health_maintenance").await, Some(1.0));
    assert_eq!(
        svc.metric("klutch_health_endpoint_up{endpoint=\"readyz\"}")
            .await,
        Some(0.0)
    );

    // An invalid version is refused with --check-config's words; the window stays, and ends by itself.
    configmap_version(
        dir,
        "..2026_11_25_10_10_00.3",
        &format!("{config}{window}[server]\nmax_connections = \"many\"\n"),
    );
    eventually("the refused reload", async || {
        (svc.metric("klutch_health_config_last_reload_successful")
            .await
            == Some(0.0))
        .then_some(())
    })
    .await;
    // The log is read from the child's stderr by a thread of its own: wait for it too.
    let refused = eventually("the refusal logged", async || {
        svc.logged("reload refused").into_iter().next()
    })
    .await;
    assert_eq!(refused["level"], "ERROR");
    let check = std::process::Command::new(common::BIN)
        .arg("--check-config")
        .arg("--config")
        .arg(dir.join("config.toml"))
        .output()
        .expect("--check-config");
    let words = String::from_utf8_lossy(&check.stderr);
    let message = refused["message"].as_str().expect("message");
    assert!(words.contains("server.max_connections"), "{words}");
    let key_and_value = message
        .split_once(": ")
        .map(|(_, rest)| rest)
        .expect("message");
    assert!(words.contains(key_and_value), "{words} vs {message}");
    let r = svc.get("/readyz?verbose").await;
    assert!(
        r.body.contains("maintenance until"),
        "the running config stays: {}",
        r.body
    );
    svc.wait_for("/readyz", "the window to end by itself", |r| {
        r.status == 200
    })
    .await;
    assert_eq!(svc.metric("klutch_health_maintenance").await, Some(0.0));
}
