//! The fake API over TLS: a CA made at start signs the server's leaf; kubectl trusting that CA lists through it.

use std::process::Command;

use klutch_sim::api::SERVICE_ACCOUNT_TOKEN;
use klutch_sim::SimControlPlane;

fn kubectl(kubeconfig: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(klutch_sim::kubectl())
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .arg("--request-timeout=10s")
        .args(args)
        .output()
        .expect("run kubectl")
}

#[tokio::test(flavor = "multi_thread")]
async fn kubectl_trusting_the_ca_lists_over_tls_and_without_it_is_refused() {
    let dir = tempfile::tempdir().expect("dir");
    let cp = SimControlPlane::start_tls(&dir.path().join("sa"))
        .await
        .expect("start over TLS");
    assert!(
        cp.api.url().starts_with("https://127.0.0.1:"),
        "{}",
        cp.api.url()
    );
    let files = cp.api.tls_files().expect("TLS files");
    assert_eq!(
        std::fs::read_to_string(&files.token).expect("token"),
        SERVICE_ACCOUNT_TOKEN
    );
    let ca = std::fs::read_to_string(&files.ca).expect("ca.crt");
    assert!(ca.starts_with("-----BEGIN CERTIFICATE-----"), "{ca}");

    let kc = dir.path().join("kubeconfig");
    cp.api.write_kubeconfig(&kc).expect("kubeconfig");
    let kc2 = kc.clone();
    let out =
        tokio::task::spawn_blocking(move || kubectl(&kc2, &["get", "providers", "-o", "name"]))
            .await
            .expect("kubectl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .collect::<Vec<_>>(),
        [
            "provider.pkg.crossplane.io/provider-anynines",
            "provider.pkg.crossplane.io/provider-kubernetes"
        ]
    );

    let untrusted = dir.path().join("untrusted");
    let text = std::fs::read_to_string(&kc).expect("kubeconfig");
    let without_ca: String = text
        .lines()
        .filter(|l| !l.contains("certificate-authority"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&untrusted, without_ca).expect("kubeconfig without the CA");
    let out = tokio::task::spawn_blocking(move || kubectl(&untrusted, &["get", "providers"]))
        .await
        .expect("kubectl");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("certificate signed by unknown authority"),
        "{stderr}"
    );
}
