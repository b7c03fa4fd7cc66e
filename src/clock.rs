//! Two clocks, each for what it is good at. Durations that klutch-health measures itself (flap damping,
//! heartbeat deadlines, a broken watch's age, Lease expiry, `Age`) run on the monotonic clock
//! (`tokio::time::Instant`): a wall clock stepped back an hour must not make a two-second failure count as an
//! hour-long one, and tests can pause it. Timestamps from outside (`lastCheckTime`, `until`, `from`) are wall
//! clock and are compared with the wall clock. A [`Moment`] carries both, read together.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
pub use tokio::time::Instant;

/// A wall time that differs from the monotonic clock's account by more than this is a step of the wall
/// clock (NTP slews both clocks alike; only a step separates them).
pub const STEP: Duration = Duration::from_secs(1);

/// As far as a deadline may lie ahead: a saturated "never".
const FAR: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// One moment on both clocks, ordered by the monotonic one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Moment {
    /// For durations: never steps.
    pub mono: Instant,
    /// For people and for timestamps from outside.
    pub wall: Timestamp,
}

impl Moment {
    pub fn now() -> Moment {
        Moment {
            mono: Instant::now(),
            wall: Timestamp::now(),
        }
    }

    /// A hand-set moment whose monotonic instant follows `wall` exactly, as if the wall clock never
    /// stepped: for tests and tables that name times by the wall clock. Moments made this way compare
    /// with each other, not with [`Moment::now`].
    pub fn from_wall(wall: Timestamp) -> Moment {
        static ANCHOR: std::sync::LazyLock<Instant> = std::sync::LazyLock::new(Instant::now);
        Moment {
            mono: shift(*ANCHOR, wall.duration_since(Timestamp::UNIX_EPOCH)),
            wall,
        }
    }

    /// How long after `earlier` this is, on the monotonic clock (zero when `earlier` is later).
    pub fn since(self, earlier: Moment) -> Duration {
        self.mono.saturating_duration_since(earlier.mono)
    }

    /// `d` later on both clocks; saturating far in the future rather than overflowing.
    pub fn after(self, d: Duration) -> Moment {
        let signed = SignedDuration::try_from(d.min(FAR)).unwrap_or(SignedDuration::MAX);
        Moment {
            mono: shift(self.mono, signed),
            wall: self.wall.saturating_add(signed).unwrap_or(Timestamp::MAX),
        }
    }

    /// The same moment, its monotonic instant moved to `mono` and its wall time with it.
    pub fn at(self, mono: Instant) -> Moment {
        Moment {
            mono,
            wall: self
                .wall
                .saturating_add(signed_between(self.mono, mono))
                .unwrap_or(self.wall),
        }
    }

    /// When the wall clock, as it reads at this moment, will show (or showed) `t`: how a timestamp from
    /// outside becomes an instant to sleep until.
    pub fn instant_of(self, t: Timestamp) -> Instant {
        shift(self.mono, t.duration_since(self.wall))
    }

    /// This moment as the wall clock of `now` names it: unchanged while the wall clock kept pace with the
    /// monotonic one, else its wall time derived from `now` (the wall clock stepped in between), so that
    /// times shown together never contradict the durations between them.
    pub fn seen_from(self, now: Moment) -> Moment {
        let derived = now.at(self.mono);
        let drift = derived.wall.duration_since(self.wall).unsigned_abs();
        if drift > STEP {
            derived
        } else {
            self
        }
    }
}

/// `d` after `i`, saturating (a hundred years ahead at most) instead of overflowing: for deadlines from
/// configured durations, which may be as long as a duration can be.
pub fn later(i: Instant, d: Duration) -> Instant {
    shift(
        i,
        SignedDuration::try_from(d.min(FAR)).unwrap_or(SignedDuration::MAX),
    )
}

