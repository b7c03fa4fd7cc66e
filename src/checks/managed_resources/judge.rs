//! The state table: what one managed resource is, from its facts alone. The first row that matches wins:
//!
//! 1. `deletionTimestamp` set → **deleting**;
//! 2. the `crossplane.io/paused` annotation is `"true"`, or `Synced=False` reason `ReconcilePaused` → **paused**;
//! 3. `Synced=False` → **failing**;
//! 4. `Ready=True` and `Synced=True` → **ready**;
//! 5. no `Ready` or `Synced` condition yet, `Ready=False` reason `Creating`, or `Ready=False` reason
//!    `Unavailable` while `status.pendingOperation` is set → **creating**;
//! 6. anything else (`Ready=False` `Unavailable` without a pending operation, `Ready=True` with `Synced`
//!    missing) → **failing**.
//!
//! Time comes on top, in the tally: creating longer than `create_timeout` or deleting longer than
//! `delete_timeout` counts as failing.

use jiff::Timestamp;

use super::object::{Condition, Facts};

/// What a managed resource is, by the state table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum State {
    Ready,
    Creating,
    Deleting,
    Paused,
    Failing,
}

impl State {
    pub const ALL: [State; 5] = [
        State::Ready,
        State::Creating,
        State::Deleting,
        State::Paused,
        State::Failing,
    ];

    pub fn index(self) -> usize {
        self as usize
    }

    pub fn as_str(self) -> &'static str {
        match self {
            State::Ready => "ready",
            State::Creating => "creating",
            State::Deleting => "deleting",
            State::Paused => "paused",
            State::Failing => "failing",
        }
    }
}

/// One resource judged by the table.
#[derive(Debug, Clone, PartialEq)]
pub struct Judged {
    pub state: State,
    /// Creating or deleting: since when (its timeout counts from here).
    pub since: Option<Timestamp>,
    /// Why it is not ready, in the conditions' words (`Synced=False, ReconcileError: …`).
    pub why: Option<String>,
}

/// `Synced=False, ReconcileError: cannot provision: quota exceeded`.
pub fn describe(type_: &str, c: &Condition) -> String {
    let mut out = format!("{type_}={}", c.status);
    if !c.reason.is_empty() {
        out.push_str(&format!(", {}", c.reason));
    }
    if !c.message.is_empty() {
        out.push_str(&format!(": {}", c.message));
    }
    out
}

fn is(c: &Option<Condition>, status: &str, reason: Option<&str>) -> bool {
    c.as_ref()
        .is_some_and(|c| c.is(status) && reason.is_none_or(|r| c.reason == r))
}

