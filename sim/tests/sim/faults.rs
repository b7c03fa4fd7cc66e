//! The fake API's fault modes: freeze, no BOOKMARKs, broken watches, endless LIST paging.

use std::time::Duration;

use klutch_sim::{PodState, SimControlPlane, WatchFault};
use tokio::net::TcpStream;

use crate::common;
use common::{events, frame_within, get, names, send, TIMEOUT};

/// Long enough to see that nothing is sent while a fault holds (absence cannot be polled for).
const QUIET: Duration = Duration::from_millis(400);

const PROVIDERS: &str = "/apis/pkg.crossplane.io/v1/providers";

#[tokio::test]
async fn freeze_answers_nothing_keeps_connections_and_unfreeze_resumes() {
    let cp = SimControlPlane::start().await.expect("start");
    cp.api.set_bookmark_interval(Duration::from_millis(50));
    let watch = send(
        &cp.api,
        &format!("{PROVIDERS}?watch=true&allowWatchBookmarks=true"),
    )
    .await;
    let mut body = watch.into_body();
    assert_eq!(
        events(&mut body, 2).await.len(),
        2,
        "the initial ADDED events"
    );

    cp.api.set_frozen(true);
    // Whatever was already on its way may still arrive (a few frames at most); then silence.
    let mut in_flight = 0;
    while frame_within(&mut body, QUIET).await.is_some() {
        in_flight += 1;
        assert!(in_flight < 5, "a frozen watch keeps sending");
    }
    cp.set_provider_healthy("provider-anynines", false);
    assert_eq!(
        frame_within(&mut body, QUIET).await,
        None,
        "a frozen watch sends nothing"
    );
    let api = cp.api.clone();
    let version = tokio::spawn(async move { get(&api, "/version").await });
    TcpStream::connect(cp.api.addr())
        .await
        .expect("connections are still accepted");
    tokio::time::sleep(QUIET).await;
    assert!(
        !version.is_finished(),
        "/version is not answered while frozen"
    );

    cp.api.set_frozen(false);
    let (code, _) = tokio::time::timeout(TIMEOUT, version)
        .await
        .expect("answered")
        .expect("task");
    assert_eq!(code, 200);
    // The held-back change arrives (BOOKMARKs due meanwhile may come first).
    let resumed = events(&mut body, 10).await;
    let types: Vec<&str> = resumed.iter().filter_map(|e| e["type"].as_str()).collect();
    assert!(
        types.iter().all(|t| *t == "MODIFIED" || *t == "BOOKMARK"),
        "{types:?}"
    );
    assert!(types.contains(&"MODIFIED"), "{types:?}");
}

#[tokio::test]
async fn without_bookmarks_a_watch_gets_changes_but_no_bookmark() {
    let cp = SimControlPlane::start().await.expect("start");
    cp.api.set_bookmark_interval(Duration::from_millis(20));
    cp.api.set_bookmarks(false);
    let watch = send(
        &cp.api,
        &format!("{PROVIDERS}?watch=true&allowWatchBookmarks=true"),
    )
    .await;
    let mut body = watch.into_body();
    events(&mut body, 2).await;
    assert_eq!(
        frame_within(&mut body, QUIET).await,
        None,
        "no BOOKMARK while they are off"
    );
    cp.set_provider_healthy("provider-anynines", false);
    assert_eq!(events(&mut body, 1).await[0]["type"], "MODIFIED");
    cp.api.set_bookmarks(true);
    assert_eq!(
        events(&mut body, 1).await[0]["type"],
        "BOOKMARK",
        "back on: bookmarks again"
    );
}

