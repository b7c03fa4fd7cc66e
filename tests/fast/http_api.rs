//! The HTTP API (docs/operators/http-api.md). Most answers are checked in-process: [`App`] evaluates a report the way the
//! engine does and calls the server's handler with the request's head. The tests that start a [`Service`]
//! run the real binary against a fake provider-anynines health server, for what only a real connection shows
//! (keep-alive, upstream calls, HEAD on the wire).

use crate::common;

use std::sync::Arc;

use common::{backend_config, Resp, Service};
use http_body_util::BodyExt;
use jiff::Timestamp;
use klutch_health::checks::backend_status::parse_body;
use klutch_health::config::Config;
use klutch_health::engine::Published;
use klutch_health::http::server::{handle, State};
use klutch_health::metrics::Metrics;
use klutch_health::render::{Details, Identity};
use klutch_health::signals::{Observation, Sink};
use klutch_health::verdict::policy::{self, Memory, Rules};
use klutch_health::verdict::report::{Passthrough, Status};
use klutch_sim::FakeBackend;

/// What the degraded fake backend answers.
const DEGRADED: &[(&str, &str)] = &[
    ("postgresql-service-broker", "ok"),
    ("postgresql-backup-manager", "degraded"),
];

/// The service in-process, as it answers after one good poll.
struct App {
    state: State,
    latest: Published,
}

impl App {
    /// After one poll that answered `entries`, configured by the backend-status config plus `extra`.
    fn polled(entries: &[(&str, &str)], extra: &str) -> App {
        let body = serde_json::to_vec(
            &entries
                .iter()
                .map(|(k, v)| (k.to_string(), serde_json::Value::from(*v)))
                .collect::<serde_json::Map<_, _>>(),
        )
        .expect("JSON");
        let now = Timestamp::now();
        let sink = Sink::default();
        let items = parse_body(&body)
            .expect("a health body")
            .into_iter()
            .map(|(name, status, message)| Observation::new(name, status, message, now))
            .collect();
        sink.publish("backend-status", items);
        sink.polled(
            "backend-status",
            Passthrough {
                status: 200,
                body: body.into(),
                json: true,
                at: klutch_health::clock::Moment::now(),
                last_good: Some(now),
            },
        );
        App::from_sink(&sink, extra)
    }

    fn from_sink(sink: &Sink, extra: &str) -> App {
        let config = backend_config("http://127.0.0.1:9/backend-health", extra);
        App::configured(sink, &config)
    }

    /// The service as `config` (TOML) configures it, after what `sink` holds.
    fn configured(sink: &Sink, config: &str) -> App {
        let config = Config::from_toml(config).expect("valid config");
        let rules = Rules::new(&config);
        let evaluation = policy::evaluate(
            &rules,
            &sink.snapshot(),
            &Memory::default(),
            klutch_health::clock::Moment::now(),
        );
        let identity = Identity {
            service_id: config.server.service_id.clone(),
            description: config.server.description.clone(),
        };
        let latest = Published::new(
            evaluation.report,
            &identity,
            &[Details::Shown, Details::Withheld],
        );
        // The handler is given `latest`; the channel only feeds the real server's connections.
        let (_tx, rx) = tokio::sync::watch::channel(Arc::new(Published::new(
            latest.report.clone(),
            &identity,
            &[],
        )));
        let state = State::new(
            rx,
            Arc::new(Metrics::new()),
            klutch_health::http::server::Presentation::of(&config, config.token().expect("token")),
        );
        App { state, latest }
    }

