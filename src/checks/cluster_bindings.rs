//! The `cluster-binding` signal: every app cluster's konnector, judged from the control plane alone.
//! klutch-bind keeps one `ClusterBinding` (`clusterbindings.klutch.anynines.com/v1alpha1`, named `cluster`)
//! per bound app cluster in that consumer's namespace, and the konnector writes `status.lastHeartbeatTime`
//! (its own clock) every `status.heartbeatInterval / 2`. The backend's `Healthy` condition is only
//! re-evaluated when something changes, so a dead konnector can leave `Healthy=True` behind: liveness is
//! judged here, by heartbeats *seen* (a changed `lastHeartbeatTime`, on this process's clock, so a skewed
//! konnector clock cannot fake or hide one), with a deadline that fires by timer without any event.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::packages::{condition, describe};
use super::{CheckType, Run, WatchSpec, WatchState};
use crate::clock::{Due, Moment};
use crate::signals::{Expiry, Observation};
use crate::verdict::report::Status;

/// The keys of a `cluster-binding` check: none besides the shared ones.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterBinding {}

/// Where the stripped object keeps the API server's time of the last status write (no object field has a
/// name with a dot at the top level, so it cannot collide).
const STATUS_WRITTEN: &str = "klutch-health.statusWritten";

/// A konnector clock this far from the API server's is `warn`.
pub const MAX_SKEW: Duration = Duration::from_secs(30);

/// The longest `heartbeatInterval` judged: beyond it (klutch-bind writes seconds to minutes) a value is
/// taken for garbage, not a konnector that beats once a year.
pub const MAX_INTERVAL: Duration = Duration::from_secs(24 * 3600);

/// `Ready=False` reasons about heartbeats, which this check judges itself.
const OWN_REASONS: [&str; 4] = [
    "FirstHeartbeatPending",
    "HeartbeatIntervalMissing",
    "HeartbeatTimeout",
    "HeartbeatTimeDrift",
];

impl CheckType for ClusterBinding {
    const NAME: &'static str = "cluster-binding";

    fn start(&self, run: &mut Run<'_>) {
        let mut session = Session {
            cluster: run.cluster().map(str::to_string),
            memory: run.stash(),
            ..Session::default()
        };
        run.follow(
            // One per consumer namespace: watched in every namespace, and so are its Events written.
            WatchSpec::all_namespaces(resource(), keep_status_and_write_time),
            move |objects: &[Arc<DynamicObject>], state: &WatchState, now| {
                session.observe(objects, state, now)
            },
        );
    }
}

fn resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("klutch.anynines.com", "v1alpha1", "ClusterBinding"),
        "clusterbindings",
    )
}

/// Keeps the status, and the API server's own timestamp of the last status write: the start-up evidence
/// of a heartbeat, before one is seen. The konnector's write (the manager owning `lastHeartbeatTime`) is
/// preferred: the backend writes conditions into the same status. Its strings are bounded: tenants' bindings.
fn keep_status_and_write_time(obj: &mut DynamicObject) {
    let status_writes = || {
        obj.metadata
            .managed_fields
            .iter()
            .flatten()
            .filter(|m| m.subresource.as_deref() == Some("status"))
    };
    let written = latest(status_writes().filter(|m| {
        m.fields_v1
            .as_ref()
            .is_some_and(|f| f.0.pointer("/f:status/f:lastHeartbeatTime").is_some())
    }))
    .or_else(|| latest(status_writes()));
    let status = obj.data.get_mut("status").map(Value::take);
    obj.data = serde_json::json!({ "status": status, STATUS_WRITTEN: written });
    crate::human::bound_strings(&mut obj.data);
}

/// The time of the latest of `writes`, as written (RFC 3339).
fn latest<'a>(writes: impl Iterator<Item = &'a ManagedFieldsEntry>) -> Option<Value> {
    writes
        .filter_map(|m| m.time.as_ref())
        .filter_map(|t| serde_json::to_value(t).ok())
        .max_by(|a, b| a.as_str().cmp(&b.as_str()))
}

