//! The one retry policy: classification apart from transport, and backoff
//! as a value tests can inspect. The cloud client uses it now; notifiers use
//! the same types to schedule outbox retries.

use std::future::Future;
use std::time::{Duration, SystemTime};

use rand::Rng;

/// `Retry-After` is honoured up to this long; a receiver asking for more is
/// asked again after ten minutes.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(600);

/// How long to wait after a gateway throttle (`APIG.0308`) that names no
/// `Retry-After`: Huawei advises 2–5 s.
pub const THROTTLE_WAIT_MIN: Duration = Duration::from_secs(2);
pub const THROTTLE_WAIT_MAX: Duration = Duration::from_secs(5);

/// What an attempt's outcome means for the next one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Success,
    /// Worth another attempt (network error, 408, 429, 5xx, a "rate limited"
    /// body code).
    Retry(Retryable),
    /// Retrying cannot help (other 4xx, an error body); the reason is kept
    /// for the dead letter or the error message.
    DontRetry(String),
}

/// Why a failure is retryable, and what the other side asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retryable {
    pub reason: String,
    /// The other side's `Retry-After` (already capped at [`MAX_RETRY_AFTER`]).
    pub retry_after: Option<Duration>,
    /// The other side is throttling us (429, `APIG.0308`, a chat API's rate
    /// limit code): the caller should slow everything that shares the limit,
    /// not just this request.
    pub throttled: bool,
}

impl Retryable {
    pub fn new(reason: impl Into<String>) -> Retryable {
        Retryable {
            reason: reason.into(),
            retry_after: None,
            throttled: false,
        }
    }

    pub fn throttled(reason: impl Into<String>, retry_after: Option<Duration>) -> Retryable {
        Retryable {
            reason: reason.into(),
            retry_after: retry_after.map(|d| d.min(MAX_RETRY_AFTER)),
            throttled: true,
        }
    }
}

/// Exponential backoff with full jitter: attempt `n` (1-based count of
/// failures so far) waits a random time in `[0, min(cap, base·2ⁿ⁻¹)]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub base: Duration,
    pub cap: Duration,
    /// Attempts in all, the first included. `0` means unbounded (the outbox
    /// bounds by age instead).
    pub max_attempts: u32,
    /// Off in tests, so delays are exactly the exponential ceiling.
    pub jitter: bool,
}

impl Backoff {
    /// The cloud client's policy: a few quick retries inside one poll.
    pub const API: Backoff = Backoff {
        base: Duration::from_millis(500),
        cap: Duration::from_secs(30),
        max_attempts: 4,
        jitter: true,
    };

    /// The delivery policy (docs/guarantees.md): base 1 s, cap 5 min, bounded by age.
    pub const DELIVERY: Backoff = Backoff {
        base: Duration::from_secs(1),
        cap: Duration::from_secs(300),
        max_attempts: 0,
        jitter: true,
    };

    pub fn without_jitter(self) -> Backoff {
        Backoff {
            jitter: false,
            ..self
        }
    }

    /// The exponential ceiling for failure number `failures` (1-based).
    pub fn ceiling(&self, failures: u32) -> Duration {
        let exp = failures.saturating_sub(1).min(32);
        self.base
            .checked_mul(1u32 << exp.min(31))
            .unwrap_or(self.cap)
            .min(self.cap)
    }

    /// How long to wait after failure number `failures` (1-based).
    pub fn delay(&self, failures: u32) -> Duration {
        let ceiling = self.ceiling(failures);
        if !self.jitter || ceiling.is_zero() {
            return ceiling;
        }
        rand::rng().random_range(Duration::ZERO..=ceiling)
    }

    /// The wait before the next attempt after a retryable failure: the other
    /// side's `Retry-After` wins; a throttle without one waits 2–5 s (or the
    /// backoff, if longer); otherwise the backoff.
    pub fn delay_for(&self, failures: u32, retryable: &Retryable) -> Duration {
        if let Some(after) = retryable.retry_after {
            return after.min(MAX_RETRY_AFTER);
        }
        let backoff = self.delay(failures);
        if retryable.throttled {
            let throttle = if self.jitter {
                rand::rng().random_range(THROTTLE_WAIT_MIN..=THROTTLE_WAIT_MAX)
            } else {
                THROTTLE_WAIT_MIN
            };
            return backoff.max(throttle);
        }
        backoff
    }

    /// Whether another attempt is allowed after `attempts` attempts.
    pub fn allows_another(&self, attempts: u32) -> bool {
        self.max_attempts == 0 || attempts < self.max_attempts
    }
}

