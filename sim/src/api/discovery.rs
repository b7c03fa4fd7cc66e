//! Discovery (`/api`, `/apis`, `/apis/GROUP[/VERSION]`), derived from the registered kinds.

use serde_json::{json, Value};

use super::{lock, FakeApi};

impl FakeApi {
    pub(super) fn group_list(&self) -> Value {
        let store = lock(&self.inner.store);
        let mut groups: Vec<String> = Vec::new();
        for r in store
            .resources
            .iter()
            .filter(|r| r.served && !r.group.is_empty())
        {
            if !groups.contains(&r.group) {
                groups.push(r.group.clone());
            }
        }
        drop(store);
        let groups: Vec<Value> = groups.iter().filter_map(|g| self.group(g)).collect();
        json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
    }

    pub(super) fn group(&self, group: &str) -> Option<Value> {
        let store = lock(&self.inner.store);
        let mut versions: Vec<String> = Vec::new();
        for r in store
            .resources
            .iter()
            .filter(|r| r.served && r.group == group)
        {
            if !versions.contains(&r.version) {
                versions.push(r.version.clone());
            }
        }
        let versions: Vec<Value> = versions
            .into_iter()
            .map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v}))
            .collect();
        let preferred = versions.first()?.clone();
        Some(
            json!({"kind": "APIGroup", "apiVersion": "v1", "name": group, "versions": versions,
                    "preferredVersion": preferred}),
        )
    }

    pub(super) fn resource_list(&self, group: &str, version: &str) -> Value {
        let store = lock(&self.inner.store);
        let resources: Vec<Value> = store
            .resources
            .iter()
            .filter(|r| r.served && r.group == group && r.version == version)
            .map(|r| {
                let mut v = json!({"name": r.plural, "singularName": r.kind.to_lowercase(),
                    "namespaced": r.namespaced, "kind": r.kind, "verbs": r.verbs()});
                if !r.short_names.is_empty() {
                    v["shortNames"] = json!(r.short_names);
                }
                if !r.categories.is_empty() {
                    v["categories"] = json!(r.categories);
                }
                v
            })
            .collect();
        let gv = if group.is_empty() {
            version.to_string()
        } else {
            format!("{group}/{version}")
        };
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources})
    }
}
