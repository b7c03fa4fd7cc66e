//! The `deployment` signal: a Deployment (the klutch-bind backend, an app cluster's konnector) must serve
//! with at least `min_available` available replicas; its `Available` condition, a rollout and a stuck one
//! are said on the item. Installers name the same Deployment differently, so a check takes several candidate names: each
//! one that exists is an item.

use std::sync::Arc;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1 as k8s;

use serde::{Deserialize, Serialize};

use super::{CheckType, Run, WatchSpec};
use crate::clock::Due;
use crate::signals::{Expiry, Observation};
use crate::values::KeyError;
use crate::verdict::report::Status;

/// The keys of a `deployment` check.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Deployment {
    pub namespace: String,
    pub deployment: Names,
    #[serde(default = "Deployment::default_min_available")]
    pub min_available: i32,
}

/// `deployment = "NAME"` or `deployment = ["NAME", …]` (candidates: whichever exists).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged, expecting = "a Deployment name or a list of candidate names")]
pub enum Names {
    One(String),
    Candidates(Vec<String>),
}

impl Names {
    pub fn all(&self) -> &[String] {
        match self {
            Names::One(name) => std::slice::from_ref(name),
            Names::Candidates(names) => names,
        }
    }
}

/// The item of a check none of whose several candidates exists.
pub const MISSING_ITEM: &str = crate::reserved::MISSING;

impl Deployment {
    fn default_min_available() -> i32 {
        1
    }
}

impl CheckType for Deployment {
    const NAME: &'static str = "deployment";

    fn validate(&self, _cluster: Option<&str>) -> Result<(), KeyError> {
        let names = self.deployment.all();
        if self.namespace.is_empty() || names.is_empty() || names.iter().any(String::is_empty) {
            return Err(KeyError::new(
                "namespace and deployment",
                "must not be empty",
            ));
        }
        if self.min_available < 0 {
            return Err(KeyError::new("min_available", "must not be negative"));
        }
        Ok(())
    }

    /// A single name is the item even while missing; of several candidates none is known to exist yet.
    fn placeholders(&self) -> Vec<String> {
        match self.deployment.all() {
            [one] => vec![one.clone()],
            _ => Vec::new(),
        }
    }

    fn start(&self, run: &mut Run<'_>) {
        let d = self.clone();
        run.follow(
            WatchSpec::<k8s::Deployment>::namespaced(&self.namespace, strip_template),
            move |objects, _, now| observe(objects, &d, now.wall),
        );
    }
}

/// The pod template is the bulk of a Deployment and no judge reads it.
pub(crate) fn strip_template(d: &mut k8s::Deployment) {
    if let Some(spec) = d.spec.as_mut() {
        spec.template = Default::default();
    }
}

pub fn observe(
    objects: &[Arc<k8s::Deployment>],
    c: &Deployment,
    now: Timestamp,
) -> Vec<Observation> {
    let names = c.deployment.all();
    let existing: Vec<Observation> =
        names
            .iter()
            .filter_map(|name| {
                let d = objects.iter().find(|d| {
                    d.metadata.name.as_deref() == Some(name)
                        && d.metadata.namespace.as_deref() == Some(&c.namespace)
                })?;
                let verdict = judge(d, name, c.min_available, now);
                Some(verdict.observation(name.clone(), now).regarding(
                    crate::signals::ObjectRef::of("apps/v1", "Deployment", &d.metadata),
                ))
            })
            .collect();
    if !existing.is_empty() {
        return existing;
    }
    let (item, message) = match names {
        [one] => (
            one.clone(),
            format!("Deployment {}/{one} not found", c.namespace),
        ),
        _ => (
            MISSING_ITEM.to_string(),
            format!(
                "none of the Deployments {} exists in namespace {}",
                names.join(", "),
                c.namespace
            ),
        ),
    };
    vec![Observation::new(item, Status::Fail, message, now)]
}

/// What the `deployment` rules say of one Deployment.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Verdict {
    pub status: Status,
    pub message: String,
    /// A rollout in progress: worth showing while the item passes.
    pub rolling_out: bool,
    /// When a rollout that makes no progress turns the item to `warn`, and what it says then.
    pub stalls: Option<(Timestamp, String)>,
}

