//! A real Prometheus server for the tests: the shipped rules as a Prometheus rules file, and its HTTP API.

use std::net::SocketAddr;
use std::path::Path;

use super::programs::{binary, encode, free_port, get, Program};

/// Starts Prometheus in `dir` with `scrape_configs`, scraping and evaluating every second, and the shipped
/// rules with every `for:` set to `rule_for`; returns once it has loaded every one of them.
pub async fn start(
    dir: &Path,
    scrape_configs: serde_json::Value,
    rule_for: &str,
) -> (Program, SocketAddr) {
    start_with(dir, scrape_configs, rule_for, &[]).await
}

/// Like [`start`], with more command-line flags.
pub async fn start_with(
    dir: &Path,
    scrape_configs: serde_json::Value,
    rule_for: &str,
    flags: &[&str],
) -> (Program, SocketAddr) {
    let prometheus = binary("prometheus", "prometheus");
    let rules = dir.join("rules.yml");
    let (shipped, shipped_count) = shipped_rules(Some(rule_for));
    std::fs::write(&rules, shipped).expect("rules");
    let config = serde_json::json!({
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [rules.display().to_string()],
        "scrape_configs": scrape_configs,
    });
    let cfg = dir.join("prometheus.yml");
    std::fs::write(&cfg, serde_yaml_ng::to_string(&config).expect("YAML")).expect("config");
    let prom = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let mut args = vec![
        format!("--config.file={}", cfg.display()),
        format!("--storage.tsdb.path={}", dir.join("data").display()),
        format!("--web.listen-address={prom}"),
    ];
    args.extend(flags.iter().map(|f| f.to_string()));
    let mut proc = Program::start(&prometheus, &args, dir);
    let groups = proc
        .wait_until("Prometheus to load the rules", async || {
            api(prom, "/api/v1/rules").await
        })
        .await;
    assert_eq!(loaded_rules(&groups), shipped_count, "{groups}");
    (proc, prom)
}

/// The rule groups of deploy/monitoring/prometheusrule.yaml as a Prometheus rules file (its `spec`), every
/// `for:` set to `for_` when one is given, and how many rules they hold.
pub fn shipped_rules(for_: Option<&str>) -> (String, usize) {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/monitoring/prometheusrule.yaml"
    ))
    .expect("deploy/monitoring/prometheusrule.yaml");
    let doc: serde_json::Value = serde_yaml_ng::from_str(&text).expect("PrometheusRule is YAML");
    assert_eq!(doc["kind"], "PrometheusRule");
    let mut groups = doc["spec"]["groups"].clone();
    let rules = groups
        .as_array_mut()
        .expect("spec.groups")
        .iter_mut()
        .flat_map(|g| g["rules"].as_array_mut().expect("rules").iter_mut());
    let mut count = 0;
    for rule in rules {
        count += 1;
        if let (Some(for_), Some(_)) = (for_, rule.get("for")) {
            rule["for"] = for_.into();
        }
    }
    let text = serde_yaml_ng::to_string(&serde_json::json!({ "groups": groups })).expect("YAML");
    (text, count)
}

/// How many rules a Prometheus has loaded, from its `/api/v1/rules` data.
fn loaded_rules(data: &serde_json::Value) -> usize {
    data["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|g| g["rules"].as_array().map_or(0, Vec::len))
        .sum()
}

/// The `data` of a successful answer of Prometheus' HTTP API at `path`; `None` for anything else.
pub async fn api(prom: SocketAddr, path: &str) -> Option<serde_json::Value> {
    let r = get(prom, path).await.ok()?;
    let v: serde_json::Value = serde_json::from_str(&r.body).ok()?;
    (v["status"] == "success").then(|| v["data"].clone())
}

/// The path of an instant query of `expr`.
pub fn query(expr: &str) -> String {
    format!("/api/v1/query?query={}", encode(expr))
}
