//! Incremental pull: from the stored cursor minus the overlap window, page by page, each page and the advanced
//! cursor committed in one transaction. A crash repeats at most the overlap and the page in flight; it never
//! skips a record.

use std::collections::HashSet;

use chrono::{DateTime, Utc};

use super::{SyncContext, SyncError, process_inbox};
use crate::metrics::Direction;
use crate::providers::{Deletions, ProviderError};

/// What a complete pass did.
#[derive(Debug, Clone, Copy)]
pub struct Pass {
    /// When it started: everything the CRM changed before this is now stored (the sync lag counts from here).
    pub started: DateTime<Utc>,
    /// Records inserted or changed.
    pub changed: u64,
}

/// One complete pass over `object`.
pub async fn pull_object(ctx: &SyncContext, object: &str) -> Result<Pass, SyncError> {
    let started = Utc::now();
    let mut cursor = ctx.store.cursor(&ctx.connection, object).await?;
    let since = cursor
        .as_ref()
        .map(|c| c.ts - chrono::Duration::from_std(ctx.overlap).unwrap_or_default())
        .unwrap_or(DateTime::UNIX_EPOCH);
    let mut changed = 0;
    // The next page is fetched while this one is stored: the CRM's answer time and the database's commit time
    // overlap instead of adding up. Pages are still stored, and the cursor advanced, strictly in order.
    let mut asked = None;
    let mut page = ctx.provider.pull_page(object, since, None).await?;
    loop {
        if ctx.cancel.is_cancelled() {
            return Err(SyncError::Cancelled);
        }
        if let Some(page_max) = page.records.iter().map(|r| r.position()).max()
            && cursor.as_ref().is_none_or(|c| &page_max > c)
        {
            cursor = Some(page_max);
        }
        // A CRM that answers a page with the position it was asked for would keep this loop busy forever:
        // treat it as a failure, which backs off (after storing what it sent).
        let repeated = page.next.is_some() && page.next == asked;
        let next = page.next.take().filter(|_| !repeated);
        let store = ctx
            .store
            .apply_page(&ctx.connection, object, &page.records, cursor.as_ref());
        let (outcome, fetched) = match &next {
            Some(next) => {
                let (outcome, fetched) = tokio::join!(store, ctx.provider.pull_page(object, since, Some(next.clone())));
                (outcome?, Some(fetched))
            }
            None => (store.await?, None),
        };
        let n = (outcome.inserted + outcome.updated) as u64;
        changed += n;
        ctx.metrics.records_synced(&ctx.connection, object, Direction::Pull, n);
        if repeated {
            return Err(ProviderError::Transient(format!(
                "{object}: the CRM returned the same page again; no progress"
            ))
            .into());
        }
        match fetched {
            Some(fetched) => {
                page = fetched?;
                asked = next;
            }
            None => break,
        }
        // Webhooks are the fast path: a long pass must not hold them back.
        if ctx.take_inbox_flag() {
            process_inbox(ctx).await?;
        }
    }
    ctx.store.pass_completed(&ctx.connection, object, started).await?;
    Ok(Pass { started, changed })
}

/// Marks deleted every local record of `object` that the CRM no longer lists (for CRMs whose deletes leave no
/// trace). Runs inside the connection actor, so no pull interleaves between listing and comparing.
pub async fn sweep_deletes(ctx: &SyncContext, object: &str) -> Result<usize, SyncError> {
    let listed_at = Utc::now();
    let remote: HashSet<String> = ctx.provider.list_ids(object).await?.into_iter().collect();
    let local = ctx.store.live_remote_ids(&ctx.connection, object).await?;
    let vanished: Vec<String> = local.into_iter().filter(|id| !remote.contains(id)).collect();
    let n = if vanished.is_empty() {
        0
    } else {
        ctx.store
            .mark_deleted(&ctx.connection, object, &vanished, listed_at)
            .await?
    };
    ctx.store.swept(&ctx.connection, object, Utc::now()).await?;
    Ok(n)
}

/// Reads the CRM's delete log for `object` from where the last read began (less the overlap), or, when there was
/// none, from the start of the pass that just completed or the oldest sync of a live record, whichever is
/// earlier; and marks what it names deleted, each at its own time.
/// When the CRM no longer keeps deletions that far back, compares every id instead. Returns how many records
/// were newly marked deleted.
pub async fn read_delete_log(ctx: &SyncContext, object: &str, pass_started: DateTime<Utc>) -> Result<usize, SyncError> {
    let overlap = chrono::Duration::from_std(ctx.overlap).unwrap_or_default();
    let last_read = ctx
        .store
        .cursor_row(&ctx.connection, object)
        .await?
        .and_then(|row| row.swept_at);
    let since = match last_read {
        Some(at) => at,
        // The first read of this stream. A pass cut short before it (a crash, a restart) stored records that the
        // CRM may have deleted before this pass began: start no later than the oldest of them, or those
        // deletions are never seen.
        None => match ctx.store.oldest_live_sync(&ctx.connection, object).await? {
            Some(oldest) => oldest.min(pass_started),
            None => pass_started,
        },
    } - overlap;
    let asked_at = Utc::now();
    let n = match ctx.provider.deleted_since(object, since).await? {
        Deletions::Since(deleted) => {
            let mut by_time: std::collections::BTreeMap<DateTime<Utc>, Vec<String>> = Default::default();
            for (id, at) in deleted {
                by_time.entry(at).or_default().push(id);
            }
            let mut n = 0;
            for (at, ids) in by_time {
                n += ctx.store.mark_deleted(&ctx.connection, object, &ids, at).await?;
            }
            n
        }
        Deletions::TooOld => {
            tracing::warn!(connection = %ctx.connection, object, %since, "The CRM's delete log does not reach back that far; comparing every id instead.");
            sweep_deletes(ctx, object).await?
        }
    };
    ctx.store.swept(&ctx.connection, object, asked_at).await?;
    Ok(n)
}
