//! The `pods` signal: the provider's pods must be Ready; a container that restarted within
//! `restart_window` or sits in CrashLoopBackOff turns its pod to `warn`.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{ContainerStatus, Pod, PodCondition};

use serde::{Deserialize, Serialize};

use super::{CheckType, Run, WatchSpec};
use crate::report::Status;
use crate::signals::{Expiry, Observation};
use crate::values::{duration, KeyError};

/// The keys of a `pods` check.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct Pods {
    pub namespace: String,
    pub selector: String,
    #[serde(with = "duration")]
    pub restart_window: Duration,
}

impl Default for Pods {
    fn default() -> Self {
        Pods {
            namespace: "crossplane-system".into(),
            selector: "pkg.crossplane.io/provider=provider-anynines".into(),
            restart_window: Duration::from_secs(600),
        }
    }
}

impl CheckType for Pods {
    const NAME: &'static str = "pods";

    fn validate(&self, _cluster: Option<&str>) -> Result<(), KeyError> {
        if self.namespace.is_empty() {
            return Err(KeyError::new("namespace", "must not be empty"));
        }
        Ok(())
    }

    fn start(&self, run: &mut Run<'_>) {
        let (selector, window) = (self.selector.clone(), self.restart_window);
        run.follow(
            WatchSpec::<Pod>::namespaced(&self.namespace, |p| p.spec = None).labels(&self.selector),
            move |objects, _, now| observe(objects, &selector, window, now),
        );
    }
}

/// One item per pod that still counts. Finished pods (`Succeeded`, `Failed`, `Evicted`) are left behind by
/// the kubelet until garbage-collected and are not counted; a terminating pod is replaced during every
/// rollout, so it is at most `warn` while another pod is Ready.
pub fn observe(
    objects: &[Arc<Pod>],
    selector: &str,
    window: Duration,
    now: Timestamp,
) -> Vec<Observation> {
    let (finished, current): (Vec<&Pod>, Vec<&Pod>) =
        objects.iter().map(|p| &**p).partition(|p| finished(p));
    if current.is_empty() {
        let mut message = format!("no pod matches {selector}");
        if !finished.is_empty() {
            let names: Vec<String> = finished
                .iter()
                .take(3)
                .map(|p| describe_finished(p))
                .collect();
            let more = finished.len().saturating_sub(names.len());
            message.push_str(&format!(
                " that has not finished ({} finished, not counted: {}{})",
                finished.len(),
                names.join(", "),
                if more > 0 {
                    format!(" and {more} more")
                } else {
                    String::new()
                }
            ));
        }
        return vec![Observation::new(
            crate::reserved::NONE,
            Status::Fail,
            message,
            now,
        )];
    }
    current
        .iter()
        .map(|pod| {
            let replacement = current
                .iter()
                .find(|p| !std::ptr::eq(**p, *pod) && !terminating(p) && ready(p))
                .map(|p| name_of(p));
            judge(pod, replacement, window, now).regarding(crate::signals::ObjectRef::of(
                "v1",
                "Pod",
                &pod.metadata,
            ))
        })
        .collect()
}

/// Ran to its end (`Succeeded`, `Failed`) or was evicted: it will never be Ready again.
fn finished(pod: &Pod) -> bool {
    let status = pod.status.as_ref();
    matches!(
        status.and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    ) || status.and_then(|s| s.reason.as_deref()) == Some("Evicted")
}

/// `NAME (Evicted)`, `NAME (Succeeded)`.
fn describe_finished(pod: &Pod) -> String {
    let status = pod.status.as_ref();
    let why = status
        .and_then(|s| s.reason.as_deref())
        .or_else(|| status.and_then(|s| s.phase.as_deref()))
        .unwrap_or("finished");
    format!("{} ({why})", name_of(pod))
}

fn terminating(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some()
}

fn ready(pod: &Pod) -> bool {
    condition(pod, "Ready").is_some_and(|c| c.status == "True")
}

fn name_of(pod: &Pod) -> String {
    pod.metadata.name.clone().unwrap_or_default()
}

fn condition<'a>(pod: &'a Pod, type_: &str) -> Option<&'a PodCondition> {
    pod.status
        .as_ref()?
        .conditions
        .as_deref()?
        .iter()
        .find(|c| c.type_ == type_)
}

