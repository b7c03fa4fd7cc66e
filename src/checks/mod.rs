//! The check types. A check type is one module of this folder that implements [`CheckType`] for its
//! settings struct (the keys of its `[[check]]` table) plus one line in [`TYPES`]: its settings, its
//! validation, the items it shows before its first observation, and its signal — each watch it follows
//! declared once as a `WatchSpec`, from which both the watch's `Api` and the RBAC row are built — all live
//! in that module. How they relate to each other's items is `verdict::links`'s; what runs them (a check's
//! start, following watches, a check's own tally, the running set kept across reloads) is `machinery`.

pub mod app_cluster_bindings;
pub mod backend_status;
pub mod broker;
pub mod cluster_bindings;
pub mod deployments;
pub(crate) mod machinery;
pub mod managed_resources;
pub mod packages;
pub mod pods;
pub mod provider_configs;

use std::any::Any;
use std::fmt::Debug;
use std::sync::Arc;

use kube::api::DynamicObject;
use serde::de::DeserializeOwned;
use serde::Serialize;

pub use crate::kubernetes::watch::WatchTarget;
pub(crate) use crate::kubernetes::watch::{Tally, WatchSpec, WatchState};
use crate::values::KeyError;
pub(crate) use machinery::running::Running;
pub use machinery::Run;
pub(crate) use machinery::{CheckRef, JudgedTally};

/// Makes `$t` a Kubernetes resource of a kind named at run time (an `ApiResource`), for a check's own
/// reduced object type that keeps only what it reads and its metadata in a field `meta`.
macro_rules! dynamic_resource {
    ($t:ty) => {
        impl kube::Resource for $t {
            type DynamicType = kube::api::ApiResource;
            type Scope = kube::core::DynamicResourceScope;

            fn kind(dt: &kube::api::ApiResource) -> std::borrow::Cow<'_, str> {
                dt.kind.as_str().into()
            }
            fn group(dt: &kube::api::ApiResource) -> std::borrow::Cow<'_, str> {
                dt.group.as_str().into()
            }
            fn version(dt: &kube::api::ApiResource) -> std::borrow::Cow<'_, str> {
                dt.version.as_str().into()
            }
            fn api_version(dt: &kube::api::ApiResource) -> std::borrow::Cow<'_, str> {
                dt.api_version.as_str().into()
            }
            fn plural(dt: &kube::api::ApiResource) -> std::borrow::Cow<'_, str> {
                dt.plural.as_str().into()
            }
            fn meta(&self) -> &kube::api::ObjectMeta {
                &self.meta
            }
            fn meta_mut(&mut self) -> &mut kube::api::ObjectMeta {
                &mut self.meta
            }
        }
    };
}
pub(crate) use dynamic_resource;

/// Crossplane and provider-anynines objects are judged by their status alone, its strings bounded (a
/// condition's message may carry whatever a tenant wrote).
pub(crate) fn keep_status(obj: &mut DynamicObject) {
    let status = obj.data.get_mut("status").map(serde_json::Value::take);
    obj.data = serde_json::json!({ "status": status });
    crate::human::bound_strings(&mut obj.data);
}

/// Every check type, by the name written in `type = "…"`.
pub const TYPES: &[Registration] = &[
    Registration::of::<backend_status::BackendStatus>(),
    Registration::of::<packages::CrossplanePackage>(),
    Registration::of::<provider_configs::ProviderConfig>(),
    Registration::of::<deployments::Deployment>(),
    Registration::of::<pods::Pods>(),
    Registration::of::<cluster_bindings::ClusterBinding>(),
    Registration::of::<app_cluster_bindings::AppClusterBinding>(),
    Registration::of::<managed_resources::ManagedResources>(),
    Registration::of::<broker::Broker>(),
];

