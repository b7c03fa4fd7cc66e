//! The `app-cluster-binding` signal: klutch-bind's control-plane mode. An `AppClusterBinding`
//! (`appclusterbindings.klutch.anynines.com/v1alpha1`, namespaced) binds an app cluster through a kubeconfig
//! Secret; with `spec.konnector.deploy: true` the backend runs that cluster's konnector on the control plane,
//! as Deployment `konnector-<name>` in namespace `klutch-bind-<namespace>-<name>` (labelled
//! `klutch.anynines.com/appclusterbinding-name`). One item per binding, `NS.NAME`: it passes when
//! `SecretValid` and `Ready` are `True` and, where it deploys a konnector, that Deployment is Available by the
//! `deployment` rules. `KonnectorDeployed=True` only says the Deployment was created or updated: it proves
//! nothing, so it is not read. One judge reads both watches: bindings cluster-wide, and the konnector
//! Deployments cluster-wide by their label (their namespaces are made per binding).

use std::sync::Arc;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1 as k8s;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::deployments;
use super::packages::{condition, describe};
use super::{CheckType, Run, WatchSpec};
use crate::signals::{ObjectRef, Observation};
use crate::verdict::report::Status;

/// The keys of an `app-cluster-binding` check: none besides the shared ones.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppClusterBinding {}

/// The label klutch-bind puts on each konnector Deployment it runs for a binding: the binding's name.
pub const BINDING_LABEL: &str = "klutch.anynines.com/appclusterbinding-name";

const API_VERSION: &str = "klutch.anynines.com/v1alpha1";

/// The conditions that must be `True`, in the order they are named.
const REQUIRED: [&str; 2] = ["SecretValid", "Ready"];

impl CheckType for AppClusterBinding {
    const NAME: &'static str = "app-cluster-binding";

    fn start(&self, run: &mut Run<'_>) {
        run.follow(
            (
                // Bindings live in their consumers' namespaces: watched, and their Events written, in all.
                WatchSpec::all_namespaces(resource(), keep_konnector_and_status),
                // Each konnector's namespace is made for its binding: cluster-wide, by label.
                WatchSpec::<k8s::Deployment>::all_namespaces((), deployments::strip_template)
                    .labels(BINDING_LABEL),
            ),
            |(bindings, konnectors): &(Vec<Arc<DynamicObject>>, Vec<Arc<k8s::Deployment>>),
             _,
             now| observe(bindings, konnectors, now.wall),
        );
    }
}

fn resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("klutch.anynines.com", "v1alpha1", "AppClusterBinding"),
        "appclusterbindings",
    )
}

/// Keeps what the judge reads: `spec.konnector` and the status, their strings bounded (tenants' bindings).
fn keep_konnector_and_status(obj: &mut DynamicObject) {
    let konnector = obj
        .data
        .pointer_mut("/spec/konnector")
        .map(Value::take)
        .unwrap_or(Value::Null);
    let status = obj.data.get_mut("status").map(Value::take);
    obj.data = serde_json::json!({ "spec": { "konnector": konnector }, "status": status });
    crate::human::bound_strings(&mut obj.data);
}

/// Where klutch-bind runs the konnector of the binding `namespace/name`: (namespace, Deployment name).
pub fn konnector_of(namespace: &str, name: &str) -> (String, String) {
    (
        format!("klutch-bind-{namespace}-{name}"),
        format!("konnector-{name}"),
    )
}