/// `i` moved by `d`, either way; saturating (a hundred years) instead of overflowing.
fn shift(i: Instant, d: SignedDuration) -> Instant {
    let by = d.unsigned_abs().min(FAR);
    let moved = if d.is_negative() {
        i.checked_sub(by)
    } else {
        i.checked_add(by)
    };
    moved.unwrap_or(i)
}

/// `to - from` as a signed duration.
fn signed_between(from: Instant, to: Instant) -> SignedDuration {
    let forward = to.saturating_duration_since(from);
    let d = if forward.is_zero() {
        from.saturating_duration_since(to)
    } else {
        forward
    };
    let d = SignedDuration::try_from(d).unwrap_or(SignedDuration::MAX);
    if forward.is_zero() {
        -d
    } else {
        d
    }
}

/// When something goes out of date by itself: on the wall clock for a deadline that a timestamp from outside
/// sets (a ProviderConfig's `lastCheckTime` plus `check_stale_after`), on the monotonic clock for one that
/// klutch-health measures itself (a heartbeat seen, a watch broken).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    Wall(Timestamp),
    Mono(Instant),
}

impl Due {
    /// The deadline `d` after `m`, on the monotonic clock.
    pub fn after(m: Moment, d: Duration) -> Due {
        Due::Mono(m.after(d).mono)
    }

    /// Whether it has come at `now`.
    pub fn passed(self, now: Moment) -> bool {
        match self {
            Due::Wall(t) => now.wall >= t,
            Due::Mono(i) => now.mono >= i,
        }
    }

    /// When it comes, on the monotonic clock as of `now`.
    pub fn instant(self, now: Moment) -> Instant {
        match self {
            Due::Wall(t) => now.instant_of(t),
            Due::Mono(i) => i,
        }
    }

    /// When it comes, on the wall clock as of `now`: for messages.
    pub fn wall(self, now: Moment) -> Timestamp {
        match self {
            Due::Wall(t) => t,
            Due::Mono(i) => now.at(i).wall,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).expect("time")
    }

    #[test]
    fn a_wall_clock_step_is_seen_and_durations_ignore_it() {
        let start = Moment::from_wall(t(0));
        // One second later on the monotonic clock, while the wall clock went back an hour.
        let later = Moment {
            mono: start.mono + Duration::from_secs(1),
            wall: t(1 - 3600),
        };
        assert_eq!(later.since(start), Duration::from_secs(1));
        assert_eq!(start.since(later), Duration::ZERO);
        let seen = start.seen_from(later);
        assert_eq!(seen.mono, start.mono);
        assert_eq!(
            seen.wall,
            t(-3600),
            "one second before the stepped clock's now"
        );
        // Without a step, nothing is rewritten.
        let paced = Moment::from_wall(t(5));
        assert_eq!(start.seen_from(paced), start);
    }

    #[test]
    fn deadlines_saturate_instead_of_overflowing() {
        let now = Moment::from_wall(t(0));
        let never = now.after(Duration::MAX);
        assert!(never.mono > now.mono && never.wall > now.wall);
        assert!(!Due::after(now, Duration::MAX).passed(now.after(Duration::from_secs(1))));
        // A wall time from outside, absurdly far either way, becomes an instant without a panic.
        for far in [Timestamp::MIN, Timestamp::MAX] {
            let _ = now.instant_of(far);
            let _ = Due::Wall(far).instant(now);
        }
        assert!(Due::Wall(Timestamp::MIN).passed(now));
        assert!(!Due::Wall(Timestamp::MAX).passed(now));
    }

    #[test]
    fn hand_set_moments_keep_both_clocks_in_step() {
        let (a, b) = (Moment::from_wall(t(0)), Moment::from_wall(t(90)));
        assert_eq!(b.since(a), Duration::from_secs(90));
        assert_eq!(a.after(Duration::from_secs(90)), b);
        assert_eq!(a.at(b.mono), b);
        assert_eq!(Due::Wall(t(90)).instant(a), b.mono);
        assert_eq!(Due::Mono(b.mono).wall(a), t(90));
    }
}