/// The settings of one check type, read from its `[[check]]` table (without `name`, `type`, `require`,
/// `cluster`, which every type shares).
pub trait CheckType: Serialize + DeserializeOwned + Debug + Send + Sync + 'static {
    /// The name in `type = "…"`.
    const NAME: &'static str;
    /// Other names accepted for `type`.
    const ALIASES: &'static [&'static str] = &[];

    /// What serde cannot check, naming the key: `interval: must be more than 0s`.
    /// `cluster` is the check's `cluster` key.
    fn validate(&self, _cluster: Option<&str>) -> Result<(), KeyError> {
        Ok(())
    }
    /// Items shown as `unknown` before the first observation (none: the single `watch` item).
    fn placeholders(&self) -> Vec<String> {
        Vec::new()
    }
    /// The check's signal: each watch it follows, declared once through `Run::follow` (or
    /// `Run::follow_part` for a check of several watches), or a poller through `Run::poll`. The registry
    /// calls it to learn the watches (what RBAC must grant; nothing starts then) and at each start.
    fn start(&self, run: &mut Run<'_>);
}

/// One entry of [`TYPES`].
pub struct Registration {
    pub name: &'static str,
    pub aliases: &'static [&'static str],
    read: fn(&figment::value::Value) -> Result<Arc<dyn Settings>, KeyError>,
}

impl Registration {
    pub const fn of<T: CheckType>() -> Registration {
        Registration {
            name: T::NAME,
            aliases: T::ALIASES,
            read: read::<T>,
        }
    }

    /// The registration of `type = "name"`.
    pub fn find(name: &str) -> Option<&'static Registration> {
        find_in(TYPES, name)
    }

    /// Reads a check's own keys; errors name the key (`timeout: invalid duration "abc" …`).
    pub fn read(&self, table: &figment::value::Value) -> Result<Arc<dyn Settings>, KeyError> {
        (self.read)(table)
    }
}

