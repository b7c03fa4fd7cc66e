//! Kubernetes-style verbose text: `[+]CHECK/ITEM ok`, `[-]CHECK/ITEM failed: MESSAGE`, then the verdict.

use std::collections::HashMap;
use std::fmt::Write;

use super::{one_line, Details};
use crate::verdict::report::{Endpoint, Report, Selection, Status};

pub(crate) fn verbose(
    report: &Report,
    endpoint: Endpoint,
    selection: &Selection<'_>,
    details: Details,
) -> String {
    lines(report, endpoint, selection, details, true)
}

/// The non-verbose answer of a failing endpoint: the lines of the items that do not pass and the verdict,
/// never a passing or excluded item's `ok` line, so that a monitor looking for `ok` never sees green.
pub(crate) fn failing(
    report: &Report,
    endpoint: Endpoint,
    selection: &Selection<'_>,
    details: Details,
) -> String {
    lines(report, endpoint, selection, details, false)
}

/// Each line of an explained item ends with ` (cause: ROOT)`; before the verdict, one line per root cause
/// of the lines shown, counting only those.
fn lines(
    report: &Report,
    endpoint: Endpoint,
    selection: &Selection<'_>,
    details: Details,
    with_passing: bool,
) -> String {
    let mut out = String::new();
    // Root cause → how many lines shown it explains.
    let mut explained: HashMap<&str, usize> = HashMap::new();
    for c in &selection.items {
        let name = one_line(&c.name);
        let cause = c
            .item
            .and_then(|i| report.items.get(i))
            .and_then(|i| i.cause.as_ref())
            .filter(|_| c.status != Status::Pass);
        let suffix = match cause {
            Some(cause) => {
                *explained.entry(cause.root.as_str()).or_default() += 1;
                format!(" (cause: {})", one_line(&cause.root))
            }
            None => String::new(),
        };
        let _ = match c.status {
            Status::Fail => writeln!(out, "[-]{name} failed: {}{suffix}", details.counted(c)),
            Status::Warn | Status::Unknown => {
                writeln!(out, "[+]{name} warn: {}{suffix}", details.counted(c))
            }
            Status::Pass if with_passing => writeln!(out, "[+]{name} ok"),
            Status::Pass => Ok(()),
        };
    }
    for c in selection.excluded.iter().filter(|_| with_passing) {
        let _ = writeln!(out, "[+]{} excluded: ok", one_line(&c.name));
    }
    if !selection.unmatched.is_empty() {
        let names: Vec<String> = selection
            .unmatched
            .iter()
            .map(|n| format!("{n:?}"))
            .collect();
        let _ = writeln!(
            out,
            "warn: some health checks cannot be excluded: no matches for {}",
            names.join(",")
        );
    }
    for root in &report.causes.roots {
        if let Some(n) = explained.get(root.name.as_str()) {
            let _ = writeln!(
                out,
                "root cause: {} ({}) explains {n} item{}",
                one_line(&root.name),
                details.message(&root.message),
                if *n == 1 { "" } else { "s" }
            );
        }
    }
    let verdict = if selection.passed() {
        "passed"
    } else {
        "failed"
    };
    let _ = writeln!(out, "{} check {verdict}", endpoint.as_str());
    out
}
