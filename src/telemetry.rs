//! Logging through `tracing`: human-readable lines by default, JSON lines with `--log-format json`,
//! filtered by `RUST_LOG` (default `info`). Logs go to standard error; standard output is for command output.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use tracing_subscriber::EnvFilter;

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
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
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
