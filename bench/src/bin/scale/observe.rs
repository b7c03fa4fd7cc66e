//! Reading what the measured tools say: one HTTP GET with a deadline, the Prometheus text format (klutch-health's
//! `klutch_health_managed_resources` counts, kube-state-metrics' per-object condition series), percentiles.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{anyhow, Context};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;

/// Every request of the bench gives up after this long (a scrape of kube-state-metrics at 50 000 objects takes
/// about a second on a loaded machine).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// A keep-alive HTTP/1.1 client for the pollers.
#[derive(Clone)]
pub struct Http(Client<HttpConnector, Empty<Bytes>>);

impl Http {
    pub fn new() -> Http {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        Http(Client::builder(TokioExecutor::new()).build(connector))
    }

    /// GET `http://ADDR/PATH`: the status and body.
    pub async fn get(&self, addr: SocketAddr, path: &str) -> anyhow::Result<(u16, Bytes)> {
        let uri: hyper::Uri = format!("http://{addr}{path}").parse()?;
        let exchange = async {
            let res = self.0.get(uri.clone()).await?;
            let status = res.status().as_u16();
            let body = res.into_body().collect().await?.to_bytes();
            anyhow::Ok((status, body))
        };
        tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .map_err(|_| anyhow!("GET {uri}: no answer within {REQUEST_TIMEOUT:?}"))?
            .with_context(|| format!("GET {uri}"))
    }
}

/// One sample of the Prometheus text format.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample<'a> {
    pub labels: Vec<(&'a str, String)>,
    pub value: f64,
}

impl Sample<'_> {
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The samples of the metric `name` (exactly that name, with or without labels) in a text exposition.
pub fn samples<'a>(text: &'a str, name: &'a str) -> impl Iterator<Item = Sample<'a>> + 'a {
    text.lines().filter_map(move |line| {
        let rest = line.strip_prefix(name)?;
        let (labels, rest) = match rest.strip_prefix('{') {
            Some(inner) => parse_labels(inner)?,
            None if rest.starts_with(' ') => (Vec::new(), rest),
            None => return None,
        };
        let value = rest.split_whitespace().next()?.parse().ok()?;
        Some(Sample { labels, value })
    })
}

/// `k="v",k2="v2"} rest` → the labels (values unescaped) and `rest`.
fn parse_labels(mut s: &str) -> Option<(Vec<(&str, String)>, &str)> {
    let mut labels = Vec::new();
    loop {
        s = s.trim_start_matches(',');
        if let Some(rest) = s.strip_prefix('}') {
            return Some((labels, rest));
        }
        let eq = s.find('=')?;
        let key = &s[..eq];
        let mut chars = s[eq + 1..].strip_prefix('"')?.char_indices();
        let mut value = String::new();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '"' => break i,
                '\\' => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                c => value.push(c),
            }
        };
        labels.push((key, value));
        s = &s[eq + 1 + 1 + end + 1..];
    }
}

/// klutch-health's `klutch_health_managed_resources` counts: (kind, state) → resources.
pub fn managed_counts(metrics: &str) -> HashMap<(String, String), u64> {
    samples(metrics, "klutch_health_managed_resources")
        .filter_map(|s| {
            Some((
                (s.label("kind")?.to_string(), s.label("state")?.to_string()),
                s.value as u64,
            ))
        })
        .collect()
}

/// The ready count of each kind in [`ManagedKind::ALL`]'s order (0 where none is counted).
pub fn ready_by_kind(counts: &HashMap<(String, String), u64>) -> Vec<u64> {
    klutch_sim::ManagedKind::ALL
        .iter()
        .map(|k| {
            counts
                .get(&(k.plural().to_string(), "ready".to_string()))
                .copied()
                .unwrap_or(0)
        })
        .collect()
}

/// The resources klutch-health counts in every state, superseded included: per kind.
pub fn managed_totals(counts: &HashMap<(String, String), u64>) -> HashMap<String, u64> {
    let mut totals = HashMap::new();
    for ((kind, _), n) in counts {
        *totals.entry(kind.clone()).or_default() += n;
    }
    totals
}

