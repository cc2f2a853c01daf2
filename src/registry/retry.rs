//! The one retry policy for registry requests: 429 (honouring Retry-After),
//! 408/500/502/503/504, connection resets, dropped connections and timeouts
//! are retried with jittered exponential backoff, a bounded number of times
//! and within an overall time budget; anything else fails at once.

use std::future::Future;
use std::io;
use std::time::{Duration, Instant};

use super::error::StatusError;
use super::rate_limit::RateLimit;

/// How often and how long to retry.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    /// Attempts per operation, the first included.
    pub max_attempts: u32,
    /// The first backoff.
    pub base_delay: Duration,
    /// The longest backoff.
    pub max_delay: Duration,
    /// No retry starts once this much time has passed since the first try.
    pub budget: Duration,
}

impl Default for RetryPolicy {
    /// 6 attempts, 250 ms doubling to 15 s, within 2 minutes without
    /// progress. `REGISTRY_IMAGE_RETRY_BUDGET_MS` replaces the budget (tests
    /// use it to make "long" transfers short).
    fn default() -> Self {
        let budget = super::http::millis_from_env("REGISTRY_IMAGE_RETRY_BUDGET_MS")
            .unwrap_or(Duration::from_secs(120));
        RetryPolicy {
            max_attempts: 6,
            base_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(15),
            budget,
        }
    }
}

/// One retried operation under a [`RetryPolicy`]: the attempt count and the
/// budget clock, both renewed whenever an attempt made progress (moved
/// bytes), so a long transfer interrupted late gets the same chances as a
/// short one. Request retries, blob resumes and upload chunks all count
/// through this.
pub(crate) struct Attempts<'a> {
    policy: &'a RetryPolicy,
    attempt: u32,
    since: Instant,
}

impl<'a> Attempts<'a> {
    /// The attempts of one operation under `policy`.
    pub fn new(policy: &'a RetryPolicy) -> Self {
        Attempts {
            policy,
            attempt: 1,
            since: Instant::now(),
        }
    }

    /// The last attempt moved bytes: count afresh from here.
    pub fn progressed(&mut self) {
        self.attempt = 1;
        self.since = Instant::now();
    }

    /// After a failed attempt of `what`: when `transient` allows another
    /// (the error is transient, attempts and budget are left), logs it and
    /// what comes `next` ("retrying", "resuming"), sleeps the policy's
    /// delay and gives the error back (`Ok`) for the caller to go on with; otherwise the error to fail with (`Err`),
    /// saying after how many attempts a transient one gave up. The one
    /// "wait or give up" of every retry loop: requests, blob resumes,
    /// upload chunks.
    pub async fn wait(
        &mut self,
        error: anyhow::Error,
        transient: Option<Transient>,
        what: &str,
        next: &str,
    ) -> Result<anyhow::Error, anyhow::Error> {
        let Some(transient) = transient else {
            return Err(error);
        };
        let attempt = self.attempt;
        let Some(delay) = self.next_delay(&transient) else {
            return Err(error.context(format!("{what}: giving up after {attempt} attempts")));
        };
        tracing::warn!(
            "{what}: transient error: {error:#}; {next} in {} ms (attempt {attempt} of {})",
            delay.as_millis(),
            self.policy.max_attempts
        );
        tokio::time::sleep(delay).await;
        Ok(error)
    }

    /// After a transient failure: how long to wait before the next attempt,
    /// or `None` when the attempts or the budget are spent.
    fn next_delay(&mut self, transient: &Transient) -> Option<Duration> {
        // The wait a server asks for is honoured whole (within the budget:
        // beyond it, the step gives up now and the error says how long was
        // asked), never shorter than the backoff (GHCR answers sub-second
        // Retry-After values in bursts, registry-quirks.md §1.8).
        let backoff = self.policy.backoff(self.attempt);
        let delay = transient
            .retry_after
            .map_or(backoff, |asked| asked.max(backoff));
        if self.attempt >= self.policy.max_attempts
            || self.since.elapsed() + delay > self.policy.budget
        {
            return None;
        }
        self.attempt += 1;
        Some(delay)
    }
}

/// Why an error is worth another try, and how long the server asked us to wait.
#[derive(Debug, PartialEq, Eq)]
pub struct Transient {
    /// The wait the server asked for (`Retry-After`), if any.
    pub retry_after: Option<Duration>,
}

