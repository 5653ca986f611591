//! The REST weight budget of one client address, as Binance keeps it: weight per rolling
//! window, a 429 with `Retry-After` when spent, and a 418 ban for a client that ignores it.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The per-IP weight budget (the simulator serves one client address: loopback).
#[derive(Debug)]
pub struct Limiter {
    limit: u32,
    window: Duration,
    ban: Duration,
    state: Mutex<LimitState>,
}

#[derive(Debug)]
struct LimitState {
    window_start: Instant,
    used: u32,
    /// Weight admitted since the start, every window: what the client's requests cost.
    total: u64,
    back_off_until: Option<Instant>,
    banned_until: Option<Instant>,
}

/// A refused request: status (429 or 418) and seconds until retrying is allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub retry_after: u64,
    pub used: u32,
}

impl Limiter {
    pub fn new(limit: u32, window: Duration, ban: Duration) -> Limiter {
        Limiter {
            limit,
            window,
            ban,
            state: Mutex::new(LimitState {
                window_start: Instant::now(),
                used: 0,
                total: 0,
                back_off_until: None,
                banned_until: None,
            }),
        }
    }

    /// Counts `weight` or refuses; `Ok(used weight in this window)`.
    pub fn admit(&self, weight: u32) -> Result<u32, Refusal> {
        self.admit_at(weight, Instant::now())
    }

    /// [`Limiter::admit`] at a given instant (tests step the clock instead of sleeping).
    fn admit_at(&self, weight: u32, now: Instant) -> Result<u32, Refusal> {
        let Ok(mut s) = self.state.lock() else {
            return Ok(0);
        };
        while now.duration_since(s.window_start) >= self.window {
            s.window_start += self.window;
            s.used = 0;
        }
        let secs =
            |until: Instant| until.saturating_duration_since(now).as_secs_f64().ceil() as u64;
        if let Some(until) = s.banned_until.filter(|u| *u > now) {
            return Err(Refusal {
                status: 418,
                retry_after: secs(until).max(1),
                used: s.used,
            });
        }
        if s.back_off_until.is_some_and(|u| u > now) {
            // Came back before Retry-After: Binance bans the IP.
            let until = now + self.ban;
            s.banned_until = Some(until);
            return Err(Refusal {
                status: 418,
                retry_after: secs(until).max(1),
                used: s.used,
            });
        }
        if s.used + weight > self.limit {
            let until = s.window_start + self.window;
            s.back_off_until = Some(until);
            return Err(Refusal {
                status: 429,
                retry_after: secs(until).max(1),
                used: s.used,
            });
        }
        s.used += weight;
        s.total += u64::from(weight);
        Ok(s.used)
    }

    pub fn used(&self) -> u32 {
        self.state.lock().map(|s| s.used).unwrap_or(0)
    }

    /// Weight admitted since the start (refused requests cost nothing).
    pub fn total(&self) -> u64 {
        self.state.lock().map(|s| s.total).unwrap_or(0)
    }

    pub fn limit(&self) -> u32 {
        self.limit
    }

    pub fn window(&self) -> Duration {
        self.window
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spent_budget_gives_429_and_ignoring_it_418() {
        let l = Limiter::new(100, Duration::from_secs(60), Duration::from_secs(120));
        assert_eq!(l.admit(60), Ok(60));
        let r = l.admit(60).expect_err("over budget");
        assert_eq!(r.status, 429);
        assert!(r.retry_after >= 1 && r.retry_after <= 60);
        let r = l.admit(1).expect_err("came back too early");
        assert_eq!(r.status, 418);
        assert!(r.retry_after > 60, "banned for longer than the window");
        assert_eq!(l.admit(1).expect_err("still banned").status, 418);
    }

    #[test]
    fn the_budget_renews_each_window() {
        let l = Limiter::new(10, Duration::from_secs(60), Duration::from_secs(120));
        let t0 = Instant::now();
        assert_eq!(l.admit_at(10, t0), Ok(10));
        assert_eq!(
            l.admit_at(1, t0 + Duration::from_secs(59))
                .map_err(|r| r.status),
            Err(429)
        );
        // A new window forgives the weight; the 429's back-off ended with the old window.
        assert_eq!(l.admit_at(10, t0 + Duration::from_secs(61)), Ok(10));
        assert_eq!(
            l.total(),
            20,
            "admitted weight of both windows, not the refused"
        );
    }
}
