//! The Lease `klutch-health-events` (`coordination.k8s.io/v1`) elects the one replica that writes Events:
//! kube 5 has no leader election, so this is the small loop. Optimistic concurrency on `resourceVersion` is
//! the whole protocol: create when absent, renew with a PUT carrying the version read, take over only once
//! the holder has not renewed for the lease's duration; a `409 Conflict` means another replica won.
//!
//! Both ends of a Lease are judged on this replica's own monotonic clock, never on another machine's wall
//! clock: holding ends at the start of the last successful renewal plus the duration, whatever a later
//! renewal does (one that hangs cannot extend it), and another holder's Lease expires the duration after this
//! replica last saw it change (as client-go's leader election does). Every request has a timeout.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::Client;
use tokio::sync::watch;

use crate::clock::Instant;
use crate::kubernetes::api_errors::{self, Resource};
use crate::telemetry::LogLimiter;

/// The Lease's name, in the Pod's namespace.
pub const NAME: &str = "klutch-health-events";
/// How often the holder renews, and others look.
pub const RENEW_EVERY: Duration = Duration::from_secs(10);
/// The verbs used on the Lease by name (read it, renew or take it over)…
pub const VERBS_BY_NAME: [&str; 2] = [GET, UPDATE];
const GET: &str = "get";
const UPDATE: &str = "update";
/// …and the one used without a name, as RBAC cannot limit a create by name.
pub const CREATE: &str = "create";
/// How long a holder that stopped renewing keeps the Lease.
pub const DURATION_SECONDS: i32 = 30;
/// The longest any one Lease request may take: two of them (read, then write) fit within [`RENEW_EVERY`].
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// What to do with the Lease as read.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Create,
    /// Write it back as ours, with the `resourceVersion` read; `takeover`: it was someone else's.
    Renew {
        takeover: bool,
    },
    /// Someone else holds it and is renewing.
    Wait,
}

/// What this replica last saw of the Lease, and when it saw it change (on its monotonic clock).
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// Holder, renew time and `resourceVersion` as last read: any change is a renewal.
    seen: Option<(Option<String>, Option<String>, Option<String>)>,
    changed: Option<Instant>,
}

impl Observed {
    /// Records `lease` as read at `now`; returns when it last changed.
    fn note(&mut self, lease: &Lease, now: Instant) -> Instant {
        let spec = lease.spec.as_ref();
        let seen = (
            spec.and_then(|s| s.holder_identity.clone()),
            spec.and_then(|s| s.renew_time.as_ref())
                .map(|t| t.0.to_string()),
            lease.metadata.resource_version.clone(),
        );
        if self.seen.as_ref() != Some(&seen) {
            self.seen = Some(seen);
            self.changed = Some(now);
        }
        *self.changed.get_or_insert(now)
    }
}

/// The duration a Lease declares, within sense: another replica wrote it, and a zero, negative or absurd
/// value must neither take it over at once nor overflow a deadline.
fn declared_duration(spec: &LeaseSpec) -> Duration {
    let seconds = spec
        .lease_duration_seconds
        .filter(|s| *s > 0)
        .unwrap_or(DURATION_SECONDS);
    Duration::from_secs(u64::from(seconds.unsigned_abs()).min(3600))
}

/// Decides from the Lease as read (`None`: absent) at `now`, with what this replica saw of it before.
pub fn decide(
    current: Option<&Lease>,
    identity: &str,
    observed: &mut Observed,
    now: Instant,
) -> Action {
    let Some(lease) = current else {
        return Action::Create;
    };
    let spec = lease.spec.clone().unwrap_or_default();
    if spec.holder_identity.as_deref() == Some(identity) {
        return Action::Renew { takeover: false };
    }
    let changed = observed.note(lease, now);
    let expired = spec.holder_identity.is_none()
        || changed
            .checked_add(declared_duration(&spec))
            .is_some_and(|end| end <= now);
    if expired {
        Action::Renew { takeover: true }
    } else {
        Action::Wait
    }
}

