//! The one clock of a gestore. Every PEC transaction takes its time value once from here and reuses
//! it in the log, the daticert, the text and the `Date:` header (RFC 6109 §4.1; DM art. 9). Tests and
//! the conformance runner use a [`ManualClock`] and advance it to reach the 12h/24h deadlines
//! (RFC 6109 §3.1.6) in milliseconds, with no sleeps.

use chrono::{DateTime, Duration, Utc};
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// A source of the current time, with a way to be told when time jumps (so timer workers recompute
/// their next deadline instead of sleeping through a manual advance).
pub trait Clock: Send + Sync + 'static {
    /// The current instant, UTC.
    fn now(&self) -> DateTime<Utc>;
    /// A receiver that changes whenever the clock is moved by hand. The system clock never moves by
    /// hand, so its receiver never changes.
    fn jumps(&self) -> watch::Receiver<u64>;
}

/// The real clock (UTC from the operating system, which keeps it within 1 s of UTC: DM art. 9).
pub struct SystemClock {
    never: watch::Sender<u64>,
}

impl SystemClock {
    /// A system clock.
    pub fn new() -> Arc<SystemClock> {
        Arc::new(SystemClock {
            never: watch::channel(0).0,
        })
    }
}

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
    fn jumps(&self) -> watch::Receiver<u64> {
        self.never.subscribe()
    }
}

/// A clock that stands still until told to move: real time still passes underneath, so that the
/// ordering of events within a scenario stays natural, but [`ManualClock::advance`] adds an offset.
pub struct ManualClock {
    offset: Mutex<Duration>,
    tick: watch::Sender<u64>,
}

impl ManualClock {
    /// A clock that starts at the real time.
    pub fn new() -> Arc<ManualClock> {
        Arc::new(ManualClock {
            offset: Mutex::new(Duration::zero()),
            tick: watch::channel(0).0,
        })
    }

    /// A clock that starts at `start`.
    pub fn starting_at(start: DateTime<Utc>) -> Arc<ManualClock> {
        let c = ManualClock::new();
        c.set(start);
        c
    }

    /// Moves the clock forward by `by` and wakes every timer worker.
    pub fn advance(&self, by: Duration) {
        if let Ok(mut o) = self.offset.lock() {
            *o += by;
        }
        self.tick.send_modify(|n| *n += 1);
    }

    /// Sets the clock to `at` and wakes every timer worker.
    pub fn set(&self, at: DateTime<Utc>) {
        if let Ok(mut o) = self.offset.lock() {
            *o = at - Utc::now();
        }
        self.tick.send_modify(|n| *n += 1);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        let offset = self
            .offset
            .lock()
            .map(|o| *o)
            .unwrap_or_else(|p| *p.into_inner());
        Utc::now() + offset
    }
    fn jumps(&self) -> watch::Receiver<u64> {
        self.tick.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_advances_and_signals() {
        let c = ManualClock::new();
        let mut rx = c.jumps();
        let before = c.now();
        c.advance(Duration::hours(12));
        assert!(rx.has_changed().unwrap());
        let after = c.now();
        assert!(after - before >= Duration::hours(12));
        assert!(after - before < Duration::hours(12) + Duration::seconds(5));
        let _ = rx.borrow_and_update();
        let target = DateTime::parse_from_rfc3339("2025-03-30T00:30:00Z")
            .unwrap()
            .to_utc();
        c.set(target);
        assert!(rx.has_changed().unwrap());
        assert!((c.now() - target).num_seconds().abs() < 5);
    }
}