    async fn request(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> Resp {
        let mut builder = http::Request::builder().method(method).uri(path);
        for (k, v) in headers {
            builder = builder.header(*k, *v);
        }
        let (parts, ()) = builder.body(()).expect("a request").into_parts();
        let response = handle(&self.state, &self.latest, &parts);
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
            .collect();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("a body")
            .to_bytes();
        Resp {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    }

    async fn get(&self, path: &str) -> Resp {
        self.request("GET", path, &[]).await
    }

    async fn get_with(&self, path: &str, headers: &[(&str, &str)]) -> Resp {
        self.request("GET", path, headers).await
    }
}

async fn degraded_backend() -> FakeBackend {
    let backend = FakeBackend::start().await.expect("fake backend");
    backend.set_entry("postgresql-service-broker", "ok");
    backend.set_entry("postgresql-backup-manager", "degraded");
    backend
}

async fn started(backend: &FakeBackend, extra: &str) -> Service {
    let svc = Service::start(&backend_config(&backend.url(), extra), &[]).await;
    svc.wait_for("/readyz?verbose", "the first poll", |r| {
        r.body.contains("postgresql")
    })
    .await;
    svc
}

#[tokio::test]
async fn failing_readyz_is_503_with_the_failing_lines_and_passing_is_200_ok() {
    let svc = App::polled(DEGRADED, "");
    let r = svc.get("/readyz").await;
    assert_eq!(r.status, 503);
    // No passing item's `ok` line: a keyword monitor looking for `ok` must not see green.
    assert_eq!(
        r.body,
        "[-]backend-status/postgresql-backup-manager failed: degraded\nreadyz check failed\n"
    );
    let r = svc.get("/readyz?verbose").await;
    assert_eq!(
        r.body,
        "[-]backend-status/postgresql-backup-manager failed: degraded\n\
         [+]backend-status/postgresql-service-broker ok\nreadyz check failed\n",
        "?verbose gives every line"
    );
    assert_eq!(r.header("cache-control"), Some("no-store"));

    let svc = App::polled(
        &[
            ("postgresql-service-broker", "ok"),
            ("postgresql-backup-manager", "ok"),
        ],
        "",
    );
    let r = svc.get("/readyz").await;
    assert_eq!((r.status, r.body.as_str()), (200, "ok"));
    let r = svc.get("/healthz?verbose").await;
    assert_eq!(
        r.body,
        "[+]backend-status/postgresql-backup-manager ok\n[+]backend-status/postgresql-service-broker ok\nhealthz check passed\n"
    );
}

#[tokio::test]
async fn head_answers_like_get_without_a_body() {
    let svc = App::polled(DEGRADED, "");
    let r = svc.request("HEAD", "/readyz", &[]).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.body, "");
    let get = svc.get("/readyz").await;
    assert_eq!(
        r.header("content-length"),
        Some(get.body.len().to_string().as_str())
    );
}

#[tokio::test]
async fn exclude_is_repeatable_reports_excluded_items_and_unmatched_names() {
    let svc = App::polled(DEGRADED, "");
    let r = svc
        .get(
            "/readyz?verbose&exclude=backend-status/postgresql-backup-manager&exclude=nothing-here",
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.body,
        "[+]backend-status/postgresql-service-broker ok\n\
         [+]backend-status/postgresql-backup-manager excluded: ok\n\
         warn: some health checks cannot be excluded: no matches for \"nothing-here\"\n\
         readyz check passed\n"
    );
    // Excluding the whole check excludes every item of it.
    let r = svc.get("/readyz?exclude=backend-status").await;
    assert_eq!((r.status, r.body.as_str()), (200, "ok"));
}

#[tokio::test]
async fn one_check_or_one_item_by_path_and_404_for_unknown_names() {
    let svc = App::polled(DEGRADED, "");
    let r = svc
        .get("/readyz/backend-status/postgresql-service-broker")
        .await;
    assert_eq!((r.status, r.body.as_str()), (200, "ok"));
    let r = svc
        .get("/readyz/backend-status/postgresql-backup-manager")
        .await;
    assert_eq!(r.status, 503);
    assert_eq!(
        r.body,
        "[-]backend-status/postgresql-backup-manager failed: degraded\nreadyz check failed\n"
    );
    assert_eq!(svc.get("/readyz/backend-status").await.status, 503);
    assert_eq!(svc.get("/healthz/no-such-check").await.status, 404);
    assert_eq!(
        svc.get("/readyz/backend-status/no-such-item").await.status,
        404
    );
}

/// A passing item whose message is notable (a provider scaled to zero) shows it in JSON `output` and on the
/// status page; its text line stays `ok`, and a plain passing item still has no `output`.
#[tokio::test]
async fn a_notable_passing_message_shows_in_json_and_on_the_page_but_the_text_stays_ok() {
    let now = Timestamp::now();
    let sink = Sink::default();
    sink.publish(
        "backend-status",
        vec![
            Observation::new("scaled", Status::Pass, "scaled to zero for now", now).notable(),
            Observation::new("plain", Status::Pass, "routinely fine", now),
        ],
    );
    let app = App::from_sink(&sink, "");
    let doc = app.get("/readyz?format=json").await.json();
    let items = doc["checks"]["backend-status"].as_array().expect("items");
    let output = |id: &str| {
        items
            .iter()
            .find(|i| i["componentId"] == id)
            .map(|i| i.get("output").cloned())
            .expect("item")
    };
    assert_eq!(output("scaled"), Some("scaled to zero for now".into()));
    assert_eq!(output("plain"), None, "{doc}");
    let text = app.get("/readyz?verbose").await.body;
    assert!(text.contains("[+]backend-status/scaled ok\n"), "{text}");
    let page = app.get("/").await.body;
    assert!(page.contains("scaled to zero for now"), "{page}");
    assert!(!page.contains("routinely fine"), "{page}");
}

#[tokio::test]
async fn json_in_the_ietf_health_shape_by_accept_or_format() {
    let svc = App::polled(DEGRADED, "");
    let r = svc
        .get_with("/readyz", &[("Accept", "application/health+json")])
        .await;
    assert_eq!(r.status, 503);
    assert_eq!(r.header("content-type"), Some("application/health+json"));
    let doc = r.json();
    assert_eq!(doc["status"], "fail");
    assert_eq!(doc["serviceId"], "klutch-health");
    assert_eq!(doc["description"], "Klutch control plane");
    assert_eq!(doc["version"], env!("CARGO_PKG_VERSION"));
    let items = doc["checks"]["backend-status"]
        .as_array()
        .expect("items of the check");
    let degraded = items
        .iter()
        .find(|i| i["componentId"] == "postgresql-backup-manager")
        .expect("item");
    assert_eq!(degraded["status"], "fail");
    assert_eq!(degraded["output"], "degraded");
    assert_eq!(degraded["componentType"], "backend-status");
    for key in ["time", "since"] {
        let t = degraded[key].as_str().expect("a time");
        assert!(
            t.parse::<jiff::Timestamp>().is_ok(),
            "{key} is RFC 3339: {t}"
        );
    }
    let ok = items
        .iter()
        .find(|i| i["componentId"] == "postgresql-service-broker")
        .expect("item");
    assert_eq!(ok["status"], "pass");
    assert!(ok.get("output").is_none(), "no output when passing: {ok}");

    let r = svc
        .get_with("/readyz", &[("Accept", "application/json")])
        .await;
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.json()["status"], "fail");
    let r = svc.get("/healthz?format=json").await;
    assert_eq!(r.header("content-type"), Some("application/health+json"));
    assert_eq!(
        r.json()["checks"]["backend-status"]
            .as_array()
            .map(Vec::len),
        Some(2)
    );
}

#[tokio::test]
async fn livez_passthrough_404_and_405() {
    let svc = App::polled(DEGRADED, "");
    let r = svc.get("/livez").await;
    assert_eq!((r.status, r.body.as_str()), (200, "ok"));
    for path in ["/backend-health", "/backend-status"] {
        let r = svc.get(path).await;
        assert_eq!(r.status, 200, "the provider answers 200 even when degraded");
        assert_eq!(r.json()["postgresql-backup-manager"], "degraded");
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert!(
            r.header("age")
                .and_then(|a| a.parse::<u64>().ok())
                .is_some(),
            "Age header: {r:?}"
        );
    }
    assert_eq!(svc.get("/nope").await.status, 404);
    let r = svc.request("POST", "/readyz", &[]).await;
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("GET, HEAD"));
}