fn find_in(types: &'static [Registration], name: &str) -> Option<&'static Registration> {
    types
        .iter()
        .find(|t| t.name == name || t.aliases.contains(&name))
}

/// `backend-status, crossplane-provider, …`: for messages.
pub fn type_names() -> String {
    TYPES.iter().map(|t| t.name).collect::<Vec<_>>().join(", ")
}

fn read<T: CheckType>(table: &figment::value::Value) -> Result<Arc<dyn Settings>, KeyError> {
    let settings: T = crate::values::deserialize(table)?;
    Ok(Arc::new(settings))
}

/// A check type's settings behind one type: what the rest of the service uses.
pub trait Settings: Debug + Send + Sync + 'static {
    fn type_name(&self) -> &'static str;
    fn validate(&self, cluster: Option<&str>) -> Result<(), KeyError>;
    /// What the check reads from its cluster, from its watches' declarations: exactly what its RBAC must
    /// grant. Empty: no cluster at all.
    fn targets(&self) -> Vec<WatchTarget>;
    fn placeholders(&self) -> Vec<String>;
    fn start(&self, run: &mut Run<'_>);
    /// The settings with their defaults, for `--check-config`.
    fn to_json(&self) -> serde_json::Value;
    fn as_any(&self) -> &dyn Any;
}

impl<T: CheckType> Settings for T {
    fn type_name(&self) -> &'static str {
        T::NAME
    }
    fn validate(&self, cluster: Option<&str>) -> Result<(), KeyError> {
        CheckType::validate(self, cluster)
    }
    fn targets(&self) -> Vec<WatchTarget> {
        let mut rows = Vec::new();
        CheckType::start(self, &mut Run::declaring(&mut rows));
        rows.sort();
        rows.dedup();
        rows
    }
    fn placeholders(&self) -> Vec<String> {
        CheckType::placeholders(self)
    }
    fn start(&self, run: &mut Run<'_>) {
        CheckType::start(self, run)
    }
    fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

impl dyn Settings {
    /// The settings as their own type, if they are of type `T`.
    pub fn downcast<T: CheckType>(&self) -> Option<&T> {
        self.as_any().downcast_ref()
    }
}

/// What the check types' unit tests share: the real object shapes in `sim/fixtures/` and a hand-set clock.
#[cfg(test)]
pub(crate) mod testing {
    use std::sync::Arc;

    use jiff::Timestamp;
    use serde_json::Value;

    use crate::signals::Observation;

    pub(crate) fn fixture(name: &str) -> Value {
        let path = format!("{}/sim/fixtures/{name}.json", env!("CARGO_MANIFEST_DIR"));
        serde_json::from_str(&std::fs::read_to_string(&path).expect("fixture exists"))
            .expect("fixture is JSON")
    }

    pub(crate) fn object<T: serde::de::DeserializeOwned>(v: Value) -> Arc<T> {
        Arc::new(serde_json::from_value(v).expect("fixture has the resource's shape"))
    }

    pub(crate) fn at(s: &str) -> Timestamp {
        s.parse().expect("valid time")
    }

    /// The moment the wall clock shows `s`, on hand-set clocks that never step.
    pub(crate) fn m(s: &str) -> crate::clock::Moment {
        crate::clock::Moment::from_wall(at(s))
    }

    pub(crate) fn only(items: Vec<Observation>) -> Observation {
        assert_eq!(items.len(), 1, "{items:?}");
        items.into_iter().next().expect("one item")
    }

    /// A fake API server: `answer(path, watching)` gives each request's status and body, `None` for a watch
    /// that stays open and silent. It lists in pages only: a streaming list is refused as a server with the
    /// `WatchList` feature gate off refuses it.
    pub(crate) fn fake_api(
        answer: impl Fn(&str, bool) -> Option<(u16, String)> + Clone + Send + Sync + 'static,
    ) -> kube::Client {
        let service = tower::service_fn(move |req: http::Request<kube::client::Body>| {
            let answer = answer.clone();
            async move {
                let query = req.uri().query().unwrap_or_default();
                let watching = query.contains("watch=true");
                let refused = query
                    .contains("sendInitialEvents=true")
                    .then(|| (422, crate::kubernetes::lists::WATCH_LIST_OFF.to_string()));
                let (code, body) = match refused.or_else(|| answer(req.uri().path(), watching)) {
                    Some(answered) => answered,
                    None => std::future::pending().await,
                };
                let mut r =
                    http::Response::new(http_body_util::Full::new(bytes::Bytes::from(body)));
                *r.status_mut() = http::StatusCode::from_u16(code).expect("a status");
                Ok::<_, std::convert::Infallible>(r)
            }
        });
        kube::Client::new(service, "default")
    }

    /// Starts `check` of type `settings` against `client`, as a reload starts an added check.
    pub(crate) fn started(
        settings: &dyn super::Settings,
        check: &str,
        client: kube::Client,
    ) -> (
        crate::signals::Sink,
        Arc<crate::metrics::Metrics>,
        crate::signals::Tasks,
    ) {
        let (sink, metrics, mut tasks) = (
            crate::signals::Sink::default(),
            Arc::new(crate::metrics::Metrics::new()),
            crate::signals::Tasks::default(),
        );
        settings.start(&mut super::Run::starting(
            check,
            Vec::new(),
            super::machinery::Starting {
                sink: &sink,
                metrics: &metrics,
                tasks: &mut tasks,
                // Kept for the test's life: the check's private watches live as long as its memory.
                stash: Box::leak(Box::new(super::machinery::Stash::default())),
                kube: Some(super::machinery::Kube {
                    client,
                    cluster: None,
                    stale_after: std::time::Duration::from_secs(60),
                    watches: &mut crate::kubernetes::watch::Watches::default(),
                }),
            },
        ));
        (sink, metrics, tasks)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::clock::Moment;
    use crate::metrics::Metrics;
    use crate::signals::{Observation, Sink, Tasks};
    use crate::verdict::report::Status;

    #[derive(Debug, Serialize, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Renamed {
        size: u32,
    }

    impl CheckType for Renamed {
        const NAME: &'static str = "renamed";
        const ALIASES: &'static [&'static str] = &["old-name"];
        fn start(&self, _run: &mut Run<'_>) {}
    }

    /// A check of two watches, as `managed-resources` will be: one part per watch.
    #[derive(Debug, Serialize, serde::Deserialize)]
    struct TwoKinds {}

    impl CheckType for TwoKinds {
        const NAME: &'static str = "two-kinds";
        fn start(&self, run: &mut Run<'_>) {
            use k8s_openapi::api::{apps::v1::Deployment, core::v1::Pod};
            fn count<K>(
                part: &'static str,
            ) -> impl FnMut(&[Arc<K>], &WatchState, Moment) -> Vec<Observation> + Clone
            {
                move |objects, _, now| {
                    vec![Observation::new(
                        part,
                        Status::Pass,
                        format!("{} listed", objects.len()),
                        now.wall,
                    )]
                }
            }
            run.follow_part(
                "pods",
                WatchSpec::<Pod>::namespaced("ns-a", |_| {}),
                count::<Pod>("pods"),
            );
            run.follow_part(
                "deployments",
                WatchSpec::<Deployment>::all_namespaces((), |_| {}).labels("app=x"),
                count::<Deployment>("deployments"),
            );
        }
    }

    /// A fake API server: pods list (one pod, then a watch that stays open); deployments are forbidden,
    /// or list one Deployment the same way when `deployments` says so.
    fn fake_api(deployments: bool) -> kube::Client {
        testing::fake_api(move |path, watching| {
            let listed = path.ends_with("/pods") || (deployments && path.ends_with("/deployments"));
            if watching && listed {
                return None;
            }
            Some(if path.ends_with("/pods") {
                (
                    200,
                    r#"{"kind":"PodList","apiVersion":"v1","metadata":{"resourceVersion":"5"},"items":[{"metadata":{"name":"p","namespace":"ns-a","uid":"u"}}]}"#.into(),
                )
            } else if listed {
                (
                    200,
                    r#"{"kind":"DeploymentList","apiVersion":"apps/v1","metadata":{"resourceVersion":"6"},"items":[{"metadata":{"name":"d","namespace":"ns-b","uid":"v"}}]}"#.into(),
                )
            } else {
                (
                    403,
                    r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"deployments.apps is forbidden","reason":"Forbidden","code":403}"#.into(),
                )
            })
        })
    }

    /// Starts `check` of type `settings` against [`fake_api`] (deployments forbidden), as a reload starts
    /// an added check.
    fn started(settings: &dyn Settings, check: &str) -> (Sink, Arc<Metrics>, Tasks) {
        testing::started(settings, check, fake_api(false))
    }

    #[test]
    fn each_declared_watch_is_one_rbac_row() {
        let rows = Settings::targets(&TwoKinds {});
        let row = |group: &str, resource: &str, namespace: Option<&str>| WatchTarget {
            group: group.into(),
            version: "v1".into(),
            resource: resource.into(),
            namespace: namespace.map(str::to_string),
            namespaced: true,
        };
        assert_eq!(
            rows,
            [
                row("", "pods", Some("ns-a")),
                row("apps", "deployments", None)
            ]
        );
        assert!(Settings::targets(&Renamed { size: 1 }).is_empty());
    }

    /// Each watch's state lands on its own item: the synced part judges, the forbidden one waits with the
    /// reason, and there is no shared `CHECK/watch`.
    #[tokio::test(start_paused = true)]
    async fn each_part_of_a_check_of_several_watches_shows_its_own_watch_state() {
        let (sink, _, tasks) = started(&TwoKinds {}, "c");
        tokio::time::sleep(Duration::from_secs(5)).await;
        let snapshot = sink.snapshot();
        let items = &snapshot.checks["c"];
        let names: Vec<&str> = items.iter().map(|o| o.item.as_str()).collect();
        assert_eq!(names, ["deployments", "pods"]);
        assert_eq!(
            (items[1].status, items[1].message.as_str()),
            (Status::Pass, "1 listed")
        );
        assert_eq!(items[0].status, Status::Unknown);
        assert!(
            items[0].message.starts_with(
                "waiting for initial sync of deployments.apps with labels app=x on cluster default: list on deployments.apps forbidden"
            ),
            "{}",
            items[0].message
        );
        assert_eq!(
            snapshot.unsynced.iter().collect::<Vec<_>>(),
            ["c/deployments"],
            "the part that waits, and only it"
        );
        tasks.stop();
    }

    /// A check whose one judge reads two watches together, as `app-cluster-binding` does.
    #[derive(Debug, Serialize, serde::Deserialize)]
    struct Joined {}

    impl CheckType for Joined {
        const NAME: &'static str = "joined";
        fn start(&self, run: &mut Run<'_>) {
            use k8s_openapi::api::{apps::v1::Deployment, core::v1::Pod};
            run.follow(
                (
                    WatchSpec::<Pod>::namespaced("ns-a", |_| {}),
                    WatchSpec::<Deployment>::all_namespaces((), |_| {}).labels("app=x"),
                ),
                |(pods, deployments): &(Vec<Arc<Pod>>, Vec<Arc<Deployment>>), _, now| {
                    vec![Observation::new(
                        "both",
                        Status::Pass,
                        format!("{} pods, {} deployments", pods.len(), deployments.len()),
                        now.wall,
                    )]
                },
            );
        }
    }

    #[test]
    fn watches_read_together_are_one_rbac_row_each() {
        let rows = Settings::targets(&Joined {});
        assert_eq!(
            rows.iter()
                .map(|r| (r.resource.as_str(), r.namespace.as_deref()))
                .collect::<Vec<_>>(),
            [("pods", Some("ns-a")), ("deployments", None)]
        );
    }

    /// One judge reads both watches once both have listed; until then the check waits, naming the watch
    /// that has not listed and why.
    #[tokio::test(start_paused = true)]
    async fn a_judge_of_two_watches_waits_for_both_and_reads_both() {
        let (sink, _, tasks) = testing::started(&Joined {}, "j", fake_api(true));
        tokio::time::sleep(Duration::from_secs(5)).await;
        let snapshot = sink.snapshot();
        let items = &snapshot.checks["j"];
        assert_eq!(
            (
                items[0].item.as_str(),
                items[0].status,
                items[0].message.as_str()
            ),
            ("both", Status::Pass, "1 pods, 1 deployments")
        );
        assert!(!snapshot.unsynced.contains("j"));
        tasks.stop();

        let (sink, _, tasks) = started(&Joined {}, "j");
        tokio::time::sleep(Duration::from_secs(5)).await;
        let snapshot = sink.snapshot();
        let items = &snapshot.checks["j"];
        assert_eq!(
            (items[0].item.as_str(), items[0].status),
            ("_watch", Status::Unknown)
        );
        assert!(
            items[0].message.starts_with(
                "waiting for initial sync of deployments.apps with labels app=x on cluster default: list on deployments.apps forbidden"
            ),
            "only the watch that has not listed is named: {}",
            items[0].message
        );
        assert!(snapshot.unsynced.contains("j"));
        tasks.stop();
    }

    /// A check that only watches pods, started as a reload starts an added check.
    #[derive(Debug, Serialize, serde::Deserialize)]
    struct PodsOnly {}

    impl CheckType for PodsOnly {
        const NAME: &'static str = "pods-only";
        fn start(&self, run: &mut Run<'_>) {
            run.follow(
                WatchSpec::<k8s_openapi::api::core::v1::Pod>::namespaced("ns-a", |_| {}),
                |_, _, _| Vec::new(),
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_watching_check_exports_its_watch_restarts_at_zero_from_its_start() {
        let (_sink, metrics, tasks) = started(&PodsOnly {}, "added");
        tokio::time::sleep(Duration::from_secs(5)).await;
        let text = metrics.encode_prometheus();
        assert!(
            text.contains(
                "klutch_health_watch_restarts_total{check=\"added\",reason=\"failed\"} 0\n"
            ),
            "{text}"
        );
        tasks.stop();
    }

    static ONE: &[Registration] = &[Registration::of::<Renamed>()];

    #[test]
    fn a_type_is_found_by_its_name_or_an_alias_and_reads_its_own_keys() {
        for name in ["renamed", "old-name"] {
            assert_eq!(find_in(ONE, name).map(|t| t.name), Some("renamed"));
        }
        assert!(find_in(ONE, "other").is_none());
        let table =
            figment::value::Value::serialize(serde_json::json!({"size": "big"})).expect("a table");
        let e = ONE[0].read(&table).expect_err("size is a number");
        assert_eq!(e.path, "size");
        let table =
            figment::value::Value::serialize(serde_json::json!({"size": 3})).expect("a table");
        let settings = ONE[0].read(&table).expect("valid");
        assert_eq!(settings.type_name(), "renamed");
        assert_eq!(settings.downcast::<Renamed>().map(|r| r.size), Some(3));
        assert_eq!(settings.to_json(), serde_json::json!({"size": 3}));
    }
}
