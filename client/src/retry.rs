//! When a failed request is tried again. Pure, so the rules are tested without a server.
//!
//! | error                     | hint named a newer leader | retries left before deadline | decision            |
//! |---------------------------|---------------------------|------------------------------|---------------------|
//! | not retriable             | -                         | -                            | give up             |
//! | retriable                 | -                         | no                           | give up             |
//! | retriable (`NOT_LEADER`)  | yes                       | yes                          | retry now           |
//! | retriable                 | no                        | yes (backoff ends in time)   | retry after backoff |

use std::time::{Duration, Instant};

/// Longest wait between two attempts, however many failed before.
pub(crate) const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// What to do with a request that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RetryDecision {
    /// Send again at once (the leader hint named another node).
    Now,
    /// Send again once this much time has passed.
    After(Duration),
    /// Report the error.
    GiveUp,
}

/// How often and how long to retry.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RetryPolicy {
    pub(crate) max_retries: u32,
    pub(crate) backoff: Duration,
}

impl RetryPolicy {
    /// Decides after the `attempts`-th failed attempt (1 for the first send). `deadline` is when
    /// the caller stops caring (a producer's delivery timeout).
    pub(crate) fn decide(
        &self,
        retriable: bool,
        rerouted: bool,
        attempts: u32,
        now: Instant,
        deadline: Instant,
    ) -> RetryDecision {
        if !retriable || attempts > self.max_retries || now >= deadline {
            return RetryDecision::GiveUp;
        }
        if rerouted {
            return RetryDecision::Now;
        }
        let wait = self.backoff(attempts);
        if now + wait >= deadline {
            return RetryDecision::GiveUp;
        }
        RetryDecision::After(wait)
    }

    /// Exponential backoff: `backoff * 2^(attempts-1)`, capped at [`MAX_BACKOFF`] (or at the
    /// configured backoff when that is larger).
    pub(crate) fn backoff(&self, attempts: u32) -> Duration {
        let shift = attempts.saturating_sub(1).min(16);
        let wait = self.backoff.saturating_mul(1 << shift);
        wait.min(MAX_BACKOFF.max(self.backoff))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: RetryPolicy = RetryPolicy {
        max_retries: 3,
        backoff: Duration::from_millis(100),
    };

    #[test]
    fn non_retriable_errors_are_reported_at_once() {
        let now = Instant::now();
        let deadline = now + Duration::from_secs(30);
        assert_eq!(
            POLICY.decide(false, true, 1, now, deadline),
            RetryDecision::GiveUp
        );
    }

    #[test]
    fn hint_reroutes_retry_at_once_and_others_back_off_exponentially() {
        let now = Instant::now();
        let deadline = now + Duration::from_secs(30);
        assert_eq!(
            POLICY.decide(true, true, 1, now, deadline),
            RetryDecision::Now
        );
        assert_eq!(
            POLICY.decide(true, false, 1, now, deadline),
            RetryDecision::After(Duration::from_millis(100))
        );
        assert_eq!(
            POLICY.decide(true, false, 3, now, deadline),
            RetryDecision::After(Duration::from_millis(400))
        );
        assert_eq!(POLICY.backoff(30), MAX_BACKOFF);
    }

    #[test]
    fn retries_stop_at_the_retry_count_or_the_deadline() {
        let now = Instant::now();
        let deadline = now + Duration::from_secs(30);
        assert_eq!(
            POLICY.decide(true, true, 4, now, deadline),
            RetryDecision::GiveUp
        );
        // A backoff that would end after the deadline is not worth waiting for.
        let close = now + Duration::from_millis(50);
        assert_eq!(
            POLICY.decide(true, false, 1, now, close),
            RetryDecision::GiveUp
        );
        assert_eq!(
            POLICY.decide(true, true, 1, close, close),
            RetryDecision::GiveUp
        );
    }
}
