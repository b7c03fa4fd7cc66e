//! One managed resource as the API sends it, deserialized straight into what judging reads — its name, its
//! creation and deletion times, the `crossplane.io/paused` annotation, the `crossplane.io/claim-namespace`
//! label, `spec.providerConfigRef.name`, the instance or backup it belongs to, whether a broker operation is
//! pending, and its `Ready` and `Synced` conditions (type, status, reason, time, and the message cut to
//! [`MESSAGE_LIMIT`] bytes) — and nothing else: no JSON tree, no managed fields, no spec. serde skips every
//! other field without keeping it. Every string kept is bounded ([`crate::human::cut`]): tenants write them.

use jiff::Timestamp;
use kube::api::ObjectMeta;
use serde::de::{IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

use crate::human::{cut, NAME_LIMIT};

/// The longest condition message kept, in bytes: below [`crate::human::MESSAGE_LIMIT`], since the tally keeps one
/// for every resource that is not ready.
pub const MESSAGE_LIMIT: usize = 256;

/// The annotation that pauses a managed resource's reconciliation.
pub const PAUSED: &str = "crossplane.io/paused";
/// The label Crossplane puts on a claim's managed resources: the claim's namespace, in which the claim
/// names in `instanceName` and `backupName` are meant.
pub const CLAIM_NAMESPACE: &str = "crossplane.io/claim-namespace";

/// A managed resource of any provider-anynines kind, as the watch delivers it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Managed {
    /// Only the name and `resourceVersion` (from which the watch resumes).
    meta: ObjectMeta,
    pub facts: Facts,
}

/// What judging reads of a managed resource.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Facts {
    pub created: Option<Timestamp>,
    /// `metadata.deletionTimestamp`: it is being deleted since then.
    pub deleting: Option<Timestamp>,
    /// The `crossplane.io/paused` annotation is `"true"`.
    pub paused: bool,
    /// The `crossplane.io/claim-namespace` label: the namespace of the claim it was made for.
    pub claim_namespace: Option<String>,
    /// `spec.providerConfigRef.name`: the ProviderConfig whose broker or backup manager serves it.
    pub provider_config: Option<String>,
    /// `status.pendingOperation` is set: the broker has an operation running for it.
    pub pending_operation: bool,
    /// `spec.forProvider.instanceName` (Backups, ServiceBindings): a claim's name, in the claim's namespace.
    pub instance_name: Option<String>,
    /// `spec.forProvider.backupName` (Restores): a claim's name, in the claim's namespace.
    pub backup_name: Option<String>,
    pub ready: Option<Condition>,
    pub synced: Option<Condition>,
}

/// One of crossplane-runtime's two conditions.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Condition {
    /// `True`, `False` or `Unknown` (as written).
    pub status: String,
    pub reason: String,
    /// At most [`MESSAGE_LIMIT`] bytes.
    pub message: String,
    pub since: Option<Timestamp>,
}

impl Condition {
    pub fn is(&self, status: &str) -> bool {
        self.status == status
    }
}

impl Managed {
    /// A resource named `name` with `facts`: for tests and tables.
    pub fn new(name: &str, facts: Facts) -> Managed {
        Managed {
            meta: ObjectMeta {
                name: Some(name.to_string()),
                ..ObjectMeta::default()
            },
            facts,
        }
    }

    pub fn name(&self) -> Option<&str> {
        self.meta.name.as_deref()
    }
}

crate::checks::dynamic_resource!(Managed);

