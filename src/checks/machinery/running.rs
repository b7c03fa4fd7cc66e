//! The running signals, kept across configuration reloads: a check whose effective settings (its type's
//! keys, its cluster and that cluster's settings) did not change keeps its tasks and its watches, so a
//! reload causes no relist; a changed check restarts, a removed one stops, and a watch no check reads any
//! more stops with it.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use super::{start_one, CheckRef, Stash};
use crate::clock::{Due, Moment};
use crate::kubernetes::connection::{fingerprint, Fingerprint};
use crate::kubernetes::settings::Clusters;
use crate::kubernetes::watch::Watches;
use crate::metrics::Metrics;
use crate::signals::{Sink, Tasks};

#[derive(Default)]
pub(crate) struct Running {
    watches: Watches,
    checks: HashMap<String, Started>,
    /// What each cluster's settings and kubeconfig said as last applied (`None`: the default cluster), to
    /// see what changed.
    clusters: BTreeMap<Option<String>, Fingerprint>,
}

struct Started {
    settings: String,
    tasks: Tasks,
    /// What the check remembers across its restarts (a changed check keeps it; a removed one drops it).
    stash: Stash,
}

/// What one [`Running::apply`] did, by check name.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Changes {
    pub added: Vec<String>,
    pub restarted: Vec<String>,
    pub removed: Vec<String>,
    pub unchanged: Vec<String>,
}

impl Running {
    /// The client of `cluster` (`None`: the default one) as `clusters` configure it now: the one connection
    /// its watches use, and its [`Connection::id`](crate::kubernetes::connection::Connection). A connection
    /// made from other settings or another identity is replaced first (and the watches on it with it: the
    /// next [`Running::apply`] restarts their checks).
    pub(crate) async fn client_for(
        &mut self,
        clusters: &Clusters<'_>,
        cluster: Option<&str>,
    ) -> Result<(kube::Client, u64), crate::kubernetes::watch::UndeclaredCluster> {
        if let Some(settings) = clusters.get(cluster) {
            let now = fingerprint(settings).await;
            self.follow(cluster, now).await;
        }
        self.watches.client_for(clusters, cluster)
    }

    /// Takes in what the kubeconfig and settings of `cluster` say `now`: another identity (server, CA,
    /// user) drops its connection; new inline credentials for the same identity go to the running
    /// connection; a kubeconfig that cannot be read leaves a running connection as it is.
    async fn follow(&mut self, cluster: Option<&str>, now: Fingerprint) {
        let key = cluster.map(str::to_string);
        let Some(was) = self.clusters.get(&key) else {
            self.clusters.insert(key, now);
            return;
        };
        if now.unreadable && !was.unreadable {
            tracing::warn!(
                cluster = cluster.unwrap_or("default"),
                kubeconfig = %now.identity,
                "the kubeconfig cannot be read now: the cluster's running connection stays as it is until it can"
            );
            return;
        }
        if now.identity != was.identity {
            self.watches.forget_cluster(cluster);
        } else if now.credentials != was.credentials {
            if let Some(renewal) = self.watches.renewal(cluster) {
                renewal.await;
            }
        }
        self.clusters.insert(key, now);
    }

