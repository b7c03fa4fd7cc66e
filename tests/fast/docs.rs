//! The documentation against the repository. What the code knows — every configuration key with its default,
//! every metric family, the root-cause rules, the layers of `src/` — is generated into the pages between
//! `<!-- generated:NAME -->` and `<!-- /generated:NAME -->`, and these tests fail when a page and the code
//! differ; `KLUTCH_BLESS=1 cargo test --test fast docs::` writes the code's version into the pages instead.
//! Every relative link and anchor of the Markdown files (and every `runbook_url` into the repository)
//! resolves, and every repository path a page names in backticks exists.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::common::{Service, BIN};
use klutch_health::verdict::causes::RULES;
use klutch_sim::SimControlPlane;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
/// Where the repository's files are published; `runbook_url`s point there.
const PUBLISHED: &str = "https://github.com/klutch-health/klutch-health/blob/main/";
/// How wide a generated line of prose may be.
const WIDTH: usize = 110;

/// Compares the generated block `name` of `file` with `text`, or writes `text` into it with `KLUTCH_BLESS=1`.
fn generated(file: &str, name: &str, text: &str) {
    let path = Path::new(ROOT).join(file);
    let doc = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{file}: {e}"));
    let begin = format!("<!-- generated:{name} -->\n");
    let end = format!("<!-- /generated:{name} -->");
    let start = doc
        .find(&begin)
        .unwrap_or_else(|| panic!("{file} has no {begin:?}"))
        + begin.len();
    let stop = start
        + doc[start..]
            .find(&end)
            .unwrap_or_else(|| panic!("{file} has no {end:?}"));
    if std::env::var_os("KLUTCH_BLESS").is_some_and(|v| v == "1") {
        let blessed = format!("{}{text}{}", &doc[..start], &doc[stop..]);
        std::fs::write(&path, blessed).unwrap_or_else(|e| panic!("{file}: {e}"));
        return;
    }
    assert!(
        doc[start..stop] == *text,
        "{file}: the generated block {name:?} differs from the code; regenerate it with \
         `KLUTCH_BLESS=1 cargo test --test fast docs::` and review the diff.\n--- in {file}:\n{}\n--- from the code:\n{text}",
        &doc[start..stop]
    );
}

/// `text` wrapped at [`WIDTH`], continuation lines indented by `indent`.
fn wrap(text: &str, indent: &str) -> String {
    let mut out = String::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && line.len() + 1 + word.len() > WIDTH {
            out.push_str(line.trim_end());
            out.push('\n');
            line = indent.to_string();
        } else if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    out.push_str(&line);
    out.push('\n');
    out
}

/// The rules of `causes::RULES`, numbered as they are tried; the entries of one number are one point.
#[test]
fn the_root_cause_rules_are_the_codes() {
    let mut points: Vec<(u8, String)> = Vec::new();
    for rule in RULES {
        match points.last_mut() {
            Some((number, says)) if *number == rule.number => {
                says.push_str("; ");
                says.push_str(rule.says);
            }
            _ => points.push((rule.number, rule.says.to_string())),
        }
    }
    let list: String = points
        .iter()
        .map(|(number, says)| wrap(&format!("{number}. {says}"), "   "))
        .collect();
    generated("docs/operators/policy.md", "rules", &list);
}

