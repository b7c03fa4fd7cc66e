//! The fake provider-anynines health server answers, and misbehaves, like the real one.

use std::time::Duration;

use klutch_sim::{BackendMode, FakeBackend, OddEntries};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const REQUEST: &[u8] = b"GET /backend-health HTTP/1.1\r\nHost: fake\r\n\r\n";

async fn connect(backend: &FakeBackend) -> TcpStream {
    TcpStream::connect(backend.addr()).await.expect("connect")
}

/// One response on an open connection: (status line, headers, body), read by Content-Length.
async fn response(stream: &mut TcpStream) -> (String, String, Vec<u8>) {
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.expect("read");
        assert!(n > 0, "closed before a full head: {buf:?}");
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .and_then(|l| l.trim().parse().ok())
        .expect("Content-Length");
    let mut body = buf[head_end..].to_vec();
    while body.len() < length {
        let mut chunk = vec![0u8; 64 * 1024];
        let n = stream.read(&mut chunk).await.expect("read body");
        assert!(n > 0, "closed before the promised body");
        body.extend_from_slice(&chunk[..n]);
    }
    let status = head.lines().next().unwrap_or_default().to_string();
    (status, head, body)
}

async fn ask(backend: &FakeBackend) -> (String, String, Vec<u8>) {
    let mut s = connect(backend).await;
    s.write_all(REQUEST).await.expect("write");
    tokio::time::timeout(Duration::from_secs(10), response(&mut s))
        .await
        .expect("an answer in time")
}

/// Everything the server sends until it closes, with whether it closed by reset.
async fn until_closed(stream: &mut TcpStream) -> (Vec<u8>, bool) {
    let mut all = Vec::new();
    loop {
        let mut chunk = [0u8; 4096];
        match tokio::time::timeout(Duration::from_secs(10), stream.read(&mut chunk))
            .await
            .expect("closes in time")
        {
            Ok(0) => return (all, false),
            Ok(n) => all.extend_from_slice(&chunk[..n]),
            Err(_) => return (all, true),
        }
    }
}

