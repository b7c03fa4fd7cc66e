//! Applies what operators declare while they run the service: `[[silence]]` (a known failure that must not fail an
//! endpoint until a set time) and `[maintenance]` (a planned window that drains load balancers through
//! `/readyz`). Both end by themselves: the policy asks the engine to evaluate again at their `until`.

use jiff::Timestamp;

use crate::config::{Maintenance, Silence};
use crate::verdict::report::{MaintenanceState, Operating, SilenceState};

/// The declarations, compiled for repeated evaluation.
#[derive(Debug, Clone, Default)]
pub(crate) struct Operations {
    silences: Vec<Silence>,
    maintenance: Option<Maintenance>,
}

impl Operations {
    pub(crate) fn new(silences: &[Silence], maintenance: Option<&Maintenance>) -> Operations {
        Operations {
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

    /// The silences in force at `now` that match none of `items` (each `(CHECK, CHECK/ITEM)`): they work,
    /// but do nothing.
    pub(crate) fn matching_nothing<'a>(
        &'a self,
        items: &[(&str, &str)],
        now: Timestamp,
    ) -> Vec<&'a Silence> {
        self.silences
            .iter()
            .filter(|s| now < s.until && !items.iter().any(|(c, i)| s.pattern.matches(c, i)))
            .collect()
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
                    pattern: s.pattern.as_str().to_string(),
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
