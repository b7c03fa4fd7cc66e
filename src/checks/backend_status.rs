//! The `backend-status` signal: polls provider-anynines' health server (`:8081/backend-health`).
//!
//! The provider answers `200` even when a ProviderConfig is degraded, so the body decides: one item per key,
//! `"ok"` passes, anything else fails. When a poll itself fails, the item `_endpoint` says precisely why and the
//! items seen before turn `unknown` — their last state is no longer known, but it is not forgotten either.

use std::borrow::Cow;
use std::collections::btree_map::Entry;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use jiff::Timestamp;
use tokio::time::{Instant, MissedTickBehavior};

use serde::{Deserialize, Serialize};

use super::{CheckType, Run};
use crate::clock::Moment;
use crate::human::{self, error_chain};
use crate::metrics::Metrics;
use crate::signals::{Fact, NoAnswer, Observation, Sink};
use crate::telemetry::LogLimiter;
use crate::values::{duration, http_url, KeyError};
use crate::verdict::report::{Passthrough, Status};

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

    fn start(&self, run: &mut Run<'_>) {
        let config = self.clone();
        run.poll(&OUTCOMES, move |check, sink, metrics| {
            Poller::new(check, config.clone(), sink.clone(), metrics.clone()).run()
        });
    }
}

/// The item that reports the poll itself ([`crate::reserved`]: no upstream key can take its place, since keys
/// that are no Kubernetes name are escaped by [`item_name`]).
pub const ENDPOINT_ITEM: &str = crate::reserved::ENDPOINT;

/// The item shown when the health server lists no ProviderConfig at all (`{}`), as the other checks do.
const NONE_ITEM: &str = crate::reserved::NONE;

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

/// Every `outcome` label a poll can have, exported at 0 from the start so that `increase()` sees the first one.
pub const OUTCOMES: [&str; 7] = [
    "success",
    "http_error",
    "timeout",
    "connect_error",
    "transport_error",
    "too_large",
    "invalid_body",
];

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

    /// Whether this is what a stopped or broken server does (refused or reset, timed out, a 5xx): the
    /// root-cause rules blame the provider's pods for these, never for an answer that cannot be read.
    pub fn no_answer(&self) -> Option<NoAnswer> {
        match self {
            PollError::Connect(_) => Some(NoAnswer::Refused),
            PollError::Request(_) => Some(NoAnswer::Reset),
            PollError::Timeout(_) => Some(NoAnswer::TimedOut),
            PollError::Status { status, .. } if status.is_server_error() => {
                Some(NoAnswer::ServerError)
            }
            _ => None,
        }
    }

    /// What the passthrough answers when there was no answer to pass through: `504` for a timeout, `502`
    /// for everything else (refused, reset, unreadable, too large).
    fn gateway_status(&self) -> u16 {
        match self {
            PollError::Timeout(_) => 504,
            _ => 502,
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

/// Every entry of a JSON object, duplicates included: `serde_json::Map` keeps only the last of a duplicated
/// key, which would let a later `"ok"` hide an earlier `"degraded"`.
struct Entries(Vec<(String, serde_json::Value)>);

impl<'de> Deserialize<'de> for Entries {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Entries, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Entries;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Entries, A::Error> {
                let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(0).min(4096));
                while let Some(entry) = map.next_entry()? {
                    entries.push(entry);
                }
                Ok(Entries(entries))
            }
        }
        d.deserialize_map(Visitor)
    }
}

