//! Text logs escape every value from outside: a newline in a ProviderConfig's `lastMessage` or in a backend
//! key can never start a line of its own.

use crate::common;

use common::{full_config, kubeconfig, Service};
use klutch_sim::{OddEntries, SimControlPlane};

const FORGED: &str = "INFO forged";

#[tokio::test]
async fn newlines_from_the_cluster_and_the_backend_never_forge_a_text_log_line() {
    let cp = SimControlPlane::start()
        .await
        .expect("simulated control plane");
    let dir = tempfile::tempdir().expect("dir");
    let kc = kubeconfig(&cp.api, dir.path());
    let svc =
        Service::start_text(&full_config(&cp.backend.url(), ""), &[("KUBECONFIG", &kc)]).await;
    svc.wait_for("/readyz", "the initial sync", |r| r.status == 200)
        .await;
    cp.degrade_provider_config(
        "postgresql-backup-manager",
        &format!("connection refused\n{FORGED} by lastMessage\r\n\u{1b}[31mred"),
    );
    let mut entries = OddEntries::InvalidNames.entries();
    entries.extend(cp.backend.entries());
    cp.backend.set_entries(entries);
    let logs = common::eventually("both values in the log", async || {
        let logs = svc.logs();
        let said = |what: &str| logs.iter().any(|l| l.contains(what));
        (said("by lastMessage") && said("forged%20log%20line")).then_some(logs)
    })
    .await;
    for line in &logs {
        assert!(
            line.len() >= 4 && line.as_bytes()[..4].iter().all(u8::is_ascii_digit),
            "every line starts with its timestamp, this one does not: {line:?}\n{logs:#?}"
        );
        assert!(!line.contains('\u{1b}'), "{line:?}");
    }
    let message = logs
        .iter()
        .find(|l| l.contains("by lastMessage"))
        .expect("the ProviderConfig's change");
    assert!(
        message.contains("connection refused\\nINFO forged by lastMessage\\r\\n\\u{1b}[31mred"),
        "{message}"
    );
}
