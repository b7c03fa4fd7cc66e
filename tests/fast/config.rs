//! Configuration: sources and their order, and every invalid input stopping start-up with exit code 2 and
//! a message naming the key.

use crate::common;

use std::process::Command;

use klutch_health::config::{Config, Require};

const MINIMAL: &str = "[[check]]\nname = \"backend-status\"\ntype = \"backend-status\"\nurl = \"http://127.0.0.1:8081/backend-health\"\n";

/// Runs `--check-config` on `config`; returns the exit code, stdout and stderr.
fn check_config(
    config: &str,
    env: &[(&str, &str)],
    args: &[&str],
) -> (Option<i32>, String, String) {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("config.toml");
    std::fs::write(&path, config).expect("write");
    let mut cmd = Command::new(common::BIN);
    cmd.arg("--config")
        .arg(&path)
        .arg("--check-config")
        .args(args)
        .env_remove("KLUTCH_HEALTH_CONFIG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

fn rejected(config: &str, expected: &str) {
    let (code, _, err) = check_config(config, &[], &[]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains(expected), "expected {expected:?} in: {err}");
}

#[test]
fn the_shipped_config_is_valid() {
    let shipped =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config.toml")).expect("read");
    let config = Config::from_toml(&shipped).expect("valid");
    let names: Vec<&str> = config.checks.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "backend-status",
            "providers",
            "configurations",
            "functions",
            "provider-configs",
            "managed-resources",
            "anynines-backend",
            "provider-pods",
            "konnectors",
            "app-cluster-bindings"
        ]
    );
    let (code, out, err) = check_config(&shipped, &[], &[]);
    assert_eq!(code, Some(0), "{err}");
    Config::from_toml(&out).expect("the printed configuration is itself valid");
}

/// The shipped, commented-out `broker` check is valid once uncommented, in each shipped configuration.
#[test]
fn the_shipped_broker_check_is_valid_uncommented() {
    for file in ["config.toml", "deploy/sidecar/config.toml"] {
        let shipped = std::fs::read_to_string(format!("{}/{file}", env!("CARGO_MANIFEST_DIR")))
            .expect("read");
        let start = shipped
            .find("# [[check]]\n# name = \"brokers\"")
            .unwrap_or_else(|| panic!("{file} ships the broker check"));
        let block: String = shipped[start..]
            .lines()
            .take_while(|l| l.starts_with('#'))
            .map(|l| format!("{}\n", l.strip_prefix("# ").unwrap_or(l)))
            .collect();
        let config = Config::from_toml(&format!("{shipped}\n{block}")).expect("valid");
        let brokers = config
            .checks
            .iter()
            .find(|c| c.name == "brokers")
            .expect("the check");
        assert_eq!(brokers.settings.type_name(), "broker", "{file}");
    }
}

#[test]
fn environment_overrides_the_file_and_flags_override_the_environment() {
    let env = [
        ("KLUTCH_HEALTH_SERVER__LISTEN", "127.0.0.1:9000"),
        ("KLUTCH_HEALTH_ENDPOINTS__READYZ__UNKNOWN", "warn"),
    ];
    let (code, out, err) = check_config(MINIMAL, &env, &[]);
    assert_eq!(code, Some(0), "{err}");
    let printed = Config::from_toml(&out).expect("printed config");
    assert_eq!(printed.server.listen.to_string(), "127.0.0.1:9000");
    assert_eq!(
        printed.endpoints.readyz.unknown,
        klutch_health::config::UnknownAs::Warn
    );
    let (_, out, _) = check_config(MINIMAL, &env, &["--listen", "127.0.0.1:9100"]);
    assert_eq!(
        Config::from_toml(&out)
            .expect("printed")
            .server
            .listen
            .to_string(),
        "127.0.0.1:9100"
    );
}

