//! Pods of provider-anynines in the states a real cluster leaves behind: the noise a health check must not
//! mistake for an outage.

use serde_json::{json, Value};

use crate::api::{now_rfc3339, rfc3339_offset};

/// A pod state beside the healthy one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodState {
    /// Evicted by the kubelet: phase `Failed`, reason `Evicted`.
    Evicted,
    /// Ran to completion: phase `Succeeded`.
    Completed,
    /// Being deleted during a rollout: `metadata.deletionTimestamp` set, still Running.
    Terminating,
    /// Pending: `PodScheduled=False`, reason `Unschedulable`, the scheduler's message.
    Unschedulable,
}

impl PodState {
    pub const ALL: [PodState; 4] = [
        PodState::Evicted,
        PodState::Completed,
        PodState::Terminating,
        PodState::Unschedulable,
    ];

    /// The control API's word for it.
    pub fn word(self) -> &'static str {
        match self {
            PodState::Evicted => "evicted",
            PodState::Completed => "completed",
            PodState::Terminating => "terminating",
            PodState::Unschedulable => "unschedulable",
        }
    }

    pub fn from_word(word: &str) -> Option<PodState> {
        PodState::ALL.into_iter().find(|s| s.word() == word)
    }
}

/// The scheduler's message for a pod no node can take.
pub const UNSCHEDULABLE_MESSAGE: &str = "0/3 nodes are available: 1 node(s) had untolerated taint \
{node-role.kubernetes.io/control-plane: }, 2 Insufficient memory. preemption: 0/3 nodes are available: \
1 Preemption is not helpful for scheduling, 2 No preemption victims found for incoming pod.";

/// The node the scheduled pods run on.
pub const NODE: &str = "klutch-control-plane-worker";

/// A Ready provider-anynines pod, as Crossplane's package runtime creates it.
pub fn provider_pod() -> Value {
    provider_pod_named("provider-anynines-3f2a9c1b7e5d-6b8f9c7d5-x2x7q")
}

fn provider_pod_named(name: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": "crossplane-system",
            "labels": {
                "pkg.crossplane.io/provider": "provider-anynines",
                "pkg.crossplane.io/revision": "provider-anynines-3f2a9c1b7e5d"
            }
        },
        // Scheduled: a real API server deletes a pod without a node at once instead of letting it terminate.
        "spec": {"nodeName": NODE, "containers": [{"name": "package-runtime", "image": "public.ecr.aws/w5n9a2g2/klutch/provider-anynines:v1.3.2"}]},
        "status": {
            "phase": "Running",
            "conditions": [
                {"type": "Initialized", "status": "True"},
                {"type": "Ready", "status": "True"},
                {"type": "ContainersReady", "status": "True"},
                {"type": "PodScheduled", "status": "True"}
            ],
            "containerStatuses": [{
                "name": "package-runtime", "ready": true, "started": true, "restartCount": 0,
                "image": "public.ecr.aws/w5n9a2g2/klutch/provider-anynines:v1.3.2", "imageID": "",
                "state": {"running": {"startedAt": "2024-08-20T13:01:00Z"}}
            }]
        }
    })
}

/// A provider-anynines pod in `state`, named after it (`provider-anynines-…-evicted`).
pub fn provider_pod_in(state: PodState) -> Value {
    let mut pod = provider_pod_named(&format!(
        "provider-anynines-3f2a9c1b7e5d-6b8f9c7d5-{}",
        state.word()
    ));
    let not_ready = json!([
        {"type": "Initialized", "status": "True"},
        {"type": "Ready", "status": "False", "reason": "PodCompleted"},
        {"type": "ContainersReady", "status": "False", "reason": "PodCompleted"},
        {"type": "PodScheduled", "status": "True"}
    ]);
    match state {
        PodState::Evicted => {
            pod["status"] = json!({"phase": "Failed", "reason": "Evicted",
                "message": "The node was low on resource: memory. Threshold quantity: 100Mi, available: 91Mi. \
Container package-runtime was using 412Mi, request is 0, has larger consumption of memory.",
                "conditions": not_ready, "startTime": "2024-08-20T13:00:58Z"});
        }
        PodState::Completed => {
            pod["status"]["phase"] = json!("Succeeded");
            pod["status"]["conditions"] = not_ready;
            pod["status"]["containerStatuses"][0]["ready"] = json!(false);
            pod["status"]["containerStatuses"][0]["state"] = json!({"terminated": {"exitCode": 0,
                "reason": "Completed", "startedAt": "2024-08-20T13:01:00Z", "finishedAt": now_rfc3339()}});
        }
        PodState::Terminating => {
            pod["metadata"]["deletionTimestamp"] = json!(rfc3339_offset(30));
            pod["metadata"]["deletionGracePeriodSeconds"] = json!(30);
        }
        PodState::Unschedulable => {
            if let Some(spec) = pod["spec"].as_object_mut() {
                spec.remove("nodeName");
            }
            pod["status"] = json!({"phase": "Pending", "qosClass": "BestEffort", "conditions": [{
                "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                "message": UNSCHEDULABLE_MESSAGE, "lastTransitionTime": now_rfc3339()}]});
        }
    }
    pod
}

/// The container of a Ready provider pod crash-looping, as the kubelet reports it: waiting in
/// `CrashLoopBackOff` after seven restarts, the pod `Ready=False` (`ContainersNotReady`).
pub fn crash_loop(pod: &mut Value) {
    let c = &mut pod["status"]["containerStatuses"][0];
    c["ready"] = json!(false);
    c["restartCount"] = json!(7);
    c["state"] = json!({"waiting": {"reason": "CrashLoopBackOff",
        "message": "back-off 5m0s restarting failed container=package-runtime"}});
    c["lastState"] = json!({"terminated": {"exitCode": 1, "reason": "Error",
        "startedAt": "2024-08-20T13:01:00Z", "finishedAt": "2024-08-20T13:02:00Z"}});
    if let Some(conditions) = pod["status"]["conditions"].as_array_mut() {
        for cond in conditions
            .iter_mut()
            .filter(|c| c["type"] == "Ready" || c["type"] == "ContainersReady")
        {
            cond["status"] = json!("False");
            cond["reason"] = json!("ContainersNotReady");
            cond["message"] = json!("containers with unready status: [package-runtime]");
        }
    }
}
