//! Graceful shutdown: `/readyz` fails at once, in-flight requests finish, the listener closes after
//! `shutdown_delay`, and the process exits 0.

use crate::common;

use std::time::{Duration, Instant};

use common::{backend_config, Service};
use klutch_sim::{BackendMode, FakeBackend};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn sigterm_fails_readyz_at_once_finishes_in_flight_requests_and_exits_0() {
    let backend = FakeBackend::start().await.expect("fake backend");
    backend.set_entry("postgresql-service-broker", "ok");
    let config = backend_config(&backend.url(), "[server]\nshutdown_delay = \"1500ms\"\n");
    let mut svc = Service::start(&config, &[]).await;
    svc.wait_for("/readyz", "passing", |r| r.status == 200)
        .await;

    // A request whose headers are half sent when the signal arrives.
    let mut in_flight = tokio::net::TcpStream::connect(svc.addr)
        .await
        .expect("connect");
    in_flight
        .write_all(b"GET /livez HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("send");

    let signalled = Instant::now();
    common::signal("TERM", svc.pid());
    let r = svc
        .wait_for("/readyz", "readyz to fail", |r| r.status == 503)
        .await;
    assert_eq!(r.body, "shutting down\n");
    let json = svc.get("/readyz?format=json").await;
    assert_eq!(
        (json.status, json.json()["status"].as_str()),
        (503, Some("fail"))
    );
    assert_eq!(json.json()["output"], "shutting down");
    assert_eq!(
        svc.get("/livez").await.status,
        200,
        "the process still serves during the delay"
    );
    assert_eq!(svc.get("/healthz").await.status, 200);

    in_flight
        .write_all(b"Connection: close\r\n\r\n")
        .await
        .expect("finish the request");
    let mut answer = Vec::new();
    in_flight.read_to_end(&mut answer).await.expect("read");
    assert!(
        String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200 OK"),
        "in-flight request answered"
    );

    assert_eq!(svc.wait_exit().await, Some(0));
    assert!(
        signalled.elapsed() >= Duration::from_millis(1500),
        "the listener stayed open for shutdown_delay"
    );
    assert!(
        tokio::net::TcpStream::connect(svc.addr).await.is_err(),
        "the listener is closed after exit"
    );
}

async fn passing_service(delay: &str) -> (FakeBackend, Service) {
    let backend = FakeBackend::start().await.expect("fake backend");
    backend.set_entry("postgresql-service-broker", "ok");
    let config = backend_config(
        &backend.url(),
        &format!("[server]\nshutdown_delay = \"{delay}\"\n"),
    );
    let svc = Service::start(&config, &[]).await;
    svc.wait_for("/readyz", "passing", |r| r.status == 200)
        .await;
    (backend, svc)
}

#[tokio::test]
async fn sigint_shuts_down_like_sigterm_and_every_readyz_form_says_so() {
    let (_backend, mut svc) = passing_service("2s").await;
    common::signal("INT", svc.pid());
    svc.wait_for("/readyz", "readyz to fail", |r| r.status == 503)
        .await;
    for path in [
        "/readyz?verbose",
        "/readyz/backend-status",
        "/readyz/backend-status/postgresql-service-broker",
        "/readyz?exclude=backend-status",
    ] {
        let r = svc.get(path).await;
        assert_eq!(
            (r.status, r.body.as_str()),
            (503, "shutting down\n"),
            "{path}"
        );
        assert_eq!(r.header("cache-control"), Some("no-store"), "{path}");
    }
    let head = common::request(svc.addr, "HEAD", "/readyz", &[]).await;
    assert_eq!((head.status, head.body.as_str()), (503, ""));
    let r = svc
        .get_with("/readyz", &[("Accept", "application/health+json")])
        .await;
    assert_eq!(r.status, 503);
    assert_eq!(r.header("content-type"), Some("application/health+json"));
    assert_eq!(r.json()["status"], "fail");
    // Everything else still answers during the delay.
    let r = svc.get("/healthz?verbose").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(svc.get("/backend-health").await.status, 200);
    assert_eq!(svc.get("/").await.status, 200);
    assert_eq!(svc.wait_exit().await, Some(0));
    assert!(
        svc.logs().iter().any(|l| l.contains("received SIGINT")),
        "{:?}",
        svc.logs()
    );
}

#[tokio::test]
async fn an_idle_keep_alive_connection_does_not_hold_up_the_exit() {
    let (_backend, mut svc) = passing_service("300ms").await;
    let mut idle = tokio::net::TcpStream::connect(svc.addr)
        .await
        .expect("connect");
    idle.write_all(b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("send");
    let mut buf = [0u8; 512];
    let n = idle.read(&mut buf).await.expect("read");
    assert!(
        String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200 OK"),
        "answered"
    );
    let signalled = Instant::now();
    common::signal("TERM", svc.pid());
    assert_eq!(svc.wait_exit().await, Some(0));
    // The drain timeout is 10s: an idle connection is closed at once instead of waited for.
    assert!(
        signalled.elapsed() < Duration::from_secs(8),
        "exited after {:?}",
        signalled.elapsed()
    );
    let mut rest = Vec::new();
    let n = idle.read_to_end(&mut rest).await.unwrap_or(0);
    assert_eq!(
        n, 0,
        "the idle connection was closed without another answer"
    );
}

/// Runs `klutch-health check ARGS` on `config`; returns the exit code and stdout.
fn check(config: &str, args: &[&str]) -> (Option<i32>, String, String) {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("config.toml");
    std::fs::write(&path, config).expect("write");
    let out = std::process::Command::new(common::BIN)
        .arg("--config")
        .arg(&path)
        .arg("check")
        .args(args)
        .env_remove("KUBECONFIG")
        .output()
        .expect("run check");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn the_check_command_exits_0_1_or_2_and_prints_text_or_json() {
    let backend = FakeBackend::start().await.expect("fake backend");
    backend.set_entry("postgresql-service-broker", "ok");
    let config = backend_config(&backend.url(), "");
    let (code, out, err) = tokio::task::block_in_place(|| check(&config, &[]));
    assert_eq!(code, Some(0), "{out}{err}");
    assert_eq!(
        out,
        "[+]backend-status/postgresql-service-broker ok\nreadyz check passed\n"
    );
    backend.set_entry("postgresql-backup-manager", "degraded");
    let (code, out, err) = tokio::task::block_in_place(|| check(&config, &[]));
    assert_eq!(code, Some(1), "{out}{err}");
    assert_eq!(
        out,
        "[-]backend-status/postgresql-backup-manager failed: degraded\n\
         [+]backend-status/postgresql-service-broker ok\nreadyz check failed\n"
    );
    let (code, out, err) = tokio::task::block_in_place(|| check(&config, &["--format", "json"]));
    assert_eq!(code, Some(1), "{out}{err}");
    let doc: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(doc["status"], "fail");
    assert_eq!(doc["checks"]["backend-status"][0]["output"], "degraded");
    // healthz's policy: the same failure with warn_only is a pass.
    let lenient = format!("{config}[endpoints.healthz]\nwarn_only = [\"backend-status\"]\n");
    let (code, out, err) =
        tokio::task::block_in_place(|| check(&lenient, &["--endpoint", "healthz"]));
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.ends_with("healthz check passed\n"), "{out}");
    // fail_after does not apply to one evaluation: a failure counts at once.
    let damped = format!("{config}[endpoints.readyz]\nfail_after = \"1h\"\n");
    let (code, _, _) = tokio::task::block_in_place(|| check(&damped, &[]));
    assert_eq!(code, Some(1));
    // An upstream that does not answer is a failure, not a hang.
    backend.set_mode(BackendMode::Hang);
    let (code, out, _) = tokio::task::block_in_place(|| check(&config, &[]));
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("[-]backend-status/_endpoint failed: GET "),
        "{out}"
    );
    assert!(out.contains("no answer within 500ms"), "{out}");
    // Configuration errors and bad flags: 2.
    let (code, _, err) = tokio::task::block_in_place(|| check("[server]\n", &[]));
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("no checks configured"), "{err}");
    let (code, _, err) = tokio::task::block_in_place(|| check(&config, &["--endpoint", "livez"]));
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("unknown endpoint \"livez\""), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn check_wait_bounds_the_wait_for_a_check_that_never_syncs() {
    // A Kubernetes API that is not there: the deployment check never delivers its initial list.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = closed.local_addr().expect("addr").port();
    drop(closed);
    let dir = tempfile::tempdir().expect("dir");
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: http://127.0.0.1:{port}\n\
             contexts:\n- name: c\n  context:\n    cluster: c\n    user: u\ncurrent-context: c\n\
             users:\n- name: u\n  user:\n    token: x\n"
        ),
    )
    .expect("kubeconfig");
    let backend = FakeBackend::start().await.expect("fake backend");
    backend.set_entry("postgresql-service-broker", "ok");
    let config = format!(
        "[kubernetes]\nkubeconfig = \"{}\"\n{}\
         [[check]]\nname = \"anynines-backend\"\ntype = \"deployment\"\nnamespace = \"bind\"\ndeployment = \"anynines-backend\"\n",
        kubeconfig.display(),
        backend_config(&backend.url(), "")
    );
    let started = Instant::now();
    let (code, out, err) = tokio::task::block_in_place(|| check(&config, &["--wait", "1s"]));
    let took = started.elapsed();
    assert_eq!(code, Some(1), "unknown fails readyz: {out}{err}");
    assert!(
        out.contains("[-]anynines-backend/anynines-backend failed: waiting for initial sync of deployments.apps in namespace bind"),
        "{out}"
    );
    assert!(
        out.contains("[+]backend-status/postgresql-service-broker ok"),
        "{out}"
    );
    assert!(took >= Duration::from_secs(1), "waited {took:?}");
    assert!(
        took < Duration::from_secs(15),
        "--wait 1s, not the default 30s: took {took:?}"
    );
    let (code, out, err) = tokio::task::block_in_place(|| {
        check(&config, &["--wait", "500ms", "--endpoint", "healthz"])
    });
    assert_eq!(code, Some(0), "unknown is warn on healthz: {out}{err}");
    assert!(
        out.contains("[+]anynines-backend/anynines-backend warn: "),
        "{out}"
    );
}