impl RetryPolicy {
    /// Runs `op` until it succeeds, fails permanently, or the policy gives up.
    pub async fn run<T, F, Fut>(&self, what: &str, mut op: F) -> anyhow::Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = anyhow::Result<T>>,
    {
        let mut attempts = Attempts::new(self);
        loop {
            let error = match op().await {
                Ok(value) => return Ok(value),
                Err(e) => e,
            };
            let transient = classify(&error);
            attempts.wait(error, transient, what, "retrying").await?;
        }
    }

    /// Exponential backoff with ±25 % jitter, so parallel checks of many
    /// pipelines do not retry in lockstep.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let exp = self.base_delay.saturating_mul(1 << (attempt - 1).min(16));
        let capped = exp.min(self.max_delay);
        let jitter = 0.75 + 0.5 * pseudo_random_fraction();
        capped.mul_f64(jitter)
    }
}

/// A fraction in [0, 1) from the clock: jitter needs spread, not security.
fn pseudo_random_fraction() -> f64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    f64::from(nanos % 1_000_000) / 1_000_000.0
}

/// Whether an error chain holds a transient failure.
pub fn classify(error: &anyhow::Error) -> Option<Transient> {
    for cause in error.chain() {
        if let Some(status) = cause.downcast_ref::<StatusError>() {
            // A spent rate limit that renews in hours (Docker Hub's pull
            // limit: 429 with `ratelimit-remaining: 0`, no Retry-After) is
            // not waited for: the error names the limit at once.
            let limit = status.rate_limit.as_ref();
            if status.status == reqwest::StatusCode::TOO_MANY_REQUESTS
                && status.retry_after.is_none()
                && limit.is_some_and(RateLimit::spent)
            {
                return None;
            }
            return is_retryable_status(status.status).then_some(Transient {
                retry_after: status.retry_after.or(limit.and_then(|l| l.reset)),
            });
        }
        if let Some(e) = cause.downcast_ref::<reqwest::Error>()
            && e.is_timeout()
        {
            return Some(Transient { retry_after: None });
        }
        if let Some(e) = cause.downcast_ref::<io::Error>() {
            use io::ErrorKind::*;
            if matches!(
                e.kind(),
                ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof | TimedOut
            ) {
                return Some(Transient { retry_after: None });
            }
        }
        // hyper reports a connection closed mid-message only as text through
        // reqwest (its error type is not public here).
        let text = cause.to_string();
        if text.contains("connection closed before message completed")
            || text.contains("error reading a body from connection")
            || text.contains("connection reset")
        {
            return Some(Transient { retry_after: None });
        }
    }
    None
}

