//! Background churn for the demo and for concurrent-modification tests: keeps changing random records (mostly
//! updates, some creates, a few deletes and undeletes, now and then a transaction that commits late with an older
//! SystemModstamp) and, given a URL, sends Outbound Messages the way Salesforce does: shuffled, some twice,
//! unacknowledged ones again on later ticks.

use std::time::Duration;

use rand::Rng;
use rand::seq::{IndexedRandom, SliceRandom};
use serde_json::{Map, Value, json};
use tokio::time::MissedTickBehavior;

use super::outbound::MAX_NOTIFICATIONS;
use super::{LateCommit, Notification, SalesforceSim, Shared, generated_fields};

/// Share of changes that create a record.
const CREATE_SHARE: f64 = 0.10;
/// Share of changes that delete a record.
const DELETE_SHARE: f64 = 0.03;
/// Share of changes that restore a deleted record.
const UNDELETE_SHARE: f64 = 0.01;
/// Chance per tick that a late transaction begins (when none is open).
const LATE_SHARE: f64 = 0.15;
/// Ticks a late transaction stays open.
const LATE_TICKS: u32 = 3;
/// Share of delivered messages that Salesforce delivers once more.
const REDELIVERY_SHARE: f64 = 0.10;
/// Ticks an unacknowledged message is retried for (Salesforce: 24 hours).
const RETRY_TICKS: u32 = 40;
/// The fields each Outbound Message carries.
const MESSAGE_FIELDS: &[&str] = &["Name"];

/// A message waiting for (another) delivery.
struct Pending {
    notifications: Vec<Notification>,
    tries_left: u32,
}

pub(crate) async fn run(
    sim: SalesforceSim,
    every: Duration,
    per_tick: usize,
    objects: Vec<String>,
    webhook_url: Option<String>,
) {
    let mut ticker = tokio::time::interval(every.max(Duration::from_millis(1)));
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    ticker.tick().await;
    let mut late: Option<(LateCommit, u32)> = None;
    let mut pending: Vec<Pending> = Vec::new();
    loop {
        ticker.tick().await;
        let mut changed = churn_once(&sim, per_tick, &objects, &mut late);
        if let Some((_, ticks)) = &mut late {
            *ticks += 1;
        }
        if late.as_ref().is_some_and(|(_, ticks)| *ticks >= LATE_TICKS) {
            let (transaction, _) = late.take().expect("checked above");
            changed.extend(transaction.commit());
        }
        let Some(url) = &webhook_url else { continue };
        let mut notifications: Vec<Notification> = Vec::new();
        for object in &objects {
            let ids: Vec<String> = changed
                .iter()
                .filter(|(o, _)| o == object)
                .map(|(_, id)| id.clone())
                .collect();
            notifications.extend(sim.notifications(object, &ids, MESSAGE_FIELDS));
        }
        // Out of order: Salesforce queues and sends in no particular order.
        notifications.shuffle(&mut rand::rng());
        for chunk in notifications.chunks(MAX_NOTIFICATIONS) {
            pending.push(Pending {
                notifications: chunk.to_vec(),
                tries_left: RETRY_TICKS,
            });
        }
        pending.shuffle(&mut rand::rng());
        let mut still = Vec::new();
        for mut message in pending.drain(..) {
            let acked = match sim.deliver(url, &message.notifications).await {
                Ok(delivery) => delivery.acked,
                Err(error) => {
                    tracing::debug!(%error, "Outbound Message delivery failed.");
                    false
                }
            };
            message.tries_left = message.tries_left.saturating_sub(1);
            // At least once: an acknowledged message is sometimes delivered again.
            let again = acked && rand::rng().random_bool(REDELIVERY_SHARE);
            if (!acked || again) && message.tries_left > 0 {
                still.push(message);
            }
        }
        pending = still;
    }
}

/// Applies one tick of changes; returns the `(object, id)` of every record created or updated (what Outbound
/// Messages fire for; deletes fire none).
fn churn_once(
    sim: &SalesforceSim,
    changes: usize,
    objects: &[String],
    late: &mut Option<(LateCommit, u32)>,
) -> Vec<(String, String)> {
    let mut rng = rand::rng();
    let mut changed = Vec::new();
    if late.is_none() && rng.random_bool(LATE_SHARE) {
        *late = Some((sim.begin(), 0));
    }
    let now = Shared::now();
    for _ in 0..changes {
        let Some(object) = objects.choose(&mut rng) else { break };
        let roll: f64 = rng.random();
        // A late transaction takes a share of the writes: they become visible only when it commits.
        if let Some((transaction, _)) = late.as_mut()
            && rng.random_bool(0.2)
        {
            let target = sim.store().random_live(object, &mut rng);
            match target {
                Some(id) if roll >= CREATE_SHARE => transaction.update(object, &id, random_change(object, &mut rng)),
                _ => {
                    transaction.create_generated(object);
                }
            }
            continue;
        }
        let mut store = sim.store();
        let target = store.random_live(object, &mut rng);
        match target {
            Some(id) if roll < DELETE_SHARE => {
                store.delete(object, &id, now);
            }
            _ if roll < DELETE_SHARE + UNDELETE_SHARE => {
                if let Some(id) = store.random_deleted(object, &mut rng)
                    && store.undelete(object, &id, now)
                {
                    changed.push((object.clone(), id));
                }
            }
            Some(id) if roll >= DELETE_SHARE + UNDELETE_SHARE + CREATE_SHARE => {
                store.update(object, &id, &random_change(object, &mut rng), now);
                changed.push((object.clone(), id));
            }
            _ => {
                let id = store.allocate_id(object);
                store.insert(object, id.clone(), generated_fields(object, &id), now);
                changed.push((object.clone(), id));
            }
        }
    }
    changed
}

/// New values for one field a user might change.
fn random_change(object: &str, rng: &mut impl Rng) -> Map<String, Value> {
    let n: u32 = rng.random_range(0..1_000_000);
    let (name, value) = match object {
        "Contact" | "Lead" => *[("Title", "title"), ("Phone", "phone"), ("Name", "name")]
            .choose(rng)
            .expect("not empty"),
        "Account" => *[("Name", "name"), ("Industry", "industry"), ("Phone", "phone")]
            .choose(rng)
            .expect("not empty"),
        _ => ("Name", "name"),
    };
    let value = match value {
        "phone" => format!("+1555{n:07}"),
        other => format!("{other} {n}"),
    };
    let mut fields = Map::new();
    fields.insert(name.to_string(), json!(value));
    fields
}
