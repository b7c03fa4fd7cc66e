//! The `crossplane-provider` signal: Crossplane Providers (`providers.pkg.crossplane.io/v1`) must be
//! `Installed` and `Healthy`. Crossplane 1.17–1.20 copy the package revision's health, which follows the
//! provider Deployment's `Available`; Crossplane 2 words it `Package runtime health is "False" with message: …`.

use std::sync::Arc;

use jiff::Timestamp;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use serde_json::Value;

use serde::{Deserialize, Serialize};

use super::registry::{CheckType, Run, WatchTarget};
use super::watch::cluster_wide;
use super::Observation;
use crate::report::Status;

/// The keys of a `crossplane-provider` check.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CrossplaneProvider {
    /// Providers that must exist and be healthy; `None` checks every installed provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub providers: Option<Vec<String>>,
}

impl CheckType for CrossplaneProvider {
    const NAME: &'static str = "crossplane-provider";

    fn targets(&self) -> Vec<WatchTarget> {
        vec![WatchTarget {
            group: "pkg.crossplane.io".into(),
            version: "v1".into(),
            resource: "providers".into(),
            namespace: None,
        }]
    }

    fn placeholders(&self) -> Vec<String> {
        self.providers.clone().unwrap_or_default()
    }

    fn start(&self, run: Run<'_>) {
        let wanted = self.providers.clone();
        run.follow(
            self.placeholders(),
            |client, cluster| cluster_wide(client, resource(), cluster),
            move |objects, now| observe(objects, wanted.as_deref(), now),
        );
    }
}

/// The Provider resource.
pub(crate) fn resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("pkg.crossplane.io", "v1", "Provider"),
        "providers",
    )
}

/// One condition of a Kubernetes object, as read from `status.conditions`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Condition<'a> {
    pub status: &'a str,
    pub reason: &'a str,
    pub message: &'a str,
}

/// The condition of `type_` in a `status.conditions` list of an untyped object.
pub(crate) fn condition<'a>(status: &'a Value, type_: &str) -> Option<Condition<'a>> {
    let text = |c: &'a Value, k: &str| c.get(k).and_then(Value::as_str).unwrap_or("");
    status
        .get("conditions")?
        .as_array()?
        .iter()
        .find(|c| text(c, "type") == type_)
        .map(|c| Condition {
            status: text(c, "status"),
            reason: text(c, "reason"),
            message: text(c, "message"),
        })
}

/// `Healthy is "False" (UnhealthyPackageRevision): message`.
pub(crate) fn describe(type_: &str, c: &Condition<'_>) -> String {
    let mut out = format!("{type_} is {:?}", c.status);
    if !c.reason.is_empty() {
        out.push_str(&format!(" ({})", c.reason));
    }
    if !c.message.is_empty() {
        out.push_str(&format!(": {}", c.message));
    }
    out
}

/// Items for the providers in `wanted` (every installed one when `None`).
pub fn observe(
    objects: &[Arc<DynamicObject>],
    wanted: Option<&[String]>,
    now: Timestamp,
) -> Vec<Observation> {
    super::named_items(
        objects,
        wanted,
        "no Crossplane providers are installed",
        now,
        |name, p| {
            let (status, message) = match p {
                None => (Status::Fail, "not installed".to_string()),
                Some(p) => judge(p.data.get("status").unwrap_or(&Value::Null)),
            };
            let observation = Observation::new(name, status, message, now);
            match p {
                Some(p) => observation.regarding(super::ObjectRef::dynamic(
                    "pkg.crossplane.io/v1",
                    "Provider",
                    p,
                )),
                None => observation,
            }
        },
    )
}

fn judge(status: &Value) -> (Status, String) {
    let revision = status
        .get("currentRevision")
        .and_then(Value::as_str)
        .unwrap_or("");
    let installed = condition(status, "Installed");
    let healthy = condition(status, "Healthy");
    let mut failures = Vec::new();
    let mut missing = Vec::new();
    for (type_, c) in [("Installed", &installed), ("Healthy", &healthy)] {
        match c {
            Some(c) if c.status == "True" => {}
            Some(c) => failures.push(describe(type_, c)),
            None => missing.push(type_),
        }
    }
    if !failures.is_empty() {
        return (Status::Fail, failures.join("; "));
    }
    if !missing.is_empty() {
        return (
            Status::Unknown,
            format!("condition {} not reported yet", missing.join(" and ")),
        );
    }
    if revision.is_empty() {
        return (
            Status::Unknown,
            "no current revision yet (the package is still being installed)".into(),
        );
    }
    (Status::Pass, format!("installed and healthy ({revision})"))
}
