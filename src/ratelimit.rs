//! A pacing limiter on tokio's clock: the account-wide API budget and each
//! notifier's send rate.
//!
//! Hand-written rather than `governor` because it must follow tokio's clock:
//! tests prove "no more than 20 a minute" with a paused clock, and governor
//! reads the system clock. It is a GCRA with burst 1: requests are spaced
//! `period / n` apart, so no window of `period` ever holds more than `n`.

use std::fmt;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// At most `count` messages per `per`: a configured or documented rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub count: u32,
    pub per: Duration,
}

impl RateLimit {
    pub const fn new(count: u32, per: Duration) -> RateLimit {
        RateLimit { count, per }
    }
}

impl fmt::Display for RateLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.per.as_secs() {
            1 if self.per.subsec_nanos() == 0 => write!(f, "{}/s", self.count),
            60 if self.per.subsec_nanos() == 0 => write!(f, "{}/min", self.count),
            3600 if self.per.subsec_nanos() == 0 => write!(f, "{}/h", self.count),
            _ => {
                let per =
                    jiff::fmt::friendly::SpanPrinter::new().unsigned_duration_to_string(&self.per);
                write!(f, "{}/{per}", self.count)
            }
        }
    }
}

impl serde::Serialize for RateLimit {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[derive(Debug)]
pub struct RateLimiter {
    interval: Duration,
    /// The earliest time the next request may start.
    next: Mutex<Option<Instant>>,
    /// The latest [`RateLimiter::pause_until`]: waiters that reserved a
    /// slot before it was set look here when they wake.
    paused_until: Mutex<Option<Instant>>,
}

impl RateLimiter {
    /// At most `n` acquisitions per `period` (`n` of 0 is treated as 1).
    pub fn new(n: u32, period: Duration) -> RateLimiter {
        RateLimiter {
            interval: period / n.max(1),
            next: Mutex::new(None),
            paused_until: Mutex::new(None),
        }
    }

    pub fn per_minute(n: u32) -> RateLimiter {
        RateLimiter::new(n, Duration::from_secs(60))
    }

    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// Waits for a slot. Slots are handed out in call order: the slot is
    /// reserved before the wait, so a cancelled waiter only wastes its own.
    /// A pause that begins while a waiter sleeps holds it too: it wakes at
    /// its slot, sees the pause, and takes a new slot after it, so the
    /// queue stays paced after the pause instead of leaving at once.
    pub async fn acquire(&self) {
        loop {
            let start = self.reserve();
            tokio::time::sleep_until(start).await;
            // Poisoning would need a panic while holding this lock, and
            // nothing that holds it can panic.
            let paused = *self.paused_until.lock().expect("rate limiter lock");
            if paused.is_none_or(|until| until <= Instant::now()) {
                return;
            }
        }
    }

    /// Reserves the next free slot and returns when it starts.
    fn reserve(&self) -> Instant {
        // Poisoning would need a panic while holding this lock, and
        // nothing in the block can panic.
        let mut next = self.next.lock().expect("rate limiter lock");
        let now = Instant::now();
        let start = next.map_or(now, |n| n.max(now));
        *next = Some(start + self.interval);
        start
    }

    /// Pauses everyone until `until` (a receiver or the gateway said so),
    /// those already waiting for a slot included.
    pub fn pause_until(&self, until: Instant) {
        let mut next = self.next.lock().expect("rate limiter lock");
        if next.is_none_or(|n| n < until) {
            *next = Some(until);
        }
        let mut paused = self.paused_until.lock().expect("rate limiter lock");
        if paused.is_none_or(|p| p < until) {
            *paused = Some(until);
        }
    }

    /// When the next slot opens (for `state`/metrics); `None` if now.
    pub fn next_slot(&self) -> Option<Instant> {
        let next = *self.next.lock().expect("rate limiter lock");
        next.filter(|n| *n > Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn never_more_than_n_in_any_period() {
        let limiter = RateLimiter::per_minute(20);
        let start = Instant::now();
        let mut times = Vec::new();
        for _ in 0..45 {
            limiter.acquire().await;
            times.push(start.elapsed());
        }
        for (i, t) in times.iter().enumerate() {
            let in_window = times[i..]
                .iter()
                .filter(|u| **u < *t + Duration::from_secs(60))
                .count();
            assert!(in_window <= 20, "{in_window} within a minute of {t:?}");
        }
        assert_eq!(times[44], Duration::from_secs(44 * 3));
    }

    #[tokio::test(start_paused = true)]
    async fn pause_holds_everyone() {
        let limiter = RateLimiter::per_minute(600);
        let start = Instant::now();
        limiter.acquire().await;
        limiter.pause_until(start + Duration::from_secs(30));
        limiter.acquire().await;
        assert_eq!(start.elapsed(), Duration::from_secs(30));
    }

    // Regression: a waiter that had reserved its slot before a pause went
    // out at that slot, inside the pause (a second target queued behind a
    // throttled one walked into the same gateway throttle).
    #[tokio::test(start_paused = true)]
    async fn pause_holds_those_already_waiting_and_keeps_them_paced() {
        let limiter = std::sync::Arc::new(RateLimiter::per_minute(60));
        let start = Instant::now();
        limiter.acquire().await;
        let waiters: Vec<_> = (0..2)
            .map(|_| {
                let limiter = limiter.clone();
                tokio::spawn(async move {
                    limiter.acquire().await;
                    start.elapsed()
                })
            })
            .collect();
        // Let both reserve their slots (1 s and 2 s), then pause until 10 s.
        tokio::task::yield_now().await;
        limiter.pause_until(start + Duration::from_secs(10));
        let mut times = Vec::new();
        for waiter in waiters {
            times.push(waiter.await.unwrap());
        }
        times.sort();
        assert_eq!(times, [Duration::from_secs(10), Duration::from_secs(11)]);
    }
}
