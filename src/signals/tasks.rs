//! A check's tasks: stopped together when a reload changes or removes the check, and supervised, so that a
//! task that dies (a panic nothing from outside should cause, but one did) never leaves its items frozen.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use super::Sink;
use crate::metrics::Metrics;

/// The first pause before a task that died starts again; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// A task that ran this long before it died starts again after [`FIRST_BACKOFF`].
const HELD: Duration = Duration::from_secs(300);

/// The tasks one check spawned, so that a reload can stop them: dropping the handles alone would not.
#[derive(Default)]
pub(crate) struct Tasks(pub(crate) Vec<tokio::task::AbortHandle>);

impl Tasks {
    /// Runs what `make` returns as one of the check's tasks. When it panics, the check's items turn
    /// `unknown` with the panic's words, the panic is logged and counted
    /// (`klutch_health_check_task_panics_total`), and a fresh task from `make` starts after a backoff.
    /// The first task is made before this returns, so whatever it publishes at once is published.
    pub(crate) fn supervise<F, Fut>(
        &mut self,
        check: &str,
        sink: &Sink,
        metrics: &Arc<Metrics>,
        mut make: F,
    ) where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let first = make();
        let (check, sink, metrics) = (check.to_string(), sink.clone(), metrics.clone());
        metrics.task_panics_from_zero(&check);
        self.spawn(async move {
            let mut next = Some(first);
            let mut backoff = FIRST_BACKOFF;
            loop {
                let task = next.take().unwrap_or_else(&mut make);
                let started = tokio::time::Instant::now();
                // Aborting the supervisor drops this guard, which stops the task too.
                let mut running = AbortOnDrop(tokio::spawn(task));
                let why = match (&mut running.0).await {
                    Ok(()) => return,
                    Err(e) if e.is_cancelled() => return,
                    Err(e) => panic_words(e.into_panic()),
                };
                if started.elapsed() >= HELD {
                    backoff = FIRST_BACKOFF;
                }
                metrics.task_panic(&check);
                tracing::error!(
                    check,
                    panic = %why,
                    restart_in = %crate::human::duration(backoff),
                    "a check's task panicked: its items are unknown until it runs again (please report this as a bug)"
                );
                sink.failed(
                    &check,
                    &format!(
                        "the check's task failed ({why}); restarting it in {}",
                        crate::human::duration(backoff)
                    ),
                );
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        });
    }

    pub(crate) fn spawn(&mut self, task: impl Future<Output = ()> + Send + 'static) {
        self.0.push(tokio::spawn(task).abort_handle());
    }

    pub(crate) fn stop(self) {
        for task in self.0 {
            task.abort();
        }
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What a panic said, when it said it as text.
fn panic_words(payload: Box<dyn std::any::Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(s) => *s,
        Err(payload) => payload.downcast_ref::<&str>().map_or_else(
            || "a panic without a message".to_string(),
            |s| s.to_string(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::signals::Observation;
    use crate::verdict::report::Status;

    /// A task that dies turns the check's items unknown with the reason, is logged and counted, and runs
    /// again after the backoff; aborting the check stops the task it restarted.
    #[tokio::test(start_paused = true)]
    async fn a_task_that_panics_turns_its_items_unknown_and_starts_again_after_a_backoff() {
        let (logs, _logging) = crate::telemetry::tests::Captured::start();
        let (sink, metrics) = (Sink::default(), Arc::new(Metrics::new()));
        let runs = Arc::new(AtomicUsize::new(0));
        let mut tasks = Tasks::default();
        let (s, r) = (sink.clone(), runs.clone());
        tasks.supervise("konnectors", &sink, &metrics, move || {
            let (sink, runs) = (s.clone(), r.clone());
            async move {
                let run = runs.fetch_add(1, Ordering::SeqCst);
                let now = jiff::Timestamp::now();
                sink.publish(
                    "konnectors",
                    vec![Observation::new("app-1", Status::Pass, "ok", now)],
                );
                if run == 0 {
                    panic!("overflow when multiplying duration by scalar");
                }
                std::future::pending::<()>().await;
            }
        });
        let item = |sink: &Sink| {
            sink.snapshot()
                .checks
                .get("konnectors")
                .map(|c| c[0].clone())
        };
        let deadline = tokio::time::Instant::now() + Duration::from_millis(500);
        while item(&sink).map(|o| o.status) != Some(Status::Unknown) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the items never turned unknown"
            );
            tokio::task::yield_now().await;
        }
        let failed = item(&sink).expect("published");
        assert_eq!(failed.item, "app-1", "the items keep their names");
        assert_eq!(
            failed.message,
            "the check's task failed (overflow when multiplying duration by scalar); restarting it in 1s"
        );
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        let text = metrics.encode_prometheus();
        assert!(
            text.contains("klutch_health_check_task_panics_total{check=\"konnectors\"} 1"),
            "{text}"
        );
        let logged = logs.text();
        let line = logged
            .lines()
            .find(|l| l.contains("a check's task panicked"))
            .unwrap_or_else(|| panic!("the panic is logged: {logged}"));
        for part in [
            "ERROR",
            "check=\"konnectors\"",
            "overflow when multiplying duration by scalar",
            "restart_in=1s",
        ] {
            assert!(line.contains(part), "{part} in {line}");
        }

        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert_eq!(
            runs.load(Ordering::SeqCst),
            2,
            "restarted after the backoff"
        );
        assert_eq!(item(&sink).map(|o| o.status), Some(Status::Pass));

        let restarted = tasks.0[0].clone();
        tasks.stop();
        while !restarted.is_finished() {
            tokio::task::yield_now().await;
        }
    }
}
