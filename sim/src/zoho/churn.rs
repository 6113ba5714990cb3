//! Background churn for the demo and for concurrent-modification tests: keeps changing random records (mostly
//! edits, some creates, a few deletes, and now and then a slow operation that commits a few ticks late). Every
//! change reaches the notification channels that watch it, as in Zoho.

use std::time::Duration;

use rand::Rng;
use rand::seq::IndexedRandom;
use serde_json::{Map, Value, json};
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

use super::{Change, LateBatch, ZohoSim, generated_fields, time};

/// Share of changes that create a record.
const CREATE_SHARE: f64 = 0.10;
/// Share of changes that delete a record.
const DELETE_SHARE: f64 = 0.04;
/// Share of ticks that start a slow operation committed a few ticks later.
const LATE_SHARE: f64 = 0.05;

impl ZohoSim {
    /// Every `every`, makes `per_tick` changes to random records of random modules among `modules`. Zoho
    /// notifies the channels that clients subscribed, so `webhook_url` is not needed to deliver them; it is taken
    /// for the demo's uniform call and, when None, changes are still notified to any subscribed channel. Abort
    /// the handle to stop; a slow operation still open then is rolled back.
    pub fn spawn_churn(
        &self,
        every: Duration,
        per_tick: usize,
        modules: Vec<String>,
        _webhook_url: Option<String>,
    ) -> JoinHandle<()> {
        let sim = self.clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(every.max(Duration::from_millis(1)));
            ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
            ticker.tick().await;
            let mut late: Option<(LateBatch, u32)> = None;
            loop {
                ticker.tick().await;
                sim.churn_once(per_tick, &modules);
                late = match late.take() {
                    Some((batch, 0)) => {
                        batch.commit();
                        None
                    }
                    Some((batch, ticks)) => Some((batch, ticks - 1)),
                    None if rand::rng().random_bool(LATE_SHARE) => sim.start_late(&modules),
                    None => None,
                };
            }
        })
    }

    /// Applies one tick of changes.
    fn churn_once(&self, changes: usize, modules: &[String]) {
        let mut rng = rand::rng();
        let mut notified = Vec::with_capacity(changes);
        {
            let mut store = self.store();
            for _ in 0..changes {
                let Some(module) = modules.choose(&mut rng) else { break };
                let at = time::now_s();
                let roll: f64 = rng.random();
                // Records a slow operation holds are left alone, as a database row lock would.
                let target = store.random_visible(module, &mut rng).filter(|id| {
                    store
                        .module(module)
                        .and_then(|m| m.get(id))
                        .is_some_and(|r| r.pending.is_none())
                });
                match target {
                    Some(id) if roll < DELETE_SHARE => {
                        store.delete(module, id, at);
                        notified.push(Change::new(module, "delete", vec![id.to_string()]));
                    }
                    Some(id) if roll >= DELETE_SHARE + CREATE_SHARE => {
                        store.update(module, id, random_change(module, &mut rng), at);
                        notified.push(Change::new(module, "update", vec![id.to_string()]));
                    }
                    _ => {
                        let id = store.allocate_id();
                        store.insert(module, id, generated_fields(module, id), at);
                        notified.push(Change::new(module, "insert", vec![id.to_string()]));
                    }
                }
            }
        }
        self.shared.notify(notified);
    }

    /// A slow operation that creates one record and edits another, committed 2 to 5 ticks later.
    fn start_late(&self, modules: &[String]) -> Option<(LateBatch, u32)> {
        let mut rng = rand::rng();
        let module = modules.choose(&mut rng)?.clone();
        let mut batch = self.begin_late();
        let fields = generated_fields(&module, self.store().allocate_id());
        batch.create(&module, fields);
        let target = {
            let store = self.store();
            store.random_visible(&module, &mut rng).filter(|id| {
                store
                    .module(&module)
                    .and_then(|m| m.get(id))
                    .is_some_and(|r| r.pending.is_none())
            })
        };
        if let Some(id) = target {
            batch.update(&module, &id.to_string(), random_change(&module, &mut rng));
        }
        Some((batch, rng.random_range(2..=5)))
    }
}

/// A field an edit changes, with its new value.
fn random_change(module: &str, rng: &mut impl Rng) -> Map<String, Value> {
    let n: u32 = rng.random_range(0..1_000_000);
    let (name, value) = match module {
        "Leads" => [
            ("First_Name", json!(format!("First {n}"))),
            (
                "Lead_Status",
                json!(["Contacted", "Qualified", "Lost Lead"][n as usize % 3]),
            ),
        ]
        .choose(rng)
        .expect("not empty")
        .clone(),
        "Contacts" => [
            ("First_Name", json!(format!("First {n}"))),
            ("Phone", json!(format!("+1555{n:07}"))),
        ]
        .choose(rng)
        .expect("not empty")
        .clone(),
        "Accounts" => ("Industry", json!(["Technology", "Retail", "Finance"][n as usize % 3])),
        "Deals" => [
            (
                "Stage",
                json!(["Qualification", "Negotiation", "Closed Won"][n as usize % 3]),
            ),
            ("Amount", json!(f64::from(n % 100_000))),
        ]
        .choose(rng)
        .expect("not empty")
        .clone(),
        _ => ("Name", json!(format!("{module} {n}"))),
    };
    let mut fields = Map::new();
    fields.insert(name.to_string(), value);
    fields
}