#[test]
fn config_path_from_flag_then_environment_then_working_directory() {
    let dir = tempfile::tempdir().expect("dir");
    std::fs::write(
        dir.path().join("config.toml"),
        MINIMAL.replace("8081", "1111"),
    )
    .expect("write");
    let env_file = dir.path().join("env.toml");
    std::fs::write(&env_file, MINIMAL.replace("8081", "2222")).expect("write");
    let flag_file = dir.path().join("flag.toml");
    std::fs::write(&flag_file, MINIMAL.replace("8081", "3333")).expect("write");
    let run = |flag: bool, env: bool| {
        let mut cmd = Command::new(common::BIN);
        cmd.current_dir(dir.path())
            .arg("--check-config")
            .env_remove("KLUTCH_HEALTH_CONFIG");
        if flag {
            cmd.arg("--config").arg(&flag_file);
        }
        if env {
            cmd.env("KLUTCH_HEALTH_CONFIG", &env_file);
        }
        String::from_utf8_lossy(&cmd.output().expect("run").stdout).to_string()
    };
    assert!(run(true, true).contains(":3333/"));
    assert!(
        run(false, true).contains(":2222/"),
        "KLUTCH_HEALTH_CONFIG is a path, not a key"
    );
    assert!(run(false, false).contains(":1111/"));
}

#[test]
fn invalid_configurations_name_the_key() {
    let with_password = MINIMAL.replace("http://", "http://user:secret@");
    rejected(
        &with_password,
        "check \"backend-status\": url: invalid URL: credentials in the URL are not supported",
    );
    let (_, _, err) = check_config(&with_password, &[], &[]);
    assert!(!err.contains("secret"), "the password is not echoed: {err}");
    let bad_duration = MINIMAL.to_string() + "timeout = \"abc\"\n";
    rejected(
        &bad_duration,
        "check \"backend-status\": timeout: invalid duration \"abc\"",
    );
    rejected(
        &(MINIMAL.to_string() + "colour = \"red\"\n"),
        "check \"backend-status\": colour: unknown field",
    );
    rejected(
        &format!("{MINIMAL}[server]\nlisten = \"0.0.0.0:1\"\nlisen = 1\n"),
        "server.lisen: unknown field",
    );
    rejected(&format!("bogus = 1\n{MINIMAL}"), "bogus: unknown field");
    rejected(
        &MINIMAL.replace("http://127.0.0.1:8081/backend-health", "not a url"),
        "check \"backend-status\": url: invalid URL",
    );
    rejected(
        &MINIMAL.replace("http://", "https://"),
        "only http:// is supported",
    );
    rejected(
        &format!("{MINIMAL}{MINIMAL}"),
        "check \"backend-status\": name: duplicate check name",
    );
    rejected(
        &format!("{MINIMAL}[endpoints.readyz]\nexclude = [\"nothing\"]\n"),
        "endpoints.readyz.exclude: pattern \"nothing\" matches no check",
    );
    rejected(
        "[[check]]\nname = \"k\"\ntype = \"deployment\"\ncluster = \"app\"\nnamespace = \"bind\"\ndeployment = \"konnector\"\n",
        "check \"k\": cluster: no cluster \"app\" is declared",
    );
    rejected(
        &format!("{MINIMAL}[server]\ndetails = \"token\"\n"),
        "server.token_file: missing",
    );
    rejected(
        &format!("{MINIMAL}[endpoints.healthz]\nfail_after = \"soon\"\n"),
        "endpoints.healthz.fail_after: invalid duration \"soon\"",
    );
    rejected(
        &format!("{MINIMAL}[endpoints.healthz]\nunknown = \"maybe\"\n"),
        "endpoints.healthz.unknown: unknown variant: found `maybe`",
    );
    rejected(
        "[[check]]\nname = \"x\"\ntype = \"nope\"\n",
        "check \"x\": type: unknown check type \"nope\"",
    );
    rejected("[[check]]\nname = \"x\"\n", "check \"x\": type: missing");
    rejected(
        &MINIMAL.replace(
            "name = \"backend-status\"\n",
            "name = \"backend-status\"\nrequire = 0\n",
        ),
        "require: expected \"all\", \"any\" or a number",
    );
    rejected("this is not toml", "invalid configuration");
}