#[tokio::test]
async fn passthrough_is_503_before_the_first_poll_and_the_failed_poll_after_it() {
    let sink = Sink::default();
    let now = Timestamp::now();
    sink.publish(
        "backend-status",
        vec![Observation::new(
            "_endpoint",
            klutch_health::verdict::report::Status::Unknown,
            "waiting for the first poll",
            now,
        )],
    );
    let svc = App::from_sink(&sink, "");
    let r = svc.get("/backend-health").await;
    assert_eq!(r.status, 503);
    assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    // Age is the age of the outcome served.
    let moment = klutch_health::clock::Moment::now();
    let polled = moment.at(moment
        .mono
        .checked_sub(std::time::Duration::from_secs(30))
        .expect("the monotonic clock reaches back 30s"));
    sink.polled(
        "backend-status",
        Passthrough {
            status: 502,
            body: "GET http://127.0.0.1:9/backend-health: cannot connect\n".into(),
            json: false,
            at: polled,
            last_good: None,
        },
    );
    let svc = App::from_sink(&sink, "");
    let r = svc.get("/backend-health").await;
    assert_eq!(r.status, 502);
    assert_eq!(
        r.body,
        "GET http://127.0.0.1:9/backend-health: cannot connect\n"
    );
    let age: u64 = r.header("age").and_then(|a| a.parse().ok()).expect("Age");
    assert!((30..60).contains(&age), "Age {age}");
}

#[tokio::test]
async fn details_never_withholds_every_message_in_every_format() {
    let svc = App::polled(DEGRADED, "[server]\ndetails = \"never\"\n");
    let text = svc.get("/readyz?verbose").await.body;
    assert!(
        text.contains("[-]backend-status/postgresql-backup-manager failed: reason withheld"),
        "{text}"
    );
    assert!(!text.contains("degraded"), "{text}");
    let json = svc.get("/readyz?format=json").await.body;
    assert!(
        json.contains("reason withheld") && !json.contains("degraded"),
        "{json}"
    );
    let page = svc.get("/").await.body;
    assert!(
        page.contains("reason withheld") && !page.contains("degraded"),
        "{page}"
    );
}

#[tokio::test]
async fn details_token_shows_messages_only_with_the_bearer_token() {
    let backend = degraded_backend().await;
    let dir = tempfile::tempdir().expect("dir");
    let token = dir.path().join("token");
    std::fs::write(&token, "s3cret\n").expect("token");
    let extra = format!(
        "[server]\ndetails = \"token\"\ntoken_file = \"{}\"\n",
        token.display()
    );
    let svc = started(&backend, &extra).await;
    let without = svc.get("/readyz?verbose").await.body;
    assert!(without.contains("reason withheld"), "{without}");
    let wrong = svc
        .get_with("/readyz?verbose", &[("Authorization", "Bearer nope")])
        .await
        .body;
    assert!(wrong.contains("reason withheld"), "{wrong}");
    let right = svc
        .get_with("/readyz?verbose", &[("Authorization", "Bearer s3cret")])
        .await
        .body;
    assert!(right.contains("failed: degraded"), "{right}");
    assert!(
        !svc.logs().iter().any(|l| l.contains("s3cret")),
        "the token is never logged"
    );
}

#[tokio::test]
async fn status_page_escapes_messages() {
    let svc = App::polled(&[("postgresql-evil", "<script>alert(1)</script>")], "");
    let page = svc.get("/").await;
    assert_eq!(page.status, 200);
    assert!(page
        .header("content-type")
        .is_some_and(|c| c.starts_with("text/html")));
    assert!(
        page.body.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{}",
        page.body
    );
    assert!(!page.body.contains("<script>"), "{}", page.body);
}

#[tokio::test]
async fn probes_cause_no_upstream_calls_and_the_connection_is_kept_alive() {
    let backend = degraded_backend().await;
    let svc = started(&backend, "").await;
    let before = backend.request_count();
    let started = std::time::Instant::now();
    for _ in 0..300 {
        assert_eq!(svc.get("/readyz").await.status, 503);
    }
    let polls = backend.request_count() - before;
    // Polls every 100 ms happen anyway; 300 probes must add nothing on top.
    let allowed = (started.elapsed().as_millis() / 100) as usize + 2;
    assert!(
        polls <= allowed,
        "{polls} upstream requests in {:?} (at most {allowed})",
        started.elapsed()
    );
    assert_eq!(
        backend.connection_count(),
        1,
        "one kept-alive connection serves every poll"
    );
}

/// Sends `requests` one after another on one keep-alive connection; returns each answer.
async fn on_one_connection(
    addr: std::net::SocketAddr,
    requests: &[(&str, &str)],
) -> Vec<common::Resp> {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut stream = BufReader::new(stream);
    let mut answers = Vec::new();
    for (method, path) in requests {
        let req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n");
        stream
            .get_mut()
            .write_all(req.as_bytes())
            .await
            .expect("send");
        let mut head = String::new();
        loop {
            let mut line = String::new();
            let n = stream.read_line(&mut line).await.expect("read head");
            assert!(n > 0, "connection closed after {head:?}");
            head.push_str(&line);
            if line == "\r\n" {
                break;
            }
        }
        let mut r = common::parse(head.as_bytes());
        let length: usize = r
            .header("content-length")
            .and_then(|l| l.parse().ok())
            .expect("content-length");
        let mut body = vec![0; if *method == "HEAD" { 0 } else { length }];
        stream.read_exact(&mut body).await.expect("read body");
        r.body = String::from_utf8(body).expect("UTF-8");
        answers.push(r);
    }
    answers
}

#[tokio::test]
async fn head_and_get_on_every_health_path_and_keep_alive_between_probes() {
    let backend = degraded_backend().await;
    let svc = started(
        &backend,
        "[endpoints.healthz]\nwarn_only = [\"backend-status\"]\n",
    )
    .await;
    let answers = on_one_connection(
        svc.addr,
        &[
            ("GET", "/healthz"),
            ("HEAD", "/healthz"),
            ("HEAD", "/readyz"),
            ("GET", "/readyz"),
            ("HEAD", "/livez"),
            ("GET", "/livez"),
            ("HEAD", "/readyz/backend-status/postgresql-service-broker"),
            ("HEAD", "/readyz/nothing"),
        ],
    )
    .await;
    let got: Vec<(u16, &str)> = answers
        .iter()
        .map(|r| (r.status, r.body.as_str()))
        .collect();
    let failing =
        "[-]backend-status/postgresql-backup-manager failed: degraded\nreadyz check failed\n";
    assert_eq!(
        got,
        [
            (200, "ok"),
            (200, ""),
            (503, ""),
            (503, failing),
            (200, ""),
            (200, "ok"),
            (200, ""),
            (404, ""),
        ]
    );
    assert_eq!(answers[1].header("content-length"), Some("2"));
    assert_eq!(
        answers[2].header("content-length"),
        Some(failing.len().to_string().as_str())
    );
    for r in &answers {
        assert_eq!(r.header("cache-control"), Some("no-store"), "{r:?}");
    }
    assert_eq!(
        answers[0].header("content-type"),
        Some("text/plain; charset=utf-8")
    );
}

