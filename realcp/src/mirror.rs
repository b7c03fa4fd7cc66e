//! Copies the simulator's objects into the real API server as they change, so that every scenario the
//! simulator plays ([`klutch_sim::SimControlPlane`]'s faults, the konnectors' heartbeats) plays against the real
//! server too, and klutch-health's verdicts on both can be compared. The test plays the controllers a bare
//! control plane lacks: it writes `status` through the `/status` subresource, moves `metadata.generation` by
//! changing the spec, and deletes a pod gracefully to make it terminate.
//!
//! What the real server sets itself (uid, resourceVersion, creation time, managedFields) is left to it; kinds
//! it does not serve (a CRD not installed) are skipped and listed; a write it refuses is an error that
//! [`Mirror::caught_up`] reports; while it is down, the change is retried until it is back.

use std::collections::{BTreeSet, HashSet};

use std::time::Duration;

use http::StatusCode;
use klutch_sim::api::KINDS;
use klutch_sim::FakeApi;
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::rest::{collection_path, kind_of, object_path, path_of, Rest};

/// klutch-health's own writes (Events, the Lease) go to the real server directly and are never copied; nor
/// are the kinds `left` to the real server's own controllers.
fn copied(obj: &Value, left: &[&str]) -> bool {
    kind_of(obj).is_some_and(|k| !k.writable && !left.contains(&k.kind))
}

/// The field manager of the test's writes.
const MANAGER: &str = "klutch-sim";
/// A second manager for generation bumps, so that the next copy (which lacks its field) never removes it.
const GENERATION_MANAGER: &str = "klutch-sim-generation";
/// How long [`Mirror::caught_up`] waits.
const CATCH_UP: Duration = Duration::from_secs(120);

#[derive(Debug, Clone, Default)]
struct Progress {
    /// The fake's `resourceVersion` up to which every change is in the real server.
    applied: u64,
    errors: Vec<String>,
    /// Kinds the real server does not serve (`PLURAL.GROUP`).
    skipped: BTreeSet<String>,
}

/// The running copy; stops when dropped.
pub struct Mirror {
    fake: FakeApi,
    progress: watch::Receiver<Progress>,
    task: JoinHandle<()>,
}

impl Mirror {
    /// Copies every object of `fake` into the server `real` reaches (as its admin), then every change.
    pub fn start(fake: &FakeApi, real: Rest) -> Mirror {
        Mirror::start_leaving(fake, real, &[])
    }

    /// Like [`Mirror::start`], but never copies (nor deletes) objects of the kinds `left` (`Deployment`,
    /// `Pod`): a control plane with controllers makes those itself.
    pub fn start_leaving(fake: &FakeApi, real: Rest, left: &'static [&'static str]) -> Mirror {
        let (tx, progress) = watch::channel(Progress::default());
        let task = tokio::spawn(run(fake.clone(), real, tx, left));
        Mirror {
            fake: fake.clone(),
            progress,
            task,
        }
    }

    /// Waits until every change the fake has made so far is in the real server; the errors it gave instead.
    pub async fn caught_up(&self) -> anyhow::Result<()> {
        let target = self.fake.resource_version();
        let mut rx = self.progress.clone();
        let progress = tokio::time::timeout(
            CATCH_UP,
            rx.wait_for(|p| p.applied >= target || !p.errors.is_empty()),
        )
        .await
        .map_err(|_| {
            anyhow::anyhow!(
                "the real API server did not take the simulator's changes up to {target} within {CATCH_UP:?} \
                 (is it down?)"
            )
        })?
        .map_err(|_| anyhow::anyhow!("the mirror stopped"))?
        .clone();
        anyhow::ensure!(
            progress.errors.is_empty(),
            "the real API server refused the simulator's objects:\n{}",
            progress.errors.join("\n")
        );
        Ok(())
    }

    /// The kinds skipped because the real server does not serve them (`providerconfigs.kubernetes.crossplane.io`).
    pub fn skipped(&self) -> Vec<String> {
        self.progress.borrow().skipped.iter().cloned().collect()
    }
}

impl Drop for Mirror {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn run(
    fake: FakeApi,
    real: Rest,
    tx: watch::Sender<Progress>,
    left: &'static [&'static str],
) {
    let mut copy = Copy { real, tx, left };
    'snapshot: loop {
        let (mut objects, rv, mut follower) = fake.follow();
        // Namespaces before what lives in them.
        objects.sort_by_key(|o| o["kind"] != "Namespace");
        let wanted: HashSet<String> = objects
            .iter()
            .filter(|o| copied(o, left))
            .filter_map(|o| path_of(o).ok())
            .collect();
        for gone in copy.stored().await.difference(&wanted) {
            copy.delete(gone).await;
        }
        for obj in objects.iter().filter(|o| copied(o, left)) {
            copy.put(obj).await;
        }
        copy.tx.send_modify(|p| p.applied = p.applied.max(rv));
        loop {
            match follower.next().await {
                None => return,
                Some(Err(_missed)) => continue 'snapshot,
                Some(Ok(change)) => {
                    if change.rv > rv && copied(&change.object, left) {
                        if change.kind == "DELETED" {
                            if let Ok(path) = path_of(&change.object) {
                                copy.delete(&path).await;
                            }
                        } else {
                            copy.put(&change.object).await;
                        }
                    }
                    copy.tx
                        .send_modify(|p| p.applied = p.applied.max(change.rv));
                }
            }
        }
    }
}

