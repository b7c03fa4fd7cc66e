//! Every seeded object and every fixture is what a real API server would store: validated against the upstream
//! CRDs vendored in the repository's `crds/` (Crossplane v1.17.0 and v2 HEAD, provider-anynines, klutch-bind), after the API server's pruning of nulls and
//! unknown fields. A small structural-schema validator: types, required, enum, properties,
//! additionalProperties, items, nullable, x-kubernetes-preserve-unknown-fields, x-kubernetes-int-or-string.

use std::path::{Path, PathBuf};
use std::time::Duration;

use klutch_sim::SimControlPlane;
use serde_json::{Map, Value};

fn crd_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../crds")
}

/// (CRD file name, its openAPIV3Schema) of each CRD that describes one kind.
type Schemas = Vec<(String, Value)>;

/// The openAPIV3Schemas (one per CRD file) that describe `apiVersion`/`kind`, read once per kind.
fn schemas(api_version: &str, kind: &str) -> Schemas {
    static READ: std::sync::OnceLock<std::sync::Mutex<std::collections::HashMap<String, Schemas>>> =
        std::sync::OnceLock::new();
    let mut read = READ
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    read.entry(format!("{api_version} {kind}"))
        .or_insert_with(|| read_schemas(api_version, kind))
        .clone()
}

fn read_schemas(api_version: &str, kind: &str) -> Schemas {
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let mut out = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(crd_dir())
        .expect("CRD dir")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    for path in files {
        let text = std::fs::read_to_string(&path).expect("CRD");
        let crd: Value = serde_yaml_ng::from_str(&text).expect("CRD YAML");
        if crd["spec"]["group"] != group || crd["spec"]["names"]["kind"] != kind {
            continue;
        }
        for v in crd["spec"]["versions"].as_array().into_iter().flatten() {
            if v["name"] == version {
                let name = path
                    .file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .to_string();
                out.push((name, v["schema"]["openAPIV3Schema"].clone()));
            }
        }
    }
    out
}

/// What the API server stores: nulls of non-nullable fields and unknown fields dropped (metadata is the
/// server's own, kept as is).
fn prune(schema: &Value, v: &mut Value) {
    if schema["x-kubernetes-preserve-unknown-fields"] == true && schema.get("properties").is_none()
    {
        return;
    }
    match v {
        Value::Object(map) => {
            let props = schema["properties"].as_object();
            let additional = &schema["additionalProperties"];
            map.retain(|k, field| {
                let sub = props
                    .and_then(|p| p.get(k))
                    .or(additional.is_object().then_some(additional));
                match sub {
                    Some(sub) => !(field.is_null() && sub["nullable"] != true),
                    None => {
                        schema["x-kubernetes-preserve-unknown-fields"] == true
                            || additional == &Value::Bool(true)
                    }
                }
            });
            for (k, field) in map.iter_mut() {
                if let Some(sub) = props
                    .and_then(|p| p.get(k))
                    .or(additional.is_object().then_some(additional))
                {
                    if k != "metadata" || schema["properties"]["apiVersion"].is_null() {
                        prune(sub, field);
                    }
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|i| prune(&schema["items"], i)),
        _ => {}
    }
}

fn type_ok(schema: &Value, v: &Value) -> bool {
    if schema["x-kubernetes-int-or-string"] == true {
        return v.is_i64() || v.is_u64() || v.is_string();
    }
    match schema["type"].as_str() {
        Some("object") => v.is_object(),
        Some("array") => v.is_array(),
        Some("string") => v.is_string(),
        Some("integer") => v.is_i64() || v.is_u64(),
        Some("number") => v.is_number(),
        Some("boolean") => v.is_boolean(),
        _ => true,
    }
}

/// Every violation of `schema` in `v`, each with its JSON path.
fn validate(schema: &Value, v: &Value, path: &str, errors: &mut Vec<String>) {
    if v.is_null() && schema["nullable"] == true {
        return;
    }
    if !type_ok(schema, v) {
        errors.push(format!("{path}: expected {}, got {v}", schema["type"]));
        return;
    }
    if let Some(allowed) = schema["enum"].as_array() {
        if !allowed.contains(v) {
            errors.push(format!("{path}: {v} is not one of {allowed:?}"));
        }
    }
    match v {
        Value::Object(map) => validate_object(schema, map, path, errors),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                validate(&schema["items"], item, &format!("{path}[{i}]"), errors);
            }
        }
        _ => {}
    }
}

fn validate_object(schema: &Value, map: &Map<String, Value>, path: &str, errors: &mut Vec<String>) {
    for required in schema["required"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        if !map.contains_key(required) {
            errors.push(format!("{path}.{required}: required"));
        }
    }
    for (k, field) in map {
        let sub = schema["properties"]
            .get(k)
            .or(schema["additionalProperties"]
                .as_object()
                .map(|_| &schema["additionalProperties"]));
        if let Some(sub) = sub {
            validate(sub, field, &format!("{path}.{k}"), errors);
        }
    }
}