#[test]
fn a_missing_file_is_a_configuration_error() {
    let out = Command::new(common::BIN)
        .args(["--config", "/nonexistent/klutch.toml", "--check-config"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("cannot read configuration file /nonexistent/klutch.toml"));
}

#[test]
fn an_invalid_environment_value_names_its_key() {
    let (code, _, err) = check_config(
        MINIMAL,
        &[("KLUTCH_HEALTH_SERVER__SHUTDOWN_DELAY", "later")],
        &[],
    );
    assert_eq!(code, Some(2));
    assert!(
        err.contains("server.shutdown_delay: invalid duration \"later\""),
        "{err}"
    );
}

#[test]
fn require_is_all_any_or_a_number() {
    let parse = |r: &str| {
        Config::from_toml(&format!("{MINIMAL}require = {r}\n")).map(|c| c.checks[0].require)
    };
    assert_eq!(parse("\"all\"").expect("all"), Require::All);
    assert_eq!(parse("\"any\"").expect("any"), Require::Any);
    assert_eq!(parse("2").expect("2"), Require::AtLeast(2));
    assert!(parse("\"most\"").is_err());
}

#[test]
fn unknown_keys_are_errors_in_every_table() {
    for (extra, expected) in [
        (
            "[endpoints.readyz]\nfail_afterr = \"1s\"\n",
            "endpoints.readyz.fail_afterr: unknown field",
        ),
        ("[endpoints.livez]\n", "endpoints.livez: unknown field"),
        (
            "[kubernetes]\nkubeconfg = \"/x\"\n",
            "kubernetes.kubeconfg: unknown field",
        ),
        (
            "[clusters.app]\nkubeconfig = \"/x\"\ncontxt = \"y\"\n",
            "clusters.app.contxt: unknown field",
        ),
    ] {
        rejected(&format!("{MINIMAL}{extra}"), expected);
    }
    // A key of another check type is unknown for this one.
    rejected(
        &(MINIMAL.to_string() + "namespace = \"bind\"\n"),
        "check \"backend-status\": namespace: unknown field",
    );
}

#[test]
fn more_invalid_values_name_their_key() {
    let cases = [
        (
            MINIMAL.replace(
                "http://127.0.0.1:8081/backend-health",
                "http:///backend-health",
            ),
            "check \"backend-status\": url: invalid URL \"http:///backend-health\"",
        ),
        (
            MINIMAL.to_string() + "interval = \"0s\"\n",
            "check \"backend-status\": interval: must be more than 0s",
        ),
        (
            MINIMAL.to_string() + "timeout = 5\n",
            "check \"backend-status\": timeout: invalid duration",
        ),
        (
            MINIMAL.to_string() + "max_body = 0\n",
            "check \"backend-status\": max_body: must be at least 1 byte",
        ),
        (
            format!("{MINIMAL}[server]\nlisten = \"localhost\"\n"),
            "server.listen",
        ),
        (
            format!("{MINIMAL}[server]\ndetails = \"sometimes\"\n"),
            "server.details",
        ),
        (
            MINIMAL.replace("backend-status\"\ntype", "backend status\"\ntype"),
            "check \"backend status\": name: \"backend status\" has ' ': a check name is 1 to 63 ASCII letters, digits, '-', '_' and '.'",
        ),
        (
            format!(
                "{MINIMAL}[endpoints.healthz]\nwarn_only = [\"backend-status/*\", \"nope/*\"]\n"
            ),
            "endpoints.healthz.warn_only: pattern \"nope/*\" matches no check",
        ),
        (
            format!("{MINIMAL}[endpoints.readyz]\ninclude = [\"[\"]\n"),
            "endpoints.readyz.include: invalid pattern \"[\"",
        ),
        (
            format!("{MINIMAL}[clusters.app]\ncontext = \"x\"\n"),
            "clusters.app.kubeconfig: missing",
        ),
        (
            MINIMAL.replace(
                "type = \"backend-status\"\n",
                "type = \"backend-status\"\ncluster = \"app\"\n",
            ) + "[clusters.app]\nkubeconfig = \"/x\"\n",
            "check \"backend-status\": cluster: a backend-status check polls a URL",
        ),
        (
            "[server]\nlisten = \"0.0.0.0:1\"\n".to_string(),
            "check: no checks configured",
        ),
    ];
    for (config, expected) in cases {
        rejected(&config, expected);
    }
}

/// Values that cannot work stop the program with the key named: a header timeout of zero (every request
/// closed unanswered), no connection at all, a blank reason, a check name that is no URL path segment or
/// metric label.
#[test]
fn values_that_cannot_work_are_refused_naming_the_key() {
    let silence = |reason: &str| {
        format!(
            "{MINIMAL}[[silence]]\nmatch = \"backend-status\"\nuntil = \"2099-01-01T00:00:00Z\"\nreason = \"{reason}\"\n"
        )
    };
    let named =
        |name: &str| MINIMAL.replace("name = \"backend-status\"", &format!("name = \"{name}\""));
    let cases = [
        (
            format!("{MINIMAL}[server]\nheader_read_timeout = \"0s\"\n"),
            "server.header_read_timeout: must be more than 0s".to_string(),
        ),
        (
            format!("{MINIMAL}[server]\nmax_connections = 0\n"),
            "server.max_connections: must be at least 1".into(),
        ),
        (
            format!("{MINIMAL}[server]\npublic_max_connections = 0\n"),
            "server.public_max_connections: must be at least 1".into(),
        ),
        (
            silence("  "),
            "silence[0].reason: must say why (it is blank)".into(),
        ),
        (
            format!("{MINIMAL}[maintenance]\nuntil = \"2099-01-01T00:00:00Z\"\nreason = \"\\t\"\n"),
            "maintenance.reason: must say why (it is blank)".into(),
        ),
    ]
    .into_iter()
    .chain(
        // TOML escapes: a BEL and a newline inside the name.
        [
            "a?b",
            "a#b",
            "a*",
            "a/b",
            "bell\\u0007",
            "new\\nline",
            "é",
            "50%",
            "a b",
            "-x",
            "",
        ]
        .map(|n| (named(n), "name: ".to_string())),
    )
    .chain([
        (named(&"x".repeat(64)), "name: ".to_string()),
        (
            named("maintenance"),
            "name: \"maintenance\" is reserved".into(),
        ),
        (named("cluster"), "name: \"cluster\" is reserved".into()),
    ]);
    for (config, expected) in cases {
        let (code, _, err) = check_config(&config, &[], &[]);
        assert_eq!(code, Some(2), "{config}\n{err}");
        assert!(err.contains(&expected), "expected {expected:?} in: {err}");
        if expected == "name: " {
            assert!(
                err.contains("a check name is 1 to 63 ASCII letters, digits, '-', '_' and '.', starting with a letter or a digit"),
                "{err}"
            );
        }
    }
    // Every punctuation allowed, and the longest name.
    for name in ["a-b_c.d", "0x", &"x".repeat(63)] {
        let (code, _, err) = check_config(&named(name), &[], &[]);
        assert_eq!(code, Some(0), "{name}: {err}");
    }
}

/// Declarations that work but do nothing are warnings at load; a TOML datetime is the time it says.
#[test]
fn ended_declarations_warn_and_a_toml_datetime_is_a_time() {
    let config = format!(
        "{MINIMAL}[[silence]]\nmatch = \"backend-status\"\nuntil = 2020-01-01T00:00:00Z\nreason = \"old\"\n\
         [[silence]]\nmatch = \"nothing/*\"\nuntil = 2099-01-01T00:00:00Z\nreason = \"typo\"\n\
         [maintenance]\nfrom = 2019-12-31T00:00:00Z\nuntil = 2020-01-01T00:00:00Z\nreason = \"long done\"\n"
    );
    let (code, out, err) = check_config(&config, &[], &[]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("until = \"2020-01-01T00:00:00Z\""), "{out}");
    assert!(out.contains("from = \"2019-12-31T00:00:00Z\""), "{out}");
    for warning in [
        "silence ended at 2020-01-01T00:00:00Z: it silences nothing",
        "[maintenance] window ended at 2020-01-01T00:00:00Z: it drains nothing",
        "silence matches nothing",
    ] {
        assert!(err.contains(warning), "expected {warning:?} in: {err}");
    }
    // A datetime without an offset is no instant: refused, naming the key.
    rejected(
        &format!("{MINIMAL}[maintenance]\nuntil = 2099-01-01T00:00:00\nreason = \"x\"\n"),
        "maintenance.until: invalid time \"2099-01-01T00:00:00\": write it in RFC 3339 with an offset",
    );
}

/// A silence whose check exists but none of whose items does is found once every check has synced.
#[tokio::test]
async fn a_silence_matching_no_item_warns_once_every_check_has_synced() {
    let backend = klutch_sim::FakeBackend::start()
        .await
        .expect("fake backend");
    backend.set_entry("postgresql-backup-manager", "ok");
    let svc = common::Service::start(
        &common::backend_config(
            &backend.url(),
            "[[silence]]\nmatch = \"backend-status/postgresql-backup-mangaer\"\nuntil = \"2099-01-01T00:00:00Z\"\nreason = \"typo\"\n\
             [[silence]]\nmatch = \"backend-status/postgresql-backup-manager\"\nuntil = \"2099-01-01T00:00:00Z\"\nreason = \"right\"\n",
        ),
        &[],
    )
    .await;
    svc.wait_for("/readyz", "the first poll", |r| r.status == 200)
        .await;
    let warned = common::eventually(
        "the warning about the silence matching no item",
        async || {
            let logs = svc.logs();
            let lines: Vec<String> = logs
                .iter()
                .filter(|l| l.contains("silence matches no item"))
                .cloned()
                .collect();
            (!lines.is_empty()).then_some(lines)
        },
    )
    .await;
    assert_eq!(warned.len(), 1, "{warned:?}");
    assert!(
        warned[0].contains("postgresql-backup-mangaer"),
        "{warned:?}"
    );
}

#[test]
fn details_token_needs_a_readable_non_empty_token_file() {
    let dir = tempfile::tempdir().expect("dir");
    let missing = dir.path().join("missing");
    rejected(
        &format!(
            "{MINIMAL}[server]\ndetails = \"token\"\ntoken_file = \"{}\"\n",
            missing.display()
        ),
        &format!("server.token_file: cannot read {}", missing.display()),
    );
    let empty = dir.path().join("empty");
    std::fs::write(&empty, "\n").expect("write");
    rejected(
        &format!(
            "{MINIMAL}[server]\ndetails = \"token\"\ntoken_file = \"{}\"\n",
            empty.display()
        ),
        "is empty",
    );
    let good = dir.path().join("good");
    std::fs::write(&good, "s3cret\n").expect("write");
    let (code, out, err) = check_config(
        &format!(
            "{MINIMAL}[server]\ndetails = \"token\"\ntoken_file = \"{}\"\n",
            good.display()
        ),
        &[],
        &[],
    );
    assert_eq!(code, Some(0), "{err}");
    assert!(!out.contains("s3cret"), "the token is never printed: {out}");
}

#[test]
fn serving_with_an_invalid_configuration_exits_2_before_listening() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("config.toml");
    std::fs::write(&path, MINIMAL.to_string() + "timeout = \"abc\"\n").expect("write");
    for args in [&["serve"][..], &[][..], &["check"][..]] {
        let out = Command::new(common::BIN)
            .arg("--config")
            .arg(&path)
            .args(["--listen", "127.0.0.1:0", "--log-format", "json"])
            .args(args)
            .output()
            .expect("run");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains("check \\\"backend-status\\\": timeout: invalid duration \\\"abc\\\""),
            "{args:?}: {err}"
        );
        assert!(!err.contains("\"listening\""), "{args:?}: {err}");
    }
}

