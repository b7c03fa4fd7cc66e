//! Status churn and how long each change takes to show.
//!
//! A change is one merge patch of a resource's `/status` (ready → `Synced=False ReconcileError`, or back),
//! sent at a fixed rate; it is timestamped just before its request is sent (monotonic clock), so the figure
//! includes the API server's write, etcd and the watch stream — the same path for every tool. A phase first
//! breaks a set of ready resources, then heals the same set.
//!
//! What shows a change: klutch-health counts resources per kind and state, so during a break phase the m-th
//! change of a kind is visible once that kind's ready count is m below where it stood when the phase began
//! (counts fall one by one; two changes of one kind applied out of order are told apart only by their count,
//! which is what the answer says). kube-state-metrics has one series per object, so a change is visible once
//! that object's `Synced` series has the new value. Either way a change counts as visible when a client
//! polling back to back first *holds* an answer that shows it (the time its response ended), so a slow answer
//! costs its full length.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// One change as sent: its kind (an index into the kinds), its object and when its request went out.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sent {
    pub kind: usize,
    pub object: usize,
    pub at: Instant,
}

/// Per-kind counts a poll of klutch-health saw, with when its answer ended.
#[derive(Debug, Clone, PartialEq)]
pub struct CountsSeen {
    pub at: Instant,
    /// Ready resources per kind.
    pub ready: Vec<u64>,
}

/// When each change first showed in klutch-health's counts (`None`: never within the phase). `base` is the
/// ready count per kind before the phase's first change; `broken`: ready counts fall (else they rise).
pub fn visible_in_counts(
    sent: &[Sent],
    seen: &[CountsSeen],
    base: &[u64],
    broken: bool,
) -> Vec<Option<Duration>> {
    let mut nth = vec![0u64; base.len()];
    sent.iter()
        .map(|s| {
            nth[s.kind] += 1;
            let m = nth[s.kind];
            let shows = |ready: u64| {
                if broken {
                    ready + m <= base[s.kind]
                } else {
                    ready >= base[s.kind] + m
                }
            };
            seen.iter()
                .find(|c| c.at >= s.at && c.ready.get(s.kind).is_some_and(|&r| shows(r)))
                .map(|c| c.at - s.at)
        })
        .collect()
}

/// One scrape of kube-state-metrics: when its answer ended, and the `Synced` value of each watched object.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesSeen {
    pub at: Instant,
    pub synced: HashMap<usize, f64>,
}

/// When each change first showed in a per-object series: the object's `Synced` is 0 once broken, 1 once healed.
pub fn visible_in_series(
    sent: &[Sent],
    seen: &[SeriesSeen],
    broken: bool,
) -> Vec<Option<Duration>> {
    let want = if broken { 0.0 } else { 1.0 };
    sent.iter()
        .map(|s| {
            seen.iter()
                .find(|c| c.at >= s.at && c.synced.get(&s.object) == Some(&want))
                .map(|c| c.at - s.at)
        })
        .collect()
}

/// When each change arrived on a bare watch (`arrived[object]`, see `seed::watch_floor`), from its send.
pub fn arrived(sent: &[Sent], arrived: &[Option<Instant>]) -> Vec<Option<Duration>> {
    sent.iter()
        .map(|s| {
            arrived
                .get(s.object)
                .copied()
                .flatten()
                .map(|at| at.saturating_duration_since(s.at))
        })
        .collect()
}

/// Latencies in milliseconds, and how many never showed.
pub fn in_ms(latencies: &[Option<Duration>]) -> (Vec<f64>, usize) {
    let shown: Vec<f64> = latencies
        .iter()
        .flatten()
        .map(|d| d.as_secs_f64() * 1000.0)
        .collect();
    let missing = latencies.len() - shown.len();
    (shown, missing)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(t0: Instant, n: u64) -> Instant {
        t0 + Duration::from_millis(n)
    }

    #[test]
    fn the_mth_change_of_a_kind_shows_when_its_count_has_moved_m_times() {
        let t0 = Instant::now();
        let sent = [
            Sent {
                kind: 0,
                object: 10,
                at: ms(t0, 0),
            },
            Sent {
                kind: 1,
                object: 20,
                at: ms(t0, 10),
            },
            Sent {
                kind: 0,
                object: 11,
                at: ms(t0, 20),
            },
        ];
        let seen = [
            CountsSeen {
                at: ms(t0, 1),
                ready: vec![100, 50],
            },
            CountsSeen {
                at: ms(t0, 4),
                ready: vec![99, 50],
            },
            CountsSeen {
                at: ms(t0, 30),
                ready: vec![99, 49],
            },
            CountsSeen {
                at: ms(t0, 33),
                ready: vec![98, 49],
            },
        ];
        let got = visible_in_counts(&sent, &seen, &[100, 50], true);
        assert_eq!(
            got,
            vec![
                Some(Duration::from_millis(4)),
                Some(Duration::from_millis(20)),
                Some(Duration::from_millis(13))
            ]
        );
        // Healing: counts rise from the base; a change that never shows is None.
        let healed = [
            CountsSeen {
                at: ms(t0, 5),
                ready: vec![99, 50],
            },
            CountsSeen {
                at: ms(t0, 40),
                ready: vec![99, 51],
            },
        ];
        let got = visible_in_counts(&sent, &healed, &[98, 49], false);
        assert_eq!(got[0], Some(Duration::from_millis(5)));
        assert_eq!(got[1], Some(Duration::from_millis(30)));
        assert_eq!(got[2], None, "kind 0 rose once only");
    }

    #[test]
    fn an_answer_from_before_a_change_never_shows_it() {
        let t0 = Instant::now();
        let sent = [Sent {
            kind: 0,
            object: 7,
            at: ms(t0, 10),
        }];
        // Already below the base before the change was sent (another change): not this one's answer.
        let seen = [
            CountsSeen {
                at: ms(t0, 5),
                ready: vec![9],
            },
            CountsSeen {
                at: ms(t0, 12),
                ready: vec![9],
            },
        ];
        assert_eq!(
            visible_in_counts(&sent, &seen, &[10], true),
            vec![Some(Duration::from_millis(2))]
        );
        let scrapes = [
            SeriesSeen {
                at: ms(t0, 8),
                synced: HashMap::from([(7, 0.0)]),
            },
            SeriesSeen {
                at: ms(t0, 900),
                synced: HashMap::from([(7, 1.0)]),
            },
            SeriesSeen {
                at: ms(t0, 1800),
                synced: HashMap::from([(7, 0.0)]),
            },
        ];
        assert_eq!(
            visible_in_series(&sent, &scrapes, true),
            vec![Some(Duration::from_millis(1790))]
        );
        assert_eq!(
            visible_in_series(&sent, &scrapes, false),
            vec![Some(Duration::from_millis(890))]
        );
        let on_watch = arrived(
            &sent,
            &[None, None, None, None, None, None, None, Some(ms(t0, 13))],
        );
        assert_eq!(on_watch, vec![Some(Duration::from_millis(3))]);
        assert_eq!(arrived(&sent, &[]), vec![None], "never arrived");
        let (shown, missing) = in_ms(&[Some(Duration::from_micros(1500)), None]);
        assert_eq!((shown, missing), (vec![1.5], 1));
    }
}
