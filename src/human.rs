//! Text for people, shared by every module that writes a message: durations and error chains. Kept apart
//! so that no module has to reach into another's internals just to word a message.

use std::time::Duration;

/// A duration for people: whole seconds (or milliseconds below one second).
pub(crate) fn duration(d: Duration) -> String {
    let d = if d >= Duration::from_secs(1) {
        Duration::from_secs(d.as_secs())
    } else {
        Duration::from_millis(d.as_millis() as u64)
    };
    humantime::format_duration(d).to_string()
}

/// An error and its causes on one line: hyper's top-level errors alone say little ("client error (Connect)").
pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = s.source();
    }
    parts.join(": ")
}

/// A point in time for messages, to the second: `2026-11-25T16:02:11Z`.
pub(crate) fn timestamp(t: jiff::Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}