/// The ready count per kind that klutch-health's verdict states: the `N of M ready` of each item's `output`
/// in the JSON of `/readyz/managed-resources` (the item is named by its kind).
pub fn verdict_ready(doc: &serde_json::Value) -> HashMap<String, u64> {
    doc["checks"]["managed-resources"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|item| {
            let kind = item["componentId"].as_str()?;
            let output = item["output"].as_str()?;
            Some((kind.to_string(), ready_of(output)?))
        })
        .collect()
}

/// `N` of the first `N of M ready` in a message (policy notes may stand before it).
fn ready_of(message: &str) -> Option<u64> {
    message.match_indices(" of ").find_map(|(at, _)| {
        let n = message[..at]
            .rsplit(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()?;
        let after = &message[at + 4..];
        let total = after.split(' ').next()?;
        (total.parse::<u64>().is_ok() && after[total.len()..].starts_with(" ready")).then_some(n)
    })
}

/// kube-state-metrics' series of the custom-resource-state config (`bench/ksm/managed-resources.yaml`).
pub const KSM_CONDITION: &str = "kube_customresource_managed_condition";

/// From a kube-state-metrics scrape: how many objects have a `Ready` series, and the value of the `Synced`
/// series of each object `wanted` names (kind, name). A scrape at 50 000 objects is 100 000 lines; only the
/// lines of wanted names are parsed in full, so that the scraper's own CPU stays small beside the tools'.
pub fn ksm_conditions(
    metrics: &str,
    wanted: &HashMap<(String, String), usize>,
) -> (u64, HashMap<usize, f64>) {
    let names: std::collections::HashSet<&str> = wanted.keys().map(|(_, n)| n.as_str()).collect();
    let mut ready = 0;
    let mut synced = HashMap::new();
    for line in metrics.lines() {
        let Some(rest) = line.strip_prefix(KSM_CONDITION) else {
            continue;
        };
        if !rest.starts_with('{') {
            continue;
        }
        if rest.contains("type=\"Ready\"") {
            ready += 1;
            continue;
        }
        if !raw_label(rest, "name").is_some_and(|n| names.contains(n)) {
            continue;
        }
        for s in samples(line, KSM_CONDITION) {
            let (Some("Synced"), Some(kind), Some(name)) = (
                s.label("type"),
                s.label("customresource_kind"),
                s.label("name"),
            ) else {
                continue;
            };
            if let Some(i) = wanted.get(&(kind.to_string(), name.to_string())) {
                synced.insert(*i, s.value);
            }
        }
    }
    (ready, synced)
}

/// A label's value as written (no unescaping: for a quick look before parsing the line).
fn raw_label<'a>(labels: &'a str, key: &str) -> Option<&'a str> {
    let mut from = 0;
    while let Some(at) = labels[from..].find(key) {
        let start = from + at;
        let before = labels[..start].chars().next_back();
        let after = &labels[start + key.len()..];
        if matches!(before, Some('{') | Some(',')) {
            if let Some(value) = after.strip_prefix("=\"") {
                return value.split('"').next();
            }
        }
        from = start + key.len();
    }
    None
}

