//! Writes to the kinds that accept them (Events, Leases): create, update with optimistic concurrency (a stale
//! `resourceVersion` gets `409 Conflict`, as from a real API server) and JSON merge patch.

use http::{Method, Response, StatusCode};
use serde_json::{json, Value};

use super::events::twin;
use super::list::Target;
use super::status::{json_body, not_found, object_not_found, status, status_with};
use super::store::{Key, ResourceType, Store};
use super::{lock, Body, FakeApi};

impl FakeApi {
    pub(super) fn write_request(
        &self,
        method: &Method,
        group: &str,
        version: &str,
        rest: &[&str],
        body: &[u8],
    ) -> Response<Body> {
        let Some(target) = Target::parse(rest) else {
            return not_found("the server could not find the requested resource");
        };
        let mut store = lock(&self.inner.store);
        let Some(resource) = store.find_plural(group, version, target.plural) else {
            return not_found(&format!(
                "the server could not find the requested resource ({})",
                target.plural
            ));
        };
        let rt = store.resources[resource].clone();
        if self.write_fails(&rt.plural) {
            let message = format!("the fake API server fails writes of {} (fault)", rt.plural);
            return status(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", &message);
        }
        if !rt.writable {
            let message = format!(
                "the fake API server does not accept {method} on {}",
                rt.plural
            );
            return status(StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed", &message);
        }
        let body: Value = match serde_json::from_slice(body) {
            Ok(v @ Value::Object(_)) => v,
            _ => {
                return status(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    "the body is not a JSON object",
                )
            }
        };
        let ns = target.namespace.unwrap_or("").to_string();
        let written = match (method, target.name) {
            (&Method::POST, None) => create(&mut store, resource, &rt, ns, body),
            (&Method::PUT, Some(name)) => {
                update(&store, (resource, ns, name.to_string()), &rt, body, false)
            }
            (&Method::PATCH, Some(name)) => {
                update(&store, (resource, ns, name.to_string()), &rt, body, true)
            }
            _ => {
                let message = format!("{method} is not supported on this path");
                return status(StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed", &message);
            }
        };
        let (code, key, obj) = match written {
            Ok(w) => w,
            Err(refused) => return *refused,
        };
        let kind = if code == StatusCode::CREATED {
            "ADDED"
        } else {
            "MODIFIED"
        };
        let stored = self.commit(&mut store, key.clone(), obj, kind);
        self.mirror(&mut store, &key, &stored, kind);
        json_body(code, &stored)
    }

    /// Commits an Event's twin in the other events API, so that both read the same events.
    fn mirror(&self, store: &mut Store, key: &Key, obj: &Value, kind: &'static str) {
        let Some(twin) = twin(obj) else { return };
        let api_version = twin["apiVersion"].as_str().unwrap_or_default().to_string();
        if let Some(resource) = store.find_kind(&api_version, "Event") {
            self.commit(store, (resource, key.1.clone(), key.2.clone()), twin, kind);
        }
    }
}

type Written = Result<(StatusCode, Key, Value), Box<Response<Body>>>;

fn create(
    store: &mut Store,
    resource: usize,
    rt: &ResourceType,
    ns: String,
    mut obj: Value,
) -> Written {
    obj["apiVersion"] = json!(rt.api_version());
    obj["kind"] = json!(rt.kind);
    if rt.namespaced {
        obj["metadata"]["namespace"] = json!(ns);
    }
    let mut name = obj["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    if name.is_empty() {
        let Some(prefix) = obj["metadata"]["generateName"].as_str() else {
            return Err(Box::new(status(
                StatusCode::UNPROCESSABLE_ENTITY,
                "Invalid",
                "metadata.name: Required value",
            )));
        };
        name = format!("{prefix}{:05x}", store.rv + 1);
        obj["metadata"]["name"] = json!(name);
    }
    let key = (resource, ns, name.clone());
    if store.objects.contains_key(&key) {
        let message = format!("{} \"{name}\" already exists", rt.qualified());
        return Err(Box::new(status_with(
            StatusCode::CONFLICT,
            "AlreadyExists",
            &message,
            rt.details(&name),
        )));
    }
    if let Some(m) = obj["metadata"].as_object_mut() {
        m.remove("resourceVersion");
    }
    store.fill_server_fields(&mut obj);
    Ok((StatusCode::CREATED, key, obj))
}

/// PUT (`patch == false`: the body replaces the object) or JSON merge patch; both refuse a stale
/// `metadata.resourceVersion`.
fn update(store: &Store, key: Key, rt: &ResourceType, body: Value, patch: bool) -> Written {
    let name = key.2.clone();
    let Some(current) = store.objects.get(&key) else {
        return Err(Box::new(object_not_found(rt, &name)));
    };
    let wanted = body
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str);
    if wanted.is_some_and(|rv| Some(rv) != current["metadata"]["resourceVersion"].as_str()) {
        let message = format!(
            "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your \
             changes to the latest version and try again",
            rt.qualified()
        );
        return Err(Box::new(status_with(
            StatusCode::CONFLICT,
            "Conflict",
            &message,
            rt.details(&name),
        )));
    }
    let mut obj = if patch {
        let mut obj = current.clone();
        merge(&mut obj, body);
        obj
    } else {
        let mut obj = body;
        obj["metadata"]["uid"] = current["metadata"]["uid"].clone();
        obj["metadata"]["creationTimestamp"] = current["metadata"]["creationTimestamp"].clone();
        obj
    };
    obj["apiVersion"] = json!(rt.api_version());
    obj["kind"] = json!(rt.kind);
    obj["metadata"]["name"] = json!(name);
    if rt.namespaced {
        obj["metadata"]["namespace"] = json!(key.1);
    }
    Ok((StatusCode::OK, key, obj))
}

/// RFC 7386 JSON merge patch.
fn merge(target: &mut Value, patch: Value) {
    match patch {
        Value::Object(fields) => {
            if !target.is_object() {
                *target = json!({});
            }
            for (k, v) in fields {
                if v.is_null() {
                    if let Some(t) = target.as_object_mut() {
                        t.remove(&k);
                    }
                } else {
                    merge(&mut target[k.as_str()], v);
                }
            }
        }
        other => *target = other,
    }
}
