//! Logging through `tracing`: human-readable lines by default, JSON lines with `--log-format json`,
//! filtered by `RUST_LOG` (default `info`). Logs go to standard error; standard output is for command output.

use std::collections::HashMap;
use std::fmt;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use tracing::field::{Field, Visit};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::FormatFields;
use tracing_subscriber::EnvFilter;

use crate::report::{Item, Report, Status};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,kube_client::client::builder=off"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let _ = match format {
        LogFormat::Text => builder.fmt_fields(EscapedFields).try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// The text format's fields, with every value escaped: a message or field from outside (a ProviderConfig's
/// `lastMessage`, a backend key) can never start a new log line. tracing-subscriber's own formatter escapes
/// ANSI sequences only, and writes messages and `%` fields raw. JSON lines need none of this: JSON escapes.
struct EscapedFields;

impl<'w> FormatFields<'w> for EscapedFields {
    fn format_fields<R: RecordFields>(&self, mut writer: Writer<'w>, fields: R) -> fmt::Result {
        let ansi = writer.has_ansi_escapes();
        let mut visitor = EscapingVisitor {
            writer: &mut writer,
            ansi,
            empty: true,
            result: Ok(()),
        };
        fields.record(&mut visitor);
        visitor.result
    }
}

/// Writes `message` first, then ` name=value` pairs (strings quoted, as tracing-subscriber does), escaped.
struct EscapingVisitor<'a, 'w> {
    writer: &'a mut Writer<'w>,
    ansi: bool,
    empty: bool,
    result: fmt::Result,
}

impl EscapingVisitor<'_, '_> {
    fn write(&mut self, name: &str, value: fmt::Arguments<'_>) {
        if self.result.is_err() || name.starts_with("log.") {
            return;
        }
        self.result = self.write_field(name, value);
    }

    fn write_field(&mut self, name: &str, value: fmt::Arguments<'_>) -> fmt::Result {
        if !self.empty {
            self.writer.write_char(' ')?;
        }
        self.empty = false;
        if name != "message" {
            let name = name.strip_prefix("r#").unwrap_or(name);
            if self.ansi {
                write!(self.writer, "\x1b[3m{name}\x1b[0m\x1b[2m=\x1b[0m")?;
            } else {
                write!(self.writer, "{name}=")?;
            }
        }
        let mut out = Escaping(&mut *self.writer);
        fmt::write(&mut out, value)
    }
}

impl Visit for EscapingVisitor<'_, '_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.write(field.name(), format_args!("{value}"));
        } else {
            self.write(field.name(), format_args!("{value:?}"));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.write(field.name(), format_args!("{value:?}"));
    }
}

/// A writer that escapes control characters (and the Unicode line and paragraph separators) on the way.
struct Escaping<'a, W: fmt::Write>(&'a mut W);

impl<W: fmt::Write> fmt::Write for Escaping<'_, W> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        let mut rest = text;
        while let Some(at) = rest.find(|c: char| c.is_control() || matches!(c, '\u{2028}' | '\u{2029}')) {
            self.0.write_str(&rest[..at])?;
            let c = rest[at..].chars().next().unwrap_or_default();
            match c {
                '\n' => self.0.write_str("\\n")?,
                '\r' => self.0.write_str("\\r")?,
                '\t' => self.0.write_str("\\t")?,
                c => write!(self.0, "\\u{{{:x}}}", u32::from(c))?,
            }
            rest = &rest[at + c.len_utf8()..];
        }
        self.0.write_str(rest)
    }
}

