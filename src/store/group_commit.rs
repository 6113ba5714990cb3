//! Group commit for the webhook inbox. Every webhook must be committed before it is answered, and a commit costs a
//! disk flush (SQLite) or a WAL flush and a round trip (PostgreSQL), so one transaction per request caps ingest at a
//! few thousand a second. One writer task instead takes every request waiting, stores all their events in one
//! transaction, and answers each request with its own outcome once that transaction has committed: the promise to
//! the CRM is unchanged (2xx only after the commit) and the flush is shared.
//!
//! A batch that fails is retried one request at a time, so an event the database refuses costs only its own
//! request a 503, never its neighbours'.

use tokio::sync::{mpsc, oneshot};

use super::webhooks::WebhookBatch;
use super::{InboxOutcome, NewWebhookEvent, Store, StoreError};

/// Most requests one transaction takes. Large enough to share a flush among many, small enough to keep each
/// transaction (and the wait of the first request in it) short.
const MAX_REQUESTS: usize = 256;

struct Job {
    connection: String,
    events: Vec<NewWebhookEvent>,
    reply: oneshot::Sender<Result<InboxOutcome, StoreError>>,
}

/// A handle on the inbox's writer task. Cheap to clone; the task ends when the last handle is dropped.
#[derive(Debug, Clone)]
pub struct InboxWriter {
    jobs: mpsc::Sender<Job>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("connection", &self.connection)
            .field("events", &self.events.len())
            .finish()
    }
}

impl InboxWriter {
    /// Starts the writer task on the current runtime.
    pub fn spawn(store: Store) -> Self {
        let (jobs, receiver) = mpsc::channel(4 * MAX_REQUESTS);
        tokio::spawn(write_loop(store, receiver));
        Self { jobs }
    }

    /// Stores `events` for `connection`, deduplicated on their event ids, and returns once they are committed.
    pub async fn insert(&self, connection: &str, events: Vec<NewWebhookEvent>) -> Result<InboxOutcome, StoreError> {
        let (reply, outcome) = oneshot::channel();
        let job = Job {
            connection: connection.to_string(),
            events,
            reply,
        };
        self.jobs.send(job).await.map_err(|_| StoreError::WriterGone)?;
        outcome.await.map_err(|_| StoreError::WriterGone)?
    }
}

async fn write_loop(store: Store, mut receiver: mpsc::Receiver<Job>) {
    let mut jobs = Vec::with_capacity(MAX_REQUESTS);
    while receiver.recv_many(&mut jobs, MAX_REQUESTS).await > 0 {
        commit(&store, std::mem::take(&mut jobs)).await;
    }
}

/// Commits `jobs` together and answers each; on failure, retries them one by one so each gets its own answer.
async fn commit(store: &Store, jobs: Vec<Job>) {
    if jobs.len() > 1 {
        let batches: Vec<WebhookBatch<'_>> = jobs
            .iter()
            .map(|job| WebhookBatch {
                connection: &job.connection,
                events: &job.events,
            })
            .collect();
        match store.insert_webhook_batches(&batches).await {
            Ok(outcomes) => {
                for (job, outcome) in jobs.into_iter().zip(outcomes) {
                    let _ = job.reply.send(Ok(outcome));
                }
                return;
            }
            Err(e) => {
                tracing::warn!(requests = jobs.len(), error = %e, "Group commit failed; storing its requests one by one.")
            }
        }
    }
    for job in jobs {
        let outcome = store.insert_webhook_events(&job.connection, &job.events).await;
        let _ = job.reply.send(outcome);
    }
}
