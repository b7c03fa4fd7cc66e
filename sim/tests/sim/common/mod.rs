//! Helpers for the fake API's tests: raw requests with a timeout and a watch-event reader.

#![allow(dead_code)] // each test file uses a part

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use klutch_sim::FakeApi;
use serde_json::Value;
use tokio::net::TcpStream;

/// How long any one request may take before the test fails.
pub const TIMEOUT: Duration = Duration::from_secs(10);

pub async fn send(api: &FakeApi, path: &str) -> hyper::Response<Incoming> {
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
    tokio::time::timeout(TIMEOUT, sender.send_request(req))
        .await
        .expect("an answer in time")
        .expect("response")
}

pub async fn get(api: &FakeApi, path: &str) -> (u16, Value) {
    let r = send(api, path).await;
    let status = r.status().as_u16();
    let body = tokio::time::timeout(TIMEOUT, r.into_body().collect())
        .await
        .expect("the whole body in time")
        .expect("body")
        .to_bytes();
    (status, serde_json::from_slice(&body).expect("JSON"))
}

/// Reads watch events until `n` arrived or the stream ended.
pub async fn events(body: &mut Incoming, n: usize) -> Vec<Value> {
    let mut buf = Vec::new();
    let mut out = Vec::new();
    while out.len() < n {
        let frame = tokio::time::timeout(TIMEOUT, body.frame())
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

pub fn names(list: &Value) -> Vec<String> {
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

/// The next frame of a watch, or `None` when nothing arrived within `window` (to show that nothing is sent).
pub async fn frame_within(body: &mut Incoming, window: Duration) -> Option<Vec<u8>> {
    match tokio::time::timeout(window, body.frame()).await {
        Ok(Some(Ok(f))) => Some(f.into_data().map(|d| d.to_vec()).unwrap_or_default()),
        Ok(_) => Some(Vec::new()),
        Err(_) => None,
    }
}

/// A write (`POST`, `PUT`, `PATCH`) with a JSON body: (status code, JSON answer).
pub async fn write(api: &FakeApi, method: &str, path: &str, body: &Value) -> (u16, Value) {
    let stream = TcpStream::connect(api.addr()).await.expect("connect");
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .expect("handshake");
    tokio::spawn(conn);
    let content_type = if method == "PATCH" {
        "application/merge-patch+json"
    } else {
        "application/json"
    };
    let req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "fake")
        .header("content-type", content_type)
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("request");
    let r = tokio::time::timeout(TIMEOUT, sender.send_request(req))
        .await
        .expect("an answer in time")
        .expect("response");
    let status = r.status().as_u16();
    let bytes = tokio::time::timeout(TIMEOUT, r.into_body().collect())
        .await
        .expect("the whole body in time")
        .expect("body")
        .to_bytes();
    (status, serde_json::from_slice(&bytes).expect("JSON"))
}
