//! Prometheus metrics. Signals and the server count what they do; the engine sets the per-item gauges after
//! each evaluation. `/metrics` only encodes what is already there.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use jiff::Timestamp;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::http::routes;
use crate::verdict::report::{
    CrossplaneCounts, Endpoint, ItemName, OperatorKind, Report, StateCounts, Status,
};

/// A label value from outside (check names, upstream keys), escaped as the exposition formats require:
/// prometheus-client writes label values as they are, and one `"` in a provider's key would otherwise make
/// every scrape fail.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct Text(String);

impl From<&str> for Text {
    fn from(s: &str) -> Text {
        Text(s.to_string())
    }
}

impl EncodeLabelValue for Text {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        use std::fmt::Write;
        let mut rest = self.0.as_str();
        while let Some(i) = rest.find(['\\', '"', '\n']) {
            encoder.write_str(&rest[..i])?;
            encoder.write_str(match rest.as_bytes()[i] {
                b'\\' => "\\\\",
                b'"' => "\\\"",
                _ => "\\n",
            })?;
            rest = &rest[i + 1..];
        }
        encoder.write_str(rest)
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ItemLabels {
    check: Text,
    item: Text,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    check: Text,
    item: Text,
    status: &'static str,
}

/// Crossplane's one label: the kind, as Go's `GroupVersionKind.String()` writes it.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GvkLabels {
    gvk: String,
}

/// crossplane-runtime's managed-resource state gauges (`pkg/statemetrics`), with its names and help.
struct CrossplaneFamilies {
    exists: Family<GvkLabels, Gauge>,
    ready: Family<GvkLabels, Gauge>,
    synced: Family<GvkLabels, Gauge>,
}

