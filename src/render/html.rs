//! A small status page for people: both verdicts, every item with its colour, message and since-when.
//! It refreshes itself with a meta tag, so it needs no JavaScript.

use std::fmt::Write;

use jiff::Timestamp;

use super::{Details, Identity};
use crate::policy::human;
use crate::report::{Endpoint, Report, Status};

/// Escapes text for HTML element content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for ch in text.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn ago(now: Timestamp, then: Timestamp) -> String {
    let d = now.duration_since(then).unsigned_abs();
    format!("{} ago", human(d))
}

pub fn page(report: &Report, identity: &Identity, details: Details, now: Timestamp) -> String {
    let mut out = String::new();
    let title = escape(&identity.description);
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<meta http-equiv=\"refresh\" content=\"5\"><title>{title} — klutch-health</title><style>\
body{{font-family:system-ui,sans-serif;margin:1rem;color:#222;max-width:60rem}}\
table{{border-collapse:collapse;width:100%}}td,th{{text-align:left;padding:.3rem .5rem;border-bottom:1px solid #ddd;vertical-align:top}}\
.s{{font-weight:bold;border-radius:.3rem;padding:.1rem .4rem;color:#fff}}\
.pass{{background:#2e7d32}}.warn{{background:#b26a00}}.fail{{background:#c62828}}.unknown{{background:#666}}\
.msg{{word-break:break-word}}small{{color:#666}}</style></head><body>\n<h1>{title}</h1>\n"
    );
    for e in Endpoint::ALL {
        let r = report.endpoint(e);
        let status = if r.passed() { r.status() } else { Status::Fail };
        let _ = writeln!(
            out,
            "<p><b>/{}</b> <span class=\"s {}\">{}</span></p>",
            e.as_str(),
            status.as_str(),
            if r.passed() { "passing" } else { "failing" }
        );
    }
    out.push_str("<table><thead><tr><th>item</th><th>status</th><th>message</th><th>since</th></tr></thead><tbody>\n");
    for item in &report.items {
        let message = if item.status == Status::Pass {
            ""
        } else {
            &*details.message(&item.message)
        };
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td><span class=\"s {s}\">{s}</span></td><td class=\"msg\">{}</td>\
<td title=\"{since}\">{} <small>{since}</small></td></tr>",
            escape(&item.name),
            escape(message),
            ago(now, item.since),
            s = item.status.as_str(),
            since = item.since,
        );
    }
    out.push_str("</tbody></table>\n");
    if let Some(poll) = report.last_poll {
        let _ = writeln!(
            out,
            "<p><small>provider-anynines health server last polled {} ({poll})</small></p>",
            ago(now, poll)
        );
    }
    let _ = writeln!(
        out,
        "<p><small>evaluated {} · klutch-health {} · refreshes every 5 s</small></p></body></html>",
        report.evaluated,
        env!("CARGO_PKG_VERSION")
    );
    out
}
