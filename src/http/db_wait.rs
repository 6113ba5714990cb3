//! How long a request handler waits for the database before it gives up and answers 503.
//!
//! A blip (a pool connection reset, SQLite busy past its timeout) should not bounce a webhook the CRM would then
//! re-send minutes later; a real outage must not hold the CRM's request open either. So a transient failure is
//! retried with short pauses until [`WEBHOOK_DB_WAIT`] has passed, and the whole attempt is cut off there.

use std::future::Future;
use std::time::Duration;

use crate::store::StoreError;

/// The longest a webhook waits for its events to be committed.
pub const WEBHOOK_DB_WAIT: Duration = Duration::from_secs(2);

/// The pause between attempts after a transient failure.
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// Runs `attempt` until it succeeds, fails for good, or `within` has passed (then [`StoreError::TimedOut`], or the
/// last transient error). An attempt cut off mid-way is dropped, which rolls its transaction back: the caller
/// never sees success for work that was not committed.
pub async fn retry_within<T, F, Fut>(within: Duration, mut attempt: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, StoreError>>,
{
    let deadline = tokio::time::Instant::now() + within;
    let mut last = None;
    loop {
        match tokio::time::timeout_at(deadline, attempt()).await {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(e)) if !e.is_transient() => return Err(e),
            Ok(Err(e)) => last = Some(e),
            Err(_) => return Err(last.unwrap_or(StoreError::TimedOut(within))),
        }
        if tokio::time::Instant::now() + RETRY_PAUSE >= deadline {
            return Err(last.unwrap_or(StoreError::TimedOut(within)));
        }
        tokio::time::sleep(RETRY_PAUSE).await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    /// Shorter than the real wait so the tests are quick; the logic does not depend on the length.
    const WAIT: Duration = Duration::from_millis(500);

    fn unavailable() -> StoreError {
        StoreError::Unavailable(sea_orm::DbErr::ConnectionAcquire(sea_orm::ConnAcquireErr::Timeout))
    }

    #[tokio::test]
    async fn a_database_that_hangs_is_given_up_on_after_the_wait() {
        let started = tokio::time::Instant::now();
        let result: Result<(), _> = retry_within(WAIT, std::future::pending).await;
        assert!(matches!(result, Err(StoreError::TimedOut(_))), "{result:?}");
        let waited = started.elapsed();
        assert!(waited >= WAIT && waited < WAIT * 2, "{waited:?}");
    }

    #[tokio::test]
    async fn a_database_that_stays_down_is_retried_until_the_wait_ends_then_refused() {
        let calls = AtomicU32::new(0);
        let result: Result<(), _> = retry_within(WAIT, || {
            calls.fetch_add(1, Ordering::Relaxed);
            async { Err(unavailable()) }
        })
        .await;
        let err = result.unwrap_err();
        assert!(err.is_transient());
        // One attempt per pause over the wait, not a hot loop.
        let calls = calls.load(Ordering::Relaxed);
        assert!((4..=6).contains(&calls), "{calls} attempts");
    }

    #[tokio::test]
    async fn a_blip_shorter_than_the_wait_succeeds() {
        let calls = AtomicU32::new(0);
        let result = retry_within(WAIT, || {
            let n = calls.fetch_add(1, Ordering::Relaxed);
            async move { if n < 3 { Err(unavailable()) } else { Ok(n) } }
        })
        .await;
        assert_eq!(result.unwrap(), 3);
    }

    #[tokio::test]
    async fn a_permanent_error_is_not_retried() {
        let calls = AtomicU32::new(0);
        let result: Result<(), _> = retry_within(WAIT, || {
            calls.fetch_add(1, Ordering::Relaxed);
            async { Err(StoreError::Inconsistent("x".into())) }
        })
        .await;
        assert!(result.is_err());
        assert_eq!(calls.load(Ordering::Relaxed), 1);
    }
}