/// One item per AppClusterBinding, judged with the konnector Deployments found by their label; none at all
/// passes (no konnector runs on the control plane).
pub fn observe(
    bindings: &[Arc<DynamicObject>],
    konnectors: &[Arc<k8s::Deployment>],
    now: Timestamp,
) -> Vec<Observation> {
    if bindings.is_empty() {
        return vec![Observation::new(
            crate::reserved::NONE,
            Status::Pass,
            "no AppClusterBindings: no konnector runs on the control plane",
            now,
        )
        .notable()];
    }
    let mut items: Vec<Observation> = bindings
        .iter()
        .map(|b| {
            let (status, message) = judge(b, konnectors, now);
            let namespace = b.metadata.namespace.as_deref().unwrap_or_default();
            let name = b.metadata.name.as_deref().unwrap_or_default();
            Observation::new(format!("{namespace}.{name}"), status, message, now)
                .regarding(ObjectRef::dynamic(API_VERSION, "AppClusterBinding", b))
        })
        .collect();
    items.sort_by(|a, b| a.item.cmp(&b.item));
    items
}

fn judge(
    binding: &DynamicObject,
    konnectors: &[Arc<k8s::Deployment>],
    now: Timestamp,
) -> (Status, String) {
    let status = binding.data.get("status").unwrap_or(&Value::Null);
    let mut parts: Vec<(Status, String)> = REQUIRED
        .iter()
        .map(|type_| match condition(status, type_) {
            Some(c) if c.status == "True" => (Status::Pass, format!("{type_} is \"True\"")),
            Some(c) => (Status::Fail, describe(type_, &c)),
            None => (
                Status::Unknown,
                format!("condition {type_} not reported yet"),
            ),
        })
        .collect();
    let deploys = binding
        .data
        .pointer("/spec/konnector/deploy")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if deploys {
        parts.push(konnector(binding, konnectors, now));
    }
    let worst = parts
        .iter()
        .map(|(s, _)| *s)
        .max_by_key(|s| s.severity())
        .unwrap_or(Status::Pass);
    if worst == Status::Pass {
        let conditions = "SecretValid and Ready are \"True\"";
        return match parts.get(REQUIRED.len()) {
            Some((_, konnector)) => (worst, format!("{conditions}; {konnector}")),
            None => (
                worst,
                format!("{conditions}; its konnector runs in the app cluster"),
            ),
        };
    }
    let problems: Vec<String> = parts
        .into_iter()
        .filter(|(s, _)| *s != Status::Pass)
        .map(|(_, m)| m)
        .collect();
    (worst, problems.join("; "))
}

