//! The status page, for a person — often on a phone, at night: the verdict of both endpoints first, then the
//! root causes (what to fix first, each with the items it explains), then what needs attention, then every
//! check with every item: its observed status and colour, why, since when
//! (relative and absolute), and how each endpoint counts it. It refreshes itself with a meta tag, so it needs
//! no JavaScript, and it contains none. Everything from outside (names, messages) is escaped.

use std::collections::HashMap;
use std::fmt::Write;

use jiff::Timestamp;

mod timeline;

use super::{Details, Identity};
use crate::clock::Moment;
use crate::verdict::report::{Counted, Endpoint, Explained, Item, Report, Status};

/// How often the page reloads itself, in seconds.
pub(crate) const REFRESH_SECONDS: u32 = 10;

/// Escapes text for HTML element content and attribute values.
pub(crate) fn escape(text: &str) -> String {
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

/// A duration for people reading a page: `just now`, `42s`, `3m 12s`, `2h 5m`, `3d 4h`.
pub(crate) fn short_duration(seconds: u64) -> String {
    let (d, h, m, s) = (
        seconds / 86_400,
        seconds / 3600 % 24,
        seconds / 60 % 60,
        seconds % 60,
    );
    match seconds {
        0 => "just now".to_string(),
        1..60 => format!("{s}s"),
        60..3600 => format!("{m}m {s}s"),
        3600..86_400 => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}

/// `3m 12s ago`, or `just now`.
fn ago(now: Timestamp, then: Timestamp) -> String {
    let seconds = now.duration_since(then).as_secs().max(0) as u64;
    match short_duration(seconds) {
        s if seconds == 0 => s,
        s => format!("{s} ago"),
    }
}

/// `2026-11-25 01:38:11 UTC`, in a `<time>` element with the RFC 3339 form for machines.
fn absolute(t: Timestamp) -> String {
    format!(
        "<time datetime=\"{}\">{}</time>",
        t.strftime("%Y-%m-%dT%H:%M:%SZ"),
        t.strftime("%Y-%m-%d %H:%M:%S UTC")
    )
}

/// `3m 12s ago (2026-11-25 01:38:11 UTC)`.
fn when(now: Timestamp, t: Timestamp) -> String {
    format!("{} ({})", ago(now, t), absolute(t))
}

const STYLE: &str = "\
:root{color-scheme:light dark;--fg:#1d1d1f;--muted:#5f6368;--card:#f4f4f6;--bg:#fff;--line:#ddd;\
--pass:#2e7d32;--warn:#a85d00;--fail:#c62828;--unknown:#5f6368;\
--pass-t:#2e7d32;--warn-t:#a85d00;--fail-t:#c62828}\
@media (prefers-color-scheme:dark){:root{--fg:#e8e8ea;--muted:#a0a4a8;--card:#202124;--bg:#121212;--line:#3a3a3d;\
--pass-t:#66bb6a;--warn-t:#ffa726;--fail-t:#ef5350}}\
*{box-sizing:border-box}\
body{font:16px/1.4 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:0 auto;padding:.8rem;color:var(--fg);\
background:var(--bg);max-width:50rem}\
h1{font-size:1.3rem;margin:.2rem 0 .6rem}h2{font-size:1.05rem;margin:1.3rem 0 .4rem}\
h2 small,.muted,small{color:var(--muted);font-weight:normal}small{font-size:.85rem}\
a{color:inherit}\
.verdicts{display:grid;grid-template-columns:repeat(auto-fit,minmax(14rem,1fr));gap:.5rem}\
.verdict{padding:.6rem .8rem;border-radius:.6rem;color:#fff}\
.verdict strong{display:block;font-size:1.25rem}.verdict span{font-size:.9rem;opacity:.95}\
.poll{margin:.6rem 0 0}\
.causes{border:2px solid var(--fail-t);border-radius:.6rem;padding:.2rem .8rem .5rem;margin-top:.9rem;\
background:var(--card)}.causes h2{margin:.4rem 0}.causes ul{list-style:none;margin:0;padding:0}\
.causes li{padding:.4rem 0;border-top:1px solid var(--line);overflow-wrap:anywhere}\
.causes li:first-child{border-top:0}.causes .name{font-size:1.05rem}\
.attention{border:2px solid var(--fail-t);border-radius:.6rem;padding:.2rem .8rem .5rem;margin-top:.9rem}\
.attention h2{margin:.4rem 0}.attention ul{list-style:none;margin:0;padding:0}\
.attention li{padding:.3rem 0;border-top:1px solid var(--line);overflow-wrap:anywhere}\
.attention li:first-child{border-top:0}.attention a{text-decoration:none}\
.item{border-left:.4rem solid var(--unknown);padding:.5rem .65rem;margin:.4rem 0;background:var(--card);border-radius:.35rem}\
.row{display:flex;justify-content:space-between;gap:.5rem;align-items:baseline}\
.name{font-weight:600;overflow-wrap:anywhere}\
.s{font-size:.75rem;font-weight:700;border-radius:.3rem;padding:.1rem .4rem;color:#fff;text-transform:uppercase;\
white-space:nowrap;letter-spacing:.02em}\
.msg{margin-top:.25rem;overflow-wrap:anywhere}\
.eps{margin-top:.35rem;display:flex;flex-wrap:wrap;gap:.3rem .8rem;font-size:.85rem}\
.ep i{font-style:normal;font-weight:700}.ep i.pass{color:var(--pass-t)}.ep i.warn{color:var(--warn-t)}\
.ep i.fail{color:var(--fail-t)}.ep i.none{color:var(--muted)}\
.note{font-size:.85rem;color:var(--muted);overflow-wrap:anywhere}\
.item small{display:block;margin-top:.25rem}\
.pass{background:var(--pass);border-color:var(--pass)}.warn{background:var(--warn);border-color:var(--warn)}\
.fail{background:var(--fail);border-color:var(--fail)}.unknown{background:var(--unknown);border-color:var(--unknown)}\
.item.pass,.item.warn,.item.fail,.item.unknown{background:var(--card)}\
.ep i.pass,.ep i.warn,.ep i.fail{background:none}\
footer{margin:1.4rem 0 .5rem;border-top:1px solid var(--line);padding-top:.5rem}";

fn colour(s: Status) -> &'static str {
    match s {
        Status::Pass => "#2e7d32",
        Status::Warn => "#a85d00",
        Status::Fail => "#c62828",
        Status::Unknown => "#5f6368",
    }
}

/// One card: an item as its signal saw it (`item`), or an item the policy added (`require`), with how each
/// endpoint counts it.
struct Card<'a> {
    anchor: String,
    check: &'a str,
    short: &'a str,
    /// The observed status; for a policy item, the worst counted one.
    status: Status,
    message: &'a str,
    /// The item's fuller account, shown instead of the message, even while it passes.
    detail: Option<&'a str>,
    since: Timestamp,
    /// Per endpoint: how it counts the item, `None` when it does not count it.
    counted: [Option<&'a Counted>; 2],
    /// The root cause that explains it, and its direct cause.
    cause: Option<&'a Explained>,
}

impl Card<'_> {
    /// Whether a person should look at it: not passing as observed, or not passing for an endpoint.
    fn needs_attention(&self) -> bool {
        self.status != Status::Pass
            || self
                .counted
                .iter()
                .flatten()
                .any(|c| c.status != Status::Pass)
    }

    /// What the card says of the item: its fuller account (even while it passes), else its message when
    /// it does not pass.
    fn shown(&self) -> Option<&str> {
        self.detail
            .or((self.status != Status::Pass && !self.message.is_empty()).then_some(self.message))
    }

    fn worst(&self) -> Status {
        self.counted
            .iter()
            .flatten()
            .map(|c| c.status)
            .chain([self.status])
            .max_by_key(|s| s.severity())
            .unwrap_or(Status::Pass)
    }
}