/// Each part of a check of several watches speaks for itself: a kind whose CRD is not there never syncs,
/// `check --wait` ends at its deadline naming that part alone, and the other kinds are judged.
#[tokio::test(flavor = "multi_thread")]
async fn check_wait_names_the_part_that_never_synced_and_judges_the_others() {
    let cp = klutch_sim::SimControlPlane::start()
        .await
        .expect("simulated control plane");
    let dir = tempfile::tempdir().expect("dir");
    let kubeconfig = common::kubeconfig(&cp.api, dir.path());
    let config = format!(
        "[kubernetes]\nkubeconfig = \"{kubeconfig}\"\n{}\
         [[check]]\nname = \"mr\"\ntype = \"managed-resources\"\nresources = [\"serviceinstances\", \"widgets\"]\n",
        backend_config(&cp.backend.url(), "")
    );
    let started = Instant::now();
    let (code, out, err) = tokio::task::block_in_place(|| check(&config, &["--wait", "2s"]));
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "ends at its deadline"
    );
    assert_eq!(code, Some(1), "an unknown kind fails readyz: {out}{err}");
    assert!(out.contains("[+]mr/serviceinstances ok"), "{out}");
    assert!(
        out.contains(
            "[-]mr/widgets failed: waiting for initial sync of widgets.dataservices.anynines.com"
        ),
        "{out}"
    );
    assert!(
        err.contains("mr/widgets never did") && !err.contains("mr/serviceinstances never"),
        "{err}"
    );
}
