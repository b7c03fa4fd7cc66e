//! Kubernetes-style verbose text: `[+]CHECK/ITEM ok`, `[-]CHECK/ITEM failed: MESSAGE`, then the verdict.

use std::fmt::Write;

use super::{one_line, Details};
use crate::report::{Endpoint, Selection, Status};

pub(crate) fn verbose(endpoint: Endpoint, selection: &Selection<'_>, details: Details) -> String {
    lines(endpoint, selection, details, true)
}

/// The non-verbose answer of a failing endpoint: the lines of the items that do not pass and the verdict,
/// never a passing or excluded item's `ok` line, so that a monitor looking for `ok` never sees green.
pub(crate) fn failing(endpoint: Endpoint, selection: &Selection<'_>, details: Details) -> String {
    lines(endpoint, selection, details, false)
}

fn lines(
    endpoint: Endpoint,
    selection: &Selection<'_>,
    details: Details,
    with_passing: bool,
) -> String {
    let mut out = String::new();
    for c in &selection.items {
        let name = one_line(&c.name);
        let _ = match c.status {
            Status::Fail => writeln!(out, "[-]{name} failed: {}", details.counted(c)),
            Status::Warn | Status::Unknown => {
                writeln!(out, "[+]{name} warn: {}", details.counted(c))
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
    let verdict = if selection.passed() {
        "passed"
    } else {
        "failed"
    };
    let _ = writeln!(out, "{} check {verdict}", endpoint.as_str());
    out
}
