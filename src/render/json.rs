//! The report in the shape of the IETF draft "Health Check Response Format for HTTP APIs"
//! (`application/health+json`), with the extension `since` on each item.

use serde_json::{json, Map, Value};

use super::{Details, Identity};
use crate::report::{overall, Report, Selection, Status};

/// `output` overrides the top-level status with a failure, as while shutting down.
pub fn document(
    report: &Report,
    identity: &Identity,
    selection: &Selection<'_>,
    details: Details,
    output: Option<&str>,
) -> String {
    let mut checks: Map<String, Value> = Map::new();
    for c in &selection.items {
        let item = c.item.map(|i| &report.items[i]);
        let mut entry = json!({
            "componentId": &c.name[c.check.len() + 1..],
            "componentType": item.map_or("policy", |i| i.check_type),
            "status": c.status.as_str(),
            "time": item.map_or(report.evaluated, |i| i.observed).to_string(),
            "since": c.since.to_string(),
        });
        if c.status != Status::Pass {
            entry["output"] = details.message(&c.message).into();
        }
        if let Value::Array(list) = checks
            .entry(c.check.to_string())
            .or_insert_with(|| json!([]))
        {
            list.push(entry);
        }
    }
    let status = match output {
        Some(_) => Status::Fail,
        None => overall(selection.items.iter().copied()),
    };
    let mut doc = json!({
        "status": status.as_str(),
        "version": env!("CARGO_PKG_VERSION"),
        "serviceId": identity.service_id,
        "description": identity.description,
        "checks": checks,
    });
    if let Some(o) = output {
        doc["output"] = o.into();
    }
    doc.to_string()
}
