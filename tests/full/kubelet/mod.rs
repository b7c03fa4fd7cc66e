//! What the kubelet makes of an image and a pod spec: the command line, the environment, the mounted
//! ConfigMaps, and a process that is killed when the test ends. Shared by tests/full/container.rs (the
//! manifests' containers against the debug binary) and tests/full/image.rs (the release binary in an
//! image-like root).
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Child;
use std::time::Duration;

use serde_json::Value;

use crate::common::{self, Resp};

/// Where the Dockerfile installs the binary.
pub const IMAGE_BINARY: &str = "/usr/local/bin/klutch-health";
/// Any one request of this test: an answer later than this is a failure, never a hang.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// What the final stage of a Dockerfile gives a container: ENTRYPOINT, CMD (exec form) and ENV.
#[derive(Debug, Default, PartialEq)]
pub struct Image {
    pub entrypoint: Vec<String>,
    pub cmd: Option<Vec<String>>,
    pub env: Vec<(String, String)>,
}

/// Reads the final stage of a Dockerfile. Shell-form ENTRYPOINT/CMD are refused: they run `/bin/sh -c`,
/// which a distroless image does not have.
pub fn parse_dockerfile(text: &str) -> Image {
    dockerfile_stages(text).pop().unwrap_or_default()
}

/// Each stage of a Dockerfile in order, with what it sets (the build stage's ENV is how it compiles).
pub fn dockerfile_stages(text: &str) -> Vec<Image> {
    let joined = text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n")
        .replace("\\\n", " ");
    let mut stages: Vec<Image> = Vec::new();
    for line in joined.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let (instruction, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        let rest = rest.trim();
        let exec_form = || -> Vec<String> {
            serde_json::from_str(rest).unwrap_or_else(|e| {
                panic!("{instruction} must be an exec-form JSON array ({e}): {rest}")
            })
        };
        let instruction = instruction.to_ascii_uppercase();
        // A new stage starts from nothing of the previous one's settings.
        if instruction == "FROM" {
            stages.push(Image::default());
            continue;
        }
        let Some(image) = stages.last_mut() else {
            panic!("{instruction} before the first FROM");
        };
        match instruction.as_str() {
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
    stages
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
pub fn command_line(image: &Image, container: &Value) -> Vec<String> {
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
pub fn environment(image: &Image, container: &Value) -> Vec<(String, String)> {
    let mut env = image.env.clone();
    for e in container["env"].as_array().into_iter().flatten() {
        let name = e["name"].as_str().expect("env name").to_string();
        let value = match (
            e["value"].as_str(),
            e["valueFrom"]["fieldRef"]["fieldPath"].as_str(),
        ) {
            (Some(v), _) => v.to_string(),
            // The downward API, as the kubelet fills it for a pod of these tests.
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

/// Where Crossplane runs a provider's pods, and with them a DeploymentRuntimeConfig's (cluster-scoped).
pub const CROSSPLANE_NAMESPACE: &str = "crossplane-system";
/// The pod's name, for HOSTNAME and /etc/hosts.
pub const POD_NAME: &str = "klutch-health-7c9d8b6f5-x2k8q";

/// Each rendered container whose image is klutch-health, with its pod's namespace and spec.
pub fn klutch_health_containers(objects: &[Value]) -> Vec<(String, &Value, &Value)> {
    objects
        .iter()
        .filter_map(|o| match o["kind"].as_str() {
            Some("Deployment") => Some((
                o["metadata"]["namespace"].as_str().unwrap_or("default"),
                &o["spec"]["template"]["spec"],
            )),
            Some("DeploymentRuntimeConfig") => Some((
                CROSSPLANE_NAMESPACE,
                &o["spec"]["deploymentTemplate"]["spec"]["template"]["spec"],
            )),
            _ => None,
        })
        .flat_map(|(namespace, pod)| {
            pod["containers"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|c| {
                    c["image"]
                        .as_str()
                        .is_some_and(|i| i.starts_with("ghcr.io/klutch-health/klutch-health:"))
                })
                .map(move |c| (namespace.to_string(), pod, c))
        })
        .collect()
}

/// The service links the kubelet puts into a container's environment for a Service (Docker-link style).
pub fn service_env(name: &str, ip: &str, ports: &[(String, u64, String)]) -> Vec<(String, String)> {
    let var = |s: &str| s.to_ascii_uppercase().replace('-', "_");
    let prefix = var(name);
    let mut env = vec![(format!("{prefix}_SERVICE_HOST"), ip.to_string())];
    for (i, (port_name, port, protocol)) in ports.iter().enumerate() {
        let url = format!("{}://{ip}:{port}", protocol.to_ascii_lowercase());
        if i == 0 {
            env.push((format!("{prefix}_SERVICE_PORT"), port.to_string()));
            env.push((format!("{prefix}_PORT"), url.clone()));
        }
        if !port_name.is_empty() {
            env.push((
                format!("{prefix}_SERVICE_PORT_{}", var(port_name)),
                port.to_string(),
            ));
        }
        let link = format!("{prefix}_PORT_{port}_{protocol}");
        env.push((format!("{link}_PROTO"), protocol.to_ascii_lowercase()));
        env.push((format!("{link}_PORT"), port.to_string()));
        env.push((format!("{link}_ADDR"), ip.to_string()));
        env.push((link, url));
    }
    env
}

/// The variables the kubelet adds of its own: HOSTNAME, the API server's service (always), and every other
/// Service of the pod's namespace unless the pod sets `enableServiceLinks: false`.
pub fn kubelet_variables(
    objects: &[Value],
    pod: &Value,
    namespace: &str,
    api: SocketAddr,
) -> Vec<(String, String)> {
    let https = [(
        "https".to_string(),
        u64::from(api.port()),
        "TCP".to_string(),
    )];
    let mut env = vec![("HOSTNAME".to_string(), POD_NAME.to_string())];
    env.extend(service_env("kubernetes", &api.ip().to_string(), &https));
    if pod["enableServiceLinks"] == false {
        return env;
    }
    let services = objects
        .iter()
        .filter(|o| o["kind"] == "Service" && o["metadata"]["namespace"] == namespace);
    for (i, svc) in services.enumerate() {
        let ports: Vec<_> = svc["spec"]["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| {
                (
                    p["name"].as_str().unwrap_or_default().to_string(),
                    p["port"].as_u64().expect("service port"),
                    p["protocol"].as_str().unwrap_or("TCP").to_string(),
                )
            })
            .collect();
        let name = svc["metadata"]["name"].as_str().expect("service name");
        env.extend(service_env(name, &format!("10.96.0.{}", 10 + i), &ports));
    }
    env
}

/// One ConfigMap volume as a container mounts it: where, and the files it holds.
pub struct ConfigMapMount {
    pub mount_path: String,
    pub files: Vec<(String, String)>,
}

/// The ConfigMap volumes the container mounts, with the rendered ConfigMaps' data.
pub fn config_map_mounts(objects: &[Value], pod: &Value, container: &Value) -> Vec<ConfigMapMount> {
    let mut mounts = Vec::new();
    for m in container["volumeMounts"].as_array().into_iter().flatten() {
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
        let files = cm["data"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(file, content)| {
                let content = content.as_str().expect("ConfigMap data is text");
                (file.clone(), content.to_string())
            })
            .collect();
        mounts.push(ConfigMapMount {
            mount_path: m["mountPath"].as_str().expect("mountPath").to_string(),
            files,
        });
    }
    mounts
}

/// The container's port number that `port` (a number or a port name) refers to.
pub fn container_port(container: &Value, port: &Value) -> u64 {
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
pub struct Running {
    pub child: Child,
    pub log: PathBuf,
}

impl Running {
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The addresses it logged as listening on (JSON logs).
    pub fn listening(&self) -> Vec<SocketAddr> {
        self.logs()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["message"] == "listening")
            .filter_map(|v| v["address"].as_str()?.parse().ok())
            .collect()
    }

    /// Panics with the logs when the process has exited.
    pub fn assert_alive(&mut self, what: &str) {
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

pub async fn get(addr: SocketAddr, path: &str) -> Option<Resp> {
    tokio::time::timeout(REQUEST_TIMEOUT, common::request(addr, "GET", path, &[]))
        .await
        .ok()
}
