//! The layering README.md states ("How it works"), read from the code: every path that names a module of
//! this crate (`use` trees, `crate::…` and `super::…` in code, parsed with `syn`, so doc links are not
//! counted and `super::super` is resolved) may only lead to a module of a lower layer, so that a change to
//! one module never has to be understood together with the modules above it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use syn::visit::Visit;

/// The layers, lowest first; a module may use modules of lower layers only. The README's "How it works"
/// states the same order.
const LAYERS: &[&[&str]] = &[
    &["human", "values", "reserved", "clock"],
    &["report"],
    &["telemetry"],
    &["metrics"],
    &["signals"],
    &["kubernetes"],
    &["checks"],
    &["config"],
    &["history", "operating", "causes"],
    &["policy"],
    &["render", "lease"],
    &["events"],
    &["engine"],
    &["connections", "listen"],
    &["server"],
    &["reload"],
    &["app"],
];

fn layer(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

/// Where a source file sits: its module path below the crate root (`["checks", "pods"]`).
fn module_path(src: &Path, file: &Path) -> Vec<String> {
    let relative = file.strip_prefix(src).expect("under src");
    let mut parts: Vec<String> = relative
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().expect("a file name");
    match last.trim_end_matches(".rs") {
        "mod" | "lib" | "main" => {}
        name => parts.push(name.to_string()),
    }
    parts
}

/// Collects the top-level modules that paths in one file lead to.
struct Uses<'a> {
    /// The module the visited code is in (changes inside inline `mod` blocks).
    at: Vec<String>,
    found: &'a mut BTreeSet<String>,
}

impl Uses<'_> {
    /// The top-level module a path of these segments leads to, when it leads into this crate.
    fn resolve(&self, segments: &[String]) -> Option<String> {
        let mut base = self.at.clone();
        let mut rest = segments;
        match rest.first().map(String::as_str) {
            Some("crate") => {
                base.clear();
                rest = &rest[1..];
            }
            Some("super") | Some("self") => {
                while let Some(first) = rest.first() {
                    match first.as_str() {
                        "super" => {
                            base.pop();
                        }
                        "self" => {}
                        _ => break,
                    }
                    rest = &rest[1..];
                }
            }
            _ => return None,
        }
        base.extend(rest.iter().cloned());
        base.into_iter().next()
    }

    fn record(&mut self, segments: &[String]) {
        if let Some(top) = self.resolve(segments) {
            self.found.insert(top);
        }
    }

    fn tree(&mut self, prefix: &mut Vec<String>, tree: &syn::UseTree) {
        match tree {
            syn::UseTree::Path(p) => {
                prefix.push(p.ident.to_string());
                self.tree(prefix, &p.tree);
                prefix.pop();
            }
            syn::UseTree::Name(n) => {
                prefix.push(n.ident.to_string());
                self.record(prefix);
                prefix.pop();
            }
            syn::UseTree::Rename(r) => {
                prefix.push(r.ident.to_string());
                self.record(prefix);
                prefix.pop();
            }
            syn::UseTree::Glob(_) => self.record(prefix),
            syn::UseTree::Group(g) => {
                for t in &g.items {
                    self.tree(prefix, t);
                }
            }
        }
    }
}

impl<'ast> Visit<'ast> for Uses<'_> {
    fn visit_item_use(&mut self, u: &'ast syn::ItemUse) {
        self.tree(&mut Vec::new(), &u.tree);
    }

    fn visit_path(&mut self, p: &'ast syn::Path) {
        let segments: Vec<String> = p.segments.iter().map(|s| s.ident.to_string()).collect();
        self.record(&segments);
        syn::visit::visit_path(self, p);
    }

    fn visit_item_mod(&mut self, m: &'ast syn::ItemMod) {
        // Test modules may reach anywhere to set a scene; the layering is the product's.
        let is_test = m.attrs.iter().any(|a| {
            a.path().is_ident("cfg") && a.parse_args::<syn::Ident>().is_ok_and(|i| i == "test")
        });
        if is_test {
            return;
        }
        self.at.push(m.ident.to_string());
        syn::visit::visit_item_mod(self, m);
        self.at.pop();
    }
}

/// The top-level modules that `source` (the file of module `at`) names.
fn uses_of(source: &str, at: &[String]) -> BTreeSet<String> {
    let file = syn::parse_file(source).expect("src/ parses");
    let mut found = BTreeSet::new();
    Uses {
        at: at.to_vec(),
        found: &mut found,
    }
    .visit_file(&file);
    found
}

/// Top-level module → the top-level modules of this crate its code names.
fn dependencies(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut stack: Vec<PathBuf> = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read src") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let at = module_path(src, &path);
            let Some(module) = at.first().cloned() else {
                continue; // lib.rs and main.rs: the root names every module
            };
            let text = std::fs::read_to_string(&path).expect("read");
            let uses = graph.entry(module.clone()).or_default();
            uses.extend(uses_of(&text, &at).into_iter().filter(|u| *u != module));
        }
    }
    graph
}

/// Every use that goes up or sideways in [`LAYERS`], and every module the layers do not name.
fn violations(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    let mut out = Vec::new();
    for (module, uses) in graph {
        let Some(own) = layer(module) else {
            out.push(format!(
                "{module} is in no layer: add it to LAYERS and to the README"
            ));
            continue;
        };
        for used in uses {
            match layer(used) {
                Some(l) if l < own => {}
                Some(_) => out.push(format!("{module} uses {used}, which is not below it")),
                None => out.push(format!("{module} uses {used}, which is in no layer")),
            }
        }
    }
    out
}

#[test]
fn every_module_of_src_uses_only_modules_of_lower_layers() {
    let graph = dependencies(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    assert!(
        graph.contains_key("checks") && graph["checks"].contains("kubernetes"),
        "{graph:#?}"
    );
    let wrong = violations(&graph);
    assert!(wrong.is_empty(), "{}\n{graph:#?}", wrong.join("\n"));
}

#[test]
fn uses_are_read_from_the_syntax_tree() {
    let at = |p: &[&str]| p.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let found = uses_of(
        "//! See [`crate::app`] (a doc link, not a use).\n\
         use crate::{report::Status, values};\n\
         use super::super::metrics::Metrics;\n\
         use super::sibling;\n\
         fn f() { crate::human::duration(d); }\n\
         #[cfg(test)] mod tests { use crate::server; }\n",
        &at(&["kubernetes", "watch", "task"]),
    );
    assert_eq!(
        found,
        BTreeSet::from(["human", "kubernetes", "report", "values"].map(String::from)),
        "super::super from kubernetes::watch::task is kubernetes; super::super::metrics would be \
         crate::kubernetes::metrics"
    );
}

#[test]
fn a_use_that_goes_up_or_sideways_is_a_violation() {
    let graph = BTreeMap::from([
        ("policy".to_string(), BTreeSet::from(["report".to_string()])),
        ("report".to_string(), BTreeSet::from(["policy".to_string()])),
        ("human".to_string(), BTreeSet::from(["values".to_string()])),
        ("newcomer".to_string(), BTreeSet::new()),
    ]);
    assert_eq!(
        violations(&graph),
        [
            "human uses values, which is not below it",
            "newcomer is in no layer: add it to LAYERS and to the README",
            "report uses policy, which is not below it",
        ]
    );
}
