//! The `crossplane-package` signal: Crossplane packages (`pkg.crossplane.io/v1` Providers, Configurations or
//! Functions, one kind per check) must be `Installed` and `Healthy` for their current generation. Crossplane
//! 1.17–1.20 copy the package revision's health, which follows the provider Deployment's `Available`;
//! Crossplane 2 words it `Package runtime health is "False" with message: …`: messages are shown as given,
//! except that Crossplane 2's own `RevisionHealthy` and `RuntimeHealthy`, which `Healthy` combines, are named
//! when they are what is false. A Crossplane 2 provider scaled to zero until one of its
//! ManagedResourceDefinitions is active (`RuntimeActive=False`, `AwaitingActivation`) is healthy and runs no
//! pod: it passes, saying so. `crossplane-provider` is the older name, with its `providers` key.

use std::sync::Arc;

use jiff::Timestamp;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use serde_json::Value;

use serde::{Deserialize, Serialize};

use super::{keep_status, CheckType, Run, WatchSpec};
use crate::signals::{Fact, Observation};
use crate::verdict::report::Status;

/// What a package scaled to zero passes with, and what a `pods` check of it says then.
pub const SCALED_TO_ZERO: &str = "scaled to zero until a ManagedResourceDefinition is active";

/// The conditions Crossplane 2 combines into `Healthy`, in the order it reports them.
const HEALTH_PARTS: [&str; 2] = ["RevisionHealthy", "RuntimeHealthy"];

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
            let judged = judge(
                p.data.get("status").unwrap_or(&Value::Null),
                p.metadata.generation,
            );
            let mut o = Observation::new(name, judged.status, judged.message, now).regarding(
                crate::signals::ObjectRef::dynamic("pkg.crossplane.io/v1", kind.kind(), p),
            );
            if judged.scaled_to_zero {
                o = o.notable().with_fact(Fact::ScaledToZero);
            }
            o
        },
    )
}

/// One package as judged.
struct Judged {
    status: Status,
    message: String,
    /// Healthy, and scaled to zero on purpose: no pod of it runs.
    scaled_to_zero: bool,
}

impl From<(Status, String)> for Judged {
    fn from((status, message): (Status, String)) -> Judged {
        Judged {
            status,
            message,
            scaled_to_zero: false,
        }
    }
}

fn judge(status: &Value, generation: Option<i64>) -> Judged {
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
            Some(c) if type_ == "Healthy" => failures.extend(unhealthy(status, c)),
            Some(c) => failures.push(describe(type_, c)),
            None => missing.push(type_),
        }
    }
    if !failures.is_empty() {
        return (Status::Fail, failures.join("; ")).into();
    }
    if !missing.is_empty() {
        return (
            Status::Unknown,
            format!("condition {} not reported yet", missing.join(" and ")),
        )
            .into();
    }
    if revision.is_empty() {
        return (
            Status::Unknown,
            "no current revision yet (the package is still being installed)".to_string(),
        )
            .into();
    }
    if !lagging.is_empty() {
        return (
            Status::Warn,
            format!(
                "{} (Crossplane has not reconciled the change yet; {revision})",
                lagging.join("; ")
            ),
        )
            .into();
    }
    let active = condition(status, "RuntimeActive");
    if active.is_some_and(|c| c.status == "False" && c.reason == "AwaitingActivation") {
        return Judged {
            status: Status::Pass,
            message: SCALED_TO_ZERO.to_string(),
            scaled_to_zero: true,
        };
    }
    (Status::Pass, format!("installed and healthy ({revision})")).into()
}

/// Why `Healthy` is not `"True"`: Crossplane 2's `RevisionHealthy` and `RuntimeHealthy` that are not, each
/// with its own reason and message (`Healthy`'s message only repeats the first of them), else `Healthy`
/// itself (Crossplane 1.x has neither).
fn unhealthy(status: &Value, healthy: &Condition<'_>) -> Vec<String> {
    let parts: Vec<String> = HEALTH_PARTS
        .iter()
        .filter_map(|type_| {
            condition(status, type_)
                .filter(|c| c.status != "True")
                .map(|c| describe(type_, &c))
        })
        .collect();
    if parts.is_empty() {
        vec![describe("Healthy", healthy)]
    } else {
        parts
    }
}

