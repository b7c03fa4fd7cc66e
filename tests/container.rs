//! The containers as Kubernetes runs them: for every rendered container that runs klutch-health, the
//! command line is built from the pod spec and the Dockerfile exactly as the kubelet builds it, the shipped
//! ConfigMap is "mounted" where the pod mounts it, and the real binary must start, serve /livez and keep
//! running against the simulated control plane. Nothing else ever ran that combination (issue 16: image
//! and manifests both passed `--config`, and every pod crash-looped).

mod common;
mod kustomize;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{eventually, kubeconfig, Resp, BIN};
use klutch_sim::SimControlPlane;
use kustomize::{render, ROOT};
use serde_json::Value;

/// Where the Dockerfile installs the binary.
const IMAGE_BINARY: &str = "/usr/local/bin/klutch-health";
/// Any one request of this test: an answer later than this is a failure, never a hang.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// What the final stage of a Dockerfile gives a container: ENTRYPOINT, CMD (exec form) and ENV.
#[derive(Debug, Default, PartialEq)]
struct Image {
    entrypoint: Vec<String>,
    cmd: Option<Vec<String>>,
    env: Vec<(String, String)>,
}

/// Reads the final stage of a Dockerfile. Shell-form ENTRYPOINT/CMD are refused: they run `/bin/sh -c`,
/// which a distroless image does not have.
fn parse_dockerfile(text: &str) -> Image {
    let joined = text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n")
        .replace("\\\n", " ");
    let mut image = Image::default();
    for line in joined.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let (instruction, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        let rest = rest.trim();
        let exec_form = || -> Vec<String> {
            serde_json::from_str(rest).unwrap_or_else(|e| {
                panic!("{instruction} must be an exec-form JSON array ({e}): {rest}")
            })
        };
        match instruction.to_ascii_uppercase().as_str() {
            // A new stage starts from nothing of the previous one's settings.
            "FROM" => image = Image::default(),
            "ENTRYPOINT" => {
                image.entrypoint = exec_form();
                // Docker resets an inherited CMD when ENTRYPOINT is set.
                image.cmd = None;
            }
            "CMD" => image.cmd = Some(exec_form()),
            "ENV" => image.env.extend(parse_env(rest)),
            _ => {}
        }
    }
    image
}

/// `ENV K=V K2="V 2"` or the legacy `ENV K V`.
fn parse_env(rest: &str) -> Vec<(String, String)> {
    let Some((first, _)) = rest.split_once(['=', ' ']) else {
        panic!("ENV without a value: {rest}");
    };
    if !rest[first.len()..].starts_with('=') {
        return vec![(first.to_string(), rest[first.len()..].trim().to_string())];
    }
    let mut pairs = Vec::new();
    let mut rest = rest;
    while let Some((key, tail)) = rest.trim_start().split_once('=') {
        let (value, next) = match tail.strip_prefix('"') {
            Some(quoted) => quoted
                .split_once('"')
                .unwrap_or_else(|| panic!("unterminated quote in ENV {rest}")),
            None => tail.split_once(' ').unwrap_or((tail, "")),
        };
        pairs.push((key.to_string(), value.to_string()));
        rest = next;
    }
    pairs
}

fn strings(v: &Value) -> Option<Vec<String>> {
    v.as_array().map(|a| {
        a.iter()
            .map(|s| {
                s.as_str()
                    .unwrap_or_else(|| panic!("not a string: {s}"))
                    .to_string()
            })
            .collect()
    })
}

/// The process a container runs, as the kubelet builds it: the container's `command`, else the image's
/// ENTRYPOINT; then its `args`, else the image's CMD — unless `command` is set, which drops the CMD.
fn command_line(image: &Image, container: &Value) -> Vec<String> {
    let (command, args) = match (strings(&container["command"]), strings(&container["args"])) {
        (Some(command), Some(args)) => (command, args),
        (Some(command), None) => (command, Vec::new()),
        (None, Some(args)) => (image.entrypoint.clone(), args),
        (None, None) => (
            image.entrypoint.clone(),
            image.cmd.clone().unwrap_or_default(),
        ),
    };
    let argv: Vec<String> = command.into_iter().chain(args).collect();
    // The kubelet would expand $(VAR) from the container's env; this test does not, so none may be used.
    assert!(
        !argv.iter().any(|a| a.contains("$(")),
        "$(VAR) references are not emulated: {argv:?}"
    );
    argv
}

