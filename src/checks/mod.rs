//! The check types. A check type is one module of this folder that implements [`CheckType`] for its
//! settings struct (the keys of its `[[check]]` table) plus one line in [`TYPES`]: its settings, its
//! validation, what it reads from Kubernetes ([`WatchTarget`], from which the RBAC is derived), the items it
//! shows before its first observation, and how it starts its signal all live in that module.

pub mod backend_status;
pub mod cluster_bindings;
pub mod deployments;
pub mod packages;
pub mod pods;
pub mod provider_configs;
pub(crate) mod running;

use std::any::Any;
use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::kubernetes::watch::Clusters;
use crate::kubernetes::watch::{follow, Target, WatchState, Watches};
use crate::metrics::Metrics;
use crate::signals::{Observation, Sink, Tasks};
use crate::values::KeyError;
use jiff::Timestamp;

/// Every check type, by the name written in `type = "…"`.
pub const TYPES: &[Registration] = &[
    Registration::of::<backend_status::BackendStatus>(),
    Registration::of::<packages::CrossplanePackage>(),
    Registration::of::<provider_configs::ProviderConfig>(),
    Registration::of::<deployments::Deployment>(),
    Registration::of::<pods::Pods>(),
    Registration::of::<cluster_bindings::ClusterBinding>(),
];

/// The settings of one check type, read from its `[[check]]` table (without `name`, `type`, `require`,
/// `cluster`, which every type shares).
pub trait CheckType: Serialize + DeserializeOwned + Debug + Send + Sync + 'static {
    /// The name in `type = "…"`.
    const NAME: &'static str;
    /// Other names accepted for `type`.
    const ALIASES: &'static [&'static str] = &[];
    /// How the policy relates this check's items to other checks'.
    const LINK: Link = Link::None;

    /// What serde cannot check, naming the key: `interval: must be more than 0s`.
    /// `cluster` is the check's `cluster` key.
    fn validate(&self, _cluster: Option<&str>) -> Result<(), KeyError> {
        Ok(())
    }
    /// What the check reads from its cluster: exactly what its RBAC must grant. Empty: no cluster at all.
    fn targets(&self) -> Vec<WatchTarget>;
    /// Items shown as `unknown` before the first observation (none: the single `watch` item).
    fn placeholders(&self) -> Vec<String> {
        Vec::new()
    }
    /// Starts the signal; it publishes into `run.sink` under `run.check`.
    fn start(&self, run: Run<'_>);
}

/// How the policy relates a check's items to other checks'.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    None,
    /// Its failing items take the message of the same-named failing item of a [`Link::ProviderConfigs`] check.
    AnnotatedByProviderConfigs,
    /// Its items are ProviderConfigs.
    ProviderConfigs,
}

/// One resource a check lists and watches (verbs `get`, `list`, `watch`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct WatchTarget {
    /// API group; empty for the core group.
    pub group: String,
    pub version: String,
    /// The resource's plural name (`deployments`).
    pub resource: String,
    /// `None`: cluster-wide.
    pub namespace: Option<String>,
}

impl WatchTarget {
    /// The verbs a watch needs.
    pub const VERBS: [&'static str; 3] = ["get", "list", "watch"];
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
    fn link(&self) -> Link;
    fn validate(&self, cluster: Option<&str>) -> Result<(), KeyError>;
    fn targets(&self) -> Vec<WatchTarget>;
    fn placeholders(&self) -> Vec<String>;
    fn start(&self, run: Run<'_>);
    /// The settings with their defaults, for `--check-config`.
    fn to_json(&self) -> serde_json::Value;
    fn as_any(&self) -> &dyn Any;
}

impl<T: CheckType> Settings for T {
    fn type_name(&self) -> &'static str {
        T::NAME
    }
    fn link(&self) -> Link {
        T::LINK
    }
    fn validate(&self, cluster: Option<&str>) -> Result<(), KeyError> {
        CheckType::validate(self, cluster)
    }
    fn targets(&self) -> Vec<WatchTarget> {
        CheckType::targets(self)
    }
    fn placeholders(&self) -> Vec<String> {
        CheckType::placeholders(self)
    }
    fn start(&self, run: Run<'_>) {
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

/// What a starting signal gets: where to publish, and the cluster when its type has watch targets.
pub struct Run<'a> {
    pub(crate) check: &'a str,
    pub(crate) sink: &'a Sink,
    pub(crate) metrics: &'a Arc<Metrics>,
    /// The check's own tasks, stopped when a reload changes or removes the check.
    pub(crate) tasks: &'a mut Tasks,
    /// What the type's `targets()` declared: a watch of anything else is refused, as RBAC would refuse it.
    pub(crate) declared: Vec<WatchTarget>,
    pub(crate) kube: Option<Kube<'a>>,
}

/// The cluster of a check that watches.
pub(crate) struct Kube<'a> {
    pub(crate) client: kube::Client,
    pub(crate) cluster: Option<String>,
    pub(crate) stale_after: Duration,
    pub(crate) watches: &'a mut Watches,
}

impl Run<'_> {
    /// Follows the watch `target` makes, turning its objects into items with `observe`.
    pub(crate) fn follow<K>(
        self,
        placeholders: Vec<String>,
        target: impl FnOnce(kube::Client, Option<String>) -> Target<K>,
        observe: impl Fn(&[Arc<K>], jiff::Timestamp) -> Vec<Observation> + Send + Sync + 'static,
    ) where
        K: kube::Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
        K::DynamicType: Eq + std::hash::Hash + Clone + Send + Sync,
    {
        let observe = Arc::new(observe);
        self.follow_watch(placeholders, target, move || {
            let observe = observe.clone();
            move |objects: &[Arc<K>], _: &WatchState, now| observe(objects, now)
        })
    }