/// The Lease held by `identity` from `now`, built on `current` (its `resourceVersion` included).
pub fn ours(current: Option<&Lease>, identity: &str, now: Timestamp, takeover: bool) -> Lease {
    let mut lease = current.cloned().unwrap_or_else(|| Lease {
        metadata: ObjectMeta {
            name: Some(NAME.into()),
            ..ObjectMeta::default()
        },
        spec: None,
    });
    let mut spec = lease.spec.take().unwrap_or_else(|| LeaseSpec {
        acquire_time: Some(MicroTime(now)),
        lease_transitions: Some(0),
        ..LeaseSpec::default()
    });
    if takeover {
        spec.acquire_time = Some(MicroTime(now));
        spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0).saturating_add(1));
    }
    spec.holder_identity = Some(identity.into());
    spec.lease_duration_seconds = Some(DURATION_SECONDS);
    spec.renew_time = Some(MicroTime(now));
    lease.spec = Some(spec);
    lease
}

/// Why a bounded Kubernetes request (on the Lease, or an Event) failed.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// The API server's answer (or the client's error) to a request of `verb`, what RBAC must grant.
    #[error("{source}")]
    Api {
        verb: &'static str,
        #[source]
        source: kube::Error,
    },
    #[error(
        "no answer to {what} within {}",
        crate::human::duration(REQUEST_TIMEOUT)
    )]
    Timeout { what: &'static str },
}

impl RequestError {
    /// In words for an operator: a refusal says what to grant on `on`, as a refused watch does.
    pub(crate) fn describe(&self, on: &Resource) -> String {
        match self {
            RequestError::Api { verb, source } => api_errors::request(source, verb, on),
            timeout => timeout.to_string(),
        }
    }
}

/// `request` (of `verb`), given at most [`REQUEST_TIMEOUT`]: `what` names it in the error.
pub(crate) async fn bounded<T>(
    what: &'static str,
    verb: &'static str,
    request: impl std::future::Future<Output = Result<T, kube::Error>>,
) -> Result<T, RequestError> {
    match tokio::time::timeout(REQUEST_TIMEOUT, request).await {
        Ok(answer) => answer.map_err(|source| RequestError::Api { verb, source }),
        Err(_) => Err(RequestError::Timeout { what }),
    }
}

/// Tries once to hold the Lease; `Ok(Some(until))`: this replica holds it until that instant, the start of
/// this attempt plus the Lease's duration (another replica sees the renewal no earlier than that start).
pub async fn attempt(
    api: &Api<Lease>,
    identity: &str,
    observed: &mut Observed,
) -> Result<Option<Instant>, RequestError> {
    let started = Instant::now();
    let current = bounded("GET of the Lease", GET, api.get_opt(NAME)).await?;
    let now = Timestamp::now();
    let written = match decide(current.as_ref(), identity, observed, Instant::now()) {
        Action::Wait => return Ok(None),
        Action::Create => {
            let lease = ours(None, identity, now, false);
            bounded(
                "the Lease's create",
                CREATE,
                api.create(&PostParams::default(), &lease),
            )
            .await
        }
        Action::Renew { takeover } => {
            let lease = ours(current.as_ref(), identity, now, takeover);
            bounded(
                "the Lease's renewal",
                UPDATE,
                api.replace(NAME, &PostParams::default(), &lease),
            )
            .await
        }
    };
    match written {
        Ok(_) => Ok(Some(started + Duration::from_secs(DURATION_SECONDS as u64))),
        Err(RequestError::Api {
            source: kube::Error::Api(e),
            ..
        }) if e.code == 409 => Ok(None),
        Err(e) => Err(e),
    }
}

/// Whether this replica holds the Lease, judged at the moment of asking: holding ends by itself at its
/// deadline, even while a renewal hangs.
#[derive(Debug, Clone)]
pub struct Leadership(watch::Receiver<Option<Instant>>);

impl Leadership {
    pub fn holds(&self) -> bool {
        self.0.borrow().is_some_and(|until| Instant::now() < until)
    }

    /// A Leadership held until `until` (`None`: never): for tests of what reads it.
    pub fn fixed(until: Option<Instant>) -> Leadership {
        Leadership(watch::channel(until).1)
    }
}

