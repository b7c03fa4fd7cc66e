//! The `crossplane-package` signal: Crossplane packages (`pkg.crossplane.io/v1` Providers, Configurations or
//! Functions, one kind per check) must be `Installed` and `Healthy` for their current generation. Crossplane
//! 1.17–1.20 copy the package revision's health, which follows the provider Deployment's `Available`;
//! Crossplane 2 words it `Package runtime health is "False" with message: …`: messages are shown as given.
//! `crossplane-provider` is the older name, with its `providers` key.

use std::sync::Arc;

use jiff::Timestamp;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use serde_json::Value;

use serde::{Deserialize, Serialize};

use super::{keep_status, CheckType, Run, WatchSpec};
use crate::report::Status;
use crate::signals::Observation;

/// The keys of a `crossplane-package` check.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CrossplanePackage {
    #[serde(default)]
    pub kind: PackageKind,
    /// Packages that must exist and be healthy; `None` checks every installed package of `kind`.
    /// `providers` is the key of the `crossplane-provider` alias.
    #[serde(default, alias = "providers", skip_serializing_if = "Option::is_none")]
    pub names: Option<Vec<String>>,
}

/// The package kinds of `pkg.crossplane.io/v1`, by their plural.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PackageKind {
    #[default]
    Providers,
    Configurations,
    Functions,
}

impl PackageKind {
    fn plural(self) -> &'static str {
        match self {
            PackageKind::Providers => "providers",
            PackageKind::Configurations => "configurations",
            PackageKind::Functions => "functions",
        }
    }

    fn kind(self) -> &'static str {
        match self {
            PackageKind::Providers => "Provider",
            PackageKind::Configurations => "Configuration",
            PackageKind::Functions => "Function",
        }
    }

    /// The package kind's resource.
    pub(crate) fn resource(self) -> ApiResource {
        ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("pkg.crossplane.io", "v1", self.kind()),
            self.plural(),
        )
    }
}

impl CheckType for CrossplanePackage {
    const NAME: &'static str = "crossplane-package";
    const ALIASES: &'static [&'static str] = &["crossplane-provider"];

    fn placeholders(&self) -> Vec<String> {
        self.names.clone().unwrap_or_default()
    }

    fn start(&self, run: &mut Run<'_>) {
        let (kind, wanted) = (self.kind, self.names.clone());
        run.follow(
            WatchSpec::cluster_scoped(kind.resource(), keep_status),
            move |objects, _, now| observe_kind(kind, objects, wanted.as_deref(), now.wall),
        );
    }
}

/// One condition of a Kubernetes object, as read from `status.conditions`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Condition<'a> {
    pub status: &'a str,
    pub reason: &'a str,
    pub message: &'a str,
    /// The generation of the object this condition describes, when its controller says.
    pub observed_generation: Option<i64>,
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
            observed_generation: c.get("observedGeneration").and_then(Value::as_i64),
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
    observe_kind(PackageKind::Providers, objects, wanted, now)
}

/// Items for the packages of `kind` in `wanted` (every installed one when `None`).
pub fn observe_kind(
    kind: PackageKind,
    objects: &[Arc<DynamicObject>],
    wanted: Option<&[String]>,
    now: Timestamp,
) -> Vec<Observation> {
    crate::signals::named_items(
        objects,
        wanted,
        &format!("no Crossplane {} are installed", kind.plural()),
        now,
        |name, p| {
            let Some(p) = p else {
                return Observation::new(name, Status::Fail, "not installed", now);
            };
            let (status, message) = judge(
                p.data.get("status").unwrap_or(&Value::Null),
                p.metadata.generation,
            );
            Observation::new(name, status, message, now).regarding(
                crate::signals::ObjectRef::dynamic("pkg.crossplane.io/v1", kind.kind(), p),
            )
        },
    )
}