impl Verdict {
    fn observation(self, item: String, now: Timestamp) -> Observation {
        let mut o = Observation::new(item.clone(), self.status, self.message, now);
        if self.rolling_out {
            o = o.notable();
        }
        if let Some((at, message)) = self.stalls {
            o = o.expiring(Expiry {
                // The controller's lastUpdateTime: a wall-clock deadline.
                at: Due::Wall(at),
                status: Status::Warn,
                message,
                fact: None,
            });
        }
        o
    }
}

/// One Deployment by the `deployment` rules (the konnectors of `app-cluster-binding` too). Serving decides:
/// it passes while at least `min_available` replicas are available, whatever the controller's `Available`
/// condition says of its own `maxUnavailable` (that is a warning naming the condition); fewer fails. A
/// rollout in progress is said on the item; one without progress for half its `progressDeadlineSeconds`,
/// or past that deadline, warns.
pub(crate) fn judge(
    d: &k8s::Deployment,
    name: &str,
    min_available: i32,
    now: Timestamp,
) -> Verdict {
    let status = d.status.clone().unwrap_or_default();
    let available = status.available_replicas.unwrap_or(0);
    let wanted = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let replicas = format!("{available} of {wanted} replicas available");
    let conditions = status.conditions.as_deref().unwrap_or_default();
    let condition = |type_: &str| conditions.iter().find(|c| c.type_ == type_);
    let verdict = |status, message| Verdict {
        status,
        message,
        rolling_out: false,
        stalls: None,
    };
    let unavailable = condition("Available")
        .filter(|c| c.status != "True")
        .map(|c| {
            let mut message = format!("Available is {:?}", c.status);
            if let Some(r) = c.reason.as_deref().filter(|r| !r.is_empty()) {
                message.push_str(&format!(" ({r})"));
            }
            if let Some(m) = c.message.as_deref().filter(|m| !m.is_empty()) {
                message.push_str(&format!(": {m}"));
            }
            message
        });
    let stuck = condition("Progressing")
        .filter(|c| c.status == "False" && c.reason.as_deref() == Some("ProgressDeadlineExceeded"))
        .map(|_| format!("deployment {name:?} exceeded its progress deadline"));
    if available < min_available {
        if condition("Available").is_none() && available == 0 {
            return verdict(
                Status::Unknown,
                format!("condition Available not reported yet; {replicas}"),
            );
        }
        let mut message: Vec<String> = [unavailable, stuck].into_iter().flatten().collect();
        message.push(format!("{replicas}, min_available is {min_available}"));
        return verdict(Status::Fail, message.join("; "));
    }
    let warnings: Vec<String> = [unavailable, stuck].into_iter().flatten().collect();
    let rollout = rollout(d, name);
    if !warnings.is_empty() {
        let mut message = warnings.join("; ");
        if let Some(rollout) = &rollout {
            message.push_str(&format!("; rolling out: {rollout}"));
        }
        return verdict(Status::Warn, format!("{message}; {replicas}"));
    }
    let Some(rollout) = rollout else {
        return verdict(Status::Pass, replicas);
    };
    let message = format!("rolling out: {rollout}; {replicas}");
    // The controller moves Progressing's lastUpdateTime whenever the rollout makes progress.
    let deadline = d
        .spec
        .as_ref()
        .and_then(|s| s.progress_deadline_seconds)
        .unwrap_or(600);
    // A status behind its spec says nothing of the new rollout's progress yet.
    let observed = match (d.metadata.generation, status.observed_generation) {
        (Some(generation), Some(observed)) => observed >= generation,
        _ => true,
    };
    let progressed = condition("Progressing")
        .filter(|_| observed)
        .and_then(|c| c.last_update_time.as_ref());
    let stalls = progressed.and_then(|t| {
        let at = t.0.checked_add(jiff::SignedDuration::from_secs(i64::from(deadline / 2))).ok()?;
        let message = format!(
            "rolling out without progress since {} (half of progressDeadlineSeconds {deadline}): {rollout}; {replicas}",
            t.0
        );
        Some((at, message))
    });
    match stalls {
        Some((at, message)) if at <= now => verdict(Status::Warn, message),
        stalls => Verdict {
            status: Status::Pass,
            message,
            rolling_out: true,
            stalls,
        },
    }
}