/// Whether a status is worth retrying (408, 429, 500, 502, 503, 504).
pub fn is_retryable_status(status: reqwest::StatusCode) -> bool {
    matches!(status.as_u16(), 408 | 429 | 500 | 502 | 503 | 504)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use reqwest::{Method, StatusCode};

    use super::*;

    fn status(code: u16, retry_after: Option<u64>) -> anyhow::Error {
        let mut e = StatusError::new(
            Method::GET,
            "/v2/".into(),
            StatusCode::from_u16(code).unwrap(),
            b"",
        );
        e.retry_after = retry_after.map(Duration::from_secs);
        anyhow::Error::new(e).context("outer")
    }

    fn quick() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 3,
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(5),
            budget: Duration::from_secs(5),
        }
    }

    #[test]
    fn classification() {
        assert_eq!(
            classify(&status(429, Some(3))),
            Some(Transient {
                retry_after: Some(Duration::from_secs(3))
            })
        );
        for code in [408, 500, 502, 503, 504] {
            assert!(classify(&status(code, None)).is_some(), "{code}");
        }
        for code in [400, 401, 403, 404, 405] {
            assert!(classify(&status(code, None)).is_none(), "{code}");
        }
        let reset = anyhow::Error::new(io::Error::from(io::ErrorKind::ConnectionReset))
            .context("reading body");
        assert!(classify(&reset).is_some());
        let eof = anyhow::Error::new(io::Error::from(io::ErrorKind::UnexpectedEof));
        assert!(classify(&eof).is_some());
        let refused = anyhow::Error::new(io::Error::from(io::ErrorKind::ConnectionRefused));
        assert!(classify(&refused).is_none());
        assert!(classify(&anyhow::anyhow!("digest mismatch")).is_none());
    }

    #[tokio::test]
    async fn retries_transient_errors_then_succeeds() {
        let calls = AtomicU32::new(0);
        let value = quick()
            .run("op", || async {
                if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                    Err(status(503, None))
                } else {
                    Ok(7)
                }
            })
            .await
            .unwrap();
        assert_eq!((value, calls.load(Ordering::SeqCst)), (7, 2));
    }

    #[tokio::test]
    async fn permanent_errors_are_not_retried() {
        let calls = AtomicU32::new(0);
        let result: anyhow::Result<()> = quick()
            .run("op", || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(status(404, None))
            })
            .await;
        assert!(result.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn gives_up_after_the_attempt_limit() {
        let calls = AtomicU32::new(0);
        let result: anyhow::Result<()> = quick()
            .run("op", || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(status(502, None))
            })
            .await;
        let message = format!("{:#}", result.unwrap_err());
        assert!(message.contains("giving up after 3 attempts"), "{message}");
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    fn limited(retry_after: Option<u64>, limit: RateLimit) -> anyhow::Error {
        let mut e = StatusError::new(
            Method::GET,
            "/v2/library/alpine/manifests/latest".into(),
            StatusCode::TOO_MANY_REQUESTS,
            br#"{"errors":[{"code":"TOOMANYREQUESTS","message":"You have reached your pull rate limit."}]}"#,
        );
        e.retry_after = retry_after.map(Duration::from_secs);
        e.rate_limit = Some(limit);
        anyhow::Error::new(e)
    }

    #[test]
    fn a_spent_rate_limit_is_not_waited_for_and_is_named() {
        let hub = RateLimit {
            limit: Some(100),
            window: Some(Duration::from_secs(21600)),
            remaining: Some(0),
            ..RateLimit::default()
        };
        let spent = limited(None, hub.clone());
        assert_eq!(classify(&spent), None);
        assert_eq!(
            spent.to_string(),
            "GET /v2/library/alpine/manifests/latest: 429 Too Many Requests \
             (TOOMANYREQUESTS: You have reached your pull rate limit.); rate limit 100 per 6 h, 0 left"
        );
        // Asked to wait: waited, and the wait is in the message.
        let asked = limited(Some(30), hub.clone());
        assert_eq!(
            classify(&asked),
            Some(Transient {
                retry_after: Some(Duration::from_secs(30))
            })
        );
        assert!(asked.to_string().ends_with("0 left; retry after 30 s"));
        // A stated reset is a wait too; a limit not spent is retried.
        let reset = RateLimit {
            reset: Some(Duration::from_secs(5)),
            ..hub.clone()
        };
        assert_eq!(
            classify(&limited(None, reset)).unwrap().retry_after,
            Some(Duration::from_secs(5))
        );
        let left = RateLimit {
            remaining: Some(3),
            ..hub
        };
        assert_eq!(classify(&limited(None, left)).unwrap().retry_after, None);
    }

    #[tokio::test]
    async fn a_wait_longer_than_the_budget_gives_up_at_once() {
        let calls = AtomicU32::new(0);
        let result: anyhow::Result<()> = quick()
            .run("op", || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(status(429, Some(3600)))
            })
            .await;
        let message = format!("{:#}", result.unwrap_err());
        assert!(message.contains("retry after 3600 s"), "{message}");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_short_wait_asked_is_never_shorter_than_the_backoff() {
        let policy = RetryPolicy {
            base_delay: Duration::from_millis(40),
            max_delay: Duration::from_millis(40),
            ..quick()
        };
        let mut attempts = Attempts::new(&policy);
        let delay = attempts
            .next_delay(&Transient {
                retry_after: Some(Duration::ZERO),
            })
            .unwrap();
        assert!(delay >= Duration::from_millis(30), "{delay:?}");
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = RetryPolicy::default();
        assert!(p.backoff(1) <= Duration::from_millis(313));
        assert!(
            p.backoff(20) <= Duration::from_secs(19) && p.backoff(20) >= Duration::from_secs(11)
        );
    }
}