#[test]
fn the_printed_configuration_shows_defaults_and_every_override() {
    let (code, out, err) = check_config(
        MINIMAL,
        &[
            ("KLUTCH_HEALTH_SERVER__DETAILS", "never"),
            ("KLUTCH_HEALTH_ENDPOINTS__HEALTHZ__FAIL_AFTER", "45s"),
        ],
        &["--listen", "127.0.0.1:9200"],
    );
    assert_eq!(code, Some(0), "{err}");
    let c = Config::from_toml(&out).expect("printed config");
    assert_eq!(c.server.listen.to_string(), "127.0.0.1:9200");
    assert_eq!(
        c.server.details,
        klutch_health::config::DetailsPolicy::Never
    );
    assert_eq!(
        c.endpoints.healthz.fail_after,
        std::time::Duration::from_secs(45)
    );
    // The documented defaults.
    assert_eq!(
        c.endpoints.readyz.unknown,
        klutch_health::config::UnknownAs::Fail
    );
    assert_eq!(
        c.endpoints.healthz.unknown,
        klutch_health::config::UnknownAs::Warn
    );
    assert_eq!(c.server.shutdown_delay, std::time::Duration::from_secs(5));
    let Some(b) = c.checks[0]
        .settings
        .downcast::<klutch_health::checks::backend_status::BackendStatus>()
    else {
        panic!("backend-status: {out}");
    };
    assert_eq!(b.max_body, 1024 * 1024);
    assert_eq!(b.timeout, std::time::Duration::from_secs(2));
    assert_eq!(b.interval, std::time::Duration::from_secs(10));
}