struct Copy {
    real: Rest,
    tx: watch::Sender<Progress>,
    left: &'static [&'static str],
}

/// How one write went.
enum Outcome {
    Done(Value),
    /// The server does not serve this kind.
    NotServed,
    /// Refused: the server's words.
    Refused(String),
}

impl Copy {
    /// Creates or updates the real object as the fake has it: spec and metadata, then status, generation and
    /// deletion.
    async fn put(&mut self, obj: &Value) {
        let Ok(path) = path_of(obj) else { return };
        let body = without_server_fields(obj);
        let mut stored = match self.write(&path, &body, MANAGER).await {
            Outcome::Done(stored) => stored,
            Outcome::NotServed => return self.skip(obj),
            Outcome::Refused(why) => return self.refused(&path, why),
        };
        // A generation cannot go back: an object an earlier test moved ahead is made anew.
        let ahead = |stored: &Value| {
            stored["metadata"]["generation"].as_i64() > obj["metadata"]["generation"].as_i64()
                && obj["metadata"]["generation"].is_i64()
        };
        if ahead(&stored) {
            self.delete(&path).await;
            stored = match self.write(&path, &body, MANAGER).await {
                Outcome::Done(stored) => stored,
                Outcome::NotServed => return self.skip(obj),
                Outcome::Refused(why) => return self.refused(&path, why),
            };
        }
        if let Some(status) = obj.get("status") {
            let mut patch = head(obj);
            patch["status"] = status.clone();
            let manager = status_manager(obj);
            if let Outcome::Refused(why) = self
                .write(&format!("{path}/status"), &patch, &manager)
                .await
            {
                return self.refused(&format!("{path}/status"), why);
            }
        }
        self.follow_generation(&path, obj, &stored).await;
        let terminating = obj.pointer("/metadata/deletionTimestamp").is_some();
        if terminating && stored.pointer("/metadata/deletionTimestamp").is_none() {
            let grace = obj["metadata"]["deletionGracePeriodSeconds"]
                .as_i64()
                .unwrap_or(30);
            self.retrying(|real| {
                let path = path.clone();
                async move { real.delete(&path, Some(grace)).await }
            })
            .await;
        }
    }

    /// Bumps the real `metadata.generation` to the fake's by changing the spec, as a user's edit would.
    async fn follow_generation(&mut self, path: &str, obj: &Value, stored: &Value) {
        let Some(target) = obj["metadata"]["generation"].as_i64() else {
            return;
        };
        let mut generation = stored["metadata"]["generation"].as_i64().unwrap_or(target);
        while generation < target {
            let Some(bump) = generation_bump(obj, generation + 1) else {
                return;
            };
            match self.write(path, &bump, GENERATION_MANAGER).await {
                Outcome::Done(s) => {
                    let next = s["metadata"]["generation"].as_i64().unwrap_or(target);
                    if next <= generation {
                        return self.refused(
                            path,
                            "a spec change did not move metadata.generation".into(),
                        );
                    }
                    generation = next;
                }
                Outcome::NotServed => return,
                Outcome::Refused(why) => return self.refused(path, why),
            }
        }
    }

    async fn delete(&mut self, path: &str) {
        // At once, a pod included (a terminating one too): the fake forgets objects at once.
        let path = path.to_string();
        self.retrying(|real| {
            let path = path.clone();
            async move { real.delete(&path, Some(0)).await }
        })
        .await;
    }

    /// The paths of every object of a copied kind the real server holds now (Namespaces aside: without a
    /// namespace controller a deleted one never goes away), so that what an earlier test left is removed.
    async fn stored(&self) -> HashSet<String> {
        let mut paths = HashSet::new();
        for kind in KINDS
            .iter()
            .filter(|k| !k.writable && k.kind != "Namespace" && !self.left.contains(&k.kind))
        {
            let answer = self
                .retrying(|real| async move { real.get(&collection_path(kind)).await })
                .await;
            for item in answer.body["items"].as_array().into_iter().flatten() {
                if let Some(name) = item["metadata"]["name"].as_str() {
                    paths.insert(object_path(
                        kind,
                        item["metadata"]["namespace"].as_str(),
                        name,
                    ));
                }
            }
        }
        paths
    }