#[tokio::test]
async fn verbose_lines_for_warn_and_a_passing_endpoint_with_warnings() {
    let svc = App::polled(
        DEGRADED,
        "[endpoints.healthz]\nwarn_only = [\"backend-status/postgresql-backup-manager\"]\n",
    );
    let r = svc.get("/healthz?verbose").await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.body,
        "[+]backend-status/postgresql-backup-manager warn: degraded\n\
         [+]backend-status/postgresql-service-broker ok\nhealthz check passed\n"
    );
    assert_eq!(r.header("cache-control"), Some("no-store"));
    // Without ?verbose a passing endpoint just says ok, warnings or not.
    let r = svc.get("/healthz").await;
    assert_eq!((r.status, r.body.as_str()), (200, "ok"));
    // JSON: the top-level status is warn, the code 200, and a warning has its output.
    let r = svc.get("/healthz?format=json").await;
    assert_eq!(r.status, 200);
    let doc = r.json();
    assert_eq!(doc["status"], "warn");
    let item = &doc["checks"]["backend-status"][0];
    assert_eq!(
        (&item["componentId"], &item["status"], &item["output"]),
        (
            &"postgresql-backup-manager".into(),
            &"warn".into(),
            &"degraded".into()
        )
    );
    // Per item: the same verdict for one item.
    let r = svc
        .get("/healthz/backend-status/postgresql-backup-manager?verbose")
        .await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (
            200,
            "[+]backend-status/postgresql-backup-manager warn: degraded\nhealthz check passed\n"
        )
    );
}

#[tokio::test]
async fn exclusions_with_several_names_json_and_percent_encoding() {
    let svc = App::polled(
        &[
            ("postgresql-service-broker", "ok"),
            ("postgresql-backup-manager", "degraded"),
            ("postgresql-other", "degraded"),
        ],
        "",
    );
    let r = svc
        .get("/readyz?verbose&exclude=backend-status%2Fpostgresql-backup-manager&exclude=backend-status/postgresql-other&exclude=a&exclude=b")
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.body,
        "[+]backend-status/postgresql-service-broker ok\n\
         [+]backend-status/postgresql-backup-manager excluded: ok\n\
         [+]backend-status/postgresql-other excluded: ok\n\
         warn: some health checks cannot be excluded: no matches for \"a\",\"b\"\n\
         readyz check passed\n"
    );
    // Excluding one failing item of two still fails, and says so.
    let r = svc
        .get("/readyz?exclude=backend-status/postgresql-other")
        .await;
    assert_eq!(r.status, 503);
    assert_eq!(
        r.body,
        "[-]backend-status/postgresql-backup-manager failed: degraded\nreadyz check failed\n",
        "neither passing nor excluded items' ok lines"
    );
    // JSON leaves excluded items out.
    let r = svc
        .get("/readyz?format=json&exclude=backend-status/postgresql-other&exclude=backend-status/postgresql-backup-manager")
        .await;
    assert_eq!(r.status, 200);
    let doc = r.json();
    assert_eq!(doc["status"], "pass");
    let ids: Vec<&str> = doc["checks"]["backend-status"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|i| i["componentId"].as_str())
        .collect();
    assert_eq!(ids, ["postgresql-service-broker"]);
}

#[tokio::test]
async fn json_for_one_check_or_item_and_the_policy_require_item() {
    let svc = App::polled(DEGRADED, "require = 3\n");
    let r = svc
        .get_with(
            "/readyz/backend-status/postgresql-service-broker",
            &[("Accept", "application/health+json")],
        )
        .await;
    assert_eq!(r.status, 200);
    let doc = r.json();
    assert_eq!(doc["status"], "pass");
    assert_eq!(
        doc["checks"]["backend-status"].as_array().map(Vec::len),
        Some(1)
    );
    // Two items, three required: the policy adds a failing item of its own.
    let r = svc.get("/readyz/backend-status/_require?format=json").await;
    assert_eq!(r.status, 503);
    let item = &r.json()["checks"]["backend-status"][0];
    assert_eq!(item["componentId"], "_require");
    assert_eq!(item["componentType"], "policy");
    assert_eq!(item["status"], "fail");
    assert_eq!(item["output"], "2 items, 3 required");
    let r = svc.get("/readyz?verbose").await;
    assert!(
        r.body
            .contains("[-]backend-status/_require failed: 2 items, 3 required\n"),
        "{}",
        r.body
    );
    // Accept lists are understood, whatever their order and parameters.
    let r = svc
        .get_with(
            "/readyz",
            &[("Accept", "text/html;q=0.9, application/health+json;q=1")],
        )
        .await;
    assert_eq!(r.header("content-type"), Some("application/health+json"));
    assert_eq!(r.json()["status"], "fail");
}

#[tokio::test]
async fn every_kind_of_answer_is_no_store_and_other_methods_are_405() {
    let svc = App::polled(DEGRADED, "");
    for path in [
        "/healthz",
        "/readyz?verbose",
        "/readyz?format=json",
        "/readyz/backend-status",
        "/readyz/nothing",
        "/livez",
        "/",
        "/backend-health",
        "/metrics",
        "/nope",
    ] {
        let r = svc.get(path).await;
        assert_eq!(r.header("cache-control"), Some("no-store"), "{path}");
    }
    for path in [
        "/readyzz",
        "/livez/x",
        "/backend-health/x",
        "/healthzz/x",
        "/index.html",
    ] {
        assert_eq!(svc.get(path).await.status, 404, "{path}");
    }
    for (method, path) in [
        ("POST", "/healthz"),
        ("PUT", "/readyz/backend-status"),
        ("DELETE", "/livez"),
        ("POST", "/"),
        ("PATCH", "/backend-health"),
        ("OPTIONS", "/metrics"),
    ] {
        let r = svc.request(method, path, &[("Content-Length", "0")]).await;
        assert_eq!(r.status, 405, "{method} {path}");
        assert_eq!(r.header("allow"), Some("GET, HEAD"), "{method} {path}");
    }
}