/// The wire shape, reduced to the fields read; every other field is skipped by serde as it is parsed.
#[derive(Deserialize)]
struct Wire {
    metadata: Option<WireMeta>,
    spec: Option<WireSpec>,
    status: Option<WireStatus>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireMeta {
    name: Option<String>,
    resource_version: Option<String>,
    creation_timestamp: Option<String>,
    deletion_timestamp: Option<String>,
    annotations: Option<Paused>,
    labels: Option<ClaimNamespace>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireSpec {
    provider_config_ref: Option<NameRef>,
    for_provider: Option<ForProvider>,
}

#[derive(Deserialize)]
struct NameRef {
    name: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ForProvider {
    instance_name: Option<String>,
    backup_name: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireStatus {
    pending_operation: Option<String>,
    conditions: Option<Vec<WireCondition>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireCondition {
    #[serde(rename = "type")]
    type_: Option<String>,
    status: Option<String>,
    reason: Option<String>,
    message: Option<String>,
    last_transition_time: Option<String>,
}

/// The annotations, of which only `crossplane.io/paused` is read: the rest are skipped, not kept.
struct Paused(bool);

impl<'de> Deserialize<'de> for Paused {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Paused, D::Error> {
        Ok(Paused(entry(d, PAUSED)?.as_deref() == Some("true")))
    }
}

/// The labels, of which only `crossplane.io/claim-namespace` is read.
struct ClaimNamespace(Option<String>);

impl<'de> Deserialize<'de> for ClaimNamespace {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<ClaimNamespace, D::Error> {
        Ok(ClaimNamespace(entry(d, CLAIM_NAMESPACE)?))
    }
}

/// The value of `key` in a map of strings; every other entry is skipped, not kept.
fn entry<'de, D: Deserializer<'de>>(d: D, key: &'static str) -> Result<Option<String>, D::Error> {
    struct Entry(&'static str);
    impl<'de> Visitor<'de> for Entry {
        type Value = Option<String>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a map of strings")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Option<String>, A::Error> {
            let mut value = None;
            while let Some(k) = map.next_key::<String>()? {
                if k == self.0 {
                    value = map.next_value::<Option<String>>()?;
                } else {
                    map.next_value::<IgnoredAny>()?;
                }
            }
            Ok(value)
        }
    }
    d.deserialize_map(Entry(key))
}

fn time(text: Option<String>) -> Option<Timestamp> {
    text?.parse().ok()
}

/// A name or reference as kept: bounded.
fn name(text: Option<String>) -> Option<String> {
    text.map(|t| cut(t, NAME_LIMIT))
}

impl WireCondition {
    fn into_condition(self) -> Condition {
        Condition {
            status: self.status.unwrap_or_default(),
            reason: cut(self.reason.unwrap_or_default(), NAME_LIMIT),
            message: cut(self.message.unwrap_or_default(), MESSAGE_LIMIT),
            since: time(self.last_transition_time),
        }
    }
}

impl<'de> Deserialize<'de> for Managed {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Managed, D::Error> {
        let wire = Wire::deserialize(d)?;
        let meta = wire.metadata.unwrap_or(WireMeta {
            name: None,
            resource_version: None,
            creation_timestamp: None,
            deletion_timestamp: None,
            annotations: None,
            labels: None,
        });
        let (provider_config, for_provider) = match wire.spec {
            Some(s) => (
                s.provider_config_ref.and_then(|r| name(r.name)),
                s.for_provider,
            ),
            None => (None, None),
        };
        let (instance_name, backup_name) = match for_provider {
            Some(f) => (name(f.instance_name), name(f.backup_name)),
            None => (None, None),
        };
        let (pending, conditions) = match wire.status {
            Some(s) => (s.pending_operation, s.conditions.unwrap_or_default()),
            None => (None, Vec::new()),
        };
        let (mut ready, mut synced) = (None, None);
        for c in conditions {
            match c.type_.as_deref() {
                Some("Ready") => ready = Some(c.into_condition()),
                Some("Synced") => synced = Some(c.into_condition()),
                _ => {}
            }
        }
        Ok(Managed {
            meta: ObjectMeta {
                name: meta.name.map(|n| cut(n, NAME_LIMIT)),
                resource_version: meta.resource_version,
                ..ObjectMeta::default()
            },
            facts: Facts {
                created: time(meta.creation_timestamp),
                deleting: time(meta.deletion_timestamp),
                paused: meta.annotations.is_some_and(|p| p.0),
                claim_namespace: name(meta.labels.and_then(|l| l.0)),
                provider_config,
                pending_operation: pending.is_some_and(|p| !p.is_empty()),
                instance_name,
                backup_name,
                ready,
                synced,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checks::testing::{at, fixture};

    #[test]
    fn a_failing_instance_keeps_only_what_judging_reads() {
        let m: Managed =
            serde_json::from_value(fixture("serviceinstance-failing")).expect("parses");
        assert_eq!(m.name(), Some("pg-dev-2"));
        assert_eq!(m.meta.resource_version.as_deref(), Some("48211"));
        assert!(m.meta.annotations.is_none() && m.meta.finalizers.is_none());
        let f = &m.facts;
        assert_eq!(f.created, Some(at("2026-11-30T09:12:44Z")));
        assert_eq!(
            f.provider_config.as_deref(),
            Some("postgresql-service-broker")
        );
        assert!(!f.paused && !f.pending_operation && f.deleting.is_none());
        let synced = f.synced.as_ref().expect("Synced");
        assert_eq!(
            (synced.status.as_str(), synced.reason.as_str()),
            ("False", "ReconcileError")
        );
        assert_eq!(
            synced.message,
            "observe failed: cannot get instance: broker answered 500: internal server error"
        );
        assert_eq!(
            f.ready.as_ref().and_then(|r| r.since),
            Some(at("2026-12-01T14:03:10Z"))
        );
    }

    #[test]
    fn the_paused_annotation_a_pending_operation_and_the_parent_are_read() {
        let m: Managed = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "b", "deletionTimestamp": "2026-12-01T00:00:00Z",
                         "annotations": {"crossplane.io/external-name": "x", "crossplane.io/paused": "true"}},
            "spec": {"forProvider": {"instanceName": "pg-1", "backupName": "b-0"}},
            "status": {"pendingOperation": "op-1", "conditions": [{"type": "LastAsyncOperation", "status": "True"}]}
        }))
        .expect("parses");
        let f = m.facts;
        assert!(f.paused && f.pending_operation);
        assert_eq!(f.deleting, Some(at("2026-12-01T00:00:00Z")));
        assert_eq!(
            (f.instance_name.as_deref(), f.backup_name.as_deref()),
            (Some("pg-1"), Some("b-0"))
        );
        assert!(f.ready.is_none() && f.synced.is_none());
        // Nothing at all, nulls, an empty pending operation: no panic, nothing made up.
        for v in [
            serde_json::json!({}),
            serde_json::json!({"metadata": null, "spec": null, "status": {"conditions": null, "pendingOperation": ""}}),
        ] {
            let m: Managed = serde_json::from_value(v).expect("parses");
            assert_eq!(m.facts, Facts::default());
        }
    }

    /// The real provider's Backup of a claim: the claim's namespace from its label, the claim name it backs
    /// up from `instanceName`.
    #[test]
    fn a_claimed_backup_names_its_claim_and_namespace() {
        let m: Managed = serde_json::from_value(fixture("backup-claimed")).expect("parses");
        let f = &m.facts;
        assert_eq!(m.name(), Some("backup-postgresql-sample-sadkl23"));
        assert_eq!(
            (f.claim_namespace.as_deref(), f.instance_name.as_deref()),
            (Some("default"), Some("example-postgresql-instance"))
        );
        assert!(f.ready.is_none());
    }

    /// A tenant's 10 KB condition message and 300-character names and references: each kept bounded, cut
    /// at a character boundary with a marker that says how much was cut.
    #[test]
    fn what_tenants_write_is_kept_bounded() {
        let long = "x".repeat(300);
        let m: Managed = serde_json::from_value(serde_json::json!({
            "metadata": {"name": long, "labels": {"crossplane.io/claim-name": "daily", "crossplane.io/claim-namespace": "team-a"}},
            "spec": {"providerConfigRef": {"name": long}, "forProvider": {"instanceName": long, "backupName": long}},
            "status": {"conditions": [{"type": "Synced", "status": "False", "reason": long, "message": "ü".repeat(5000)}]}
        }))
        .expect("parses");
        let f = &m.facts;
        let cut_name = format!("{}…(65 bytes cut)", "x".repeat(235));
        assert!(cut_name.len() <= NAME_LIMIT);
        for kept in [
            m.name(),
            f.provider_config.as_deref(),
            f.instance_name.as_deref(),
            f.backup_name.as_deref(),
            f.synced.as_ref().map(|c| c.reason.as_str()),
        ] {
            assert_eq!(kept, Some(cut_name.as_str()));
        }
        assert_eq!(f.claim_namespace.as_deref(), Some("team-a"));
        let message = &f.synced.as_ref().expect("Synced").message;
        assert!(
            message.len() <= MESSAGE_LIMIT && message.ends_with("…(9764 bytes cut)"),
            "{} bytes: {message}",
            message.len()
        );
        assert!(message.starts_with("üü"));
        // Short ones are kept whole.
        assert_eq!(cut("short".into(), MESSAGE_LIMIT), "short");
    }
}