    /// Like [`Run::follow`], for a judge that also needs to know how the watch is doing (whether it was
    /// live all along) and keeps memory between calls. `observe` makes the judge: once at the start, and
    /// afresh (with fresh memory) whenever a panic killed the task before.
    pub(crate) fn follow_watch<K, O>(
        self,
        placeholders: Vec<String>,
        target: impl FnOnce(kube::Client, Option<String>) -> Target<K>,
        observe: impl Fn() -> O + Send + 'static,
    ) where
        O: FnMut(&[Arc<K>], &WatchState, jiff::Timestamp) -> Vec<Observation> + Send + 'static,
        K: kube::Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
        K::DynamicType: Eq + std::hash::Hash + Clone + Send + Sync,
    {
        let Some(kube) = self.kube else {
            // Only a type whose targets() is empty gets no cluster; one that follows a watch declares it.
            tracing::error!(
                check = self.check,
                "check type watches without declaring a watch target"
            );
            return;
        };
        let target = target(kube.client, kube.cluster);
        let watched = WatchTarget {
            group: K::group(&target.dyntype).into_owned(),
            version: K::version(&target.dyntype).into_owned(),
            resource: K::plural(&target.dyntype).into_owned(),
            namespace: target.namespace.clone(),
        };
        if !self.declared.contains(&watched) {
            let message = format!(
                "watches {watched:?} without declaring it in targets() (the RBAC derived from them would not grant it)"
            );
            tracing::error!(check = self.check, %message, "check type declares the wrong watch target");
            self.sink.waiting(
                self.check,
                crate::kubernetes::watch::waiting(&placeholders, &message, jiff::Timestamp::now()),
            );
            return;
        }
        let w = kube.watches.watch(target, self.check, self.metrics);
        let (check, sink, stale_after) =
            (self.check.to_string(), self.sink.clone(), kube.stale_after);
        self.tasks
            .supervise(self.check, self.sink, self.metrics, move || {
                follow(
                    w.clone(),
                    check.clone(),
                    sink.clone(),
                    stale_after,
                    placeholders.clone(),
                    observe(),
                )
            });
    }
}

/// One configured check, as the signals need it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CheckRef<'a> {
    pub name: &'a str,
    /// `None`: the default cluster.
    pub cluster: Option<&'a str>,
    pub settings: &'a dyn Settings,
}

/// Starts one check's signal, publishing into `sink`; the check is published (at least as waiting) before
/// this returns. A cluster that cannot be used makes its items `unknown` with the reason.
async fn start_one(
    check: CheckRef<'_>,
    clusters: &Clusters<'_>,
    watches: &mut Watches,
    sink: &Sink,
    metrics: &Arc<Metrics>,
) -> Tasks {
    let mut tasks = Tasks::default();
    let declared = check.settings.targets();
    let kube = if declared.is_empty() {
        None
    } else {
        let client = match watches.client(clusters, check.cluster).await {
            Ok(c) => c,
            Err(e) => {
                let message = format!(
                    "cannot use cluster {}: {e}",
                    check.cluster.unwrap_or("default")
                );
                let placeholders = check.settings.placeholders();
                sink.waiting(
                    check.name,
                    crate::kubernetes::watch::waiting(&placeholders, &message, Timestamp::now()),
                );
                return tasks;
            }
        };
        let stale_after = clusters
            .get(check.cluster)
            .map_or(Duration::from_secs(60), |c| c.stale_after);
        Some(Kube {
            client,
            cluster: check.cluster.map(str::to_string),
            stale_after,
            watches,
        })
    };
    check.settings.start(Run {
        check: check.name,
        sink,
        metrics,
        tasks: &mut tasks,
        declared,
        kube,
    });
    tasks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Serialize, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Renamed {
        size: u32,
    }

    impl CheckType for Renamed {
        const NAME: &'static str = "renamed";
        const ALIASES: &'static [&'static str] = &["old-name"];
        fn targets(&self) -> Vec<WatchTarget> {
            Vec::new()
        }
        fn start(&self, _run: Run<'_>) {}
    }

    #[tokio::test]
    async fn a_watch_its_type_did_not_declare_is_refused() {
        use k8s_openapi::api::core::v1::Pod;
        let client = kube::Client::new(
            tower::service_fn(|_: http::Request<kube::client::Body>| async {
                Err::<http::Response<http_body_util::Full<bytes::Bytes>>, _>(std::io::Error::other(
                    "no API in this test",
                ))
            }),
            "default",
        );
        let (sink, metrics, mut watches, mut tasks) = (
            Sink::default(),
            Arc::new(Metrics::new()),
            Watches::default(),
            Tasks::default(),
        );
        let run = Run {
            check: "c",
            sink: &sink,
            metrics: &metrics,
            tasks: &mut tasks,
            declared: vec![WatchTarget {
                group: String::new(),
                version: "v1".into(),
                resource: "pods".into(),
                namespace: Some("declared".into()),
            }],
            kube: Some(Kube {
                client,
                cluster: None,
                stale_after: Duration::from_secs(60),
                watches: &mut watches,
            }),
        };
        run.follow(
            vec!["x".into()],
            |client, cluster| Target::<Pod> {
                api: kube::Api::namespaced(client, "other"),
                strip: |_| {},
                dyntype: (),
                cluster,
                namespace: Some("other".into()),
                labels: None,
            },
            |_, _| Vec::new(),
        );
        let snapshot = sink.snapshot();
        let items = &snapshot.checks["c"];
        assert_eq!(items[0].item, "x");
        assert_eq!(items[0].status, crate::report::Status::Unknown);
        assert!(
            items[0]
                .message
                .contains("without declaring it in targets()"),
            "{}",
            items[0].message
        );
        assert!(snapshot.unsynced.contains("c"));
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
