//! The listeners as outside callers meet them, through the real binary: probes are answered however many
//! keep-alive clients hold connections, each listener has its own connection table, HTTP/2 with prior
//! knowledge is served, and `[::]:PORT` accepts IPv4 and IPv6.

use crate::common;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use common::{backend_config, eventually, Service};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use klutch_sim::FakeBackend;
use tokio::net::TcpStream;

/// The bound a probe is never delayed beyond, whatever other clients do.
const PROBE_BOUND: Duration = Duration::from_secs(1);

/// A keep-alive HTTP/1.1 connection.
struct KeepAlive {
    sender: hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
}

impl KeepAlive {
    async fn open(addr: SocketAddr) -> Option<KeepAlive> {
        let stream = TcpStream::connect(addr).await.ok()?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .ok()?;
        tokio::spawn(conn);
        Some(KeepAlive { sender })
    }

    /// The status and body of `GET path`, or `None` when the connection was closed or nothing came within
    /// [`PROBE_BOUND`].
    async fn get(&mut self, path: &str) -> Option<(u16, String)> {
        let request = http::Request::get(path)
            .header("host", "klutch-health")
            .body(Empty::new())
            .ok()?;
        tokio::time::timeout(PROBE_BOUND, async {
            self.sender.ready().await.ok()?;
            let response = self.sender.send_request(request).await.ok()?;
            let status = response.status().as_u16();
            let body = response.into_body().collect().await.ok()?.to_bytes();
            Some((status, String::from_utf8_lossy(&body).into_owned()))
        })
        .await
        .ok()
        .flatten()
    }
}

/// A probe as kubelet makes one: a new connection, one request, answered within [`PROBE_BOUND`] or not at all.
async fn probe(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let started = tokio::time::Instant::now();
    let mut conn = tokio::time::timeout(PROBE_BOUND, KeepAlive::open(addr))
        .await
        .ok()
        .flatten()?;
    let left = PROBE_BOUND.saturating_sub(started.elapsed());
    tokio::time::timeout(left, conn.get(path))
        .await
        .ok()
        .flatten()
}

/// Twice `max_connections` clients that hold keep-alive connections: half idle after one request, half
/// sending one every 200 ms (reconnecting when closed). Returns the tasks, aborted on drop of the guard.
async fn crowd(addr: SocketAddr, limit: usize) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    for i in 0..2 * limit {
        let busy = i % 2 == 1;
        let mut conn = KeepAlive::open(addr).await.expect("connect");
        // Each has been active once, if it got in at all: whether it did is the probes' business below.
        let _ = conn.get("/livez").await;
        tasks.push(tokio::spawn(async move {
            loop {
                if busy {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    if conn.get("/livez").await.is_none() {
                        match KeepAlive::open(addr).await {
                            Some(c) => conn = c,
                            None => return,
                        }
                    }
                } else {
                    // Idle: holds the connection open, as a pooled client does.
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                }
            }
        }));
    }
    tasks
}