#[tokio::test]
async fn details_token_covers_json_and_the_status_page() {
    let dir = tempfile::tempdir().expect("dir");
    let token = dir.path().join("token");
    std::fs::write(&token, "s3cret\n").expect("token");
    let extra = format!(
        "[server]\ndetails = \"token\"\ntoken_file = \"{}\"\n",
        token.display()
    );
    let svc = App::polled(DEGRADED, &extra);
    let bearer = [("Authorization", "Bearer s3cret")];
    let without = svc.get("/readyz?format=json").await.json();
    let with = svc.get_with("/readyz?format=json", &bearer).await.json();
    let output = |doc: &serde_json::Value| {
        doc["checks"]["backend-status"]
            .as_array()
            .expect("items")
            .iter()
            .find(|i| i["status"] == "fail")
            .map(|i| i["output"].clone())
    };
    assert_eq!(output(&without), Some("reason withheld".into()));
    assert_eq!(output(&with), Some("degraded".into()));
    // Statuses and names stay for everyone.
    assert_eq!(without["status"], "fail");
    let page = svc.get("/").await.body;
    assert!(page.contains("reason withheld"), "{page}");
    assert!(page.contains("postgresql-backup-manager"), "{page}");
    assert!(!page.contains("degraded"), "{page}");
    let page = svc.get_with("/", &bearer).await.body;
    assert!(page.contains("degraded"), "{page}");
    // The scheme is case-insensitive; a token prefix, an empty token or another scheme is no token.
    for (value, shown) in [
        ("bearer s3cret", true),
        ("BEARER s3cret", true),
        ("Bearer s3cre", false),
        ("Bearer s3cretx", false),
        ("Bearer ", false),
        ("Basic s3cret", false),
        ("s3cret", false),
    ] {
        let body = svc
            .get_with("/readyz?verbose", &[("Authorization", value)])
            .await
            .body;
        assert_eq!(
            body.contains("failed: degraded"),
            shown,
            "{value:?}: {body}"
        );
    }
    // Per item, too.
    let r = svc
        .get("/readyz/backend-status/postgresql-backup-manager")
        .await;
    assert_eq!(
        r.body,
        "[-]backend-status/postgresql-backup-manager failed: reason withheld\nreadyz check failed\n"
    );
}

#[tokio::test]
async fn the_status_page_lists_every_item_with_status_and_both_verdicts() {
    let svc = App::polled(DEGRADED, "");
    let r = svc.get("/").await;
    assert_eq!(r.status, 200);
    let page = r.body;
    for needle in [
        "/healthz failing",
        "/readyz failing",
        "backend-status",
        "postgresql-service-broker",
        "postgresql-backup-manager",
        "degraded",
        "http-equiv=\"refresh\"",
        " since ",
    ] {
        assert!(page.contains(needle), "{needle:?} in {page}");
    }
    let head = svc.request("HEAD", "/", &[]).await;
    assert_eq!((head.status, head.body.as_str()), (200, ""));
    let svc = App::polled(
        &[
            ("postgresql-service-broker", "ok"),
            ("postgresql-backup-manager", "ok"),
        ],
        "",
    );
    let page = svc.get("/").await.body;
    assert!(
        page.contains("/readyz passing") && !page.contains("degraded"),
        "{page}"
    );
}

#[tokio::test]
async fn the_status_page_escapes_item_names_too() {
    let svc = App::polled(&[("<img src=x onerror=alert(1)>", "<b>degraded</b>")], "");
    let page = svc.get("/").await.body;
    assert!(!page.contains("<img"), "{page}");
    assert!(!page.contains("<b>"), "{page}");
    // A key that is not a Kubernetes name is percent-encoded before any renderer sees it.
    assert!(
        page.contains("%3Cimg%20src%3Dx%20onerror%3Dalert%281%29%3E"),
        "{page}"
    );
    assert!(page.contains("&lt;b&gt;degraded&lt;/b&gt;"), "{page}");
}

#[tokio::test]
async fn five_hundred_probes_of_every_kind_cause_no_upstream_request() {
    let backend = degraded_backend().await;
    let config = common::backend_config(&backend.url(), "")
        .replace("interval = \"100ms\"", "interval = \"200ms\"");
    let svc = Service::start(&config, &[]).await;
    svc.wait_for("/readyz?verbose", "the first poll", |r| {
        r.body.contains("postgresql")
    })
    .await;
    let paths = [
        "/readyz",
        "/healthz?verbose",
        "/readyz?format=json",
        "/readyz/backend-status",
        "/",
        "/backend-health",
        "/readyz?exclude=backend-status",
    ];
    let before = backend.request_count();
    let started = std::time::Instant::now();
    for i in 0..500 {
        let r = svc.get(paths[i % paths.len()]).await;
        assert!(matches!(r.status, 200 | 503), "{r:?}");
    }
    let polls = backend.request_count() - before;
    let allowed = (started.elapsed().as_millis() / 200) as usize + 2;
    assert!(
        polls <= allowed,
        "{polls} upstream requests in {:?} (at most {allowed})",
        started.elapsed()
    );
}

#[tokio::test]
async fn one_kept_alive_upstream_connection_serves_many_polls() {
    let backend = FakeBackend::start().await.expect("fake backend");
    backend.set_entry("postgresql-service-broker", "ok");
    let svc = started(&backend, "").await;
    let first = backend.request_count();
    common::eventually("six more polls", async || {
        (backend.request_count() >= first + 6).then_some(())
    })
    .await;
    assert_eq!(backend.connection_count(), 1);
    assert_eq!(svc.get("/readyz").await.status, 200);
}

#[tokio::test]
async fn upstream_names_and_messages_cannot_forge_lines() {
    let svc = App::polled(
        &[(
            "postgresql-x\nreadyz check passed",
            "degraded\nreadyz check passed",
        )],
        "",
    );
    let r = svc.get("/readyz?verbose").await;
    assert_eq!(r.status, 503);
    assert_eq!(
        r.body,
        "[-]backend-status/postgresql-x%0Areadyz%20check%20passed failed: degraded readyz check passed\nreadyz check failed\n"
    );
}