/// Every item, grouped by check in report order, each policy-added item after its check's items.
fn cards(report: &Report) -> Vec<Card<'_>> {
    let mut by_item: Vec<[Option<&Counted>; 2]> = vec![[None, None]; report.items.len()];
    let mut added: Vec<(&str, &str, [Option<&Counted>; 2])> = Vec::new();
    for e in Endpoint::ALL {
        for c in &report.endpoint(e).items {
            match c.item {
                Some(i) if i < by_item.len() => by_item[i][e.index()] = Some(c),
                Some(_) => {}
                None => match added.iter_mut().find(|(_, name, _)| *name == &*c.name) {
                    Some((_, _, counted)) => counted[e.index()] = Some(c),
                    None => {
                        let mut counted = [None, None];
                        counted[e.index()] = Some(c);
                        added.push((c.name.check(), &c.name, counted));
                    }
                },
            }
        }
    }
    let mut out: Vec<Card> = Vec::with_capacity(report.items.len() + added.len());
    let mut placed = vec![false; added.len()];
    for (i, item) in report.items.iter().enumerate() {
        let last_of_check = report
            .items
            .get(i + 1)
            .is_none_or(|next| next.name.check() != item.name.check());
        out.push(item_card_of(i, item, by_item[i]));
        if last_of_check {
            for (j, (check, name, counted)) in added.iter().enumerate() {
                if *check == item.name.check() {
                    placed[j] = true;
                    out.push(policy_card(j, check, name, *counted));
                }
            }
        }
    }
    for (j, (check, name, counted)) in added.iter().enumerate() {
        if !placed[j] {
            out.push(policy_card(j, check, name, *counted));
        }
    }
    out
}

