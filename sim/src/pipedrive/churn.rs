//! Background churn for the demo and for concurrent-modification tests: keeps changing random records (mostly
//! updates, some creates, deletes, merges, late commits and bulk edits that put many records on one second) and,
//! given a URL, delivers the matching webhooks v2 the way Pipedrive does: one event per request, a late commit's
//! event only once it is visible, failed deliveries retried. Aborting the churn drops deliveries still in flight,
//! as a receiver that is down would lose them.

use std::time::{Duration, Instant};

use chrono::{SecondsFormat, Utc};
use rand::Rng;
use rand::seq::IndexedRandom;
use serde_json::{Map, Value};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::MissedTickBehavior;

use super::webhooks::{self, EventParts, WebhookAction};
use super::{PipedriveSim, fake, wire};

/// Share of changes that delete a record.
const DELETE_SHARE: f64 = 0.04;
/// Share of changes that merge one record into another.
const MERGE_SHARE: f64 = 0.03;
/// Share of changes committed late (when late commits are on).
const LATE_SHARE: f64 = 0.05;
/// Share of changes that create a record.
const CREATE_SHARE: f64 = 0.12;
/// Chance per tick of a bulk edit, and how many records it touches (all in one second).
const BULK_CHANCE: f64 = 0.05;
const BULK_SIZE: usize = 40;

/// One event to deliver, after `delay`.
struct Pending {
    delay: Duration,
    body: Value,
}

impl PipedriveSim {
    /// Every `every`, makes `per_tick` changes to random records of random entities among `objects` (persons,
    /// organizations, deals) and, when `webhook_url` is given, delivers the matching webhooks. Abort the handle
    /// to stop.
    pub fn spawn_churn(
        &self,
        every: Duration,
        per_tick: usize,
        objects: Vec<String>,
        webhook_url: Option<String>,
    ) -> JoinHandle<()> {
        let sim = self.clone();
        tokio::spawn(async move {
            let mut deliveries = JoinSet::new();
            let mut ticker = tokio::time::interval(every.max(Duration::from_millis(1)));
            ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
            ticker.tick().await;
            loop {
                ticker.tick().await;
                while deliveries.try_join_next().is_some() {}
                let events = sim.churn_once(per_tick, &objects);
                let Some(url) = &webhook_url else { continue };
                for event in events {
                    let http = sim.shared.http.clone();
                    let credentials = sim.shared.webhook_credentials.clone();
                    let delays = sim.shared.webhook_retry_delays.clone();
                    let url = url.clone();
                    deliveries.spawn(async move {
                        tokio::time::sleep(event.delay).await;
                        webhooks::deliver(http, url, credentials, event.body, delays).await;
                    });
                }
            }
        })
    }

