//! The history as JSON (`/history`): each item's and endpoint's transitions, oldest first. The status page
//! draws the same history as timelines (`html::timeline`).

use std::collections::{BTreeMap, VecDeque};

use jiff::Timestamp;
use serde::Serialize;

use super::Details;
use crate::clock::Moment;
use crate::verdict::history::{History, Transition};
use crate::verdict::report::Endpoint;

#[derive(Serialize)]
struct Document<'a> {
    since: Timestamp,
    now: Timestamp,
    /// The bound of transitions dropped some that the last 24 h would still show.
    truncated: bool,
    endpoints: BTreeMap<&'static str, Vec<Entry<'a>>>,
    items: BTreeMap<&'a str, Vec<Entry<'a>>>,
}

#[derive(Serialize)]
struct Entry<'a> {
    time: Timestamp,
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<std::borrow::Cow<'a, str>>,
}

/// The series' entries, each time as `now` names it and within `since..=now`: in order even when the wall
/// clock stepped back since.
fn entries(
    series: &VecDeque<Transition>,
    details: Details,
    since: Timestamp,
    now: Moment,
) -> Vec<Entry<'_>> {
    series
        .iter()
        .map(|t| Entry {
            time: t.time.seen_from(now).wall.clamp(since, now.wall),
            status: t.status.as_str(),
            message: (!t.message.is_empty()).then(|| details.message(&t.message)),
        })
        .collect()
}

/// `{"since", "now", "endpoints": {"healthz": [...], "readyz": [...]}, "items": {"CHECK/ITEM": [...]}}`,
/// each entry `{"time", "status", "message"?}`, oldest first.
pub(crate) fn json(history: &History, details: Details, now: Moment) -> String {
    let since = history.since(now).seen_from(now).wall.min(now.wall);
    let doc = Document {
        since,
        now: now.wall,
        truncated: history.truncated(now),
        endpoints: Endpoint::ALL
            .iter()
            .map(|e| {
                (
                    e.as_str(),
                    entries(history.endpoint(*e), details, since, now),
                )
            })
            .collect(),
        items: history
            .items()
            .iter()
            .map(|(name, series)| (name.as_str(), entries(series, details, since, now)))
            .collect(),
    };
    serde_json::to_string(&doc).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::verdict::history::tests::{at, report};
    use crate::verdict::report::Status;

    /// A wall clock stepped back an hour: `/history` still reads `since` ≤ every transition ≤ `now`, each
    /// as far before `now` as it happened.
    #[test]
    fn a_wall_clock_step_backwards_keeps_the_history_in_order() {
        let mut history = History::new(at(0));
        history.record(&report(0, &[("a", Status::Pass)]));
        let mut failed = report(10, &[("a", Status::Fail)]);
        let back = |m: Moment| Moment {
            mono: m.mono,
            wall: m.wall.checked_sub(Duration::from_secs(3600)).expect("time"),
        };
        failed.evaluated = back(at(10));
        history.record(&failed);
        let now = back(at(20));
        let doc: serde_json::Value =
            serde_json::from_str(&json(&history, Details::Shown, now)).expect("JSON");
        let time = |v: &serde_json::Value| {
            v.as_str()
                .expect("time")
                .parse::<Timestamp>()
                .expect("time")
        };
        let series: Vec<Timestamp> = doc["items"]["pcs/a"]
            .as_array()
            .expect("series")
            .iter()
            .map(|t| time(&t["time"]))
            .collect();
        let (since, now) = (time(&doc["since"]), time(&doc["now"]));
        assert_eq!(now, back(at(20)).wall);
        assert_eq!(series, [back(at(0)).wall, back(at(10)).wall], "{doc}");
        assert!(since <= series[0] && series[1] <= now, "{doc}");
        assert_eq!(doc["truncated"], false);
    }
}
