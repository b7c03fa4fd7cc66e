//! The watches' own machinery against the real API server: streaming lists where it serves them and pages
//! where it does not, a `max_objects` trip recovers once objects are deleted, and an etcd outage relists each
//! watch at most once, without a storm of LISTs and without a failing `/readyz` once the API server is ready
//! again.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use klutch_realcp::{Part, KLUTCH_HEALTH};
use klutch_sim::{ManagedKind, ManagedState};

use crate::common::{exchange, Service};
use crate::estate::{short, until, wait_for, Estate};
use crate::rbac::all_ok;

/// The ServiceInstances the API server holds now.
async fn service_instances(estate: &Estate) -> usize {
    let list = estate
        .admin
        .get("/apis/dataservices.anynines.com/v1/serviceinstances")
        .await
        .and_then(|a| a.ok("list ServiceInstances"))
        .expect("ServiceInstances");
    list["items"].as_array().map_or(0, Vec::len)
}

/// The managed-resources check's `max_objects` set to `max`.
fn max_objects(doc: &mut toml::Table, max: usize) {
    let checks = doc
        .get_mut("check")
        .and_then(toml::Value::as_array_mut)
        .expect("checks");
    let check = checks
        .iter_mut()
        .filter_map(toml::Value::as_table_mut)
        .find(|c| c.get("name").and_then(toml::Value::as_str) == Some("managed-resources"))
        .expect("the managed-resources check");
    check.insert("max_objects".into(), (max as i64).into());
}

#[tokio::test]
async fn a_kind_past_max_objects_recovers_without_a_restart_once_objects_are_deleted() {
    let mut estate = Estate::own().await;
    let before = service_instances(&estate).await;
    let max = before + 10;
    let svc = estate
        .klutch_health(KLUTCH_HEALTH, "klutch-health-0", None, |doc| {
            short(doc);
            max_objects(doc, max);
        })
        .await;
    wait_for(&svc, "/readyz?verbose", "synced", |r| all_ok(&r.body)).await;

    // 20 more: past the bound by 10.
    let prefix =
        estate
            .sim
            .add_many_managed(ManagedKind::ServiceInstance, 20, ManagedState::Ready, None);
    estate.mirror.caught_up().await.expect("mirrored");
    let tripped = format!("more than {max} objects in serviceinstances.dataservices.anynines.com");
    wait_for(&svc, "/readyz?verbose", "the trip", |r| {
        r.body.lines().any(|l| {
            l.starts_with("[-]managed-resources/serviceinstances ") && l.contains(&tripped)
        })
    })
    .await;

    // 15 deleted: 5 under the bound.
    for i in 0..15 {
        assert!(estate
            .sim
            .remove_managed(ManagedKind::ServiceInstance, &format!("{prefix}-{i:05}")));
    }
    estate.mirror.caught_up().await.expect("mirrored");
    // No provider here removes the finalizer its objects carry.
    for i in 0..15 {
        let path = format!("/apis/dataservices.anynines.com/v1/serviceinstances/{prefix}-{i:05}");
        let a = estate
            .admin
            .merge(
                &path,
                &serde_json::json!({"metadata": {"finalizers": null}}),
            )
            .await
            .expect("PATCH");
        assert!(
            a.status.is_success() || a.status.as_u16() == 404,
            "{path}: {}",
            a.body
        );
    }
    let r = wait_for(&svc, "/readyz?verbose", "recovered", |r| {
        r.body
            .lines()
            .any(|l| l.starts_with("[+]managed-resources/serviceinstances "))
    })
    .await;
    assert!(!r.body.contains(&tripped), "{}", r.body);
    assert_eq!(service_instances(&estate).await, before + 5);
}