/// The konnector Deployment the binding runs, by the `deployment` rules; missing fails naming it.
fn konnector(
    binding: &DynamicObject,
    konnectors: &[Arc<k8s::Deployment>],
    now: Timestamp,
) -> (Status, String) {
    let (namespace, name) = konnector_of(
        binding.metadata.namespace.as_deref().unwrap_or_default(),
        binding.metadata.name.as_deref().unwrap_or_default(),
    );
    let found = konnectors.iter().find(|d| {
        d.metadata.namespace.as_deref() == Some(&namespace)
            && d.metadata.name.as_deref() == Some(&name)
    });
    match found {
        Some(d) => {
            let verdict = deployments::judge(d, &name, 1, now);
            (
                verdict.status,
                format!("konnector {namespace}/{name}: {}", verdict.message),
            )
        }
        None => (
            Status::Fail,
            format!(
                "konnector Deployment {namespace}/{name} not found (spec.konnector.deploy is true)"
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    //! The judge on the real object shapes in `sim/fixtures/`.

    use std::sync::Arc;

    use k8s_openapi::api::apps::v1::Deployment;
    use kube::api::DynamicObject;
    use serde_json::{json, Value};

    use super::{keep_konnector_and_status, observe};
    use crate::checks::testing::{at, fixture, object, only};
    use crate::verdict::report::Status;

    /// The fixture's binding `team-a/prod` (konnector deployed), as stored after the watch's strip.
    fn binding(edit: impl FnOnce(&mut Value)) -> Arc<DynamicObject> {
        let mut b = fixture("appclusterbinding-konnector-deployed");
        edit(&mut b);
        let mut obj: DynamicObject = serde_json::from_value(b).expect("a binding");
        keep_konnector_and_status(&mut obj);
        Arc::new(obj)
    }

    /// The konnector Deployment klutch-bind runs for `team-a/prod`, Available (the real shape of a konnector
    /// Deployment, moved where the backend puts it).
    fn konnector(edit: impl FnOnce(&mut Value)) -> Arc<Deployment> {
        let mut d = fixture("deployment-konnector-available");
        d["metadata"]["name"] = json!("konnector-prod");
        d["metadata"]["namespace"] = json!("klutch-bind-team-a-prod");
        d["metadata"]["labels"] = json!({"klutch.anynines.com/appclusterbinding-name": "prod",
                                         "klutch.anynines.com/appclusterbinding-namespace": "team-a"});
        edit(&mut d);
        object(d)
    }

    fn set(b: &mut Value, type_: &str, status: &str, reason: &str, message: &str) {
        let c = b["status"]["conditions"]
            .as_array_mut()
            .and_then(|cs| cs.iter_mut().find(|c| c["type"] == type_))
            .expect("condition");
        c["status"] = json!(status);
        c["reason"] = json!(reason);
        c["message"] = json!(message);
    }

    #[test]
    fn a_binding_passes_with_valid_secret_ready_and_an_available_konnector() {
        let now = at("2026-11-30T11:00:00Z");
        let o = only(observe(&[binding(|_| {})], &[konnector(|_| {})], now));
        assert_eq!(
            (o.item.as_str(), o.status, o.message.as_str()),
            (
                "team-a.prod",
                Status::Pass,
                "SecretValid and Ready are \"True\"; konnector klutch-bind-team-a-prod/konnector-prod: 2 of 2 \
                 replicas available"
            )
        );
        let regarding = o.regarding.expect("an object");
        assert_eq!(
            (
                regarding.kind.as_str(),
                regarding.namespace.as_deref(),
                regarding.name.as_str()
            ),
            ("AppClusterBinding", Some("team-a"), "prod")
        );
        // Without a konnector on the control plane, the conditions alone decide.
        let app_mode = binding(|b| b["spec"]["konnector"]["deploy"] = json!(false));
        let o = only(observe(&[app_mode], &[], now));
        assert_eq!(
            (o.status, o.message.as_str()),
            (
                Status::Pass,
                "SecretValid and Ready are \"True\"; its konnector runs in the app cluster"
            )
        );
    }

    /// `KonnectorDeployed=True` only says it was created: a missing or unavailable konnector fails, named.
    #[test]
    fn konnector_deployed_alone_proves_nothing() {
        let now = at("2026-11-30T11:00:00Z");
        let o = only(observe(&[binding(|_| {})], &[], now));
        assert_eq!(
            (o.status, o.message.as_str()),
            (
                Status::Fail,
                "konnector Deployment klutch-bind-team-a-prod/konnector-prod not found (spec.konnector.deploy is \
                 true)"
            )
        );
        // A konnector Deployment of another binding is not this one's.
        let other = konnector(|d| d["metadata"]["namespace"] = json!("klutch-bind-team-b-prod"));
        assert_eq!(
            observe(&[binding(|_| {})], &[other], now)[0].status,
            Status::Fail
        );

        let unavailable = konnector(|d| {
            d["status"]["availableReplicas"] = json!(0);
            for c in d["status"]["conditions"]
                .as_array_mut()
                .expect("conditions")
            {
                if c["type"] == "Available" {
                    c["status"] = json!("False");
                    c["reason"] = json!("MinimumReplicasUnavailable");
                    c["message"] = json!("Deployment does not have minimum availability.");
                }
            }
        });
        let o = only(observe(&[binding(|_| {})], &[unavailable], now));
        assert_eq!(
            (o.status, o.message.as_str()),
            (
                Status::Fail,
                "konnector klutch-bind-team-a-prod/konnector-prod: Available is \"False\" \
                 (MinimumReplicasUnavailable): Deployment does not have minimum availability.; 0 of 2 replicas \
                 available, min_available is 1"
            )
        );
    }

    /// The `deployment` rules, reused: a rollout in progress is said, a stuck one warns.
    #[test]
    fn a_konnector_rollout_is_said_and_a_stuck_one_warns() {
        let now = at("2026-11-30T11:00:00Z");
        let lagging = konnector(|d| {
            d["metadata"]["generation"] = json!(5);
            d["status"]["observedGeneration"] = json!(4);
        });
        let o = only(observe(&[binding(|_| {})], &[lagging], now));
        assert_eq!(o.status, Status::Pass);
        assert!(
            o.message.ends_with(
                "konnector klutch-bind-team-a-prod/konnector-prod: rolling out: Waiting for deployment \
                 \"konnector-prod\" spec update to be observed (observed generation 4 of 5); 2 of 2 replicas \
                 available"
            ),
            "{}",
            o.message
        );
        let stuck = konnector(|d| {
            for c in d["status"]["conditions"]
                .as_array_mut()
                .expect("conditions")
            {
                if c["type"] == "Progressing" {
                    c["status"] = json!("False");
                    c["reason"] = json!("ProgressDeadlineExceeded");
                }
            }
        });
        let o = only(observe(&[binding(|_| {})], &[stuck], now));
        assert_eq!(o.status, Status::Warn);
        assert!(
            o.message.contains("exceeded its progress deadline"),
            "{}",
            o.message
        );
    }

    #[test]
    fn an_invalid_secret_or_a_binding_not_ready_fails_with_the_reason() {
        let now = at("2026-11-30T11:00:00Z");
        let secret = binding(|b| {
            set(
                b,
                "SecretValid",
                "False",
                "KubeconfigInvalid",
                "no cluster in the kubeconfig",
            );
            set(b, "Ready", "False", "SecretInvalid", "");
        });
        let o = only(observe(&[secret], &[konnector(|_| {})], now));
        assert_eq!(
            (o.status, o.message.as_str()),
            (
                Status::Fail,
                "SecretValid is \"False\" (KubeconfigInvalid): no cluster in the kubeconfig; Ready is \"False\" \
                 (SecretInvalid)"
            )
        );
        // Every problem is named: a binding not Ready whose konnector is missing too.
        let both = binding(|b| set(b, "Ready", "False", "KonnectorNotReady", "waiting"));
        let o = only(observe(&[both], &[], now));
        assert_eq!(o.status, Status::Fail);
        assert!(
            o.message.starts_with(
                "Ready is \"False\" (KonnectorNotReady): waiting; konnector Deployment "
            ),
            "{}",
            o.message
        );
        // Conditions not reported yet: unknown, unless something fails.
        let fresh = binding(|b| b["status"] = json!({}));
        let o = only(observe(&[fresh], &[konnector(|_| {})], now));
        assert_eq!(
            (o.status, o.message.as_str()),
            (
                Status::Unknown,
                "condition SecretValid not reported yet; condition Ready not reported yet"
            )
        );
    }

    #[test]
    fn items_are_named_namespace_dot_name_and_none_passes() {
        let now = at("2026-11-30T11:00:00Z");
        let second = binding(|b| {
            b["metadata"]["namespace"] = json!("team-b");
            b["metadata"]["name"] = json!("staging.eu");
            b["metadata"]["uid"] = json!("other");
            b["spec"]["konnector"]["deploy"] = json!(false);
        });
        let items = observe(&[second, binding(|_| {})], &[konnector(|_| {})], now);
        let names: Vec<&str> = items.iter().map(|o| o.item.as_str()).collect();
        assert_eq!(names, ["team-a.prod", "team-b.staging.eu"]);
        let o = only(observe(&[], &[], now));
        assert_eq!(
            (o.item.as_str(), o.status, o.detail.is_some()),
            ("_none", Status::Pass, true)
        );
    }
}
