//! The `pods` signal: a package serves while one of its pods is Ready. A pod that is not Ready fails only
//! when no other pod is Ready; beside one it warns (`starting`, then `not ready for N s` after
//! `start_grace`; a crash loop names CrashLoopBackOff and its restarts). A Ready container that restarted
//! within `restart_window` or sits in CrashLoopBackOff turns its pod to `warn`. No pod at all fails, unless
//! the check names its `package` and Crossplane scaled that package to zero (the policy reads the link).

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{ContainerStatus, Pod, PodCondition};

use serde::{Deserialize, Serialize};

use super::{CheckType, Run, WatchSpec};
use crate::clock::Due;
use crate::signals::{Expiry, Fact, Observation};
use crate::values::{duration, KeyError};
use crate::verdict::report::Status;

/// The keys of a `pods` check.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct Pods {
    pub namespace: String,
    pub selector: String,
    #[serde(with = "duration")]
    pub restart_window: Duration,
    #[serde(with = "duration")]
    pub start_grace: Duration,
}

impl Default for Pods {
    fn default() -> Self {
        Pods {
            namespace: "crossplane-system".into(),
            selector: "pkg.crossplane.io/provider=provider-anynines".into(),
            restart_window: Duration::from_secs(600),
            start_grace: Duration::from_secs(300),
        }
    }
}

/// The times a pod's judge allows: a restart's warning lasts `restart`; a pod not Ready beside a Ready one
/// is `starting` for `start`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Windows {
    pub restart: Duration,
    pub start: Duration,
}

impl Pods {
    fn windows(&self) -> Windows {
        Windows {
            restart: self.restart_window,
            start: self.start_grace,
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
        let (selector, windows) = (self.selector.clone(), self.windows());
        run.follow(
            WatchSpec::<Pod>::namespaced(&self.namespace, |p| p.spec = None).labels(&self.selector),
            move |objects, _, now| observe(objects, &selector, windows, now.wall),
        );
    }
}

/// One item per pod that still counts. Finished pods (`Succeeded`, `Failed`, `Evicted`) are left behind by
/// the kubelet until garbage-collected and are not counted; a pod starting, crash-looping or terminating
/// during a rollout is at most `warn` while another pod is Ready: that one serves.
pub fn observe(
    objects: &[Arc<Pod>],
    selector: &str,
    windows: Windows,
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
        return vec![
            Observation::new(crate::reserved::NONE, Status::Fail, message, now)
                .with_fact(Fact::NoPod),
        ];
    }
    current
        .iter()
        .map(|pod| {
            let replacement = current
                .iter()
                .find(|p| !std::ptr::eq(**p, *pod) && !terminating(p) && ready(p))
                .map(|p| name_of(p));
            judge(pod, replacement, windows, now).regarding(crate::signals::ObjectRef::of(
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
fn judge(pod: &Pod, replacement: Option<String>, windows: Windows, now: Timestamp) -> Observation {
    let Some(deleted) = &pod.metadata.deletion_timestamp else {
        return judge_running(pod, replacement.as_deref(), windows, now);
    };
    let observation = judge_running(pod, None, windows, now);
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

/// `serving`: another pod of the check that is Ready and not terminating; beside it, a pod that is not Ready
/// warns instead of failing.
fn judge_running(
    pod: &Pod,
    serving: Option<&str>,
    windows: Windows,
    now: Timestamp,
) -> Observation {
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
            return match serving {
                Some(other) => Observation::new(
                    name,
                    Status::Warn,
                    format!("{message}; {other} is Ready"),
                    now,
                ),
                None => Observation::new(name, Status::Fail, message, now),
            };
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
            return match serving {
                None => {
                    for c in &crash_looping {
                        message.push_str(&format!("; {c}"));
                    }
                    Observation::new(name, Status::Fail, message, now)
                }
                Some(other) if !crash_looping.is_empty() => Observation::new(
                    name,
                    Status::Warn,
                    format!("{}; {message}; {other} is Ready", crash_looping.join("; ")),
                    now,
                ),
                Some(other) => starting(pod, name, &message, other, windows.start, now),
            };
        }
    }
    if !crash_looping.is_empty() {
        return Observation::new(name, Status::Warn, crash_looping.join("; "), now);
    }
    recent_restart(name, containers, windows.restart, now)
}

/// A pod not Ready (and not crash-looping) beside a Ready one: `starting` for `grace` after it was created
/// or last turned not Ready, then `not ready for N s`; `warn` either way, as the other one serves.
fn starting(
    pod: &Pod,
    name: String,
    message: &str,
    other: &str,
    grace: Duration,
    now: Timestamp,
) -> Observation {
    let since = condition(pod, "Ready")
        .and_then(|c| c.last_transition_time.as_ref())
        .or(pod.metadata.creation_timestamp.as_ref())
        .map(|t| t.0);
    let Some(since) = since else {
        return Observation::new(
            name,
            Status::Warn,
            format!("starting: {message}; {other} is Ready"),
            now,
        );
    };
    let late = |seconds: i64| {
        format!("not ready for {seconds} s (since {since}): {message}; {other} is Ready")
    };
    let end = since.checked_add(grace).unwrap_or(Timestamp::MAX);
    if end <= now {
        let seconds = now.duration_since(since).as_secs();
        return Observation::new(name, Status::Warn, late(seconds), now);
    }
    Observation::new(
        name.clone(),
        Status::Warn,
        format!("starting: {message}; {other} is Ready"),
        now,
    )
    .expiring(Expiry {
        // The pod's times are the API server's and the kubelet's: a wall-clock deadline.
        at: Due::Wall(end),
        status: Status::Warn,
        message: late(i64::try_from(grace.as_secs()).unwrap_or(i64::MAX)),
        fact: None,
    })
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
                // The restart's time is the kubelet's: a wall-clock deadline.
                at: Due::Wall(end),
                status: Status::Pass,
                message: ready_message,
                fact: None,
            })
        }
        _ => Observation::new(name, Status::Pass, ready_message, now),
    }
}

