//! The history as timelines on the status page: one inline SVG bar per endpoint and per item, coloured by
//! status through the page's CSS variables (so it follows dark mode), with each status's share of the time
//! since the timelines begin.

use std::collections::{HashSet, VecDeque};
use std::fmt::Write;

use super::{escape, short_duration};
use crate::clock::Moment;
use crate::render::Details;
use crate::verdict::history::{segments, shares, History, Transition};
use crate::verdict::report::{Endpoint, Report, Status};

/// Styles of the timelines, appended to the page's.
pub(crate) const STYLE: &str = "\
.timelines{margin-top:1.2rem}.tl{display:grid;grid-template-columns:minmax(8rem,14rem) 1fr;gap:.2rem .6rem;\
align-items:center;margin:.25rem 0}.tl .label{grid-row:1/3;font-weight:600;overflow-wrap:anywhere;font-size:.9rem}\
.tl svg{grid-column:2;grid-row:1;width:100%;height:1rem;display:block;border-radius:.2rem;background:var(--line)}\
.tl .share{grid-column:2;grid-row:2;font-size:.8rem;color:var(--muted)}\
.tl rect.pass{fill:var(--pass)}.tl rect.warn{fill:var(--warn)}.tl rect.fail{fill:var(--fail)}\
.tl rect.unknown{fill:var(--unknown)}.tl rect.none{fill:var(--line)}";

/// The "History" section: a timeline per endpoint, then per item of `report` (items gone stay in `/history`).
pub(crate) fn timelines(
    out: &mut String,
    history: &History,
    report: &Report,
    details: Details,
    now: Moment,
) {
    let since = history.since(now);
    let span = short_duration(now.since(since).as_secs());
    let _ = writeln!(
        out,
        "<section class=\"timelines\"><h2>History <small>since {} ({span})</small></h2>",
        since.seen_from(now).wall.strftime("%Y-%m-%d %H:%M:%S UTC")
    );
    for e in [Endpoint::Readyz, Endpoint::Healthz] {
        let label = format!("/{}", e.as_str());
        row(out, &label, history.endpoint(e), since, now, details);
    }
    let present: HashSet<&str> = report.items.iter().map(|i| i.name.as_str()).collect();
    for (name, series) in history.items() {
        if present.contains(name.as_str()) {
            row(out, name, series, since, now, details);
        }
    }
    out.push_str("</section>\n");
}

fn row(
    out: &mut String,
    label: &str,
    series: &VecDeque<Transition>,
    since: Moment,
    now: Moment,
    details: Details,
) {
    let total = now.since(since).as_secs_f64();
    let label = escape(label);
    // The share comes before the bar in the text (the grid places it below), so that the bar's tooltips
    // never run into it when the page is read as text.
    let mut shares = shares(series, since, now);
    shares.sort_by(|a, b| b.1.total_cmp(&a.1));
    let parts: Vec<String> = shares
        .into_iter()
        .map(|(s, share)| format!("{} {share:.1}%", s.map_or("not observed", Status::as_str)))
        .collect();
    let _ = write!(
        out,
        "<div class=\"tl\"><span class=\"label\">{label}</span><span class=\"share\">{}</span><svg viewBox=\"0 0 1000 10\" preserveAspectRatio=\"none\" \
role=\"img\" aria-label=\"timeline of {label}\">",
        escape(&parts.join(" · "))
    );
    if total > 0.0 {
        let message_at = |from: Moment| {
            series
                .iter()
                .rev()
                .find(|t| t.time.mono <= from.mono)
                .map(|t| t.message.as_str())
                .filter(|m| !m.is_empty())
        };
        for (status, from, to) in segments(series, since, now) {
            let x = from.since(since).as_secs_f64() / total * 1000.0;
            let width = to.since(from).as_secs_f64() / total * 1000.0;
            let class = status.map_or("none", Status::as_str);
            let mut title = format!(
                "{} from {}",
                status.map_or("not observed", Status::as_str),
                from.wall.strftime("%H:%M:%S")
            );
            if let Some(m) = status.and(message_at(from)) {
                title.push_str(": ");
                title.push_str(&details.message(m));
            }
            let _ = write!(
                out,
                "<rect class=\"{class}\" x=\"{x:.2}\" y=\"0\" width=\"{width:.2}\" height=\"10\"><title>{}</title></rect>",
                escape(&title)
            );
        }
    }
    out.push_str("</svg></div>\n");
}