    /// Makes the running signals those of `checks`. Every check is published (at least as waiting) before
    /// this returns.
    pub(crate) async fn apply<'a>(
        &mut self,
        checks: impl IntoIterator<Item = CheckRef<'a>>,
        clusters: &Clusters<'_>,
        sink: &Sink,
        metrics: &Arc<Metrics>,
    ) -> Changes {
        let mut now = BTreeMap::new();
        for (name, c) in clusters.named {
            now.insert(Some(name.clone()), fingerprint(c).await);
        }
        now.insert(None, fingerprint(clusters.default).await);
        let gone: Vec<Option<String>> = self
            .clusters
            .keys()
            .filter(|name| !now.contains_key(*name))
            .cloned()
            .collect();
        for name in gone {
            self.watches.forget_cluster(name.as_deref());
            self.clusters.remove(&name);
        }
        for (name, fingerprint) in now {
            self.follow(name.as_deref(), fingerprint).await;
        }
        let identities: BTreeMap<Option<String>, String> = self
            .clusters
            .iter()
            .map(|(name, f)| (name.clone(), f.identity.clone()))
            .collect();

        let mut changes = Changes::default();
        let mut previous = std::mem::take(&mut self.checks);
        for check in checks {
            let settings = serde_json::json!({
                "type": check.settings.type_name(),
                "settings": check.settings.to_json(),
                "cluster": check.cluster,
                "cluster_settings": identities.get(&check.cluster.map(str::to_string)),
            })
            .to_string();
            let (tasks, stash) = match previous.remove(check.name) {
                Some(old) if old.settings == settings => {
                    changes.unchanged.push(check.name.to_string());
                    (old.tasks, old.stash)
                }
                Some(old) => {
                    // Stopped before the new signal publishes, so the old one cannot overwrite it.
                    old.tasks.stop();
                    // What it observed stands in until the new start observes (a judging change: at
                    // once, from what its watches hold), for at most `stale_after`.
                    let stale_after = clusters
                        .get(check.cluster)
                        .map_or(Duration::from_secs(60), |c| c.stale_after);
                    sink.hold(check.name, Due::after(Moment::now(), stale_after));
                    // The old subscriptions go before the new ones are taken: unsubscribing by name after
                    // would take the new ones too. A watch both read keeps running all the same, since only
                    // `stop_unused` below stops watches, and the new subscription is back by then.
                    self.watches.unsubscribe(check.name);
                    let tasks = start_one(
                        check,
                        clusters,
                        &mut self.watches,
                        sink,
                        metrics,
                        &old.stash,
                    )
                    .await;
                    changes.restarted.push(check.name.to_string());
                    (tasks, old.stash)
                }
                None => {
                    changes.added.push(check.name.to_string());
                    let stash = Stash::default();
                    let tasks =
                        start_one(check, clusters, &mut self.watches, sink, metrics, &stash).await;
                    (tasks, stash)
                }
            };
            self.checks.insert(
                check.name.to_string(),
                Started {
                    settings,
                    tasks,
                    stash,
                },
            );
        }
        for (name, old) in previous {
            old.tasks.stop();
            // Its observations stay in the sink until the engine takes the policy without it.
            self.watches.unsubscribe(&name);
            changes.removed.push(name);
        }
        self.watches.stop_unused();
        let to = sink.clone();
        self.watches
            .report_clusters(move |cluster, down| to.cluster(cluster, down));
        sink.retain_clusters(|c| self.watches.connected(c));
        changes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checks::{Registration, Settings};
    use crate::kubernetes::settings::Cluster;

    fn poller(interval: &str) -> Arc<dyn Settings> {
        let table = figment::value::Value::serialize(serde_json::json!({
            "url": "http://127.0.0.1:1/",
            "interval": interval,
        }))
        .expect("a table");
        Registration::find("backend-status")
            .expect("registered")
            .read(&table)
            .expect("valid")
    }

    fn task(running: &Running, check: &str) -> tokio::task::AbortHandle {
        running.checks[check].tasks.0[0].clone()
    }

    async fn stopped(task: &tokio::task::AbortHandle) {
        tokio::time::timeout(Duration::from_secs(5), async {
            while !task.is_finished() {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("the task stops");
    }

    #[tokio::test]
    async fn unchanged_checks_keep_their_tasks_changed_ones_restart_removed_ones_stop() {
        let (default, named) = (Cluster::default(), BTreeMap::new());
        let clusters = Clusters {
            default: &default,
            named: &named,
        };
        let (sink, metrics) = (Sink::default(), Arc::new(Metrics::new()));
        let mut running = Running::default();
        let apply = async |running: &mut Running, checks: &[(&str, &Arc<dyn Settings>)]| {
            let refs = checks.iter().map(|(name, settings)| CheckRef {
                name,
                cluster: None,
                settings: &***settings,
            });
            running.apply(refs, &clusters, &sink, &metrics).await
        };
        let (ten, twenty) = (poller("10s"), poller("20s"));

        let first = apply(&mut running, &[("a", &ten), ("b", &ten)]).await;
        assert_eq!(first.added, ["a", "b"]);
        let (a, b) = (task(&running, "a"), task(&running, "b"));
        // What b remembers (konnector heartbeats, say) outlives its restart, not its removal.
        let remembered =
            |running: &Running| *running.checks["b"].stash.slot::<u32>().lock().unwrap();
        *running.checks["b"].stash.slot::<u32>().lock().unwrap() = 7;

        let second = apply(
            &mut running,
            &[("a", &poller("10s")), ("b", &twenty), ("c", &ten)],
        )
        .await;
        assert_eq!(
            second,
            Changes {
                added: vec!["c".into()],
                restarted: vec!["b".into()],
                removed: vec![],
                unchanged: vec!["a".into()],
            }
        );
        stopped(&b).await;
        assert!(!a.is_finished(), "an unchanged check keeps its task");
        assert!(!task(&running, "b").is_finished());
        assert_eq!(remembered(&running), 7, "a restarted check keeps its stash");

        let third = apply(&mut running, &[("c", &ten)]).await;
        assert_eq!(third.removed.len(), 2);
        stopped(&a).await;
        apply(&mut running, &[("b", &ten), ("c", &ten)]).await;
        assert_eq!(
            remembered(&running),
            0,
            "a removed check's stash went with it"
        );
    }
}
