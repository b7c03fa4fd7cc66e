//! The real consumers of klutch-health's verdict — HAProxy, blackbox_exporter, a Prometheus server, nginx as
//! the Ingress — run from their Debian packages against the real binary and the simulated control plane.
//! A missing program fails its test naming the package (.ci/run installs them). Each test drills every fault
//! (drill.rs) and prints how long its consumer took to notice; docs/operators/detection.md tabulates those lines.

use crate::common;
pub(crate) mod drill;
pub(crate) mod programs;
pub(crate) mod prometheus;

use std::net::SocketAddr;
use std::path::Path;

use drill::{drill, Rig, Shows, View, Warnings};
use programs::{binary, encode, free_port, get, Program};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What an HTTP caller of `/readyz?verbose` (a person with curl, a kubelet-like probe) sees: the status and
/// the first failing line of the body, else its first warning line, else its first line; or why there was no
/// answer. A passing answer with a warning line warns.
fn http_view(answer: Result<common::Resp, String>) -> View {
    match answer {
        Ok(r) => {
            let failing = r.body.lines().find(|l| l.starts_with("[-]"));
            let warning = r
                .body
                .lines()
                .find(|l| l.starts_with("[+]") && l.contains(" warn: "));
            let shows = match (r.status, warning) {
                (200, None) => Shows::Pass,
                (200, Some(_)) => Shows::Warn,
                _ => Shows::Fail,
            };
            // Else the verdict line (`readyz check passed`), or the first line of a body without items.
            let verdict = r.body.lines().find(|l| !l.starts_with("[+]"));
            let line = failing.or(warning).or(verdict);
            View {
                shows,
                sees: format!("{} {}", r.status, line.unwrap_or("")),
            }
        }
        Err(e) => View {
            shows: Shows::Fail,
            sees: e,
        },
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_direct_caller_sees_each_fault_on_readyz() {
    let rig = Rig::start().await;
    let addr = rig.svc.addr;
    drill(
        "direct",
        "GET /readyz?verbose every 50ms",
        Warnings::Shown,
        rig,
        async || http_view(get(addr, "/readyz?verbose").await),
    )
    .await;
}

// ---- HAProxy ----------------------------------------------------------------------------------------------

const HAPROXY_CHECK: &str = "inter 500ms fall 2 rise 2";

fn haproxy_config(dir: &Path, server: SocketAddr, frontend: u16) -> String {
    let sock = dir.join("haproxy.sock");
    format!(
        "global
  maxconn 64
  stats socket {sock} mode 600 level admin
defaults
  mode http
  timeout connect 1s
  timeout client 5s
  timeout server 5s
  timeout check 1s
frontend fe
  bind 127.0.0.1:{frontend}
  default_backend klutch
backend klutch
  option httpchk GET /readyz
  http-check expect status 200
  server kh {server} check {HAPROXY_CHECK}
",
        sock = sock.display()
    )
}

/// One command on HAProxy's stats socket (non-interactive: HAProxy closes after answering).
async fn haproxy_command(sock: &Path, command: &str) -> Result<String, String> {
    let exchange = async {
        let mut s = tokio::net::UnixStream::connect(sock).await?;
        s.write_all(format!("{command}\n").as_bytes()).await?;
        let mut out = String::new();
        s.read_to_string(&mut out).await?;
        Ok::<_, std::io::Error>(out)
    };
    match tokio::time::timeout(std::time::Duration::from_secs(5), exchange).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(_) => Err("the stats socket did not answer".into()),
    }
}

/// The server's `status`, `check_status` and `check_code` columns of `show stat`.
fn haproxy_server_state(csv: &str) -> Option<(String, String, String)> {
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next()?.trim_start_matches("# ").split(',').collect();
    let col = |name: &str| header.iter().position(|h| *h == name);
    let (status, check, code) = (col("status")?, col("check_status")?, col("check_code")?);
    let row: Vec<&str> = lines
        .map(|l| l.split(',').collect::<Vec<_>>())
        .find(|r| r.first() == Some(&"klutch") && r.get(1) == Some(&"kh"))?;
    Some((
        row.get(status)?.to_string(),
        row.get(check)?.to_string(),
        row.get(code)?.to_string(),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_httpchk_marks_the_server_down_and_up_again() {
    let haproxy = binary("haproxy", "haproxy");
    let rig = Rig::start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let frontend = free_port();
    let cfg = dir.path().join("haproxy.cfg");
    std::fs::write(&cfg, haproxy_config(dir.path(), rig.svc.addr, frontend)).expect("config");
    let mut proc = Program::start(
        &haproxy,
        &["-db".into(), "-f".into(), cfg.display().to_string()],
        dir.path(),
    );
    let sock = dir.path().join("haproxy.sock");
    // Servers start UP; a passing check (L7OK) shows that HAProxy really asks /readyz.
    proc.wait_until("HAProxy's first passing check", async || {
        let state = haproxy_server_state(&haproxy_command(&sock, "show stat").await.ok()?)?;
        (state.0 == "UP" && state.1 == "L7OK").then_some(())
    })
    .await;
    let through = SocketAddr::from(([127, 0, 0, 1], frontend));
    assert_eq!(get(through, "/readyz").await.map(|r| r.status), Ok(200));

    let settings = format!(
        "option httpchk GET /readyz; http-check expect status 200; {HAPROXY_CHECK}; timeout check 1s"
    );
    drill("haproxy", &settings, Warnings::Invisible, rig, async || {
        proc.assert_running();
        let stat = haproxy_command(&sock, "show stat").await;
        let Some((status, check, code)) = stat.as_deref().ok().and_then(haproxy_server_state)
        else {
            panic!("no server row in HAProxy's `show stat`: {stat:?}");
        };
        View {
            shows: if status.starts_with("DOWN") {
                Shows::Fail
            } else {
                Shows::Pass
            },
            sees: format!("{status} {check} {code}").trim_end().to_string(),
        }
    })
    .await;
    // With its only server DOWN, HAProxy answers for it.
    let r = get(through, "/readyz").await.expect("HAProxy answers");
    assert_eq!(r.status, 503, "{r:?}");
    let servers = haproxy_command(&sock, "show servers state klutch")
        .await
        .expect("show servers state");
    // srv_op_state 0 is SRV_ST_STOPPED.
    let row = servers
        .lines()
        .find(|l| l.split_whitespace().nth(3) == Some("kh"))
        .unwrap_or_else(|| panic!("no kh in {servers}"));
    assert_eq!(row.split_whitespace().nth(5), Some("0"), "{servers}");
}

// ---- blackbox_exporter ------------------------------------------------------------------------------------

const BLACKBOX_CONFIG: &str = "modules:
  http_2xx:
    prober: http
    timeout: 2s
    http:
      preferred_ip_protocol: ip4
";

/// `NAME VALUE` of one sample in the exposition text.
fn sample(text: &str, name: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ').map(str::to_string))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blackbox_probe_success_goes_1_0_1() {
    let blackbox = binary(
        "prometheus-blackbox-exporter",
        "prometheus-blackbox-exporter",
    );
    let rig = Rig::start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let cfg = dir.path().join("blackbox.yml");
    std::fs::write(&cfg, BLACKBOX_CONFIG).expect("config");
    let port = free_port();
    let exporter = SocketAddr::from(([127, 0, 0, 1], port));
    let mut proc = Program::start(
        &blackbox,
        &[
            format!("--config.file={}", cfg.display()),
            format!("--web.listen-address={exporter}"),
        ],
        dir.path(),
    );
    let probe = format!(
        "/probe?module=http_2xx&target={}",
        encode(&format!("http://{}/readyz", rig.svc.addr))
    );
    let success = proc
        .wait_until("blackbox_exporter's first probe", async || {
            sample(&get(exporter, &probe).await.ok()?.body, "probe_success")
        })
        .await;
    assert_eq!(success, "1");

    drill(
        "blackbox",
        "module http_2xx (valid_status_codes 2xx), timeout 2s; probed every 100ms",
        Warnings::Invisible,
        rig,
        async || {
            proc.assert_running();
            // Paces the probes (each one also requests klutch-health); the drill polls every 50ms besides.
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            let body = get(exporter, &probe)
                .await
                .expect("blackbox_exporter answers")
                .body;
            let success = sample(&body, "probe_success");
            let code = sample(&body, "probe_http_status_code");
            assert!(success.is_some(), "no probe_success in {body}");
            View {
                shows: if success.as_deref() == Some("1") {
                    Shows::Pass
                } else {
                    Shows::Fail
                },
                sees: format!(
                    "probe_success={} probe_http_status_code={}",
                    success.unwrap_or_default(),
                    code.unwrap_or_default()
                ),
            }
        },
    )
    .await;
}

// ---- Prometheus -------------------------------------------------------------------------------------------

/// `for:` of every shipped rule in the test copy.
const RULE_FOR: &str = "3s";

/// Names and states of the active alerts (`pending` or `firing`), sorted; a per-item alert with the item it
/// is about (`KlutchHealthItemDown{provider-pods/…}`), so that one page per root cause can be told from one
/// per symptom.
fn alert_states(data: &serde_json::Value) -> Vec<(String, String)> {
    let mut alerts: Vec<(String, String)> = data["alerts"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| {
            let labels = &a["labels"];
            let name = labels["alertname"].as_str().unwrap_or("");
            let name = match (name, labels["check"].as_str(), labels["item"].as_str()) {
                ("KlutchHealthItemDown", Some(check), Some(item)) => {
                    format!("{name}{{{check}/{item}}}")
                }
                _ => name.to_string(),
            };
            (name, a["state"].as_str().unwrap_or("").to_string())
        })
        .collect();
    alerts.sort();
    alerts.dedup();
    alerts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_openmetrics_and_the_shipped_alerts_fire() {
    let rig = Rig::start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    // It loads every shipped rule...
    let scrape = json!([{"job_name": "klutch-health", "static_configs": [{"targets": [rig.svc.addr.to_string()]}]}]);
    let (mut proc, prom) = prometheus::start(dir.path(), scrape, RULE_FOR).await;
    // ...and ingests the scrape: the target is up and the series are queryable.
    let query = prometheus::query;
    let up = query("klutch_health_endpoint_up{endpoint=\"readyz\"}");
    proc.wait_until("the first scrape to be ingested", async || {
        let data = prometheus::api(prom, &up).await?;
        (data["result"][0]["value"][1] == "1").then_some(())
    })
    .await;
    let targets = prometheus::api(prom, "/api/v1/targets")
        .await
        .expect("targets");
    let target = &targets["activeTargets"][0];
    assert_eq!(target["health"], "up", "{target}");
    assert_eq!(target["lastError"], "", "{target}");
    // It negotiated OpenMetrics: there a counter's family is named without `_total`, in the text format with it.
    let meta = prometheus::api(
        prom,
        "/api/v1/metadata?metric=klutch_health_upstream_requests",
    )
    .await
    .expect("metadata");
    assert_eq!(
        meta["klutch_health_upstream_requests"][0]["type"], "counter",
        "{meta}"
    );
    let build = prometheus::api(prom, &query("klutch_health_build_info"))
        .await
        .expect("query");
    assert_eq!(build["result"].as_array().map(Vec::len), Some(1), "{build}");

    let settings = format!(
        "scrape_interval=1s evaluation_interval=1s; every rule's for: {RULE_FOR}; polled every 200ms"
    );
    drill("prometheus", &settings, Warnings::Shown, rig, async || {
        proc.assert_running();
        // Paces the API queries: Prometheus changes its view once a second at most.
        tokio::time::sleep(std::time::Duration::from_millis(150)).await;
        let alerts = prometheus::api(prom, "/api/v1/alerts")
            .await
            .expect("alerts");
        let up = prometheus::api(prom, &query("up")).await.expect("up");
        let states = alert_states(&alerts);
        let firing = |names: &[&str]| {
            states
                .iter()
                .any(|(name, state)| state == "firing" && names.contains(&name.as_str()))
        };
        View {
            // The paging alert and the absence alert report the control plane down; a silent konnector
            // has its own alert.
            shows: if firing(&["KlutchControlPlaneNotReady", "KlutchHealthAbsent"]) {
                Shows::Fail
            } else if firing(&["KlutchKonnectorSilent"]) {
                Shows::Warn
            } else {
                Shows::Pass
            },
            sees: format!(
                "up={} {}",
                up["result"][0]["value"][1].as_str().unwrap_or("?"),
                states
                    .iter()
                    .map(|(n, s)| format!("{n}:{s}"))
                    .collect::<Vec<_>>()
                    .join(",")
            )
            .trim_end()
            .to_string(),
        }
    })
    .await;
}

/// What an operator sees of a crash-looping provider-anynines (its pod in CrashLoopBackOff, the Provider
/// `Healthy=False`, the health server refusing, its entries unknown): the failing body names one root cause
/// that explains the rest, the shipped rules page once for it (one `KlutchHealthItemDown`, beside
/// `KlutchControlPlaneNotReady`) where the per-item alert paged for every item, and the status page leads
/// with it (a screenshot under target/tmp/screenshots/, to look at).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_crash_looping_provider_pod_is_one_root_cause_and_pages_once() {
    const POD: &str = "provider-anynines-3f2a9c1b7e5d-6b8f9c7d5-x2x7q";
    let rig = Rig::start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let scrape = json!([{"job_name": "klutch-health", "static_configs": [{"targets": [rig.svc.addr.to_string()]}]}]);
    let (mut proc, prom) = prometheus::start(dir.path(), scrape, RULE_FOR).await;
    let up = prometheus::query("klutch_health_endpoint_up{endpoint=\"readyz\"}");
    proc.wait_until("the first scrape to be ingested", async || {
        let data = prometheus::api(prom, &up).await?;
        (data["result"][0]["value"][1] == "1").then_some(())
    })
    .await;

    rig.cp.crash_loop_provider(true);
    let page = format!("KlutchHealthItemDown{{provider-pods/{POD}}}");
    let firing = async || -> Option<std::collections::BTreeSet<String>> {
        let alerts = prometheus::api(prom, "/api/v1/alerts").await?;
        Some(
            alert_states(&alerts)
                .into_iter()
                .filter(|(_, state)| state == "firing")
                .map(|(name, _)| name)
                .collect(),
        )
    };
    proc.wait_until("NotReady and the pod's ItemDown firing", async || {
        let now = firing().await?;
        (now.contains("KlutchControlPlaneNotReady") && now.contains(&page)).then_some(())
    })
    .await;
    // Held for several evaluations (each rule's `for:` is 3s here): no symptom pages beside it.
    for _ in 0..5 {
        let now = firing().await.expect("alerts");
        let items: Vec<&String> = now
            .iter()
            .filter(|n| n.starts_with("KlutchHealthItemDown"))
            .collect();
        assert_eq!(items, [&page], "one page for one broken pod: {now:?}");
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
    // What the per-item alert fired on before it read root causes: every item not passing.
    let before = prometheus::api(
        prom,
        &prometheus::query(
            "count(min by (check, item) (klutch_health_check_up{check!~\"konnectors|app-cluster-bindings\"}) == 0)",
        ),
    )
    .await
    .expect("query");
    let symptoms = before["result"][0]["value"][1].as_str().unwrap_or("0");
    assert_eq!(
        symptoms, "5",
        "pod, Provider, _endpoint and two entries: {before}"
    );
    let now = firing().await.expect("alerts");
    eprintln!(
        "DETECTION consumer=prometheus fault=provider-crash-loop items-not-passing={symptoms} firing={now:?}"
    );

    let r = rig.svc.get("/readyz").await;
    assert_eq!(r.status, 503);
    let roots: Vec<&str> = r
        .body
        .lines()
        .filter(|l| l.starts_with("root cause: "))
        .collect();
    assert_eq!(roots.len(), 1, "{}", r.body);
    assert!(
        roots[0].starts_with(&format!("root cause: provider-pods/{POD} (not ready"))
            && roots[0].ends_with(" explains 4 items"),
        "{}",
        r.body
    );
    for line in r.body.lines() {
        eprintln!("DETECTION consumer=direct fault=provider-crash-loop body-line={line:?}");
    }

    // The status page, as a person sees it on a phone: the root cause first.
    let url = format!("http://{}/", rig.svc.addr);
    let dom = tokio::task::block_in_place(|| common::chromium::dump_dom(&url));
    let causes = dom.find("Root causes (1)").expect("a root causes section");
    let attention = dom.find("Needs attention").expect("needs attention");
    assert!(causes < attention, "the root causes lead");
    assert!(
        dom[causes..attention].contains(&format!("provider-pods/{POD}"))
            && dom[causes..attention].contains("explains 4 items"),
        "{}",
        &dom[causes..attention]
    );
    let shots = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("screenshots");
    std::fs::create_dir_all(&shots).expect("screenshot dir");
    for (dark, name, size) in [
        (false, "root-causes-phone.png", (414, 1400)),
        (true, "root-causes-dark.png", (900, 1200)),
    ] {
        let path = shots.join(name);
        tokio::task::block_in_place(|| common::chromium::screenshot(&url, &path, dark, size));
        eprintln!("screenshot: {}", path.display());
    }

    rig.cp.crash_loop_provider(false);
    proc.wait_until("every alert gone", async || {
        let now = firing().await?;
        now.iter()
            .all(|n| !n.starts_with("KlutchHealthItemDown") && n != "KlutchControlPlaneNotReady")
            .then_some(())
    })
    .await;
}

// ---- nginx as the Ingress ---------------------------------------------------------------------------------

/// The paths of deploy/ingress.yaml, rendered as ingress-nginx renders them: `Exact` is `location =`.
fn ingress_locations(upstream: SocketAddr) -> String {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/ingress.yaml"))
        .expect("deploy/ingress.yaml");
    let doc: serde_json::Value = serde_yaml_ng::from_str(&text).expect("Ingress is YAML");
    let paths = doc["spec"]["rules"][0]["http"]["paths"]
        .as_array()
        .expect("spec.rules[0].http.paths");
    assert!(!paths.is_empty(), "the Ingress routes some paths");
    paths
        .iter()
        .map(|p| {
            let path = p["path"].as_str().expect("path");
            let modifier = match p["pathType"].as_str() {
                Some("Exact") => "= ",
                Some("Prefix") => "",
                other => panic!("pathType {other:?} of {path} is not rendered here"),
            };
            format!("    location {modifier}{path} {{ proxy_pass http://{upstream}; }}\n")
        })
        .collect()
}

fn nginx_config(dir: &Path, listen: u16, upstream: SocketAddr) -> String {
    let d = dir.display();
    let locations = ingress_locations(upstream);
    format!(
        "daemon off;
master_process off;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 64; }}
http {{
  access_log off;
  client_body_temp_path {d}/body;
  proxy_temp_path {d}/proxy;
  fastcgi_temp_path {d}/fastcgi;
  uwsgi_temp_path {d}/uwsgi;
  scgi_temp_path {d}/scgi;
  server {{
    listen 127.0.0.1:{listen};
{locations}    location / {{ return 404; }}
  }}
}}
"
    )
}

/// The paths only the cluster may reach, and that nginx must answer 404 for itself.
const INTERNAL_PATHS: [&str; 6] = [
    "/metrics",
    "/",
    "/backend-health",
    "/readyz/provider-configs",
    "/healthz/providers?verbose",
    "/livez/x",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_as_the_ingress_passes_only_the_health_paths_and_relays_their_status() {
    let nginx = binary("nginx", "nginx-light");
    let rig = Rig::start().await;
    // The listener nginx fronts, as the Ingress's Service port does: the public one.
    let upstream = rig.svc.public_addr().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let cfg = dir.path().join("nginx.conf");
    let listen = free_port();
    std::fs::write(&cfg, nginx_config(dir.path(), listen, upstream)).expect("config");
    let mut proc = Program::start(
        &nginx,
        &[
            "-p".into(),
            dir.path().display().to_string(),
            "-e".into(),
            dir.path().join("error.log").display().to_string(),
            "-c".into(),
            cfg.display().to_string(),
        ],
        dir.path(),
    );
    let ingress = SocketAddr::from(([127, 0, 0, 1], listen));
    proc.wait_until("nginx to listen", async || {
        get(ingress, "/livez").await.ok()
    })
    .await;

    // What passes is exactly what klutch-health answers, failing or not.
    let same_answer = async |path: &str| {
        let (via, direct) = (get(ingress, path).await, get(upstream, path).await);
        let (via, direct) = (
            via.expect("nginx answers"),
            direct.expect("klutch-health answers"),
        );
        assert_eq!(
            (via.status, &via.body),
            (direct.status, &direct.body),
            "{path}"
        );
        via.status
    };
    for path in [
        "/livez",
        "/healthz",
        "/readyz",
        "/readyz?verbose",
        "/healthz?format=json",
    ] {
        assert_eq!(same_answer(path).await, 200, "{path}");
    }
    for path in INTERNAL_PATHS {
        let r = get(ingress, path).await.expect("nginx answers");
        assert_eq!(r.status, 404, "{path} must stay inside: {r:?}");
        assert!(
            r.body.contains("nginx"),
            "nginx's own 404 for {path}: {}",
            r.body
        );
    }
    rig.cp
        .degrade_provider_config("postgresql-service-broker", "connection refused");
    rig.svc
        .wait_for("/readyz", "the degraded ProviderConfig", |r| {
            r.status == 503
        })
        .await;
    assert_eq!(same_answer("/readyz?verbose").await, 503);
    // Reasons stay inside: withheld through the Ingress, shown on the main listener.
    let outside = get(ingress, "/readyz?verbose")
        .await
        .expect("nginx answers");
    assert!(
        outside
            .body
            .contains("[-]provider-configs/postgresql-service-broker failed: reason withheld"),
        "{}",
        outside.body
    );
    assert!(
        !outside.body.contains("connection refused"),
        "{}",
        outside.body
    );
    let inside = rig.svc.get("/readyz?verbose").await;
    assert!(
        inside.body.contains("connection refused"),
        "{}",
        inside.body
    );
    rig.cp.heal_provider_config("postgresql-service-broker");
    rig.svc
        .wait_for("/readyz", "the healed ProviderConfig", |r| r.status == 200)
        .await;

    let settings =
        "location = PATH per Ingress path, proxy_pass to klutch-health's public listener; GET /readyz?verbose every 50ms";
    drill("nginx", settings, Warnings::Shown, rig, async || {
        proc.assert_running();
        http_view(get(ingress, "/readyz?verbose").await)
    })
    .await;
    // klutch-health is gone: nginx answers for it.
    let r = get(ingress, "/readyz").await.expect("nginx answers");
    assert_eq!(r.status, 502, "{r:?}");
}