impl App {
    /// The same service as the public listener (`server.public_listen`) answers.
    fn public(self) -> App {
        App {
            state: self.state.public(),
            latest: self.latest,
        }
    }
}

#[tokio::test]
async fn the_public_listener_serves_only_the_health_paths_with_reasons_withheld() {
    let public = App::polled(DEGRADED, "").public();
    for path in [
        "/readyz",
        "/readyz?verbose",
        "/healthz?verbose",
        "/readyz/backend-status?verbose",
        "/readyz/backend-status/postgresql-backup-manager",
        "/readyz?exclude=backend-status/postgresql-other&verbose",
    ] {
        let r = public.get(path).await;
        assert_eq!(r.status, 503, "{path}: {}", r.body);
        assert!(
            r.body
                .contains("[-]backend-status/postgresql-backup-manager failed: reason withheld"),
            "{path}: {}",
            r.body
        );
        assert!(!r.body.contains("degraded"), "{path}: {}", r.body);
    }
    for accept in ["application/health+json", "application/json"] {
        let r = public.get_with("/readyz", &[("accept", accept)]).await;
        assert_eq!(r.status, 503);
        let doc = r.json();
        assert_eq!(
            doc["checks"]["backend-status"][0]["output"], "reason withheld",
            "{accept}: {doc}"
        );
        assert!(!r.body.contains("degraded"), "{accept}: {}", r.body);
    }
    // Whatever the caller sends: the public listener has no token to compare with.
    let r = public
        .get_with("/readyz?verbose", &[("authorization", "Bearer anything")])
        .await;
    assert!(!r.body.contains("degraded"), "{}", r.body);
    assert_eq!(public.get("/livez").await.status, 200);
    assert_eq!(public.get("/healthz/backend-status").await.status, 503);
    for path in [
        "/metrics",
        "/",
        "/backend-health",
        "/backend-status",
        "/livez/x",
        "/readyzz",
    ] {
        let r = public.get(path).await;
        assert_eq!(r.status, 404, "{path} stays inside: {}", r.body);
    }
    // The main listener keeps full detail.
    let main = App::polled(DEGRADED, "");
    assert!(main.get("/readyz").await.body.contains("failed: degraded"));
    assert_eq!(main.get("/metrics").await.status, 200);
}

#[tokio::test]
async fn a_failing_body_has_no_ok_line_for_keyword_monitors() {
    let app = App::polled(
        &[
            ("postgresql-service-broker", "ok"),
            ("postgresql-backup-manager", "degraded"),
            ("postgresql-other", "ok"),
        ],
        "",
    );
    for path in [
        "/readyz",
        "/healthz",
        "/readyz/backend-status",
        "/readyz?exclude=backend-status/postgresql-other",
        "/healthz?exclude=backend-status/postgresql-service-broker&exclude=nothing",
    ] {
        let r = app.get(path).await;
        assert_eq!(r.status, 503, "{path}");
        assert!(
            !r.body.lines().any(|l| l == "ok" || l.ends_with(" ok")),
            "{path} shows green to a keyword monitor: {}",
            r.body
        );
        assert!(r.body.ends_with("check failed\n"), "{path}: {}", r.body);
    }
    let r = app.get("/readyz?verbose").await;
    assert!(
        r.body.contains("[+]backend-status/postgresql-other ok\n"),
        "?verbose keeps every line: {}",
        r.body
    );
}

#[tokio::test]
async fn accept_with_q_zero_is_not_acceptable() {
    let app = App::polled(DEGRADED, "");
    let text = "text/plain; charset=utf-8";
    for (accept, expected) in [
        ("application/json;q=0, text/plain", text),
        ("application/health+json; q=0.0, text/plain", text),
        ("application/json;q=0,application/health+json;q=0", text),
        ("application/json;q=0.5, text/plain", "application/json"),
        ("APPLICATION/JSON", "application/json"),
        ("*/*", text),
    ] {
        let r = app.get_with("/readyz", &[("accept", accept)]).await;
        assert_eq!(r.header("content-type"), Some(expected), "Accept: {accept}");
    }
    let r = app
        .get_with(
            "/metrics",
            &[(
                "accept",
                "application/openmetrics-text;version=1.0.0;q=0, text/plain",
            )],
        )
        .await;
    assert!(
        r.header("content-type")
            .is_some_and(|ct| ct.starts_with("text/plain")),
        "{:?}",
        r.header("content-type")
    );
    let r = app
        .get_with(
            "/metrics",
            &[(
                "accept",
                "application/openmetrics-text;version=1.0.0,text/plain;q=0.5",
            )],
        )
        .await;
    assert!(r
        .header("content-type")
        .is_some_and(|ct| ct.starts_with("application/openmetrics-text")));
}

/// A maintenance window applies to every `/readyz` answer: no exclusion and no narrower path lets a load
/// balancer see `200` during it; `/healthz` stays as it is.
#[tokio::test]
async fn maintenance_cannot_be_excluded_or_bypassed_by_a_narrower_path() {
    let app = App::polled(
        &[("postgresql-service-broker", "ok")],
        "[maintenance]\nuntil = \"2099-01-01T00:00:00Z\"\nreason = \"upgrade\"\n",
    );
    for path in [
        "/readyz",
        "/readyz?exclude=maintenance",
        "/readyz?exclude=maintenance/window",
        "/readyz/backend-status",
        "/readyz/backend-status/postgresql-service-broker",
        "/readyz/backend-status?exclude=maintenance&format=json",
        "/readyz/maintenance",
    ] {
        let r = app.get(path).await;
        assert_eq!(r.status, 503, "{path}: {}", r.body);
        assert!(
            r.body
                .contains("maintenance until 2099-01-01T00:00:00Z: upgrade"),
            "{path}: {}",
            r.body
        );
    }
    let r = app.get("/readyz?verbose&exclude=maintenance").await;
    assert!(
        r.body.contains(
            "warn: some health checks cannot be excluded: no matches for \"maintenance\""
        ),
        "{}",
        r.body
    );
    assert_eq!(app.get("/readyz/nothing").await.status, 404);
    assert_eq!(app.get("/healthz/backend-status").await.status, 200);
    assert_eq!(app.get("/healthz?exclude=maintenance").await.status, 200);
}