#[cfg(test)]
mod tests {
    //! The judge on the real object shapes in `sim/fixtures/`, with a hand-set clock.

    use kube::api::DynamicObject;
    use serde_json::json;

    use crate::checks::packages;
    use crate::checks::testing::{at, fixture, object, only};
    use crate::signals::Fact;
    use crate::verdict::report::Status;

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

    /// Crossplane 2 scales an idle provider to zero: healthy, no pod, and it says so (notable, so JSON and
    /// the page show it), with the fact a `pods` check of it reads.
    #[test]
    fn a_crossplane_2_provider_scaled_to_zero_passes_saying_so() {
        let now = at("2026-11-30T11:00:00Z");
        let awaiting = fixture("provider-v2-awaiting-activation");
        let o = only(packages::observe(&[object(awaiting.clone())], None, now));
        assert_eq!(
            (o.item.as_str(), o.status, o.message.as_str()),
            (
                "provider-kubernetes",
                Status::Pass,
                "scaled to zero until a ManagedResourceDefinition is active"
            )
        );
        assert!(o.detail.is_some());
        assert_eq!(o.fact, Some(Fact::ScaledToZero));
        // Active again (or a Crossplane 1.x provider): the plain pass, with no fact.
        let mut active = awaiting.clone();
        active["status"]["conditions"][4] =
            json!({"type": "RuntimeActive", "status": "True", "reason": "ActiveRuntime"});
        let o = only(packages::observe(&[object(active)], None, now));
        assert_eq!(
            (o.status, o.message.as_str(), o.detail.is_some(), o.fact),
            (
                Status::Pass,
                "installed and healthy (provider-kubernetes-4b0c2a9d1e3f)",
                false,
                None
            )
        );
        // Scaled to zero but not healthy: it fails like any other.
        let mut unhealthy = awaiting;
        unhealthy["status"]["conditions"][1]["status"] = json!("False");
        let o = only(packages::observe(&[object(unhealthy)], None, now));
        assert_eq!((o.status, o.fact), (Status::Fail, None));
    }

    /// Crossplane 2 combines `RevisionHealthy` and `RuntimeHealthy` into `Healthy`: the one that is false is
    /// named with its own reason and message; Crossplane 1.x (neither present) keeps `Healthy`'s words.
    #[test]
    fn the_crossplane_2_health_part_that_is_false_is_named() {
        let now = at("2026-11-30T11:00:00Z");
        let table: &[(&str, &str, &str)] = &[
            (
                "True",
                "False",
                "RuntimeHealthy is \"False\" (UnhealthyPackageRevision): Deployment has no available replicas",
            ),
            (
                "False",
                "True",
                "RevisionHealthy is \"False\" (UnhealthyPackageRevision): cannot establish control of CRD",
            ),
            (
                "False",
                "False",
                "RevisionHealthy is \"False\" (UnhealthyPackageRevision): cannot establish control of CRD; \
                 RuntimeHealthy is \"False\" (UnhealthyPackageRevision): Deployment has no available replicas",
            ),
            // Both parts true while Healthy is not (between two reconciles): Healthy's own words.
            (
                "True",
                "True",
                "Healthy is \"False\" (UnhealthyPackageRevision): Package runtime health is \"False\" with message: \
                 Deployment has no available replicas",
            ),
        ];
        for (revision, runtime, want) in table {
            let mut p = fixture("provider-v2-awaiting-activation");
            p["status"]["conditions"] = json!([
                {"type": "Installed", "status": "True", "reason": "ActivePackageRevision"},
                {"type": "Healthy", "status": "False", "reason": "UnhealthyPackageRevision",
                 "message": "Package runtime health is \"False\" with message: Deployment has no available replicas"},
                {"type": "RevisionHealthy", "status": revision, "reason": if *revision == "True" { "HealthyPackageRevision" } else { "UnhealthyPackageRevision" },
                 "message": if *revision == "True" { "" } else { "cannot establish control of CRD" }},
                {"type": "RuntimeHealthy", "status": runtime, "reason": if *runtime == "True" { "HealthyPackageRevision" } else { "UnhealthyPackageRevision" },
                 "message": if *runtime == "True" { "" } else { "Deployment has no available replicas" }},
            ]);
            let o = only(packages::observe(&[object(p)], None, now));
            assert_eq!((o.status, o.message.as_str()), (Status::Fail, *want));
        }
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
