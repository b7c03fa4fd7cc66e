//! Resource requests: parsing the path and query, GET of one object, and LIST with selectors and paging.

use std::collections::HashMap;
use std::time::Duration;

use http::{Response, StatusCode};
use serde_json::{json, Value};

use super::status::{bad_request, invalid, not_found, object_not_found, ok, status, status_with};
use super::store::{ResourceType, Store};
use super::{lock, Body, FakeApi, WatchFault};
use crate::selector::{field, label, Selector};

/// The resource addressed by a path below `/api/v1` or `/apis/GROUP/VERSION`.
pub(super) struct Target<'a> {
    pub namespace: Option<&'a str>,
    pub plural: &'a str,
    pub name: Option<&'a str>,
}

impl<'a> Target<'a> {
    pub fn parse(rest: &[&'a str]) -> Option<Target<'a>> {
        let (namespace, plural, name) = match *rest {
            ["namespaces", ns, plural] => (Some(ns), plural, None),
            ["namespaces", ns, plural, name] => (Some(ns), plural, Some(name)),
            [plural] => (None, plural, None),
            [plural, name] => (None, plural, Some(name)),
            _ => return None,
        };
        Some(Target {
            namespace,
            plural,
            name,
        })
    }
}

type Lookup = fn(&Value, &str) -> Option<String>;

/// The list/watch parameters of a request, validated.
pub(super) struct ListQuery {
    labels: Option<Selector>,
    fields: Option<Selector>,
    pub rv: Option<u64>,
    limit: Option<u64>,
    pub timeout: Duration,
    pub bookmarks: bool,
    exact: bool,
    continue_from: Option<String>,
    /// `sendInitialEvents=true`: a streaming list (a WATCH that starts with the current state and marks its
    /// end with a BOOKMARK).
    pub initial_events: bool,
    /// `resourceVersionMatch=NotOlderThan`, which a streaming list must name.
    not_older_than: bool,
}

impl ListQuery {
    pub fn parse(query: &HashMap<String, String>) -> Result<ListQuery, String> {
        let selector = |key: &str| query.get(key).map(|s| Selector::parse(s)).transpose();
        let number = |key: &str| -> Result<Option<u64>, String> {
            match query.get(key).map(String::as_str) {
                None | Some("") => Ok(None),
                Some(v) => v
                    .parse()
                    .map(Some)
                    .map_err(|_| format!("invalid {key} {v:?}: expected a non-negative integer")),
            }
        };
        Ok(ListQuery {
            labels: selector("labelSelector")?,
            fields: selector("fieldSelector")?,
            rv: number("resourceVersion")?,
            limit: number("limit")?,
            timeout: Duration::from_secs(number("timeoutSeconds")?.unwrap_or(1800)),
            bookmarks: query
                .get("allowWatchBookmarks")
                .is_some_and(|v| v == "true"),
            exact: query.get("resourceVersionMatch").map(String::as_str) == Some("Exact"),
            continue_from: query.get("continue").filter(|c| !c.is_empty()).cloned(),
            initial_events: query.get("sendInitialEvents").is_some_and(|v| v == "true"),
            not_older_than: query.get("resourceVersionMatch").map(String::as_str)
                == Some("NotOlderThan"),
        })
    }

    /// Why this request's streaming-list parameters are refused, worded as kube-apiserver's validation
    /// words it (`streaming`: whether the server serves streaming lists, its `WatchList` feature gate).
    pub fn refused_streaming(&self, is_watch: bool, streaming: bool) -> Option<String> {
        let mut errors = Vec::new();
        if self.initial_events && !is_watch {
            errors.push("sendInitialEvents: Forbidden: sendInitialEvents is forbidden for list");
        }
        if self.initial_events && is_watch {
            if !self.not_older_than {
                errors.push("resourceVersionMatch: Forbidden: sendInitialEvents requires setting resourceVersionMatch to NotOlderThan");
            }
            if !streaming {
                errors.push("sendInitialEvents: Forbidden: sendInitialEvents is forbidden for watch unless the WatchList feature gate is enabled");
            }
        }
        if is_watch && self.not_older_than && !self.initial_events {
            errors.push("resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided");
        }
        (!errors.is_empty()).then(|| {
            let detail = errors.join(", ");
            format!("ListOptions.meta.k8s.io \"\" is invalid: {detail}")
        })
    }

    /// A filter for the namespace and both selectors, to be kept by a watch.
    pub fn matcher(&self, namespace: Option<&str>) -> impl Fn(&Value) -> bool + Send + 'static {
        let namespace = namespace.map(str::to_string);
        let selectors: Vec<(Selector, Lookup)> = [
            self.labels.clone().map(|s| (s, label as Lookup)),
            self.fields.clone().map(|s| (s, field as Lookup)),
        ]
        .into_iter()
        .flatten()
        .collect();
        move |obj: &Value| {
            namespace.as_deref().is_none_or(|ns| {
                obj.pointer("/metadata/namespace").and_then(Value::as_str) == Some(ns)
            }) && selectors.iter().all(|(s, f)| s.matches(|k| f(obj, k)))
        }
    }

    fn page_size(&self) -> usize {
        self.limit
            .filter(|l| *l > 0)
            .and_then(|l| usize::try_from(l).ok())
            .unwrap_or(usize::MAX)
    }
}

impl FakeApi {
    pub(super) fn resource_request(
        &self,
        group: &str,
        version: &str,
        rest: &[&str],
        query: &HashMap<String, String>,
        is_watch: bool,
    ) -> Response<Body> {
        let Some(target) = Target::parse(rest) else {
            return not_found("the server could not find the requested resource");
        };
        let store = lock(&self.inner.store);
        let Some(resource) = store.find_plural(group, version, target.plural) else {
            return not_found(&format!(
                "the server could not find the requested resource ({})",
                target.plural
            ));
        };
        let q = match ListQuery::parse(query) {
            Ok(q) => q,
            Err(e) => return bad_request(&e),
        };
        let streaming = !self.inner.faults.borrow().no_streaming;
        if let Some(why) = q.refused_streaming(is_watch, streaming) {
            return invalid(&why);
        }
        let rt = store.resources[resource].clone();
        if let Some(name) = target.name {
            return get_one(&store, resource, &rt, target.namespace, name);
        }
        if is_watch {
            if self.watch_fault(&rt.plural) == Some(WatchFault::Forbidden) {
                return forbidden(&rt, target.namespace, "watch");
            }
            let matches = q.matcher(target.namespace);
            return self.watch(store, resource, &rt, &q, matches);
        }
        if self
            .inner
            .faults
            .borrow()
            .list_forbidden
            .contains(&rt.plural)
        {
            return forbidden(&rt, target.namespace, "list");
        }
        if self.inner.faults.borrow().endless.contains(&rt.plural) {
            return endless_page(&store, resource, &rt, &q);
        }
        list(&store, resource, &rt, &q, target.namespace)
    }
}

fn get_one(
    store: &Store,
    resource: usize,
    rt: &ResourceType,
    ns: Option<&str>,
    name: &str,
) -> Response<Body> {
    let key = (resource, ns.unwrap_or("").to_string(), name.to_string());
    match store.objects.get(&key) {
        Some(obj) => ok(obj.clone()),
        None => object_not_found(rt, name),
    }
}

fn list(
    store: &Store,
    resource: usize,
    rt: &ResourceType,
    q: &ListQuery,
    ns: Option<&str>,
) -> Response<Body> {
    if let Some(rv) = q.rv.filter(|_| q.exact) {
        if rv < store.compacted {
            let message = format!("too old resource version: {rv} ({})", store.rv);
            return status(StatusCode::GONE, "Expired", &message);
        }
    }
    let matches = q.matcher(ns);
    let all: Vec<&Value> = store.of(resource).filter(|o| matches(o)).collect();
    let start: usize = match q.continue_from.as_deref().map(str::parse).transpose() {
        Ok(start) => start.unwrap_or(0),
        Err(_) => {
            let token = q.continue_from.as_deref().unwrap_or_default();
            return bad_request(&format!("invalid continue token {token:?}"));
        }
    };
    let limit = q.page_size();
    let page: Vec<Value> = all
        .iter()
        .skip(start)
        .take(limit)
        .map(|o| (*o).clone())
        .collect();
    let mut metadata = json!({"resourceVersion": store.rv.to_string()});
    if start.saturating_add(limit) < all.len() {
        metadata["continue"] = json!((start + limit).to_string());
        metadata["remainingItemCount"] = json!(all.len() - start - limit);
    }
    list_body(rt, metadata, page)
}

fn list_body(rt: &ResourceType, metadata: Value, items: Vec<Value>) -> Response<Body> {
    ok(
        json!({"apiVersion": rt.api_version(), "kind": format!("{}List", rt.kind),
              "metadata": metadata, "items": items}),
    )
}

/// A LIST that never ends: every page holds new objects and another `continue` token.
fn endless_page(
    store: &Store,
    resource: usize,
    rt: &ResourceType,
    q: &ListQuery,
) -> Response<Body> {
    let page_no: u64 = q
        .continue_from
        .as_deref()
        .and_then(|c| c.strip_prefix("endless-"))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let template = store.of(resource).next().cloned().unwrap_or_else(
        || json!({"apiVersion": rt.api_version(), "kind": rt.kind, "metadata": {}}),
    );
    let size = q.page_size().min(500);
    let items = (0..size)
        .map(|i| {
            let mut obj = template.clone();
            obj["metadata"]["name"] = json!(format!("endless-{page_no}-{i}"));
            obj["metadata"]["uid"] = json!(format!("endless-{page_no}-{i}"));
            obj
        })
        .collect();
    let metadata = json!({"resourceVersion": store.rv.to_string(),
                          "continue": format!("endless-{}", page_no + 1)});
    list_body(rt, metadata, items)
}

/// What the API server answers a request the caller's RBAC does not allow.
fn forbidden(rt: &ResourceType, ns: Option<&str>, verb: &str) -> Response<Body> {
    let scope = match ns {
        Some(ns) => format!("in the namespace \"{ns}\""),
        None => "at the cluster scope".to_string(),
    };
    let message = format!(
        "{}.{} is forbidden: User \"system:serviceaccount:klutch-system:klutch-health\" cannot {verb} \
         resource \"{}\" in API group \"{}\" {scope}",
        rt.plural, rt.group, rt.plural, rt.group
    );
    status_with(
        StatusCode::FORBIDDEN,
        "Forbidden",
        &message,
        json!({"group": rt.group, "kind": rt.plural}),
    )
}
