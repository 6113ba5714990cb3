//! Background churn for the demo and concurrent-modification tests: random writes, creates, archives, unlinks
//! and late-committing transactions, each optionally announced by a webhook.

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use rand::seq::IndexedRandom;
use serde_json::{Map, Value};
use tokio::time::{Instant, MissedTickBehavior};

use super::Shared;
use super::fake;
use super::transaction::LateTransaction;
use super::webhook;

/// What one tick did: webhooks to send, and a transaction to commit later.
#[derive(Default)]
struct Tick {
    webhooks: Vec<Value>,
    transaction: Option<LateTransaction>,
}

pub(crate) async fn run(
    shared: Arc<Shared>,
    every: Duration,
    per_tick: usize,
    models: Vec<String>,
    webhook_url: Option<String>,
) {
    let models = if models.is_empty() {
        vec!["res.partner".to_owned()]
    } else {
        models
    };
    let every = every.max(Duration::from_millis(1));
    // Long enough for the clock to pass at least one second boundary before the commit.
    let hold = (every * 4).max(Duration::from_millis(1_200));
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut open: Vec<(Instant, LateTransaction)> = Vec::new();
    loop {
        ticker.tick().await;
        let now = Instant::now();
        let (due, waiting): (Vec<_>, Vec<_>) = open.into_iter().partition(|(at, _)| *at <= now);
        open = waiting;
        for (_, tx) in due {
            tx.commit();
        }
        let tick = tick(&shared, per_tick, &models, &open);
        if let Some(tx) = tick.transaction {
            open.push((now + hold, tx));
        }
        if let Some(url) = &webhook_url {
            for body in &tick.webhooks {
                // Odoo does not retry a webhook, and neither does the churn.
                let _ = webhook::post(&shared.http, url, body).await;
            }
        }
    }
}

fn with_write_date(vals: &Map<String, Value>) -> Vec<&str> {
    let mut fields: Vec<&str> = vals.keys().map(String::as_str).collect();
    fields.push("write_date");
    fields
}

/// Applies one tick of changes; synchronous so that no lock or RNG lives across an await.
///
/// A row written by a transaction still open (`open`, or this tick's own) is left alone, as Odoo's row lock makes
/// any other writer wait for the commit: otherwise the commit would stamp the row with the transaction's older
/// start time after a newer write, moving its write_date backwards.
fn tick(shared: &Arc<Shared>, per_tick: usize, models: &[String], open: &[(Instant, LateTransaction)]) -> Tick {
    let mut rng = rand::rng();
    let mut out = Tick::default();
    for _ in 0..per_tick {
        let model = models.choose(&mut rng).expect("at least one model").as_str();
        let roll: f64 = rng.random();
        let edit = fake::edit(model, rng.random_range(0..1_000_000));
        let mut store = shared.store.lock().unwrap();
        let now = store.clock.now();
        let table = store.model_or_create(model);
        // A random existing row: the first id at or after a random point of the sequence.
        let pick = rng.random_range(1..table.id_ceiling().max(2));
        let target = table
            .rows
            .range(pick..)
            .next()
            .or_else(|| table.rows.iter().next())
            .map(|(id, _)| *id)
            .filter(|id| {
                !open
                    .iter()
                    .map(|(_, tx)| tx)
                    .chain(out.transaction.as_ref())
                    .any(|tx| tx.touches(model, *id))
            });
        match target {
            Some(id) if roll < 0.05 => {
                drop(store);
                let tx = out
                    .transaction
                    .get_or_insert_with(|| LateTransaction::begin(shared.clone()));
                let started = tx.started_at();
                let (id, vals) = if rng.random_bool(0.5) {
                    let id = tx.create(model, Map::new());
                    let vals = fake::generated(model, id);
                    tx.write(model, id, vals.clone());
                    (id, vals)
                } else {
                    tx.write(model, id, edit.clone());
                    (id, edit)
                };
                let mut store = shared.store.lock().unwrap();
                out.webhooks
                    .push(webhook::body_for_values(&mut store, model, id, &vals, started));
            }
            Some(id) if roll < 0.75 => {
                table.update(id, &edit, now);
                let fields = with_write_date(&edit);
                out.webhooks.push(webhook::body_for_row(&mut store, model, id, &fields));
            }
            Some(id) if roll < 0.80 => {
                let mut archive = Map::new();
                archive.insert("active".to_owned(), Value::Bool(false));
                table.update(id, &archive, now);
                out.webhooks
                    .push(webhook::body_for_row(&mut store, model, id, &["active", "write_date"]));
            }
            Some(id) if roll < 0.83 => {
                // Odoo runs the "on deletion" action before the row goes: the payload still has its fields.
                let body = webhook::body_for_row(&mut store, model, id, &["name", "write_date"]);
                store.model_or_create(model).remove(id);
                out.webhooks.push(body);
            }
            _ => {
                let id = table.allocate_id();
                let vals = fake::generated(model, id);
                table.insert(id, &vals, now);
                let fields = with_write_date(&vals);
                out.webhooks.push(webhook::body_for_row(&mut store, model, id, &fields));
            }
        }
    }
    out
}