/// The layers of `src/`, lowest first, as `tests/fast/architecture.rs` enforces them.
#[test]
fn the_layers_are_the_codes() {
    let layers = crate::architecture::LAYERS
        .iter()
        .map(|layer| {
            layer
                .iter()
                .map(|module| format!("`{module}`"))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .collect::<Vec<_>>()
        .join(" < ");
    let quoted = |modules: &[&str]| {
        modules
            .iter()
            .map(|m| format!("`{m}`"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let apart: String = crate::architecture::APART
        .iter()
        .map(|(module, never)| {
            wrap(
                &format!(
                    "Apart from that, `{module}` uses none of {}.",
                    quoted(never)
                ),
                "",
            )
        })
        .collect();
    generated(
        "docs/developers/architecture.md",
        "layers",
        &format!("{}\n{apart}", wrap(&layers, "")),
    );
}

/// What `--check-config` prints: every key of every section and check type, at its default where the
/// configuration below does not set it.
const MINIMAL: &str = r#"
[[check]]
name = "backend-status"
type = "backend-status"
url = "http://provider-anynines-health.crossplane-system.svc:8081/backend-health"

[[check]]
name = "providers"
type = "crossplane-package"

[[check]]
name = "provider-configs"
type = "provider-config"

[[check]]
name = "anynines-backend"
type = "deployment"
deployment = "anynines-backend"
namespace = "bind"

[[check]]
name = "provider-pods"
type = "pods"
namespace = "crossplane-system"
selector = "pkg.crossplane.io/provider=provider-anynines"

[[check]]
name = "konnectors"
type = "cluster-binding"

[[check]]
name = "app-cluster-bindings"
type = "app-cluster-binding"

[[check]]
name = "managed-resources"
type = "managed-resources"

[[check]]
name = "brokers"
type = "broker"
"#;

#[test]
fn the_configuration_reference_is_the_codes() {
    for registration in klutch_health::checks::TYPES {
        assert!(
            MINIMAL.contains(&format!("type = \"{}\"", registration.name)),
            "MINIMAL names no check of type {}: add one, with only its required keys",
            registration.name
        );
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("config.toml");
    std::fs::write(&file, MINIMAL).expect("config");
    let mut command = std::process::Command::new(BIN);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("KLUTCH_HEALTH") {
            command.env_remove(key);
        }
    }
    let out = command
        .arg("--check-config")
        .arg("--config")
        .arg(&file)
        .current_dir(dir.path())
        .output()
        .expect("klutch-health --check-config");
    let stdout = String::from_utf8(out.stdout).expect("UTF-8");
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = format!(
        "Input:\n\n```toml{MINIMAL}```\n\nEffective configuration:\n\n```toml\n{}\n```\n",
        stdout.trim_end()
    );
    generated("docs/operators/configuration.md", "config", &text);
}

/// Every metric family a running klutch-health exports, with its type and help: the shipped configuration
/// against the simulated control plane, once a family without series from the start has some too.
#[tokio::test]
async fn the_metrics_reference_is_the_codes() {
    let cp = SimControlPlane::start()
        .await
        .expect("simulated control plane");
    let svc = Service::synced(&cp, "", &[]).await;
    let body = svc
        .wait_for("/metrics", "series of every family", |r| {
            [
                "_managed_resources{",
                "crossplane_managed_resource_synced{",
                "_upstream_request_duration_seconds_count{",
                "_watch_restarts_total{",
            ]
            .iter()
            .all(|family| r.body.contains(family))
        })
        .await
        .body;
    // name, type, help, label names
    let mut families: Vec<(String, String, String, Vec<String>)> = Vec::new();
    for line in body.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            families.push((
                name.to_string(),
                String::new(),
                help.to_string(),
                Vec::new(),
            ));
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE NAME KIND");
            let family = families
                .iter_mut()
                .find(|f| f.0 == name)
                .unwrap_or_else(|| panic!("TYPE before HELP: {line}"));
            family.1 = kind.to_string();
        } else if let Some((series, labels)) = line.split_once('{') {
            let family = families
                .iter_mut()
                .filter(|f| series.starts_with(f.0.as_str()))
                .max_by_key(|f| f.0.len())
                .unwrap_or_else(|| panic!("a series of no family: {line}"));
            for name in label_names(labels) {
                if name != "le" && !family.3.contains(&name) {
                    family.3.push(name);
                }
            }
        }
    }
    assert!(families.len() > 5, "{body}");
    let mut table = String::from("| metric | labels | type | what |\n|---|---|---|---|\n");
    for (name, kind, help, labels) in families {
        table.push_str(&format!(
            "| `{name}` | {} | {kind} | {} |\n",
            labels.join(", "),
            help.replace('|', "\\|")
        ));
    }
    generated("docs/operators/metrics-and-logs.md", "metrics", &table);
}

/// The label names of one series, from what follows its `{`.
fn label_names(mut labels: &str) -> Vec<String> {
    let mut names = Vec::new();
    while let Some((name, rest)) = labels.split_once("=\"") {
        names.push(name.trim_start_matches(',').trim().to_string());
        // the value: up to the first quote no backslash escapes
        let mut escaped = false;
        let end = rest
            .char_indices()
            .find(|&(_, c)| {
                let end = c == '"' && !escaped;
                escaped = c == '\\' && !escaped;
                end
            })
            .map_or(rest.len(), |(i, _)| i + 1);
        labels = &rest[end..];
    }
    names
}

/// Every Markdown file of the repository (not the build's).
fn markdown_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut dirs = vec![PathBuf::from(ROOT)];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("read_dir") {
            let path = entry.expect("entry").path();
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            if path.is_dir() {
                if !name.starts_with('.') && name != "target" {
                    dirs.push(path);
                }
            } else if name.ends_with(".md") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// The lines of a Markdown file outside fenced code blocks.
fn prose(text: &str) -> Vec<&str> {
    let mut fenced = false;
    text.lines()
        .filter(|line| {
            if line.trim_start().starts_with("```") {
                fenced = !fenced;
                return false;
            }
            !fenced
        })
        .collect()
}

/// `line` without its code spans.
fn without_code(line: &str) -> String {
    line.split('`').step_by(2).collect::<Vec<_>>().join("")
}

/// The anchors GitHub gives the headings of a Markdown file: lowercase, punctuation dropped, spaces to `-`,
/// `-1`, `-2` … for repeats.
fn anchors(text: &str) -> Vec<String> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut out = Vec::new();
    for line in prose(text) {
        let Some(heading) = line.strip_prefix('#') else {
            continue;
        };
        let heading = heading.trim_start_matches('#');
        if !heading.starts_with(' ') {
            continue;
        }
        let slug: String = heading
            .trim()
            .to_lowercase()
            .chars()
            .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
            .map(|c| if c == ' ' { '-' } else { c })
            .collect();
        let n = seen.entry(slug.clone()).or_default();
        out.push(if *n == 0 {
            slug.clone()
        } else {
            format!("{slug}-{n}")
        });
        *n += 1;
    }
    out
}

/// The targets of the inline links `[text](target)` of one line (code spans left out).
fn link_targets(line: &str) -> Vec<String> {
    let line = without_code(line);
    let mut out = Vec::new();
    let mut rest = line.as_str();
    while let Some(at) = rest.find("](") {
        rest = &rest[at + 2..];
        let Some(end) = rest.find(')') else { break };
        let target = rest[..end].trim();
        let target = target.split_whitespace().next().unwrap_or(""); // a title after the URL
        out.push(target.trim_matches(['<', '>']).to_string());
        rest = &rest[end..];
    }
    out
}

/// Why `target`, written in `from`, does not resolve, if it does not.
fn broken(from: &Path, target: &str) -> Option<String> {
    let (file, anchor) = match target.split_once('#') {
        Some((f, a)) => (f, Some(a)),
        None => (target, None),
    };
    let path = if let Some(inside) = file.strip_prefix(PUBLISHED) {
        Path::new(ROOT).join(inside)
    } else if file.contains("://") || file.starts_with("mailto:") {
        return None;
    } else if file.is_empty() {
        from.to_path_buf()
    } else if let Some(inside) = file.strip_prefix('/') {
        Path::new(ROOT).join(inside)
    } else {
        from.parent().expect("parent").join(file)
    };
    if !path.exists() {
        return Some(format!("{} does not exist", path.display()));
    }
    let anchor = anchor?;
    if path.is_dir() || path.extension().is_none_or(|e| e != "md") {
        return Some(format!(
            "an anchor into {}, which is no Markdown file",
            path.display()
        ));
    }
    let text = std::fs::read_to_string(&path).expect("read");
    if anchors(&text).iter().any(|a| a == anchor) {
        None
    } else {
        Some(format!("{} has no heading #{anchor}", path.display()))
    }
}

fn relative(path: &Path) -> String {
    path.strip_prefix(ROOT)
        .unwrap_or(path)
        .display()
        .to_string()
}

#[test]
fn anchors_and_links_are_read_as_github_does() {
    let page = "# The `/healthz` path\n\n```\n# not a heading\n```\n## Policy and root causes\n## Policy and root causes\n";
    assert_eq!(
        anchors(page),
        [
            "the-healthz-path",
            "policy-and-root-causes",
            "policy-and-root-causes-1"
        ]
    );
    assert_eq!(
        link_targets("see [a](b.md#c) and `[x](y)` or [d](<e.md> \"title\")"),
        ["b.md#c", "e.md"]
    );
    let readme = Path::new(ROOT).join("README.md");
    assert_eq!(
        broken(&readme, "docs/operators/policy.md#root-causes"),
        None
    );
    assert!(broken(&readme, "docs/operators/policy.md#no-such-heading").is_some());
    assert!(broken(&readme, "docs/no-such-page.md").is_some());
    assert_eq!(broken(&readme, "https://example.com/x#y"), None);
}

#[test]
fn every_link_and_anchor_resolves() {
    let mut problems = Vec::new();
    for file in markdown_files() {
        let text = std::fs::read_to_string(&file).expect("read");
        for (n, line) in prose(&text).into_iter().enumerate() {
            for target in link_targets(line) {
                if let Some(why) = broken(&file, &target) {
                    problems.push(format!("{}: ({target}): {why} [{n}]", relative(&file)));
                }
            }
        }
    }
    // The alerts' runbook_url, in the shipped rules and in the rules' tests.
    for dir in ["deploy", "tests/full/service_level"] {
        let mut dirs = vec![Path::new(ROOT).join(dir)];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).expect("read_dir") {
                let path = entry.expect("entry").path();
                if path.is_dir() {
                    dirs.push(path);
                    continue;
                }
                let Ok(text) = std::fs::read_to_string(&path) else {
                    continue;
                };
                for (at, _) in text.match_indices(PUBLISHED) {
                    let url: String = text[at..]
                        .chars()
                        .take_while(|c| !c.is_whitespace() && !"\"'`)".contains(*c))
                        .collect();
                    if let Some(why) = broken(&path, &url) {
                        problems.push(format!("{}: {url}: {why}", relative(&path)));
                    }
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "links that do not resolve:\n{}",
        problems.join("\n")
    );
}

/// A path of the repository named in a page (`tests/fast/docs.rs`) exists: pages do not point at files
/// that moved.
#[test]
fn every_path_a_page_names_exists() {
    const TOP: &[&str] = &[
        "src/",
        "sim/",
        "realcp/",
        "tests/",
        "deploy/",
        "bench/",
        "controlplane/",
        "crds/",
        "docs/",
        ".ci/",
        "fuzz/",
    ];
    let mut problems = Vec::new();
    for file in markdown_files() {
        let text = std::fs::read_to_string(&file).expect("read");
        for line in prose(&text) {
            for span in line.split('`').skip(1).step_by(2) {
                let path = span.split_whitespace().next().unwrap_or("");
                // `deploy/sidecar/`, not `tests/full/*.rs` or `OUT/results.json`.
                let placeholder = path.contains(['*', '…', '{', '<', '$'])
                    || path.split('/').any(|segment| {
                        !segment.is_empty()
                            && segment
                                .chars()
                                .all(|c| c.is_ascii_uppercase() || c == '_' || c == '-')
                    });
                if placeholder || !TOP.iter().any(|top| path.starts_with(top)) {
                    continue;
                }
                let path = path.split('#').next().unwrap_or(path);
                let path = path.trim_end_matches([':', ',', '.', ')']);
                if !Path::new(ROOT).join(path).exists() {
                    problems.push(format!("{}: `{path}`", relative(&file)));
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "paths that do not exist:\n{}",
        problems.join("\n")
    );
}
