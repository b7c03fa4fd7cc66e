//! The image, as far as it can be run without a container engine: the release binary, built as
//! the Dockerfile's build stage builds it, runs in a root directory that holds only what
//! distroless/static-debian12:nonroot and the kubelet give the standalone Deployment's container, as the
//! pod's uid/gid (65532) without capabilities, on a read-only root, with exactly the kubelet's command line
//! and environment; it serves /livez and /readyz while reading the simulated API over TLS through in-cluster
//! config (`KUBERNETES_SERVICE_HOST`/`_PORT` and the service-account files), and polls the backend by the
//! shipped URL's host name through the pod's /etc/hosts.
//!
//! The build: this test runs `cargo build --release --locked --bin klutch-health --target HOST` with the
//! build stage's `RUSTFLAGS` (`+crt-static`) read from the Dockerfile, in the workspace's own target dir:
//! the real release profile (fat LTO, about 3-4 minutes from cold on 2 cores), a no-op when up to date, so
//! one build per `cargo test` run. The root: a private mount namespace (`unshare --mount`) in which the
//! root directory is bound read-only and /dev's device nodes are bound as a container runtime binds them;
//! then `unshare --root --wd --setgid --setuid` starts the binary. There is no /proc or /sys in the root
//! (stricter than a runtime). Needs root, as CI has: fails, never skips, without it.

use crate::common;
use crate::kubelet;
use crate::kustomize;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::eventually;
use klutch_sim::{FakeApi, FakeBackend, SimControlPlane};
use kubelet::{
    command_line, config_map_mounts, dockerfile_stages, environment, get, klutch_health_containers,
    kubelet_variables, Running, IMAGE_BINARY, POD_NAME,
};
use kustomize::{render, ROOT};
use serde_json::Value;

/// What distroless/static-debian12:nonroot itself sets: its ENV and WORKDIR.
const BASE_ENV: [(&str, &str); 2] = [
    (
        "PATH",
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    ),
    ("SSL_CERT_FILE", "/etc/ssl/certs/ca-certificates.crt"),
];
const BASE_WORKDIR: &str = "/home/nonroot";
/// distroless' /etc/passwd and /etc/group.
const PASSWD: &str = "root:x:0:0:root:/root:/sbin/nologin\n\
    nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n\
    nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n";
const GROUP: &str = "root:x:0:\nnobody:x:65534:\ntty:x:5:\nstaff:x:50:\nnonroot:x:65532:\n";
const NSSWITCH: &str = "hosts:          files dns\nnetworks:       files\n";
/// The device nodes every OCI runtime gives a container.
const DEVICES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];
/// Where the fake provider health server listens: the shipped URL names a cluster Service, which the pod's
/// /etc/hosts maps here (as `hostAliases` would), so the name goes through the static binary's resolver.
/// Its own loopback address, as the URL's port is fixed.
const BACKEND_IP: &str = "127.0.8.1";
const POD_IP: &str = "10.244.0.7";

/// In the new mount namespace: the root read-only, the devices bound, then the binary as the pod's user
/// (without what a shell adds to the environment, which must be the kubelet's alone). Arguments: root, workdir,
/// uid, gid, then the command line.
fn enter_script() -> String {
    format!(
        r#"set -e
root=$1 wd=$2 uid=$3 gid=$4; shift 4
mount --bind -o ro "$root" "$root"
for d in {}; do mount --bind "/dev/$d" "$root/dev/$d"; done
exec env -u PWD -u OLDPWD -u SHLVL -u _ \
  unshare --root="$root" --wd="$wd" --setgid="$gid" --setuid="$uid" -- "$@""#,
        DEVICES.join(" ")
    )
}

fn effective_uid() -> u32 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1)?.parse().ok())
        .expect("Uid: line")
}

/// The release binary as the Dockerfile builds it, built here (a no-op when up to date).
fn release_binary() -> PathBuf {
    let dockerfile = std::fs::read_to_string(format!("{ROOT}/Dockerfile")).expect("Dockerfile");
    let build_env = &dockerfile_stages(&dockerfile)[0].env;
    let rustflags = build_env
        .iter()
        .find(|(k, _)| k == "RUSTFLAGS")
        .map(|(_, v)| v.clone())
        .expect("the Dockerfile's build stage sets RUSTFLAGS");
    assert!(
        rustflags.contains("+crt-static"),
        "the Dockerfile's RUSTFLAGS lack +crt-static (distroless/static has no libc): {rustflags}"
    );
    let args = [
        "build",
        "--release",
        "--locked",
        "--bin",
        "klutch-health",
        "--target",
    ];
    assert!(
        dockerfile.contains(&format!("cargo {}", args.join(" "))),
        "the Dockerfile no longer builds with `cargo {}`: build here as it does",
        args.join(" ")
    );
    let rustc = Command::new("rustc")
        .arg("-vV")
        .output()
        .expect("rustc -vV");
    let host = String::from_utf8_lossy(&rustc.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_string))
        .expect("rustc's host triple");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(ROOT)
        .args(args)
        .args([&host, "--message-format=json-render-diagnostics"])
        .env("RUSTFLAGS", &rustflags)
        .stderr(Stdio::inherit())
        .output()
        .expect("cargo build");
    assert!(out.status.success(), "the release build failed");
    let binary = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "klutch-health")
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .expect("cargo names the klutch-health executable");
    assert!(
        !needs_interpreter(&binary),
        "{} needs a dynamic loader: it would not start on distroless/static",
        binary.display()
    );
    binary
}

