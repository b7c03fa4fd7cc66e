//! The fake API server speaks the Kubernetes list/watch protocol faithfully.

use std::time::Duration;

use http_body_util::BodyExt;

use klutch_sim::{FakeApi, SimControlPlane};
use tokio::net::TcpStream;

use crate::common;
use common::{events, get, names, send};

#[tokio::test]
async fn discovery_list_selectors_and_get() {
    let cp = SimControlPlane::start().await.expect("start");
    let (code, v) = get(&cp.api, "/apis/pkg.crossplane.io/v1").await;
    assert_eq!(code, 200);
    assert_eq!(v["resources"][0]["name"], "providers");
    let (_, groups) = get(&cp.api, "/apis").await;
    assert!(groups["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .any(|g| g["name"] == "dataservices.anynines.com"));

    let (code, list) = get(&cp.api, "/apis/pkg.crossplane.io/v1/providers").await;
    assert_eq!(code, 200);
    assert_eq!(list["kind"], "ProviderList");
    assert!(list["metadata"]["resourceVersion"]
        .as_str()
        .is_some_and(|rv| rv.parse::<u64>().is_ok()));
    assert_eq!(names(&list), ["provider-anynines", "provider-kubernetes"]);

    let (_, pods) = get(
        &cp.api,
        "/api/v1/namespaces/crossplane-system/pods?&labelSelector=pkg.crossplane.io%2Fprovider%3Dprovider-anynines",
    )
    .await;
    assert_eq!(pods["items"].as_array().map(Vec::len), Some(1));
    let (_, none) = get(
        &cp.api,
        "/api/v1/namespaces/crossplane-system/pods?labelSelector=app%3Dother",
    )
    .await;
    assert_eq!(none["items"].as_array().map(Vec::len), Some(0));
    let (_, one) = get(
        &cp.api,
        "/apis/apps/v1/namespaces/bind/deployments?fieldSelector=metadata.name%3Dkonnector",
    )
    .await;
    assert_eq!(names(&one), ["konnector"]);

    let (code, missing) = get(&cp.api, "/apis/apps/v1/namespaces/bind/deployments/nope").await;
    assert_eq!(code, 404);
    assert_eq!(
        (missing["kind"].as_str(), missing["reason"].as_str()),
        (Some("Status"), Some("NotFound"))
    );
    let (code, _) = get(
        &cp.api,
        "/api/v1/namespaces/bind/pods?labelSelector=a%20b%3Dc",
    )
    .await;
    assert_eq!(code, 400);
}

#[tokio::test]
async fn list_paginates_with_limit_and_continue() {
    let api = FakeApi::start().await.expect("start");
    for i in 0..7 {
        api.apply(serde_json::json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": format!("p{i}"), "namespace": "ns"}}));
    }
    let mut seen = Vec::new();
    let mut path = "/api/v1/pods?limit=3".to_string();
    loop {
        let (_, page) = get(&api, &path).await;
        seen.extend(names(&page));
        match page["metadata"]["continue"].as_str() {
            Some(c) => path = format!("/api/v1/pods?limit=3&continue={c}"),
            None => break,
        }
    }
    assert_eq!(seen, (0..7).map(|i| format!("p{i}")).collect::<Vec<_>>());
}

#[tokio::test]
async fn watch_replays_streams_bookmarks_and_expires() {
    let cp = SimControlPlane::start().await.expect("start");
    cp.api.set_bookmark_interval(Duration::from_millis(50));
    let (_, list) = get(&cp.api, "/apis/pkg.crossplane.io/v1/providers").await;
    let rv = list["metadata"]["resourceVersion"]
        .as_str()
        .expect("rv")
        .to_string();
    cp.set_provider_healthy("provider-anynines", false);
    let r = send(
        &cp.api,
        &format!("/apis/pkg.crossplane.io/v1/providers?watch=true&resourceVersion={rv}&allowWatchBookmarks=true"),
    )
    .await;
    assert_eq!(r.headers()["content-type"], "application/json");
    let mut body = r.into_body();
    let first = events(&mut body, 1).await;
    assert_eq!(
        first[0]["type"], "MODIFIED",
        "replayed from the resourceVersion"
    );
    cp.set_provider_healthy("provider-anynines", true);
    let more = events(&mut body, 3).await;
    assert!(
        more.iter().any(|e| e["type"] == "MODIFIED"),
        "live event: {more:?}"
    );
    let bookmark = more
        .iter()
        .find(|e| e["type"] == "BOOKMARK")
        .expect("a bookmark");
    assert_eq!(bookmark["object"]["kind"], "Provider");
    assert_eq!(bookmark["object"]["apiVersion"], "pkg.crossplane.io/v1");

    cp.api.compact();
    let r = send(
        &cp.api,
        &format!("/apis/pkg.crossplane.io/v1/providers?watch=1&resourceVersion={rv}"),
    )
    .await;
    let expired = events(&mut r.into_body(), 1).await;
    assert_eq!(expired[0]["type"], "ERROR");
    assert_eq!(expired[0]["object"]["code"], 410);
    assert_eq!(expired[0]["object"]["reason"], "Expired");
}

#[tokio::test]
async fn watch_ends_after_timeout_seconds_and_when_cut() {
    let cp = SimControlPlane::start().await.expect("start");
    let r = send(
        &cp.api,
        "/apis/apps/v1/namespaces/bind/deployments?watch=true&timeoutSeconds=1",
    )
    .await;
    let mut body = r.into_body();
    let initial = events(&mut body, 10).await;
    assert_eq!(
        initial.len(),
        2,
        "ADDED for each current object, then the end of the stream"
    );
    let r = send(
        &cp.api,
        "/apis/apps/v1/namespaces/bind/deployments?watch=true",
    )
    .await;
    let mut body = r.into_body();
    events(&mut body, 2).await;
    cp.api.cut_watches();
    // Whatever arrives after the cut is at most half an event, and then the stream fails or ends.
    let mut rest = Vec::new();
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(5), body.frame())
            .await
            .expect("ends promptly");
        match frame {
            Some(Ok(f)) => {
                rest.extend_from_slice(f.data_ref().map(|d| d.as_ref()).unwrap_or_default())
            }
            _ => break,
        }
    }
    assert!(
        !rest.contains(&b'\n'),
        "no complete event after the cut: {:?}",
        String::from_utf8_lossy(&rest)
    );
}

#[tokio::test]
async fn down_refuses_connections_and_up_listens_again_and_requests_are_counted() {
    let cp = SimControlPlane::start().await.expect("start");
    cp.api.reset_requests();
    get(&cp.api, "/version").await;
    assert_eq!(cp.api.request_count(), 1);
    cp.api.set_down(true);
    assert!(
        TcpStream::connect(cp.api.addr()).await.is_err(),
        "refused while down"
    );
    cp.api.set_down(false);
    let (code, _) = get(&cp.api, "/version").await;
    assert_eq!(code, 200);
    let watch = cp.api.requests().iter().filter(|r| r.is_watch).count();
    assert_eq!((cp.api.request_count(), watch), (2, 0));
}

#[tokio::test]
async fn ten_thousand_objects_page_like_kubes_watcher_lists() {
    let api = FakeApi::start().await.expect("start");
    for i in 0..10_000 {
        api.apply(
            serde_json::json!({"apiVersion": "pkg.crossplane.io/v1", "kind": "Provider",
            "metadata": {"name": format!("provider-{i:05}")}}),
        );
    }
    let rv = api.resource_version();
    let mut seen = Vec::new();
    let mut path = "/apis/pkg.crossplane.io/v1/providers?&limit=500".to_string();
    let mut pages = 0;
    loop {
        let (code, page) = get(&api, &path).await;
        assert_eq!(code, 200);
        assert_eq!(page["metadata"]["resourceVersion"], rv.to_string());
        pages += 1;
        seen.extend(names(&page));
        match page["metadata"]["continue"].as_str() {
            Some(c) => {
                path = format!("/apis/pkg.crossplane.io/v1/providers?&limit=500&continue={c}")
            }
            None => break,
        }
    }
    assert_eq!(pages, 20);
    assert_eq!(
        seen,
        (0..10_000)
            .map(|i| format!("provider-{i:05}"))
            .collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn errors_are_status_objects() {
    let cp = SimControlPlane::start().await.expect("start");
    for (path, code, reason) in [
        ("/openapi/v2", 404, "NotFound"),
        ("/apis/nope.example.com/v1", 404, "NotFound"),
        ("/apis/pkg.crossplane.io/v1/widgets", 404, "NotFound"),
        (
            "/apis/pkg.crossplane.io/v1/providers?limit=abc",
            400,
            "BadRequest",
        ),
        (
            "/apis/pkg.crossplane.io/v1/providers?continue=xyz",
            400,
            "BadRequest",
        ),
        (
            "/apis/pkg.crossplane.io/v1/providers?watch=true&resourceVersion=x",
            400,
            "BadRequest",
        ),
    ] {
        let (got, status) = get(&cp.api, path).await;
        assert_eq!(got, code, "{path}");
        assert_eq!(
            (
                status["kind"].as_str(),
                status["apiVersion"].as_str(),
                status["status"].as_str()
            ),
            (Some("Status"), Some("v1"), Some("Failure")),
            "{path}"
        );
        assert_eq!(status["reason"], reason, "{path}");
        assert_eq!(status["code"], code, "{path}");
    }
    let (_, missing) = get(&cp.api, "/apis/pkg.crossplane.io/v1/providers/nope").await;
    assert_eq!(missing["details"]["name"], "nope");

    let rv = cp.api.resource_version();
    let exact = "/apis/pkg.crossplane.io/v1/providers?resourceVersion=1&resourceVersionMatch=Exact";
    assert_eq!(get(&cp.api, exact).await.0, 200, "not compacted yet");
    cp.api.compact();
    let (code, gone) = get(&cp.api, exact).await;
    assert_eq!((code, gone["reason"].as_str()), (410, Some("Expired")));
    let current = format!(
        "/apis/pkg.crossplane.io/v1/providers?resourceVersion={rv}&resourceVersionMatch=Exact"
    );
    assert_eq!(get(&cp.api, &current).await.0, 200);
}

#[tokio::test]
async fn watch_filters_by_selector_and_sees_deletes_and_expire_ends_it() {
    let cp = SimControlPlane::start().await.expect("start");
    let r = send(
        &cp.api,
        &format!(
            "/api/v1/namespaces/crossplane-system/pods?watch=true&resourceVersion={}&labelSelector=app%3Dwanted",
            cp.api.resource_version()
        ),
    )
    .await;
    let mut body = r.into_body();
    for (name, app) in [("other", "unwanted"), ("mine", "wanted")] {
        cp.api
            .apply(serde_json::json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "crossplane-system", "labels": {"app": app}}}));
    }
    assert!(cp
        .api
        .delete("v1", "Pod", Some("crossplane-system"), "mine"));
    assert!(!cp
        .api
        .delete("v1", "Pod", Some("crossplane-system"), "mine"));
    let seen = events(&mut body, 2).await;
    let seen: Vec<(&str, &str)> = seen
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap_or_default(),
                e["object"]["metadata"]["name"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(seen, [("ADDED", "mine"), ("DELETED", "mine")]);

    cp.api.expire_watches();
    let rest = events(&mut body, 2).await;
    assert_eq!(rest.len(), 1, "one ERROR event, then the end: {rest:?}");
    assert_eq!(rest[0]["type"], "ERROR");
    assert_eq!(rest[0]["object"]["code"], 410);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hang_latency_and_down_in_a_threaded_runtime() {
    let cp = SimControlPlane::start().await.expect("start");
    cp.api.set_hang(true);
    let api = cp.api.clone();
    let pending = tokio::spawn(async move { get(&api, "/version").await.0 });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!pending.is_finished(), "no answer while hanging");
    cp.api.set_hang(false);
    assert_eq!(pending.await.expect("join"), 200);

    cp.api.set_latency(Duration::from_millis(300));
    let start = std::time::Instant::now();
    assert_eq!(get(&cp.api, "/version").await.0, 200);
    assert!(start.elapsed() >= Duration::from_millis(300));
    cp.api.set_latency(Duration::ZERO);

    let r = send(&cp.api, "/apis/pkg.crossplane.io/v1/providers?watch=true").await;
    let mut body = r.into_body();
    events(&mut body, 2).await;
    cp.api.set_down(true);
    let refused = TcpStream::connect(cp.api.addr()).await;
    assert_eq!(
        refused.map(|_| ()).map_err(|e| e.kind()),
        Err(std::io::ErrorKind::ConnectionRefused),
        "refused at once"
    );
    let end = tokio::time::timeout(Duration::from_secs(5), body.frame())
        .await
        .expect("the open watch ends");
    assert!(!matches!(end, Some(Ok(_))), "no more data after down");
    cp.api.set_down(false);
    assert_eq!(get(&cp.api, "/version").await.0, 200);
}

#[tokio::test]
async fn objects_of_kinds_not_served_are_refused_loudly() {
    let api = FakeApi::start().await.expect("fake API");
    let unknown = serde_json::json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}});
    let err = api
        .try_apply(unknown.clone())
        .expect_err("an unknown kind is refused");
    assert_eq!(
        err,
        klutch_sim::ApplyError::UnknownKind {
            api_version: "example.com/v1".into(),
            kind: "Widget".into()
        }
    );
    assert!(
        err.to_string().contains("\"Widget\"") && err.to_string().contains("register"),
        "{err}"
    );
    let nameless = serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": {}});
    assert!(matches!(
        api.try_apply(nameless),
        Err(klutch_sim::ApplyError::NoName { .. })
    ));
    let panicked =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| api.apply(unknown.clone())));
    assert!(
        panicked.is_err(),
        "apply panics on an unknown kind instead of dropping it"
    );
    api.register("example.com", "v1", "widgets", "Widget", false);
    let stored = api.try_apply(unknown).expect("served once registered");
    assert_eq!(stored["metadata"]["resourceVersion"], "1");
    let (code, list) = get(&api, "/apis/example.com/v1/widgets").await;
    assert_eq!((code, names(&list)), (200, vec!["w".to_string()]));
}
