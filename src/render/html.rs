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

/// The page: the verdict of each endpoint first, then every check as a list of item cards.
pub fn page(report: &Report, identity: &Identity, details: Details, now: Timestamp) -> String {
    let mut out = String::new();
    let title = escape(&identity.description);
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<meta http-equiv=\"refresh\" content=\"5\"><title>{title} — klutch-health</title><style>\
body{{font-family:system-ui,sans-serif;margin:0 auto;padding:1rem;color:#1d1d1f;max-width:48rem;line-height:1.35}}\
h1{{font-size:1.4rem;margin:0 0 .6rem}}h2{{font-size:1.05rem;margin:1.2rem 0 .4rem}}h2 small{{font-weight:normal}}\
.verdicts{{display:flex;gap:.6rem;flex-wrap:wrap}}.verdict{{padding:.5rem .8rem;border-radius:.5rem;color:#fff;font-weight:600}}\
.item{{border-left:.35rem solid;padding:.45rem .6rem;margin:.35rem 0;background:#f6f6f7;border-radius:.3rem}}\
.row{{display:flex;justify-content:space-between;gap:.5rem;align-items:baseline}}.name{{font-weight:600;word-break:break-all}}\
.s{{font-size:.8rem;font-weight:700;border-radius:.3rem;padding:.05rem .4rem;color:#fff;text-transform:uppercase}}\
.msg{{margin-top:.2rem;word-break:break-word}}small{{color:#666}}\
.pass{{background:#2e7d32;border-color:#2e7d32}}.warn{{background:#b26a00;border-color:#b26a00}}\
.fail{{background:#c62828;border-color:#c62828}}.unknown{{background:#616161;border-color:#616161}}\
.item.pass,.item.warn,.item.fail,.item.unknown{{background:#f6f6f7}}</style></head><body>\n<h1>{title}</h1>\n<div class=\"verdicts\">"
    );
    for e in Endpoint::ALL {
        let r = report.endpoint(e);
        let (class, word) = match (r.passed(), r.status()) {
            (false, _) => ("fail", "failing"),
            (true, Status::Warn) => ("warn", "passing, with warnings"),
            (true, _) => ("pass", "passing"),
        };
        let _ = write!(
            out,
            "<div class=\"verdict {class}\">/{} {word}</div>",
            e.as_str()
        );
    }
    out.push_str("</div>\n");
    let mut current: Option<&str> = None;
    for item in &report.items {
        if current != Some(&*item.check) {
            if current.is_some() {
                out.push_str("</section>\n");
            }
            current = Some(&item.check);
            let _ = writeln!(
                out,
                "<section><h2>{} <small>{}</small></h2>",
                escape(&item.check),
                item.check_type
            );
        }
        let s = item.status.as_str();
        let _ = write!(
            out,
            "<div class=\"item {s}\"><div class=\"row\"><span class=\"name\">{}</span><span class=\"s {s}\">{s}</span></div>",
            escape(item.short_name())
        );
        if item.status != Status::Pass {
            let _ = write!(
                out,
                "<div class=\"msg\">{}</div>",
                escape(&details.message(&item.message))
            );
        }
        let _ = writeln!(
            out,
            "<small>{s} since {} · {}</small></div>",
            ago(now, item.since),
            item.since.strftime("%Y-%m-%d %H:%M:%S UTC")
        );
    }
    if current.is_some() {
        out.push_str("</section>\n");
    }
    if let Some(poll) = report.last_poll {
        let _ = writeln!(
            out,
            "<p><small>provider-anynines' health server last polled {}.</small></p>",
            ago(now, poll)
        );
    }
    let _ = writeln!(
        out,
        "<p><small>Evaluated {} · klutch-health {} · this page refreshes every 5 s · \
<a href=\"/readyz?verbose\">/readyz?verbose</a> · <a href=\"/metrics\">/metrics</a></small></p></body></html>",
        ago(now, report.evaluated),
        env!("CARGO_PKG_VERSION")
    );
    out
}