/// `replacement`: another pod of the check that is Ready and not terminating.
fn judge(pod: &Pod, replacement: Option<String>, window: Duration, now: Timestamp) -> Observation {
    let observation = judge_running(pod, window, now);
    let Some(deleted) = &pod.metadata.deletion_timestamp else {
        return observation;
    };
    let terminating = format!("terminating (deletion requested at {})", deleted.0);
    match replacement {
        Some(other) => Observation::new(
            observation.item,
            Status::Warn,
            format!("{terminating}; {other} is Ready"),
            now,
        ),
        None if observation.status == Status::Pass => Observation::new(
            observation.item,
            Status::Warn,
            format!("{terminating} and no other pod is Ready"),
            now,
        ),
        None => Observation::new(
            observation.item,
            observation.status,
            format!("{terminating}; {}", observation.message),
            now,
        ),
    }
}

fn judge_running(pod: &Pod, window: Duration, now: Timestamp) -> Observation {
    let name = name_of(pod);
    let status = pod.status.clone().unwrap_or_default();
    let containers = status.container_statuses.as_deref().unwrap_or_default();
    let crash_looping = crash_loops(containers);
    let phase = status.phase.as_deref().unwrap_or("Unknown");
    let unscheduled = condition(pod, "PodScheduled").filter(|c| c.status == "False");
    match (condition(pod, "Ready"), unscheduled) {
        (Some(c), _) if c.status == "True" => {}
        (_, Some(s)) => {
            // The scheduler's reason: `Unschedulable: 0/3 nodes are available: …`.
            let message = format!(
                "not scheduled ({phase}): {}: {}",
                s.reason.as_deref().unwrap_or("PodScheduled=False"),
                s.message
                    .as_deref()
                    .unwrap_or("no message from the scheduler")
            );
            return Observation::new(name, Status::Fail, message, now);
        }
        (other, None) => {
            let mut message = match other {
                Some(c) => format!(
                    "not ready ({phase}){}",
                    c.message
                        .as_deref()
                        .map(|m| format!(": {m}"))
                        .unwrap_or_default()
                ),
                None => format!("not ready ({phase}, no Ready condition yet)"),
            };
            for c in &crash_looping {
                message.push_str(&format!("; {c}"));
            }
            return Observation::new(name, Status::Fail, message, now);
        }
    }
    if !crash_looping.is_empty() {
        return Observation::new(name, Status::Warn, crash_looping.join("; "), now);
    }
    recent_restart(name, containers, window, now)
}

/// `container NAME in CrashLoopBackOff (N restarts)` for each container waiting in a crash loop.
fn crash_loops(containers: &[ContainerStatus]) -> Vec<String> {
    containers
        .iter()
        .filter_map(|c| {
            let waiting = c.state.as_ref()?.waiting.as_ref()?;
            (waiting.reason.as_deref() == Some("CrashLoopBackOff")).then(|| {
                format!(
                    "container {} in CrashLoopBackOff ({} restarts)",
                    c.name, c.restart_count
                )
            })
        })
        .collect()
}

/// A ready pod: `warn` while its latest container restart is within `window`, then `pass`.
fn recent_restart(
    name: String,
    containers: &[ContainerStatus],
    window: Duration,
    now: Timestamp,
) -> Observation {
    // The latest restart: when a container's previous run ended.
    let restart = containers
        .iter()
        .filter_map(|c| {
            let ended = c.last_state.as_ref()?.terminated.as_ref()?;
            let at: Timestamp = ended.finished_at.as_ref()?.0;
            Some((
                at,
                c,
                ended.reason.clone().unwrap_or_default(),
                ended.exit_code,
            ))
        })
        .max_by_key(|(at, ..)| *at);
    let ready_message = "ready".to_string();
    match restart {
        Some((at, c, reason, code)) if at.checked_add(window).is_ok_and(|end| end > now) => {
            let end = at.checked_add(window).unwrap_or(Timestamp::MAX);
            Observation::new(
                name,
                Status::Warn,
                format!(
                    "container {} restarted at {at} ({} restarts; last exit {code}{})",
                    c.name,
                    c.restart_count,
                    if reason.is_empty() {
                        String::new()
                    } else {
                        format!(" {reason}")
                    }
                ),
                now,
            )
            .expiring(Expiry {
                at: end,
                status: Status::Pass,
                message: ready_message,
            })
        }
        _ => Observation::new(name, Status::Pass, ready_message, now),
    }
}