/// The `p` quantile (0..=1) of `values` by nearest rank; `None` when empty.
pub fn percentile(values: &[f64], p: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = (p * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    const KLUTCH: &str = "# HELP klutch_health_managed_resources Managed resources by state.\n\
# TYPE klutch_health_managed_resources gauge\n\
klutch_health_managed_resources{check=\"managed-resources\",kind=\"serviceinstances\",state=\"ready\"} 19700\n\
klutch_health_managed_resources{check=\"managed-resources\",kind=\"serviceinstances\",state=\"failing\"} 100\n\
klutch_health_managed_resources{check=\"managed-resources\",kind=\"backups\",state=\"superseded\"} 8334\n\
klutch_health_managed_resources_total 3\n\
klutch_health_check_up{check=\"managed-resources\",item=\"backups\"} 1\n";

    #[test]
    fn klutch_health_counts_by_kind_and_state() {
        let counts = managed_counts(KLUTCH);
        assert_eq!(counts.len(), 3, "{counts:?}");
        assert_eq!(counts[&("serviceinstances".into(), "failing".into())], 100);
        let totals = managed_totals(&counts);
        assert_eq!(totals["serviceinstances"], 19800);
        assert_eq!(totals["backups"], 8334);
    }

    #[test]
    fn label_values_are_unescaped_and_other_metrics_ignored() {
        let text = "m{a=\"x\\\"y\",b=\"1\\\\2\",c=\"l\\nm\"} 1.5 1700000000\nm 2\nmm{a=\"z\"} 3\n";
        let all: Vec<Sample> = samples(text, "m").collect();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].label("a"), Some("x\"y"));
        assert_eq!(all[0].label("b"), Some("1\\2"));
        assert_eq!(all[0].label("c"), Some("l\nm"));
        assert_eq!(all[0].value, 1.5);
        assert_eq!(all[1].labels, vec![]);
        assert_eq!(all[1].value, 2.0);
        // Broken lines are skipped, never a panic.
        assert_eq!(
            samples("m{a=\"unterminated} 1\nm{a=} 2\nm{", "m").count(),
            0
        );
    }

    #[test]
    fn kube_state_metrics_series_per_object() {
        let text = "# HELP kube_customresource_managed_condition x\n\
kube_customresource_managed_condition{customresource_group=\"dataservices.anynines.com\",customresource_kind=\"ServiceInstance\",customresource_version=\"v1\",name=\"si-000001\",provider_config=\"postgresql-service-broker\",reason=\"Available\",type=\"Ready\"} 1\n\
kube_customresource_managed_condition{customresource_group=\"dataservices.anynines.com\",customresource_kind=\"ServiceInstance\",customresource_version=\"v1\",name=\"si-000001\",provider_config=\"postgresql-service-broker\",reason=\"ReconcileError\",type=\"Synced\"} 0\n\
kube_customresource_managed_condition{customresource_kind=\"Backup\",name=\"si-000001\",type=\"Synced\",reason=\"ReconcileSuccess\"} 1\n\
kube_customresource_managed_condition{customresource_kind=\"ServiceInstance\",name=\"si-000002\",type=\"Ready\",reason=\"Available\"} 1\n";
        let wanted = HashMap::from([(("ServiceInstance".to_string(), "si-000001".to_string()), 7)]);
        let (ready, synced) = ksm_conditions(text, &wanted);
        assert_eq!(ready, 2);
        assert_eq!(synced, HashMap::from([(7, 0.0)]));
        assert_eq!(
            raw_label("{customresource_name=\"x\",name=\"si-1\"}", "name"),
            Some("si-1")
        );
        assert_eq!(raw_label("{customresource_name=\"x\"}", "name"), None);
    }

    #[test]
    fn the_verdict_states_the_ready_count_of_each_kind() {
        let doc = serde_json::json!({"status": "warn", "checks": {"managed-resources": [
            {"componentId": "serviceinstances", "status": "warn",
             "output": "19700 of 19800 ready, 2 creating, 98 failing: si-000001 (Synced=False, ReconcileError: x)"},
            {"componentId": "backups", "status": "pass", "output": "4167 of 4167 ready (8333 superseded)"},
            {"componentId": "restores", "status": "fail", "output": "failing for 3s of 30s: 10 of 50 ready"},
            {"componentId": "servicebindings", "status": "pass", "output": "no servicebindings"}],
            "providers": [{"componentId": "provider-anynines", "status": "pass"}]}});
        let ready = verdict_ready(&doc);
        assert_eq!(ready.get("serviceinstances"), Some(&19700));
        assert_eq!(ready.get("backups"), Some(&4167));
        assert_eq!(ready.get("restores"), Some(&10));
        assert_eq!(ready.get("servicebindings"), None);
        assert_eq!(ready.len(), 3);
        assert_eq!(ready_of("3 of many ready"), None);
        assert_eq!(ready_of("one of 3 ready"), None);
    }

    #[test]
    fn percentiles_by_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), Some(50.0));
        assert_eq!(percentile(&v, 0.99), Some(99.0));
        assert_eq!(percentile(&v, 1.0), Some(100.0));
        assert_eq!(percentile(&[3.0], 0.99), Some(3.0));
        assert_eq!(percentile(&[], 0.5), None);
    }
}
