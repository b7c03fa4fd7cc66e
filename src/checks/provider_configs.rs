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

use super::{keep_status, CheckType, Run, WatchSpec};
use crate::clock::{Due, Moment};
use crate::human;
use crate::signals::{Expiry, Fact, Observation};
use crate::values::duration;
use crate::verdict::report::Status;

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

    fn placeholders(&self) -> Vec<String> {
        self.names.clone().unwrap_or_default()
    }

    fn start(&self, run: &mut Run<'_>) {
        let (names, stale) = (self.names.clone(), self.check_stale_after);
        let mut seen = Sightings::default();
        run.follow(
            WatchSpec::cluster_scoped(resource(self), keep_status),
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
pub struct Sightings(HashMap<String, (Timestamp, Moment)>);

impl Sightings {
    /// When `name` was first seen with `checked`; `now` when that is new.
    fn first(&mut self, name: &str, checked: Timestamp, now: Moment) -> Moment {
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
    now: Moment,
) -> Vec<Observation> {
    observe_seen(objects, names, stale_after, now, &mut Sightings::default())
}

/// [`observe`], remembering future `lastCheckTime`s in `seen` from one observation to the next.
pub fn observe_seen(
    objects: &[Arc<DynamicObject>],
    names: Option<&[String]>,
    stale_after: Duration,
    now: Moment,
    seen: &mut Sightings,
) -> Vec<Observation> {
    // named_items judges through `Fn`: the sightings are borrowed per item.
    let sightings = RefCell::new((seen, Sightings::default()));
    let items = crate::signals::named_items(
        objects,
        names,
        "no ProviderConfigs exist",
        now.wall,
        |name, pc| match pc {
            None => Observation::new(name, Status::Fail, "not found", now.wall),
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
    moment: Moment,
    first_seen: &mut dyn FnMut(Timestamp) -> Moment,
) -> Observation {
    let now = moment.wall;
    let health = health.unwrap_or(&Value::Null);
    let checked = match health.get("lastCheckTime") {
        None | Some(Value::Null) => {
            return Observation::new(
                name,
                Status::Unknown,
                "not checked yet by provider-anynines",
                now,
            )
            .with_fact(Fact::Unchecked)
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
            // From outside, and so on the wall clock.
            at: Due::Wall(checked.checked_add(stale_after).unwrap_or(Timestamp::MAX)),
            status: Status::Unknown,
            message: format!(
                "provider-anynines has not checked it since {checked} (more than {}): its health loop may be stuck",
                human::duration(stale_after)
            ),
            fact: Some(Fact::Unchecked),
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
        // Counted by this process since it first saw the value.
        at: Due::after(first, stale_after),
        status: Status::Unknown,
        message: format!(
            "{skew} It has not changed for more than {}: provider-anynines' health loop may be stuck",
            human::duration(stale_after)
        ),
        fact: Some(Fact::Unchecked),
    })
}

fn non_empty(text: &str, default: &str) -> String {
    if text.is_empty() { default } else { text }.to_string()
}

#[cfg(test)]
mod tests {
    //! The judge on the real object shapes in `sim/fixtures/`, with a hand-set clock.

    use std::sync::Arc;
    use std::time::Duration;

    use kube::api::DynamicObject;
    use serde_json::json;

    use crate::checks::provider_configs;
    use crate::checks::testing::{at, fixture, m, object, only};
    use crate::clock::{Due, Moment};
    use crate::verdict::report::Status;

    fn pc_config() -> provider_configs::ProviderConfig {
        provider_configs::ProviderConfig::default()
    }

    #[test]
    fn provider_config_health_maps_to_status_and_ages_into_unknown() {
        let stale = pc_config().check_stale_after;
        let now = at("2024-08-20T13:11:00Z");
        let healthy = object::<DynamicObject>(fixture("providerconfig-healthy"));
        let o = only(provider_configs::observe(
            &[healthy],
            None,
            stale,
            Moment::from_wall(now),
        ));
        assert_eq!((o.status, o.message.as_str()), (Status::Pass, "Available"));
        // lastCheckTime 13:10 + check_stale_after 10m: unknown from 13:20 on, and the engine is told when.
        assert_eq!(o.at(m("2024-08-20T13:19:59Z")).0, Status::Pass);
        let (status, message) = o.at(m("2024-08-20T13:20:00Z"));
        assert_eq!(status, Status::Unknown);
        assert!(
            message.contains("has not checked it since 2024-08-20T13:10:00Z"),
            "{message}"
        );
        assert_eq!(o.expires[0].at, Due::Wall(at("2024-08-20T13:20:00Z")));

        let failing = object::<DynamicObject>(fixture("providerconfig-failing"));
        let o = only(provider_configs::observe(
            &[failing],
            None,
            stale,
            Moment::from_wall(now),
        ));
        assert_eq!(o.status, Status::Fail);
        assert!(
            o.message.contains("connect: connection refused"),
            "{}",
            o.message
        );
    }

    #[test]
    fn unchecked_provider_config_is_unknown_whatever_last_status_says() {
        let now = at("2024-08-20T13:11:00Z");
        let unchecked = object::<DynamicObject>(fixture("providerconfig-unchecked"));
        let o = only(provider_configs::observe(
            &[unchecked],
            None,
            Duration::from_secs(600),
            Moment::from_wall(now),
        ));
        assert_eq!(
            (o.status, o.message.as_str()),
            (Status::Unknown, "not checked yet by provider-anynines")
        );
        let mut absent = fixture("providerconfig-unchecked");
        absent["status"]["health"]
            .as_object_mut()
            .expect("object")
            .remove("lastCheckTime");
        let o = only(provider_configs::observe(
            &[object(absent)],
            None,
            Duration::from_secs(600),
            Moment::from_wall(now),
        ));
        assert_eq!(o.status, Status::Unknown);
    }

    #[test]
    fn provider_config_names_filter_and_missing_names() {
        let now = at("2024-08-20T13:11:00Z");
        let healthy = object::<DynamicObject>(fixture("providerconfig-healthy"));
        let failing = object::<DynamicObject>(fixture("providerconfig-failing"));
        let names = [
            "postgresql-service-broker".to_string(),
            "mongodb".to_string(),
        ];
        let items = provider_configs::observe(
            &[healthy, failing],
            Some(&names),
            Duration::from_secs(600),
            Moment::from_wall(now),
        );
        let got: Vec<(&str, Status)> = items.iter().map(|o| (o.item.as_str(), o.status)).collect();
        assert_eq!(
            got,
            [
                ("postgresql-service-broker", Status::Pass),
                ("mongodb", Status::Fail)
            ]
        );
    }

    /// The providerconfig-healthy fixture with `lastCheckTime` (and optionally `lastStatus`) set.
    fn pc_checked_at(time: &str, ok: bool) -> Arc<DynamicObject> {
        let mut pc = fixture("providerconfig-healthy");
        pc["status"]["health"]["lastCheckTime"] = json!(time);
        pc["status"]["health"]["lastStatus"] = json!(ok);
        if !ok {
            pc["status"]["health"]["lastMessage"] = json!("dial tcp: connection refused");
        }
        object(pc)
    }

    #[test]
    fn a_last_check_time_in_the_future_is_clock_skew_never_a_fresh_ok() {
        let stale = pc_config().check_stale_after;
        let now = at("2024-08-20T13:11:00Z");
        let skew = "lies in the future: clock skew?";
        for (time, ok, status, says_skew) in [
            ("2024-08-20T13:10:00Z", true, Status::Pass, false),
            // Within 60 s ahead: ordinary skew between nodes.
            ("2024-08-20T13:12:00Z", true, Status::Pass, false),
            ("2024-08-20T13:12:01Z", true, Status::Warn, true),
            ("2099-01-01T00:00:00Z", true, Status::Warn, true),
            // A failure stays a failure, with the skew noted.
            ("2099-01-01T00:00:00Z", false, Status::Fail, true),
        ] {
            let o = only(provider_configs::observe(
                &[pc_checked_at(time, ok)],
                None,
                stale,
                Moment::from_wall(now),
            ));
            assert_eq!(o.status, status, "{time} {ok}: {o:?}");
            assert_eq!(o.message.contains(skew), says_skew, "{time}: {o:?}");
        }
    }

    #[test]
    fn a_future_last_check_time_keeps_the_staleness_bound_from_its_first_sighting() {
        let stale = pc_config().check_stale_after;
        let t0 = at("2024-08-20T13:11:00Z");
        let mut seen = provider_configs::Sightings::default();
        let future = pc_checked_at("2099-01-01T00:00:00Z", true);
        let o = only(provider_configs::observe_seen(
            std::slice::from_ref(&future),
            None,
            stale,
            Moment::from_wall(t0),
            &mut seen,
        ));
        assert_eq!(o.status, Status::Warn);
        let (status, message) = o.at(m("2024-08-20T13:21:00Z"));
        assert_eq!(status, Status::Unknown, "{message}");
        assert!(message.contains("health loop may be stuck"), "{message}");
        // Observed again (any event of the watch): the bound is not renewed.
        let o = only(provider_configs::observe_seen(
            std::slice::from_ref(&future),
            None,
            stale,
            m("2024-08-20T13:16:00Z"),
            &mut seen,
        ));
        assert_eq!(o.at(m("2024-08-20T13:21:00Z")).0, Status::Unknown);
        // A new time written by the provider counts as a new check.
        let o = only(provider_configs::observe_seen(
            &[pc_checked_at("2099-01-01T00:03:00Z", true)],
            None,
            stale,
            m("2024-08-20T13:17:00Z"),
            &mut seen,
        ));
        assert_eq!(o.at(m("2024-08-20T13:26:59Z")).0, Status::Warn);
        assert_eq!(o.at(m("2024-08-20T13:27:00Z")).0, Status::Unknown);
    }
}
