//! The `managed-resources` signal: can Klutch serve its users? Every component can be green while no data
//! service can be provisioned (a broker quota, a provider that cannot reconcile, backups that all fail), and
//! provider-anynines exports no `crossplane_managed_resource_*` metrics. Its managed resources
//! (ServiceInstances, ServiceBindings, Backups, Restores) say so in their `Ready` and `Synced` conditions.
//!
//! One item per kind, never one per object (a platform holds thousands). Each kind is the check's own watch
//! whose events go into a [`tally::KindTally`]: one small record per object and counts kept current event by
//! event, so that memory stays small and judging never walks every object.

pub mod judge;
pub mod object;
pub mod tally;

use std::collections::BTreeMap;
use std::time::Duration;

use globset::{Glob, GlobSet, GlobSetBuilder};
use kube::api::{ApiResource, GroupVersionKind};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{CheckType, Run, WatchSpec};
use crate::values::{duration, KeyError};
use object::Managed;
use tally::{KindRules, KindTally, Supersede};

/// The four kinds provider-anynines manages.
pub const KINDS: [&str; 4] = ["serviceinstances", "servicebindings", "backups", "restores"];

/// The keys of a `managed-resources` check.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ManagedResources {
    pub group: String,
    pub version: String,
    /// The kinds, by plural: one item each. Cluster-scoped.
    pub resources: Vec<String>,
    /// Globs over object names: matching objects are left out (a silence can only match a whole kind).
    pub ignore: Vec<String>,
    #[serde(with = "duration")]
    pub create_timeout: Duration,
    #[serde(with = "duration")]
    pub delete_timeout: Duration,
    /// Per kind, instead of `create_timeout`.
    pub create_timeouts: BTreeMap<String, Timeout>,
    /// Per kind, instead of `delete_timeout`.
    pub delete_timeouts: BTreeMap<String, Timeout>,
    /// A kind's item fails when, within one ProviderConfig, at least this many of its resources fail…
    pub fail_min: u64,
    /// …and more than this share of them.
    pub fail_share: Share,
    /// Objects per kind at most: past it that kind's watch fails (a warning at 80 %).
    pub max_objects: usize,
}

impl Default for ManagedResources {
    fn default() -> Self {
        ManagedResources {
            group: "dataservices.anynines.com".into(),
            version: "v1".into(),
            resources: KINDS.iter().map(|k| k.to_string()).collect(),
            ignore: Vec::new(),
            create_timeout: Duration::from_secs(30 * 60),
            delete_timeout: Duration::from_secs(15 * 60),
            create_timeouts: BTreeMap::new(),
            delete_timeouts: BTreeMap::new(),
            fail_min: 3,
            fail_share: Share::percent(10),
            max_objects: 50_000,
        }
    }
}

/// A duration as a map value (`create_timeouts = { backups = "2h" }`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timeout(#[serde(with = "duration")] pub Duration);

/// A share written as a percentage (`"10%"`, `"12.5%"`), kept exactly: its digits as a whole number and how
/// many of them are decimals. So `29` of `100` is not more than `29%` (no floating-point rounding), and it
/// prints as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Share {
    digits: u64,
    decimals: u32,
}

impl Share {
    /// The most decimals a share may have.
    pub const MAX_DECIMALS: u32 = 6;

    /// A whole percentage.
    pub const fn percent(p: u64) -> Share {
        Share {
            digits: p,
            decimals: 0,
        }
    }

    /// `"12.5%"`: a percentage from 0% to 100% with at most [`Share::MAX_DECIMALS`] decimals.
    pub fn parse(text: &str) -> Option<Share> {
        let number = text.trim().strip_suffix('%')?.trim();
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if whole.is_empty()
            || !all_digits(whole)
            || !all_digits(fraction)
            || (number.contains('.') && fraction.is_empty())
        {
            return None;
        }
        let decimals = u32::try_from(fraction.len())
            .ok()
            .filter(|d| *d <= Share::MAX_DECIMALS)?;
        let scale = 10u64.pow(decimals);
        let whole: u64 = whole.parse().ok().filter(|w| *w <= 100)?;
        let digits = whole * scale
            + if fraction.is_empty() {
                0
            } else {
                fraction.parse::<u64>().ok()?
            };
        (digits <= 100 * scale).then_some(Share { digits, decimals })
    }

    /// Whether `part` of `whole` is more than this share, in integers: `part × 100 × 10^decimals >
    /// digits × whole`.
    pub fn exceeded_by(self, part: u64, whole: u64) -> bool {
        u128::from(part) * 100 * 10u128.pow(self.decimals)
            > u128::from(self.digits) * u128::from(whole)
    }
}

