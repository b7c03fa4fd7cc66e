//! The objects, their `resourceVersion`s and the history watches replay from, and the writes that change them.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{json, Value};

use super::kinds::{ApplyError, Kind};
use super::time::now_rfc3339;
use super::{lock, FakeApi};

/// A served resource type (owned: tests may register their own at run time).
#[derive(Debug, Clone)]
pub(super) struct ResourceType {
    pub group: String,
    pub version: String,
    pub plural: String,
    pub kind: String,
    pub namespaced: bool,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
    pub writable: bool,
    /// Its CRD exists: a resource no longer served answers `404` and leaves discovery.
    pub served: bool,
}

impl From<&Kind> for ResourceType {
    fn from(k: &Kind) -> Self {
        ResourceType {
            group: k.group.into(),
            version: k.version.into(),
            plural: k.plural.into(),
            kind: k.kind.into(),
            namespaced: k.namespaced,
            short_names: k.short_names.iter().map(|s| s.to_string()).collect(),
            categories: k.categories.iter().map(|s| s.to_string()).collect(),
            writable: k.writable,
            served: true,
        }
    }
}

impl ResourceType {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }
}

/// A change, as kept in history and sent to watchers.
#[derive(Debug, Clone)]
pub(super) struct Change {
    pub rv: u64,
    pub resource: usize,
    pub kind: &'static str,
    pub object: Value,
}

/// (resource index, namespace or "", name).
pub(super) type Key = (usize, String, String);

#[derive(Default)]
pub(super) struct Store {
    pub resources: Vec<ResourceType>,
    pub objects: BTreeMap<Key, Value>,
    pub rv: u64,
    pub history: Vec<Change>,
    /// Watches from a resourceVersion below this get `410 Expired`.
    pub compacted: u64,
}

/// History kept for watch replay; older changes are compacted away (a real server keeps about 5 minutes).
const HISTORY_LIMIT: usize = 100_000;

impl Store {
    fn record(&mut self, change: Change) {
        self.history.push(change);
        if self.history.len() > HISTORY_LIMIT {
            self.history.drain(..HISTORY_LIMIT / 2);
            if let Some(first) = self.history.first() {
                self.compacted = first.rv - 1;
            }
        }
    }

    pub fn find_kind(&self, api_version: &str, kind: &str) -> Option<usize> {
        self.resources
            .iter()
            .position(|r| r.served && r.api_version() == api_version && r.kind == kind)
    }

    pub fn find_plural(&self, group: &str, version: &str, plural: &str) -> Option<usize> {
        self.resources.iter().position(|r| {
            r.served && r.group == group && r.version == version && r.plural == plural
        })
    }

