//! Real headless Chromium, for what a browser makes of the status page.

use std::process::{Command, Output};

fn chromium() -> &'static str {
    [
        "/usr/bin/chromium",
        "/usr/bin/chromium-browser",
        "/usr/bin/google-chrome",
    ]
    .into_iter()
    .find(|p| std::path::Path::new(p).exists())
    .expect("chromium is not installed: .ci/run installs it (Debian package chromium)")
}

/// Runs Chromium on `url` with a fresh profile, as root-safe as CI needs, and `args` saying what to do.
fn run(url: &str, args: &[&str]) -> Output {
    let profile = tempfile::tempdir().expect("profile dir");
    let out = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .arg(url)
        .output()
        .expect("run chromium");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The page's DOM after Chromium has parsed it.
pub fn dump_dom(url: &str) -> String {
    String::from_utf8_lossy(&run(url, &["--dump-dom"]).stdout).to_string()
}

/// A PNG of the page as rendered `width` × `height`, in dark mode when `dark`, written to `path`.
pub fn screenshot(url: &str, path: &std::path::Path, dark: bool, (width, height): (u32, u32)) {
    let mut args = vec![
        format!("--screenshot={}", path.display()),
        format!("--window-size={width},{height}"),
        "--hide-scrollbars".to_string(),
    ];
    if dark {
        args.push("--force-dark-mode".into());
        args.push("--blink-settings=preferredColorScheme=0".into());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    run(url, &args);
    assert!(path.is_file(), "no screenshot at {}", path.display());
}