fn item_card_of<'a>(i: usize, item: &'a Item, counted: [Option<&'a Counted>; 2]) -> Card<'a> {
    Card {
        anchor: format!("i{i}"),
        check: item.name.check(),
        short: item.name.item(),
        status: item.status,
        message: &item.message,
        detail: item.detail.as_deref(),
        since: item.since,
        counted,
        cause: item.cause.as_ref(),
    }
}

fn policy_card<'a>(
    j: usize,
    check: &'a str,
    name: &'a str,
    counted: [Option<&'a Counted>; 2],
) -> Card<'a> {
    let first = counted.iter().flatten().next();
    Card {
        anchor: format!("p{j}"),
        check,
        short: name
            .strip_prefix(check)
            .map_or(name, |s| s.trim_start_matches('/')),
        status: counted
            .iter()
            .flatten()
            .map(|c| c.status)
            .max_by_key(|s| s.severity())
            .unwrap_or(Status::Unknown),
        message: first.map_or("", |c| &c.message),
        detail: None,
        since: first.map_or(Timestamp::UNIX_EPOCH, |c| c.since),
        counted,
        cause: None,
    }
}

/// The page: both verdicts, the last upstream poll, what needs attention, then every check's items.
pub(crate) fn page(
    report: &Report,
    identity: &Identity,
    details: Details,
    moment: Moment,
    history: &crate::verdict::history::History,
) -> String {
    let now = moment.wall;
    let cards = cards(report);
    let mut out = String::with_capacity(4096 + 600 * cards.len());
    let description = escape(&identity.description);
    let readyz = report.endpoint(Endpoint::Readyz);
    let healthz = report.endpoint(Endpoint::Healthz);
    let (mark, headline, worst) = match (readyz.passed(), healthz.passed()) {
        (true, true) if readyz.status() == Status::Pass && healthz.status() == Status::Pass => {
            ("✓", "all passing", Status::Pass)
        }
        (true, true) => ("!", "passing, with warnings", Status::Warn),
        (false, true) => ("✗", "/readyz failing", Status::Fail),
        (true, false) => ("✗", "/healthz failing", Status::Fail),
        (false, false) => ("✗", "failing", Status::Fail),
    };
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<meta http-equiv=\"refresh\" content=\"{REFRESH_SECONDS}\">\
<meta name=\"color-scheme\" content=\"light dark\">\
<link rel=\"icon\" href=\"data:image/svg+xml,%3Csvg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 16 16'%3E\
%3Ccircle cx='8' cy='8' r='7' fill='%23{}'/%3E%3C/svg%3E\">\
<title>{mark} {description}: {headline}</title><style>{STYLE}{}</style></head><body>\n\
<h1>{description}</h1>\n<div class=\"verdicts\">",
        &colour(worst)[1..],
        timeline::STYLE
    );
    verdicts(&mut out, report);
    out.push_str("</div>\n");
    root_causes(&mut out, report, details, now);
    poll_line(&mut out, report, now);
    operations(&mut out, report, details, now);
    let anchors = anchors(report);
    attention(&mut out, &anchors, &cards, details, now);
    sections(&mut out, report, &anchors, &cards, details, now);
    timeline::timelines(&mut out, history, report, details, moment);
    let _ = writeln!(
        out,
        "<footer><small>Evaluated {} · klutch-health {} · this page reloads every {REFRESH_SECONDS} s · \
<a href=\"/readyz?verbose\">/readyz?verbose</a> · <a href=\"/healthz?verbose\">/healthz?verbose</a> · \
<a href=\"/readyz?format=json\">JSON</a> · <a href=\"/metrics\">/metrics</a> · \
<a href=\"/backend-health\">/backend-health</a> · <a href=\"/history\">/history</a></small></footer></body></html>",
        when(now, report.evaluated.wall),
        env!("CARGO_PKG_VERSION")
    );
    out
}

