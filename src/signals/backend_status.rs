//! The `backend-status` signal: polls provider-anynines' health server (`:8081/backend-health`).
//!
//! The provider answers `200` even when a ProviderConfig is degraded, so the body decides: one item per key,
//! `"ok"` passes, anything else fails. When a poll itself fails, the item `endpoint` says precisely why and the
//! items seen before turn `unknown` — their last state is no longer known, but it is not forgotten either.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use jiff::Timestamp;
use tokio::time::{Instant, MissedTickBehavior};

use serde::{Deserialize, Serialize};

use super::registry::{CheckType, Run, WatchTarget};
use super::{Observation, Sink};
use crate::human::{self, error_chain};
use crate::metrics::Metrics;
use crate::report::{Passthrough, Status};
use crate::telemetry::LogLimiter;
use crate::values::{duration, http_url, KeyError};

/// The keys of a `backend-status` check.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendStatus {
    #[serde(with = "http_url")]
    pub url: hyper::Uri,
    #[serde(with = "duration", default = "BackendStatus::default_interval")]
    pub interval: Duration,
    #[serde(with = "duration", default = "BackendStatus::default_timeout")]
    pub timeout: Duration,
    #[serde(default = "BackendStatus::default_max_body")]
    pub max_body: usize,
}

impl BackendStatus {
    fn default_interval() -> Duration {
        Duration::from_secs(10)
    }
    fn default_timeout() -> Duration {
        Duration::from_secs(2)
    }
    fn default_max_body() -> usize {
        1024 * 1024
    }
}

impl CheckType for BackendStatus {
    const NAME: &'static str = "backend-status";
    const LINK: super::registry::Link = super::registry::Link::AnnotatedByProviderConfigs;

    fn validate(&self, cluster: Option<&str>) -> Result<(), KeyError> {
        if cluster.is_some() {
            return Err(KeyError::new(
                "cluster",
                "a backend-status check polls a URL, not a cluster",
            ));
        }
        if self.interval.is_zero() {
            return Err(KeyError::new("interval", "must be more than 0s"));
        }
        if self.timeout.is_zero() {
            return Err(KeyError::new("timeout", "must be more than 0s"));
        }
        if self.max_body == 0 {
            return Err(KeyError::new("max_body", "must be at least 1 byte"));
        }
        Ok(())
    }

    fn targets(&self) -> Vec<WatchTarget> {
        Vec::new()
    }

    fn start(&self, run: Run<'_>) {
        let poller = Poller::new(
            run.check,
            self.clone(),
            run.sink.clone(),
            run.metrics.clone(),
        );
        run.tasks.spawn(poller.run());
    }
}

/// The item that reports the poll itself.
pub(crate) const ENDPOINT_ITEM: &str = "endpoint";

/// Why one poll did not give a usable answer.
#[derive(Debug, thiserror::Error)]
pub enum PollError {
    #[error("answered {status}{}", excerpt(.body))]
    Status {
        status: http::StatusCode,
        body: Bytes,
    },
    #[error("no answer within {}: the health server hangs or is overloaded", human::duration(*.0))]
    Timeout(Duration),
    #[error("cannot connect: {0} (is provider-anynines running, and the Service in front of it?)")]
    Connect(String),
    #[error("request failed: {0}")]
    Request(String),
    #[error("body is larger than max_body ({0} bytes)")]
    TooLarge(usize),
    #[error("body cannot be read: {0}")]
    Body(String),
    #[error("body is not valid JSON ({reason}){}", excerpt(.body))]
    InvalidJson { reason: String, body: Bytes },
    #[error("body is JSON but not an object ({0}); expected {{\"PROVIDERCONFIG\": \"ok\", …}}")]
    NotObject(&'static str),
}

impl PollError {
    /// The `outcome` label of `klutch_health_upstream_requests_total`.
    pub fn outcome(&self) -> &'static str {
        match self {
            PollError::Status { .. } => "http_error",
            PollError::Timeout(_) => "timeout",
            PollError::Connect(_) => "connect_error",
            PollError::Request(_) | PollError::Body(_) => "transport_error",
            PollError::TooLarge(_) => "too_large",
            PollError::InvalidJson { .. } | PollError::NotObject(_) => "invalid_body",
        }
    }
}

/// `: "first 200 characters of the body"`, on one line, or nothing for an empty body.
fn excerpt(body: &Bytes) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return String::new();
    }
    let mut short: String = text
        .chars()
        .take(200)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if text.chars().count() > 200 {
        short.push('…');
    }
    format!(": {short:?}")
}

/// A good answer: the items it names and the body for the passthrough.
#[derive(Debug)]
pub(crate) struct Answer {
    pub items: Vec<(String, Status, String)>,
    pub passthrough: Passthrough,
}

/// Turns a provider-anynines health body into items: `"ok"` passes, any other value fails.
pub fn parse_body(body: &[u8]) -> Result<Vec<(String, Status, String)>, PollError> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| PollError::InvalidJson {
            reason: e.to_string(),
            body: Bytes::copy_from_slice(&body[..body.len().min(256)]),
        })?;
    let serde_json::Value::Object(map) = value else {
        return Err(PollError::NotObject(json_kind(&value)));
    };
    Ok(map
        .into_iter()
        .map(|(name, v)| match v {
            serde_json::Value::String(s) if s == "ok" => (name, Status::Pass, "ok".to_string()),
            serde_json::Value::String(s) => (name, Status::Fail, s),
            other => (name, Status::Fail, format!("unexpected value {other}")),
        })
        .collect())
}