/// Turns a provider-anynines health body into items: `"ok"` passes, any other value fails. A key that appears
/// more than once counts with its worst value. Keys are item names as [`item_name`] makes them.
pub fn parse_body(body: &[u8]) -> Result<Vec<(String, Status, String)>, PollError> {
    let invalid = |e: serde_json::Error| PollError::InvalidJson {
        reason: e.to_string(),
        body: Bytes::copy_from_slice(&body[..body.len().min(256)]),
    };
    let Entries(entries) = match serde_json::from_slice(body) {
        Ok(entries) => entries,
        // Only now tell "not JSON" from "JSON, but not an object": the error path may parse twice.
        Err(e) => {
            let value: serde_json::Value = serde_json::from_slice(body).map_err(invalid)?;
            return Err(match value {
                serde_json::Value::Object(_) => invalid(e),
                other => PollError::NotObject(json_kind(&other)),
            });
        }
    };
    // Name → (status, message, how often the key appeared).
    let mut items: BTreeMap<String, (Status, String, usize)> = BTreeMap::new();
    for (key, value) in entries {
        let (status, message) = match value {
            serde_json::Value::String(s) if s == "ok" => (Status::Pass, "ok".to_string()),
            // A broker's words, passed on by the provider: bounded like every string from an object.
            serde_json::Value::String(s) => (Status::Fail, human::cut(s, human::MESSAGE_LIMIT)),
            other => (
                Status::Fail,
                human::cut(format!("unexpected value {other}"), human::MESSAGE_LIMIT),
            ),
        };
        match items.entry(item_name(&key).into_owned()) {
            Entry::Vacant(v) => {
                v.insert((status, message, 1));
            }
            Entry::Occupied(mut o) => {
                let seen = o.get_mut();
                seen.2 += 1;
                if status > seen.0 {
                    (seen.0, seen.1) = (status, message);
                }
            }
        }
    }
    Ok(items
        .into_iter()
        .map(|(name, (status, message, times))| {
            let message = if times > 1 {
                format!("{message} (the key appears {times} times; the worst value counts)")
            } else {
                message
            };
            (name, status, message)
        })
        .collect())
}

/// The item name of an upstream key. provider-anynines names its keys after ProviderConfigs, which are valid
/// Kubernetes names (DNS-1123 subdomains) and are kept as they are. Any other key is percent-encoded outside
/// `[a-z0-9.-]` (`name with spaces` → `name%20with%20spaces`): one line, one URL path segment, one metric
/// label, never [`ENDPOINT_ITEM`], and two different keys never share a name (`%` is encoded too).
pub fn item_name(key: &str) -> Cow<'_, str> {
    if is_kubernetes_name(key) {
        return Cow::Borrowed(key);
    }
    let mut out = String::with_capacity(key.len() + 8);
    for b in key.bytes() {
        if b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    Cow::Owned(out)
}