async fn started(extra_env: &[(&str, &str)]) -> (FakeBackend, Service) {
    let backend = FakeBackend::start().await.expect("fake backend");
    backend.set_entry("postgresql-service-broker", "ok");
    let mut env = vec![
        ("KLUTCH_HEALTH_SERVER__MAX_CONNECTIONS", "4"),
        ("KLUTCH_HEALTH_SERVER__PUBLIC_LISTEN", "127.0.0.1:0"),
        ("KLUTCH_HEALTH_SERVER__PUBLIC_MAX_CONNECTIONS", "4"),
    ];
    env.extend_from_slice(extra_env);
    let svc = Service::start(&backend_config(&backend.url(), ""), &env).await;
    svc.wait_for("/readyz", "the first poll", |r| r.status == 200)
        .await;
    (backend, svc)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_are_answered_while_twice_max_connections_clients_hold_keep_alive_connections() {
    let (_backend, svc) = started(&[]).await;
    let public = svc.public_addr().await;
    for addr in [svc.addr, public] {
        let clients = crowd(addr, 4).await;
        for round in 0..5 {
            for path in ["/livez", "/readyz", "/healthz"] {
                let answer = probe(addr, path).await;
                assert_eq!(
                    answer.map(|(status, _)| status),
                    Some(200),
                    "{path} on {addr} (round {round}) within {PROBE_BOUND:?} while 8 clients hold connections"
                );
            }
        }
        for c in clients {
            c.abort();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_listener_has_its_own_connection_table() {
    let (_backend, svc) = started(&[]).await;
    let public = svc.public_addr().await;
    // One idle connection on the main listener, then more clients than its limit on the public one.
    let mut kubelet = KeepAlive::open(svc.addr).await.expect("connect");
    assert_eq!(kubelet.get("/livez").await.map(|r| r.0), Some(200));
    let flood = crowd(public, 4).await;
    for _ in 0..8 {
        assert_eq!(probe(public, "/livez").await.map(|r| r.0), Some(200));
    }
    // A shared table would have closed it: it was the least recently active of all.
    assert_eq!(
        kubelet.get("/livez").await.map(|r| r.0),
        Some(200),
        "the main listener's connection survives a flood on the public one"
    );
    for c in flood {
        c.abort();
    }
    // The public listener is the public audience: health paths only, reasons withheld.
    let r = probe(public, "/metrics").await.expect("an answer");
    assert_eq!(r.0, 404, "{}", r.1);
    let r = probe(svc.addr, "/metrics").await.expect("an answer");
    assert_eq!(r.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_with_prior_knowledge_is_served() {
    let (_backend, svc) = started(&[]).await;
    let public = svc.public_addr().await;
    for addr in [svc.addr, public] {
        let stream = TcpStream::connect(addr).await.expect("connect");
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .expect("an HTTP/2 handshake");
        tokio::spawn(conn);
        for path in ["/livez", "/readyz", "/healthz?verbose"] {
            let request = http::Request::get(format!("http://{addr}{path}"))
                .body(Empty::<Bytes>::new())
                .expect("request");
            let response = tokio::time::timeout(PROBE_BOUND, sender.send_request(request))
                .await
                .expect("an answer in time")
                .expect("an HTTP/2 answer");
            assert_eq!(response.version(), http::Version::HTTP_2);
            assert_eq!(response.status(), 200, "{path} on {addr}");
            let body = response
                .into_body()
                .collect()
                .await
                .expect("body")
                .to_bytes();
            assert!(
                body.ends_with(b"ok") || body.ends_with(b"passed\n"),
                "{body:?}"
            );
        }
    }
    // curl, as a monitor would use it, where installed.
    if let Ok(out) = std::process::Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "5",
            "--http2-prior-knowledge",
            "-w",
            "\n%{http_version} %{http_code}",
            &format!("http://{}/readyz", svc.addr),
        ])
        .output()
    {
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            text,
            "ok\n2 200",
            "curl: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[tokio::test]
async fn the_unspecified_ipv6_address_accepts_ipv4_and_ipv6_clients() {
    let listener = klutch_health::http::listen::bind("[::]:0".parse().expect("address"), "test")
        .expect("a dual-stack socket");
    let port = listener.local_addr().expect("address").port();
    let accept = tokio::spawn(async move {
        let mut peers = Vec::new();
        for _ in 0..2 {
            let (_, peer) = listener.accept().await.expect("accept");
            peers.push(peer);
        }
        peers
    });
    for ip in ["127.0.0.1", "::1"] {
        let addr = SocketAddr::new(ip.parse().expect("ip"), port);
        tokio::time::timeout(PROBE_BOUND, TcpStream::connect(addr))
            .await
            .expect("connected in time")
            .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    }
    let peers = accept.await.expect("accepted");
    assert_eq!(peers.len(), 2);
}

#[test]
fn without_ipv6_the_unspecified_address_falls_back_to_ipv4_and_nothing_else_does() {
    use klutch_health::http::listen::ipv4_fallback;
    use std::io::Error;
    let any6: SocketAddr = "[::]:8080".parse().expect("address");
    for errno in [libc::EAFNOSUPPORT, libc::EADDRNOTAVAIL] {
        assert_eq!(
            ipv4_fallback(any6, &Error::from_raw_os_error(errno)),
            Some("0.0.0.0:8080".parse().expect("address")),
            "errno {errno}"
        );
    }
    // A taken port is an error to report, not a reason to move to another address.
    assert_eq!(
        ipv4_fallback(any6, &Error::from_raw_os_error(libc::EADDRINUSE)),
        None
    );
    // Only the unspecified address has an IPv4 twin.
    let loopback6: SocketAddr = "[::1]:8080".parse().expect("address");
    assert_eq!(
        ipv4_fallback(loopback6, &Error::from_raw_os_error(libc::EADDRNOTAVAIL)),
        None
    );
}

#[tokio::test]
async fn both_listeners_log_their_address() {
    let (_backend, svc) = started(&[]).await;
    let public = svc.public_addr().await;
    assert_ne!(public, svc.addr);
    let listening = eventually("two listening lines", async || {
        let n = svc
            .logs()
            .iter()
            .filter(|l| l.contains("\"message\":\"listening\""))
            .count();
        (n == 2).then_some(n)
    })
    .await;
    assert_eq!(listening, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_limit_the_least_recently_active_connection_is_closed() {
    let (_backend, svc) = started(&[]).await;
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut c = KeepAlive::open(svc.addr).await.expect("connect");
        assert!(c.get("/livez").await.is_some());
        held.push(c);
    }
    // The first becomes the most recently active; the second is now the least.
    assert!(held[0].get("/livez").await.is_some());
    let mut newcomer = KeepAlive::open(svc.addr).await.expect("connect");
    assert_eq!(newcomer.get("/livez").await.map(|r| r.0), Some(200));
    eventually(
        "the least recently active connection to be closed",
        async || held[1].sender.is_closed().then_some(()),
    )
    .await;
    for i in [0, 2, 3] {
        assert!(!held[i].sender.is_closed(), "connection {i} stays open");
    }
    assert!(held[0].get("/livez").await.is_some());
}

/// Clients that only connect and close, on threads of their own, until dropped.
struct Churn {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Churn {
    fn start(addr: SocketAddr, threads: usize) -> Churn {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let threads = (0..threads)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    // Paced (thousands a second in all), so that the kernel's accept queue never overflows:
                    // a flood beyond it delays every connect, which no server can help.
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        let _ = std::net::TcpStream::connect_timeout(&addr, PROBE_BOUND);
                        std::thread::sleep(Duration::from_micros(500));
                    }
                })
            })
            .collect();
        Churn { stop, threads }
    }
}

impl Drop for Churn {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Connections that are opened and closed again without a request take slots too: at the limit they are
/// closed to admit a newcomer, never a connection whose request has arrived and is being answered. A few
/// threads doing nothing but that once made 3 to 6 of 45 probes fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_are_answered_while_clients_only_connect_and_close() {
    let (_backend, svc) = started(&[]).await;
    let public = svc.public_addr().await;
    for addr in [public, svc.addr] {
        let churn = Churn::start(addr, 3);
        let mut failed = Vec::new();
        for round in 0..15 {
            for path in ["/livez", "/readyz", "/healthz"] {
                if probe(addr, path).await.map(|(status, _)| status) != Some(200) {
                    failed.push(format!("{path} (round {round})"));
                }
            }
        }
        drop(churn);
        assert!(
            failed.is_empty(),
            "on {addr}, {} of 45 probes unanswered within {PROBE_BOUND:?}: {failed:?}",
            failed.len()
        );
    }
}