/// Whether `binary` names a program interpreter (ld.so) in a PT_INTERP program header, as a dynamically
/// linked binary does; distroless/static has none.
fn needs_interpreter(binary: &Path) -> bool {
    let elf = std::fs::read(binary).expect("read the binary");
    assert_eq!(&elf[..5], b"\x7fELF\x02", "not a 64-bit ELF file");
    let u16_at = |o: usize| u16::from_le_bytes([elf[o], elf[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(elf[0x20..0x28].try_into().expect("8 bytes")) as usize;
    let (phentsize, phnum) = (u16_at(0x36), u16_at(0x38));
    const PT_INTERP: u32 = 3;
    (0..phnum).any(|i| {
        let at = phoff + i * phentsize;
        u32::from_le_bytes(elf[at..at + 4].try_into().expect("4 bytes")) == PT_INTERP
    })
}

fn write(path: &Path, content: impl AsRef<[u8]>, mode: u32) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, content).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

fn mkdir(path: &Path, mode: u32, owner: Option<u32>) {
    std::fs::create_dir_all(path).expect("mkdir");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    std::os::unix::fs::chown(path, owner, owner).expect("chown");
}

/// A volume as the kubelet's atomic writer lays it out: the files in a timestamped directory, `..data`
/// pointing at it, and each name a link through `..data`.
fn kubelet_volume(dir: &Path, files: &[(String, String)]) {
    let stamp = "..2026_01_01_00_00_00.000000001";
    for (name, content) in files {
        write(&dir.join(stamp).join(name), content, 0o644);
        symlink(format!("..data/{name}"), dir.join(name)).expect("symlink");
    }
    symlink(stamp, dir.join("..data")).expect("symlink ..data");
}

/// The fields of a `/proc/PID/status` line.
fn status_field(pid: u32, field: &str) -> Vec<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

#[tokio::test]
async fn the_release_binary_runs_in_a_distroless_root_as_the_kubelet_starts_it() {
    assert_eq!(
        effective_uid(),
        0,
        "this test builds a root directory and enters it as uid 65532 with unshare and mount: run it as \
         root (CI does)"
    );
    let binary = release_binary();

    let objects = render("deploy");
    let dockerfile = std::fs::read_to_string(format!("{ROOT}/Dockerfile")).expect("Dockerfile");
    let image = dockerfile_stages(&dockerfile).pop().expect("a final stage");
    let (namespace, pod, container) = klutch_health_containers(&objects)
        .into_iter()
        .next()
        .expect("deploy renders the klutch-health container");
    let namespace = namespace.as_str();
    let security = |key: &str| {
        container["securityContext"][key]
            .as_u64()
            .or(pod["securityContext"][key].as_u64())
    };
    let (uid, gid) = (
        security("runAsUser").expect("runAsUser"),
        security("runAsGroup").expect("runAsGroup"),
    );
    assert_eq!(
        container["securityContext"]["readOnlyRootFilesystem"], true,
        "the root is mounted read-only as the manifest asks"
    );

    // The simulated control plane: the API over TLS (its CA and a token land in `tls`), the provider's
    // health server where the pod's /etc/hosts sends the shipped URL's host.
    let outside = tempfile::tempdir().expect("temp dir");
    let tls = outside.path().join("tls");
    let api = FakeApi::start_tls(&tls).await.expect("fake API over TLS");
    let files = api.tls_files().expect("TLS files");

    let root = outside.path().join("root");
    mkdir(&root, 0o755, None);
    let argv = command_line(&image, container);
    assert_eq!(argv[0], IMAGE_BINARY, "{argv:?}");
    let installed = root.join(IMAGE_BINARY.trim_start_matches('/'));
    std::fs::create_dir_all(installed.parent().expect("bin dir")).expect("mkdir");
    std::fs::copy(&binary, &installed).expect("install the binary");

    let mut config_text = None;
    for mount in config_map_mounts(&objects, pod, container) {
        kubelet_volume(
            &root.join(mount.mount_path.trim_start_matches('/')),
            &mount.files,
        );
        if let Some((_, text)) = mount.files.iter().find(|(f, _)| f == "config.toml") {
            config_text = Some(text.clone());
        }
    }
    let config: toml::Table = config_text
        .expect("the config.toml ConfigMap is mounted")
        .parse()
        .expect("TOML");
    let backend_url: url::Url = config["check"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"].as_str() == Some("backend-status"))
        .and_then(|c| c["url"].as_str()?.parse().ok())
        .expect("the shipped config polls the backend");
    let backend_host = backend_url.host_str().expect("host").to_string();
    let backend_port = backend_url.port_or_known_default().expect("port");
    let backend_addr: SocketAddr = format!("{BACKEND_IP}:{backend_port}")
        .parse()
        .expect("address");
    let backend = FakeBackend::start_on(backend_addr).await.unwrap_or_else(|e| {
        panic!("{backend_addr} (the shipped URL's port on a loopback address of this test's own) is taken: {e}")
    });
    let cp = SimControlPlane::with(api.clone(), backend);

    let sa = root.join("var/run/secrets/kubernetes.io/serviceaccount");
    let read = |p: &Path| std::fs::read_to_string(p).expect("TLS file");
    kubelet_volume(
        &sa,
        &[
            ("ca.crt".into(), read(&files.ca)),
            ("namespace".into(), namespace.to_string()),
            ("token".into(), read(&files.token)),
        ],
    );
    let etc = root.join("etc");
    write(&etc.join("passwd"), PASSWD, 0o644);
    write(&etc.join("group"), GROUP, 0o644);
    write(&etc.join("nsswitch.conf"), NSSWITCH, 0o644);
    let bundle = std::fs::read("/etc/ssl/certs/ca-certificates.crt").expect(
        "/etc/ssl/certs/ca-certificates.crt (Debian's ca-certificates) for the image's CA bundle",
    );
    write(&etc.join("ssl/certs/ca-certificates.crt"), bundle, 0o644);
    write(&etc.join("hostname"), format!("{POD_NAME}\n"), 0o644);
    write(
        &etc.join("hosts"),
        format!(
            "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n\
             {POD_IP}\t{POD_NAME}\n\n# Entries added by HostAliases.\n{BACKEND_IP}\t{backend_host}\n"
        ),
        0o644,
    );
    // Cluster DNS is out of reach: a loopback nameserver where nothing answers.
    write(
        &etc.join("resolv.conf"),
        format!("search {namespace}.svc.cluster.local svc.cluster.local cluster.local\nnameserver 127.0.0.53\noptions ndots:5\n"),
        0o644,
    );
    mkdir(&root.join("tmp"), 0o1777, None);
    mkdir(&root.join("home"), 0o755, None);
    mkdir(
        &root.join(BASE_WORKDIR.trim_start_matches('/')),
        0o700,
        Some(65532),
    );
    for device in DEVICES {
        write(&root.join("dev").join(device), "", 0o644);
    }

    // The environment exactly as the kubelet makes it; only the listeners move to free loopback ports.
    let mut env: BTreeMap<String, String> = BASE_ENV
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    env.extend(kubelet_variables(&objects, pod, namespace, api.addr()));
    env.extend(environment(&image, container));
    let server = config
        .get("server")
        .and_then(toml::Value::as_table)
        .cloned()
        .unwrap_or_default();
    let listeners: Vec<String> = server
        .keys()
        .filter(|k| k.ends_with("listen"))
        .cloned()
        .collect();
    for key in &listeners {
        env.insert(
            format!("KLUTCH_HEALTH_SERVER__{}", key.to_ascii_uppercase()),
            "127.0.0.1:0".into(),
        );
    }
    assert!(!env.contains_key("KUBECONFIG"), "in-cluster config only");

    let log = outside.path().join("stderr.log");
    let mut cmd = Command::new("unshare");
    cmd.args(["--mount", "--propagation=private", "--", "sh", "-c"])
        .arg(enter_script())
        .arg("sh")
        .arg(&root)
        .args([BASE_WORKDIR.to_string(), uid.to_string(), gid.to_string()])
        .args(&argv)
        .env_clear()
        .envs(&env)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"));
    let mut running = Running {
        child: cmd.spawn().expect("start unshare"),
        log,
    };
    let pid = running.child.id();

    let what = format!("{argv:?} in {}", root.display());
    let addresses = eventually(&format!("{what} to listen"), async || {
        running.assert_alive(&what);
        let addrs = running.listening();
        (addrs.len() == listeners.len()).then_some(addrs)
    })
    .await;

    // It is the pod's user without privileges, in the root, on a read-only mount, with the kubelet's env.
    let ids = |field| status_field(pid, field);
    assert_eq!(ids("Uid"), vec![uid.to_string(); 4], "uids of {what}");
    assert_eq!(ids("Gid"), vec![gid.to_string(); 4], "gids of {what}");
    assert!(
        ids("Groups").iter().all(|g| *g == gid.to_string()),
        "groups {:?}",
        ids("Groups")
    );
    assert_eq!(
        ids("CapEff"),
        ["0000000000000000"],
        "capabilities of {what}"
    );
    let link = |l: &str| std::fs::read_link(format!("/proc/{pid}/{l}")).expect("readlink");
    assert_eq!(link("root"), root);
    assert_eq!(link("cwd"), root.join(BASE_WORKDIR.trim_start_matches('/')));
    let mountinfo = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).expect("mountinfo");
    let root_mount = mountinfo
        .lines()
        .map(|l| l.split(' ').collect::<Vec<_>>())
        .find(|f| f[4] == "/")
        .unwrap_or_else(|| panic!("no / in its mounts:\n{mountinfo}"));
    assert!(
        root_mount[5].split(',').any(|o| o == "ro"),
        "its root is not read-only: {root_mount:?}"
    );
    let environ = std::fs::read(format!("/proc/{pid}/environ")).expect("environ");
    let seen: BTreeMap<String, String> = environ
        .split(|b| *b == 0)
        .filter(|v| !v.is_empty())
        .filter_map(|v| {
            let (k, v) = std::str::from_utf8(v).ok()?.split_once('=')?;
            Some((k.to_string(), v.to_string()))
        })
        .collect();
    assert_eq!(seen, env, "the environment of {what}");

    for addr in &addresses {
        eventually(&format!("{what}: /livez on {addr}"), async || {
            get(*addr, "/livez").await.filter(|r| r.status == 200)
        })
        .await;
    }
    // Every check passes: the Kubernetes ones through in-cluster config over TLS, the backend by name.
    for check in config["check"].as_array().into_iter().flatten() {
        let path = format!("/readyz/{}?verbose", check["name"].as_str().expect("name"));
        eventually(&format!("{what}: {path} to pass"), async || {
            get(addresses[0], &path).await.filter(|r| r.status == 200)
        })
        .await;
    }
    let readyz = get(addresses[0], "/readyz?verbose").await;
    assert_eq!(
        readyz.as_ref().map(|r| r.status),
        Some(200),
        "{readyz:?}\n{}",
        running.logs()
    );
    // And it reacts: a degraded ProviderConfig turns /readyz red, so the verdict is live, not a leftover.
    cp.degrade_provider_config("postgresql-backup-manager", "connection refused");
    eventually(&format!("{what}: /readyz to fail"), async || {
        get(addresses[0], "/readyz")
            .await
            .filter(|r| r.status == 503)
    })
    .await;
    running.assert_alive(&what);
    let errors: Vec<String> = running
        .logs()
        .lines()
        .filter(|l| serde_json::from_str::<Value>(l).is_ok_and(|v| v["level"] == "ERROR"))
        .map(str::to_string)
        .collect();
    assert!(errors.is_empty(), "{what} logged errors: {errors:#?}");
}

/// The interpreter check tells the two linkings apart: the tests' own binary is dynamically linked.
#[test]
fn a_dynamically_linked_binary_is_told_apart() {
    assert!(needs_interpreter(Path::new(common::BIN)));
}

/// The service links are named as the kubelet names them (the Kubernetes docs' example, with a named port).
#[test]
fn service_links_are_named_as_the_kubelet_names_them() {
    let ports = [("http".to_string(), 8080, "TCP".to_string())];
    let env: BTreeMap<String, String> = kubelet::service_env("klutch-health", "10.0.0.11", &ports)
        .into_iter()
        .collect();
    let expected: BTreeMap<String, String> = [
        ("KLUTCH_HEALTH_SERVICE_HOST", "10.0.0.11"),
        ("KLUTCH_HEALTH_SERVICE_PORT", "8080"),
        ("KLUTCH_HEALTH_SERVICE_PORT_HTTP", "8080"),
        ("KLUTCH_HEALTH_PORT", "tcp://10.0.0.11:8080"),
        ("KLUTCH_HEALTH_PORT_8080_TCP", "tcp://10.0.0.11:8080"),
        ("KLUTCH_HEALTH_PORT_8080_TCP_PROTO", "tcp"),
        ("KLUTCH_HEALTH_PORT_8080_TCP_PORT", "8080"),
        ("KLUTCH_HEALTH_PORT_8080_TCP_ADDR", "10.0.0.11"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(env, expected);
}
