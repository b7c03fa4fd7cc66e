//! A fake of provider-anynines' health server (`GET :8081/backend-health`). Written on raw TCP rather than
//! with an HTTP library so that it can misbehave exactly: hang, lie about Content-Length, reset, refuse.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::net::{rebind, stop_listening};

/// How the fake answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendMode {
    /// `200` with the entries as JSON, as the real server does (also when an entry is `degraded`).
    Healthy,
    /// `500 Failed to list provider configs`, as the real server does when it cannot list ProviderConfigs.
    Status500,
    /// Accepts the request and never answers.
    Hang,
    /// Answers like `Healthy`, after this delay.
    Slow(Duration),
    /// `200` with a body that is not JSON.
    Garbage,
    /// `200` with JSON that is not an object.
    NotObject,
    /// `200` with a JSON object of this many bytes.
    Huge(usize),
    /// Promises more body than it sends, then closes.
    Truncated,
    /// Closes the connection right after reading the request.
    Reset,
    /// Not listening: connections are refused.
    Refuse,
    /// `200` JSON in which every entry appears twice: first `degraded`, then with its value (the last
    /// duplicate is what a naive parser keeps).
    DuplicateKeys,
    /// `200` with the entries as JSON, but labelled `Content-Type: text/html`.
    Html,
}

struct Inner {
    addr: SocketAddr,
    entries: Mutex<BTreeMap<String, String>>,
    mode: watch::Sender<BackendMode>,
    requests: AtomicUsize,
    connections: AtomicUsize,
    /// The listening socket while not refusing, so that `Refuse` refuses at once.
    listener: Mutex<Option<Arc<TcpListener>>>,
}

/// The fake health server. Cheap to clone.
#[derive(Clone)]
pub struct FakeBackend {
    inner: Arc<Inner>,
}