impl CrossplaneFamilies {
    fn register(root: &mut Registry) -> CrossplaneFamilies {
        let families = CrossplaneFamilies {
            exists: Family::default(),
            ready: Family::default(),
            synced: Family::default(),
        };
        root.register(
            "crossplane_managed_resource_exists",
            "The number of managed resources that exist",
            families.exists.clone(),
        );
        root.register(
            "crossplane_managed_resource_ready",
            "The number of managed resources in Ready=True state",
            families.ready.clone(),
        );
        root.register(
            "crossplane_managed_resource_synced",
            "The number of managed resources in Synced=True state",
            families.synced.clone(),
        );
        families
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    check: Text,
    kind: Text,
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabels {
    endpoint: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    check: Text,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CheckLabels {
    check: Text,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EvaluationLabels {
    how: &'static str,
}

/// Why a watch listed again (or reconnected): the `reason` of `klutch_health_watch_restarts_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WatchRestart {
    /// Its LIST or WATCH failed (refused, broken, timed out): `failed`.
    Failed,
    /// It held more than `max_objects`; what it held is dropped and listed afresh: `max_objects`.
    MaxObjects,
    /// Its API server came back after an outage during which this watch received nothing: `silent`.
    Silent,
    /// Its WATCH was answered 429 or 5xx; retried from where it was, without a LIST: `throttled`.
    Throttled,
    /// A LIST page was larger than `max_body`; listed again in smaller pages: `too_large`.
    TooLarge,
}

impl WatchRestart {
    const ALL: [WatchRestart; 5] = [
        WatchRestart::Failed,
        WatchRestart::MaxObjects,
        WatchRestart::Silent,
        WatchRestart::Throttled,
        WatchRestart::TooLarge,
    ];

    fn label(self) -> &'static str {
        match self {
            WatchRestart::Failed => "failed",
            WatchRestart::MaxObjects => "max_objects",
            WatchRestart::Silent => "silent",
            WatchRestart::Throttled => "throttled",
            WatchRestart::TooLarge => "too_large",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RestartLabels {
    check: Text,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    path: &'static str,
    code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabels {
    version: &'static str,
}

pub struct Metrics {
    registry: Registry,
    check_up: Family<ItemLabels, Gauge>,
    check_status: Family<StatusLabels, Gauge>,
    last_transition: Family<ItemLabels, Gauge<f64, AtomicU64>>,
    root_cause: Family<ItemLabels, Gauge>,
    endpoint_up: Family<EndpointLabels, Gauge>,
    upstream_requests: Family<OutcomeLabels, Counter>,
    upstream_duration: Family<CheckLabels, Histogram>,
    http_requests: Family<HttpLabels, Counter>,
    /// The probes' own series, resolved once: a `Family` lookup hashes the labels under a lock, which a load
    /// balancer's every probe should not pay. They are exported from the start, at zero.
    probe_requests: Vec<(HttpLabels, Counter)>,
    watch_restarts: Family<RestartLabels, Counter>,
    /// `[full, patched]`: the engine's evaluations, resolved once (one per publish at most).
    evaluations: [Counter; 2],
    task_panics: Family<CheckLabels, Counter>,
    silenced_items: Family<EndpointLabels, Gauge>,
    maintenance: Gauge,
    reload_successful: Gauge,
    reload_success_time: Gauge<f64, AtomicU64>,
    /// Items that have series now (`CHECK/ITEM` → status, since and whether it is a root cause, as
    /// exported), so that unchanged items cost nothing and vanished items lose their series.
    items: Mutex<HashMap<ItemName, (Status, Timestamp, bool)>>,
    /// `cluster/NAME` of the clusters that have a `root_cause` series now, and whether it is 1.
    clusters: Mutex<HashMap<ItemName, bool>>,
    managed_resources: Family<KindLabels, Gauge>,
    /// Items whose counts are exported now, as exported (the same bookkeeping as `items`).
    counted: Mutex<HashMap<ItemName, Exported>>,
    crossplane: CrossplaneFamilies,
    /// The `gvk`s exported under Crossplane's names now, with their counts as exported.
    crossplane_exported: Mutex<HashMap<Arc<str>, CrossplaneCounts>>,
    /// Set once shutdown begins: `/readyz` answers 503 from then on, and its gauge says so.
    shutting_down: AtomicBool,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        // klutch-health's own families under its prefix; Crossplane's under Crossplane's own names.
        let mut root = Registry::default();
        let registry = root.sub_registry_with_prefix("klutch_health");
        let check_up = Family::<ItemLabels, Gauge>::default();
        registry.register(
            "check_up",
            "1 when the item passes or warns, 0 otherwise",
            check_up.clone(),
        );
        let check_status = Family::<StatusLabels, Gauge>::default();
        registry.register(
            "check_status",
            "The item's observed status: 1 for the current one of pass, warn, fail, unknown",
            check_status.clone(),
        );
        let last_transition = Family::<ItemLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "check_last_transition_timestamp_seconds",
            "When the item's observed status last changed, in seconds since the Unix epoch",
            last_transition.clone(),
        );
        let root_cause = Family::<ItemLabels, Gauge>::default();
        registry.register(
            "root_cause",
            "1 for each bad item (fail or unknown) nothing else explains, and for each cluster (check \"cluster\") whose API server explains items: what to fix first; 0 otherwise",
            root_cause.clone(),
        );
        let endpoint_up = Family::<EndpointLabels, Gauge>::default();
        registry.register(
            "endpoint_up",
            "1 when the endpoint passes, 0 when it fails",
            endpoint_up.clone(),
        );
        let upstream_requests = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "upstream_requests",
            "Polls of provider-anynines' health server, by outcome",
            upstream_requests.clone(),
        );
        let upstream_duration = Family::<CheckLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ])
        });
        registry.register_with_unit(
            "upstream_request_duration",
            "Time one poll of provider-anynines' health server took",
            prometheus_client::registry::Unit::Seconds,
            upstream_duration.clone(),
        );
        let http_requests = Family::<HttpLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests served, by route and status code",
            http_requests.clone(),
        );
        let watch_restarts = Family::<RestartLabels, Counter>::default();
        registry.register(
            "watch_restarts",
            "Kubernetes watches listed again or reconnected, per check and reason",
            watch_restarts.clone(),
        );
        let evaluations = Family::<EvaluationLabels, Counter>::default();
        registry.register(
            "evaluations",
            "Evaluations of the policy: full, or patched (only what passing items say changed)",
            evaluations.clone(),
        );
        let evaluations = ["full", "patched"]
            .map(|how| evaluations.get_or_create(&EvaluationLabels { how }).clone());
        let task_panics = Family::<CheckLabels, Counter>::default();
        registry.register(
            "check_task_panics",
            "Times a check's task died and was started again (a bug: its items were unknown meanwhile)",
            task_panics.clone(),
        );
        let silenced_items = Family::<EndpointLabels, Gauge>::default();
        registry.register(
            "silenced_items",
            "Items a [[silence]] keeps from failing the endpoint (they count as warn)",
            silenced_items.clone(),
        );
        let maintenance = Gauge::default();
        registry.register(
            "maintenance",
            "1 during the [maintenance] window (/readyz fails on purpose), 0 otherwise",
            maintenance.clone(),
        );
        let reload_successful = Gauge::default();
        reload_successful.set(1);
        registry.register(
            "config_last_reload_successful",
            "0 when the last configuration reload was refused (the previous configuration still runs), else 1",
            reload_successful.clone(),
        );
        let reload_success_time = Gauge::<f64, AtomicU64>::default();
        reload_success_time.set(Timestamp::now().as_millisecond() as f64 / 1000.0);
        registry.register(
            "config_last_reload_success_timestamp_seconds",
            "When the running configuration was loaded, in seconds since the Unix epoch",
            reload_success_time.clone(),
        );
        let managed_resources = Family::<KindLabels, Gauge>::default();
        registry.register(
            "managed_resources",
            "Managed resources of each kind a managed-resources check watches, by state (ready, creating, deleting, paused, failing, superseded)",
            managed_resources.clone(),
        );
        register_build_info(registry);
        let crossplane = CrossplaneFamilies::register(&mut root);
        Metrics {
            registry: root,
            crossplane,
            crossplane_exported: Mutex::default(),
            check_up,
            check_status,
            last_transition,
            root_cause,
            endpoint_up,
            upstream_requests,
            upstream_duration,
            probe_requests: probe_counters(&http_requests),
            http_requests,
            watch_restarts,
            evaluations,
            task_panics,
            silenced_items,
            maintenance,
            reload_successful,
            reload_success_time,
            items: Mutex::default(),
            managed_resources,
            counted: Mutex::default(),
            clusters: Mutex::default(),
            shutting_down: AtomicBool::new(false),
        }
    }

    /// Sets every per-item and per-endpoint gauge from a freshly evaluated report.
    pub(crate) fn observe_report(&self, report: &Report) {
        let mut exported = self.items.lock().unwrap_or_else(PoisonError::into_inner);
        let mut now_exported = HashMap::with_capacity(report.items.len());
        let mut roots: HashSet<&str> = report
            .causes
            .roots
            .iter()
            .map(|r| r.name.as_str())
            .collect();
        for item in &report.items {
            let root = roots.remove(item.name.as_str());
            let state = (item.status, item.since, root);
            // Only items whose status or transition time changed touch the series.
            if exported.remove(&item.name) != Some(state) {
                let labels = ItemLabels {
                    check: item.name.check().into(),
                    item: item.name.item().into(),
                };
                let up = matches!(item.status, Status::Pass | Status::Warn);
                self.check_up.get_or_create(&labels).set(i64::from(up));
                for s in Status::ALL {
                    self.check_status
                        .get_or_create(&status_labels(&labels, s))
                        .set(i64::from(s == item.status));
                }
                self.last_transition
                    .get_or_create(&labels)
                    .set(item.since.as_millisecond() as f64 / 1000.0);
                self.root_cause.get_or_create(&labels).set(i64::from(root));
            }
            now_exported.insert(item.name.clone(), state);
        }
        for gone in exported.keys() {
            let (check, item) = (gone.check(), gone.item());
            let labels = ItemLabels {
                check: check.into(),
                item: item.into(),
            };
            self.check_up.remove(&labels);
            self.last_transition.remove(&labels);
            self.root_cause.remove(&labels);
            for s in Status::ALL {
                self.check_status.remove(&status_labels(&labels, s));
            }
        }
        *exported = now_exported;
        drop(exported);
        self.set_counts(report);
        self.set_crossplane(report);
        // What is left of the roots are clusters.
        self.set_clusters(&report.causes.clusters, &roots);
        self.set_endpoints_up(|e| report.endpoint(e).passed());
        self.set_operating(report);
    }

    /// Only the object counts of `report`: what changes when nothing but what items say changed.
    pub(crate) fn observe_counts(&self, report: &Report) {
        self.set_counts(report);
        self.set_crossplane(report);
    }

    /// `klutch_health_managed_resources{check,kind,state}` from the items that carry counts; an item gone (a
    /// kind or check no longer configured) loses its series.
    fn set_counts(&self, report: &Report) {
        // An item's gauges are looked up once, when it first carries counts, and set directly after.
        let mut exported = self.counted.lock().unwrap_or_else(PoisonError::into_inner);
        let labels = |name: &ItemName, state: &'static str| KindLabels {
            check: name.check().into(),
            kind: name.item().into(),
            state,
        };
        // Updated in place, and only where counts changed: this runs at every change of a watched object.
        let mut seen = 0;
        for item in &report.items {
            let Some(counts) = &item.counts else { continue };
            seen += 1;
            let known = exported.get_mut(&item.name).filter(|e| {
                e.gauges.len() == counts.len()
                    && e.gauges
                        .iter()
                        .zip(counts.iter())
                        .all(|((a, _), (b, _))| a == b)
            });
            let exported_now = match known {
                Some(e) if e.counts == *counts => continue,
                Some(e) => e,
                None => {
                    // A state list of another shape (none yet): its series go, the new ones come.
                    if let Some(old) = exported.remove(&item.name) {
                        for (state, _) in old.gauges {
                            self.managed_resources.remove(&labels(&item.name, state));
                        }
                    }
                    let gauges = counts
                        .iter()
                        .map(|&(state, _)| {
                            let gauge = self
                                .managed_resources
                                .get_or_create(&labels(&item.name, state))
                                .clone();
                            (state, gauge)
                        })
                        .collect();
                    exported
                        .entry(item.name.clone())
                        .insert_entry(Exported {
                            counts: counts.clone(),
                            gauges,
                        })
                        .into_mut()
                }
            };
            for ((_, gauge), &(_, n)) in exported_now.gauges.iter().zip(counts.iter()) {
                gauge.set(i64::try_from(n).unwrap_or(i64::MAX));
            }
            exported_now.counts = counts.clone();
        }
        if exported.len() > seen {
            let now: std::collections::HashSet<&ItemName> = report
                .items
                .iter()
                .filter(|i| i.counts.is_some())
                .map(|i| &i.name)
                .collect();
            exported.retain(|name, e| {
                let keep = now.contains(name);
                if !keep {
                    for &(state, _) in e.counts.iter() {
                        self.managed_resources.remove(&labels(name, state));
                    }
                }
                keep
            });
        }
    }

    /// `crossplane_managed_resource_{exists,ready,synced}{gvk}` from the items that carry Crossplane's counts;
    /// a kind that two checks watch is exported once, as the first in report order counts it; a kind no
    /// longer watched loses its series.
    fn set_crossplane(&self, report: &Report) {
        let mut exported = self
            .crossplane_exported
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // In place, as the counts above; the first item of a kind in report order is the one exported.
        let mut seen: Vec<&Arc<str>> = Vec::new();
        for counts in report.items.iter().filter_map(|i| i.crossplane.as_ref()) {
            if seen.contains(&&counts.gvk) {
                continue;
            }
            seen.push(&counts.gvk);
            if exported.get(&counts.gvk) == Some(counts) {
                continue;
            }
            let labels = GvkLabels {
                gvk: counts.gvk.to_string(),
            };
            let families = [
                (&self.crossplane.exists, counts.exists),
                (&self.crossplane.ready, counts.ready),
                (&self.crossplane.synced, counts.synced),
            ];
            for (family, n) in families {
                family
                    .get_or_create(&labels)
                    .set(i64::try_from(n).unwrap_or(i64::MAX));
            }
            exported.insert(counts.gvk.clone(), counts.clone());
        }
        if exported.len() > seen.len() {
            exported.retain(|gvk, _| {
                let keep = seen.contains(&gvk);
                if !keep {
                    let labels = GvkLabels {
                        gvk: gvk.to_string(),
                    };
                    for family in [
                        &self.crossplane.exists,
                        &self.crossplane.ready,
                        &self.crossplane.synced,
                    ] {
                        family.remove(&labels);
                    }
                }
                keep
            });
        }
    }

    /// The `root_cause` series of each cluster the checks watch: 1 while its API server explains items,
    /// else 0; a cluster no check watches any more loses its series.
    fn set_clusters(&self, clusters: &[ItemName], roots: &HashSet<&str>) {
        let mut exported = self.clusters.lock().unwrap_or_else(PoisonError::into_inner);
        let mut now_exported = HashMap::with_capacity(clusters.len());
        for c in clusters {
            let root = roots.contains(c.as_str());
            if exported.remove(c) != Some(root) {
                self.root_cause
                    .get_or_create(&ItemLabels {
                        check: c.check().into(),
                        item: c.item().into(),
                    })
                    .set(i64::from(root));
            }
            now_exported.insert(c.clone(), root);
        }
        for gone in exported.keys() {
            self.root_cause.remove(&ItemLabels {
                check: gone.check().into(),
                item: gone.item().into(),
            });
        }
        *exported = now_exported;
    }

    /// Each endpoint's gauge says what the endpoint answers: `/readyz` fails from the start of shutdown;
    /// `/healthz` keeps its verdict, since a process that is leaving says nothing about the control plane
    /// (and an alert on it would fire on every rollout).
    fn set_endpoints_up(&self, passed: impl Fn(Endpoint) -> bool) {
        let leaving = self.shutting_down.load(Ordering::SeqCst);
        for e in Endpoint::ALL {
            let up = passed(e) && !(leaving && e == Endpoint::Readyz);
            self.endpoint_up
                .get_or_create(&EndpointLabels {
                    endpoint: e.as_str(),
                })
                .set(i64::from(up));
        }
    }

    /// Silenced items per endpoint, and whether a maintenance window is on.
    fn set_operating(&self, report: &Report) {
        for e in Endpoint::ALL {
            let silenced = report
                .endpoint(e)
                .items
                .iter()
                .filter(|c| {
                    c.notes
                        .operator
                        .as_ref()
                        .is_some_and(|o| o.kind == OperatorKind::Silenced)
                })
                .count();
            self.silenced_items
                .get_or_create(&EndpointLabels {
                    endpoint: e.as_str(),
                })
                .set(silenced as i64);
        }
        let maintenance = report
            .operating
            .maintenance
            .as_ref()
            .is_some_and(|m| m.active);
        self.maintenance.set(i64::from(maintenance));
    }

    /// Records a configuration reload: refused (`None`) or applied at the given time.
    pub(crate) fn config_reload(&self, applied: Option<Timestamp>) {
        self.reload_successful.set(i64::from(applied.is_some()));
        if let Some(at) = applied {
            self.reload_success_time
                .set(at.as_millisecond() as f64 / 1000.0);
        }
    }

    /// Shutdown has begun: `klutch_health_endpoint_up{endpoint="readyz"}` is 0 from now on.
    pub(crate) fn shutting_down(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
        let gauge = |e: Endpoint| {
            self.endpoint_up
                .get_or_create(&EndpointLabels {
                    endpoint: e.as_str(),
                })
                .get()
                == 1
        };
        self.set_endpoints_up(gauge);
    }

    /// Counts one poll of an upstream health server.
    pub(crate) fn upstream(&self, check: &str, outcome: &'static str, took: Duration) {
        self.upstream_requests
            .get_or_create(&OutcomeLabels {
                check: check.into(),
                outcome,
            })
            .inc();
        self.upstream_duration
            .get_or_create(&CheckLabels {
                check: check.into(),
            })
            .observe(took.as_secs_f64());
    }

    /// Exports `check`'s poll counters at 0 for every outcome, before its first poll.
    pub(crate) fn upstream_from_zero(&self, check: &str, outcomes: &[&'static str]) {
        for &outcome in outcomes {
            let _ = self.upstream_requests.get_or_create(&OutcomeLabels {
                check: check.into(),
                outcome,
            });
        }
    }

    /// Exports a Kubernetes check's watch restarts at 0, before its first restart: a counter that appears
    /// with its first increment hides that increment from `increase()`.
    pub(crate) fn watch_restarts_from_zero(&self, check: &str) {
        for reason in WatchRestart::ALL {
            let _ = self.watch_restarts.get_or_create(&RestartLabels {
                check: check.into(),
                reason: reason.label(),
            });
        }
    }

    /// One evaluation: in full, or patched.
    pub(crate) fn evaluated(&self, full: bool) {
        self.evaluations[usize::from(!full)].inc();
    }

    pub(crate) fn watch_restart(&self, check: &str, reason: WatchRestart) {
        self.watch_restarts
            .get_or_create(&RestartLabels {
                check: check.into(),
                reason: reason.label(),
            })
            .inc();
    }

    /// Exports a check's task panics at 0, so that `increase()` sees the first one.
    pub(crate) fn task_panics_from_zero(&self, check: &str) {
        let _ = self.task_panics.get_or_create(&CheckLabels {
            check: check.into(),
        });
    }

    pub(crate) fn task_panic(&self, check: &str) {
        self.task_panics
            .get_or_create(&CheckLabels {
                check: check.into(),
            })
            .inc();
    }

    /// Counts one answered request; `path` is the route, never the raw path, to keep label values bounded.
    pub(crate) fn http_request(&self, path: &'static str, code: u16) {
        let labels = HttpLabels { path, code };
        match self.probe_requests.iter().find(|(l, _)| *l == labels) {
            Some((_, counter)) => counter.inc(),
            None => self.http_requests.get_or_create(&labels).inc(),
        };
    }

    /// The OpenMetrics text exposition (`application/openmetrics-text; version=1.0.0`).
    pub(crate) fn encode_openmetrics(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
        crossplane_help(out)
    }

    /// The Prometheus text exposition (`text/plain; version=0.0.4`), for scrapers and tools such as
    /// `promtool check metrics` that do not read OpenMetrics.
    pub(crate) fn encode_prometheus(&self) -> String {
        to_prometheus_text(&self.encode_openmetrics())
    }
}