/// The container's environment: the image's ENV, overridden by the container's `env`.
fn environment(image: &Image, container: &Value) -> Vec<(String, String)> {
    let mut env = image.env.clone();
    for e in container["env"].as_array().into_iter().flatten() {
        let name = e["name"].as_str().expect("env name").to_string();
        let value = match (
            e["value"].as_str(),
            e["valueFrom"]["fieldRef"]["fieldPath"].as_str(),
        ) {
            (Some(v), _) => v.to_string(),
            // The downward API, as the kubelet fills it for a pod of this test.
            (None, Some("metadata.name")) => "klutch-health-0".into(),
            (None, Some("metadata.namespace")) => "crossplane-system".into(),
            (None, Some("metadata.uid")) => "6c1f0e5a-0000-4000-8000-000000000001".into(),
            _ => panic!(
                "only literal env values and the pod's name, namespace and uid are emulated: {e}"
            ),
        };
        env.retain(|(k, _)| *k != name);
        env.push((name, value));
    }
    env
}

/// Each rendered container whose image is klutch-health, with its pod spec.
fn klutch_health_containers(objects: &[Value]) -> Vec<(&Value, &Value)> {
    objects
        .iter()
        .filter_map(|o| match o["kind"].as_str() {
            Some("Deployment") => Some(&o["spec"]["template"]["spec"]),
            Some("DeploymentRuntimeConfig") => {
                Some(&o["spec"]["deploymentTemplate"]["spec"]["template"]["spec"])
            }
            _ => None,
        })
        .flat_map(|pod| {
            pod["containers"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|c| {
                    c["image"]
                        .as_str()
                        .is_some_and(|i| i.starts_with("ghcr.io/klutch-health/klutch-health:"))
                })
                .map(move |c| (pod, c))
        })
        .collect()
}