/// Parses a `Retry-After` value: delay-seconds or an HTTP date, capped at
/// [`MAX_RETRY_AFTER`]. A date in the past means "now".
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    let delay = if let Ok(secs) = value.parse::<u64>() {
        Duration::from_secs(secs)
    } else if let Ok(secs) = value.parse::<f64>() {
        // Not in RFC 9110, but some receivers send fractions.
        Duration::try_from_secs_f64(secs).ok()?
    } else {
        let at = jiff::fmt::rfc2822::parse(value).ok()?.timestamp();
        let at = SystemTime::try_from(at).ok()?;
        at.duration_since(now).unwrap_or(Duration::ZERO)
    };
    Some(delay.min(MAX_RETRY_AFTER))
}

/// Runs `attempt` until it succeeds, fails permanently, or the backoff
/// allows no more attempts; sleeps between attempts (never after the last)
/// and returns the last error. `classify` decides what an error means.
pub async fn run<T, E, F, Fut>(
    backoff: &Backoff,
    classify: impl Fn(&E) -> Verdict,
    mut attempt: F,
) -> Result<T, E>
where
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let error = match attempt(attempts).await {
            Ok(value) => return Ok(value),
            Err(error) => error,
        };
        let retryable = match classify(&error) {
            Verdict::Retry(retryable) => retryable,
            Verdict::Success | Verdict::DontRetry(_) => return Err(error),
        };
        if !backoff.allows_another(attempts) {
            return Err(error);
        }
        let wait = backoff.delay_for(attempts, &retryable);
        tracing::debug!(attempt = attempts, reason = %retryable.reason, wait_ms = wait.as_millis() as u64, "retrying");
        tokio::time::sleep(wait).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceiling_doubles_up_to_the_cap() {
        let b = Backoff::DELIVERY.without_jitter();
        let secs: Vec<u64> = (1..=11).map(|n| b.delay(n).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
        assert_eq!(b.delay(u32::MAX), Duration::from_secs(300));
    }

    #[test]
    fn full_jitter_stays_under_the_ceiling() {
        let b = Backoff::DELIVERY;
        for n in 1..20 {
            assert!(b.delay(n) <= b.ceiling(n));
        }
    }

    #[test]
    fn retry_after_wins_and_throttle_waits_two_to_five_seconds() {
        let b = Backoff::API.without_jitter();
        let r = Retryable::throttled("429", Some(Duration::from_secs(7)));
        assert_eq!(b.delay_for(1, &r), Duration::from_secs(7));
        let r = Retryable::throttled("APIG.0308", None);
        assert_eq!(b.delay_for(1, &r), THROTTLE_WAIT_MIN);
        let jittered = Backoff::API.delay_for(1, &r);
        assert!(jittered >= THROTTLE_WAIT_MIN && jittered <= THROTTLE_WAIT_MAX);
    }

    #[test]
    fn retry_after_parses_seconds_and_dates_and_caps() {
        let now =
            SystemTime::try_from(jiff::Timestamp::from_second(1_700_000_000).unwrap()).unwrap();
        assert_eq!(parse_retry_after("3", now), Some(Duration::from_secs(3)));
        assert_eq!(parse_retry_after("99999", now), Some(MAX_RETRY_AFTER));
        let later = jiff::Timestamp::from_second(1_700_000_030).unwrap();
        let date = jiff::fmt::rfc2822::to_string(&later.to_zoned_datetime(jiff::tz::TimeZone::UTC))
            .unwrap();
        assert_eq!(parse_retry_after(&date, now), Some(Duration::from_secs(30)));
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[tokio::test(start_paused = true)]
    async fn run_stops_on_permanent_errors_and_keeps_the_last_one() {
        let b = Backoff::API.without_jitter();
        let classify = |e: &u32| {
            if *e < 3 {
                Verdict::Retry(Retryable::new("flaky"))
            } else {
                Verdict::DontRetry("bad".into())
            }
        };
        let mut calls = 0;
        let result: Result<(), u32> = run(&b, classify, |n| {
            calls += 1;
            async move { Err(n) }
        })
        .await;
        assert_eq!(result, Err(3));
        assert_eq!(calls, 3);
    }

    #[tokio::test(start_paused = true)]
    async fn run_gives_up_after_max_attempts_without_a_last_sleep() {
        let b = Backoff::API.without_jitter();
        let start = tokio::time::Instant::now();
        let result: Result<(), u32> = run(
            &b,
            |_| Verdict::Retry(Retryable::new("x")),
            |n| async move { Err(n) },
        )
        .await;
        assert_eq!(result, Err(4));
        // 0.5 + 1 + 2 seconds between four attempts, none after the last.
        assert_eq!(start.elapsed(), Duration::from_millis(3500));
    }
}