#[test]
fn environment_values_for_text_keys_stay_text() {
    // The environment has no types: a service id of digits is still a service id.
    let (code, out, err) = check_config(
        MINIMAL,
        &[
            ("KLUTCH_HEALTH_SERVER__SERVICE_ID", "2024"),
            ("KLUTCH_HEALTH_SERVER__DESCRIPTION", "true"),
            ("KLUTCH_HEALTH_KUBERNETES__CONTEXT", "42"),
        ],
        &[],
    );
    assert_eq!(code, Some(0), "{err}");
    let c = Config::from_toml(&out).expect("printed config");
    assert_eq!(c.server.service_id, "2024");
    assert_eq!(c.server.description, "true");
    assert_eq!(c.kubernetes.context.as_deref(), Some("42"));
    // Other types still refuse what is not theirs.
    let (code, _, err) = check_config(
        MINIMAL,
        &[("KLUTCH_HEALTH_SERVER__SERVICE_ID", "[1, 2]")],
        &[],
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("server.service_id: invalid type"), "{err}");
}

#[test]
fn check_type_names_in_messages_come_from_the_registry() {
    use klutch_health::checks::{type_names, TYPES};
    let names: Vec<&str> = TYPES.iter().map(|t| t.name).collect();
    assert_eq!(type_names(), names.join(", "));
    let e = Config::from_toml("[[check]]\nname = \"x\"\ntype = \"nope\"\n")
        .expect_err("unknown type")
        .to_string();
    assert_eq!(
        e,
        format!(
            "invalid configuration: check \"x\": type: unknown check type \"nope\" (one of {})",
            type_names()
        )
    );
    let e = Config::from_toml("[[check]]\nname = \"x\"\n")
        .expect_err("no type")
        .to_string();
    assert!(
        e.ends_with(&format!("type: missing (one of {})", type_names())),
        "{e}"
    );
}

