//! Background churn for the demo and concurrent-modification tests: random updates, creates, hard deletes and
//! late-committing saves. Changes of one tick are made under one lock, so many of them share a millisecond.

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use rand::seq::IndexedRandom;
use tokio::time::{Instant, MissedTickBehavior};

use super::Shared;
use super::fake;
use super::store::new_id;
use super::transaction::LateTransaction;

/// Shares of the kinds of change (the rest are updates).
const CREATE_SHARE: f64 = 0.15;
const DELETE_SHARE: f64 = 0.05;
const LATE_SHARE: f64 = 0.05;

pub(crate) async fn run(shared: Arc<Shared>, every: Duration, per_tick: usize, entities: Vec<String>) {
    let entities = if entities.is_empty() {
        vec!["Contact".to_owned()]
    } else {
        entities
    };
    let every = every.max(Duration::from_millis(1));
    // Long enough for later saves to be stamped (and read) before this one commits.
    let hold = (every * 4).max(Duration::from_millis(300));
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
        if let Some(tx) = tick(&shared, per_tick, &entities, &open) {
            open.push((now + hold, tx));
        }
    }
}

/// Applies one tick of changes; synchronous so that no lock or RNG lives across an await. Returns a save to
/// commit later, if the tick started one.
///
/// A row written by a save still open (`open`, or this tick's own) is left alone, as the database's row lock makes
/// any other writer wait for that commit: otherwise the commit would stamp the row with the save's older start
/// time after a newer write, moving its ModifiedOn backwards.
fn tick(
    shared: &Arc<Shared>,
    per_tick: usize,
    entities: &[String],
    open: &[(Instant, LateTransaction)],
) -> Option<LateTransaction> {
    let mut rng = rand::rng();
    let mut late: Option<LateTransaction> = None;
    for _ in 0..per_tick {
        let entity = entities.choose(&mut rng).expect("at least one entity").as_str();
        let roll: f64 = rng.random();
        if roll < LATE_SHARE {
            let tx = late.get_or_insert_with(|| LateTransaction::begin(shared.clone()));
            match random_row(shared, entity) {
                Some(id) if rng.random_bool(0.5) => tx.update(entity, &id, fake::edit(entity)),
                _ => {
                    let id = new_id();
                    let fields = fake::generated(entity, &id);
                    tx.create(entity, fields);
                }
            }
            continue;
        }
        let mut store = shared.store.lock().unwrap();
        let now = store.clock.now();
        let table = store.table_or_create(entity);
        let target = pick(&table.rows, &mut rng).filter(|id| {
            !open
                .iter()
                .map(|(_, tx)| tx)
                .chain(late.as_ref())
                .any(|tx| tx.touches(entity, id))
        });
        match target {
            Some(id) if roll < LATE_SHARE + DELETE_SHARE => {
                table.remove(&id);
            }
            Some(id) if roll < 1.0 - CREATE_SHARE => {
                table.update(&id, &fake::edit(entity), now);
            }
            _ => {
                let id = new_id();
                table.insert(&id, &fake::generated(entity, &id), now);
            }
        }
    }
    late
}

fn random_row(shared: &Arc<Shared>, entity: &str) -> Option<String> {
    let store = shared.store.lock().unwrap();
    pick(&store.table(entity)?.rows, &mut rand::rng())
}

/// A random existing GUID: the first at or after a random point of the GUID space.
fn pick<V>(rows: &std::collections::BTreeMap<String, V>, rng: &mut impl Rng) -> Option<String> {
    let from = format!("{:08x}", rng.random::<u32>());
    rows.range(from..)
        .next()
        .or_else(|| rows.iter().next())
        .map(|(id, _)| id.clone())
}