/// What a JSON value is, with its article: `an array`, `a string`, `null`.
fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// Polls one health server and publishes what it answers.
pub(crate) struct Poller {
    check: Arc<str>,
    config: BackendStatus,
    client: Client<HttpConnector, Empty<Bytes>>,
    sink: Sink,
    metrics: Arc<Metrics>,
    /// Items of the last good answer, to turn `unknown` when a poll fails.
    last_items: Vec<String>,
    /// Failed polls in a row, and the log limiter for them: a dead upstream must not flood the log.
    failures: u64,
    failing_since: Instant,
    errors: LogLimiter,
}

impl Poller {
    /// Publishes the check as waiting for its first poll, so it is never missing from the report.
    pub(crate) fn new(
        check: &str,
        config: BackendStatus,
        sink: Sink,
        metrics: Arc<Metrics>,
    ) -> Poller {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(config.timeout));
        connector.set_nodelay(true);
        // One idle connection is kept between polls, so a poll costs no new TCP handshake.
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(1)
            .pool_idle_timeout(config.interval + config.timeout + Duration::from_secs(30))
            .build(connector);
        sink.waiting(
            check,
            vec![Observation::new(
                ENDPOINT_ITEM,
                Status::Unknown,
                "waiting for the first poll",
                Timestamp::now(),
            )],
        );
        Poller {
            check: check.into(),
            config,
            client,
            sink,
            metrics,
            last_items: Vec::new(),
            failures: 0,
            failing_since: Instant::now(),
            errors: LogLimiter::default(),
        }
    }

    /// Polls every `interval` forever. Each poll is bounded by `timeout`, so a hung server delays nothing else.
    pub(crate) async fn run(mut self) {
        let mut ticks = tokio::time::interval(self.config.interval);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            self.poll_once().await;
        }
    }

    pub(crate) async fn poll_once(&mut self) {
        let started = Instant::now();
        let at = Timestamp::now();
        let result = match tokio::time::timeout(self.config.timeout, self.fetch(at)).await {
            Ok(r) => r,
            Err(_) => Err(PollError::Timeout(self.config.timeout)),
        };
        let outcome = match &result {
            Ok(_) => "success",
            Err(e) => e.outcome(),
        };
        self.metrics
            .upstream(&self.check, outcome, started.elapsed());
        match result {
            Ok(answer) => {
                if self.failures > 0 {
                    tracing::info!(check = %self.check, url = %self.config.url, failed_polls = self.failures, down_for = %human::duration(self.failing_since.elapsed()), "upstream answers again");
                    self.failures = 0;
                    self.errors = LogLimiter::default();
                }
                self.last_items = answer.items.iter().map(|(n, ..)| n.clone()).collect();
                let items = answer
                    .items
                    .into_iter()
                    .map(|(name, status, message)| Observation::new(name, status, message, at))
                    .collect();
                self.sink.publish(&self.check, items);
                self.sink.polled(at, Some(answer.passthrough));
            }
            Err(e) => {
                if self.failures == 0 {
                    self.failing_since = started;
                }
                self.failures += 1;
                // The first failure at once, then one line a minute while it lasts.
                if let Some(left_out) = self.errors.allow() {
                    tracing::warn!(check = %self.check, url = %self.config.url, error = %e, outcome = e.outcome(), failed_polls = self.failures, left_out, "upstream poll failed");
                }
                let mut items = vec![Observation::new(
                    ENDPOINT_ITEM,
                    Status::Fail,
                    format!("GET {}: {e}", self.config.url),
                    at,
                )];
                items.extend(self.last_items.iter().map(|name| {
                    Observation::new(
                        name.clone(),
                        Status::Unknown,
                        format!(
                            "not known: the last poll failed (see {}/{ENDPOINT_ITEM})",
                            self.check
                        ),
                        at,
                    )
                }));
                self.sink.publish(&self.check, items);
                self.sink.polled(at, None);
            }
        }
    }

    async fn fetch(&self, at: Timestamp) -> Result<Answer, PollError> {
        let request = http::Request::get(self.config.url.clone())
            .header(http::header::ACCEPT, "application/json")
            .header(
                http::header::USER_AGENT,
                concat!("klutch-health/", env!("CARGO_PKG_VERSION")),
            )
            .body(Empty::new())
            .map_err(|e| PollError::Request(e.to_string()))?;
        let response = self.client.request(request).await.map_err(|e| {
            let chain = error_chain(&e);
            if e.is_connect() {
                PollError::Connect(chain)
            } else {
                PollError::Request(chain)
            }
        })?;
        let status = response.status();
        let content_type = response
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let max = self.config.max_body;
        let declared = response
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|n| n > max as u64) {
            return Err(PollError::TooLarge(max));
        }
        let body = Limited::new(response.into_body(), max)
            .collect()
            .await
            .map_err(|e| {
                if e.downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some()
                {
                    PollError::TooLarge(max)
                } else {
                    PollError::Body(error_chain(&*e))
                }
            })?
            .to_bytes();
        if !status.is_success() {
            return Err(PollError::Status { status, body });
        }
        let items = parse_body(&body)?;
        Ok(Answer {
            items,
            passthrough: Passthrough {
                status: status.as_u16(),
                content_type,
                body,
                fetched: at,
            },
        })
    }
}
