//! Rendering `deploy/` as Kubernetes would receive it: `kubectl kustomize` with kustomize v5.

use std::process::Command;

use serde::Deserialize;
use serde_json::Value;

pub const ROOT: &str = env!("CARGO_MANIFEST_DIR");

pub use klutch_sim::kubectl;

/// `kubectl kustomize DIR`, every rendered object as JSON.
pub fn render(dir: &str) -> Vec<Value> {
    let kubectl = kubectl();
    let out = Command::new(&kubectl)
        .args(["kustomize", &format!("{ROOT}/{dir}")])
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", kubectl.display()));
    assert!(
        out.status.success(),
        "kubectl kustomize {dir} (kustomize v5 needed): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_yaml_ng::Deserializer::from_slice(&out.stdout)
        .map(|doc| Value::deserialize(doc).expect("YAML object"))
        .filter(|v| !v.is_null())
        .collect()
}

/// Runs [`kubectl`] with `kubeconfig` and `args` without blocking the runtime (which may serve the fake API
/// it talks to), killed if it outlives the test; its standard output, or a failure showing its errors.
pub async fn run_kubectl(kubeconfig: impl AsRef<std::path::Path>, args: &[&str]) -> String {
    let run = tokio::process::Command::new(kubectl())
        .arg("--kubeconfig")
        .arg(kubeconfig.as_ref())
        .args(args)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(crate::common::DEADLINE, run)
        .await
        .unwrap_or_else(|_| {
            panic!(
                "kubectl {args:?}: no answer within {:?}",
                crate::common::DEADLINE
            )
        })
        .expect("run kubectl");
    assert!(
        out.status.success(),
        "kubectl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}