#[tokio::test]
async fn silences_and_maintenance_show_until_when_but_withhold_their_reasons() {
    let app = App::polled(
        DEGRADED,
        "[server]\ndetails = \"never\"\n\
         [[silence]]\nmatch = \"backend-status/postgresql-backup-manager\"\nuntil = \"2099-01-01T00:00:00Z\"\nreason = \"secret plan\"\n\
         [maintenance]\nuntil = \"2099-01-01T00:00:00Z\"\nreason = \"secret upgrade\"\n",
    );
    let r = app.request("GET", "/readyz?verbose", &[]).await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(
        r.body.contains(
            "[-]maintenance/window failed: maintenance until 2099-01-01T00:00:00Z: reason withheld\n"
        ),
        "{}",
        r.body
    );
    assert!(
        r.body.contains(
            "[+]backend-status/postgresql-backup-manager warn: silenced until 2099-01-01T00:00:00Z: reason withheld\n"
        ),
        "{}",
        r.body
    );
    assert!(!r.body.contains("secret"), "{}", r.body);
    let healthz = app.request("GET", "/healthz?format=json", &[]).await;
    assert_eq!(healthz.status, 200, "maintenance leaves /healthz alone");
    let item = healthz.json()["checks"]["backend-status"]
        .as_array()
        .expect("items")
        .iter()
        .find(|i| i["componentId"] == "postgresql-backup-manager")
        .expect("item")
        .clone();
    assert_eq!(item["silenced"]["until"], "2099-01-01T00:00:00Z");
    assert_eq!(item["silenced"]["reason"], "reason withheld");
    assert!(!app.request("GET", "/", &[]).await.body.contains("secret"));
}

/// A poll outcome answering `body` with 200.
fn answered(body: &str) -> Passthrough {
    Passthrough {
        status: 200,
        body: body.to_string().into(),
        json: true,
        at: klutch_health::clock::Moment::now(),
        last_good: None,
    }
}