/// What `kubectl rollout status` says of a Deployment whose rollout has not finished: its status does not
/// describe its current spec yet, or (until the controller reports `NewReplicaSetAvailable`) not every
/// replica is updated and available. An absent `observedGeneration` is not a lag.
fn rollout(d: &k8s::Deployment, name: &str) -> Option<String> {
    let status = d.status.as_ref()?;
    if let (Some(generation), Some(observed)) = (d.metadata.generation, status.observed_generation)
    {
        if observed < generation {
            return Some(format!(
                "Waiting for deployment {name:?} spec update to be observed (observed generation {observed} of {generation})"
            ));
        }
    }
    // The last rollout finished; a replica lost since is replaced, not rolled out.
    let finished = status
        .conditions
        .as_deref()
        .unwrap_or_default()
        .iter()
        .any(|c| c.type_ == "Progressing" && c.reason.as_deref() == Some("NewReplicaSetAvailable"));
    if finished {
        return None;
    }
    let wanted = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let updated = status.updated_replicas.unwrap_or(0);
    let replicas = status.replicas.unwrap_or(0);
    let available = status.available_replicas.unwrap_or(0);
    let waiting = format!("Waiting for deployment {name:?} rollout to finish");
    if updated < wanted {
        return Some(format!(
            "{waiting}: {updated} out of {wanted} new replicas have been updated"
        ));
    }
    if replicas > updated {
        return Some(format!(
            "{waiting}: {} old replicas are pending termination",
            replicas - updated
        ));
    }
    (available < updated)
        .then(|| format!("{waiting}: {available} of {updated} updated replicas are available"))
}

#[cfg(test)]
mod tests {
    //! The judge on the real object shapes in `sim/fixtures/`, with a hand-set clock.

    use k8s_openapi::api::apps::v1::Deployment;
    use serde_json::json;

    use crate::checks::deployments;
    use crate::checks::testing::{at, fixture, m, object, only};
    use crate::verdict::report::Status;

    fn deployment_config(name: &str, min_available: i32) -> deployments::Deployment {
        deployments::Deployment {
            namespace: "bind".into(),
            deployment: deployments::Names::One(name.into()),
            min_available,
        }
    }

    #[test]
    fn deployment_available_unavailable_and_absent() {
        let now = at("2024-08-20T14:00:00Z");
        let available = object::<Deployment>(fixture("deployment-anynines-backend-available"));
        let o = only(deployments::observe(
            std::slice::from_ref(&available),
            &deployment_config("anynines-backend", 1),
            now,
        ));
        assert_eq!(
            (o.status, o.message.as_str()),
            (Status::Pass, "1 of 1 replicas available")
        );

        let o = only(deployments::observe(
            &[available],
            &deployment_config("anynines-backend", 2),
            now,
        ));
        assert_eq!(o.status, Status::Fail);
        assert!(o.message.contains("min_available is 2"), "{}", o.message);

        let unavailable = object::<Deployment>(fixture("deployment-anynines-backend-unavailable"));
        let o = only(deployments::observe(
            &[unavailable],
            &deployment_config("anynines-backend", 1),
            now,
        ));
        assert_eq!(
            (o.status, o.message.as_str()),
            (
                Status::Fail,
                "Available is \"False\" (MinimumReplicasUnavailable): Deployment does not have minimum \
                 availability.; 0 of 1 replicas available, min_available is 1"
            )
        );

        let konnector = object::<Deployment>(fixture("deployment-konnector-available"));
        let o = only(deployments::observe(
            &[konnector],
            &deployment_config("anynines-backend", 1),
            now,
        ));
        assert_eq!(
            (o.status, o.message.as_str()),
            (Status::Fail, "Deployment bind/anynines-backend not found")
        );
    }

    fn candidates() -> deployments::Deployment {
        deployments::Deployment {
            namespace: "bind".into(),
            deployment: deployments::Names::Candidates(vec![
                "anynines-backend".into(),
                "klutch-bind-backend".into(),
            ]),
            min_available: 1,
        }
    }

    #[test]
    fn each_existing_candidate_is_an_item_and_none_is_one_missing_item() {
        let now = at("2024-08-20T14:00:00Z");
        let mut renamed = fixture("deployment-anynines-backend-available");
        renamed["metadata"]["name"] = json!("klutch-bind-backend");
        let o = only(deployments::observe(&[object(renamed)], &candidates(), now));
        assert_eq!(
            (o.item.as_str(), o.status),
            ("klutch-bind-backend", Status::Pass)
        );
        let konnector = object::<Deployment>(fixture("deployment-konnector-available"));
        let o = only(deployments::observe(&[konnector], &candidates(), now));
        assert_eq!(
            (o.item.as_str(), o.status, o.message.as_str()),
            (
                "_missing",
                Status::Fail,
                "none of the Deployments anynines-backend, klutch-bind-backend exists in namespace bind"
            )
        );
    }

