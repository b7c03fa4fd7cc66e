//! The `provider-config` signal: provider-anynines' ProviderConfigs, whose `status.health` the provider
//! re-checks every 3 minutes (30 s while failing). An unchecked config reads `lastStatus: false` with a null
//! `lastCheckTime`, so the time decides first; a time older than `check_stale_after` means the provider's
//! health loop is stuck, which no other view shows.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use serde_json::Value;

use serde::{Deserialize, Serialize};

use super::{keep_status, CheckType, Link, Run, WatchSpec};
use crate::human;
use crate::report::Status;
use crate::signals::{Expiry, Observation};
use crate::values::duration;

/// The keys of a `provider-config` check.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProviderConfig {
    pub group: String,
    pub version: String,
    pub plural: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub names: Option<Vec<String>>,
    #[serde(with = "duration")]
    pub check_stale_after: Duration,
}

impl Default for ProviderConfig {
    fn default() -> Self {
        ProviderConfig {
            group: "dataservices.anynines.com".into(),
            version: "v1".into(),
            plural: "providerconfigs".into(),
            names: None,
            check_stale_after: Duration::from_secs(600),
        }
    }
}

impl CheckType for ProviderConfig {
    const NAME: &'static str = "provider-config";
    const LINK: Link = Link::ProviderConfigs;

    fn placeholders(&self) -> Vec<String> {
        self.names.clone().unwrap_or_default()
    }

    fn start(&self, run: &mut Run<'_>) {
        let (names, stale) = (self.names.clone(), self.check_stale_after);
        let mut seen = Sightings::default();
        run.follow(
            WatchSpec::all(resource(self), keep_status),
            move |objects, _, now| observe_seen(objects, names.as_deref(), stale, now, &mut seen),
        );
    }
}

pub(crate) fn resource(c: &ProviderConfig) -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(&c.group, &c.version, "ProviderConfig"),
        &c.plural,
    )
}

/// How far ahead of this clock a `lastCheckTime` may be before it counts as clock skew.
pub const FUTURE_TOLERANCE: Duration = Duration::from_secs(60);

/// When each future `lastCheckTime` was first seen. A time in the future cannot date the check, so the
/// staleness bound counts from its first sighting instead, and re-observing (any event of the watch) must
/// not renew it.
#[derive(Debug, Default, Clone)]
pub struct Sightings(HashMap<String, (Timestamp, Timestamp)>);

impl Sightings {
    /// When `name` was first seen with `checked`; `now` when that is new.
    fn first(&mut self, name: &str, checked: Timestamp, now: Timestamp) -> Timestamp {
        match self.0.get(name) {
            Some(&(t, first)) if t == checked => first,
            _ => {
                self.0.insert(name.to_string(), (checked, now));
                now
            }
        }
    }
}

/// Items for every ProviderConfig, or for the configured `names`.
pub fn observe(
    objects: &[Arc<DynamicObject>],
    names: Option<&[String]>,
    stale_after: Duration,
    now: Timestamp,
) -> Vec<Observation> {
    observe_seen(objects, names, stale_after, now, &mut Sightings::default())
}

/// [`observe`], remembering future `lastCheckTime`s in `seen` from one observation to the next.
pub fn observe_seen(
    objects: &[Arc<DynamicObject>],
    names: Option<&[String]>,
    stale_after: Duration,
    now: Timestamp,
    seen: &mut Sightings,
) -> Vec<Observation> {
    // named_items judges through `Fn`: the sightings are borrowed per item.
    let sightings = RefCell::new((seen, Sightings::default()));
    let items = crate::signals::named_items(
        objects,
        names,
        "no ProviderConfigs exist",
        now,
        |name, pc| match pc {
            None => Observation::new(name, Status::Fail, "not found", now),
            Some(pc) => {
                let health = pc.data.pointer("/status/health");
                let mut first = |checked| {
                    let (seen, kept) = &mut *sightings.borrow_mut();
                    let at = seen.first(&name, checked, now);
                    kept.0.insert(name.clone(), (checked, at));
                    at
                };
                judge(name.clone(), health, stale_after, now, &mut first).regarding(
                    crate::signals::ObjectRef::dynamic(
                        "dataservices.anynines.com/v1",
                        "ProviderConfig",
                        pc,
                    ),
                )
            }
        },
    );
    // Only what is still in the future stays remembered.
    let (seen, kept) = sightings.into_inner();
    *seen = kept;
    items
}

/// `first_seen` answers when a future `lastCheckTime` was first seen.
fn judge(
    name: String,
    health: Option<&Value>,
    stale_after: Duration,
    now: Timestamp,
    first_seen: &mut dyn FnMut(Timestamp) -> Timestamp,
) -> Observation {
    let health = health.unwrap_or(&Value::Null);
    let checked = match health.get("lastCheckTime") {
        None | Some(Value::Null) => {
            return Observation::new(
                name,
                Status::Unknown,
                "not checked yet by provider-anynines",
                now,
            )
        }
        Some(Value::String(t)) => match t.parse::<Timestamp>() {
            Ok(t) => t,
            Err(_) => {
                return Observation::new(
                    name,
                    Status::Unknown,
                    format!("lastCheckTime {t:?} is not a time"),
                    now,
                )
            }
        },
        Some(other) => {
            return Observation::new(
                name,
                Status::Unknown,
                format!("lastCheckTime {other} is not a time"),
                now,
            )
        }
    };
    let message = health
        .get("lastMessage")
        .and_then(Value::as_str)
        .unwrap_or("");
    let observation = match health.get("lastStatus").and_then(Value::as_bool) {
        Some(true) => Observation::new(name, Status::Pass, non_empty(message, "Available"), now),
        Some(false) => Observation::new(
            name,
            Status::Fail,
            non_empty(message, "health check failed"),
            now,
        ),
        None => Observation::new(
            name,
            Status::Unknown,
            "status.health.lastStatus is missing",
            now,
        ),
    };
    let ahead = now.checked_add(FUTURE_TOLERANCE).unwrap_or(Timestamp::MAX);
    if checked <= ahead {
        return observation.expiring(Expiry {
            at: checked.checked_add(stale_after).unwrap_or(Timestamp::MAX),
            status: Status::Unknown,
            message: format!(
                "provider-anynines has not checked it since {checked} (more than {}): its health loop may be stuck",
                human::duration(stale_after)
            ),
        });
    }
    // Never a fresh ok from a time that has not happened yet; the staleness bound counts from when it was
    // first seen.
    let first = first_seen(checked);
    let skew = format!("lastCheckTime {checked} lies in the future: clock skew?");
    let (status, message) = match observation.status {
        Status::Pass => (Status::Warn, format!("{skew} ({})", observation.message)),
        other => (other, format!("{} ({skew})", observation.message)),
    };
    Observation::new(observation.item, status, message, now).expiring(Expiry {
        at: first.checked_add(stale_after).unwrap_or(Timestamp::MAX),
        status: Status::Unknown,
        message: format!(
            "{skew} It has not changed for more than {}: provider-anynines' health loop may be stuck",
            human::duration(stale_after)
        ),
    })
}

fn non_empty(text: &str, default: &str) -> String {
    if text.is_empty() { default } else { text }.to_string()
}