/// Writes each ConfigMap volume the container mounts into `root`, and returns (mountPath, directory).
fn mount_config_maps(
    objects: &[Value],
    pod: &Value,
    container: &Value,
    root: &Path,
) -> Vec<(String, PathBuf)> {
    let mut mounts = Vec::new();
    for (i, m) in container["volumeMounts"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let volume = pod["volumes"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|v| v["name"] == m["name"])
            .unwrap_or_else(|| panic!("no volume for mount {m}"));
        let name = volume["configMap"]["name"]
            .as_str()
            .unwrap_or_else(|| panic!("only ConfigMap volumes are emulated: {volume}"));
        assert!(
            volume["configMap"]["items"].is_null(),
            "items are not emulated: {volume}"
        );
        assert!(m["subPath"].is_null(), "subPath is not emulated: {m}");
        let cm = objects
            .iter()
            .find(|o| o["kind"] == "ConfigMap" && o["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("the mounted ConfigMap {name} is not rendered"));
        let dir = root.join(format!("mount-{i}"));
        std::fs::create_dir_all(&dir).expect("mount dir");
        for (file, content) in cm["data"].as_object().into_iter().flatten() {
            std::fs::write(
                dir.join(file),
                content.as_str().expect("ConfigMap data is text"),
            )
            .expect("write");
        }
        mounts.push((m["mountPath"].as_str().expect("mountPath").to_string(), dir));
    }
    mounts
}

/// `value` with a mounted path replaced by the directory that stands in for it.
fn remap(value: &str, mounts: &[(String, PathBuf)]) -> String {
    for (mount, dir) in mounts {
        if let Some(rest) = value.strip_prefix(mount.as_str()) {
            if rest.is_empty() || rest.starts_with('/') {
                return format!("{}{rest}", dir.display());
            }
        }
    }
    value.to_string()
}

/// The container's port number that `port` (a number or a port name) refers to.
fn container_port(container: &Value, port: &Value) -> u64 {
    port.as_u64().unwrap_or_else(|| {
        container["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["name"] == *port)
            .and_then(|p| p["containerPort"].as_u64())
            .unwrap_or_else(|| panic!("no container port named {port}: {container}"))
    })
}

/// A running container process. Killed on drop, so a failing assertion never leaves it behind.
struct Running {
    child: Child,
    log: PathBuf,
}

impl Running {
    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Panics with the logs when the process has exited.
    fn assert_alive(&mut self, what: &str) {
        if let Some(status) = self.child.try_wait().expect("try_wait") {
            panic!("{what}: klutch-health exited ({status}):\n{}", self.logs());
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn get(addr: SocketAddr, path: &str) -> Option<Resp> {
    tokio::time::timeout(REQUEST_TIMEOUT, common::request(addr, "GET", path, &[]))
        .await
        .ok()
}

/// Renders `variant`, and runs each klutch-health container of it as the kubelet would.
async fn run_variant(variant: &str) {
    let objects = render(variant);
    let image = parse_dockerfile(
        &std::fs::read_to_string(format!("{ROOT}/Dockerfile")).expect("Dockerfile"),
    );
    let containers = klutch_health_containers(&objects);
    assert!(
        !containers.is_empty(),
        "{variant} renders no klutch-health container"
    );
    for (pod, container) in containers {
        let cp = SimControlPlane::start()
            .await
            .expect("simulated control plane");
        // The whole Klutch estate: every package kind and heartbeating konnectors.
        cp.seed_estate(Duration::from_secs(2));
        let dir = tempfile::tempdir().expect("temp dir");
        let mounts = mount_config_maps(&objects, pod, container, dir.path());
        let argv: Vec<String> = command_line(&image, container)
            .iter()
            .map(|a| remap(a, &mounts))
            .collect();
        let env: Vec<(String, String)> = environment(&image, container)
            .into_iter()
            .map(|(k, v)| (k, remap(&v, &mounts)))
            .collect();
        assert_eq!(
            argv.first().map(String::as_str),
            Some(IMAGE_BINARY),
            "{argv:?}"
        );

        // The configuration the process reads is the mounted one (the image's own copy is not here).
        let config_path = env
            .iter()
            .find(|(k, _)| k == "KLUTCH_HEALTH_CONFIG")
            .map(|(_, v)| v.clone())
            .or_else(|| {
                argv.iter()
                    .position(|a| a == "--config")
                    .map(|i| argv[i + 1].clone())
            })
            .expect(
                "neither KLUTCH_HEALTH_CONFIG nor --config: the image would read ./config.toml",
            );
        let config: toml::Table = std::fs::read_to_string(&config_path)
            .unwrap_or_else(|e| panic!("{config_path} is not in a mounted ConfigMap: {e}"))
            .parse()
            .expect("the shipped config is TOML");
        let server = config
            .get("server")
            .and_then(toml::Value::as_table)
            .cloned()
            .unwrap_or_default();

        // The kubelet's probes reach the port the shipped config listens on.
        let listen = server
            .get("listen")
            .and_then(toml::Value::as_str)
            .expect("server.listen");
        let listen_port: u64 = listen
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse().ok())
            .expect("port");
        for probe in ["livenessProbe", "readinessProbe"] {
            assert_eq!(
                container_port(container, &container[probe]["httpGet"]["port"]),
                listen_port,
                "{probe} of {variant} vs server.listen = {listen}"
            );
        }

        // What must differ here: every listener on a free loopback port, the API server the simulator's.
        let listeners: Vec<String> = std::iter::once("listen".to_string())
            .chain(
                server
                    .keys()
                    .filter(|k| k.ends_with("listen") && *k != "listen")
                    .cloned(),
            )
            .collect();
        let log = dir.path().join("stderr.log");
        let mut cmd = Command::new(BIN);
        cmd.args(&argv[1..])
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env("KUBECONFIG", kubeconfig(&cp.api, dir.path()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"));
        for key in &listeners {
            cmd.env(
                format!("KLUTCH_HEALTH_SERVER__{}", key.to_ascii_uppercase()),
                "127.0.0.1:0",
            );
        }
        let mut running = Running {
            child: cmd.spawn().expect("start klutch-health"),
            log,
        };

        let what = format!("{variant}: {argv:?} with {env:?}");
        let addresses: Vec<SocketAddr> = eventually(&format!("{what} to listen"), async || {
            running.assert_alive(&what);
            let addrs: Vec<SocketAddr> = running
                .logs()
                .lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .filter(|v| v["message"] == "listening")
                .filter_map(|v| v["address"].as_str()?.parse().ok())
                .collect();
            (addrs.len() == listeners.len()).then_some(addrs)
        })
        .await;
        for addr in &addresses {
            eventually(&format!("{what}: /livez on {addr}"), async || {
                get(*addr, "/livez").await.filter(|r| r.status == 200)
            })
            .await;
        }
        // It reads the control plane through the kubeconfig: every Kubernetes check of the shipped config
        // passes (the backend's URL is a cluster DNS name or the provider's localhost port, absent here).
        for check in config
            .get("check")
            .and_then(toml::Value::as_array)
            .into_iter()
            .flatten()
        {
            let name = check["name"].as_str().expect("check name");
            if check.get("type").and_then(toml::Value::as_str) == Some("backend-status") {
                continue;
            }
            let path = format!("/readyz/{name}?verbose");
            // Every item ok, not merely not failing: warn_only (konnectors) would hide a failure.
            eventually(&format!("{what}: {path} to pass"), async || {
                get(addresses[0], &path).await.filter(|r| {
                    r.status == 200
                        && r.body.contains("[+]")
                        && r.body
                            .lines()
                            .filter(|l| l.starts_with('['))
                            .all(|l| l.ends_with(" ok"))
                })
            })
            .await;
        }
        // And it keeps running: still alive and answering over several polls.
        for _ in 0..5 {
            running.assert_alive(&what);
            let r = get(addresses[0], "/livez").await;
            assert_eq!(
                r.map(|r| r.status),
                Some(200),
                "{what}:\n{}",
                running.logs()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        running.assert_alive(&what);
    }
}

#[tokio::test]
async fn the_standalone_deployment_runs_as_kubernetes_starts_it() {
    run_variant("deploy").await;
}

#[tokio::test]
async fn the_sidecar_runs_as_kubernetes_starts_it() {
    run_variant("deploy/sidecar").await;
}

#[test]
fn the_command_line_is_built_as_the_kubelet_builds_it() {
    let image = Image {
        entrypoint: vec!["/entry".into(), "e".into()],
        cmd: Some(vec!["c".into()]),
        env: Vec::new(),
    };
    let run = |c: Value| command_line(&image, &c);
    assert_eq!(run(serde_json::json!({})), ["/entry", "e", "c"]);
    assert_eq!(
        run(serde_json::json!({"args": ["a"]})),
        ["/entry", "e", "a"]
    );
    assert_eq!(run(serde_json::json!({"command": ["/x"]})), ["/x"]);
    assert_eq!(
        run(serde_json::json!({"command": ["/x"], "args": ["a"]})),
        ["/x", "a"]
    );
}

#[test]
fn the_final_stage_of_a_dockerfile_is_read() {
    let image = parse_dockerfile(
        "FROM a AS build\nENV RUSTFLAGS=\"-C x\"\nENTRYPOINT [\"/build\"]\n# ENV IGNORED=1\n\
         FROM b\nENV A=1 B=\"two words\" \\\n  C=3\nENV LEGACY some value\nCMD [\"--flag\"]\n\
         ENTRYPOINT [\"/bin\", \"x\"]\nCMD [\"--later\"]\n",
    );
    assert_eq!(
        image,
        Image {
            entrypoint: vec!["/bin".into(), "x".into()],
            cmd: Some(vec!["--later".into()]),
            env: [
                ("A", "1"),
                ("B", "two words"),
                ("C", "3"),
                ("LEGACY", "some value")
            ]
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .to_vec(),
        }
    );
    // The shipped image names the binary alone and bakes the config path in.
    let shipped = parse_dockerfile(
        &std::fs::read_to_string(format!("{ROOT}/Dockerfile")).expect("Dockerfile"),
    );
    assert_eq!(shipped.entrypoint, [IMAGE_BINARY]);
}

/// `--config` given twice (an image default plus a manifest's) takes the last one, as most CLIs do.
#[test]
fn a_repeated_config_flag_takes_the_last_value() {
    let dir = tempfile::tempdir().expect("temp dir");
    let good = format!("{ROOT}/config.toml");
    let missing = dir.path().join("missing.toml").display().to_string();
    let check = |first: &str, last: &str| {
        Command::new(BIN)
            .args(["--config", first, "--config", last, "--check-config"])
            .env_remove("KLUTCH_HEALTH_CONFIG")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("run klutch-health")
            .code()
    };
    assert_eq!(check(&missing, &good), Some(0));
    assert_eq!(check(&good, &missing), Some(2));
}