    #[test]
    fn a_deployment_rollout_that_lags_passes_and_a_stuck_one_warns_like_kubectl_rollout_status() {
        let now = at("2024-08-20T14:00:00Z");
        let mut d = fixture("deployment-anynines-backend-available");
        d["metadata"]["generation"] = json!(3);
        let o = only(deployments::observe(
            &[object(d.clone())],
            &candidates(),
            now,
        ));
        assert_eq!(
            (o.status, o.message.as_str()),
            (
                Status::Pass,
                "rolling out: Waiting for deployment \"anynines-backend\" spec update to be observed (observed \
                 generation 2 of 3); 1 of 1 replicas available"
            )
        );
        assert_eq!(o.detail.as_deref(), Some(o.message.as_str()), "notable");
        d["metadata"]["generation"] = json!(2);
        let progressing = d["status"]["conditions"]
            .as_array_mut()
            .expect("conditions")
            .iter_mut()
            .find(|c| c["type"] == "Progressing")
            .expect("Progressing");
        progressing["status"] = json!("False");
        progressing["reason"] = json!("ProgressDeadlineExceeded");
        let o = only(deployments::observe(
            &[object(d.clone())],
            &candidates(),
            now,
        ));
        assert_eq!(
            (o.status, o.message.as_str()),
            (
                Status::Warn,
                "deployment \"anynines-backend\" exceeded its progress deadline; 1 of 1 replicas available"
            )
        );
        // Without observedGeneration there is no lag to tell.
        d["metadata"]["generation"] = json!(5);
        d["status"]["conditions"] = json!([{"type": "Available", "status": "True"}]);
        d["status"]
            .as_object_mut()
            .expect("status")
            .remove("observedGeneration");
        let o = only(deployments::observe(&[object(d)], &candidates(), now));
        assert_eq!(o.status, Status::Pass, "{}", o.message);
    }