/// What has been seen of one ClusterBinding's heartbeats.
#[derive(Debug, Clone, Default, PartialEq)]
struct Heartbeats {
    /// The `lastHeartbeatTime` last stored.
    value: Option<String>,
    /// When a change of it was last seen, on this process's clocks.
    seen: Option<Moment>,
}

/// Heartbeat memory by (cluster, object uid), owned by the running check set: relists, a restart after a
/// panic and config reloads start new watch sessions, which must not forget a heartbeat already seen.
type Seen = HashMap<Key, Heartbeats>;

/// (cluster, object uid): uids are unique within a cluster only.
type Key = (Option<String>, String);

/// One watch session of a check: whether its watch was broken at the last look, and when it recovered.
#[derive(Debug, Default, Clone)]
struct Session {
    /// The check's cluster (`None`: the default one).
    cluster: Option<String>,
    memory: Arc<Mutex<Seen>>,
    broken: bool,
    recovered: Option<Moment>,
}

impl Session {
    fn observe(
        &mut self,
        objects: &[Arc<DynamicObject>],
        state: &WatchState,
        now: Moment,
    ) -> Vec<Observation> {
        if self.broken && state.broken.is_none() {
            self.recovered = Some(now);
        }
        self.broken = state.broken.is_some();
        let watch = Liveness {
            recovered: self.recovered,
            broken: state.broken.as_ref().map(|b| {
                (
                    b.since,
                    format!(
                        "clusterbindings watch broken since {}: {}",
                        b.since.wall, b.error
                    ),
                )
            }),
        };
        let cluster = self.cluster.as_deref();
        let mut memory = self.memory.lock().unwrap_or_else(PoisonError::into_inner);
        let mut items = Vec::new();
        let mut present = std::collections::HashSet::new();
        for object in objects {
            let binding = Binding::read(object);
            let key = (cluster.map(str::to_string), binding.uid.clone());
            let seen = remember(memory.entry(key.clone()), binding.heartbeat.as_deref(), now);
            present.insert(key);
            items.push(judge(&binding, seen, &watch, now).regarding(
                crate::signals::ObjectRef::dynamic(
                    "klutch.anynines.com/v1alpha1",
                    "ClusterBinding",
                    object,
                ),
            ));
        }
        memory.retain(|key, _| key.0.as_deref() != cluster || present.contains(key));
        if items.is_empty() {
            return vec![Observation::new(
                crate::reserved::NONE,
                Status::Warn,
                "no ClusterBindings: no app cluster is bound",
                now.wall,
            )];
        }
        items.sort_by(|a, b| a.item.cmp(&b.item));
        items
    }
}

/// Records the stored `lastHeartbeatTime`; a change from the one stored before is a heartbeat seen now.
/// The first sight of an object is not a heartbeat seen: its value may be hours old.
fn remember(
    entry: std::collections::hash_map::Entry<'_, Key, Heartbeats>,
    value: Option<&str>,
    now: Moment,
) -> Option<Moment> {
    let memory = entry.or_insert_with(|| Heartbeats {
        value: value.map(str::to_string),
        seen: None,
    });
    if memory.value.as_deref() != value {
        memory.value = value.map(str::to_string);
        if value.is_some() {
            memory.seen = Some(now);
        }
    }
    memory.seen
}

/// What the judge reads of one ClusterBinding.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Binding {
    /// The consumer namespace: the item's name.
    pub namespace: String,
    pub uid: String,
    /// `status.lastHeartbeatTime`, as written (the konnector's clock).
    pub heartbeat: Option<String>,
    /// `status.heartbeatInterval`, a Go duration (`30s`, `5m0s`).
    pub interval: Option<String>,
    /// The API server's time of the last status write (`managedFields`).
    pub status_written: Option<Timestamp>,
    /// A failing `SecretValid`, or `Ready` for a reason this check does not judge itself.
    pub failure: Option<String>,
}

