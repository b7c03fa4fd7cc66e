//! The history as JSON (`/history`): each item's and endpoint's transitions, oldest first. The status page
//! draws the same history as timelines (`html::timeline`).

use std::collections::{BTreeMap, VecDeque};

use jiff::Timestamp;
use serde::Serialize;

use super::Details;
use crate::history::{History, Transition};
use crate::report::Endpoint;

#[derive(Serialize)]
struct Document<'a> {
    since: Timestamp,
    now: Timestamp,
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

fn entries(series: &VecDeque<Transition>, details: Details) -> Vec<Entry<'_>> {
    series
        .iter()
        .map(|t| Entry {
            time: t.time,
            status: t.status.as_str(),
            message: (!t.message.is_empty()).then(|| details.message(&t.message)),
        })
        .collect()
}

/// `{"since", "now", "endpoints": {"healthz": [...], "readyz": [...]}, "items": {"CHECK/ITEM": [...]}}`,
/// each entry `{"time", "status", "message"?}`, oldest first.
pub(crate) fn json(history: &History, details: Details, now: Timestamp) -> String {
    let doc = Document {
        since: history.since(now),
        now,
        endpoints: Endpoint::ALL
            .iter()
            .map(|e| (e.as_str(), entries(history.endpoint(*e), details)))
            .collect(),
        items: history
            .items()
            .iter()
            .map(|(name, series)| (name.as_str(), entries(series, details)))
            .collect(),
    };
    serde_json::to_string(&doc).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}