#[tokio::test]
async fn forbidden_watch_is_a_403_status_while_list_works() {
    let cp = SimControlPlane::start().await.expect("start");
    cp.api.set_watch_fault(Some(WatchFault::Forbidden));
    let (code, list) = get(&cp.api, PROVIDERS).await;
    assert_eq!((code, names(&list).len()), (200, 2));
    let (code, status) = get(&cp.api, &format!("{PROVIDERS}?watch=true")).await;
    assert_eq!(code, 403);
    assert_eq!(
        (status["kind"].as_str(), status["reason"].as_str()),
        (Some("Status"), Some("Forbidden"))
    );
    let message = status["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("cannot watch resource \"providers\" in API group \"pkg.crossplane.io\""),
        "{message}"
    );
    cp.api.set_watch_fault(None);
    let watch = send(&cp.api, &format!("{PROVIDERS}?watch=true")).await;
    assert_eq!(watch.status(), 200);

    cp.api
        .set_watch_fault_for("deployments", Some(WatchFault::Forbidden));
    let (code, _) = get(
        &cp.api,
        "/apis/apps/v1/namespaces/bind/deployments?watch=true",
    )
    .await;
    assert_eq!(code, 403, "one resource's watch is forbidden");
    assert_eq!(
        send(&cp.api, &format!("{PROVIDERS}?watch=true"))
            .await
            .status(),
        200,
        "the others work"
    );
    cp.api.set_watch_fault_for("deployments", None);
    assert_eq!(
        send(&cp.api, "/apis/apps/v1/deployments?watch=true")
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn error_event_watch_sends_one_error_and_ends() {
    let cp = SimControlPlane::start().await.expect("start");
    cp.api.set_watch_fault(Some(WatchFault::ErrorEvent));
    let watch = send(&cp.api, &format!("{PROVIDERS}?watch=true")).await;
    assert_eq!(watch.status(), 200);
    let all = events(&mut watch.into_body(), 10).await;
    assert_eq!(
        all.len(),
        1,
        "one event, then the end of the stream: {all:?}"
    );
    assert_eq!(all[0]["type"], "ERROR");
    assert_eq!(
        (
            all[0]["object"]["kind"].as_str(),
            all[0]["object"]["code"].as_u64()
        ),
        (Some("Status"), Some(500))
    );
    assert_eq!(get(&cp.api, PROVIDERS).await.0, 200, "LIST still works");
}

#[tokio::test]
async fn endless_list_pages_new_objects_forever_for_one_resource() {
    let cp = SimControlPlane::start().await.expect("start");
    cp.api.set_endless_list("providers", true);
    let mut seen = std::collections::HashSet::new();
    let mut path = format!("{PROVIDERS}?limit=3");
    for _ in 0..20 {
        let (code, page) = get(&cp.api, &path).await;
        assert_eq!(code, 200);
        let page_names = names(&page);
        assert_eq!(page_names.len(), 3);
        assert!(
            page_names.iter().all(|n| seen.insert(n.clone())),
            "new objects on every page"
        );
        assert_eq!(page["items"][0]["kind"], "Provider");
        let token = page["metadata"]["continue"]
            .as_str()
            .expect("always another page");
        path = format!("{PROVIDERS}?limit=3&continue={token}");
    }
    let (_, deployments) = get(&cp.api, "/apis/apps/v1/deployments").await;
    assert!(
        deployments["metadata"].get("continue").is_none(),
        "other resources page normally"
    );
    cp.api.set_endless_list("providers", false);
    let (_, list) = get(&cp.api, PROVIDERS).await;
    assert_eq!(names(&list), ["provider-anynines", "provider-kubernetes"]);
}

#[tokio::test]
async fn provider_pods_in_every_noisy_state_beside_the_ready_one() {
    let cp = SimControlPlane::start().await.expect("start");
    for state in PodState::ALL {
        cp.add_provider_pod(state);
    }
    let (_, list) = get(&cp.api, "/api/v1/namespaces/crossplane-system/pods?labelSelector=pkg.crossplane.io/provider%3Dprovider-anynines").await;
    let pods = list["items"].as_array().expect("items");
    assert_eq!(pods.len(), 5, "the Ready pod and one per state");
    let by_suffix = |suffix: &str| {
        pods.iter()
            .find(|p| {
                p["metadata"]["name"]
                    .as_str()
                    .is_some_and(|n| n.ends_with(suffix))
            })
            .unwrap_or_else(|| panic!("a pod ending in {suffix}"))
    };
    let evicted = by_suffix("-evicted");
    assert_eq!(
        (
            evicted["status"]["phase"].as_str(),
            evicted["status"]["reason"].as_str()
        ),
        (Some("Failed"), Some("Evicted"))
    );
    assert_eq!(by_suffix("-completed")["status"]["phase"], "Succeeded");
    let terminating = by_suffix("-terminating");
    assert!(terminating["metadata"]["deletionTimestamp"].is_string());
    assert_eq!(terminating["status"]["phase"], "Running");
    let pending = by_suffix("-unschedulable");
    assert_eq!(pending["status"]["phase"], "Pending");
    let scheduled = &pending["status"]["conditions"][0];
    assert_eq!(
        (
            scheduled["type"].as_str(),
            scheduled["status"].as_str(),
            scheduled["reason"].as_str()
        ),
        (Some("PodScheduled"), Some("False"), Some("Unschedulable"))
    );
    assert!(scheduled["message"]
        .as_str()
        .is_some_and(|m| m.starts_with("0/3 nodes are available: ")));
    assert!(cp.remove_provider_pod(PodState::Evicted));
    assert!(!cp.remove_provider_pod(PodState::Evicted), "already gone");
}

#[tokio::test]
async fn forbidden_list_is_a_403_status_while_watch_works() {
    let cp = SimControlPlane::start().await.expect("start");
    cp.api.set_list_forbidden("providers", true);
    let (code, status) = get(&cp.api, PROVIDERS).await;
    assert_eq!(code, 403);
    let message = status["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("cannot list resource \"providers\" in API group \"pkg.crossplane.io\""),
        "{message}"
    );
    let watch = send(&cp.api, &format!("{PROVIDERS}?watch=true")).await;
    assert_eq!(watch.status(), 200, "watches are not affected");
    let (code, _) = get(&cp.api, "/apis/apps/v1/namespaces/bind/deployments").await;
    assert_eq!(code, 200, "other resources list");
    cp.api.set_list_forbidden("providers", false);
    assert_eq!(get(&cp.api, PROVIDERS).await.0, 200);
}
