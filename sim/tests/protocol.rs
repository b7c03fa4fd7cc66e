//! The fake API server speaks the Kubernetes list/watch protocol faithfully.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use klutch_sim::{FakeApi, SimControlPlane};
use serde_json::Value;
use tokio::net::TcpStream;

async fn send(api: &FakeApi, path: &str) -> hyper::Response<Incoming> {
    let stream = TcpStream::connect(api.addr()).await.expect("connect");
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .expect("handshake");
    tokio::spawn(conn);
    let req = hyper::Request::get(path)
        .header("host", "fake")
        .body(Empty::<Bytes>::new())
        .expect("request");
    sender.send_request(req).await.expect("response")
}

async fn get(api: &FakeApi, path: &str) -> (u16, Value) {
    let r = send(api, path).await;
    let status = r.status().as_u16();
    let body = r.into_body().collect().await.expect("body").to_bytes();
    (status, serde_json::from_slice(&body).expect("JSON"))
}

/// Reads watch events until `n` arrived or the stream ended.
async fn events(body: &mut Incoming, n: usize) -> Vec<Value> {
    let mut buf = Vec::new();
    let mut out = Vec::new();
    while out.len() < n {
        let frame = tokio::time::timeout(Duration::from_secs(10), body.frame())
            .await
            .expect("an event in time");
        match frame {
            Some(Ok(f)) => {
                if let Some(d) = f.data_ref() {
                    buf.extend_from_slice(d);
                }
            }
            _ => break,
        }
        while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=pos).collect();
            out.push(serde_json::from_slice(&line).expect("one JSON event per line"));
        }
    }
    out
}

fn names(list: &Value) -> Vec<String> {
    list["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| {
            i["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect()
}

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
