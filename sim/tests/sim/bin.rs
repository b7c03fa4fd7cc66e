//! The `klutch-sim` program: `serve` with its control API, and `demo` starting klutch-health.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_klutch-sim");

/// One HTTP/1.1 exchange on a fresh connection: (status code, body).
fn http(base: &str, method: &str, path: &str, body: &str) -> (u16, String) {
    let addr = base.trim_start_matches("http://").trim_end_matches('/');
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: sim\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    let code = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status line");
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (code, body)
}

/// The control API adds noisy pods and odd backend bodies.
fn pod_and_backend_body_verbs(control: &str, api: &str, backend_addr: &str, backend_path: &str) {
    let pod = http(control, "POST", "/pod/evicted/add", "");
    assert_eq!(pod.0, 200);
    let pod_path = format!("/api/v1/namespaces/crossplane-system/pods/{}", pod.1.trim());
    let (code, evicted) = http(api, "GET", &pod_path, "");
    assert_eq!(code, 200);
    assert!(evicted.contains(r#""reason":"Evicted""#), "{evicted}");
    assert_eq!(http(control, "POST", "/pod/evicted/remove", "").0, 200);
    assert_eq!(http(api, "GET", &pod_path, "").0, 404);
    assert_eq!(http(control, "POST", "/pod/sleepy/add", "").0, 400);
    assert_eq!(http(control, "POST", "/backend/mode/healthy", "").0, 200);
    assert_eq!(http(control, "POST", "/backend/entries/empty", "").0, 200);
    assert_eq!(http(backend_addr, "GET", backend_path, "").1, "{}");
    assert_eq!(http(control, "POST", "/backend/entries/seeded", "").0, 200);
    let (_, body) = http(backend_addr, "GET", backend_path, "");
    assert!(
        body.contains(r#""postgresql-service-broker":"ok""#),
        "{body}"
    );
}

/// The control API's fault verbs for the fake API reach it.
fn api_fault_verbs(control: &str, api: &str) {
    const WATCH: &str = "/apis/pkg.crossplane.io/v1/providers?watch=true&timeoutSeconds=1";
    assert_eq!(http(control, "POST", "/api/watch/forbidden", "").0, 200);
    assert_eq!(http(api, "GET", WATCH, "").0, 403);
    assert_eq!(http(control, "POST", "/api/watch/ok", "").0, 200);
    assert_eq!(http(api, "GET", WATCH, "").0, 200);
    assert_eq!(
        http(control, "POST", "/api/watch/providers/forbidden", "").0,
        200
    );
    assert_eq!(http(api, "GET", WATCH, "").0, 403);
    assert_eq!(http(control, "POST", "/api/watch/providers/ok", "").0, 200);
    assert_eq!(http(api, "GET", WATCH, "").0, 200);
    assert_eq!(
        http(control, "POST", "/api/endless/providers/on", "").0,
        200
    );
    let (_, page) = http(
        api,
        "GET",
        "/apis/pkg.crossplane.io/v1/providers?limit=1",
        "",
    );
    assert!(page.contains(r#""continue":"endless-1""#), "{page}");
    assert_eq!(
        http(control, "POST", "/api/endless/providers/off", "").0,
        200
    );
    assert_eq!(http(control, "POST", "/api/bookmarks/off", "").0, 200);
    assert_eq!(http(control, "POST", "/api/bookmarks/on", "").0, 200);

    assert_eq!(http(control, "POST", "/api/freeze", "").0, 200);
    let addr = api.trim_start_matches("http://");
    let mut s = TcpStream::connect(addr).expect("frozen: connections are still accepted");
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .expect("timeout");
    write!(s, "GET /version HTTP/1.1\r\nHost: sim\r\n\r\n").expect("write");
    let mut buf = [0u8; 64];
    assert!(
        s.read(&mut buf).is_err(),
        "frozen: /version is not answered"
    );
    assert_eq!(http(control, "POST", "/api/unfreeze", "").0, 200);
    assert_eq!(http(api, "GET", "/version", "").0, 200);
}

/// Waits for the child to exit, within a deadline.
/// The control API flips managed resources through every state, seeds many, and deletes a CRD.
fn managed_verbs(control: &str, api: &str) {
    let instance = || {
        let (code, body) = http(
            api,
            "GET",
            "/apis/dataservices.anynines.com/v1/serviceinstances/pg-prod-7",
            "",
        );
        assert_eq!(code, 200, "{body}");
        serde_json::from_str::<serde_json::Value>(&body).expect("JSON")
    };
    let condition = |v: &serde_json::Value, type_: &str| {
        let c = v["status"]["conditions"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["type"] == type_).cloned())
            .unwrap_or_default();
        format!(
            "{}/{}",
            c["status"].as_str().unwrap_or(""),
            c["reason"].as_str().unwrap_or("")
        )
    };
    let v = instance();
    assert_eq!(
        (condition(&v, "Ready"), condition(&v, "Synced")),
        ("True/Available".into(), "True/ReconcileSuccess".into()),
        "seeded ready"
    );
    let post = |path: &str| http(control, "POST", path, "").0;
    assert_eq!(post("/managed/serviceinstances/pg-prod-7/failing"), 200);
    assert_eq!(condition(&instance(), "Synced"), "False/ReconcileError");
    assert_eq!(post("/managed/serviceinstances/pg-prod-7/paused"), 200);
    let v = instance();
    assert_eq!(v["metadata"]["annotations"]["crossplane.io/paused"], "true");
    assert_eq!(post("/managed/serviceinstances/pg-prod-7/pending"), 200);
    let v = instance();
    assert!(
        v["metadata"]["annotations"]
            .get("crossplane.io/paused")
            .is_none(),
        "{v}"
    );
    assert!(v["status"]["pendingOperation"].is_string(), "{v}");
    assert_eq!(post("/managed/serviceinstances/pg-prod-7/deleting"), 200);
    assert!(instance()["metadata"]["deletionTimestamp"].is_string());
    assert_eq!(post("/managed/serviceinstances/pg-prod-7/ready"), 200);
    assert!(instance()["metadata"].get("deletionTimestamp").is_none());
    assert_eq!(
        post("/managed/backups/pg-prod-7-nightly/pending"),
        400,
        "ServiceInstances only"
    );
    assert_eq!(post("/managed/widgets/w/ready"), 400);
    assert_eq!(post("/managed/backups/b/sleepy"), 400);
    assert_eq!(post("/managed/backups/new-one/creating"), 200, "created");
    assert_eq!(post("/managed/backups/new-one/remove"), 200);
    assert_eq!(post("/managed/backups/new-one/remove"), 400, "gone");
    let (code, prefix) = http(
        control,
        "POST",
        "/managed/serviceinstances/many/30/failing/redis-service-broker",
        "",
    );
    assert_eq!((code, prefix.trim()), (200, "redis-service-broker-failing"));
    let (_, list) = http(
        api,
        "GET",
        "/apis/dataservices.anynines.com/v1/serviceinstances",
        "",
    );
    let list: serde_json::Value = serde_json::from_str(&list).expect("JSON");
    assert_eq!(list["items"].as_array().map(Vec::len), Some(31));
    assert_eq!(post("/managed/serviceinstances/many/lots"), 400);

    assert_eq!(post("/crd/backups.dataservices.anynines.com/delete"), 200);
    let backups = "/apis/dataservices.anynines.com/v1/backups";
    assert_eq!(http(api, "GET", backups, "").0, 404);
    let (_, discovery) = http(api, "GET", "/apis/dataservices.anynines.com/v1", "");
    assert!(
        !discovery.contains("\"backups\"") && discovery.contains("\"restores\""),
        "{discovery}"
    );
    assert_eq!(post("/crd/backups.dataservices.anynines.com/create"), 200);
    let (code, body) = http(api, "GET", backups, "");
    assert_eq!(code, 200);
    assert!(body.contains("\"items\":[]"), "back empty: {body}");
    assert_eq!(post("/crd/widgets.example.com/delete"), 400);
}

fn exit_code(child: &mut Child) -> Option<i32> {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status.code();
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "did not exit in time"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Kills the child when a failed assertion unwinds, so an orphan cannot hold the test's pipes open.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn term(child: &Child) {
    let ok = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .expect("kill");
    assert!(ok.success());
}

const EPHEMERAL: [&str; 6] = [
    "--api",
    "127.0.0.1:0",
    "--backend",
    "127.0.0.1:0",
    "--control",
    "127.0.0.1:0",
];

#[test]
fn serve_prints_its_addresses_and_the_control_api_flips_faults() {
    let dir = tempfile::tempdir().expect("dir");
    let kc = dir.path().join("kubeconfig");
    let mut child = Reaped(
        Command::new(BIN)
            .arg("serve")
            .args(EPHEMERAL)
            .arg("--kubeconfig")
            .arg(&kc)
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn klutch-sim serve"),
    );
    let mut lines = BufReader::new(child.0.stdout.take().expect("stdout")).lines();
    let mut addr = |label: &str| -> String {
        let line = lines.next().expect("a line").expect("text");
        assert!(line.starts_with(label), "{line}");
        line.rsplit(' ').next().unwrap_or_default().to_string()
    };
    let api = addr("fake Kubernetes API:");
    let backend = addr("fake provider-anynines:");
    assert_eq!(addr("kubeconfig:"), kc.display().to_string());
    let control = addr("control API:");
    assert!(std::fs::read_to_string(&kc)
        .expect("kubeconfig")
        .contains(&api));

    let (code, help) = http(&control, "GET", "/", "");
    assert_eq!(code, 200);
    assert!(help.contains("/providerconfig/NAME/degrade"), "{help}");

    let healthy = |want: &str| {
        let (_, body) = http(
            &api,
            "GET",
            "/apis/pkg.crossplane.io/v1/providers/provider-anynines",
            "",
        );
        let v: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        let conditions = v["status"]["conditions"].as_array().cloned();
        conditions
            .unwrap_or_default()
            .iter()
            .any(|c| c["type"] == "Healthy" && c["status"] == want)
    };
    assert!(healthy("True"));
    assert_eq!(
        http(
            &control,
            "POST",
            "/provider/provider-anynines/unhealthy",
            ""
        )
        .0,
        200
    );
    assert!(healthy("False"));

    let backend_path = backend.split_once("127.0.0.1:").map(|(_, p)| p);
    let (backend_addr, backend_path) = backend_path
        .and_then(|p| p.split_once('/'))
        .map(|(port, path)| (format!("127.0.0.1:{port}"), format!("/{path}")))
        .expect("backend URL");
    assert_eq!(
        http(
            &control,
            "POST",
            "/providerconfig/postgresql-backup-manager/degrade",
            ""
        )
        .0,
        200
    );
    let (code, body) = http(&backend_addr, "GET", &backend_path, "");
    assert_eq!(code, 200);
    assert!(
        body.contains(r#""postgresql-backup-manager":"degraded""#),
        "{body}"
    );
    assert_eq!(http(&control, "POST", "/backend/mode/500", "").0, 200);
    assert_eq!(http(&backend_addr, "GET", &backend_path, "").0, 500);
    assert_eq!(http(&control, "POST", "/backend/mode/nonsense", "").0, 400);

    let objects = r#"[{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"bulk-1"}},
                      {"apiVersion":"v1","kind":"Namespace","metadata":{"name":"bulk-2"}}]"#;
    assert_eq!(http(&control, "POST", "/objects", objects).0, 200);
    assert_eq!(http(&control, "POST", "/objects", "{not json").0, 400);
    let widget = r#"{"apiVersion":"example.com/v1","kind":"Widget","metadata":{"name":"w"}}"#;
    let (code, text) = http(&control, "POST", "/objects", widget);
    assert_eq!(code, 400, "{text}");
    assert!(text.contains("does not serve kind \"Widget\""), "{text}");
    assert_eq!(http(&api, "GET", "/api/v1/namespaces/bulk-2", "").0, 200);

    api_fault_verbs(&control, &api);
    pod_and_backend_body_verbs(&control, &api, &backend_addr, &backend_path);
    managed_verbs(&control, &api);

    let (code, stats) = http(&control, "GET", "/stats", "");
    assert_eq!(code, 200);
    let stats: serde_json::Value = serde_json::from_str(&stats).expect("JSON");
    assert!(
        stats["api_requests"].as_u64().is_some_and(|n| n >= 3),
        "{stats}"
    );
    assert!(
        stats["backend_requests"].as_u64().is_some_and(|n| n >= 2),
        "{stats}"
    );
    assert_eq!(http(&control, "POST", "/nope", "").0, 404);

    term(&child.0);
    assert_eq!(
        exit_code(&mut child.0),
        Some(0),
        "SIGTERM stops serve cleanly"
    );
}

/// A directory beside the built binaries, holding a hard link to klutch-sim (its `current_exe` then names
/// this directory) and, when given, a stand-in `klutch-health` script.
fn demo_dir(klutch_health: Option<&str>) -> (tempfile::TempDir, PathBuf) {
    let target = Path::new(BIN).parent().expect("target dir");
    let dir = tempfile::tempdir_in(target).expect("dir");
    let sim = dir.path().join("klutch-sim");
    std::fs::hard_link(BIN, &sim).expect("hard link klutch-sim");
    if let Some(script) = klutch_health {
        let path = dir.path().join("klutch-health");
        std::fs::write(&path, script).expect("script");
        let mut perm = std::fs::metadata(&path).expect("meta").permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o755);
        std::fs::set_permissions(&path, perm).expect("chmod");
    }
    (dir, sim)
}

/// One test for every demo case: scripts are written and executed, and a parallel fork elsewhere in
/// this process could otherwise hold a script open for writing ("text file busy").
#[test]
fn demo_needs_klutch_health_passes_config_and_kubeconfig_and_forwards_signals() {
    // Without klutch-health next to it: a clear message, before anything starts.
    let (_dir, sim) = demo_dir(None);
    let out = Command::new(&sim)
        .arg("demo")
        .args(EPHEMERAL)
        .output()
        .expect("run demo");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("build it first: cargo build --workspace"),
        "{err}"
    );

    // With a stand-in that records what it was given and exits 3: the demo exits 3 too.
    let (dir, sim) = demo_dir(Some(
        "#!/bin/sh\nd=$(dirname \"$0\")\necho \"$@\" > \"$d/args\"\ncp \"$2\" \"$d/seen-config.toml\"\n\
         cp \"$KUBECONFIG\" \"$d/seen-kubeconfig\"\nexit 3\n",
    ));
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        "[server]\nlisten = \"0.0.0.0:8080\"\n\n[[check]]\nname = \"b\"\ntype = \"backend-status\"\n\
         url = \"http://example:8081/backend-health\"\n",
    )
    .expect("config");
    let out = Command::new(&sim)
        .arg("demo")
        .args(EPHEMERAL)
        .args(["--listen", "127.0.0.1:18080", "--config"])
        .arg(&config)
        .output()
        .expect("run demo");
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    for want in [
        "http://127.0.0.1:18080/readyz?verbose",
        "/healthz?verbose",
        "/readyz?format=json",
        "/metrics",
        "/backend-health",
        "/providerconfig/",
    ] {
        assert!(stdout.contains(want), "{want} in {stdout}");
    }
    let args = std::fs::read_to_string(dir.path().join("args")).expect("args");
    assert!(args.starts_with("--config "), "{args}");
    let seen = std::fs::read_to_string(dir.path().join("seen-config.toml")).expect("config");
    assert!(seen.contains("listen = \"127.0.0.1:18080\""), "{seen}");
    assert!(
        seen.contains("url = \"http://127.0.0.1:") && !seen.contains("example:8081"),
        "{seen}"
    );
    let kubeconfig = std::fs::read_to_string(dir.path().join("seen-kubeconfig")).expect("kc");
    assert!(
        kubeconfig.contains("server: http://127.0.0.1:"),
        "{kubeconfig}"
    );

    // SIGTERM to the demo reaches klutch-health, and the demo exits as it did.
    let (dir, sim) = demo_dir(Some(
        "#!/bin/sh\ntrap 'exit 7' TERM\ntouch \"$(dirname \"$0\")/ready\"\nwhile true; do sleep 0.05; done\n",
    ));
    std::fs::write(dir.path().join("config.toml"), "").expect("config");
    let mut child = Reaped(
        Command::new(&sim)
            .arg("demo")
            .args(EPHEMERAL)
            .arg("--config")
            .arg(dir.path().join("config.toml"))
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn demo"),
    );
    let start = Instant::now();
    while !dir.path().join("ready").exists() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "klutch-health stand-in never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    term(&child.0);
    assert_eq!(exit_code(&mut child.0), Some(7));
}

#[test]
fn serve_with_tls_dir_serves_https_and_writes_the_ca_and_token() {
    let dir = tempfile::tempdir().expect("dir");
    let sa = dir.path().join("sa");
    let mut child = Reaped(
        Command::new(BIN)
            .arg("serve")
            .args(EPHEMERAL)
            .arg("--kubeconfig")
            .arg(dir.path().join("kubeconfig"))
            .arg("--tls-dir")
            .arg(&sa)
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn klutch-sim serve --tls-dir"),
    );
    let mut lines = BufReader::new(child.0.stdout.take().expect("stdout")).lines();
    let api = lines.next().expect("a line").expect("text");
    assert!(
        api.starts_with("fake Kubernetes API:") && api.contains("https://127.0.0.1:"),
        "{api}"
    );
    let ca = std::fs::read_to_string(sa.join("ca.crt")).expect("ca.crt");
    assert!(ca.starts_with("-----BEGIN CERTIFICATE-----"));
    assert!(sa.join("token").is_file());
    let kubeconfig = std::fs::read_to_string(dir.path().join("kubeconfig")).expect("kubeconfig");
    assert!(
        kubeconfig.contains(&format!(
            "certificate-authority: {}",
            sa.join("ca.crt").display()
        )),
        "{kubeconfig}"
    );
}