    /// Applies one tick of changes and returns their webhook events.
    fn churn_once(&self, changes: usize, objects: &[String]) -> Vec<Pending> {
        let mut rng = rand::rng();
        let mut events = Vec::new();
        let now = Instant::now();
        let late = self.shared.late_commit;
        let mut store = self.shared.store.lock().unwrap();
        let mut emit = |store: &super::Store,
                        action: WebhookAction,
                        entity: &str,
                        id: u64,
                        previous: Option<Value>,
                        merged_to: Option<u64>,
                        bulk: bool,
                        delay: Duration| {
            let record = store.entity(entity).and_then(|e| e.get(id)).expect("the record exists");
            let current = wire::record_json(record, record.latest(), None);
            let (data, previous) = match action {
                WebhookAction::Delete => (None, Some(current)),
                _ => (Some(current), previous),
            };
            events.push(Pending {
                delay,
                body: webhooks::event_body(EventParts {
                    action,
                    entity: entity.to_string(),
                    id,
                    data,
                    previous,
                    merged_to,
                    bulk,
                    at: Utc::now(),
                }),
            });
        };
        for _ in 0..changes {
            let Some(entity) = objects.choose(&mut rng) else { break };
            let live = store.entity(entity).map(|e| e.live_ids(now)).unwrap_or_default();
            let roll: f64 = rng.random();
            let target = live.choose(&mut rng).copied();
            match target {
                Some(id) if roll < DELETE_SHARE => {
                    if store.delete(entity, id, None, now).is_ok() {
                        emit(
                            &store,
                            WebhookAction::Delete,
                            entity,
                            id,
                            None,
                            None,
                            false,
                            Duration::ZERO,
                        );
                    }
                }
                Some(id) if roll < DELETE_SHARE + MERGE_SHARE => {
                    let Some(&into) = live
                        .iter()
                        .filter(|&&other| other != id)
                        .collect::<Vec<_>>()
                        .choose(&mut rng)
                    else {
                        continue;
                    };
                    if store.update(entity, *into, Map::new(), Map::new(), now, now).is_ok()
                        && store.delete(entity, id, Some(*into), now).is_ok()
                    {
                        emit(
                            &store,
                            WebhookAction::Delete,
                            entity,
                            id,
                            None,
                            Some(*into),
                            false,
                            Duration::ZERO,
                        );
                        emit(
                            &store,
                            WebhookAction::Change,
                            entity,
                            *into,
                            None,
                            None,
                            false,
                            Duration::ZERO,
                        );
                    }
                }
                Some(id) if !late.is_zero() && roll < DELETE_SHARE + MERGE_SHARE + LATE_SHARE => {
                    let change = fake::random_change(entity, &mut rng);
                    let previous = previous_of(&store, entity, id, &change);
                    if store.update(entity, id, change, Map::new(), now + late, now).is_ok() {
                        emit(&store, WebhookAction::Change, entity, id, previous, None, false, late);
                    }
                }
                Some(id) if roll >= DELETE_SHARE + MERGE_SHARE + LATE_SHARE + CREATE_SHARE => {
                    let change = fake::random_change(entity, &mut rng);
                    let previous = previous_of(&store, entity, id, &change);
                    if store.update(entity, id, change, Map::new(), now, now).is_ok() {
                        emit(
                            &store,
                            WebhookAction::Change,
                            entity,
                            id,
                            previous,
                            None,
                            false,
                            Duration::ZERO,
                        );
                    }
                }
                _ => {
                    let id = store.allocate_id(entity);
                    let at = store.clock.now();
                    store.insert(entity, id, fake::generated(entity, id), Map::new(), at, now);
                    emit(
                        &store,
                        WebhookAction::Create,
                        entity,
                        id,
                        None,
                        None,
                        false,
                        Duration::ZERO,
                    );
                }
            }
        }
        if rng.random_bool(BULK_CHANCE)
            && let Some(entity) = objects.choose(&mut rng)
        {
            let live = store.entity(entity).map(|e| e.live_ids(now)).unwrap_or_default();
            let change = fake::random_change(entity, &mut rng);
            for id in live.choose_multiple(&mut rng, BULK_SIZE).copied().collect::<Vec<_>>() {
                let previous = previous_of(&store, entity, id, &change);
                if store.update(entity, id, change.clone(), Map::new(), now, now).is_ok() {
                    emit(
                        &store,
                        WebhookAction::Change,
                        entity,
                        id,
                        previous,
                        None,
                        true,
                        Duration::ZERO,
                    );
                }
            }
        }
        events
    }
}

/// The old values of the fields `change` is about to overwrite: a change event's `previous`.
fn previous_of(store: &super::Store, entity: &str, id: u64, change: &Map<String, Value>) -> Option<Value> {
    let record = store.entity(entity)?.get(id)?;
    let latest = record.latest();
    let mut previous: Map<String, Value> = change
        .keys()
        .map(|k| (k.clone(), latest.fields.get(k).cloned().unwrap_or(Value::Null)))
        .collect();
    previous.insert(
        "update_time".into(),
        Value::String(latest.update_time.to_rfc3339_opts(SecondsFormat::Secs, true)),
    );
    Some(Value::Object(previous))
}