/// `/readyz` of `svc` asked every 30 ms until stopped: each answer's status, and when.
struct Poller {
    answers: Arc<Mutex<Vec<(Instant, u16, String)>>>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Poller {
    fn start(svc: &Service) -> Poller {
        let answers: Arc<Mutex<Vec<(Instant, u16, String)>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (addr, kept, stopped) = (svc.addr, Arc::clone(&answers), Arc::clone(&stop));
        let task = tokio::spawn(async move {
            let request = format!(
                "GET /readyz?verbose HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
            );
            while !stopped.load(Ordering::SeqCst) {
                // Bounded by the tests' request timeout; no answer counts as 0.
                let (code, body) = exchange(addr, &request)
                    .await
                    .map_or((0, String::new()), |r| (r.status, r.body));
                // The failing lines only: why.
                let failing: Vec<&str> = body.lines().filter(|l| l.starts_with("[-]")).collect();
                kept.lock()
                    .expect("answers")
                    .push((Instant::now(), code, failing.join("\n")));
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
        });
        Poller {
            answers,
            stop,
            task,
        }
    }

    async fn stop(self) -> Vec<(Instant, u16, String)> {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.expect("the poller");
        let answers = self.answers.lock().expect("answers").clone();
        answers
    }
}

/// Lists klutch-health asked for (from the audit log), per request path: LISTs, and streaming lists.
fn lists(estate: &Estate) -> std::collections::BTreeMap<String, usize> {
    let mut lists = std::collections::BTreeMap::new();
    for e in estate.cp.audit_events() {
        if crate::estate::a_list(&e) {
            let uri = e["requestURI"].as_str().unwrap_or_default();
            let path = uri.split('?').next().unwrap_or_default().to_string();
            *lists.entry(path).or_default() += 1;
        }
    }
    lists
}

#[tokio::test]
async fn an_etcd_outage_relists_each_watch_at_most_once_and_readyz_is_green_once_it_is_back() {
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
    let before = lists(&estate);
    let poller = Poller::start(&svc);

    estate.cp.stop(Part::Etcd);
    tokio::time::sleep(Duration::from_secs(3)).await;
    estate.cp.start_part(Part::Etcd).await.expect("etcd again");
    estate.cp.wait_ready().await.expect("ready again");
    let ready = Instant::now();
    wait_for(&svc, "/readyz?verbose", "green again", |r| {
        r.status == 200 && all_ok(&r.body)
    })
    .await;
    let green = Instant::now();
    // Some more time on green: nothing may fail it any more.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let answers = poller.stop().await;

    let after = lists(&estate);
    let relisted: Vec<(String, usize)> = after
        .iter()
        .map(|(path, n)| (path.clone(), n - before.get(path).copied().unwrap_or(0)))
        .filter(|(_, n)| *n > 0)
        .collect();
    assert!(
        relisted.iter().all(|(_, n)| *n <= 2),
        "each watch lists again at most twice over an etcd restart (no storm): {relisted:?}"
    );
    let unexplained: Vec<(u16, &str)> = answers
        .iter()
        .filter(|(at, code, _)| *at > green && *code != 200)
        .map(|(_, code, why)| (*code, why.as_str()))
        .collect();
    assert!(
        unexplained.is_empty(),
        "{} non-200 answers after /readyz was green again ({:?} after the API server was ready): {unexplained:?}",
        unexplained.len(),
        green - ready
    );
    assert!(answers.len() > 50, "{} answers", answers.len());
}

#[tokio::test]
async fn service_instances_with_large_parameters_are_listed_in_smaller_pages_and_one_too_large_is_left_out(
) {
    let mut estate = Estate::own().await;
    let prefix =
        estate
            .sim
            .add_many_managed(ManagedKind::ServiceInstance, 30, ManagedState::Ready, None);
    // 90 KB of parameters each (a page of 100 is 2.7 MB); one of 1.2 MB, alone above a max_body of 1 MiB.
    let big = format!("{prefix}-00007");
    for i in 0..30 {
        let name = format!("{prefix}-{i:05}");
        let size = if name == big { 1_200_000 } else { 90_000 };
        assert!(estate.sim.api.update(
            "dataservices.anynines.com/v1",
            "ServiceInstance",
            None,
            &name,
            |o| o["spec"]["forProvider"]["parameters"] =
                serde_json::json!({"blob": "x".repeat(size)}),
        ));
    }
    estate.mirror.caught_up().await.expect("mirrored");
    let stored = estate
        .admin
        .get(&format!(
            "/apis/dataservices.anynines.com/v1/serviceinstances/{big}"
        ))
        .await
        .and_then(|a| a.ok("GET the big one"))
        .expect("the big one");
    assert!(
        stored.to_string().len() > 1_100_000,
        "the API server keeps its parameters"
    );
    let svc = estate
        .klutch_health(KLUTCH_HEALTH, "klutch-health-0", None, |doc| {
            short(doc);
            if let Some(k) = doc
                .get_mut("kubernetes")
                .and_then(toml::Value::as_table_mut)
            {
                k.insert("max_body".into(), 1_048_576.into());
            }
        })
        .await;
    let r = wait_for(&svc, "/readyz?verbose", "serviceinstances listed", |r| {
        r.body
            .lines()
            .any(|l| l.starts_with("[+]managed-resources/serviceinstances "))
    })
    .await;
    assert!(!r.body.contains("larger than max_body"), "{}", r.body);
    let named = svc
        .logs()
        .into_iter()
        .filter(|l| l.contains("alone is larger than max_body") && l.contains(&big))
        .count();
    assert_eq!(named, 1, "one warning names {big}");
}

/// Whether audit event `e` is klutch-health's, on a managed resource kind.
fn klutch_health_on_managed(e: &serde_json::Value) -> bool {
    e["user"]["username"] == KLUTCH_HEALTH.user()
        && e["requestURI"]
            .as_str()
            .is_some_and(|u| u.starts_with("/apis/dataservices.anynines.com/"))
}

/// Streaming lists (a WATCH with `sendInitialEvents`) on kube-apiserver as v1.37 runs by default, no LIST;
/// once the same server runs with its `WatchList` feature gate off (v1.33's default), it is listed in pages,
/// told once, with no failure shown.
#[tokio::test]
async fn streaming_lists_where_the_server_serves_them_and_pages_once_its_watch_list_gate_is_off() {
    let mut estate = Estate::own().await;
    let svc = estate
        .klutch_health(KLUTCH_HEALTH, "klutch-health-0", None, short)
        .await;
    wait_for(&svc, "/readyz", "green", |r| r.status == 200).await;
    let events = estate.cp.audit_events();
    let managed: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| klutch_health_on_managed(e))
        .collect();
    let streamed = managed
        .iter()
        .filter(|e| e["verb"] == "watch" && crate::estate::a_list(e))
        .count();
    let paged = managed.iter().filter(|e| e["verb"] == "list").count();
    assert!(
        streamed >= 4,
        "a streaming list of each managed kind: {managed:?}"
    );
    assert_eq!(paged, 0, "no LIST: {managed:?}");
    assert_eq!(svc.logged("the API server serves streaming lists").len(), 1);

    drop(svc);

    // The same server with its WatchList gate off, once its authorizer serves klutch-health again (right
    // after a start it refuses everyone for a moment, a refusal that passes).
    estate.cp.feature_gates = "WatchList=false".into();
    estate.cp.stop(Part::ApiServer);
    estate
        .cp
        .start_part(Part::ApiServer)
        .await
        .expect("kube-apiserver with WatchList off");
    let dir = tempfile::tempdir().expect("dir");
    let kubeconfig = dir.path().join("kubeconfig");
    estate
        .cp
        .write_kubeconfig(&kubeconfig, KLUTCH_HEALTH, None)
        .expect("kubeconfig");
    let as_klutch_health = klutch_realcp::Rest::from_kubeconfig(&kubeconfig)
        .await
        .expect("a client as klutch-health");
    until("klutch-health authorized again", async || {
        let answer = as_klutch_health
            .get("/apis/dataservices.anynines.com/v1/serviceinstances")
            .await
            .ok()?;
        (answer.status == http::StatusCode::OK).then_some(())
    })
    .await;
    let from = estate.cp.audit_events().len();
    let svc = estate
        .klutch_health(KLUTCH_HEALTH, "klutch-health-1", None, short)
        .await;
    wait_for(&svc, "/readyz", "green in pages", |r| r.status == 200).await;
    let events = estate.cp.audit_events();
    let kinds: std::collections::BTreeSet<&str> = events[from..]
        .iter()
        .filter(|e| klutch_health_on_managed(e) && e["verb"] == "list")
        .filter_map(|e| e["requestURI"].as_str()?.split('?').next())
        .collect();
    assert!(
        kinds.len() >= 4,
        "each managed kind listed in pages: {kinds:?}"
    );
    let said = svc.logged("does not serve streaming lists");
    assert_eq!(said.len(), 1, "told once: {said:?}");
    assert!(
        said[0]["answer"]
            .as_str()
            .is_some_and(|a| a.contains("WatchList feature gate")),
        "the server's words: {said:?}"
    );
    assert!(
        svc.logged("watch failed").is_empty(),
        "a refused streaming list is no failure: {:?}",
        svc.logged("watch failed")
    );
    // A change after the switch shows.
    estate.sim.set_managed(
        ManagedKind::ServiceInstance,
        "pg-prod-7",
        ManagedState::Failing,
    );
    estate.mirror.caught_up().await.expect("mirrored");
    wait_for(&svc, "/readyz?verbose", "a change listed in pages", |r| {
        r.body.contains("1 failing: pg-prod-7")
    })
    .await;
}