impl FakeBackend {
    pub async fn start() -> anyhow::Result<FakeBackend> {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    pub async fn start_on(addr: SocketAddr) -> anyhow::Result<FakeBackend> {
        let listener = TcpListener::bind(addr).await?;
        let backend = FakeBackend {
            inner: Arc::new(Inner {
                addr: listener.local_addr()?,
                entries: Mutex::default(),
                mode: watch::channel(BackendMode::Healthy).0,
                requests: AtomicUsize::new(0),
                connections: AtomicUsize::new(0),
                listener: Mutex::default(),
            }),
        };
        backend.listen(listener);
        Ok(backend)
    }

    /// `http://127.0.0.1:PORT/backend-health`.
    pub fn url(&self) -> String {
        format!("http://{}/backend-health", self.inner.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.inner.addr
    }

    pub fn set_entries(&self, entries: BTreeMap<String, String>) {
        *lock(&self.inner.entries) = entries;
    }

    /// The entries the healthy body is made of.
    pub fn entries(&self) -> BTreeMap<String, String> {
        lock(&self.inner.entries).clone()
    }

    /// Sets one ProviderConfig's value: `"ok"` or `"degraded"`.
    pub fn set_entry(&self, name: &str, value: &str) {
        lock(&self.inner.entries).insert(name.to_string(), value.to_string());
    }

    pub fn mode(&self) -> BackendMode {
        self.inner.mode.borrow().clone()
    }

    pub fn set_mode(&self, mode: BackendMode) {
        let was_refusing = *self.inner.mode.borrow() == BackendMode::Refuse;
        let refuse = mode == BackendMode::Refuse;
        self.inner.mode.send_replace(mode);
        if refuse {
            if let Some(listener) = lock(&self.inner.listener).take() {
                stop_listening(&listener);
            }
        } else if was_refusing {
            match rebind(self.inner.addr) {
                Ok(listener) => self.listen(listener),
                Err(e) => eprintln!(
                    "fake backend cannot listen again on {}: {e}",
                    self.inner.addr
                ),
            }
        }
    }

    /// Requests read so far.
    pub fn request_count(&self) -> usize {
        self.inner.requests.load(Ordering::SeqCst)
    }

    /// TCP connections accepted so far (keep-alive keeps this at one).
    pub fn connection_count(&self) -> usize {
        self.inner.connections.load(Ordering::SeqCst)
    }

    fn listen(&self, listener: TcpListener) {
        let listener = Arc::new(listener);
        *lock(&self.inner.listener) = Some(listener.clone());
        tokio::spawn(self.clone().accept(listener));
    }

    async fn accept(self, listener: Arc<TcpListener>) {
        let mut mode = self.inner.mode.subscribe();
        loop {
            tokio::select! {
                biased;
                _ = refusing(&mut mode) => return,
                r = listener.accept() => match r {
                    Ok((stream, _)) => {
                        self.inner.connections.fetch_add(1, Ordering::SeqCst);
                        tokio::spawn(self.clone().serve(stream));
                    }
                    // Out of file descriptors, or the listener was shut down: do not spin.
                    Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                },
            }
        }
    }

    async fn serve(self, mut stream: TcpStream) {
        let mut buf = Vec::with_capacity(1024);
        loop {
            // Read one request head.
            let Some(end) = read_head(&mut stream, &mut buf).await else {
                return;
            };
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            buf.drain(..end);
            self.inner.requests.fetch_add(1, Ordering::SeqCst);
            let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
            let Some(result) = self.respond(&mut stream, &path).await else {
                return;
            };
            // Like Go's net/http: answer, then close when the client asked for it.
            if result.is_err() || wants_close(&head) {
                return;
            }
        }
    }

    /// Answers one request as the mode says; `None` when the connection is to end without an answer.
    async fn respond(&self, stream: &mut TcpStream, path: &str) -> Option<std::io::Result<()>> {
        let body = || {
            let entries = lock(&self.inner.entries).clone();
            serde_json::to_vec(&entries).unwrap_or_default()
        };
        let result = match self.mode() {
            _ if path.split('?').next() != Some("/backend-health") => {
                write(
                    stream,
                    "404 Not Found",
                    "text/plain",
                    b"404 page not found\n",
                )
                .await
            }
            BackendMode::Healthy => write(stream, "200 OK", "application/json", &body()).await,
            BackendMode::Html => write(stream, "200 OK", "text/html; charset=utf-8", &body()).await,
            BackendMode::DuplicateKeys => {
                let entries = lock(&self.inner.entries).clone();
                let body = duplicate_keys(&entries);
                write(stream, "200 OK", "application/json", body.as_bytes()).await
            }
            BackendMode::Slow(d) => {
                tokio::time::sleep(d).await;
                write(stream, "200 OK", "application/json", &body()).await
            }
            BackendMode::Status500 => {
                write(
                    stream,
                    "500 Internal Server Error",
                    "text/plain; charset=utf-8",
                    b"Failed to list provider configs",
                )
                .await
            }
            BackendMode::Hang => {
                // Never answer, but notice when the client gives up, so hung connections do not pile up.
                let _ = tokio::io::copy(stream, &mut tokio::io::sink()).await;
                return None;
            }
            BackendMode::Garbage => {
                write(
                    stream,
                    "200 OK",
                    "application/json",
                    b"<html><body>502 Bad Gateway</body></html>",
                )
                .await
            }
            BackendMode::NotObject => {
                write(stream, "200 OK", "application/json", b"[\"ok\"]").await
            }
            BackendMode::Huge(n) => {
                let mut huge = Vec::with_capacity(n);
                huge.extend_from_slice(b"{\"pad\":\"");
                huge.resize(n.saturating_sub(2).max(8), b'x');
                huge.extend_from_slice(b"\"}");
                write(stream, "200 OK", "application/json", &huge).await
            }
            BackendMode::Truncated => {
                let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"postgresql";
                let _ = stream.write_all(head.as_bytes()).await;
                return None;
            }
            BackendMode::Reset | BackendMode::Refuse => {
                // Linger 0: the close sends RST, so the client sees "connection reset by peer".
                let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
                return None;
            }
        };
        Some(result)
    }
}

/// `{"k":"degraded","k":"ok",…}`: what no JSON serializer writes, but a broken upstream may.
fn duplicate_keys(entries: &BTreeMap<String, String>) -> String {
    let fields: Vec<String> = entries
        .iter()
        .map(|(k, v)| {
            let k = serde_json::Value::from(k.as_str());
            let v = serde_json::Value::from(v.as_str());
            format!("{k}:\"degraded\",{k}:{v}")
        })
        .collect();
    format!("{{{}}}", fields.join(","))
}

fn wants_close(head: &str) -> bool {
    head.lines().any(|line| {
        line.split_once(':').is_some_and(|(name, value)| {
            name.trim().eq_ignore_ascii_case("connection")
                && value.trim().eq_ignore_ascii_case("close")
        })
    })
}

/// Resolves once the mode is `Refuse` (the borrowed value is not `Send`, so it is not kept).
async fn refusing(mode: &mut watch::Receiver<BackendMode>) {
    let _ = mode.wait_for(|m| *m == BackendMode::Refuse).await;
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Reads until the end of a request head; returns its length, or `None` when the peer closed.
async fn read_head(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<usize> {
    loop {
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            return Some(pos + 4);
        }
        if buf.len() > 64 * 1024 {
            return None;
        }
        let mut chunk = [0u8; 4096];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

async fn write(
    stream: &mut TcpStream,
    status: &str,
    content_type: &str,
    body: &[u8],
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await
}

/// Bodies that a real health server can produce and a careful poller must survive (as entries for
/// [`FakeBackend::set_entries`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OddEntries {
    /// `{}`: no ProviderConfig at all.
    Empty,
    /// A ProviderConfig named `endpoint`, like a poller's own item.
    Endpoint,
    /// Keys no Kubernetes object can have: one with a newline (and a forged log line), one with spaces.
    InvalidNames,
    /// This many `degraded` keys.
    Many(usize),
}

impl OddEntries {
    pub fn entries(self) -> BTreeMap<String, String> {
        let pairs: Vec<(String, &str)> = match self {
            OddEntries::Empty => Vec::new(),
            OddEntries::Endpoint => vec![("endpoint".into(), "degraded")],
            OddEntries::InvalidNames => vec![
                ("bad\nINFO forged log line".into(), "degraded"),
                ("name with spaces".into(), "ok"),
            ],
            OddEntries::Many(n) => (0..n).map(|i| (format!("pc-{i:05}"), "degraded")).collect(),
        };
        pairs.into_iter().map(|(k, v)| (k, v.to_string())).collect()
    }
}
