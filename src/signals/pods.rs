//! The `pods` signal: the provider's pods must be Ready; a container that restarted within
//! `restart_window` or sits in CrashLoopBackOff turns its pod to `warn`.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{ContainerStatus, Pod};

use kube::api::Api;
use serde::{Deserialize, Serialize};

use super::registry::{CheckType, Run, WatchTarget};
use super::watch::Target;
use super::{Expiry, Observation};
use crate::report::Status;
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

    fn targets(&self) -> Vec<WatchTarget> {
        vec![WatchTarget {
            group: String::new(),
            version: "v1".into(),
            resource: "pods".into(),
            namespace: Some(self.namespace.clone()),
        }]
    }

    fn start(&self, run: Run<'_>) {
        let (selector, window) = (self.selector.clone(), self.restart_window);
        run.follow(
            Vec::new(),
            |client, cluster| Target::<Pod> {
                api: Api::namespaced(client, &self.namespace),
                strip: |p| p.spec = None,
                dyntype: (),
                cluster,
                namespace: Some(self.namespace.clone()),
                labels: Some(self.selector.clone()).filter(|s| !s.is_empty()),
            },
            move |objects, now| observe(objects, &selector, window, now),
        );
    }
}

pub fn observe(
    objects: &[Arc<Pod>],
    selector: &str,
    window: Duration,
    now: Timestamp,
) -> Vec<Observation> {
    if objects.is_empty() {
        return vec![Observation::new(
            "none",
            Status::Fail,
            format!("no pod matches {selector}"),
            now,
        )];
    }
    objects
        .iter()
        .map(|p| judge(p, window, now).regarding(super::ObjectRef::of("v1", "Pod", &p.metadata)))
        .collect()
}

fn judge(pod: &Pod, window: Duration, now: Timestamp) -> Observation {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let status = pod.status.clone().unwrap_or_default();
    let ready = status
        .conditions
        .as_deref()
        .unwrap_or_default()
        .iter()
        .find(|c| c.type_ == "Ready");
    let containers = status.container_statuses.as_deref().unwrap_or_default();
    let crash_looping = crash_loops(containers);
    let phase = status.phase.as_deref().unwrap_or("Unknown");
    match ready {
        Some(c) if c.status == "True" => {}
        other => {
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
