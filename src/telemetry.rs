//! Logging through `tracing`: human-readable lines by default, JSON lines with `--log-format json`,
//! filtered by `RUST_LOG` (default `info`; kube-runtime's own watcher warnings only when `RUST_LOG` names `kube_runtime`). Logs go to standard error; standard output is for command output.

use std::collections::HashMap;
use std::fmt;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use tracing::field::{Field, Visit};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::FormatFields;
use tracing_subscriber::EnvFilter;

use crate::verdict::report::{Item, Report, Status};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

pub fn init(format: LogFormat) {
    let asked = std::env::var(EnvFilter::DEFAULT_ENV).unwrap_or_default();
    let mut filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,kube_client::client::builder=off"));
    // kube-runtime's watcher logs each failure itself, unlimited and as a Debug dump of the API's Status; the
    // watch task logs the same failure in words and rate-limited (kubernetes::watch). Only a RUST_LOG that names
    // kube_runtime brings those lines back.
    if !asked.contains("kube_runtime") {
        if let Ok(quiet) = "kube_runtime::watcher=error".parse() {
            filter = filter.add_directive(quiet);
        }
    }
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
        while let Some(at) =
            rest.find(|c: char| c.is_control() || matches!(c, '\u{2028}' | '\u{2029}'))
        {
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
    let mut groups: Vec<(ChangeKey, Vec<&Item>)> = Vec::new();
    let mut index: HashMap<ChangeKey, usize> = HashMap::new();
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
        tracing::warn!(
            check,
            items = n,
            "{check}: {n} more items changed status; see /readyz?verbose"
        );
    }
}

/// Check, old status, new status and message: changes alike in all four are one line.
type ChangeKey<'a> = (&'a str, &'static str, Status, &'a str);

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
pub(crate) mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    use crate::verdict::report::{Endpoint, EndpointReport, ItemName};

    /// What a test's logs wrote, in the text format.
    #[derive(Clone, Default)]
    pub(crate) struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("buffer").extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        /// Captures this thread's logs (a current-thread test's spawned tasks included) until the guard drops.
        pub(crate) fn start() -> (Captured, tracing::subscriber::DefaultGuard) {
            let buffer = Captured::default();
            let writer = buffer.clone();
            let subscriber = tracing_subscriber::fmt()
                .fmt_fields(EscapedFields)
                .with_writer(move || writer.clone())
                .with_ansi(false)
                .finish();
            (buffer, tracing::subscriber::set_default(subscriber))
        }

        pub(crate) fn text(&self) -> String {
            String::from_utf8_lossy(&self.0.lock().expect("buffer")).into_owned()
        }
    }

    /// Everything logged while `f` runs, in the text format.
    fn text_logs(f: impl FnOnce()) -> String {
        let (logs, guard) = Captured::start();
        f();
        drop(guard);
        logs.text()
    }

    #[test]
    fn text_logs_escape_control_characters_in_the_message_and_every_field() {
        let outside = "a\nINFO forged\r\u{1b}[31m\u{2028}\tz";
        let error = std::io::Error::other(outside);
        let logs = text_logs(|| {
            tracing::warn!(debug = ?outside, display = %outside, string = outside, %error, "m {outside}");
        });
        assert_eq!(logs.lines().count(), 1, "{logs}");
        let escaped = "a\\nINFO forged\\r\\u{1b}[31m\\u{2028}\\tz";
        assert!(logs.contains(&format!(" m {escaped} ")), "{logs}");
        assert!(logs.contains(&format!(" display={escaped} ")), "{logs}");
        assert!(logs.contains(&format!(" error={escaped}")), "{logs}");
        // Debug and string fields keep their quotes, as tracing-subscriber writes them.
        assert!(
            logs.contains(" string=\"a\\nINFO forged\\r\\u{1b}[31m\\u{2028}\\tz\""),
            "{logs}"
        );
        assert!(logs.contains(" debug=\"a\\nINFO"), "{logs}");
    }

    fn report(items: Vec<(String, Status, String)>) -> Report {
        let now = jiff::Timestamp::UNIX_EPOCH;
        let items = items
            .into_iter()
            .map(|(name, status, message)| Item {
                check_type: "backend-status",
                name: ItemName::new("b", &name),
                status,
                message,
                observed: now,
                since: now,
                detail: None,
                counts: None,
                crossplane: None,
                cause: None,
            })
            .collect();
        let empty = |endpoint| EndpointReport {
            endpoint,
            items: Vec::new(),
        };
        Report {
            evaluated: crate::clock::Moment::from_wall(now),
            items,
            healthz: empty(Endpoint::Healthz),
            readyz: empty(Endpoint::Readyz),
            backend: None,
            operating: Default::default(),
            causes: Default::default(),
        }
    }

    #[test]
    fn status_changes_of_many_items_are_grouped_and_capped_per_check() {
        let same = report(
            (0..500)
                .map(|i| (format!("pc-{i:03}"), Status::Fail, "degraded".to_string()))
                .collect(),
        );
        let logs = text_logs(|| log_transitions(None, &same));
        assert_eq!(logs.lines().count(), 1, "{logs}");
        assert!(
            logs.contains(
                "b: 500 items none -> fail: degraded (pc-000, pc-001, pc-002 and 497 more)"
            ),
            "{logs}"
        );
        // 500 different messages: at most MAX_CHANGE_LINES lines, then one that counts the rest.
        let different = report(
            (0..500)
                .map(|i| (format!("pc-{i:03}"), Status::Warn, format!("value {i}")))
                .collect(),
        );
        let logs = text_logs(|| log_transitions(Some(&same), &different));
        assert_eq!(logs.lines().count(), MAX_CHANGE_LINES + 1, "{logs}");
        assert!(
            logs.contains("b: 480 more items changed status; see /readyz?verbose"),
            "{logs}"
        );
        // One item: one line naming it, as always.
        let one = report(vec![("pc-000".into(), Status::Pass, "ok".into())]);
        let logs = text_logs(|| log_transitions(None, &one));
        assert!(
            logs.contains(
                "b/pc-000: none -> pass: ok check=\"b\" item=\"pc-000\" old=\"none\" new=\"pass\""
            ),
            "{logs}"
        );
    }

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
