//! The `deployment` signal: one Deployment (the klutch-bind backend, an app cluster's konnector) must be
//! `Available` with at least `min_available` available replicas.

use std::sync::Arc;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::Deployment;

use super::Observation;
use crate::config;
use crate::report::Status;

pub fn observe(
    objects: &[Arc<Deployment>],
    c: &config::Deployment,
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
    vec![Observation::new(c.deployment.clone(), status, message, now)]
}

fn judge(d: &Deployment, min_available: i32) -> (Status, String) {
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