#[test]
fn the_estate_check_types_read_and_refuse_their_keys() {
    let check = |body: &str| format!("[[check]]\nname = \"c\"\n{body}");
    rejected(
        &check("type = \"crossplane-package\"\nkind = \"compositions\"\n"),
        "kind",
    );
    rejected(
        &check("type = \"cluster-binding\"\ninterval = \"30s\"\n"),
        "interval",
    );
    rejected(
        &check("type = \"deployment\"\nnamespace = \"bind\"\ndeployment = []\n"),
        "must not be empty",
    );
    rejected(
        &check("type = \"deployment\"\nnamespace = \"bind\"\ndeployment = 3\n"),
        "a Deployment name or a list of candidate names",
    );
    for accepted in [
        "type = \"crossplane-provider\"\nproviders = [\"provider-anynines\"]\n",
        "type = \"crossplane-package\"\nkind = \"functions\"\nnames = [\"function-patch-and-transform\"]\n",
        "type = \"deployment\"\nnamespace = \"bind\"\ndeployment = \"anynines-backend\"\n",
        "type = \"deployment\"\nnamespace = \"bind\"\ndeployment = [\"anynines-backend\", \"klutch-bind-backend\"]\n",
    ] {
        let (code, _, err) = check_config(&check(accepted), &[], &[]);
        assert_eq!(code, Some(0), "{accepted}: {err}");
    }
}

#[test]
fn events_are_set_for_the_default_cluster_only() {
    rejected(
        &format!("[clusters.app]\nkubeconfig = \"/x\"\nevents = false\n{MINIMAL}"),
        "clusters.app.events: Events are written to the default cluster only: set [kubernetes] events instead",
    );
    rejected(
        &format!("[kubernetes]\nevents = \"yes\"\n{MINIMAL}"),
        "kubernetes.events",
    );
}