/// The object as the server would store it, or why it would not.
fn check(obj: &Value) -> Vec<String> {
    let api_version = obj["apiVersion"].as_str().unwrap_or_default();
    let kind = obj["kind"].as_str().unwrap_or_default();
    let name = obj["metadata"]["name"].as_str().unwrap_or_default();
    let mut problems = Vec::new();
    for (file, schema) in schemas(api_version, kind) {
        let mut stored = obj.clone();
        prune(&schema, &mut stored);
        if stored != *obj {
            problems.push(format!(
                "{kind} {name} ({file}): the server would prune it to {stored}"
            ));
        }
        let mut errors = Vec::new();
        validate(&schema, &stored, "", &mut errors);
        problems.extend(
            errors
                .into_iter()
                .map(|e| format!("{kind} {name} ({file}): {e}")),
        );
    }
    problems
}

const VALIDATED: [(&str, &str); 10] = [
    ("pkg.crossplane.io/v1", "Provider"),
    ("pkg.crossplane.io/v1", "Configuration"),
    ("pkg.crossplane.io/v1", "Function"),
    ("dataservices.anynines.com/v1", "ProviderConfig"),
    ("klutch.anynines.com/v1alpha1", "ClusterBinding"),
    ("klutch.anynines.com/v1alpha1", "AppClusterBinding"),
    ("dataservices.anynines.com/v1", "ServiceInstance"),
    ("dataservices.anynines.com/v1", "ServiceBinding"),
    ("dataservices.anynines.com/v1", "Backup"),
    ("dataservices.anynines.com/v1", "Restore"),
];

#[tokio::test]
async fn every_seeded_object_and_fixture_validates_against_the_upstream_crds() {
    for (api_version, kind) in VALIDATED {
        let crds = schemas(api_version, kind);
        let expected = if api_version.starts_with("pkg.") {
            2
        } else {
            1
        };
        assert_eq!(
            crds.len(),
            expected,
            "CRDs for {kind}: both Crossplane versions where they differ"
        );
    }
    let cp = SimControlPlane::start().await.expect("start");
    cp.seed_estate(Duration::from_secs(30));
    cp.add_provider_pod(klutch_sim::PodState::Evicted);
    // Every managed kind in every state the simulator can put it in, and seeded by the many.
    for kind in klutch_sim::ManagedKind::ALL {
        for state in klutch_sim::ManagedState::ALL {
            cp.set_managed(kind, &format!("in-{}", state.word()), state);
        }
        cp.add_many_managed(
            kind,
            2,
            klutch_sim::ManagedState::Failing,
            Some("redis-service-broker"),
        );
    }
    // Every flip an AppClusterBinding takes stays valid.
    assert!(cp.set_app_cluster_binding(
        "team-b",
        "dev",
        klutch_sim::estate::BindingState::SecretInvalid
    ));
    assert!(cp.set_app_cluster_binding(
        "team-a",
        "prod",
        klutch_sim::estate::BindingState::NotReady
    ));
    assert!(cp.set_provider_scaled_to_zero("provider-anynines", true));
    let mut objects: Vec<Value> = VALIDATED
        .iter()
        .flat_map(|(a, k)| cp.api.list(a, k))
        .collect();
    assert!(
        objects.len() >= 9 + 4 * 9,
        "{} seeded objects",
        objects.len()
    );
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    for entry in std::fs::read_dir(fixtures).expect("fixtures").flatten() {
        let text = std::fs::read_to_string(entry.path()).expect("fixture");
        if let Ok(obj) = serde_json::from_str::<Value>(&text) {
            if VALIDATED
                .iter()
                .any(|(a, k)| obj["apiVersion"] == *a && obj["kind"] == *k)
            {
                objects.push(obj);
            }
        }
    }
    let problems: Vec<String> = objects.iter().flat_map(check).collect();
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_validator_catches_what_the_api_server_refuses_and_prunes() {
    let mut pc = klutch_sim::fixtures::providerconfig_unchecked();
    assert!(check(&pc).is_empty());
    pc["status"]["health"]["lastCheckTime"] = Value::Null;
    pc["spec"]["unknownField"] = serde_json::json!(1);
    let problems = check(&pc);
    assert!(problems.iter().any(|p| p.contains("prune")), "{problems:?}");
    if let Some(spec) = pc["spec"].as_object_mut() {
        spec.remove("serviceType");
        spec.remove("unknownField");
    }
    pc["status"]["health"]
        .as_object_mut()
        .map(|h| h.remove("lastCheckTime"));
    let problems = check(&pc);
    assert!(
        problems
            .iter()
            .any(|p| p.contains(".spec.serviceType: required")),
        "{problems:?}"
    );
    pc["spec"]["serviceType"] = serde_json::json!("postgres");
    let problems = check(&pc);
    assert!(
        problems
            .iter()
            .any(|p| p.contains(".spec.serviceType: \"postgres\" is not one of")),
        "{problems:?}"
    );
    let mut provider = klutch_sim::fixtures::provider_healthy();
    provider["spec"]["revisionHistoryLimit"] = serde_json::json!("one");
    let problems = check(&provider);
    assert_eq!(problems.len(), 2, "both Crossplane versions: {problems:?}");
    assert!(
        problems
            .iter()
            .all(|p| p.contains(".spec.revisionHistoryLimit: expected \"integer\"")),
        "{problems:?}"
    );
}