/// Each endpoint's verdict with its tally of failing, warning and passing items.
fn verdicts(out: &mut String, report: &Report) {
    for e in [Endpoint::Readyz, Endpoint::Healthz] {
        let r = report.endpoint(e);
        let (class, word) = match (r.passed(), r.status()) {
            (false, _) => ("fail", "failing"),
            (true, Status::Warn) => ("warn", "passing, with warnings"),
            (true, _) => ("pass", "passing"),
        };
        let count = |s: Status| r.items.iter().filter(|c| c.status == s).count();
        let mut tally = Vec::new();
        for (s, word) in [
            (Status::Fail, "failing"),
            (Status::Warn, "warning"),
            (Status::Pass, "ok"),
        ] {
            let n = count(s);
            if n > 0 || s == Status::Pass {
                tally.push(format!("{n} {word}"));
            }
        }
        let _ = write!(
            out,
            "<div class=\"verdict {class}\"><strong>/{e} {word}</strong><span>{} · {}</span></div>",
            tally.join(" · "),
            match e {
                Endpoint::Readyz => "what load balancers and monitors see",
                Endpoint::Healthz => "liveness, with flap damping",
            },
            e = e.as_str(),
        );
    }
}

/// What to fix first: every root cause (a bad item nothing else explains, or a cluster whose API server
/// explains items), each with the items it explains, linked to their cards.
fn root_causes(out: &mut String, report: &Report, details: Details, now: Timestamp) {
    let roots = &report.causes.roots;
    if roots.is_empty() {
        return;
    }
    let _ = write!(
        out,
        "<section class=\"causes\"><h2>Root causes ({})</h2><ul>",
        roots.len()
    );
    for root in roots {
        let s = root.status.as_str();
        let name = escape(&root.name);
        let name = match root.item {
            Some(i) => format!("<a href=\"#i{i}\">{name}</a>"),
            None => name,
        };
        let _ = write!(
            out,
            "<li><span class=\"s {s}\">{s}</span> <strong class=\"name\">{name}</strong> <small>since {}</small>",
            ago(now, root.since),
        );
        if !root.message.is_empty() {
            let _ = write!(
                out,
                "<div class=\"msg\">{}</div>",
                escape(&details.message(&root.message))
            );
        }
        if !root.explains.is_empty() {
            let items: Vec<String> = root
                .explains
                .iter()
                .filter_map(|&i| {
                    let item = report.items.get(i)?;
                    Some(format!("<a href=\"#i{i}\">{}</a>", escape(&item.name)))
                })
                .collect();
            let n = items.len();
            let _ = write!(
                out,
                "<div class=\"note\">explains {n} item{}: {}</div>",
                if n == 1 { "" } else { "s" },
                items.join(", ")
            );
        }
        out.push_str("</li>");
    }
    out.push_str("</ul></section>\n");
}

/// Root cause → the index of its item (its card's anchor), for the roots that are items.
type Anchors<'a> = HashMap<&'a str, usize>;

fn anchors(report: &Report) -> Anchors<'_> {
    report
        .causes
        .roots
        .iter()
        .filter_map(|r| Some((r.name.as_str(), r.item?)))
        .collect()
}

