//! The test's own requests to the real API server, as its admin: raw paths and JSON, so that the simulator's
//! objects (plain `serde_json::Value`s) go in as they are.

use anyhow::{anyhow, Context};
use http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use klutch_sim::api::{Kind, KINDS};
use kube::client::Body;
use serde_json::Value;

/// How long one request of the test's own may take: generous, so that a loaded machine never fails a test,
/// while a hung server still does.
const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// One answer: its status and its body (JSON when it parses, else the text as a JSON string).
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: StatusCode,
    pub body: Value,
}

impl Answer {
    /// The body when the status is 2xx, else an error naming what was asked and what the server said.
    pub fn ok(self, what: &str) -> anyhow::Result<Value> {
        if self.status.is_success() {
            Ok(self.body)
        } else {
            Err(anyhow!(
                "{what}: the API server answered {}: {}",
                self.status,
                self.body["message"]
                    .as_str()
                    .unwrap_or(&self.body.to_string())
            ))
        }
    }
}

/// A client of the real API server.
#[derive(Clone)]
pub struct Rest {
    pub client: kube::Client,
}

impl Rest {
    /// A client authenticated by the kubeconfig at `path`.
    pub async fn from_kubeconfig(path: &std::path::Path) -> anyhow::Result<Rest> {
        let file = kube::config::Kubeconfig::read_from(path)
            .with_context(|| format!("cannot read kubeconfig {}", path.display()))?;
        let config = kube::Config::from_custom_kubeconfig(file, &Default::default())
            .await
            .with_context(|| format!("kubeconfig {}", path.display()))?;
        Ok(Rest {
            client: kube::Client::try_from(config)?,
        })
    }

    /// Any request; `body` is sent with `content_type` when given.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<(&str, Vec<u8>)>,
    ) -> anyhow::Result<Answer> {
        let mut req = Request::builder()
            .method(method.clone())
            .uri(path)
            .header("Accept", "application/json");
        if let Some((content_type, _)) = &body {
            req = req.header("Content-Type", *content_type);
        }
        let req = req.body(Body::from(body.map(|(_, b)| b).unwrap_or_default()))?;
        let exchange = async {
            let res = self.client.send(req).await?;
            let status = res.status();
            let bytes = res.into_body().collect().await?.to_bytes();
            anyhow::Ok((status, bytes))
        };
        let (status, bytes) = tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .map_err(|_| anyhow!("{method} {path}: no answer within {REQUEST_TIMEOUT:?}"))?
            .with_context(|| format!("{method} {path}"))?;
        let body = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        Ok(Answer { status, body })
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<Answer> {
        self.call(Method::GET, path, None).await
    }

    /// Server-side apply of `obj` as `manager`, taking over any field another manager holds.
    pub async fn apply(&self, path: &str, obj: &Value, manager: &str) -> anyhow::Result<Answer> {
        let path = format!("{path}?fieldManager={manager}&force=true");
        self.call(
            Method::PATCH,
            &path,
            Some(("application/apply-patch+yaml", serde_json::to_vec(obj)?)),
        )
        .await
    }

    /// A JSON merge patch.
    pub async fn merge(&self, path: &str, patch: &Value) -> anyhow::Result<Answer> {
        self.call(
            Method::PATCH,
            path,
            Some(("application/merge-patch+json", serde_json::to_vec(patch)?)),
        )
        .await
    }

    pub async fn post(&self, path: &str, obj: &Value) -> anyhow::Result<Answer> {
        self.call(
            Method::POST,
            path,
            Some(("application/json", serde_json::to_vec(obj)?)),
        )
        .await
    }

    /// Deletes, with this grace period when given (`0`: at once, a pod included).
    pub async fn delete(&self, path: &str, grace_seconds: Option<i64>) -> anyhow::Result<Answer> {
        let path = match grace_seconds {
            Some(g) => format!("{path}?gracePeriodSeconds={g}"),
            None => path.to_string(),
        };
        self.call(Method::DELETE, &path, None).await
    }
}

/// The simulator's kind of `obj` (its `apiVersion` and `kind`), if the simulator serves it.
pub fn kind_of(obj: &Value) -> Option<&'static Kind> {
    let api_version = obj["apiVersion"].as_str()?;
    let kind = obj["kind"].as_str()?;
    KINDS
        .iter()
        .find(|k| k.api_version() == api_version && k.kind == kind)
}

fn group_path(kind: &Kind) -> String {
    if kind.group.is_empty() {
        format!("/api/{}", kind.version)
    } else {
        format!("/apis/{}/{}", kind.group, kind.version)
    }
}

/// Every object of `kind`, in all namespaces: `/apis/GROUP/VERSION/PLURAL`.
pub fn collection_path(kind: &Kind) -> String {
    format!("{}/{}", group_path(kind), kind.plural)
}

/// The REST path of one object of `kind`: `/apis/GROUP/VERSION/[namespaces/NS/]PLURAL/NAME`.
pub fn object_path(kind: &Kind, namespace: Option<&str>, name: &str) -> String {
    let base = group_path(kind);
    match namespace.filter(|_| kind.namespaced) {
        Some(ns) => format!("{base}/namespaces/{ns}/{}/{name}", kind.plural),
        None => format!("{base}/{}/{name}", kind.plural),
    }
}

/// The path of `obj` itself.
pub fn path_of(obj: &Value) -> anyhow::Result<String> {
    let kind = kind_of(obj).ok_or_else(|| {
        anyhow!(
            "kind {} of {} is not one the simulator serves",
            obj["kind"],
            obj["apiVersion"]
        )
    })?;
    let name = obj["metadata"]["name"]
        .as_str()
        .ok_or_else(|| anyhow!("{} without metadata.name", obj["kind"]))?;
    Ok(object_path(
        kind,
        obj["metadata"]["namespace"].as_str(),
        name,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn paths_of_core_group_cluster_scoped_and_namespaced_objects() {
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "ns"}});
        assert_eq!(path_of(&pod).unwrap(), "/api/v1/namespaces/ns/pods/p");
        let pc = json!({"apiVersion": "dataservices.anynines.com/v1", "kind": "ProviderConfig",
                        "metadata": {"name": "pc"}});
        assert_eq!(
            path_of(&pc).unwrap(),
            "/apis/dataservices.anynines.com/v1/providerconfigs/pc"
        );
        let odd =
            json!({"apiVersion": "example.com/v1", "kind": "Thing", "metadata": {"name": "t"}});
        assert!(path_of(&odd).is_err());
    }
}
