//! The webhook inbox: events committed by the HTTP endpoint, applied here by fetching or deleting what they name.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use super::{SyncContext, SyncError};
use crate::metrics::Direction;
use crate::providers::{EventAction, ProviderError};

/// Events read per round.
const BATCH: u64 = 200;

/// The record ids one round asks for on one object, and the events that asked.
#[derive(Default)]
struct Group {
    ids: Vec<String>,
    events: Vec<i64>,
}

/// Applies every received event of the connection. Events of one round are grouped per object, so a burst of
/// webhooks for many records becomes one batch read per object. An event may ask for several things (a merge
/// deletes one record and reads another); it is marked processed only once all of them are done, and a round that
/// fails part-way is repeated whole, which is harmless: reads and deletes are idempotent.
pub async fn process_inbox(ctx: &SyncContext) -> Result<usize, SyncError> {
    let mut total = 0;
    loop {
        let events = ctx.store.pending_webhook_events(&ctx.connection, BATCH).await?;
        if events.is_empty() {
            return Ok(total);
        }
        let mut fetch: BTreeMap<String, Group> = BTreeMap::new();
        let mut delete: BTreeMap<(String, Option<DateTime<Utc>>), Group> = BTreeMap::new();
        let mut ignored = Vec::new();
        for event in &events {
            let actions = ctx.provider.interpret_event(&event.body);
            if actions.is_empty() {
                ignored.push(event.id);
            }
            for action in actions {
                let (group, ids) = match action {
                    EventAction::Fetch { object, ids } => (fetch.entry(object).or_default(), ids),
                    EventAction::Delete { object, ids, at } => (delete.entry((object, at)).or_default(), ids),
                };
                group.ids.extend(ids);
                group.events.push(event.id);
            }
        }
        // Events the CRM will never answer for, with why.
        let mut failed: BTreeMap<i64, String> = BTreeMap::new();
        for (object, mut group) in fetch {
            group.ids.sort();
            group.ids.dedup();
            // A record missing from the answer was gone by the time we asked.
            let asked_at = Utc::now();
            let fetched = match ctx.provider.fetch(&object, &group.ids).await {
                Ok(f) => f,
                Err(ProviderError::Permanent(message)) => {
                    // Record why and move on rather than block the inbox.
                    for id in group.events {
                        failed.insert(id, crate::config::redact(&message).into_owned());
                    }
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            let outcome = ctx
                .store
                .apply_page(&ctx.connection, &object, &fetched.found, None)
                .await?;
            ctx.metrics.records_synced(
                &ctx.connection,
                &object,
                Direction::Pull,
                (outcome.inserted + outcome.updated) as u64,
            );
            if !fetched.missing.is_empty() {
                ctx.store
                    .mark_deleted(&ctx.connection, &object, &fetched.missing, asked_at)
                    .await?;
            }
        }
        for ((object, at), group) in delete {
            let at = at.unwrap_or_else(Utc::now);
            ctx.store.mark_deleted(&ctx.connection, &object, &group.ids, at).await?;
        }
        let done: Vec<i64> = events
            .iter()
            .map(|e| e.id)
            .filter(|id| !failed.contains_key(id) && !ignored.contains(id))
            .collect();
        ctx.store.finish_webhook_events(&done, Ok(())).await?;
        for (id, message) in failed {
            ctx.store.finish_webhook_events(&[id], Err(message)).await?;
        }
        if !ignored.is_empty() {
            ctx.store
                .finish_webhook_events(&ignored, Err("not an object or event this connection syncs".into()))
                .await?;
        }
        total += events.len();
    }
}
