//! `[[silence]]` and `[maintenance]`: what operators declare while the service runs (the policy applies
//! them).

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::{PatternError, Patterns};
use crate::values::{text, timestamp};

/// `[[silence]]`: an item matching `match` that an endpoint would count as failing counts as `warn` instead,
/// until `until`. Every key is required: a silence without an end or a reason is how outages hide.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Silence {
    #[serde(rename = "match")]
    pub pattern: Pattern,
    #[serde(deserialize_with = "timestamp::deserialize")]
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

    pub(crate) fn matches(&self, check: &str, item: &str) -> bool {
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
        let compiled =
            Patterns::compiled(vec![source.clone()]).map_err(serde::de::Error::custom)?;
        Ok(Pattern { source, compiled })
    }
}

/// `[maintenance]`: from `from` (default: as soon as it is loaded) until `until`, `/readyz` fails with the
/// reason, so that load balancers drain; `/healthz` and `/livez` are unaffected.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Maintenance {
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "timestamp::option"
    )]
    pub from: Option<Timestamp>,
    #[serde(deserialize_with = "timestamp::deserialize")]
    pub until: Timestamp,
    #[serde(deserialize_with = "text::deserialize")]
    pub reason: String,
}

impl Maintenance {
    pub(crate) fn active(&self, now: Timestamp) -> bool {
        self.from.is_none_or(|f| f <= now) && now < self.until
    }
}

/// Logs, at load, silences that can reach no configured check: most likely a typo, and harmless to run with.
pub(super) fn warn_unmatched(silences: &[Silence], checks: &[&str]) {
    for s in silences {
        if let Err(e @ PatternError::MatchesNothing { .. }) = s.pattern.compiled.reach(checks) {
            tracing::warn!(pattern = s.pattern.as_str(), "silence matches nothing: {e}");
        }
    }
}

/// Logs, at load, declarations that have ended already: they still load (a window may be kept for the
/// record), but do nothing.
pub(super) fn warn_ended(silences: &[Silence], maintenance: Option<&Maintenance>, now: Timestamp) {
    for s in silences.iter().filter(|s| s.until <= now) {
        tracing::warn!(
            pattern = s.pattern.as_str(),
            until = %s.until,
            "silence ended at {}: it silences nothing (remove it, or move its until)",
            s.until
        );
    }
    if let Some(m) = maintenance.filter(|m| m.until <= now) {
        tracing::warn!(
            until = %m.until,
            "[maintenance] window ended at {}: it drains nothing (remove it, or move its until)",
            m.until
        );
    }
}
