//! Slow at debug speed: ten thousand upstream keys per poll.

use crate::common;

use common::{backend_config, Service};
use klutch_sim::{BackendMode, FakeBackend, OddEntries};
use serde_json::Value;

#[tokio::test]
async fn ten_thousand_keys_never_write_more_lines_than_the_outcome() {
    let backend = FakeBackend::start().await.expect("fake backend");
    backend.set_entries(OddEntries::Many(10_000).entries());
    let config = backend_config(&backend.url(), "").replace("100ms", "300ms");
    let svc = Service::start(&config, &[]).await;
    // Ten thousand items per evaluation on a 2-core machine that runs the whole tier at once: what is
    // asserted is the number of lines, never how fast.
    let deadline = std::time::Duration::from_secs(90);
    let first = svc
        .wait_for_within(
            deadline,
            "/readyz/backend-status/pc-09999",
            "the first poll",
            |r| r.status == 503,
        )
        .await;
    assert_eq!(first.status, 503);
    let before = svc.logs().len();
    backend.set_mode(BackendMode::Status500);
    svc.wait_for_within(
        deadline,
        "/readyz/backend-status/_endpoint",
        "the failed poll",
        |r| r.status == 503,
    )
    .await;
    // A few more failed polls: each is the same outcome, already said.
    let target = backend.request_count() + 3;
    let started = std::time::Instant::now();
    while backend.request_count() < target {
        assert!(
            started.elapsed() < deadline,
            "timed out waiting for three more polls"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let logs = svc.logs();
    let lines: Vec<Value> = logs[before..]
        .iter()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let about: Vec<&Value> = lines
        .iter()
        .filter(|e| e["check"] == "backend-status")
        .collect();
    assert!(about.len() <= 3, "{} lines: {about:?}", about.len());
    let grouped: Vec<&&Value> = about.iter().filter(|e| e["items"] == 10_000).collect();
    assert_eq!(grouped.len(), 1, "{about:?}");
    let message = grouped[0]["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with(
            "backend-status: 10000 items fail -> unknown: not known: the last poll failed (see backend-status/_endpoint) (pc-00000, pc-00001, pc-00002 and 9997 more)"
        ),
        "{message}"
    );
    // The first poll's 10 000 degraded keys were one line too.
    let first_poll = logs[..before]
        .iter()
        .filter(|l| l.contains("\"items\":10000") && l.contains("none -> fail: degraded"))
        .count();
    assert_eq!(first_poll, 1);
}

/// The shipped containers' memory limit in bytes, as `deploy/deployment.yaml` sets it (`memory: 320Mi`).
fn shipped_memory_limit() -> u64 {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/deployment.yaml"
    ))
    .expect("deploy/deployment.yaml");
    let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).expect("YAML");
    let limit = doc["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"]
        .as_str()
        .expect("a memory limit")
        .to_string();
    let mib: u64 = limit
        .strip_suffix("Mi")
        .and_then(|n| n.parse().ok())
        .expect("written in Mi");
    mib * 1024 * 1024
}

/// The process's peak resident memory (VmHWM), in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmHWM")
        * 1024
}

/// One managed kind past its `max_objects` (the shipped 50 000): its watch fails with a message that names the
/// bound and the key, its item is unknown, the other kinds are judged, and the process never came near the
/// shipped memory limit on the way (a debug build, larger than the release one the image ships; BENCHMARKS.md
/// has the release figures for every kind at its bound).
#[tokio::test]
async fn a_managed_kind_past_max_objects_trips_with_a_clear_message_below_the_memory_limit() {
    let cp = klutch_sim::SimControlPlane::start()
        .await
        .expect("simulated control plane");
    // 50 000 more beside the seeded one: 50 001.
    cp.add_many_managed(
        klutch_sim::ManagedKind::ServiceInstance,
        50_000,
        klutch_sim::ManagedState::Ready,
        None,
    );
    let config = common::full_config(&cp.backend.url(), "");
    let svc = Service::against(&cp, &config, &[]).await;
    let want = "[-]managed-resources/serviceinstances failed: waiting for initial sync of serviceinstances.dataservices.anynines.com on cluster default: more than 50000 objects in serviceinstances.dataservices.anynines.com on cluster default (max_objects of check \"managed-resources\"; raise it if the cluster really holds that many)";
    let started = std::time::Instant::now();
    let body = loop {
        let r = svc.get("/readyz?verbose").await;
        if r.body.lines().any(|l| l == want) {
            break r.body;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(300),
            "no bound within 5 minutes; /readyz?verbose:\n{}",
            r.body
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    assert!(
        common::line(&body, "managed-resources/backups").ends_with(" ok"),
        "{body}"
    );
    let (peak, limit) = (peak_rss(svc.pid()), shipped_memory_limit());
    assert!(
        peak < limit,
        "peak RSS {} MiB against the shipped limit of {} MiB",
        peak >> 20,
        limit >> 20
    );
}