#[cfg(test)]
mod tests {
    //! The judge on the real object shapes in `sim/fixtures/`, with a hand-set clock.

    use std::sync::Arc;
    use std::time::Duration;

    use jiff::Timestamp;
    use k8s_openapi::api::core::v1::Pod;
    use serde_json::{json, Value};

    use crate::checks::pods;
    use crate::checks::testing::{at, m, object, only};
    use crate::signals::Observation;
    use crate::verdict::report::Status;

    fn windows() -> pods::Windows {
        pods::Windows {
            restart: Duration::from_secs(600),
            start: Duration::from_secs(120),
        }
    }

    fn pod(ready: bool, container_status: Value) -> Arc<Pod> {
        object(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "provider-anynines-abc", "namespace": "crossplane-system"},
            "status": {
                "phase": "Running",
                "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" },
                                "message": if ready { "" } else { "containers with unready status: [package-runtime]" }}],
                "containerStatuses": [container_status]
            }
        }))
    }

    #[test]
    fn pods_ready_not_ready_recent_restart_and_crash_loop() {
        let now = at("2024-08-20T14:00:00Z");
        let window = windows();
        let running = json!({"name": "package-runtime", "ready": true, "restartCount": 0, "image": "x", "imageID": "",
                             "state": {"running": {"startedAt": "2024-08-20T13:00:00Z"}}});
        let o = only(pods::observe(&[pod(true, running)], "sel", window, now));
        assert_eq!((o.status, o.message.as_str()), (Status::Pass, "ready"));

        let restarted = json!({"name": "package-runtime", "ready": true, "restartCount": 3, "image": "x", "imageID": "",
            "state": {"running": {"startedAt": "2024-08-20T13:55:00Z"}},
            "lastState": {"terminated": {"exitCode": 137, "reason": "OOMKilled", "finishedAt": "2024-08-20T13:55:00Z"}}});
        let o = only(pods::observe(&[pod(true, restarted)], "sel", window, now));
        assert_eq!(o.status, Status::Warn);
        assert!(
            o.message.contains("3 restarts; last exit 137 OOMKilled"),
            "{}",
            o.message
        );
        // The warning leaves with the window.
        assert_eq!(o.at(m("2024-08-20T14:05:00Z")).0, Status::Pass);

        let crashing = json!({"name": "package-runtime", "ready": false, "restartCount": 7, "image": "x", "imageID": "",
            "state": {"waiting": {"reason": "CrashLoopBackOff"}}});
        let o = only(pods::observe(
            &[pod(true, crashing.clone())],
            "sel",
            window,
            now,
        ));
        assert_eq!(o.status, Status::Warn);
        assert!(
            o.message.contains("CrashLoopBackOff (7 restarts)"),
            "{}",
            o.message
        );
        let o = only(pods::observe(&[pod(false, crashing)], "sel", window, now));
        assert_eq!(o.status, Status::Fail);
        assert!(
            o.message.contains("containers with unready status"),
            "{}",
            o.message
        );

        let o = only(pods::observe(&[], "app=x", window, now));
        assert_eq!(
            (o.status, o.message.as_str()),
            (Status::Fail, "no pod matches app=x")
        );
    }

    fn sim_pod(state: Option<klutch_sim::PodState>) -> Arc<Pod> {
        object(state.map_or_else(
            klutch_sim::pods::provider_pod,
            klutch_sim::pods::provider_pod_in,
        ))
    }

    #[test]
    fn finished_pods_are_not_counted_and_terminating_ones_warn_beside_a_ready_one() {
        use klutch_sim::PodState::{Completed, Evicted, Terminating, Unschedulable};
        let now = Timestamp::now();
        let window = windows();
        let judged = |pods: &[Option<klutch_sim::PodState>]| -> Vec<(String, Status, String)> {
            let objects: Vec<Arc<Pod>> = pods.iter().map(|s| sim_pod(*s)).collect();
            pods::observe(&objects, "sel", window, now)
                .into_iter()
                .map(|o| {
                    let short = o.item.rsplit('-').next().unwrap_or_default().to_string();
                    (short, o.status, o.message)
                })
                .collect()
        };
        let statuses = |pods: &[Option<klutch_sim::PodState>]| -> Vec<(String, Status)> {
            judged(pods).into_iter().map(|(n, s, _)| (n, s)).collect()
        };
        let ready = ("x2x7q".to_string(), Status::Pass);
        assert_eq!(
            statuses(&[None, Some(Evicted)]),
            std::slice::from_ref(&ready)
        );
        assert_eq!(
            statuses(&[None, Some(Completed)]),
            std::slice::from_ref(&ready)
        );
        assert_eq!(
            statuses(&[None, Some(Terminating)]),
            [ready.clone(), ("terminating".into(), Status::Warn)]
        );
        // Beside a Ready pod, one the scheduler cannot place warns: the package serves.
        assert_eq!(
            statuses(&[None, Some(Unschedulable)]),
            [ready, ("unschedulable".into(), Status::Warn)]
        );

        let items = judged(&[None, Some(Terminating)]);
        assert!(
            items[1]
                .2
                .starts_with("terminating (deletion requested at ")
                && items[1]
                    .2
                    .ends_with("; provider-anynines-3f2a9c1b7e5d-6b8f9c7d5-x2x7q is Ready"),
            "{items:?}"
        );
        // Alone, a terminating pod is no replacement for itself: warn while it is still Ready.
        let items = judged(&[Some(Terminating)]);
        assert_eq!(items[0].1, Status::Warn, "{items:?}");
        assert!(
            items[0].2.ends_with("and no other pod is Ready"),
            "{items:?}"
        );
        // Only finished pods: nothing runs, and the message says what was left out.
        let items = judged(&[Some(Evicted), Some(Completed)]);
        assert_eq!(items.len(), 1, "{items:?}");
        assert_eq!(items[0].1, Status::Fail);
        assert!(
            items[0]
                .2
                .starts_with("no pod matches sel that has not finished (2 finished, not counted: ")
                && items[0].2.contains("-evicted (Evicted)")
                && items[0].2.contains("-completed (Succeeded)"),
            "{items:?}"
        );
        // A Pending pod says why the scheduler leaves it pending.
        let items = judged(&[Some(Unschedulable)]);
        assert_eq!(
            items[0].2,
            format!(
                "not scheduled (Pending): Unschedulable: {}",
                klutch_sim::pods::UNSCHEDULABLE_MESSAGE
            )
        );
    }

    #[test]
    fn a_terminating_pod_that_is_not_ready_fails_without_a_ready_replacement() {
        let now = Timestamp::now();
        let mut terminating = klutch_sim::pods::provider_pod_in(klutch_sim::PodState::Terminating);
        terminating["status"]["conditions"][1]["status"] = json!("False");
        terminating["status"]["conditions"][1]["message"] =
            json!("containers with unready status: [package-runtime]");
        let o = only(pods::observe(&[object(terminating)], "sel", windows(), now));
        assert_eq!(o.status, Status::Fail);
        assert!(
            o.message.starts_with("terminating (deletion requested at ")
                && o.message.ends_with(
                    "; not ready (Running): containers with unready status: [package-runtime]"
                ),
            "{}",
            o.message
        );
    }

    /// A pod of the package, `Running` or `Pending`, created at 13:58 and (when `ready` is given) with a Ready
    /// condition of that status since 13:59.
    fn rollout_pod(name: &str, ready: Option<bool>, container_status: Value) -> Arc<Pod> {
        let mut p = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "crossplane-system",
                         "creationTimestamp": "2024-08-20T13:58:00Z"},
            "status": {"phase": "Running", "containerStatuses": [container_status]}
        });
        match ready {
            Some(ready) => {
                p["status"]["conditions"] = json!([{
                    "type": "Ready", "status": if ready { "True" } else { "False" },
                    "lastTransitionTime": "2024-08-20T13:59:00Z",
                    "message": if ready { "" } else { "containers with unready status: [package-runtime]" }
                }]);
            }
            None => p["status"]["phase"] = json!("Pending"),
        }
        object(p)
    }

    fn judged(pods: &[Arc<Pod>], now: &str) -> Vec<Observation> {
        pods::observe(pods, "sel", windows(), at(now))
    }

    #[test]
    fn a_package_serves_while_a_ready_pod_does() {
        let running = json!({"name": "package-runtime", "ready": true, "restartCount": 0, "image": "x", "imageID": "",
                             "state": {"running": {"startedAt": "2024-08-20T13:00:00Z"}}});
        let waiting = json!({"name": "package-runtime", "ready": false, "restartCount": 0, "image": "x", "imageID": "",
                             "state": {"waiting": {"reason": "ContainerCreating"}}});
        let crashing = json!({"name": "package-runtime", "ready": false, "restartCount": 4, "image": "x", "imageID": "",
            "state": {"waiting": {"reason": "CrashLoopBackOff"}}});
        let old = rollout_pod("old", Some(true), running);
        // (pods, at) → the second pod's status and message.
        let table: [(Arc<Pod>, &str, Status, &str); 5] = [
            (
                rollout_pod("new", None, waiting.clone()),
                "2024-08-20T13:59:00Z",
                Status::Warn,
                "starting: not ready (Pending, no Ready condition yet); old is Ready",
            ),
            // Created at 13:58 with a grace of 120 s: late at 14:00.
            (
                rollout_pod("new", None, waiting.clone()),
                "2024-08-20T14:00:30Z",
                Status::Warn,
                "not ready for 150 s (since 2024-08-20T13:58:00Z): not ready (Pending, no Ready condition yet); old is Ready",
            ),
            // Not Ready since 13:59.
            (
                rollout_pod("new", Some(false), waiting),
                "2024-08-20T14:00:00Z",
                Status::Warn,
                "starting: not ready (Running): containers with unready status: [package-runtime]; old is Ready",
            ),
            (
                rollout_pod("new", Some(false), crashing.clone()),
                "2024-08-20T14:00:00Z",
                Status::Warn,
                "container package-runtime in CrashLoopBackOff (4 restarts); not ready (Running): containers with \
                 unready status: [package-runtime]; old is Ready",
            ),
            (
                rollout_pod("new", None, crashing),
                "2024-08-20T15:00:00Z",
                Status::Warn,
                "container package-runtime in CrashLoopBackOff (4 restarts); not ready (Pending, no Ready condition yet); \
                 old is Ready",
            ),
        ];
        for (new, now, status, message) in table {
            let items = judged(&[old.clone(), new.clone()], now);
            assert_eq!(
                (items[0].status, items[0].message.as_str()),
                (Status::Pass, "ready")
            );
            assert_eq!(
                (items[1].status, items[1].message.as_str()),
                (status, message),
                "at {now}"
            );
            // Alone, the same pod fails: nothing serves.
            let alone = only(judged(&[new], now));
            assert_eq!(alone.status, Status::Fail, "{}", alone.message);
        }
    }

    #[test]
    fn a_starting_pod_turns_late_after_its_grace_by_itself() {
        let waiting = json!({"name": "package-runtime", "ready": false, "restartCount": 0, "image": "x", "imageID": "",
                             "state": {"waiting": {"reason": "ContainerCreating"}}});
        let running = json!({"name": "package-runtime", "ready": true, "restartCount": 0, "image": "x", "imageID": "",
                             "state": {"running": {"startedAt": "2024-08-20T13:00:00Z"}}});
        let items = judged(
            &[
                rollout_pod("old", Some(true), running),
                rollout_pod("new", Some(false), waiting),
            ],
            "2024-08-20T14:00:00Z",
        );
        let new = &items[1];
        assert_eq!(new.at(m("2024-08-20T14:00:59Z")).0, Status::Warn);
        assert!(new
            .at(m("2024-08-20T14:00:59Z"))
            .1
            .starts_with("starting: "));
        // Not Ready since 13:59, grace 120 s.
        assert_eq!(
            new.at(m("2024-08-20T14:01:00Z")),
            (
                Status::Warn,
                "not ready for 120 s (since 2024-08-20T13:59:00Z): not ready (Running): containers with unready \
                 status: [package-runtime]; old is Ready"
            )
        );
    }
}