/// A DNS-1123 subdomain: at most 253 characters, dot-separated labels of lowercase letters, digits and `-`,
/// each starting and ending with a letter or digit.
fn is_kubernetes_name(s: &str) -> bool {
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            let b = label.as_bytes();
            matches!((b.first(), b.last()), (Some(&f), Some(&l)) if alnum(f) && alnum(l))
                && b.iter().all(|&c| alnum(c) || c == b'-')
        })
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
    /// When the last good answer came, for the status page.
    last_good: Option<Timestamp>,
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
            .pool_idle_timeout(
                config
                    .interval
                    .saturating_add(config.timeout)
                    .saturating_add(Duration::from_secs(30)),
            )
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
            last_good: None,
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
        let fetched = match tokio::time::timeout(self.config.timeout, self.fetch()).await {
            Ok(r) => r,
            Err(_) => Err(PollError::Timeout(self.config.timeout)),
        };
        let moment = Moment::now();
        let at = moment.wall;
        // What the passthrough serves: the answer as it came, whatever it says, or why there was none.
        let (result, passthrough) = match fetched {
            Ok((status, body)) => {
                let result = judge(status, &body);
                let json = match &result {
                    Ok(_) | Err(PollError::NotObject(_)) => true,
                    Err(PollError::InvalidJson { .. }) => false,
                    Err(_) => serde_json::from_slice::<serde::de::IgnoredAny>(&body).is_ok(),
                };
                (result, (status.as_u16(), body, json))
            }
            Err(e) => {
                let reason = format!("GET {}: {e}", self.config.url);
                let reason: String = reason.chars().filter(|c| !c.is_control()).collect();
                let code = e.gateway_status();
                (Err(e), (code, Bytes::from(reason + "\n"), false))
            }
        };
        let outcome = match &result {
            Ok(_) => OUTCOMES[0],
            Err(e) => e.outcome(),
        };
        self.metrics
            .upstream(&self.check, outcome, started.elapsed());
        let items = match result {
            Ok(items) => self.answered(items, at),
            Err(e) => self.failed(e, started, at),
        };
        self.sink.publish(&self.check, items);
        let (status, body, json) = passthrough;
        self.sink.polled(
            &self.check,
            Passthrough {
                status,
                body,
                json,
                at: moment,
                last_good: self.last_good,
            },
        );
    }

    /// The items of a good answer: one per key, or `none` for `{}`.
    fn answered(
        &mut self,
        items: Vec<(String, Status, String)>,
        at: Timestamp,
    ) -> Vec<Observation> {
        if self.failures > 0 {
            tracing::info!(check = %self.check, url = %self.config.url, failed_polls = self.failures, down_for = %human::duration(self.failing_since.elapsed()), "upstream answers again");
            self.failures = 0;
            self.errors = LogLimiter::default();
        }
        self.last_good = Some(at);
        self.last_items = items.iter().map(|(n, ..)| n.clone()).collect();
        if items.is_empty() {
            return vec![Observation::new(
                NONE_ITEM,
                Status::Warn,
                "provider-anynines' health server lists no ProviderConfig ({})",
                at,
            )];
        }
        items
            .into_iter()
            .map(|(name, status, message)| Observation::new(name, status, message, at))
            .collect()
    }

    /// The poll item fails with the reason; the items of the last good answer turn `unknown`. One log line
    /// for the failure, however many items, and then one a minute while it lasts.
    fn failed(&mut self, e: PollError, started: Instant, at: Timestamp) -> Vec<Observation> {
        if self.failures == 0 {
            self.failing_since = started;
        }
        self.failures += 1;
        if let Some(left_out) = self.errors.allow() {
            tracing::warn!(check = %self.check, url = %self.config.url, error = %e, outcome = e.outcome(), failed_polls = self.failures, left_out, "upstream poll failed");
        }
        let mut endpoint = Observation::new(
            ENDPOINT_ITEM,
            Status::Fail,
            format!("GET {}: {e}", self.config.url),
            at,
        );
        if let Some(no_answer) = e.no_answer() {
            endpoint = endpoint.with_fact(Fact::NoAnswer(no_answer));
        }
        let mut items = vec![endpoint];
        let unknown = format!(
            "not known: the last poll failed (see {}/{ENDPOINT_ITEM})",
            self.check
        );
        items.extend(
            self.last_items
                .iter()
                .map(|name| Observation::new(name.clone(), Status::Unknown, unknown.clone(), at)),
        );
        items
    }

    /// One GET: the status and the whole body (at most `max_body`), or why there is none.
    async fn fetch(&self) -> Result<(http::StatusCode, Bytes), PollError> {
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
        Ok((status, body))
    }
}

/// What an answer says: the body decides, but only of a `2xx`.
fn judge(
    status: http::StatusCode,
    body: &Bytes,
) -> Result<Vec<(String, Status, String)>, PollError> {
    if !status.is_success() {
        return Err(PollError::Status {
            status,
            body: body.clone(),
        });
    }
    parse_body(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Refused (or reset before an answer), timed out and 5xx are what a stopped or broken provider does;
    /// an answer that cannot be read, or a 4xx (a wrong path), is not.
    #[test]
    fn only_refused_timed_out_and_5xx_polls_got_no_answer() {
        let status = |code: u16| PollError::Status {
            status: http::StatusCode::from_u16(code).expect("a status"),
            body: Bytes::new(),
        };
        let table = [
            (
                PollError::Connect("refused".into()),
                Some(NoAnswer::Refused),
            ),
            (
                PollError::Timeout(Duration::from_secs(2)),
                Some(NoAnswer::TimedOut),
            ),
            (status(500), Some(NoAnswer::ServerError)),
            (status(503), Some(NoAnswer::ServerError)),
            (status(404), None),
            (
                PollError::Request("connection reset by peer".into()),
                Some(NoAnswer::Reset),
            ),
            (PollError::Body("connection closed mid-body".into()), None),
            (PollError::TooLarge(1), None),
            (
                PollError::InvalidJson {
                    reason: "eof".into(),
                    body: Bytes::new(),
                },
                None,
            ),
            (PollError::NotObject("an array"), None),
        ];
        for (e, want) in table {
            assert_eq!(e.no_answer(), want, "{e}");
        }
    }
}
