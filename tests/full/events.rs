//! What real kubectl shows of the Events klutch-health writes: `kubectl describe` of the object concerned,
//! and `kubectl get events`.

use crate::common::events::{replica, sim, wait_event, PC};
use crate::kustomize::run_kubectl;

#[tokio::test]
async fn kubectl_describe_and_get_events_show_what_klutch_health_wrote() {
    let cp = sim().await;
    let svc = replica(&cp, "klutch-health-a", None).await;
    cp.degrade_provider_config(PC, "connection refused by pg-backup.internal:5432");
    wait_event(&cp, "Warning").await;

    let kc = svc.dir.path().join("kubectl.kubeconfig");
    cp.api.write_kubeconfig(&kc).expect("kubeconfig");
    let described = run_kubectl(
        &kc,
        &["describe", "providerconfig.dataservices.anynines.com", PC],
    )
    .await;
    let events = described.split_once("Events:").map_or("", |(_, e)| e);
    assert!(
        events.contains("Warning")
            && events.contains("CheckFailed")
            && events.contains("connection refused by pg-backup.internal:5432"),
        "{described}"
    );

    cp.heal_provider_config(PC);
    wait_event(&cp, "Normal").await;
    let columns = "custom-columns=TYPE:.type,REASON:.reason,OBJECT:.involvedObject.name";
    let listed = run_kubectl(&kc, &["get", "events", "-A", "-o", columns]).await;
    for line in [
        format!("Warning   CheckFailed      {PC}"),
        format!("Normal    CheckRecovered   {PC}"),
    ] {
        assert!(listed.contains(&line), "{line} in\n{listed}");
    }
}