/// The state table, first match wins.
pub fn judge(f: &Facts) -> Judged {
    let judged = |state, since, why: Option<String>| Judged { state, since, why };
    if f.deleting.is_some() {
        return judged(State::Deleting, f.deleting, None);
    }
    if f.paused || is(&f.synced, "False", Some("ReconcilePaused")) {
        return judged(State::Paused, None, None);
    }
    if let Some(synced) = f.synced.as_ref().filter(|s| s.is("False")) {
        return judged(State::Failing, None, Some(describe("Synced", synced)));
    }
    if is(&f.ready, "True", None) && is(&f.synced, "True", None) {
        return judged(State::Ready, None, None);
    }
    let creating_since = f.ready.as_ref().and_then(|r| r.since).or(f.created);
    if f.ready.is_none() && f.synced.is_none() {
        return judged(
            State::Creating,
            f.created,
            Some("no conditions yet".to_string()),
        );
    }
    if let Some(ready) = f.ready.as_ref().filter(|r| {
        r.is("False")
            && (r.reason == "Creating" || (r.reason == "Unavailable" && f.pending_operation))
    }) {
        let mut why = describe("Ready", ready);
        if f.pending_operation {
            why.push_str(" (a broker operation is pending)");
        }
        return judged(State::Creating, creating_since, Some(why));
    }
    let mut words = Vec::new();
    match &f.ready {
        Some(r) => words.push(describe("Ready", r)),
        None => words.push("Ready missing".to_string()),
    }
    match &f.synced {
        Some(s) if !s.is("True") => words.push(describe("Synced", s)),
        Some(_) => {}
        None => words.push("Synced missing".to_string()),
    }
    judged(State::Failing, None, Some(words.join("; ")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checks::managed_resources::object::Managed;
    use crate::checks::testing::{at, fixture};

    fn c(status: &str, reason: &str) -> Option<Condition> {
        Some(Condition {
            status: status.into(),
            reason: reason.into(),
            message: String::new(),
            since: Some(at("2026-12-01T10:00:00Z")),
        })
    }

    fn facts(ready: Option<Condition>, synced: Option<Condition>) -> Facts {
        Facts {
            created: Some(at("2026-12-01T09:00:00Z")),
            provider_config: Some("pg".into()),
            ready,
            synced,
            ..Facts::default()
        }
    }

    /// Every row of the table, and the first match winning over later ones.
    #[test]
    fn the_state_table_first_match_wins() {
        use State::*;
        let deleting = |mut f: Facts| {
            f.deleting = Some(at("2026-12-01T11:00:00Z"));
            f
        };
        let paused = |mut f: Facts| {
            f.paused = true;
            f
        };
        let pending = |mut f: Facts| {
            f.pending_operation = true;
            f
        };
        let rows: Vec<(&str, Facts, State, Option<&str>)> = vec![
            // 1. deleting wins over everything, failing conditions included.
            (
                "deleting",
                deleting(facts(
                    c("False", "Unavailable"),
                    c("False", "ReconcileError"),
                )),
                Deleting,
                None,
            ),
            (
                "deleting paused",
                deleting(paused(facts(None, None))),
                Deleting,
                None,
            ),
            // 2. paused: by annotation (even while Synced=False), or by ReconcilePaused.
            (
                "annotation",
                paused(facts(
                    c("False", "Unavailable"),
                    c("False", "ReconcileError"),
                )),
                Paused,
                None,
            ),
            (
                "ReconcilePaused",
                facts(c("True", "Available"), c("False", "ReconcilePaused")),
                Paused,
                None,
            ),
            // 3. Synced=False fails, whatever Ready says, even with a pending operation.
            (
                "synced false",
                facts(c("True", "Available"), c("False", "ReconcileError")),
                Failing,
                Some("Synced=False, ReconcileError"),
            ),
            (
                "synced false creating",
                pending(facts(c("False", "Creating"), c("False", "ReconcileError"))),
                Failing,
                Some("Synced=False, ReconcileError"),
            ),
            // 4. ready.
            (
                "ready",
                facts(c("True", "Available"), c("True", "ReconcileSuccess")),
                Ready,
                None,
            ),
            // 5. creating.
            (
                "no conditions",
                facts(None, None),
                Creating,
                Some("no conditions yet"),
            ),
            (
                "Creating",
                facts(c("False", "Creating"), c("True", "ReconcileSuccess")),
                Creating,
                Some("Ready=False, Creating"),
            ),
            (
                "Creating, Synced missing",
                facts(c("False", "Creating"), None),
                Creating,
                Some("Ready=False, Creating"),
            ),
            (
                "pending operation",
                pending(facts(
                    c("False", "Unavailable"),
                    c("True", "ReconcileSuccess"),
                )),
                Creating,
                Some("Ready=False, Unavailable (a broker operation is pending)"),
            ),
            // 6. anything else.
            (
                "unavailable",
                facts(c("False", "Unavailable"), c("True", "ReconcileSuccess")),
                Failing,
                Some("Ready=False, Unavailable"),
            ),
            (
                "synced missing",
                facts(c("True", "Available"), None),
                Failing,
                Some("Ready=True, Available; Synced missing"),
            ),
            (
                "ready missing",
                facts(None, c("True", "ReconcileSuccess")),
                Failing,
                Some("Ready missing"),
            ),
            (
                "ready unknown",
                facts(c("Unknown", ""), c("Unknown", "")),
                Failing,
                Some("Ready=Unknown; Synced=Unknown"),
            ),
            (
                "deleting reason, no timestamp",
                facts(c("False", "Deleting"), c("True", "ReconcileSuccess")),
                Failing,
                Some("Ready=False, Deleting"),
            ),
        ];
        for (what, f, state, why) in rows {
            let j = judge(&f);
            assert_eq!((j.state, j.why.as_deref()), (state, why), "{what}");
        }
    }

    #[test]
    fn creating_and_deleting_count_from_when_they_began() {
        let mut f = facts(c("False", "Creating"), c("True", "ReconcileSuccess"));
        assert_eq!(
            judge(&f).since,
            Some(at("2026-12-01T10:00:00Z")),
            "Ready's transition"
        );
        f.ready = None;
        f.synced = None;
        assert_eq!(
            judge(&f).since,
            Some(at("2026-12-01T09:00:00Z")),
            "its creation"
        );
        f.deleting = Some(at("2026-12-01T11:00:00Z"));
        assert_eq!(
            judge(&f).since,
            Some(at("2026-12-01T11:00:00Z")),
            "its deletion"
        );
    }

    #[test]
    fn the_real_shapes() {
        let read = |name| {
            serde_json::from_value::<Managed>(fixture(name))
                .expect("parses")
                .facts
        };
        assert_eq!(judge(&read("serviceinstance-ready")).state, State::Ready);
        let failing = judge(&read("serviceinstance-failing"));
        assert_eq!(failing.state, State::Failing);
        assert_eq!(
            failing.why.as_deref(),
            Some("Synced=False, ReconcileError: observe failed: cannot get instance: broker answered 500: internal server error")
        );
    }
}