/// Logs every change of an item's observed status once: at info when it passes, at warn otherwise. Changes
/// of one check that say the same thing (a failed poll turning 10 000 items `unknown`, a first poll of 10 000
/// `degraded` keys) are one line naming the first few items, and a check writes at most
/// [`MAX_CHANGE_LINES`] lines per evaluation: the log line count never grows with the number of items.
pub(crate) fn log_transitions(previous: Option<&Report>, report: &Report) {
    let before: HashMap<&str, Status> = previous
        .map(|r| r.items.iter().map(|i| (&*i.name, i.status)).collect())
        .unwrap_or_default();
    // (check, old, new, message) → the items that changed so, in report order.
    let mut groups: Vec<((&str, &'static str, Status, &str), Vec<&Item>)> = Vec::new();
    let mut index: HashMap<(&str, &'static str, Status, &str), usize> = HashMap::new();
    for item in &report.items {
        let old = before.get(&*item.name).copied();
        if old == Some(item.status) {
            continue;
        }
        let key = (
            item.name.check(),
            old.map_or("none", Status::as_str),
            item.status,
            item.message.as_str(),
        );
        let at = *index.entry(key).or_insert_with(|| {
            groups.push((key, Vec::new()));
            groups.len() - 1
        });
        groups[at].1.push(item);
    }
    let mut lines: HashMap<&str, usize> = HashMap::new();
    let mut left_out: Vec<(&str, usize)> = Vec::new();
    for ((check, old, status, message), items) in &groups {
        let written = lines.entry(check).or_default();
        if *written >= MAX_CHANGE_LINES {
            match left_out.iter_mut().find(|(c, _)| c == check) {
                Some((_, n)) => *n += items.len(),
                None => left_out.push((check, items.len())),
            }
            continue;
        }
        *written += 1;
        let change = Change {
            check,
            old,
            new: *status,
        };
        match items.as_slice() {
            [item] => change.log(
                Some(item.name.item()),
                None,
                format_args!("{}: {old} -> {status}: {message}", item.name),
            ),
            many => {
                let shown: Vec<&str> = many.iter().take(3).map(|i| i.name.item()).collect();
                let more = match many.len() - shown.len() {
                    0 => String::new(),
                    n => format!(" and {n} more"),
                };
                change.log(
                    None,
                    Some(many.len()),
                    format_args!(
                        "{check}: {} items {old} -> {status}: {message} ({}{more})",
                        many.len(),
                        shown.join(", ")
                    ),
                );
            }
        }
    }
    for (check, n) in left_out {
        tracing::warn!(check, items = n, "{check}: {n} more items changed status; see /readyz?verbose");
    }
}

/// At most this many status-change lines per check and evaluation.
pub(crate) const MAX_CHANGE_LINES: usize = 20;

/// What one status-change line says.
struct Change<'a> {
    check: &'a str,
    old: &'static str,
    new: Status,
}

impl Change<'_> {
    /// At info when it passes, at warn otherwise; `item` for one item, `items` for a group.
    fn log(&self, item: Option<&str>, items: Option<usize>, message: std::fmt::Arguments<'_>) {
        let (check, old, new) = (self.check, self.old, self.new.as_str());
        if self.new == Status::Pass {
            tracing::info!(check, item, items, old, new, "{message}");
        } else {
            tracing::warn!(check, item, items, old, new, "{message}");
        }
    }
}

/// How often a repeating error is logged again while it keeps happening.
pub(crate) const REPEAT_EVERY: Duration = Duration::from_secs(60);

/// Rate-limits the log lines of one repeating error (a dead upstream, a broken watch), so it cannot flood
/// the log: the first occurrence is logged, then at most one line every [`REPEAT_EVERY`], each saying how
/// many occurrences were left out since the last line. Reset it (a new `default()`) when the error stops.
#[derive(Debug, Default)]
pub(crate) struct LogLimiter {
    last: Option<Instant>,
    suppressed: u64,
}

impl LogLimiter {
    /// Counts one occurrence now; `Some(left_out)` when it should be logged, with how many occurrences
    /// were not logged since the previous line.
    pub(crate) fn allow(&mut self) -> Option<u64> {
        self.allow_at(Instant::now())
    }

    pub(crate) fn allow_at(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(last) if now.saturating_duration_since(last) < REPEAT_EVERY => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_then_once_a_minute_with_the_count_left_out() {
        let start = Instant::now();
        let at = |s: u64| start + Duration::from_secs(s);
        let mut l = LogLimiter::default();
        assert_eq!(l.allow_at(at(0)), Some(0));
        for s in 1..60 {
            assert_eq!(l.allow_at(at(s)), None, "second {s}");
        }
        assert_eq!(l.allow_at(at(60)), Some(59));
        assert_eq!(l.allow_at(at(61)), None);
        assert_eq!(l.allow_at(at(200)), Some(1));
        // Reset when the error stops: the next one is logged at once.
        let mut l = LogLimiter::default();
        assert_eq!(l.allow_at(at(201)), Some(0));
    }
}
