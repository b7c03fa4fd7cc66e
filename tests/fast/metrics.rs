//! `/metrics` following the state: OpenMetrics on request, series that go with their item, every poll counted
//! and timed, every outcome and `endpoint_up` from the start. What the real `promtool` makes of the
//! exposition: tests/full/metrics.rs.

use crate::common;

use common::{backend_config, metric_value as value, Service};
use klutch_sim::FakeBackend;

#[tokio::test]
async fn openmetrics_when_asked_for() {
    let backend = FakeBackend::start().await.expect("fake backend");
    let svc = Service::start(&backend_config(&backend.url(), ""), &[]).await;
    let m = svc
        .get_with(
            "/metrics",
            &[("Accept", "application/openmetrics-text; version=1.0.0")],
        )
        .await;
    assert_eq!(
        m.header("content-type"),
        Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
    );
    assert!(m.body.ends_with("# EOF\n"), "{}", m.body);
}

#[tokio::test]
async fn an_item_that_vanishes_loses_its_series() {
    let backend = FakeBackend::start().await.expect("fake backend");
    backend.set_entry("old", "ok");
    backend.set_entry("kept", "ok");
    let svc = Service::start(&backend_config(&backend.url(), ""), &[]).await;
    svc.wait_for("/metrics", "the old item's series", |r| {
        r.body.contains("item=\"old\"")
    })
    .await;
    backend.set_entries([("kept".to_string(), "ok".to_string())].into());
    let m = svc
        .wait_for("/metrics", "the old item's series to go", |r| {
            !r.body.contains("item=\"old\"")
        })
        .await;
    assert!(
        m.body
            .contains("klutch_health_check_up{check=\"backend-status\",item=\"kept\"} 1"),
        "{}",
        m.body
    );
}

#[tokio::test]
async fn every_poll_is_counted_and_timed() {
    let backend = FakeBackend::start().await.expect("fake backend");
    backend.set_entry("pg", "ok");
    let svc = Service::start(&backend_config(&backend.url(), ""), &[]).await;
    let m = svc
        .wait_for("/metrics", "three polls", |r| {
            value(
                &r.body,
                "klutch_health_upstream_request_duration_seconds_count{check=\"backend-status\"}",
            )
            .is_some_and(|n| n >= 3.0)
        })
        .await
        .body;
    let count = value(
        &m,
        "klutch_health_upstream_request_duration_seconds_count{check=\"backend-status\"}",
    );
    let counted: f64 = m
        .lines()
        .filter(|l| l.starts_with("klutch_health_upstream_requests_total{check=\"backend-status\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(count, Some(counted), "{m}");
    // Buckets around the default timeout (2s) and a fast local answer.
    for le in ["0.005", "0.1", "1.0", "2.5", "10.0", "+Inf"] {
        let bucket = format!(
            "klutch_health_upstream_request_duration_seconds_bucket{{le=\"{le}\",check=\"backend-status\"}}"
        );
        assert!(value(&m, &bucket).is_some(), "{bucket} in\n{m}");
    }
    assert_eq!(
        value(
            &m,
            "klutch_health_upstream_request_duration_seconds_bucket{le=\"+Inf\",check=\"backend-status\"}"
        ),
        count
    );
    assert_eq!(
        value(
            &m,
            &format!(
                "klutch_health_build_info{{version=\"{}\"}}",
                env!("CARGO_PKG_VERSION")
            )
        ),
        Some(1.0)
    );
}

#[test]
fn every_poll_error_has_an_outcome_exported_from_the_start() {
    use klutch_health::checks::backend_status::{PollError, OUTCOMES};
    use std::time::Duration;
    let errors = [
        PollError::Status {
            status: http::StatusCode::INTERNAL_SERVER_ERROR,
            body: bytes::Bytes::new(),
        },
        PollError::Timeout(Duration::from_secs(1)),
        PollError::Connect(String::new()),
        PollError::Request(String::new()),
        PollError::TooLarge(1),
        PollError::Body(String::new()),
        PollError::InvalidJson {
            reason: String::new(),
            body: bytes::Bytes::new(),
        },
        PollError::NotObject("an array"),
    ];
    for e in &errors {
        assert!(OUTCOMES.contains(&e.outcome()), "{e:?}: {}", e.outcome());
    }
}
