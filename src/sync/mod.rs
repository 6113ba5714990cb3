//! The work a connection does, as plain async functions the connection actor drives: pull passes, the webhook
//! inbox, the outbox, and delete sweeps.

mod inbox;
mod outbox;
mod pull;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

pub use inbox::process_inbox;
pub use outbox::drain_outbox;
pub use pull::{Pass, pull_object, read_delete_log, sweep_deletes};

use crate::backoff::Backoff;
use crate::metrics::Metrics;
use crate::providers::{Provider, ProviderError};
use crate::store::{Store, StoreError};

/// Everything the sync functions need for one connection.
#[derive(Clone)]
pub struct SyncContext {
    pub connection: String,
    pub provider: Arc<dyn Provider>,
    pub store: Store,
    pub metrics: Arc<Metrics>,
    pub overlap: Duration,
    /// Set when the inbox has events the actor has not processed yet; checked between pull pages.
    pub inbox_pending: Arc<AtomicBool>,
    /// Set at shutdown: a pass stops after the page it is on.
    pub cancel: CancellationToken,
    /// Delay policy for failed writes.
    pub write_backoff: Backoff,
}

impl SyncContext {
    pub fn take_inbox_flag(&self) -> bool {
        self.inbox_pending.swap(false, Ordering::AcqRel)
    }
}

/// Why a piece of sync work stopped.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Provider(#[from] ProviderError),
    #[error("database: {0}")]
    Store(#[from] StoreError),
    #[error("shutting down")]
    Cancelled,
}