    /// One server-side apply, retried while the server is unreachable or answers 5xx.
    async fn write(&self, path: &str, body: &Value, manager: &str) -> Outcome {
        let answer = self
            .retrying(|real| {
                let (path, body, manager) = (path.to_string(), body.clone(), manager.to_string());
                async move { real.apply(&path, &body, &manager).await }
            })
            .await;
        match answer.status {
            s if s.is_success() => Outcome::Done(answer.body),
            StatusCode::NOT_FOUND => Outcome::NotServed,
            s => Outcome::Refused(format!(
                "{s}: {}",
                answer.body["message"]
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| answer.body.to_string())
            )),
        }
    }

    /// Repeats `f` every 500 ms while the server is unreachable or answers 5xx (the tests stop it on
    /// purpose); any other answer is returned.
    async fn retrying<F, Fut>(&self, f: F) -> crate::rest::Answer
    where
        F: Fn(Rest) -> Fut,
        Fut: std::future::Future<Output = anyhow::Result<crate::rest::Answer>>,
    {
        loop {
            match f(self.real.clone()).await {
                Ok(a) if !a.status.is_server_error() => return a,
                _ => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
    }

    fn skip(&self, obj: &Value) {
        if let Some(kind) = kind_of(obj) {
            let name = format!("{}.{}", kind.plural, kind.group);
            self.tx.send_modify(|p| {
                p.skipped.insert(name);
            });
        }
    }

    fn refused(&self, path: &str, why: String) {
        self.tx
            .send_modify(|p| p.errors.push(format!("{path}: {why}")));
    }
}

/// The object without what only a server sets (and without status, written through `/status`).
fn without_server_fields(obj: &Value) -> Value {
    let mut body = obj.clone();
    if let Some(meta) = body["metadata"].as_object_mut() {
        for key in [
            "uid",
            "resourceVersion",
            "creationTimestamp",
            "managedFields",
            "generation",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "selfLink",
        ] {
            meta.remove(key);
        }
    }
    if let Some(o) = body.as_object_mut() {
        o.remove("status");
    }
    body
}

/// Who writes the status: the manager of the fake's own status write (the konnector of a ClusterBinding,
/// whose time klutch-health reads), else the test.
fn status_manager(obj: &Value) -> String {
    obj["metadata"]["managedFields"]
        .as_array()
        .and_then(|fields| {
            fields
                .iter()
                .find(|f| f["subresource"] == "status")
                .and_then(|f| f["manager"].as_str())
        })
        .unwrap_or(MANAGER)
        .to_string()
}

/// `apiVersion`, `kind`, name and namespace (when it has one) of `obj`: the start of a patch of it.
fn head(obj: &Value) -> Value {
    let mut head = json!({"apiVersion": obj["apiVersion"], "kind": obj["kind"],
                          "metadata": {"name": obj["metadata"]["name"]}});
    if let Some(ns) = obj["metadata"]["namespace"].as_str() {
        head["metadata"]["namespace"] = json!(ns);
    }
    head
}

/// A spec change that moves `metadata.generation` (to `next`), for the kinds whose generation the
/// simulator moves: Deployments (a pod template annotation) and Crossplane packages (a common label).
fn generation_bump(obj: &Value, next: i64) -> Option<Value> {
    let value = json!(next.to_string());
    let spec = match (obj["apiVersion"].as_str()?, obj["kind"].as_str()?) {
        ("apps/v1", "Deployment") => {
            json!({"template": {"metadata": {"annotations": {"klutch-sim/generation": value}}}})
        }
        ("pkg.crossplane.io/v1", _) => json!({"commonLabels": {"klutch-sim/generation": value}}),
        _ => return None,
    };
    let mut bump = head(obj);
    bump["spec"] = spec;
    Some(bump)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_fields_and_status_are_left_to_the_server() {
        let obj = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "ns", "uid": "u", "resourceVersion": "7",
                         "generation": 2, "labels": {"a": "b"}},
            "spec": {"nodeName": "n"}, "status": {"phase": "Running"}});
        let body = without_server_fields(&obj);
        assert_eq!(
            body,
            json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "p", "namespace": "ns", "labels": {"a": "b"}},
                "spec": {"nodeName": "n"}})
        );
    }

    #[test]
    fn the_konnector_writes_its_own_status() {
        let binding = json!({"metadata": {"managedFields": [
            {"manager": "kubectl", "operation": "Update"},
            {"manager": "konnector", "operation": "Update", "subresource": "status"}]}});
        assert_eq!(status_manager(&binding), "konnector");
        assert_eq!(status_manager(&json!({"metadata": {}})), MANAGER);
    }

    #[test]
    fn only_deployments_and_packages_have_their_generation_moved() {
        let d = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d", "namespace": "bind"}});
        assert_eq!(
            generation_bump(&d, 3).unwrap()["spec"]["template"]["metadata"]["annotations"]
                ["klutch-sim/generation"],
            "3"
        );
        let f = json!({"apiVersion": "pkg.crossplane.io/v1", "kind": "Function", "metadata": {"name": "f"}});
        assert!(generation_bump(&f, 2).is_some());
        let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "n"}});
        assert!(generation_bump(&ns, 2).is_none());
    }
}
