//! How one check's items relate to another's, in one place: which check types may name the Crossplane
//! package whose runtime they watch, whose failing items take a ProviderConfig's message, which items are
//! ProviderConfigs, and which check types the root-cause rules name. The configuration validates `package`
//! against it, the policy rewrites verdicts through it, and `causes` explains items through it.

use std::sync::Arc;

use crate::checks::backend_status::BackendStatus;
use crate::checks::broker::Broker;
use crate::checks::managed_resources::ManagedResources;
use crate::checks::packages::SCALED_TO_ZERO;
use crate::checks::pods::Pods;
use crate::checks::provider_configs::ProviderConfig;
use crate::checks::CheckType;
use crate::clock::Moment;
use crate::signals::{Fact, Observation, Snapshot};
use crate::verdict::report::{ItemName, Status};

/// The check types that links name, by their `type = "…"`.
pub const BACKEND_STATUS: &str = BackendStatus::NAME;
pub const BROKER: &str = Broker::NAME;
pub const MANAGED_RESOURCES: &str = ManagedResources::NAME;
pub const PODS: &str = Pods::NAME;
pub const PROVIDER_CONFIG: &str = ProviderConfig::NAME;

/// The check types whose `[[check]]` may name the Crossplane package whose runtime they watch (`package =
/// "providers/provider-anynines"`, a `crossplane-package` item), which links their items to that one (for
/// `managed-resources`: the provider whose ProviderConfigs serve its kinds, so the root-cause rules link a
/// kind only to those).
pub const TAKE_PACKAGE: &[&str] = &[PODS, BACKEND_STATUS, PROVIDER_CONFIG, MANAGED_RESOURCES];

/// Whether a check of `check_type` may name its package ([`TAKE_PACKAGE`]).
pub fn takes_package(check_type: &str) -> bool {
    TAKE_PACKAGE.contains(&check_type)
}

/// [`TAKE_PACKAGE`] in words: `pods, backend-status, provider-config and managed-resources`.
pub fn taking_package() -> String {
    match TAKE_PACKAGE.split_last() {
        Some((last, [])) => last.to_string(),
        Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
        None => String::new(),
    }
}

/// Whether the failing items of `check_type` take the message of the same-named failing item of a
/// ProviderConfig check (a backend entry says only that its ProviderConfig fails; the ProviderConfig says why).
pub fn annotated_by_provider_configs(check_type: &str) -> bool {
    check_type == BACKEND_STATUS
}

/// Whether the items of `check_type` are ProviderConfigs: what [`annotated_by_provider_configs`] reads.
pub fn provider_configs(check_type: &str) -> bool {
    check_type == PROVIDER_CONFIG
}

/// The message of a failing ProviderConfig named `item`, from the first of `checks` (ProviderConfig checks)
/// that has one.
pub(crate) fn provider_config_message(
    checks: &[Arc<str>],
    snapshot: &Snapshot,
    item: &str,
    now: Moment,
) -> Option<String> {
    checks.iter().find_map(|check| {
        let obs = snapshot
            .checks
            .get(&**check)?
            .iter()
            .find(|o| o.item == item)?;
        match obs.at(now) {
            (Status::Fail, m) if !m.is_empty() => Some(m.to_string()),
            _ => None,
        }
    })
}

/// A failing item that finds no pod of a check whose `package` is scaled to zero passes, for none should
/// run: its message then. `None`: the item stays as observed.
pub(crate) fn none_should_run(
    snapshot: &Snapshot,
    package: Option<&ItemName>,
    obs: &Observation,
    status: Status,
    now: Moment,
) -> Option<String> {
    let package = package?;
    (status == Status::Fail
        && obs.fact == Some(Fact::NoPod)
        && scaled_to_zero(snapshot, package, now))
    .then(|| format!("no pod, as none should run: {package} is {SCALED_TO_ZERO}"))
}

/// Whether `package` is, as of `now`, a passing package that Crossplane scaled to zero.
fn scaled_to_zero(snapshot: &Snapshot, package: &ItemName, now: Moment) -> bool {
    snapshot
        .checks
        .get(package.check())
        .and_then(|items| items.iter().find(|o| o.item == package.item()))
        .is_some_and(|o| o.fact == Some(Fact::ScaledToZero) && o.at(now).0 == Status::Pass)
}
