//! A child process that is killed when dropped, its output in a log file a failing test can show.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::Context;

/// A running child; killed (SIGKILL) and reaped on drop.
pub struct Process {
    child: Child,
    what: &'static str,
    log: PathBuf,
}

impl Process {
    /// Starts `cmd` with stdout and stderr appended to `log`.
    pub fn spawn(what: &'static str, mut cmd: Command, log: &Path) -> anyhow::Result<Process> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("cannot open {}", log.display()))?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .with_context(|| format!("cannot start {what} ({:?})", cmd.get_program()))?;
        Ok(Process {
            child,
            what,
            log: log.to_path_buf(),
        })
    }

    /// Its process id, for reading its CPU and memory from `/proc`.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `Some(why)` once it has exited.
    pub fn exited(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(Some(status)) => Some(format!(
                "{} exited ({status}); the end of {}:\n{}",
                self.what,
                self.log.display(),
                tail(&self.log, 30)
            )),
            Ok(None) => None,
            Err(e) => Some(format!("{}: cannot tell whether it runs: {e}", self.what)),
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The last `lines` lines of a log file.
pub fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