fn judge(status: &Value, generation: Option<i64>) -> (Status, String) {
    let revision = status
        .get("currentRevision")
        .and_then(Value::as_str)
        .unwrap_or("");
    let installed = condition(status, "Installed");
    let healthy = condition(status, "Healthy");
    let mut failures = Vec::new();
    let mut missing = Vec::new();
    let mut lagging = Vec::new();
    for (type_, c) in [("Installed", &installed), ("Healthy", &healthy)] {
        match c {
            Some(c) if c.status == "True" => {
                // An absent observedGeneration is not a lag: older Crossplane versions never set it.
                if let (Some(observed), Some(current)) = (c.observed_generation, generation) {
                    if observed < current {
                        lagging.push(format!(
                            "{type_} is \"True\" for generation {observed}, the package is at generation {current}"
                        ));
                    }
                }
            }
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
    if !lagging.is_empty() {
        return (
            Status::Warn,
            format!(
                "{} (Crossplane has not reconciled the change yet; {revision})",
                lagging.join("; ")
            ),
        );
    }
    (Status::Pass, format!("installed and healthy ({revision})"))
}

#[cfg(test)]
mod tests {
    //! The judge on the real object shapes in `sim/fixtures/`, with a hand-set clock.

    use kube::api::DynamicObject;
    use serde_json::json;

    use crate::checks::packages;
    use crate::checks::testing::{at, fixture, object, only};
    use crate::report::Status;

    #[test]
    fn healthy_provider_passes_and_unhealthy_names_condition_reason_and_message() {
        let now = at("2024-08-20T14:00:00Z");
        let healthy = object::<DynamicObject>(fixture("provider-healthy"));
        let o = only(packages::observe(&[healthy], None, now));
        assert_eq!(
            (o.item.as_str(), o.status),
            ("provider-anynines", Status::Pass)
        );

        let unhealthy = object::<DynamicObject>(fixture("provider-unhealthy"));
        let o = only(packages::observe(
            &[unhealthy],
            Some(&["provider-anynines".into()]),
            now,
        ));
        assert_eq!(o.status, Status::Fail);
        assert_eq!(
            o.message,
            "Healthy is \"False\" (UnhealthyPackageRevision): Deployment provider-anynines-3f2a9c1b7e5d does not have minimum availability"
        );
    }

    #[test]
    fn listed_provider_that_is_absent_is_not_installed() {
        let now = at("2024-08-20T14:00:00Z");
        let healthy = object::<DynamicObject>(fixture("provider-healthy"));
        let items = packages::observe(
            &[healthy],
            Some(&["provider-anynines".into(), "provider-kubernetes".into()]),
            now,
        );
        let missing = items
            .iter()
            .find(|o| o.item == "provider-kubernetes")
            .expect("listed item");
        assert_eq!(
            (missing.status, missing.message.as_str()),
            (Status::Fail, "not installed")
        );
    }

    #[test]
    fn provider_without_conditions_or_revision_is_unknown() {
        let now = at("2024-08-20T14:00:00Z");
        let mut p = fixture("provider-healthy");
        p["status"]["currentRevision"] = json!("");
        let o = only(packages::observe(&[object(p)], None, now));
        assert_eq!(o.status, Status::Unknown);
        assert!(o.message.contains("no current revision"), "{}", o.message);

        let mut p = fixture("provider-healthy");
        p["status"]["conditions"] = json!([{"type": "Installed", "status": "True"}]);
        let o = only(packages::observe(&[object(p)], None, now));
        assert_eq!(
            (o.status, o.message.as_str()),
            (Status::Unknown, "condition Healthy not reported yet")
        );
    }

    #[test]
    fn crossplane_2_wording_is_passed_through() {
        let now = at("2024-08-20T14:00:00Z");
        let mut p = fixture("provider-healthy");
        p["status"]["conditions"][1] = json!({
            "type": "Healthy", "status": "False", "reason": "UnhealthyPackageRevision",
            "message": "Package runtime health is \"False\" with message: Deployment has no available replicas"
        });
        let o = only(packages::observe(&[object(p)], None, now));
        assert_eq!(o.status, Status::Fail);
        assert!(
            o.message
                .ends_with("with message: Deployment has no available replicas"),
            "{}",
            o.message
        );
    }

    #[test]
    fn a_package_whose_conditions_lag_its_generation_warns_with_both_numbers() {
        let now = at("2024-08-20T14:00:00Z");
        let mut c = fixture("configuration-healthy");
        let o = only(packages::observe_kind(
            packages::PackageKind::Configurations,
            &[object(c.clone())],
            None,
            now,
        ));
        assert_eq!(
            (o.item.as_str(), o.status),
            ("anynines-dataservices", Status::Pass)
        );
        // An absent observedGeneration is not a lag; a present one that equals the generation is current.
        c["status"]["conditions"][0]["observedGeneration"] = json!(1);
        let o = only(packages::observe_kind(
            packages::PackageKind::Configurations,
            &[object(c.clone())],
            None,
            now,
        ));
        assert_eq!(o.status, Status::Pass, "{}", o.message);
        c["metadata"]["generation"] = json!(2);
        let o = only(packages::observe_kind(
            packages::PackageKind::Configurations,
            &[object(c.clone())],
            None,
            now,
        ));
        assert_eq!(
            (o.status, o.message.as_str()),
            (
                Status::Warn,
                "Installed is \"True\" for generation 1, the package is at generation 2 (Crossplane has not \
                 reconciled the change yet; anynines-dataservices-8d7c6b5a4f3e)"
            )
        );
        // A failure still fails, whatever generation it describes.
        c["status"]["conditions"][1]["status"] = json!("False");
        let o = only(packages::observe_kind(
            packages::PackageKind::Configurations,
            &[object(c)],
            None,
            now,
        ));
        assert_eq!(o.status, Status::Fail);
    }

    #[test]
    fn no_package_of_a_kind_is_one_warning_item() {
        let o = only(packages::observe_kind(
            packages::PackageKind::Functions,
            &[],
            None,
            at("2024-08-20T14:00:00Z"),
        ));
        assert_eq!(
            (o.item.as_str(), o.status, o.message.as_str()),
            (
                "_none",
                Status::Warn,
                "no Crossplane functions are installed"
            )
        );
    }
}
