//! Events are one object seen through two APIs: `events.k8s.io/v1` (what recorders write) and core `v1`
//! (what `kubectl get events` and `kubectl describe` read). Each write is mirrored into the other shape.

use serde_json::{json, Map, Value};

/// The same Event in the other API's shape, or `None` when `obj` is not an Event.
pub(super) fn twin(obj: &Value) -> Option<Value> {
    if obj["kind"] != "Event" {
        return None;
    }
    match obj["apiVersion"].as_str() {
        Some("events.k8s.io/v1") => Some(to_core(obj)),
        Some("v1") => Some(to_events_v1(obj)),
        _ => None,
    }
}

fn metadata(obj: &Value) -> Value {
    let mut m = obj["metadata"].clone();
    if let Some(m) = m.as_object_mut() {
        m.remove("resourceVersion");
    }
    m
}

/// Keeps only the fields that are present (a real server omits empty ones).
fn present(fields: Vec<(&str, Value)>) -> Value {
    let map: Map<String, Value> = fields
        .into_iter()
        .filter(|(_, v)| !v.is_null())
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    Value::Object(map)
}

fn to_core(e: &Value) -> Value {
    let series = &e["series"];
    let first = e
        .get("deprecatedFirstTimestamp")
        .cloned()
        .unwrap_or_else(|| e["eventTime"].clone());
    let last = series
        .get("lastObservedTime")
        .or(e.get("deprecatedLastTimestamp"))
        .cloned()
        .unwrap_or_else(|| e["eventTime"].clone());
    let count = series
        .get("count")
        .or(e.get("deprecatedCount"))
        .cloned()
        .unwrap_or(json!(1));
    present(vec![
        ("apiVersion", json!("v1")),
        ("kind", json!("Event")),
        ("metadata", metadata(e)),
        ("involvedObject", e["regarding"].clone()),
        ("related", e["related"].clone()),
        ("reason", e["reason"].clone()),
        ("message", e["note"].clone()),
        ("type", e["type"].clone()),
        ("action", e["action"].clone()),
        ("eventTime", e["eventTime"].clone()),
        ("firstTimestamp", first),
        ("lastTimestamp", last),
        ("count", count),
        ("source", json!({"component": e["reportingController"]})),
        ("reportingComponent", e["reportingController"].clone()),
        ("reportingInstance", e["reportingInstance"].clone()),
    ])
}

fn to_events_v1(c: &Value) -> Value {
    let controller = c
        .get("reportingComponent")
        .cloned()
        .unwrap_or_else(|| c["source"]["component"].clone());
    present(vec![
        ("apiVersion", json!("events.k8s.io/v1")),
        ("kind", json!("Event")),
        ("metadata", metadata(c)),
        ("regarding", c["involvedObject"].clone()),
        ("related", c["related"].clone()),
        ("reason", c["reason"].clone()),
        ("note", c["message"].clone()),
        ("type", c["type"].clone()),
        ("action", c["action"].clone()),
        ("eventTime", c["eventTime"].clone()),
        ("deprecatedFirstTimestamp", c["firstTimestamp"].clone()),
        ("deprecatedLastTimestamp", c["lastTimestamp"].clone()),
        ("deprecatedCount", c["count"].clone()),
        ("reportingController", controller),
        ("reportingInstance", c["reportingInstance"].clone()),
    ])
}