#[tokio::test]
async fn the_first_backend_status_check_serves_backend_health_unless_server_passthrough_names_another(
) {
    let two = |server: &str| {
        format!(
            "{server}[[check]]\nname = \"first\"\ntype = \"backend-status\"\nurl = \"http://127.0.0.1:9/a\"\n\
             [[check]]\nname = \"second\"\ntype = \"backend-status\"\nurl = \"http://127.0.0.1:9/b\"\n"
        )
    };
    let sink = Sink::default();
    sink.polled("second", answered(r#"{"b":"ok"}"#));
    let r = App::configured(&sink, &two(""))
        .get("/backend-health")
        .await;
    assert_eq!(r.status, 503, "the first check has not polled yet: {r:?}");
    assert_eq!(
        r.body,
        "check first has not polled provider-anynines' health server yet\n"
    );
    sink.polled("first", answered(r#"{"a":"ok"}"#));
    let r = App::configured(&sink, &two(""))
        .get("/backend-health")
        .await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (200, r#"{"a":"ok"}"#),
        "neither overwrites the other"
    );
    let r = App::configured(&sink, &two("[server]\npassthrough = \"second\"\n"))
        .get("/backend-status")
        .await;
    assert_eq!((r.status, r.body.as_str()), (200, r#"{"b":"ok"}"#));
    let e =
        Config::from_toml(&two("[server]\npassthrough = \"third\"\n")).expect_err("no such check");
    assert_eq!(
        e.to_string(),
        "invalid configuration: server.passthrough: no backend-status check is named \"third\" (it names the check whose poll /backend-health serves)"
    );
}

#[tokio::test]
async fn without_a_backend_status_check_backend_health_is_not_found_with_the_reason() {
    let config = "[[check]]\nname = \"provider-pods\"\ntype = \"pods\"\n";
    let sink = Sink::default();
    // A poll left behind by a check no longer configured is never served.
    sink.polled("backend-status", answered("{}"));
    let r = App::configured(&sink, config).get("/backend-health").await;
    assert_eq!(r.status, 404, "{r:?}");
    assert_eq!(
        r.body,
        "404 no backend-status check is configured, so there is no poll to pass through\n"
    );
}

/// The service after the shipped checks observed what `estate` holds.
fn shipped_app(estate: &crate::causes::Estate, replace: (&str, &str)) -> App {
    let sink = Sink::default();
    for (check, items) in estate.snapshot().checks {
        sink.publish(&check, items.to_vec());
    }
    App::configured(
        &sink,
        &crate::causes::shipped("").replace(replace.0, replace.1),
    )
}

const PODS: &str = "provider-pods/provider-anynines-3f2a9c1b7e5d-6b8f9c7d5-x2x7q";

/// One crash-looping provider pod: each line it explains names it, and one line before the verdict names
/// it once, counting the lines of that answer only; both endpoints name the same cause.
#[tokio::test]
async fn one_broken_pod_is_one_root_cause_line_before_the_verdict() {
    let estate = crate::causes::Estate::healthy().crash_looping();
    let app = shipped_app(&estate, ("", ""));
    let r = app.get("/readyz").await;
    assert_eq!(r.status, 503);
    let lines: Vec<&str> = r.body.lines().collect();
    let suffix = format!(" (cause: {PODS})");
    let explained: Vec<&&str> = lines.iter().filter(|l| l.ends_with(&suffix)).collect();
    assert_eq!(explained.len(), 6, "{}", r.body);
    assert!(
        lines.contains(
            &"[-]providers/provider-anynines failed: Healthy is \"False\" (UnhealthyPackageRevision): Deployment provider-anynines-3f2a9c1b7e5d does not have minimum availability (cause: provider-pods/provider-anynines-3f2a9c1b7e5d-6b8f9c7d5-x2x7q)"
        ),
        "{}",
        r.body
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with(&format!("[-]{PODS} failed: ")) && !l.contains("(cause:")),
        "the root's own line names no cause: {}",
        r.body
    );
    assert_eq!(
        &lines[lines.len() - 2..],
        [
            format!("root cause: {PODS} (not ready (Running): containers with unready status: [package-runtime]; container package-runtime in CrashLoopBackOff (7 restarts)) explains 6 items").as_str(),
            "readyz check failed"
        ],
        "{}",
        r.body
    );
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.starts_with("root cause: "))
            .count(),
        1
    );

    // Only what this answer shows is counted.
    let r = app.get("/readyz/backend-status").await;
    assert!(
        r.body.ends_with(&format!(
            "root cause: {PODS} (not ready (Running): containers with unready status: [package-runtime]; container package-runtime in CrashLoopBackOff (7 restarts)) explains 3 items\nreadyz check failed\n"
        )),
        "{}",
        r.body
    );
    let r = app
        .get("/readyz?exclude=backend-status&exclude=provider-configs&exclude=providers")
        .await;
    assert!(
        !r.body.contains("root cause:"),
        "the root's own line explains none of the lines shown: {}",
        r.body
    );
    let r = app.get("/readyz/providers/provider-anynines?verbose").await;
    assert!(r.body.contains("explains 1 item\n"), "{}", r.body);

    // /healthz damps failures for 30s and counts unknown as warn: it passes, with a plain `ok`...
    let r = app.get("/healthz").await;
    assert_eq!((r.status, r.body.as_str()), (200, "ok"));
    // ...and its verbose answer names the same cause for the same items.
    let r = app.get("/healthz?verbose").await;
    assert_eq!(
        r.body.lines().filter(|l| l.ends_with(&suffix)).count(),
        6,
        "{}",
        r.body
    );
    assert!(
        r.body.contains(&format!("root cause: {PODS} ("))
            && r.body
                .ends_with(" explains 6 items\nhealthz check passed\n"),
        "{}",
        r.body
    );

    // An endpoint that counts unknown as passing shows those lines `ok`, with no cause and uncounted.
    let lenient = shipped_app(&estate, ("unknown = \"fail\"", "unknown = \"pass\""));
    let r = lenient.get("/readyz?verbose").await;
    assert!(
        r.body
            .contains("\n[+]backend-status/postgresql-backup-manager ok\n"),
        "{}",
        r.body
    );
    assert!(r.body.contains(" explains 2 items\n"), "{}", r.body);

    // Withheld details withhold the root cause's reason, never its name.
    let app = shipped_app(&estate, ("details = \"always\"", "details = \"never\""));
    let r = app.get("/readyz").await;
    assert!(
        r.body.contains(&format!(
            "[-]providers/provider-anynines failed: reason withheld (cause: {PODS})\n"
        )),
        "{}",
        r.body
    );
    assert!(
        r.body.ends_with(&format!(
            "root cause: {PODS} (reason withheld) explains 6 items\nreadyz check failed\n"
        )),
        "{}",
        r.body
    );
}

#[tokio::test]
async fn json_names_each_items_cause_and_via_and_every_root_cause() {
    let app = shipped_app(&crate::causes::Estate::healthy().crash_looping(), ("", ""));
    let doc = app.get("/readyz?format=json").await.json();
    let item = |check: &str, id: &str| {
        doc["checks"][check]
            .as_array()
            .and_then(|a| a.iter().find(|i| i["componentId"] == id))
            .cloned()
            .unwrap_or_else(|| panic!("{check}/{id} in {doc}"))
    };
    let p = item("providers", "provider-anynines");
    assert_eq!(
        (p["cause"].as_str(), p["via"].as_str()),
        (Some(PODS), Some(PODS))
    );
    let entry = item("backend-status", "postgresql-backup-manager");
    assert_eq!(
        (entry["cause"].as_str(), entry["via"].as_str()),
        (Some(PODS), Some("backend-status/_endpoint"))
    );
    let pod = item(
        "provider-pods",
        "provider-anynines-3f2a9c1b7e5d-6b8f9c7d5-x2x7q",
    );
    assert!(
        pod.get("cause").is_none() && pod.get("via").is_none(),
        "{pod}"
    );
    assert!(
        item("providers", "provider-kubernetes")
            .get("cause")
            .is_none(),
        "a passing item has none"
    );
    let causes = doc["causes"].as_array().expect("causes");
    assert_eq!(causes.len(), 1, "{doc}");
    assert_eq!(causes[0]["name"], PODS);
    assert_eq!(causes[0]["status"], "fail");
    assert!(
        causes[0]["output"]
            .as_str()
            .is_some_and(|o| o.contains("CrashLoopBackOff (7 restarts)")),
        "{doc}"
    );
    assert_eq!(
        causes[0]["explains"],
        serde_json::json!([
            "backend-status/_endpoint",
            "backend-status/postgresql-backup-manager",
            "backend-status/postgresql-service-broker",
            "providers/provider-anynines",
            "provider-configs/postgresql-backup-manager",
            "provider-configs/postgresql-service-broker"
        ])
    );
    // One check: only its items are explained there.
    let doc = app.get("/readyz/providers?format=json").await.json();
    assert_eq!(
        doc["causes"][0]["explains"],
        serde_json::json!(["providers/provider-anynines"])
    );
    // Healthy: no causes at all.
    let app = shipped_app(&crate::causes::Estate::healthy(), ("", ""));
    let doc = app.get("/readyz?format=json").await.json();
    assert!(doc.get("causes").is_none(), "{doc}");
}

#[tokio::test]
async fn the_status_page_leads_with_the_root_causes() {
    let estate = crate::causes::Estate::healthy().crash_looping().set(
        "anynines-backend",
        Observation::new(
            "anynines-backend",
            Status::Fail,
            "not Available",
            Timestamp::now(),
        ),
    );
    let app = shipped_app(&estate, ("", ""));
    let page = app.get("/").await.body;
    let causes = page
        .find("Root causes (2)")
        .expect("the root causes section");
    let attention = page.find("Needs attention").expect("needs attention");
    assert!(causes < attention, "root causes come first");
    let section = &page[causes..attention];
    let pod = section.find(PODS).expect("the pod");
    let backend = section
        .find("anynines-backend/anynines-backend")
        .expect("the other root cause");
    assert!(pod > backend, "in report order");
    assert!(
        section.contains("explains 6 items: <a href=\"#i"),
        "{section}"
    );
    assert!(
        section.contains("CrashLoopBackOff (7 restarts)"),
        "{section}"
    );
    // Each explained item's card and attention entry name their cause.
    assert!(
        page.contains("cause: <a href=\"#i")
            && page.contains(&format!("{PODS}</a> (via backend-status/_endpoint)")),
        "{page}"
    );
}
