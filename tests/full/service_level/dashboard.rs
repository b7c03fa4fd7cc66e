//! The committed Grafana dashboard as the tests read it: its panels, each panel's queries, and Grafana's
//! template variables filled in as a test fixes them. Used by tests/full/service_level.rs (two simulated
//! control planes, one Prometheus) and tests/realcp/operator.rs (the operator-run Prometheus).

use std::collections::BTreeMap;

use serde_json::Value;

/// The dashboard's generator and its output, committed side by side.
pub const GENERATOR: &str = "deploy/monitoring/grafana/generate.py";
pub const DASHBOARD: &str = "deploy/monitoring/grafana/klutch-health.json";

/// The committed dashboard's JSON.
pub fn dashboard() -> Value {
    let path = format!("{}/{DASHBOARD}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).expect("dashboard JSON")
}

/// One query of a panel as the dashboard holds it.
#[derive(Debug)]
pub struct PanelQuery {
    pub expr: String,
    pub legend: String,
    pub instant: bool,
}

/// A panel of the dashboard and the row it sits in.
#[derive(Debug)]
pub struct DashboardPanel {
    pub row: String,
    pub title: String,
    pub kind: String,
    pub unit: String,
    /// Value → text of its value mappings.
    pub mappings: BTreeMap<String, String>,
    pub queries: Vec<PanelQuery>,
}

/// Every panel of `board` but the rows, in order.
pub fn panels(board: &Value) -> Vec<DashboardPanel> {
    let mut row = String::new();
    let mut out = Vec::new();
    for p in board["panels"].as_array().expect("panels") {
        let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
        if p["type"] == "row" {
            row = text(&p["title"]);
            continue;
        }
        let defaults = &p["fieldConfig"]["defaults"];
        let mappings = defaults["mappings"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| m["options"].as_object())
            .flatten()
            .map(|(value, result)| (value.clone(), text(&result["text"])))
            .collect();
        let queries = p["targets"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|t| PanelQuery {
                expr: text(&t["expr"]),
                legend: text(&t["legendFormat"]),
                instant: t["instant"] == true,
            })
            .collect();
        out.push(DashboardPanel {
            row: row.clone(),
            title: text(&p["title"]),
            kind: text(&p["type"]),
            unit: text(&defaults["unit"]),
            mappings,
            queries,
        });
    }
    out
}

/// `expr` with Grafana's variables as the tests fix them, for a Prometheus that scrapes every second:
/// `$control_plane` with every one of `control_planes` selected (Grafana writes a multi-value variable into a
/// regex as `(a|b)`), `$__interval` as Grafana derives it from a short range (at least the scrape interval),
/// `$__rate_interval` as it computes it (4 scrape intervals at the least), and `$__range` longer than a test.
/// Fails on a variable it does not know.
pub fn substitute(expr: &str, control_planes: &[&str]) -> String {
    let selected = format!("({})", control_planes.join("|"));
    let filled = [
        ("$control_plane", selected.as_str()),
        ("$__rate_interval", "4s"),
        ("$__interval", "2s"),
        ("$__range", "5m"),
    ]
    .iter()
    .fold(expr.to_string(), |e, (var, value)| e.replace(var, value));
    assert!(!filled.contains('$'), "a variable left in {filled}");
    filled
}