    fn key(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Option<Key> {
        Some((
            self.find_kind(api_version, kind)?,
            namespace.unwrap_or("").to_string(),
            name.to_string(),
        ))
    }

    /// The objects of one resource type, in key order.
    pub fn of(&self, resource: usize) -> impl Iterator<Item = &Value> {
        self.objects
            .range(
                (resource, String::new(), String::new())
                    ..(resource + 1, String::new(), String::new()),
            )
            .map(|(_, v)| v)
    }

    /// `uid` and `creationTimestamp`, as the server sets them on create.
    pub fn fill_server_fields(&self, obj: &mut Value) {
        if obj.pointer("/metadata/uid").is_none() {
            obj["metadata"]["uid"] = json!(format!("00000000-0000-4000-8000-{:012}", self.rv + 1));
        }
        if obj.pointer("/metadata/creationTimestamp").is_none() {
            obj["metadata"]["creationTimestamp"] = json!(now_rfc3339());
        }
    }

    /// The key an object would be stored under, or why it cannot be stored.
    pub fn key_of(&self, obj: &Value) -> Result<Key, ApplyError> {
        let text = |p: &str| {
            obj.pointer(p)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        let (api_version, kind) = (text("/apiVersion"), text("/kind"));
        let Some(resource) = self.find_kind(&api_version, &kind) else {
            return Err(ApplyError::UnknownKind { api_version, kind });
        };
        let name = text("/metadata/name");
        if name.is_empty() {
            return Err(ApplyError::NoName { kind });
        }
        Ok((resource, text("/metadata/namespace"), name))
    }
}

impl FakeApi {
    /// Creates or replaces an object; it gets a new `resourceVersion`. Panics, naming the kind, when the kind
    /// is not served: a seed the fake would otherwise drop silently is a bug in the test. [`FakeApi::try_apply`]
    /// returns the error instead.
    pub fn apply(&self, obj: Value) {
        if let Err(e) = self.try_apply(obj) {
            panic!("klutch-sim refused an object: {e}");
        }
    }

    /// Creates or replaces an object; the stored object (with its new `resourceVersion`) on success.
    pub fn try_apply(&self, mut obj: Value) -> Result<Value, ApplyError> {
        let mut store = lock(&self.inner.store);
        let key = store.key_of(&obj)?;
        let existed = store.objects.contains_key(&key);
        store.fill_server_fields(&mut obj);
        let kind = if existed { "MODIFIED" } else { "ADDED" };
        Ok(self.commit(&mut store, key, obj, kind))
    }

    /// Modifies an object in place; `false` when it does not exist.
    pub fn update(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
        f: impl FnOnce(&mut Value),
    ) -> bool {
        let mut store = lock(&self.inner.store);
        let Some(key) = store.key(api_version, kind, namespace, name) else {
            return false;
        };
        let Some(mut obj) = store.objects.get(&key).cloned() else {
            return false;
        };
        f(&mut obj);
        self.commit(&mut store, key, obj, "MODIFIED");
        true
    }

    /// Sets one condition in `status.conditions`, moving `lastTransitionTime` when its status changes.
    #[allow(clippy::too_many_arguments)]
    pub fn set_condition(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
        type_: &str,
        status: &str,
        reason: &str,
        message: &str,
    ) -> bool {
        self.update(api_version, kind, namespace, name, |obj| {
            set_condition(obj, type_, status, reason, message)
        })
    }

    pub fn delete(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> bool {
        let mut store = lock(&self.inner.store);
        let Some(key) = store.key(api_version, kind, namespace, name) else {
            return false;
        };
        let Some(mut obj) = store.objects.remove(&key) else {
            return false;
        };
        store.rv += 1;
        obj["metadata"]["resourceVersion"] = json!(store.rv.to_string());
        let change = Change {
            rv: store.rv,
            resource: key.0,
            kind: "DELETED",
            object: obj,
        };
        store.record(change.clone());
        let _ = self.inner.changes.send(Arc::new(change));
        true
    }

    /// [`FakeApi::set_served`] by the CRD's name (`backups.dataservices.anynines.com`), every version.
    pub fn set_crd(&self, crd: &str, served: bool) -> bool {
        let (plural, group) = crd.split_once('.').unwrap_or((crd, ""));
        let versions: Vec<String> = lock(&self.inner.store)
            .resources
            .iter()
            .filter(|r| r.plural == plural && r.group == group)
            .map(|r| r.version.clone())
            .collect();
        !versions.is_empty()
            && versions
                .iter()
                .all(|v| self.set_served(group, v, plural, served))
    }

    /// Deletes a resource's CRD (`false`) or creates it again (`true`): deleted, its objects go (each watch
    /// of it sees them deleted) and its watches end; then it answers `404` and leaves discovery until it is
    /// created again, empty. `false` when no such resource was ever served.
    pub fn set_served(&self, group: &str, version: &str, plural: &str, served: bool) -> bool {
        let mut store = lock(&self.inner.store);
        let Some(resource) = store
            .resources
            .iter()
            .position(|r| r.group == group && r.version == version && r.plural == plural)
        else {
            return false;
        };
        if store.resources[resource].served == served {
            return true;
        }
        if !served {
            let keys: Vec<Key> = store
                .objects
                .range(
                    (resource, String::new(), String::new())
                        ..(resource + 1, String::new(), String::new()),
                )
                .map(|(k, _)| k.clone())
                .collect();
            for key in keys {
                if let Some(mut obj) = store.objects.remove(&key) {
                    store.rv += 1;
                    obj["metadata"]["resourceVersion"] = json!(store.rv.to_string());
                    let change = Change {
                        rv: store.rv,
                        resource,
                        kind: "DELETED",
                        object: obj,
                    };
                    store.record(change.clone());
                    let _ = self.inner.changes.send(Arc::new(change));
                }
            }
        }
        store.resources[resource].served = served;
        drop(store);
        if !served {
            self.cut_watches();
        }
        true
    }

    pub fn get(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Option<Value> {
        let store = lock(&self.inner.store);
        let key = store.key(api_version, kind, namespace, name)?;
        store.objects.get(&key).cloned()
    }

    /// Every object of a kind (all namespaces), in name order.
    pub fn list(&self, api_version: &str, kind: &str) -> Vec<Value> {
        let store = lock(&self.inner.store);
        match store.find_kind(api_version, kind) {
            Some(r) => store.of(r).cloned().collect(),
            None => Vec::new(),
        }
    }

    /// Stores `obj` under `key` with the next `resourceVersion` and tells every watch; returns what was stored.
    pub(super) fn commit(
        &self,
        store: &mut Store,
        key: Key,
        mut obj: Value,
        kind: &'static str,
    ) -> Value {
        store.rv += 1;
        obj["metadata"]["resourceVersion"] = json!(store.rv.to_string());
        let change = Change {
            rv: store.rv,
            resource: key.0,
            kind,
            object: obj.clone(),
        };
        store.objects.insert(key, obj.clone());
        store.record(change.clone());
        // Sent under the store lock, so a watch that subscribes under the same lock misses nothing.
        let _ = self.inner.changes.send(Arc::new(change));
        obj
    }

    /// Forgets history: watches from an older `resourceVersion` get `410 Expired`.
    pub fn compact(&self) {
        let mut store = lock(&self.inner.store);
        store.compacted = store.rv;
        store.history.clear();
    }

    /// The newest `resourceVersion` handed out.
    pub fn resource_version(&self) -> u64 {
        lock(&self.inner.store).rv
    }
}

/// Sets one condition in `obj.status.conditions`, keeping `lastTransitionTime` when the status is unchanged.
pub fn set_condition(obj: &mut Value, type_: &str, status: &str, reason: &str, message: &str) {
    if !obj["status"]["conditions"].is_array() {
        obj["status"]["conditions"] = json!([]);
    }
    let Some(conditions) = obj["status"]["conditions"].as_array_mut() else {
        return;
    };
    let mut condition = json!({"type": type_, "status": status, "reason": reason,
                               "lastTransitionTime": now_rfc3339()});
    if !message.is_empty() {
        condition["message"] = json!(message);
    }
    match conditions.iter_mut().find(|c| c["type"] == type_) {
        Some(c) => {
            if c["status"] == status {
                condition["lastTransitionTime"] = c["lastTransitionTime"].clone();
            }
            *c = condition;
        }
        None => conditions.push(condition),
    }
}

impl ResourceType {
    /// `leases.coordination.k8s.io`, `events` (core): how the API server names a resource in messages.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// The `details` of a `Status` about one object.
    pub fn details(&self, name: &str) -> Value {
        json!({"name": name, "group": self.group, "kind": self.plural})
    }

    /// The verbs discovery advertises.
    pub fn verbs(&self) -> Vec<&'static str> {
        if self.writable {
            vec!["create", "get", "list", "patch", "update", "watch"]
        } else {
            vec!["get", "list", "watch"]
        }
    }
}