/// Durations as long as a duration can be (about 5 × 10¹¹ years) are accepted and never overflow a deadline:
/// the service serves and answers, and `check --wait` returns once its checks have synced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_longest_durations_never_panic() {
    const LONG: &str = "500000000000y";
    let cp = klutch_sim::SimControlPlane::start()
        .await
        .expect("simulated control plane");
    let dir = tempfile::tempdir().expect("dir");
    let kc = common::kubeconfig(&cp.api, dir.path());
    let config = format!(
        "[[check]]\nname = \"backend-status\"\ntype = \"backend-status\"\nurl = \"{}\"\ninterval = \"{LONG}\"\ntimeout = \"{LONG}\"\n\
         [[check]]\nname = \"pcs\"\ntype = \"provider-config\"\ncheck_stale_after = \"{LONG}\"\n\
         [[check]]\nname = \"pods\"\ntype = \"pods\"\nnamespace = \"crossplane-system\"\nrestart_window = \"{LONG}\"\n\
         [kubernetes]\nstale_after = \"{LONG}\"\nprobe_interval = \"{LONG}\"\nprobe_timeout = \"{LONG}\"\n\
         [server]\nshutdown_delay = \"{LONG}\"\nheader_read_timeout = \"{LONG}\"\n\
         [endpoints.readyz]\nfail_after = \"{LONG}\"\npass_after = \"{LONG}\"\n",
        cp.backend.url()
    );
    let svc = common::Service::start(&config, &[("KUBECONFIG", &kc)]).await;
    svc.wait_for("/readyz?verbose", "every check synced", |r| {
        r.status == 200 && r.body.contains("[+]pcs/") && r.body.contains("[+]pods/")
    })
    .await;
    cp.degrade_provider_config("postgresql-backup-manager", "down");
    svc.wait_for("/readyz?verbose", "the failure, damped", |r| {
        r.body.contains("counts as failed after")
    })
    .await;
    assert_eq!(svc.get("/history").await.status, 200);
    assert!(
        !svc.logs().iter().any(|l| l.contains("panicked")),
        "{:?}",
        svc.logs()
    );
    let path = dir.path().join("config.toml");
    std::fs::write(&path, &config).expect("config");
    let out = tokio::task::block_in_place(|| {
        Command::new(common::BIN)
            .arg("--config")
            .arg(&path)
            .args(["check", "--wait", LONG])
            .env("KUBECONFIG", &kc)
            .output()
            .expect("run check")
    });
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::mem::forget(dir);
}

/// `package = "CHECK/ITEM"` names an item of a `crossplane-package` check, on `pods`, `backend-status` and
/// `provider-config` checks only; anything else stops the load (exit 2) naming the key.
#[test]
fn a_package_key_names_an_item_of_a_crossplane_package_check() {
    let packages = "[[check]]\nname = \"providers\"\ntype = \"crossplane-package\"\nnames = [\"provider-anynines\"]\n\
                    [[check]]\nname = \"fns\"\ntype = \"crossplane-package\"\nkind = \"functions\"\n";
    let with = |body: &str, package: &str| {
        format!("{packages}[[check]]\nname = \"c\"\n{body}package = \"{package}\"\n")
    };
    let pods = "type = \"pods\"\n";
    for (body, package) in [
        (pods, "providers/provider-anynines"),
        // Every installed function may be it.
        (pods, "fns/function-patch-and-transform"),
        (
            "type = \"backend-status\"\nurl = \"http://127.0.0.1:8081/backend-health\"\n",
            "providers/provider-anynines",
        ),
        (
            "type = \"provider-config\"\n",
            "providers/provider-anynines",
        ),
    ] {
        let config = Config::from_toml(&with(body, package)).expect("valid");
        let c = config.checks.iter().find(|c| c.name == "c").expect("check");
        assert_eq!(c.package.as_deref(), Some(package));
    }
    for (body, package, why) in [
        (pods, "nope/x", "check \"c\": package: \"nope/x\": no check is named \"nope\""),
        (
            pods,
            "c/x",
            "check \"c\": package: \"c/x\": check \"c\" is a pods check, not a crossplane-package check",
        ),
        (
            pods,
            "providers/provider-kubernetes",
            "check \"c\": package: \"providers/provider-kubernetes\": check \"providers\" lists only \
             provider-anynines (add \"provider-kubernetes\" to its names)",
        ),
        (pods, "providers", "check \"c\": package: \"providers\" is not CHECK/ITEM"),
        (pods, "providers/a/b", "check \"c\": package: \"providers/a/b\" is not CHECK/ITEM"),
        (
            "type = \"deployment\"\nnamespace = \"bind\"\ndeployment = \"x\"\n",
            "providers/provider-anynines",
            "check \"c\": package: a deployment check names no package (only pods, backend-status, \
             provider-config and managed-resources checks do)",
        ),
    ] {
        let e = Config::from_toml(&with(body, package))
            .expect_err(package)
            .to_string();
        assert!(e.contains(why), "{e}");
    }
    rejected(
        &with(pods, "nope/x"),
        "package: \"nope/x\": no check is named",
    );
}
