//! The `deployment` signal: one Deployment (the klutch-bind backend, an app cluster's konnector) must be
//! `Available` with at least `min_available` available replicas.

use std::sync::Arc;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1 as k8s;

use kube::api::Api;
use serde::{Deserialize, Serialize};

use super::registry::{CheckType, Run, WatchTarget};
use super::watch::Target;
use super::Observation;
use crate::report::Status;
use crate::values::KeyError;

/// The keys of a `deployment` check.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Deployment {
    pub namespace: String,
    pub deployment: String,
    #[serde(default = "Deployment::default_min_available")]
    pub min_available: i32,
}

impl Deployment {
    fn default_min_available() -> i32 {
        1
    }
}

impl CheckType for Deployment {
    const NAME: &'static str = "deployment";

    fn validate(&self, _cluster: Option<&str>) -> Result<(), KeyError> {
        if self.namespace.is_empty() || self.deployment.is_empty() {
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

    fn targets(&self) -> Vec<WatchTarget> {
        vec![WatchTarget {
            group: "apps".into(),
            version: "v1".into(),
            resource: "deployments".into(),
            namespace: Some(self.namespace.clone()),
        }]
    }

    fn placeholders(&self) -> Vec<String> {
        vec![self.deployment.clone()]
    }

    fn start(&self, run: Run<'_>) {
        let d = self.clone();
        run.follow(
            self.placeholders(),
            |client, cluster| Target::<k8s::Deployment> {
                api: Api::namespaced(client, &self.namespace),
                strip: |d| {
                    if let Some(spec) = d.spec.as_mut() {
                        spec.template = Default::default();
                    }
                },
                dyntype: (),
                cluster,
                namespace: Some(self.namespace.clone()),
                labels: None,
            },
            move |objects, now| observe(objects, &d, now),
        );
    }
}

pub fn observe(
    objects: &[Arc<k8s::Deployment>],
    c: &Deployment,
    now: Timestamp,
) -> Vec<Observation> {
    let found = objects.iter().find(|d| {
        d.metadata.name.as_deref() == Some(&c.deployment)
            && d.metadata.namespace.as_deref() == Some(&c.namespace)
    });
    let (status, message) = match found {
        None => (
            Status::Fail,
            format!("Deployment {}/{} not found", c.namespace, c.deployment),
        ),
        Some(d) => judge(d, c.min_available),
    };
    let observation = Observation::new(c.deployment.clone(), status, message, now);
    vec![match found {
        Some(d) => {
            observation.regarding(super::ObjectRef::of("apps/v1", "Deployment", &d.metadata))
        }
        None => observation,
    }]
}

fn judge(d: &k8s::Deployment, min_available: i32) -> (Status, String) {
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
    (Status::Pass, replicas)
}