impl std::fmt::Display for Share {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scale = 10u64.pow(self.decimals);
        let (whole, fraction) = (self.digits / scale, self.digits % scale);
        match self.decimals {
            0 => write!(f, "{whole}%"),
            d => write!(f, "{whole}.{fraction:0width$}%", width = d as usize),
        }
    }
}

impl Serialize for Share {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Share {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Share, D::Error> {
        let text = String::deserialize(d).map_err(|_| {
            serde::de::Error::custom("invalid share: expected a percentage like \"10%\"")
        })?;
        Share::parse(&text).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "invalid share \"{text}\": expected a percentage from 0% to 100% with at most {} decimals, like \"10%\" or \"12.5%\"",
                Share::MAX_DECIMALS
            ))
        })
    }
}

impl ManagedResources {
    fn resource(&self, plural: &str) -> ApiResource {
        ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk(&self.group, &self.version, kind_of(plural)),
            plural,
        )
    }

    fn ignored(&self) -> GlobSet {
        let mut set = GlobSetBuilder::new();
        for pattern in &self.ignore {
            if let Ok(glob) = Glob::new(pattern) {
                set.add(glob);
            }
        }
        set.build().unwrap_or_else(|_| GlobSet::empty())
    }

    /// How `kind` is judged.
    pub fn rules(&self, kind: &str) -> KindRules {
        KindRules {
            kind: kind.to_string(),
            gvk: format!("{}/{}, Kind={}", self.group, self.version, kind_of(kind)).into(),
            create_timeout: self
                .create_timeouts
                .get(kind)
                .map_or(self.create_timeout, |t| t.0),
            delete_timeout: self
                .delete_timeouts
                .get(kind)
                .map_or(self.delete_timeout, |t| t.0),
            ignore: self.ignored(),
            fail_min: self.fail_min,
            fail_share: self.fail_share,
            max_objects: self.max_objects,
            supersede: match kind {
                "backups" => Some(Supersede::ByInstance),
                "restores" => Some(Supersede::ByBackup),
                _ => None,
            },
        }
    }
}

/// The kind of a plural, as the API names it (only for the four kinds: requests name the plural).
fn kind_of(plural: &str) -> &str {
    match plural {
        "serviceinstances" => "ServiceInstance",
        "servicebindings" => "ServiceBinding",
        "backups" => "Backup",
        "restores" => "Restore",
        other => other,
    }
}

/// A resource's plural: a DNS-1123 label (lowercase letters, digits, `-`).
fn is_plural(s: &str) -> bool {
    let ok = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    !s.is_empty()
        && s.len() <= 63
        && s.starts_with(ok)
        && s.ends_with(ok)
        && s.chars().all(|c| ok(c) || c == '-')
}

impl CheckType for ManagedResources {
    const NAME: &'static str = "managed-resources";

    fn validate(&self, _cluster: Option<&str>) -> Result<(), KeyError> {
        if self.resources.is_empty() {
            return Err(KeyError::new(
                "resources",
                "must name at least one kind (default: serviceinstances, servicebindings, backups, restores)",
            ));
        }
        for (i, r) in self.resources.iter().enumerate() {
            if !is_plural(r) {
                return Err(KeyError::new(
                    format!("resources[{i}]"),
                    format!("\"{r}\" is no resource plural (lowercase letters, digits and \"-\", like \"serviceinstances\")"),
                ));
            }
            if self.resources[..i].contains(r) {
                return Err(KeyError::new(
                    format!("resources[{i}]"),
                    format!("\"{r}\" is listed twice"),
                ));
            }
        }
        for (key, map) in [
            ("create_timeouts", &self.create_timeouts),
            ("delete_timeouts", &self.delete_timeouts),
        ] {
            if let Some(kind) = map.keys().find(|k| !self.resources.contains(k)) {
                return Err(KeyError::new(
                    format!("{key}.{kind}"),
                    format!("is not one of resources ({})", self.resources.join(", ")),
                ));
            }
        }
        let timeouts = [
            ("create_timeout".to_string(), self.create_timeout),
            ("delete_timeout".to_string(), self.delete_timeout),
        ]
        .into_iter()
        .chain(
            self.create_timeouts
                .iter()
                .map(|(k, t)| (format!("create_timeouts.{k}"), t.0)),
        )
        .chain(
            self.delete_timeouts
                .iter()
                .map(|(k, t)| (format!("delete_timeouts.{k}"), t.0)),
        );
        for (key, t) in timeouts {
            if t.is_zero() {
                return Err(KeyError::new(key, "must be more than 0s"));
            }
        }
        for (i, pattern) in self.ignore.iter().enumerate() {
            if let Err(e) = Glob::new(pattern) {
                return Err(KeyError::new(
                    format!("ignore[{i}]"),
                    format!("invalid pattern \"{pattern}\": {e}"),
                ));
            }
        }
        if self.fail_min == 0 {
            return Err(KeyError::new(
                "fail_min",
                "must be at least 1 (a kind with no failing resource passes)",
            ));
        }
        if self.max_objects == 0 {
            return Err(KeyError::new("max_objects", "must be at least 1"));
        }
        Ok(())
    }

