//! The HTML status page, rendered by real headless Chromium, reads as a person would want.

mod common;

use std::process::Command;

use common::{backend_config, Service};
use klutch_sim::FakeBackend;

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

/// The page's DOM after Chromium has parsed and laid it out.
fn dump_dom(url: &str) -> String {
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
        .arg("--dump-dom")
        .arg(url)
        .output()
        .expect("run chromium");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn chromium_renders_verdicts_items_and_escaped_messages() {
    let backend = FakeBackend::start().await.expect("fake backend");
    backend.set_entry("postgresql-service-broker", "ok");
    backend.set_entry(
        "postgresql-backup-manager",
        "<script>document.title='owned'</script>",
    );
    let svc = Service::start(&backend_config(&backend.url(), ""), &[]).await;
    svc.wait_for("/readyz", "the first poll", |r| r.status == 503)
        .await;
    let url = format!("http://{}/", svc.addr);
    let dom = tokio::task::block_in_place(|| dump_dom(&url));
    assert!(dom.contains("/readyz failing"), "{dom}");
    assert!(dom.contains("/healthz failing"), "{dom}");
    assert!(
        dom.contains("<h2>backend-status <small>backend-status</small></h2>"),
        "{dom}"
    );
    assert!(dom.contains(">postgresql-service-broker<"), "{dom}");
    assert!(dom.contains(">postgresql-backup-manager<"), "{dom}");
    assert!(
        dom.contains("provider-anynines' health server last polled"),
        "{dom}"
    );
    // The message is text on the page, not a script that ran.
    assert!(
        dom.contains("&lt;script&gt;document.title='owned'&lt;/script&gt;"),
        "{dom}"
    );
    assert!(!dom.contains("<title>owned</title>"), "{dom}");
    assert!(
        dom.contains("http-equiv=\"refresh\""),
        "refreshes itself without JavaScript"
    );
    assert!(dom.contains("name=\"viewport\""), "readable on a phone");
}
