//! Running the consumers' real programs: found on the machine or the test fails naming the Debian package,
//! killed when the test ends, their output kept in the test's temp dir for failure messages.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::Resp;

/// How long a consumer may take to start, or to notice a fault: a guard against hangs, not a performance bound.
pub const HANG_GUARD: Duration = Duration::from_secs(60);

/// The path of `name`, searched in `$PATH` and the sbin directories (not on a non-root `$PATH`).
pub fn binary(name: &str, package: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("`{name}` is not installed: `apt-get install {package}` (.ci/run does it)")
        })
}

/// A loopback port nobody listens on now, for programs that cannot report the port they bound.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// A running consumer program. Killed on drop.
pub struct Program {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Program {
    /// Starts `binary` with `args`, its stdout and stderr going to `NAME.log` in `dir`.
    pub fn start(binary: &Path, args: &[String], dir: &Path) -> Program {
        let name = binary
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let log = dir.join(format!("{name}.log"));
        let out = std::fs::File::create(&log).expect("program log");
        let err = out.try_clone().expect("program log");
        let child = Command::new(binary)
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        Program { name, child, log }
    }

    /// What the program has written so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Panics with the program's output if it has exited: a consumer that died cannot notice anything.
    pub fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("{} exited ({status}):\n{}", self.name, self.output());
        }
    }

    /// Waits until `check` holds while the program keeps running; fails with its output after [`HANG_GUARD`].
    pub async fn wait_until<T>(
        &mut self,
        what: &str,
        mut check: impl AsyncFnMut() -> Option<T>,
    ) -> T {
        let start = Instant::now();
        loop {
            self.assert_running();
            if let Some(v) = check().await {
                return v;
            }
            assert!(
                start.elapsed() < HANG_GUARD,
                "timed out waiting for {what}; {} said:\n{}",
                self.name,
                self.output()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Program {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.0 GET (so that no server answers chunked), or why it failed: refused, reset, timed out.
pub async fn get(addr: SocketAddr, path: &str) -> Result<Resp, String> {
    crate::common::exchange(
        addr,
        &format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n"),
    )
    .await
}

/// `s` as one query-string value.
pub fn encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}
