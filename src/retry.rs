//! Bounded retries: decorrelated-jitter backoff, `Retry-After`, an overall deadline.
//!
//! Used by every outbound client (ACS downloads, Blob and Queue calls, token requests). The RNG
//! is injected so tests get fixed delays; time is `tokio::time`, so tests can pause it. Callers
//! re-sign every attempt themselves (ACS signatures carry a date).

use std::time::{Duration, SystemTime};

use tokio::time::Instant;

/// How hard to try before giving up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first one included.
    pub max_attempts: u32,
    /// Time from the first attempt after which no new attempt starts. ACS keeps recordings for
    /// 24 h, and the queue / Event Grid retry on top of this, so one call's deadline stays short.
    pub deadline: Duration,
    /// Smallest pause between attempts.
    pub base_delay: Duration,
    /// Largest pause between attempts (a longer `Retry-After` still wins, within the deadline).
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 6,
            deadline: Duration::from_secs(120),
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(15),
        }
    }
}

/// A source of uniform numbers in `[0, 1)`, injected so tests are deterministic.
pub trait Jitter: Send + Sync {
    /// The next number in `[0, 1)`.
    fn next_unit(&self) -> f64;
}

/// The process-wide jitter from `fastrand`.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct RandomJitter;

impl Jitter for RandomJitter {
    fn next_unit(&self) -> f64 {
        fastrand::f64()
    }
}

/// Fixed jitter, for tests: always returns the same number.
#[derive(Debug, Clone, Copy)]
pub struct FixedJitter(pub f64);

impl Jitter for FixedJitter {
    fn next_unit(&self) -> f64 {
        self.0.clamp(0.0, 0.999_999)
    }
}

/// The state of one retried operation: how many attempts were made and when it started.
pub(crate) struct Backoff<'a> {
    policy: RetryPolicy,
    jitter: &'a dyn Jitter,
    started: Instant,
    attempts: u32,
    previous: Duration,
}

impl<'a> Backoff<'a> {
    /// Starts counting now; the first attempt is about to be made.
    pub(crate) fn new(policy: RetryPolicy, jitter: &'a dyn Jitter) -> Self {
        Backoff {
            policy,
            jitter,
            started: Instant::now(),
            attempts: 1,
            previous: policy.base_delay,
        }
    }

    /// Attempts made so far (1 before the first retry).
    pub(crate) fn attempts(&self) -> u32 {
        self.attempts
    }

    /// The pause before the next attempt, or `None` when the attempts or the deadline are used
    /// up. A server's `Retry-After` is honoured when it is longer than our own delay.
    pub(crate) fn next_delay(&mut self, retry_after: Option<Duration>) -> Option<Duration> {
        if self.attempts >= self.policy.max_attempts {
            return None;
        }
        let own = decorrelated(
            self.policy.base_delay,
            self.previous,
            self.policy.max_delay,
            self.jitter.next_unit(),
        );
        self.previous = own;
        let delay = retry_after.map_or(own, |ra| ra.max(own));
        if self.started.elapsed() + delay > self.policy.deadline {
            return None;
        }
        self.attempts += 1;
        Some(delay)
    }

    /// Waits [`Backoff::next_delay`]; `false` when no attempt is left.
    pub(crate) async fn wait(&mut self, retry_after: Option<Duration>) -> bool {
        match self.next_delay(retry_after) {
            Some(d) => {
                tokio::time::sleep(d).await;
                true
            }
            None => false,
        }
    }
}

/// "Decorrelated jitter": a uniform pick between `base` and three times the previous delay,
/// capped at `max`. Spreads retries of many clients without growing without bound.
pub(crate) fn decorrelated(
    base: Duration,
    previous: Duration,
    max: Duration,
    unit: f64,
) -> Duration {
    let low = base.as_secs_f64();
    let high = (previous.as_secs_f64() * 3.0).max(low);
    let pick = low + (high - low) * unit.clamp(0.0, 1.0);
    Duration::from_secs_f64(pick.min(max.as_secs_f64()).max(0.0))
}

/// Statuses worth another try: 408, 429 and every 5xx.
pub(crate) fn is_retryable_status(status: u16) -> bool {
    status == 408 || status == 429 || (500..600).contains(&status)
}

/// Parses `Retry-After`: delta seconds or an HTTP date (relative to `now`). Values beyond an
/// hour are capped there; a date in the past means "now".
pub(crate) fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    const CAP: Duration = Duration::from_secs(3600);
    let value = value.trim();
    let wait = if let Ok(secs) = value.parse::<u64>() {
        Duration::from_secs(secs)
    } else {
        let at = httpdate::parse_http_date(value).ok()?;
        at.duration_since(now).unwrap_or(Duration::ZERO)
    };
    Some(wait.min(CAP))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 4,
            deadline: Duration::from_secs(60),
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(2),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn attempts_are_bounded_by_count() {
        let jitter = FixedJitter(0.5);
        let mut b = Backoff::new(policy(), &jitter);
        let delays: Vec<_> = std::iter::from_fn(|| b.next_delay(None)).collect();
        assert_eq!(delays.len(), 3, "four attempts in all means three pauses");
        assert_eq!(b.attempts(), 4);
        // base 0.1, previous 0.1 -> pick between 0.1 and 0.3 at 0.5 = 0.2; then 0.1..0.6 -> 0.35
        assert_eq!(delays[0], Duration::from_millis(200));
        assert_eq!(delays[1], Duration::from_millis(350));
        assert!(delays.iter().all(|d| *d <= Duration::from_secs(2)));
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_wins_but_not_past_the_deadline() {
        let jitter = FixedJitter(0.0);
        let mut b = Backoff::new(policy(), &jitter);
        assert_eq!(
            b.next_delay(Some(Duration::from_secs(5))),
            Some(Duration::from_secs(5))
        );
        tokio::time::advance(Duration::from_secs(58)).await;
        assert_eq!(b.next_delay(Some(Duration::from_secs(5))), None);
    }

    #[test]
    fn retry_after_parses_seconds_and_dates() {
        let now = httpdate::parse_http_date("Wed, 13 Apr 2022 18:09:12 GMT").unwrap();
        assert_eq!(parse_retry_after("1", now), Some(Duration::from_secs(1)));
        assert_eq!(
            parse_retry_after("Wed, 13 Apr 2022 18:09:42 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Wed, 13 Apr 2022 18:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(
            parse_retry_after("999999", now),
            Some(Duration::from_secs(3600))
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn only_transient_statuses_are_retried() {
        for s in [408, 429, 500, 502, 503, 504] {
            assert!(is_retryable_status(s), "{s}");
        }
        for s in [200, 206, 400, 401, 403, 404, 409, 412, 416] {
            assert!(!is_retryable_status(s), "{s}");
        }
    }
}
