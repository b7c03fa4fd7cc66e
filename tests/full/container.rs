//! The containers as Kubernetes runs them: for every rendered container that runs klutch-health, the
//! command line is built from the pod spec and the Dockerfile exactly as the kubelet builds it, the shipped
//! ConfigMap is "mounted" where the pod mounts it, and the real binary must start, serve /livez and keep
//! running against the simulated control plane. Nothing else runs that combination (an image and
//! manifests that both pass `--config` would make every pod crash-loop).

use crate::common;
use crate::kubelet;
use crate::kustomize;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{eventually, kubeconfig, BIN};
use klutch_sim::SimControlPlane;
use kubelet::{
    command_line, config_map_mounts, container_port, environment, get, klutch_health_containers,
    kubelet_variables, parse_dockerfile, Image, Running, IMAGE_BINARY,
};
use kustomize::{render, ROOT};
use serde_json::Value;

/// Writes each ConfigMap volume the container mounts into `root`, and returns (mountPath, directory).
fn mount_config_maps(
    objects: &[Value],
    pod: &Value,
    container: &Value,
    root: &Path,
) -> Vec<(String, PathBuf)> {
    let mut mounts = Vec::new();
    for (i, mount) in config_map_mounts(objects, pod, container)
        .into_iter()
        .enumerate()
    {
        let dir = root.join(format!("mount-{i}"));
        std::fs::create_dir_all(&dir).expect("mount dir");
        for (file, content) in &mount.files {
            std::fs::write(dir.join(file), content).expect("write");
        }
        mounts.push((mount.mount_path, dir));
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
    for (namespace, pod, container) in containers {
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
            .envs(kubelet_variables(&objects, pod, &namespace, cp.api.addr()))
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
            let addrs = running.listening();
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
