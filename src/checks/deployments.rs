//! The `deployment` signal: a Deployment (the klutch-bind backend, an app cluster's konnector) must be
//! `Available` with at least `min_available` available replicas, and its status must describe its current
//! spec. Installers name the same Deployment differently, so a check takes several candidate names: each
//! one that exists is an item.

use std::sync::Arc;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1 as k8s;

use serde::{Deserialize, Serialize};

use super::{CheckType, Run, WatchSpec};
use crate::report::Status;
use crate::signals::Observation;
use crate::values::KeyError;

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
    let existing: Vec<Observation> = names
        .iter()
        .filter_map(|name| {
            let d = objects.iter().find(|d| {
                d.metadata.name.as_deref() == Some(name)
                    && d.metadata.namespace.as_deref() == Some(&c.namespace)
            })?;
            let (status, message) = judge(d, name, c.min_available);
            Some(
                Observation::new(name.clone(), status, message, now).regarding(
                    crate::signals::ObjectRef::of("apps/v1", "Deployment", &d.metadata),
                ),
            )
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

/// One Deployment by the `deployment` rules (the konnectors of `app-cluster-binding` too): Available with
/// `min_available` replicas, its status current and its rollout not stuck.
pub(crate) fn judge(d: &k8s::Deployment, name: &str, min_available: i32) -> (Status, String) {
    let status = d.status.clone().unwrap_or_default();
    let available = status.available_replicas.unwrap_or(0);
    let wanted = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let replicas = format!("{available} of {wanted} replicas available");
    let condition = status
        .conditions
        .as_deref()
        .unwrap_or_default()
        .iter()
        .find(|c| c.type_ == "Available");
    let Some(condition) = condition else {
        return (
            Status::Unknown,
            format!("condition Available not reported yet; {replicas}"),
        );
    };
    if condition.status != "True" {
        let mut message = format!("Available is {:?}", condition.status);
        if let Some(r) = condition.reason.as_deref().filter(|r| !r.is_empty()) {
            message.push_str(&format!(" ({r})"));
        }
        if let Some(m) = condition.message.as_deref().filter(|m| !m.is_empty()) {
            message.push_str(&format!(": {m}"));
        }
        return (Status::Fail, format!("{message}; {replicas}"));
    }
    if available < min_available {
        return (
            Status::Fail,
            format!("{replicas}, min_available is {min_available}"),
        );
    }
    if let Some(rollout) = rollout_lag(d, name) {
        return (Status::Warn, format!("{rollout}; {replicas}"));
    }
    (Status::Pass, replicas)
}

/// What `kubectl rollout status` says of a Deployment whose status does not describe its current spec yet,
/// or whose rollout is stuck. An absent `observedGeneration` is not a lag.
fn rollout_lag(d: &k8s::Deployment, name: &str) -> Option<String> {
    let status = d.status.as_ref()?;
    if let (Some(generation), Some(observed)) = (d.metadata.generation, status.observed_generation)
    {
        if observed < generation {
            return Some(format!(
                "Waiting for deployment {name:?} spec update to be observed (observed generation {observed} of {generation})"
            ));
        }
    }
    let progressing = status
        .conditions
        .as_deref()
        .unwrap_or_default()
        .iter()
        .find(|c| c.type_ == "Progressing")?;
    (progressing.status == "False"
        && progressing.reason.as_deref() == Some("ProgressDeadlineExceeded"))
    .then(|| format!("deployment {name:?} exceeded its progress deadline"))
}

#[cfg(test)]
mod tests {
    //! The judge on the real object shapes in `sim/fixtures/`, with a hand-set clock.

    use k8s_openapi::api::apps::v1::Deployment;
    use serde_json::json;

    use crate::checks::deployments;
    use crate::checks::testing::{at, fixture, object, only};
    use crate::report::Status;

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
        assert_eq!(o.status, Status::Fail);
        assert!(
            o.message
                .starts_with("Available is \"False\" (MinimumReplicasUnavailable)"),
            "{}",
            o.message
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
    fn a_deployment_rollout_that_lags_or_is_stuck_warns_like_kubectl_rollout_status() {
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
                Status::Warn,
                "Waiting for deployment \"anynines-backend\" spec update to be observed (observed generation 2 of 3); \
                 1 of 1 replicas available"
            )
        );
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
}