/// `cause: ROOT (via DIRECT)`, linked to the root's card where it has one.
fn cause_note(out: &mut String, anchors: &Anchors<'_>, cause: &Explained) {
    let root = escape(&cause.root);
    let root = match anchors.get(cause.root.as_str()) {
        Some(i) => format!("<a href=\"#i{i}\">{root}</a>"),
        None => root,
    };
    let via = if cause.via == cause.root {
        String::new()
    } else {
        format!(" (via {})", escape(&cause.via))
    };
    let _ = write!(out, "<div class=\"note\">cause: {root}{via}</div>");
}

/// One section per check, with its type, how many items need attention, and a card per item.
fn sections(
    out: &mut String,
    report: &Report,
    anchors: &Anchors<'_>,
    cards: &[Card<'_>],
    details: Details,
    now: Timestamp,
) {
    let mut current: Option<&str> = None;
    for card in cards {
        if current != Some(card.check) {
            if current.is_some() {
                out.push_str("</section>\n");
            }
            current = Some(card.check);
            let check_type = report
                .items
                .iter()
                .find(|i| i.name.check() == card.check)
                .map_or("", |i| i.check_type);
            let in_check: Vec<&Card> = cards.iter().filter(|c| c.check == card.check).collect();
            let bad = in_check.iter().filter(|c| c.needs_attention()).count();
            let summary = if bad == 0 {
                format!("all {} ok", in_check.len())
            } else {
                format!("{bad} of {} need attention", in_check.len())
            };
            let _ = writeln!(
                out,
                "<section><h2>{} <small>{check_type} · {summary}</small></h2>",
                escape(card.check),
            );
        }
        item_card(out, anchors, card, details, now);
    }
    if current.is_some() {
        out.push_str("</section>\n");
    }
}

/// When provider-anynines' health server was last polled, and its last good answer when that is older.
fn poll_line(out: &mut String, report: &Report, now: Timestamp) {
    let polls = report
        .items
        .iter()
        .any(|i| i.check_type == "backend-status");
    let backend = report.backend.as_ref().and_then(|b| b.last.as_ref());
    match (backend.map(|b| b.at.wall), backend) {
        (Some(poll), backend) => {
            let _ = write!(
                out,
                "<p class=\"poll\"><small>provider-anynines' health server last polled {}",
                when(now, poll)
            );
            match backend.and_then(|b| b.last_good) {
                Some(good) if good < poll => {
                    let _ = write!(out, "; last good answer {}", when(now, good));
                }
                Some(_) => {}
                None => out.push_str("; no good answer yet"),
            }
            out.push_str(".</small></p>\n");
        }
        (None, _) if polls => {
            out.push_str(
                "<p class=\"poll\"><small>provider-anynines' health server not polled yet.</small></p>\n",
            );
        }
        (None, _) => {}
    }
}

/// The maintenance window and every silence, expired ones too, so that a silence never hides anything.
fn operations(out: &mut String, report: &Report, details: Details, now: Timestamp) {
    let operating = &report.operating;
    if operating.silences.is_empty() && operating.maintenance.is_none() {
        return;
    }
    let reason = |r: &str| escape(&details.message(r));
    out.push_str("<section class=\"declared\"><h2>Declared by operators</h2><ul>\n");
    if let Some(m) = &operating.maintenance {
        let state = if m.active {
            "in force: /readyz fails on purpose"
        } else if now < m.until {
            "planned"
        } else {
            "over"
        };
        let from = m
            .from
            .map(|f| format!(" from {}", absolute(f)))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "<li>Maintenance{from} until {} ({state}): {}</li>",
            absolute(m.until),
            reason(&m.reason)
        );
    }
    for s in &operating.silences {
        let state = if s.expired { "expired" } else { "in force" };
        let _ = writeln!(
            out,
            "<li>Silence <code>{}</code> until {} ({state}): {}</li>",
            escape(&s.pattern),
            absolute(s.until),
            reason(&s.reason)
        );
    }
    out.push_str("</ul></section>\n");
}