impl Binding {
    pub fn read(object: &DynamicObject) -> Binding {
        let status = object.data.get("status").unwrap_or(&Value::Null);
        let text = |v: &Value, key: &str| v.get(key).and_then(Value::as_str).map(str::to_string);
        let secret = condition(status, "SecretValid").filter(|c| c.status == "False");
        let ready = condition(status, "Ready")
            .filter(|c| c.status == "False" && !OWN_REASONS.contains(&c.reason));
        let failure = match (secret, ready) {
            (Some(c), _) => Some(describe("SecretValid", &c)),
            (None, Some(c)) => Some(describe("Ready", &c)),
            (None, None) => None,
        };
        Binding {
            namespace: object.metadata.namespace.clone().unwrap_or_default(),
            uid: object.metadata.uid.clone().unwrap_or_default(),
            heartbeat: text(status, "lastHeartbeatTime"),
            interval: text(status, "heartbeatInterval"),
            status_written: object
                .data
                .get(STATUS_WRITTEN)
                .and_then(Value::as_str)
                .and_then(|t| t.parse().ok()),
            failure,
        }
    }
}

/// How the clusterbindings watch is doing, as liveness needs it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Liveness {
    /// When the watch last recovered from a break: every deadline restarts from there.
    pub recovered: Option<Moment>,
    /// Since when, and why, the watch is broken.
    pub broken: Option<(Moment, String)>,
}

/// One ClusterBinding's item: `seen` is when a heartbeat was last seen (`None`: not since start-up).
/// Deadlines run on the monotonic clock from the evidence of the last heartbeat; the API server's and the
/// konnector's timestamps are placed on it as the wall clock reads them now, never later than now.
pub fn judge(b: &Binding, seen: Option<Moment>, watch: &Liveness, now: Moment) -> Observation {
    let item = |status, message: String| Observation::new(&b.namespace, status, message, now.wall);
    if let Some(failure) = &b.failure {
        return item(Status::Fail, failure.clone());
    }
    let Some(raw) = &b.heartbeat else {
        return item(
            Status::Unknown,
            "waiting for the first heartbeat of the konnector".into(),
        );
    };
    let Ok(beat) = raw.parse::<Timestamp>() else {
        return item(
            Status::Unknown,
            format!("lastHeartbeatTime {raw:?} is not an RFC 3339 time"),
        );
    };
    let Some(interval_text) = &b.interval else {
        return item(
            Status::Warn,
            format!("no heartbeatInterval in its status: cannot tell when a heartbeat is due (last heartbeat {raw})"),
        );
    };
    let Ok(interval) = humantime::parse_duration(interval_text) else {
        return item(
            Status::Warn,
            format!("heartbeatInterval {interval_text:?} is not a duration: cannot tell when a heartbeat is due"),
        );
    };
    // Written by each app cluster's konnector: any value may arrive, and none may overflow the deadline.
    let Some(grace) = interval
        .checked_mul(2)
        .filter(|g| !g.is_zero() && interval <= MAX_INTERVAL)
    else {
        return item(
            Status::Warn,
            format!(
                "heartbeatInterval {interval_text:?} is no usable interval (more than 0s, at most 24h): cannot tell when a heartbeat is due"
            ),
        );
    };
    // Our clock (a heartbeat seen) or the API server's (its last status write); the konnector's own
    // clock only when neither is known. Never later than now: a heartbeat from the future must not pass
    // until then.
    let outside = |t: Timestamp| now.at(now.instant_of(t.min(now.wall)));
    let evidence = match seen {
        Some(seen) => seen.min(now).seen_from(now),
        None => outside(b.status_written.unwrap_or(beat)),
    };
    let basis = watch.recovered.map_or(evidence, |r| r.max(evidence));
    let deadline = basis.after(grace);
    let silent = format!(
        "konnector of app cluster {} silent since {}, heartbeat expected every {interval_text}",
        b.namespace,
        clock(evidence.wall, now.wall)
    );
    // The konnector's own status write is the closest API server time to its heartbeat.
    // Without either, only a heartbeat from the future tells of skew (an old one may just be old).
    let skew = b
        .status_written
        .or(seen.map(|s| s.wall))
        .map(|r| r.duration_since(beat))
        .or_else(|| Some(now.wall.duration_since(beat)).filter(|s| s.is_negative()));
    let (status, message) = match skew {
        Some(skew) if skew.unsigned_abs() > MAX_SKEW => (
            Status::Warn,
            format!(
                "konnector clock of app cluster {} is {}s {} the API server's (lastHeartbeatTime {raw}): clock skew?",
                b.namespace,
                skew.as_secs().unsigned_abs(),
                if skew.is_negative() { "ahead of" } else { "behind" }
            ),
        ),
        _ => (
            Status::Pass,
            format!(
                "heartbeat every {interval_text}, last at {}",
                clock(evidence.wall, now.wall)
            ),
        ),
    };
    let missed = now.mono >= deadline.mono;
    match &watch.broken {
        None if missed => item(Status::Fail, silent),
        None => item(status, message).expiring(Expiry {
            at: Due::Mono(deadline.mono),
            status: Status::Fail,
            message: silent,
            fact: None,
        }),
        // The deadline passed while the watch was still live: that counts.
        Some((since, _)) if deadline.mono < since.mono => item(Status::Fail, silent),
        // A deadline that falls into the break blames the blind control plane, not the app cluster.
        Some((_, reason)) if missed => item(Status::Unknown, reason.clone()),
        Some((_, reason)) => item(status, message).expiring(Expiry {
            at: Due::Mono(deadline.mono),
            status: Status::Unknown,
            message: reason.clone(),
            fact: None,
        }),
    }
}

