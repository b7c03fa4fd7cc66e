//! The report in the shape of the IETF draft "Health Check Response Format for HTTP APIs"
//! (`application/health+json`), with the extensions `since` on each item, `silenced` on a silenced one,
//! `cause` (the root cause) and `via` (the direct cause) on an explained one, and the top-level `causes`.
//! `output` is left out of a passing item, as the draft advises, unless the item has a fuller account (a managed-resources kind, a provider
//! scaled to zero).
//!
//! Serialized straight from borrowed structs, not through `serde_json::Value`: with thousands of items a
//! map per item would cost more memory than the report itself.

use std::borrow::Cow;
use std::collections::HashMap;

use jiff::Timestamp;
use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;

use super::{Details, Identity};
use crate::verdict::report::{overall, Counted, Item, OperatorKind, Report, Selection, Status};

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Document<'a> {
    status: &'static str,
    version: &'static str,
    service_id: &'a str,
    description: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    output: Option<&'a str>,
    checks: Checks<'a>,
    /// Extension: each root cause of the items shown, with the items it explains.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    causes: Vec<CauseDoc<'a>>,
}

/// A root cause: `CHECK/ITEM` or `cluster/NAME`, what it says, and the items of this answer it explains.
#[derive(Serialize)]
struct CauseDoc<'a> {
    name: &'a str,
    status: &'static str,
    output: Cow<'a, str>,
    since: Timestamp,
    explains: Vec<&'a str>,
}

/// Check name → its items, in report order.
struct Checks<'a> {
    report: &'a Report,
    items: &'a [&'a Counted],
    details: Details,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ItemDoc<'a> {
    component_id: &'a str,
    component_type: &'a str,
    status: &'static str,
    time: Timestamp,
    #[serde(skip_serializing_if = "Option::is_none")]
    output: Option<Cow<'a, str>>,
    since: Timestamp,
    /// Extension: the `[[silence]]` that keeps this item from failing the endpoint.
    #[serde(skip_serializing_if = "Option::is_none")]
    silenced: Option<Silenced<'a>>,
    /// Extension: the root cause that explains this bad item (`CHECK/ITEM` or `cluster/NAME`)...
    #[serde(skip_serializing_if = "Option::is_none")]
    cause: Option<&'a str>,
    /// ...and its direct cause.
    #[serde(skip_serializing_if = "Option::is_none")]
    via: Option<&'a str>,
}

#[derive(Serialize)]
struct Silenced<'a> {
    until: Timestamp,
    reason: &'a str,
}

impl Serialize for Checks<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        // Items of one check are adjacent in the report, so each check is one run of items.
        for run in self.items.chunk_by(|a, b| a.name.check() == b.name.check()) {
            let docs: Vec<ItemDoc<'_>> = run.iter().map(|c| self.item(c)).collect();
            map.serialize_entry(run[0].name.check(), &docs)?;
        }
        map.end()
    }
}

impl<'a> Checks<'a> {
    fn item(&self, c: &'a Counted) -> ItemDoc<'a> {
        let item = c.item.map(|i| &self.report.items[i]);
        ItemDoc {
            component_id: c.name.item(),
            component_type: item.map_or("policy", |i| i.check_type),
            status: c.status.as_str(),
            time: item.map_or(self.report.evaluated.wall, |i| i.observed),
            output: self.output(c, item),
            since: c.since,
            silenced: c
                .notes
                .operator
                .as_ref()
                .filter(|o| o.kind == OperatorKind::Silenced)
                .map(|o| Silenced {
                    until: o.until,
                    reason: match self.details {
                        Details::Shown => &o.reason,
                        Details::Withheld => super::WITHHELD,
                    },
                }),
            cause: item.and_then(|i| i.cause.as_ref()).map(|c| c.root.as_str()),
            via: item.and_then(|i| i.cause.as_ref()).map(|c| c.via.as_str()),
        }
    }
}

impl<'a> Checks<'a> {
    /// The item's fuller account when it has one (even while it passes; nothing when details are withheld
    /// from a passing item), else its message when it does not pass.
    fn output(&self, c: &'a Counted, item: Option<&'a Item>) -> Option<Cow<'a, str>> {
        match (item.and_then(|i| i.detail.as_deref()), c.status) {
            (Some(_), Status::Pass) if self.details == Details::Withheld => None,
            (Some(detail), _) => Some(self.details.counted_of(c, detail)),
            (None, Status::Pass) => None,
            (None, _) => Some(self.details.counted(c)),
        }
    }
}

/// The root causes of the items of `selection`, each with the items it explains there.
fn causes<'a>(
    report: &'a Report,
    selection: &Selection<'a>,
    details: Details,
) -> Vec<CauseDoc<'a>> {
    // One pass over the items, one over the roots: thousands of each stay cheap.
    let mut explained: HashMap<&str, Vec<&'a str>> = HashMap::new();
    for c in &selection.items {
        if let Some(cause) = c
            .item
            .and_then(|i| report.items.get(i))
            .and_then(|i| i.cause.as_ref())
        {
            explained
                .entry(cause.root.as_str())
                .or_default()
                .push(c.name.as_str());
        }
    }
    report
        .causes
        .roots
        .iter()
        .filter_map(|root| {
            Some(CauseDoc {
                name: root.name.as_str(),
                status: root.status.as_str(),
                output: details.message(&root.message),
                since: root.since,
                explains: explained.remove(root.name.as_str())?,
            })
        })
        .collect()
}

/// `output` overrides the top-level status with a failure, as while shutting down.
pub(crate) fn document(
    report: &Report,
    identity: &Identity,
    selection: &Selection<'_>,
    details: Details,
    output: Option<&str>,
) -> String {
    let status = match output {
        Some(_) => Status::Fail,
        None => overall(selection.items.iter().copied()),
    };
    let doc = Document {
        status: status.as_str(),
        version: env!("CARGO_PKG_VERSION"),
        service_id: &identity.service_id,
        description: &identity.description,
        output,
        checks: Checks {
            report,
            items: &selection.items,
            details,
        },
        causes: causes(report, selection, details),
    };
    serde_json::to_string(&doc)
        .unwrap_or_else(|e| format!("{{\"status\":\"fail\",\"output\":\"cannot render: {e}\"}}"))
}
