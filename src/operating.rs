//! What operators declare while they run the service: `[[silence]]` (a known failure that must not fail an
//! endpoint until a set time) and `[maintenance]` (a planned window that drains load balancers through
//! `/readyz`). Both end by themselves: the policy asks the engine to evaluate again at their `until`.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::config::{PatternError, Patterns};
use crate::values::text;

/// `[[silence]]`: an item matching `match` that an endpoint would count as failing counts as `warn` instead,
/// until `until`. Every key is required: a silence without an end or a reason is how outages hide.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Silence {
    #[serde(rename = "match")]
    pub pattern: Pattern,
    pub until: Timestamp,
    #[serde(deserialize_with = "text::deserialize")]
    pub reason: String,
}

/// One glob over `CHECK/ITEM` (or `CHECK`), as `include` reads them.
#[derive(Debug, Clone)]
pub struct Pattern {
    source: String,
    compiled: Patterns,
}

impl Pattern {
    pub fn as_str(&self) -> &str {
        &self.source
    }

    fn matches(&self, check: &str, item: &str) -> bool {
        self.compiled.matches(check, item)
    }
}

impl Serialize for Pattern {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.source.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Pattern {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Pattern, D::Error> {
        let source = String::deserialize(d)?;
        let compiled = Patterns::compiled(vec![source.clone()]).map_err(serde::de::Error::custom)?;
        Ok(Pattern { source, compiled })
    }
}

/// `[maintenance]`: from `from` (default: as soon as it is loaded) until `until`, `/readyz` fails with the
/// reason, so that load balancers drain; `/healthz` and `/livez` are unaffected.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Maintenance {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<Timestamp>,
    pub until: Timestamp,
    #[serde(deserialize_with = "text::deserialize")]
    pub reason: String,
}

impl Maintenance {
    pub(crate) fn active(&self, now: Timestamp) -> bool {
        self.from.is_none_or(|f| f <= now) && now < self.until
    }
}

/// Every silence and the maintenance window, as the policy applies them and the page lists them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Operating {
    pub silences: Vec<SilenceState>,
    pub maintenance: Option<MaintenanceState>,
}

/// A silence as of one evaluation.
#[derive(Debug, Clone, PartialEq)]
pub struct SilenceState {
    pub pattern: String,
    pub until: Timestamp,
    pub reason: String,
    /// `until` has passed: it silences nothing any more.
    pub expired: bool,
}

/// The maintenance window as of one evaluation.
#[derive(Debug, Clone, PartialEq)]
pub struct MaintenanceState {
    pub from: Option<Timestamp>,
    pub until: Timestamp,
    pub reason: String,
    pub active: bool,
}

/// The declarations, compiled for repeated evaluation.
#[derive(Debug, Clone, Default)]
pub(crate) struct Declared {
    silences: Vec<Silence>,
    maintenance: Option<Maintenance>,
}

impl Declared {
    pub(crate) fn new(silences: &[Silence], maintenance: Option<&Maintenance>) -> Declared {
        Declared {
            silences: silences.to_vec(),
            maintenance: maintenance.cloned(),
        }
    }

    /// The first silence in force at `now` for `CHECK/ITEM`.
    pub(crate) fn silence(&self, check: &str, item: &str, now: Timestamp) -> Option<&Silence> {
        self.silences
            .iter()
            .find(|s| now < s.until && s.pattern.matches(check, item))
    }

    /// The maintenance window, when it is in force at `now`.
    pub(crate) fn maintenance(&self, now: Timestamp) -> Option<&Maintenance> {
        self.maintenance.as_ref().filter(|m| m.active(now))
    }

    /// Every time at which a declaration starts or ends by itself.
    pub(crate) fn changes(&self) -> impl Iterator<Item = Timestamp> + '_ {
        let silences = self.silences.iter().map(|s| s.until);
        let window = self
            .maintenance
            .iter()
            .flat_map(|m| m.from.into_iter().chain([m.until]));
        silences.chain(window)
    }

    pub(crate) fn state(&self, now: Timestamp) -> Operating {
        Operating {
            silences: self
                .silences
                .iter()
                .map(|s| SilenceState {
                    pattern: s.pattern.source.clone(),
                    until: s.until,
                    reason: s.reason.clone(),
                    expired: now >= s.until,
                })
                .collect(),
            maintenance: self.maintenance.as_ref().map(|m| MaintenanceState {
                from: m.from,
                until: m.until,
                reason: m.reason.clone(),
                active: m.active(now),
            }),
        }
    }
}

/// Logs, at load, silences that can reach no configured check: most likely a typo, and harmless to run with.
pub(crate) fn warn_unmatched(silences: &[Silence], checks: &[&str]) {
    for s in silences {
        if let Err(e @ PatternError::MatchesNothing { .. }) = s.pattern.compiled.reach(checks) {
            tracing::warn!(pattern = s.pattern.as_str(), "silence matches nothing: {e}");
        }
    }
}