/// `16:02:11Z` within a day of `now`, else the full date and time.
fn clock(t: Timestamp, now: Timestamp) -> String {
    if now.duration_since(t).unsigned_abs() < Duration::from_secs(24 * 3600) {
        t.strftime("%H:%M:%SZ").to_string()
    } else {
        t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().expect("a time")
    }

    /// The moment the wall clock shows `s`, on hand-set clocks that never step.
    fn m(s: &str) -> Moment {
        Moment::from_wall(at(s))
    }

    fn fixture(name: &str) -> DynamicObject {
        let path = format!("{}/sim/fixtures/{name}.json", env!("CARGO_MANIFEST_DIR"));
        serde_json::from_str(&std::fs::read_to_string(path).expect("fixture")).expect("JSON")
    }

    /// The healthy fixture: last heartbeat 14:02:31Z, every 30s.
    fn healthy() -> Binding {
        Binding::read(&fixture("clusterbinding-healthy"))
    }

    #[test]
    fn the_fixtures_read_as_the_judge_needs_them() {
        let b = healthy();
        assert_eq!(b.namespace, "kube-bind-7xk2p");
        assert_eq!(b.heartbeat.as_deref(), Some("2024-08-20T14:02:31Z"));
        assert_eq!(b.interval.as_deref(), Some("30s"));
        assert_eq!(b.failure, None);
        let pending = Binding::read(&fixture("clusterbinding-heartbeat-pending"));
        assert_eq!((pending.heartbeat, pending.failure), (None, None));
    }

    #[test]
    fn the_konnectors_status_write_time_survives_stripping() {
        let mut o = fixture("clusterbinding-healthy");
        o.metadata.managed_fields = Some(vec![
            serde_json::from_value(
                serde_json::json!({"manager": "konnector", "operation": "Update",
                "subresource": "status", "time": "2024-08-20T14:02:33Z", "fieldsType": "FieldsV1",
                "fieldsV1": {"f:status": {"f:lastHeartbeatTime": {}}}}),
            )
            .expect("entry"),
            // The backend's later condition write is not a heartbeat.
            serde_json::from_value(
                serde_json::json!({"manager": "klutch-bind-backend", "operation": "Update",
                "subresource": "status", "time": "2024-08-20T14:04:00Z", "fieldsType": "FieldsV1",
                "fieldsV1": {"f:status": {"f:conditions": {}}}}),
            )
            .expect("entry"),
            serde_json::from_value(
                serde_json::json!({"manager": "kubectl", "operation": "Update",
                "time": "2024-08-20T15:00:00Z"}),
            )
            .expect("entry"),
        ]);
        let mut only_backend = o.clone();
        keep_status_and_write_time(&mut o);
        assert_eq!(
            Binding::read(&o).status_written,
            Some(at("2024-08-20T14:02:33Z"))
        );
        // Without the konnector's entry, the latest status write.
        if let Some(entries) = only_backend.metadata.managed_fields.as_mut() {
            entries.remove(0);
        }
        keep_status_and_write_time(&mut only_backend);
        assert_eq!(
            Binding::read(&only_backend).status_written,
            Some(at("2024-08-20T14:04:00Z"))
        );
    }

    struct Case {
        what: &'static str,
        binding: Binding,
        seen: Option<&'static str>,
        watch: Liveness,
        now: &'static str,
        status: Status,
        message: &'static str,
        /// (at, status, message start) of the expiry, if any.
        expiry: Option<(&'static str, Status, &'static str)>,
    }

    #[test]
    fn liveness_skew_and_conditions() {
        let live = Liveness::default();
        let broken = |since: &str| Liveness {
            recovered: None,
            broken: Some((m(since), "clusterbindings watch broken since …: 503".into())),
        };
        let with = |f: fn(&mut Binding)| {
            let mut b = healthy();
            f(&mut b);
            b
        };
        let cases = [
            Case {
                what: "a heartbeat seen recently passes and fails by timer at seen + 2 × interval",
                binding: healthy(),
                seen: Some("2024-08-20T14:02:32Z"),
                watch: live.clone(),
                now: "2024-08-20T14:02:40Z",
                status: Status::Pass,
                message: "heartbeat every 30s, last at 14:02:32Z",
                expiry: Some(("2024-08-20T14:03:32Z", Status::Fail,
                    "konnector of app cluster kube-bind-7xk2p silent since 14:02:32Z, heartbeat expected every 30s")),
            },
            Case {
                what: "no heartbeat seen for 2 × interval while live fails",
                binding: healthy(),
                seen: Some("2024-08-20T14:02:32Z"),
                watch: live.clone(),
                now: "2024-08-20T14:03:32Z",
                status: Status::Fail,
                message: "konnector of app cluster kube-bind-7xk2p silent since 14:02:32Z, heartbeat expected every 30s",
                expiry: None,
            },
            Case {
                what: "at start-up the API server's status write decides, not the konnector's clock",
                binding: with(|b| b.status_written = Some(at("2024-08-20T14:02:31Z"))),
                seen: None,
                watch: live.clone(),
                now: "2024-08-20T14:05:00Z",
                status: Status::Fail,
                message: "konnector of app cluster kube-bind-7xk2p silent since 14:02:31Z, heartbeat expected every 30s",
                expiry: None,
            },
            Case {
                what: "without a status write time, lastHeartbeatTime",
                binding: healthy(),
                seen: None,
                watch: live.clone(),
                now: "2024-08-20T14:02:50Z",
                status: Status::Pass,
                message: "heartbeat every 30s, last at 14:02:31Z",
                expiry: Some(("2024-08-20T14:03:31Z", Status::Fail, "konnector of app cluster")),
            },
            Case {
                what: "a konnector clock 45s ahead warns, never fails",
                binding: with(|b| b.heartbeat = Some("2024-08-20T14:03:17Z".into())),
                seen: Some("2024-08-20T14:02:32Z"),
                watch: live.clone(),
                now: "2024-08-20T14:02:40Z",
                status: Status::Warn,
                message: "konnector clock of app cluster kube-bind-7xk2p is 45s ahead of the API server's (lastHeartbeatTime 2024-08-20T14:03:17Z): clock skew?",
                expiry: Some(("2024-08-20T14:03:32Z", Status::Fail, "konnector of app cluster")),
            },
            Case {
                what: "skew is measured against the konnector's status write, not when the change was seen",
                binding: with(|b| b.status_written = Some(at("2024-08-20T14:02:32Z"))),
                seen: Some("2024-08-20T14:10:00Z"),
                watch: live.clone(),
                now: "2024-08-20T14:10:01Z",
                status: Status::Pass,
                message: "heartbeat every 30s, last at 14:10:00Z",
                expiry: Some(("2024-08-20T14:11:00Z", Status::Fail, "konnector of app cluster")),
            },
            Case {
                what: "a skew of 30s is tolerated",
                binding: with(|b| b.heartbeat = Some("2024-08-20T14:02:02Z".into())),
                seen: Some("2024-08-20T14:02:32Z"),
                watch: live.clone(),
                now: "2024-08-20T14:02:40Z",
                status: Status::Pass,
                message: "heartbeat every 30s, last at 14:02:32Z",
                expiry: Some(("2024-08-20T14:03:32Z", Status::Fail, "konnector of app cluster")),
            },
            Case {
                what: "no heartbeat ever is unknown",
                binding: with(|b| b.heartbeat = None),
                seen: None,
                watch: live.clone(),
                now: "2024-08-20T14:02:40Z",
                status: Status::Unknown,
                message: "waiting for the first heartbeat of the konnector",
                expiry: None,
            },
            Case {
                what: "no heartbeatInterval warns",
                binding: with(|b| b.interval = None),
                seen: None,
                watch: live.clone(),
                now: "2024-08-20T14:02:40Z",
                status: Status::Warn,
                message: "no heartbeatInterval in its status: cannot tell when a heartbeat is due (last heartbeat 2024-08-20T14:02:31Z)",
                expiry: None,
            },
            Case {
                what: "an interval that overflows any deadline is no usable interval, not a panic",
                binding: with(|b| b.interval = Some("10000000000000000000s".into())),
                seen: Some("2024-08-20T14:02:32Z"),
                watch: live.clone(),
                now: "2024-08-20T14:02:40Z",
                status: Status::Warn,
                message: "heartbeatInterval \"10000000000000000000s\" is no usable interval (more than 0s, at most 24h): cannot tell when a heartbeat is due",
                expiry: None,
            },
            Case {
                what: "a zero interval is no usable interval, not a silent konnector",
                binding: with(|b| b.interval = Some("0s".into())),
                seen: Some("2024-08-20T14:02:32Z"),
                watch: live.clone(),
                now: "2024-08-20T14:02:40Z",
                status: Status::Warn,
                message: "heartbeatInterval \"0s\" is no usable interval (more than 0s, at most 24h): cannot tell when a heartbeat is due",
                expiry: None,
            },
            Case {
                what: "a heartbeat years ahead with no API server time is clock skew, and its deadline runs from now",
                binding: with(|b| {
                    b.heartbeat = Some("2030-01-01T00:00:00Z".into());
                    b.status_written = None;
                }),
                seen: None,
                watch: live.clone(),
                now: "2024-08-20T14:02:40Z",
                status: Status::Warn,
                message: "konnector clock of app cluster kube-bind-7xk2p is 169293440s ahead of the API server's (lastHeartbeatTime 2030-01-01T00:00:00Z): clock skew?",
                expiry: Some(("2024-08-20T14:03:40Z", Status::Fail, "konnector of app cluster kube-bind-7xk2p silent since 14:02:40Z")),
            },
            Case {
                what: "a failing condition fails with its reason",
                binding: with(|b| b.failure = Some("SecretValid is \"False\" (KubeconfigInvalid)".into())),
                seen: Some("2024-08-20T14:02:32Z"),
                watch: live.clone(),
                now: "2024-08-20T14:02:40Z",
                status: Status::Fail,
                message: "SecretValid is \"False\" (KubeconfigInvalid)",
                expiry: None,
            },
            Case {
                what: "a deadline inside a watch break is unknown with the cluster's reason",
                binding: healthy(),
                seen: Some("2024-08-20T14:02:32Z"),
                watch: broken("2024-08-20T14:03:00Z"),
                now: "2024-08-20T14:04:00Z",
                status: Status::Unknown,
                message: "clusterbindings watch broken since …: 503",
                expiry: None,
            },
            Case {
                what: "before that deadline the break only arms an unknown at the deadline",
                binding: healthy(),
                seen: Some("2024-08-20T14:02:32Z"),
                watch: broken("2024-08-20T14:03:00Z"),
                now: "2024-08-20T14:03:10Z",
                status: Status::Pass,
                message: "heartbeat every 30s, last at 14:02:32Z",
                expiry: Some(("2024-08-20T14:03:32Z", Status::Unknown, "clusterbindings watch broken")),
            },
            Case {
                what: "a deadline missed before the break still counts",
                binding: healthy(),
                seen: Some("2024-08-20T14:02:32Z"),
                watch: broken("2024-08-20T14:04:00Z"),
                now: "2024-08-20T14:04:10Z",
                status: Status::Fail,
                message: "konnector of app cluster kube-bind-7xk2p silent since 14:02:32Z, heartbeat expected every 30s",
                expiry: None,
            },
            Case {
                what: "after recovery the deadline restarts from the recovery time",
                binding: healthy(),
                seen: Some("2024-08-20T14:02:32Z"),
                watch: Liveness { recovered: Some(m("2024-08-20T14:10:00Z")), broken: None },
                now: "2024-08-20T14:10:30Z",
                status: Status::Pass,
                message: "heartbeat every 30s, last at 14:02:32Z",
                expiry: Some(("2024-08-20T14:11:00Z", Status::Fail,
                    "konnector of app cluster kube-bind-7xk2p silent since 14:02:32Z")),
            },
        ];
        for c in cases {
            let o = judge(&c.binding, c.seen.map(m), &c.watch, m(c.now));
            assert_eq!(o.item, "kube-bind-7xk2p", "{}", c.what);
            assert_eq!(
                (o.status, o.message.as_str()),
                (c.status, c.message),
                "{}",
                c.what
            );
            match c.expiry {
                None => assert!(o.expires.is_empty(), "{}: {:?}", c.what, o.expires),
                Some((when, status, start)) => {
                    assert_eq!(o.expires.len(), 1, "{}", c.what);
                    let e = &o.expires[0];
                    assert_eq!(
                        (e.at, e.status),
                        (Due::Mono(m(when).mono), status),
                        "{}",
                        c.what
                    );
                    assert!(e.message.starts_with(start), "{}: {}", c.what, e.message);
                }
            }
        }
    }

    #[test]
    fn a_heartbeat_is_seen_when_the_stored_value_changes_not_on_first_sight() {
        let mut memory = HashMap::new();
        let key = (None, "uid".to_string());
        let t = |s| m(s);
        let first = remember(
            memory.entry(key.clone()),
            Some("a"),
            t("2024-08-20T14:00:00Z"),
        );
        assert_eq!(
            first, None,
            "first sight (start-up, relist into a new process)"
        );
        let same = remember(
            memory.entry(key.clone()),
            Some("a"),
            t("2024-08-20T14:00:10Z"),
        );
        assert_eq!(
            same, None,
            "an unchanged value (a relist, another object's event)"
        );
        let changed = remember(
            memory.entry(key.clone()),
            Some("b"),
            t("2024-08-20T14:00:20Z"),
        );
        assert_eq!(changed, Some(t("2024-08-20T14:00:20Z")));
        let kept = remember(
            memory.entry(key.clone()),
            Some("b"),
            t("2024-08-20T14:05:00Z"),
        );
        assert_eq!(kept, Some(t("2024-08-20T14:00:20Z")));
    }

    #[test]
    fn ready_false_fails_only_for_reasons_not_judged_here() {
        let mut o = fixture("clusterbinding-healthy");
        o.data["status"]["conditions"][0] = serde_json::json!({"type": "Ready", "status": "False",
            "reason": "HeartbeatTimeout", "message": "no heartbeat for 1m"});
        assert_eq!(Binding::read(&o).failure, None);
        o.data["status"]["conditions"][0]["reason"] = "APIServiceExportMissing".into();
        assert_eq!(
            Binding::read(&o).failure.as_deref(),
            Some("Ready is \"False\" (APIServiceExportMissing): no heartbeat for 1m")
        );
        o.data["status"]["conditions"][2] = serde_json::json!({"type": "SecretValid", "status": "False",
            "reason": "KubeconfigInvalid", "message": "bad"});
        assert_eq!(
            Binding::read(&o).failure.as_deref(),
            Some("SecretValid is \"False\" (KubeconfigInvalid): bad")
        );
    }
}
