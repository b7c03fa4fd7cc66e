//! `/metrics`: every metric klutch-health exports, valid for the real `promtool`, and following the state.

use crate::common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::{backend_config, metric_value as value, Service};
use klutch_sim::FakeBackend;

fn promtool() -> &'static str {
    ["/usr/bin/promtool", "/usr/local/bin/promtool"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("promtool is not installed: .ci/run installs it (Debian package prometheus)")
}

fn promtool_check(text: &str) -> (bool, String) {
    let mut child = Command::new(promtool())
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("promtool output");
    let msg =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), msg)
}

#[tokio::test]
async fn metrics_pass_promtool_and_follow_state_changes() {
    let backend = FakeBackend::start().await.expect("fake backend");
    backend.set_entry("pg", "ok");
    let svc = Service::start(&backend_config(&backend.url(), ""), &[]).await;
    svc.wait_for("/readyz", "passing", |r| r.status == 200)
        .await;

    let m = svc.get("/metrics").await;
    assert_eq!(
        m.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let (ok, msg) = promtool_check(&m.body);
    assert!(ok, "promtool check metrics: {msg}\n{}", m.body);
    for name in [
        "klutch_health_check_up{",
        "klutch_health_check_status{",
        "klutch_health_check_last_transition_timestamp_seconds{",
        "klutch_health_root_cause{",
        "klutch_health_endpoint_up{",
        "klutch_health_upstream_requests_total{",
        "klutch_health_upstream_request_duration_seconds_bucket{",
        "klutch_health_http_requests_total{",
        "klutch_health_build_info{",
    ] {
        assert!(m.body.contains(name), "{name} missing in\n{}", m.body);
    }
    // klutch_health_watch_restarts_total has samples once a watch restarts: tests/fast/kubernetes.rs checks it.
    let up = "klutch_health_check_up{check=\"backend-status\",item=\"pg\"}";
    assert_eq!(value(&m.body, up), Some(1.0));
    assert_eq!(
        value(&m.body, "klutch_health_endpoint_up{endpoint=\"readyz\"}"),
        Some(1.0)
    );
    let since = "klutch_health_check_last_transition_timestamp_seconds{check=\"backend-status\",item=\"pg\"}";
    let before = value(&m.body, since).expect("transition time");
    let requests = |body: &str| {
        value(
            body,
            "klutch_health_http_requests_total{path=\"/readyz\",code=\"200\"}",
        )
    };
    let served = requests(&m.body).expect("readyz requests counted");
    assert_eq!(
        value(
            &m.body,
            "klutch_health_http_requests_total{path=\"/healthz\",code=\"503\"}"
        ),
        Some(0.0),
        "the probes' series are exported from the start, at zero"
    );

    backend.set_entry("pg", "degraded");
    svc.wait_for("/readyz", "the failure", |r| r.status == 503)
        .await;
    let m = svc.get("/metrics").await.body;
    assert_eq!(value(&m, up), Some(0.0), "a failing item is down");
    assert_eq!(
        value(
            &m,
            "klutch_health_check_status{check=\"backend-status\",item=\"pg\",status=\"fail\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        value(&m, "klutch_health_endpoint_up{endpoint=\"readyz\"}"),
        Some(0.0)
    );
    assert!(
        value(&m, since).expect("transition time") > before,
        "the transition time moved"
    );
    assert!(
        requests(&m).expect("counter") >= served,
        "the request counter counts"
    );
    assert!(
        value(
            &m,
            "klutch_health_http_requests_total{path=\"/readyz\",code=\"503\"}"
        )
        .is_some_and(|n| n >= 1.0),
        "the 503 that wait_for saw is counted"
    );
    assert!(
        value(
            &m,
            "klutch_health_upstream_requests_total{check=\"backend-status\",outcome=\"success\"}"
        )
        .unwrap_or(0.0)
            >= 2.0
    );
    let (ok, msg) = promtool_check(&m);
    assert!(ok, "{msg}");
}

#[tokio::test]
async fn label_values_from_upstream_are_escaped() {
    let backend = FakeBackend::start().await.expect("fake backend");
    backend.set_entry("we\"ird\\name", "ok");
    backend.set_entry("two\nlines", "degraded");
    let svc = Service::start(&backend_config(&backend.url(), ""), &[]).await;
    let m = svc
        .wait_for("/metrics", "the odd items' series", |r| {
            r.body.contains("ird")
        })
        .await;
    let (ok, msg) = promtool_check(&m.body);
    assert!(ok, "promtool check metrics: {msg}\n{}", m.body);
    assert_eq!(
        value(
            &m.body,
            // Keys that are no Kubernetes names arrive percent-encoded (see backend_status::item_name).
            r#"klutch_health_check_up{check="backend-status",item="we%22ird%5Cname"}"#
        ),
        Some(1.0),
        "{}",
        m.body
    );
    assert_eq!(
        value(
            &m.body,
            r#"klutch_health_check_up{check="backend-status",item="two%0Alines"}"#
        ),
        Some(0.0),
        "{}",
        m.body
    );
    let om = svc
        .get_with(
            "/metrics",
            &[("Accept", "application/openmetrics-text; version=1.0.0")],
        )
        .await;
    assert!(om.body.contains(r#"item="we%22ird%5Cname""#), "{}", om.body);
}

/// Every value of a sample line starting with `prefix`, by its whole label set.
fn samples<'a>(text: &'a str, prefix: &str) -> Vec<(&'a str, f64)> {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| {
            let (series, v) = l.rsplit_once(' ')?;
            Some((series, v.parse().ok()?))
        })
        .collect()
}

#[tokio::test]
async fn counters_are_exported_at_zero_from_the_start() {
    let cp = klutch_sim::SimControlPlane::start()
        .await
        .expect("simulated control plane");
    let dir = tempfile::tempdir().expect("temp dir");
    let kc = common::kubeconfig(&cp.api, dir.path());
    // A backend that never answers in time: no poll outcome has been counted at the first scrape.
    let backend = FakeBackend::start().await.expect("fake backend");
    backend.set_mode(klutch_sim::BackendMode::Hang);
    let svc = Service::start(
        &common::full_config(&backend.url(), ""),
        &[("KUBECONFIG", &kc)],
    )
    .await;
    let m = svc.get("/metrics").await.body;
    let (ok, msg) = promtool_check(&m);
    assert!(ok, "promtool check metrics: {msg}\n{m}");
    for check in [
        "providers",
        "provider-configs",
        "anynines-backend",
        "provider-pods",
    ] {
        for reason in ["failed", "max_objects", "silent", "throttled", "too_large"] {
            let series = format!(
                "klutch_health_watch_restarts_total{{check=\"{check}\",reason=\"{reason}\"}}"
            );
            assert_eq!(value(&m, &series), Some(0.0), "{series} in\n{m}");
        }
    }
    assert!(
        samples(
            &m,
            "klutch_health_watch_restarts_total{check=\"backend-status\""
        )
        .is_empty(),
        "backend-status watches nothing"
    );
    for outcome in klutch_health::checks::backend_status::OUTCOMES {
        let series = format!(
            "klutch_health_upstream_requests_total{{check=\"backend-status\",outcome=\"{outcome}\"}}"
        );
        assert!(value(&m, &series).is_some(), "{series} in\n{m}");
    }
    for (path, code) in [("/readyz", 503), ("/healthz", 503), ("/livez", 200)] {
        let series =
            format!("klutch_health_http_requests_total{{path=\"{path}\",code=\"{code}\"}}");
        assert!(value(&m, &series).is_some(), "{series} in\n{m}");
    }
}

#[tokio::test]
async fn endpoint_up_of_readyz_is_0_while_shutting_down() {
    let backend = FakeBackend::start().await.expect("fake backend");
    backend.set_entry("pg", "ok");
    let mut svc = Service::start(
        &backend_config(&backend.url(), ""),
        &[("KLUTCH_HEALTH_SERVER__SHUTDOWN_DELAY", "10s")],
    )
    .await;
    let up = |m: &str, endpoint: &str| {
        value(
            m,
            &format!("klutch_health_endpoint_up{{endpoint=\"{endpoint}\"}}"),
        )
    };
    svc.wait_for("/metrics", "readyz up", |r| {
        up(&r.body, "readyz") == Some(1.0)
    })
    .await;
    common::signal("TERM", svc.pid());
    let polls = |m: &str| {
        value(
            m,
            "klutch_health_upstream_request_duration_seconds_count{check=\"backend-status\"}",
        )
        .unwrap_or(0.0)
    };
    let m = svc
        .wait_for("/metrics", "readyz down", |r| {
            up(&r.body, "readyz") == Some(0.0)
        })
        .await
        .body;
    // Later evaluations (the backend is polled every 100 ms) do not bring it back.
    let seen = polls(&m);
    let m = svc
        .wait_for("/metrics", "two more polls", |r| {
            polls(&r.body) >= seen + 2.0
        })
        .await
        .body;
    assert_eq!(up(&m, "readyz"), Some(0.0), "{m}");
    // /healthz keeps answering its verdict while shutting down, and its gauge says so.
    assert_eq!(up(&m, "healthz"), Some(1.0), "{m}");
    assert_eq!(svc.get("/healthz").await.status, 200);
    assert_eq!(svc.get("/readyz").await.status, 503);
    assert_eq!(svc.wait_exit().await, Some(0));
}

/// Crossplane's managed-resource gauges, as klutch-health exports them for the simulated control plane,
/// valid for `promtool check metrics` and answering PromQL queries written for Crossplane's providers, in
/// `promtool test rules` over exactly the samples scraped.
#[tokio::test]
async fn crossplane_managed_resource_gauges_answer_crossplanes_queries() {
    let cp = klutch_sim::SimControlPlane::start()
        .await
        .expect("simulated control plane");
    let svc = Service::synced(&cp, "", &[]).await;
    let m = svc
        .wait_for("/metrics", "Crossplane's gauges", |r| {
            r.body.contains("crossplane_managed_resource_synced{")
        })
        .await
        .body;
    let (ok, msg) = promtool_check(&m);
    assert!(ok, "promtool check metrics: {msg}\n{m}");
    let input: String = m
        .lines()
        .filter(|l| l.starts_with("crossplane_managed_resource_"))
        .filter_map(|l| l.rsplit_once(' '))
        .map(|(series, v)| format!("      - series: '{series}'\n        values: '{v}'\n"))
        .collect();
    let instance = r#"gvk="dataservices.anynines.com/v1, Kind=ServiceInstance""#;
    let tests = format!(
        r#"rule_files: []
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
{input}    promql_expr_test:
      - expr: 'crossplane_managed_resource_exists{{{instance}}}'
        eval_time: 0m
        exp_samples:
          - labels: 'crossplane_managed_resource_exists{{{instance}}}'
            value: 1
      - expr: 'count(crossplane_managed_resource_exists)'
        eval_time: 0m
        exp_samples:
          - labels: '{{}}'
            value: 4
      - expr: 'crossplane_managed_resource_ready{{gvk=~".*Kind=Restore"}} / crossplane_managed_resource_exists'
        eval_time: 0m
        exp_samples:
          - labels: '{{gvk="dataservices.anynines.com/v1, Kind=Restore"}}'
            value: 1
      - expr: 'crossplane_managed_resource_exists - crossplane_managed_resource_synced'
        eval_time: 0m
        exp_samples:
{unsynced}"#,
        unsynced = ["ServiceInstance", "ServiceBinding", "Backup", "Restore"]
            .iter()
            .map(|k| format!(
                "          - labels: '{{gvk=\"dataservices.anynines.com/v1, Kind={k}\"}}'\n            value: 0\n"
            ))
            .collect::<String>(),
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("crossplane.yaml");
    std::fs::write(&file, &tests).expect("write the rules test");
    let out = Command::new(promtool())
        .args(["test", "rules"])
        .arg(&file)
        .output()
        .expect("run promtool");
    assert!(
        out.status.success(),
        "promtool test rules:\n{}{}\n{tests}\n{m}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