/// The items to look at first, worst first, each linking to its card.
fn attention(
    out: &mut String,
    anchors: &Anchors<'_>,
    cards: &[Card],
    details: Details,
    now: Timestamp,
) {
    let mut bad: Vec<&Card> = cards.iter().filter(|c| c.needs_attention()).collect();
    if bad.is_empty() {
        return;
    }
    bad.sort_by_key(|c| std::cmp::Reverse(c.worst().severity()));
    let _ = write!(
        out,
        "<section class=\"attention\"><h2>Needs attention ({})</h2><ul>",
        bad.len()
    );
    for c in bad {
        let s = c.status.as_str();
        let _ = write!(
            out,
            "<li><a href=\"#{}\"><span class=\"s {s}\">{s}</span> <strong>{}/{}</strong></a> <small>since {}</small>",
            c.anchor,
            escape(c.check),
            escape(c.short),
            ago(now, c.since),
        );
        if let Some(shown) = c.shown() {
            let _ = write!(
                out,
                "<div class=\"note\">{}</div>",
                escape(&details.message(shown))
            );
        }
        if let Some(cause) = c.cause {
            cause_note(out, anchors, cause);
        }
        endpoints_line(out, c);
        out.push_str("</li>");
    }
    out.push_str("</ul></section>\n");
}

/// How each endpoint counts the item: `/readyz: fail  /healthz: warn`.
fn endpoints_line(out: &mut String, card: &Card) {
    out.push_str("<div class=\"eps\">");
    for e in [Endpoint::Readyz, Endpoint::Healthz] {
        let (class, word) = match card.counted[e.index()] {
            Some(c) => (c.status.as_str(), c.status.as_str()),
            None => ("none", "not counted"),
        };
        let _ = write!(
            out,
            "<span class=\"ep\">/{}: <i class=\"{class}\">{word}</i></span>",
            e.as_str()
        );
    }
    out.push_str("</div>");
}

fn item_card(
    out: &mut String,
    anchors: &Anchors<'_>,
    card: &Card,
    details: Details,
    now: Timestamp,
) {
    let s = card.status.as_str();
    let _ = write!(
        out,
        "<div class=\"item {s}\" id=\"{}\"><div class=\"row\"><span class=\"name\">{}</span>\
<span class=\"s {s}\">{s}</span></div>",
        card.anchor,
        escape(card.short)
    );
    if let Some(shown) = card
        .shown()
        .filter(|_| details == Details::Shown || card.status != Status::Pass)
    {
        let _ = write!(
            out,
            "<div class=\"msg\">{}</div>",
            escape(&details.message(shown))
        );
    }
    if let Some(cause) = card.cause {
        cause_note(out, anchors, cause);
    }
    if card.needs_attention() {
        endpoints_line(out, card);
        // Why an endpoint counts it differently (flap damping, warn_only, require): the policy's note.
        if details == Details::Shown {
            for e in [Endpoint::Readyz, Endpoint::Healthz] {
                if let Some(c) = card.counted[e.index()] {
                    // The policy's words (`failing for 3s, counts as failed after 30s`, `(1 of 2 pass,
                    // 1 required)`), or the endpoint's own message when it differs from the item's.
                    let note = c.notes.text().or_else(|| {
                        (c.message != card.message && !c.message.is_empty())
                            .then(|| c.message.clone())
                    });
                    if let Some(note) = note {
                        let _ = write!(
                            out,
                            "<div class=\"note\">/{}: {}</div>",
                            e.as_str(),
                            escape(&details.message(&note))
                        );
                    }
                }
            }
        }
    }
    let _ = writeln!(
        out,
        "<small>{s} since {}</small></div>",
        when(now, card.since),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_everything_that_could_become_markup() {
        assert_eq!(
            escape("<a href=\"x\" title='y'>&</a>"),
            "&lt;a href=&quot;x&quot; title=&#39;y&#39;&gt;&amp;&lt;/a&gt;"
        );
    }

    #[test]
    fn short_durations_read_well() {
        assert_eq!(short_duration(0), "just now");
        assert_eq!(short_duration(42), "42s");
        assert_eq!(short_duration(192), "3m 12s");
        assert_eq!(short_duration(7500), "2h 5m");
        assert_eq!(short_duration(3 * 86_400 + 4 * 3600 + 5), "3d 4h");
    }
}