    /// A Deployment `anynines-backend` of `replicas` wanting 2, at generation 4, with the status the Deployment
    /// controller writes: `(observedGeneration, replicas, updated, available)`, `Available` and
    /// `Progressing` as (status, reason), Progressing last updated at 13:59.
    fn rolled(
        counts: (i64, i32, i32, i32),
        available: (&str, &str),
        progressing: (&str, &str),
    ) -> serde_json::Value {
        let (observed, replicas, updated, ready) = counts;
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "anynines-backend", "namespace": "bind", "generation": 4},
            "spec": {"replicas": 2, "progressDeadlineSeconds": 60, "selector": {}, "template": {}},
            "status": {
                "observedGeneration": observed, "replicas": replicas, "updatedReplicas": updated,
                "readyReplicas": ready, "availableReplicas": ready,
                "conditions": [
                    {"type": "Available", "status": available.0, "reason": available.1,
                     "message": "Deployment has minimum availability.",
                     "lastUpdateTime": "2024-08-20T13:00:00Z", "lastTransitionTime": "2024-08-20T13:00:00Z"},
                    {"type": "Progressing", "status": progressing.0, "reason": progressing.1,
                     "lastUpdateTime": "2024-08-20T13:59:00Z", "lastTransitionTime": "2024-08-20T13:00:00Z"}
                ]
            }
        })
    }

    #[test]
    fn serving_decides_not_the_rollout_strategy() {
        // Before half of the 60 s progress deadline has passed since the last progress (13:59).
        let now = at("2024-08-20T13:59:10Z");
        let ok = ("True", "MinimumReplicasAvailable");
        let short = ("False", "MinimumReplicasUnavailable");
        let done = ("True", "NewReplicaSetAvailable");
        let updating = ("True", "ReplicaSetUpdated");
        let waiting = "rolling out: Waiting for deployment \"anynines-backend\" rollout to finish";
        // (status, min_available, expected status, message)
        let table = [
            (rolled((4, 2, 2, 2), ok, done), 1, Status::Pass, "2 of 2 replicas available".to_string()),
            // One of two pods deleted, maxUnavailable 0: the controller says Available=False, one serves.
            (
                rolled((4, 2, 2, 1), short, done),
                1,
                Status::Warn,
                "Available is \"False\" (MinimumReplicasUnavailable): Deployment has minimum availability.; \
                 1 of 2 replicas available"
                    .to_string(),
            ),
            (
                rolled((4, 2, 2, 1), short, done),
                2,
                Status::Fail,
                "Available is \"False\" (MinimumReplicasUnavailable): Deployment has minimum availability.; \
                 1 of 2 replicas available, min_available is 2"
                    .to_string(),
            ),
            (
                rolled((4, 0, 0, 0), short, done),
                1,
                Status::Fail,
                "Available is \"False\" (MinimumReplicasUnavailable): Deployment has minimum availability.; \
                 0 of 2 replicas available, min_available is 1"
                    .to_string(),
            ),
            // A rolling update with maxSurge 1: the surge pod, then the old ones leaving.
            (
                rolled((4, 3, 1, 2), ok, updating),
                1,
                Status::Pass,
                format!("{waiting}: 1 out of 2 new replicas have been updated; 2 of 2 replicas available"),
            ),
            (
                rolled((4, 3, 2, 2), ok, updating),
                1,
                Status::Pass,
                format!("{waiting}: 1 old replicas are pending termination; 2 of 2 replicas available"),
            ),
            (
                rolled((4, 2, 2, 1), short, updating),
                1,
                Status::Warn,
                format!(
                    "Available is \"False\" (MinimumReplicasUnavailable): Deployment has minimum availability.; \
                     {waiting}: 1 of 2 updated replicas are available; 1 of 2 replicas available"
                ),
            ),
            // Stuck: the old replicas serve.
            (
                rolled((4, 3, 1, 2), ok, ("False", "ProgressDeadlineExceeded")),
                1,
                Status::Warn,
                format!(
                    "deployment \"anynines-backend\" exceeded its progress deadline; \
                     {waiting}: 1 out of 2 new replicas have been updated; 2 of 2 replicas available"
                ),
            ),
            (
                rolled((4, 3, 1, 0), short, ("False", "ProgressDeadlineExceeded")),
                1,
                Status::Fail,
                "Available is \"False\" (MinimumReplicasUnavailable): Deployment has minimum availability.; \
                 deployment \"anynines-backend\" exceeded its progress deadline; 0 of 2 replicas available, \
                 min_available is 1"
                    .to_string(),
            ),
        ];
        for (d, min_available, status, message) in table {
            let o = only(deployments::observe(
                &[object(d.clone())],
                &deployment_config("anynines-backend", min_available),
                now,
            ));
            assert_eq!(
                (o.status, o.message.as_str()),
                (status, message.as_str()),
                "{:#}",
                d["status"]
            );
            // A rollout in progress is worth showing while it passes.
            assert_eq!(
                o.detail.is_some(),
                message.starts_with("rolling out"),
                "{}",
                o.message
            );
        }
    }

    #[test]
    fn a_rollout_without_progress_for_half_its_deadline_warns_by_itself() {
        // progressDeadlineSeconds 60, last progress at 13:59: warn from 13:59:30.
        let d = rolled(
            (4, 3, 1, 2),
            ("True", "MinimumReplicasAvailable"),
            ("True", "ReplicaSetUpdated"),
        );
        let o = only(deployments::observe(
            &[object(d.clone())],
            &deployment_config("anynines-backend", 1),
            at("2024-08-20T13:59:10Z"),
        ));
        assert_eq!(o.status, Status::Pass);
        assert_eq!(o.at(m("2024-08-20T13:59:29Z")).0, Status::Pass);
        let stalled = "rolling out without progress since 2024-08-20T13:59:00Z (half of progressDeadlineSeconds \
                       60): Waiting for deployment \"anynines-backend\" rollout to finish: 1 out of 2 new replicas \
                       have been updated; 2 of 2 replicas available";
        assert_eq!(o.at(m("2024-08-20T13:59:30Z")), (Status::Warn, stalled));
        // Judged after that time, it warns at once.
        let o = only(deployments::observe(
            &[object(d)],
            &deployment_config("anynines-backend", 1),
            at("2024-08-20T14:00:00Z"),
        ));
        assert_eq!((o.status, o.message.as_str()), (Status::Warn, stalled));
    }
}