    fn placeholders(&self) -> Vec<String> {
        self.resources.clone()
    }

    fn start(&self, run: &mut Run<'_>) {
        for kind in &self.resources {
            run.tally_part(
                kind,
                WatchSpec::<Managed>::cluster_scoped(self.resource(kind), |_| {}),
                self.max_objects,
                KindTally::new(self.rules(kind)),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::checks::testing::{fake_api, fixture, started};
    use crate::checks::{Settings, WatchTarget};
    use crate::verdict::report::Status;

    #[test]
    fn its_four_watches_are_four_cluster_scoped_rbac_rows() {
        let rows = Settings::targets(&ManagedResources::default());
        let row = |resource: &str| WatchTarget {
            group: "dataservices.anynines.com".into(),
            version: "v1".into(),
            resource: resource.into(),
            namespace: None,
            namespaced: false,
        };
        assert_eq!(
            rows,
            [
                row("backups"),
                row("restores"),
                row("servicebindings"),
                row("serviceinstances")
            ]
        );
    }

    #[test]
    fn bad_settings_name_the_key() {
        let read = |table: serde_json::Value| {
            let table = figment::value::Value::serialize(table).expect("a table");
            crate::checks::Registration::find("managed-resources")
                .expect("registered")
                .read(&table)
                .and_then(|s| s.validate(None).map(|()| s))
        };
        let cases = [
            (serde_json::json!({"resources": []}), "resources"),
            (
                serde_json::json!({"resources": ["ServiceInstances"]}),
                "resources[0]",
            ),
            (
                serde_json::json!({"resources": ["backups", "backups"]}),
                "resources[1]",
            ),
            (
                serde_json::json!({"create_timeouts": {"widgets": "1h"}}),
                "create_timeouts.widgets",
            ),
            (
                serde_json::json!({"delete_timeouts": {"backups": "0s"}}),
                "delete_timeouts.backups",
            ),
            (
                serde_json::json!({"create_timeout": "0s"}),
                "create_timeout",
            ),
            (
                serde_json::json!({"create_timeout": "soon"}),
                "create_timeout",
            ),
            (serde_json::json!({"ignore": ["a[b"]}), "ignore[0]"),
            (serde_json::json!({"fail_min": 0}), "fail_min"),
            (serde_json::json!({"fail_share": "150%"}), "fail_share"),
            (serde_json::json!({"fail_share": "0.1"}), "fail_share"),
            (serde_json::json!({"max_objects": 0}), "max_objects"),
            (serde_json::json!({"kinds": []}), "kinds"),
        ];
        for (table, key) in cases {
            let e = read(table.clone()).expect_err(&format!("{table} is refused"));
            assert_eq!(e.path, key, "{table}: {e}");
        }
        let ok =
            read(serde_json::json!({"fail_share": "25%", "create_timeouts": {"backups": "2h"}}))
                .expect("valid");
        let settings = ok.downcast::<ManagedResources>().expect("its type");
        assert_eq!(settings.fail_share, Share::percent(25));
        assert_eq!(
            settings.rules("backups").create_timeout,
            Duration::from_secs(7200)
        );
        assert_eq!(ok.to_json()["fail_share"], "25%");
    }

    /// `fail_share` is exact: `29` of `100` at `29%` is not more than 29 %, whatever floating point would
    /// make of 0.29 × 100; and it is said as written.
    #[test]
    fn a_share_is_compared_in_integers_and_said_as_written() {
        let cases = [
            ("29%", 29, 100, false),
            ("29%", 30, 100, true),
            ("57%", 57, 100, false),
            ("10%", 3, 30, false),
            ("10%", 4, 30, true),
            ("12.5%", 1, 8, false),
            ("12.5%", 125, 1000, false),
            ("12.5%", 126, 1000, true),
            ("0.001%", 1, 100_000, false),
            ("0.001%", 2, 100_000, true),
            ("0%", 0, 10, false),
            ("0%", 1, 10, true),
            ("100%", 10, 10, false),
            ("100%", u64::MAX, u64::MAX, false),
            ("99.999999%", u64::MAX, u64::MAX, true),
        ];
        for (text, part, whole, more) in cases {
            let share = Share::parse(text).expect(text);
            assert_eq!(
                share.exceeded_by(part, whole),
                more,
                "{part} of {whole} at {text}"
            );
        }
        for (text, said) in [
            ("29%", "29%"),
            ("12.5%", "12.5%"),
            ("12.50%", "12.50%"),
            (" 7 %", "7%"),
            ("0.001%", "0.001%"),
            ("100%", "100%"),
        ] {
            assert_eq!(Share::parse(text).expect(text).to_string(), said);
        }
        for refused in [
            "150%",
            "100.1%",
            "0.1",
            "-5%",
            "1e1%",
            "12.%",
            ".5%",
            "12.1234567%",
            "abc%",
            "%",
            "",
        ] {
            assert_eq!(Share::parse(refused), None, "{refused:?}");
        }
    }

    fn list(kind: &str, items: Vec<serde_json::Value>) -> String {
        serde_json::json!({"kind": format!("{kind}List"), "apiVersion": "dataservices.anynines.com/v1",
                           "metadata": {"resourceVersion": "7"}, "items": items})
        .to_string()
    }

    /// Each kind's watch state lands on its own item: a kind whose CRD is missing waits with the API's
    /// words, one past `max_objects` fails its watch with a clear message (before memory runs out), one whose
    /// WATCH is refused warns on its own item, and the others are judged — no shared `CHECK/_watch`.
    #[tokio::test(start_paused = true)]
    async fn each_kind_shows_its_own_watch_state_and_max_objects_trips_with_a_clear_message() {
        let restore = |i: usize| {
            serde_json::json!({"metadata": {"name": format!("r-{i}"), "resourceVersion": "7"},
                               "spec": {"forProvider": {"backupName": format!("b-{i}")}}})
        };
        let client = fake_api(move |path, watching| {
            let kind = path.rsplit('/').next().unwrap_or_default();
            if watching && kind == "servicebindings" {
                return Some((
                    403,
                    r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"servicebindings.dataservices.anynines.com is forbidden","reason":"Forbidden","code":403}"#.into(),
                ));
            }
            if watching {
                return None;
            }
            Some(match kind {
                "serviceinstances" => (
                    200,
                    list(
                        "ServiceInstance",
                        vec![
                            fixture("serviceinstance-ready"),
                            fixture("serviceinstance-failing"),
                        ],
                    ),
                ),
                "servicebindings" => (200, list("ServiceBinding", vec![])),
                "restores" => (200, list("Restore", (0..6).map(restore).collect())),
                _ => (404, "404 page not found".to_string()),
            })
        });
        let settings = ManagedResources {
            max_objects: 5,
            ..ManagedResources::default()
        };
        let (sink, _, tasks) = started(&settings, "mr", client);
        tokio::time::sleep(Duration::from_secs(5)).await;
        let snapshot = sink.snapshot();
        let items = &snapshot.checks["mr"];
        let said: Vec<(&str, Status, &str)> = items
            .iter()
            .map(|o| (o.item.as_str(), o.status, o.message.as_str()))
            .collect();
        assert_eq!(
            said,
            [
                ("backups", Status::Unknown, "waiting for initial sync of backups.dataservices.anynines.com on cluster default: the API server no longer serves backups.dataservices.anynines.com: is provider-anynines installed?"),
                ("restores", Status::Unknown, "waiting for initial sync of restores.dataservices.anynines.com on cluster default: more than 5 objects in restores.dataservices.anynines.com on cluster default (max_objects of check \"mr\"; raise it if the cluster really holds that many)"),
                ("servicebindings", Status::Warn, "no servicebindings; watch on servicebindings.dataservices.anynines.com forbidden: grant the verb \"watch\" on \"servicebindings\" in API group \"dataservices.anynines.com\" cluster-wide (a ClusterRole) to klutch-health's service account on cluster default (the API server said: servicebindings.dataservices.anynines.com is forbidden); until then the objects are relisted with backoff (at most every 60s)"),
                ("serviceinstances", Status::Warn, "1 of 2 ready, 1 failing: pg-dev-2 (Synced=False, ReconcileError: observe failed: cannot get instance: broker answered 500: internal server error)"),
            ]
        );
        assert_eq!(
            snapshot.unsynced.iter().collect::<Vec<_>>(),
            ["mr/backups", "mr/restores"],
            "two kinds still wait, each for itself"
        );
        let instances = &items[3];
        assert!(instances.counts.is_some() && instances.detail.is_some());
        let bindings = &items[2];
        assert_eq!(
            bindings.detail.as_deref(),
            Some(bindings.message.as_str()),
            "JSON and the page say what the text says"
        );
        tasks.stop();
    }
}