/// OpenMetrics text as prometheus-client writes it, in the Prometheus text format: a counter's HELP and TYPE
/// name its `_total` samples, and there are no `# UNIT` or `# EOF` lines.
fn to_prometheus_text(openmetrics: &str) -> String {
    let counters: HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        out.push_str(renamed.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

fn status_labels(item: &ItemLabels, status: Status) -> StatusLabels {
    StatusLabels {
        check: item.check.clone(),
        item: item.item.clone(),
        status: status.as_str(),
    }
}

/// Crossplane's help texts as crossplane-runtime writes them: prometheus-client ends every help with a period,
/// Go's client adds none.
fn crossplane_help(exposition: String) -> String {
    if !exposition.contains("# HELP crossplane_") {
        return exposition;
    }
    let mut out = String::with_capacity(exposition.len());
    for line in exposition.split_inclusive('\n') {
        match line.strip_suffix(".\n") {
            Some(help) if line.starts_with("# HELP crossplane_") => {
                out.push_str(help);
                out.push('\n');
            }
            _ => out.push_str(line),
        }
    }
    out
}

/// `klutch_health_build_info{version}`: always 1.
fn register_build_info(registry: &mut Registry) {
    let build_info = Family::<VersionLabels, Gauge>::default();
    build_info
        .get_or_create(&VersionLabels {
            version: env!("CARGO_PKG_VERSION"),
        })
        .set(1);
    registry.register(
        "build_info",
        "Always 1; the version label names the build",
        build_info,
    );
}

/// One item's exported counts, with the gauge of each of its states.
struct Exported {
    counts: StateCounts,
    gauges: Vec<(&'static str, Gauge)>,
}

/// The request counters of the probe paths, resolved once so that a probe does not look its labels up.
fn probe_counters(http_requests: &Family<HttpLabels, Counter>) -> Vec<(HttpLabels, Counter)> {
    routes::probes()
        .map(|(path, code)| {
            let labels = HttpLabels { path, code };
            let counter = http_requests.get_or_create(&labels).clone();
            (labels, counter)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each kind's counts are exported as they are, changed when they change, and gone with their item (a
    /// kind or check no longer configured).
    #[test]
    fn managed_resource_counts_follow_the_report() {
        let metrics = Metrics::new();
        let with_counts = |ready: u64, failing: u64| {
            let mut report =
                crate::verdict::history::tests::report(0, &[("serviceinstances", Status::Warn)]);
            report.items[0].counts = Some(StateCounts::from(vec![
                ("ready", ready),
                ("failing", failing),
            ]));
            report
        };
        let sample = |state: &str| {
            let text = metrics.encode_prometheus();
            let series = format!(
                "klutch_health_managed_resources{{check=\"pcs\",kind=\"serviceinstances\",state=\"{state}\"}} "
            );
            text.lines()
                .find_map(|l| l.strip_prefix(&series).map(str::to_string))
        };
        metrics.observe_report(&with_counts(412, 3));
        assert_eq!(
            (sample("ready"), sample("failing")),
            (Some("412".into()), Some("3".into()))
        );
        metrics.observe_report(&with_counts(415, 0));
        assert_eq!(
            (sample("ready"), sample("failing")),
            (Some("415".into()), Some("0".into()))
        );
        metrics.observe_report(&crate::verdict::history::tests::report(0, &[]));
        assert_eq!((sample("ready"), sample("failing")), (None, None));
    }

    /// Crossplane's gauges by `gvk`, as crossplane-runtime names, helps and labels them: set from the items
    /// that carry Crossplane's counts, one series per kind however many checks hold it, gone with the kind.
    #[test]
    fn crossplane_managed_resource_gauges_follow_the_report() {
        let metrics = Metrics::new();
        const GVK: &str = "dataservices.anynines.com/v1, Kind=ServiceInstance";
        let with_counts = |exists: u64, ready: u64, synced: u64| {
            let mut report = crate::verdict::history::tests::report(
                0,
                &[("serviceinstances", Status::Warn), ("again", Status::Pass)],
            );
            for (i, item) in report.items.iter_mut().enumerate() {
                item.crossplane = Some(CrossplaneCounts {
                    gvk: GVK.into(),
                    // The second holder of the same kind is not exported.
                    exists: exists + i as u64 * 1000,
                    ready,
                    synced,
                });
            }
            report
        };
        let sample = |name: &str| {
            let text = metrics.encode_prometheus();
            let series = format!("crossplane_managed_resource_{name}{{gvk=\"{GVK}\"}} ");
            let found: Vec<String> = text
                .lines()
                .filter_map(|l| l.strip_prefix(&series).map(str::to_string))
                .collect();
            assert!(found.len() <= 1, "{text}");
            found.into_iter().next()
        };
        metrics.observe_report(&with_counts(415, 413, 412));
        assert_eq!(
            (sample("exists"), sample("ready"), sample("synced")),
            (Some("415".into()), Some("413".into()), Some("412".into()))
        );
        let text = metrics.encode_prometheus();
        for (name, help) in [
            ("exists", "The number of managed resources that exist"),
            (
                "ready",
                "The number of managed resources in Ready=True state",
            ),
            (
                "synced",
                "The number of managed resources in Synced=True state",
            ),
        ] {
            let family = format!("crossplane_managed_resource_{name}");
            assert!(
                text.contains(&format!("# HELP {family} {help}\n# TYPE {family} gauge\n")),
                "{text}"
            );
        }
        metrics.observe_report(&with_counts(3, 1, 0));
        assert_eq!(
            (sample("exists"), sample("ready"), sample("synced")),
            (Some("3".into()), Some("1".into()), Some("0".into()))
        );
        metrics.observe_report(&crate::verdict::history::tests::report(0, &[]));
        assert_eq!(
            (sample("exists"), sample("ready"), sample("synced")),
            (None, None, None)
        );
    }
}
