//! The outbox: writes the application asked for, pushed idempotently through the rate gate.

use chrono::Utc;

use super::{SyncContext, SyncError};
use crate::metrics::{Direction, RetryReason};
use crate::providers::{ProviderError, PushRequest};

/// Writes read per round.
const BATCH: u64 = 100;

/// Pushes every due write. A transient failure schedules that write's retry with backoff and goes on; a
/// permanent one dead-letters it with the CRM's message; a rate limit or an auth failure stops the drain.
pub async fn drain_outbox(ctx: &SyncContext) -> Result<usize, SyncError> {
    let mut pushed = 0;
    loop {
        if ctx.cancel.is_cancelled() {
            return Err(SyncError::Cancelled);
        }
        let due = ctx.store.due_writes(&ctx.connection, Utc::now(), BATCH).await?;
        if due.is_empty() {
            break;
        }
        let mut progressed = false;
        for write in due {
            let request = PushRequest {
                idempotency_key: write.idempotency_key.clone(),
                object: write.object.clone(),
                match_key: write.match_key.clone(),
                match_value: write.match_value.clone(),
                properties: write.properties.clone(),
                queued_at: write.created_at,
            };
            match ctx.provider.push(&request).await {
                Ok(remote_id) => {
                    ctx.store.write_done(write.id, &remote_id).await?;
                    ctx.metrics
                        .records_synced(&ctx.connection, &write.object, Direction::Push, 1);
                    pushed += 1;
                    progressed = true;
                }
                Err(ProviderError::Permanent(message)) => {
                    // Stored and shown by the API: scrubbed of any secret the CRM echoed back.
                    let message = crate::config::redact(&message);
                    tracing::warn!(connection = %ctx.connection, write = write.id, error = %message, "Write rejected by the CRM; dead-lettered.");
                    ctx.store.write_dead(write.id, &message).await?;
                    progressed = true;
                }
                Err(ProviderError::Transient(message)) => {
                    let message = crate::config::redact(&message);
                    ctx.metrics.retry(&ctx.connection, RetryReason::Transient);
                    let delay = ctx.write_backoff.delay(write.attempts.max(0) as u32);
                    let next = Utc::now() + chrono::Duration::from_std(delay).unwrap_or_default();
                    ctx.store.write_retry(write.id, &message, next).await?;
                }
                Err(e @ ProviderError::RateLimited { wait }) => {
                    ctx.metrics.retry(&ctx.connection, RetryReason::RateLimited);
                    let next = Utc::now() + chrono::Duration::from_std(wait).unwrap_or_default();
                    ctx.store.write_retry(write.id, &e.to_string(), next).await?;
                    update_gauges(ctx).await?;
                    return Err(e.into());
                }
                Err(e @ ProviderError::Auth(_)) => {
                    update_gauges(ctx).await?;
                    return Err(e.into());
                }
            }
        }
        if !progressed {
            break;
        }
    }
    update_gauges(ctx).await?;
    Ok(pushed)
}

/// Refreshes `crmsyncd_outbox_pending` and `crmsyncd_outbox_dead`.
pub async fn update_gauges(ctx: &SyncContext) -> Result<(), SyncError> {
    let counts = ctx.store.outbox_counts(&ctx.connection).await?;
    ctx.metrics.set_outbox(&ctx.connection, counts.pending, counts.dead);
    Ok(())
}