#[tokio::test]
async fn healthy_answers_200_json_also_when_degraded_and_keeps_the_connection() {
    let backend = FakeBackend::start().await.expect("start");
    assert!(backend.url().ends_with("/backend-health"));
    backend.set_entry("postgresql-service-broker", "ok");
    backend.set_entry("postgresql-backup-manager", "degraded");
    let mut s = connect(&backend).await;
    for _ in 0..2 {
        s.write_all(REQUEST).await.expect("write");
        let (status, head, body) = response(&mut s).await;
        assert_eq!(status, "HTTP/1.1 200 OK");
        assert!(head.contains("Content-Type: application/json"), "{head}");
        let v: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
        assert_eq!(
            v,
            serde_json::json!({"postgresql-backup-manager": "degraded",
                               "postgresql-service-broker": "ok"})
        );
    }
    assert_eq!(backend.request_count(), 2);
    assert_eq!(backend.connection_count(), 1, "keep-alive: one connection");

    backend.set_entries([("only".to_string(), "ok".to_string())].into());
    let (_, _, body) = ask(&backend).await;
    assert_eq!(body, br#"{"only":"ok"}"#);
    assert_eq!(backend.connection_count(), 2);

    let mut s = connect(&backend).await;
    s.write_all(b"GET /other HTTP/1.1\r\nHost: fake\r\n\r\n")
        .await
        .expect("write");
    let (status, _, _) = response(&mut s).await;
    assert_eq!(status, "HTTP/1.1 404 Not Found");
}

#[tokio::test]
async fn error_modes_answer_like_a_broken_provider() {
    let backend = FakeBackend::start().await.expect("start");
    backend.set_entry("a", "ok");

    backend.set_mode(BackendMode::Status500);
    let (status, head, body) = ask(&backend).await;
    assert_eq!(status, "HTTP/1.1 500 Internal Server Error");
    assert!(head.contains("text/plain"), "{head}");
    assert_eq!(body, b"Failed to list provider configs");

    backend.set_mode(BackendMode::Garbage);
    let (status, _, body) = ask(&backend).await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(serde_json::from_slice::<serde_json::Value>(&body).is_err());

    backend.set_mode(BackendMode::NotObject);
    let (_, _, body) = ask(&backend).await;
    assert_eq!(body, br#"["ok"]"#);

    backend.set_mode(BackendMode::Huge(2 * 1024 * 1024));
    let (status, _, body) = ask(&backend).await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert_eq!(body.len(), 2 * 1024 * 1024);
    assert!(serde_json::from_slice::<serde_json::Value>(&body).is_ok_and(|v| v.is_object()));

    backend.set_mode(BackendMode::Truncated);
    let mut s = connect(&backend).await;
    s.write_all(REQUEST).await.expect("write");
    let (sent, _) = until_closed(&mut s).await;
    let sent = String::from_utf8_lossy(&sent).to_string();
    let (head, body) = sent.split_once("\r\n\r\n").expect("a head");
    let promised: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .and_then(|l| l.parse().ok())
        .expect("Content-Length");
    assert!(body.len() < promised, "sent {} of {promised}", body.len());

    backend.set_mode(BackendMode::Reset);
    let mut s = connect(&backend).await;
    s.write_all(REQUEST).await.expect("write");
    let (sent, reset) = until_closed(&mut s).await;
    assert!(sent.is_empty() && reset, "reset without an answer");

    backend.set_mode(BackendMode::Healthy);
    let (status, _, _) = ask(&backend).await;
    assert_eq!(status, "HTTP/1.1 200 OK");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hang_and_slow_delay_and_refuse_refuses_until_another_mode() {
    let backend = FakeBackend::start().await.expect("start");
    backend.set_mode(BackendMode::Hang);
    let mut s = connect(&backend).await;
    s.write_all(REQUEST).await.expect("write");
    let mut byte = [0u8; 1];
    assert!(
        tokio::time::timeout(Duration::from_millis(300), s.read(&mut byte))
            .await
            .is_err(),
        "no answer while hanging"
    );
    drop(s);

    backend.set_mode(BackendMode::Slow(Duration::from_millis(300)));
    let start = std::time::Instant::now();
    let (status, _, _) = ask(&backend).await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(start.elapsed() >= Duration::from_millis(300));

    backend.set_mode(BackendMode::Refuse);
    let refused = TcpStream::connect(backend.addr()).await;
    assert_eq!(
        refused.map(|_| ()).map_err(|e| e.kind()),
        Err(std::io::ErrorKind::ConnectionRefused),
        "refused at once"
    );
    backend.set_mode(BackendMode::Healthy);
    let (status, _, _) = ask(&backend).await;
    assert_eq!(status, "HTTP/1.1 200 OK");
}

#[tokio::test]
async fn odd_bodies_duplicate_keys_html_and_odd_entries() {
    let backend = FakeBackend::start().await.expect("start");
    backend.set_entries(
        [
            ("a".to_string(), "ok".to_string()),
            ("b\nc".to_string(), "ok".to_string()),
        ]
        .into(),
    );
    backend.set_mode(BackendMode::DuplicateKeys);
    let (status, head, body) = ask(&backend).await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(head.contains("Content-Type: application/json"), "{head}");
    assert_eq!(
        String::from_utf8_lossy(&body),
        r#"{"a":"degraded","a":"ok","b\nc":"degraded","b\nc":"ok"}"#
    );

    backend.set_mode(BackendMode::Html);
    let (status, head, body) = ask(&backend).await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(head.contains("Content-Type: text/html"), "{head}");
    let v: serde_json::Value = serde_json::from_slice(&body).expect("still JSON");
    assert_eq!(v["a"], "ok");

    backend.set_mode(BackendMode::Healthy);
    for (odd, expected) in [
        (OddEntries::Empty, "{}".to_string()),
        (
            OddEntries::Endpoint,
            r#"{"endpoint":"degraded"}"#.to_string(),
        ),
        (
            OddEntries::InvalidNames,
            r#"{"bad\nINFO forged log line":"degraded","name with spaces":"ok"}"#.to_string(),
        ),
    ] {
        backend.set_entries(odd.entries());
        let (_, _, body) = ask(&backend).await;
        assert_eq!(String::from_utf8_lossy(&body), expected, "{odd:?}");
    }
    backend.set_entries(OddEntries::Many(10_000).entries());
    let (_, _, body) = ask(&backend).await;
    let v: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
    assert_eq!(v.as_object().map(|o| o.len()), Some(10_000));
    assert_eq!(v["pc-09999"], "degraded");
}
