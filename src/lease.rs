//! The Lease `klutch-health-events` (`coordination.k8s.io/v1`) elects the one replica that writes Events:
//! kube 5 has no leader election, so this is the small loop. Optimistic concurrency on `resourceVersion` is
//! the whole protocol: create when absent, renew with a PUT carrying the version read, take over only once
//! the holder's renewal is older than the lease's duration; a `409 Conflict` means another replica won.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::Client;
use tokio::sync::watch;

use crate::signals::api_errors::{self, Resource};
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

/// Decides from the Lease as read (`None`: absent) at `now`.
pub fn decide(current: Option<&Lease>, identity: &str, now: Timestamp) -> Action {
    let Some(lease) = current else {
        return Action::Create;
    };
    let spec = lease.spec.clone().unwrap_or_default();
    if spec.holder_identity.as_deref() == Some(identity) {
        return Action::Renew { takeover: false };
    }
    let duration = i64::from(spec.lease_duration_seconds.unwrap_or(DURATION_SECONDS));
    let expired = match (&spec.holder_identity, spec.renew_time.or(spec.acquire_time)) {
        (None, _) | (_, None) => true,
        (Some(_), Some(MicroTime(renewed))) => renewed
            .checked_add(jiff::SignedDuration::from_secs(duration))
            .is_ok_and(|end| end <= now),
    };
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
        spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
    }
    spec.holder_identity = Some(identity.into());
    spec.lease_duration_seconds = Some(DURATION_SECONDS);
    spec.renew_time = Some(MicroTime(now));
    lease.spec = Some(spec);
    lease
}

/// A request on the Lease that failed, and which verb it was (what RBAC must grant).
#[derive(Debug, thiserror::Error)]
#[error("{verb} of the Lease failed: {source}")]
pub struct LeaseError {
    pub verb: &'static str,
    #[source]
    pub source: kube::Error,
}

/// Tries once to hold the Lease; `Ok(true)`: this replica holds it until its next renewal is due.
pub async fn attempt(api: &Api<Lease>, identity: &str) -> Result<bool, LeaseError> {
    let failed = |verb| move |source| LeaseError { verb, source };
    let current = api.get_opt(NAME).await.map_err(failed(GET))?;
    let now = Timestamp::now();
    let written = match decide(current.as_ref(), identity, now) {
        Action::Wait => return Ok(false),
        Action::Create => api
            .create(&PostParams::default(), &ours(None, identity, now, false))
            .await
            .map_err(failed(CREATE)),
        Action::Renew { takeover } => {
            let lease = ours(current.as_ref(), identity, now, takeover);
            api.replace(NAME, &PostParams::default(), &lease)
                .await
                .map_err(failed(UPDATE))
        }
    };
    match written {
        Ok(_) => Ok(true),
        Err(LeaseError {
            source: kube::Error::Api(e),
            ..
        }) if e.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

/// Keeps trying to hold the Lease in `namespace`; the receiver says whether this replica holds it.
pub fn start(client: Client, namespace: &str, identity: String) -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    let api: Api<Lease> = Api::namespaced(client, namespace);
    let leases = Resource::written("coordination.k8s.io", "leases", namespace);
    tokio::spawn(async move {
        let mut failures = LogLimiter::default();
        loop {
            let held = match attempt(&api, &identity).await {
                Ok(held) => {
                    failures = LogLimiter::default();
                    held
                }
                Err(e) => {
                    if let Some(left_out) = failures.allow() {
                        let error = api_errors::request(&e.source, e.verb, &leases);
                        tracing::warn!(%error, left_out, lease = NAME,
                            "cannot read or renew the Events Lease; this replica writes no Events meanwhile");
                    }
                    false
                }
            };
            tx.send_if_modified(|was| {
                let changed = *was != held;
                if changed {
                    tracing::info!(lease = NAME, held, identity = %identity, "Events Lease {}", if held { "acquired" } else { "lost" });
                }
                *was = held;
                changed
            });
            tokio::time::sleep(RENEW_EVERY).await;
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).expect("time")
    }

    fn held_by(who: &str, renewed: i64) -> Lease {
        ours(None, who, at(renewed), false)
    }

    #[test]
    fn absent_is_created_own_is_renewed_live_is_left_expired_is_taken() {
        assert_eq!(decide(None, "a", at(0)), Action::Create);
        let lease = held_by("a", 0);
        assert_eq!(
            decide(Some(&lease), "a", at(5)),
            Action::Renew { takeover: false }
        );
        assert_eq!(decide(Some(&lease), "b", at(29)), Action::Wait);
        assert_eq!(
            decide(Some(&lease), "b", at(30)),
            Action::Renew { takeover: true }
        );
    }

    #[test]
    fn a_takeover_counts_a_transition_and_keeps_the_version_read() {
        let mut lease = held_by("a", 0);
        lease.metadata.resource_version = Some("42".into());
        let taken = ours(Some(&lease), "b", at(40), true);
        let spec = taken.spec.expect("spec");
        assert_eq!(taken.metadata.resource_version.as_deref(), Some("42"));
        assert_eq!(spec.holder_identity.as_deref(), Some("b"));
        assert_eq!(spec.lease_transitions, Some(1));
        assert_eq!(spec.acquire_time, Some(MicroTime(at(40))));
    }
}