/// Keeps trying to hold the Lease in `namespace` until the returned [`Leadership`] and every clone of it
/// are dropped.
pub fn start(client: Client, namespace: &str, identity: String) -> Leadership {
    let (tx, rx) = watch::channel(None);
    let api: Api<Lease> = Api::namespaced(client, namespace);
    let leases = Resource::written("coordination.k8s.io", "leases", namespace);
    tokio::spawn(async move {
        let mut failures = LogLimiter::default();
        let mut observed = Observed::default();
        let mut held = false;
        while !tx.is_closed() {
            match attempt(&api, &identity, &mut observed).await {
                Ok(until) => {
                    failures = LogLimiter::default();
                    tx.send_replace(until);
                }
                // Whatever it held stays held until its deadline, and no longer.
                Err(e) => {
                    if let Some(left_out) = failures.allow() {
                        let error = e.describe(&leases);
                        tracing::warn!(%error, left_out, lease = NAME,
                            "cannot read or renew the Events Lease; this replica writes no Events once its hold ends");
                    }
                }
            }
            let holds = Leadership(tx.subscribe()).holds();
            if holds != held {
                held = holds;
                tracing::info!(lease = NAME, held, identity = %identity, "Events Lease {}", if held { "acquired" } else { "lost" });
            }
            tokio::time::sleep(RENEW_EVERY).await;
        }
    });
    Leadership(rx)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};

    use super::*;

    fn wall(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).expect("time")
    }

    fn held_by(who: &str, renewed: Timestamp, version: &str) -> Lease {
        let mut lease = ours(None, who, renewed, false);
        lease.metadata.resource_version = Some(version.into());
        lease
    }

    #[test]
    fn absent_is_created_own_is_renewed_live_is_left_expired_is_taken() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut observed = Observed::default();
        assert_eq!(decide(None, "a", &mut observed, at(0)), Action::Create);
        let lease = held_by("a", wall(0), "1");
        assert_eq!(
            decide(Some(&lease), "a", &mut observed, at(5)),
            Action::Renew { takeover: false }
        );
        assert_eq!(
            decide(Some(&lease), "b", &mut observed, at(0)),
            Action::Wait
        );
        assert_eq!(
            decide(Some(&lease), "b", &mut observed, at(29)),
            Action::Wait
        );
        assert_eq!(
            decide(Some(&lease), "b", &mut observed, at(30)),
            Action::Renew { takeover: true }
        );
    }

    /// Expiry counts from when this replica saw the Lease change, never from the holder's clock: a holder
    /// whose clock runs an hour ahead once blocked Events for an hour after it died, and one whose clock
    /// runs behind must not be taken over while it renews.
    #[test]
    fn another_holders_lease_expires_by_when_it_was_seen_to_change() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut observed = Observed::default();
        let ahead = held_by("a", wall(3600), "1");
        assert_eq!(
            decide(Some(&ahead), "b", &mut observed, at(0)),
            Action::Wait
        );
        assert_eq!(
            decide(Some(&ahead), "b", &mut observed, at(29)),
            Action::Wait
        );
        assert_eq!(
            decide(Some(&ahead), "b", &mut observed, at(30)),
            Action::Renew { takeover: true },
            "dead for 30s on this replica's clock"
        );

        let mut observed = Observed::default();
        let behind = held_by("a", wall(-3600), "1");
        assert_eq!(
            decide(Some(&behind), "b", &mut observed, at(0)),
            Action::Wait
        );
        // Renewed at 20s (a new resourceVersion), with the same old-looking clock.
        let renewed = held_by("a", wall(-3590), "2");
        assert_eq!(
            decide(Some(&renewed), "b", &mut observed, at(20)),
            Action::Wait
        );
        assert_eq!(
            decide(Some(&renewed), "b", &mut observed, at(49)),
            Action::Wait
        );
        assert_eq!(
            decide(Some(&renewed), "b", &mut observed, at(50)),
            Action::Renew { takeover: true }
        );
    }

    #[test]
    fn a_lease_duration_from_another_replica_is_bounded() {
        let t0 = Instant::now();
        let mut odd = held_by("a", wall(0), "1");
        for seconds in [0, -5, i32::MAX] {
            odd.spec.as_mut().expect("spec").lease_duration_seconds = Some(seconds);
            let mut observed = Observed::default();
            assert_eq!(decide(Some(&odd), "b", &mut observed, t0), Action::Wait);
            let later = t0 + Duration::from_secs(3600);
            assert_eq!(
                decide(Some(&odd), "b", &mut observed, later),
                Action::Renew { takeover: true },
                "leaseDurationSeconds {seconds}"
            );
        }
    }

    #[test]
    fn a_takeover_counts_a_transition_and_keeps_the_version_read() {
        let lease = held_by("a", wall(0), "42");
        let taken = ours(Some(&lease), "b", wall(40), true);
        let spec = taken.spec.expect("spec");
        assert_eq!(taken.metadata.resource_version.as_deref(), Some("42"));
        assert_eq!(spec.holder_identity.as_deref(), Some("b"));
        assert_eq!(spec.lease_transitions, Some(1));
        assert_eq!(spec.acquire_time, Some(MicroTime(wall(40))));
    }

    /// An API that stores the Lease; its writes hang while `hang` is set.
    fn api(hang: Arc<AtomicBool>) -> Client {
        let stored: Arc<Mutex<Option<serde_json::Value>>> = Arc::default();
        let service = tower::service_fn(move |req: http::Request<kube::client::Body>| {
            let (stored, hang) = (stored.clone(), hang.clone());
            async move {
                let method = req.method().clone();
                let body = http_body_util::BodyExt::collect(req.into_body())
                    .await
                    .map(|b| b.to_bytes())
                    .unwrap_or_default();
                if method != http::Method::GET && hang.load(Ordering::SeqCst) {
                    std::future::pending::<()>().await;
                }
                let (code, answer) = if method == http::Method::GET {
                    match stored.lock().expect("lock").clone() {
                        Some(lease) => (200, lease),
                        None => (
                            404,
                            serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                "reason": "NotFound", "code": 404, "message": "not found"}),
                        ),
                    }
                } else {
                    let mut lease: serde_json::Value =
                        serde_json::from_slice(&body).expect("a Lease");
                    lease["metadata"]["resourceVersion"] = "7".into();
                    *stored.lock().expect("lock") = Some(lease.clone());
                    (200, lease)
                };
                let response = http::Response::builder()
                    .status(code)
                    .header("content-type", "application/json")
                    .body(http_body_util::Full::new(bytes::Bytes::from(
                        answer.to_string(),
                    )))
                    .expect("response");
                Ok::<_, std::convert::Infallible>(response)
            }
        });
        Client::new(service, "default")
    }

    /// A renewal that hangs neither blocks the loop (the request times out) nor extends the hold: it ends at
    /// the last successful renewal's start plus the Lease's duration, to the instant.
    #[tokio::test(start_paused = true)]
    async fn holding_ends_at_the_last_renewal_plus_the_duration_whatever_the_request_does() {
        let hang = Arc::new(AtomicBool::new(false));
        let client = api(hang.clone());
        let t0 = Instant::now();
        let leader = start(client.clone(), "ns", "a".into());
        let deadline = t0 + Duration::from_secs(5);
        while !leader.holds() {
            assert!(Instant::now() < deadline, "never acquired");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // The renewals at 10s and 20s succeed; from 25s on, writes hang.
        tokio::time::sleep_until(t0 + Duration::from_secs(25)).await;
        hang.store(true, Ordering::SeqCst);
        let last_renewal = t0 + Duration::from_secs(20);
        let end = last_renewal + Duration::from_secs(DURATION_SECONDS as u64);
        tokio::time::sleep_until(end - Duration::from_millis(1)).await;
        assert!(leader.holds(), "held until the deadline");
        tokio::time::sleep_until(end).await;
        assert!(!leader.holds(), "not a moment past it");

        let mut observed = Observed::default();
        let api: Api<Lease> = Api::namespaced(client, "ns");
        let started = Instant::now();
        let outcome = attempt(&api, "a", &mut observed).await;
        assert!(
            matches!(outcome, Err(RequestError::Timeout { .. })),
            "{outcome:?}"
        );
        assert_eq!(Instant::now() - started, REQUEST_TIMEOUT);
    }
}
