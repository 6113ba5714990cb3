//! Background churn for the demo and for concurrent-modification tests: keeps changing random records (mostly
//! updates, some creates, rare deletes) and, given a URL, sends the matching signed v3 webhooks.

use std::time::{Duration, Instant};

use rand::Rng;
use rand::seq::IndexedRandom;
use serde_json::{Map, Value, json};
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

use super::store::now_ms;
use super::webhooks::subscription_prefix;
use super::{HubSpotSim, SignatureVersion, generated_properties};

/// Share of changes that create a record.
const CREATE_SHARE: f64 = 0.10;
/// Share of changes that archive a record.
const DELETE_SHARE: f64 = 0.02;
/// HubSpot sends at most this many events per webhook request.
const EVENTS_PER_REQUEST: usize = 100;

impl HubSpotSim {
    /// Every `every`, makes `per_tick` changes to random records of random types among `objects` and, when
    /// `webhook_url` is given, sends the matching events signed with v3 (errors are ignored, as a test of the
    /// receiver judges it by what it stored). Abort the handle to stop.
    pub fn spawn_churn(
        &self,
        every: Duration,
        per_tick: usize,
        objects: Vec<String>,
        webhook_url: Option<String>,
    ) -> JoinHandle<()> {
        let sim = self.clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(every.max(Duration::from_millis(1)));
            ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
            ticker.tick().await;
            loop {
                ticker.tick().await;
                let events = sim.churn_once(per_tick, &objects);
                let Some(url) = &webhook_url else { continue };
                for chunk in events.chunks(EVENTS_PER_REQUEST) {
                    if let Err(error) = sim.send_webhook(url, chunk, SignatureVersion::V3).await {
                        tracing::debug!(%error, "Churn webhook delivery failed.");
                    }
                }
            }
        })
    }

    /// Applies one tick of changes and returns their webhook events (to send, or not, as the caller likes).
    pub fn churn_once(&self, changes: usize, objects: &[String]) -> Vec<Value> {
        let mut rng = rand::rng();
        let mut events = Vec::with_capacity(changes);
        let mut store = self.store();
        for _ in 0..changes {
            let Some(object) = objects.choose(&mut rng) else { break };
            let prefix = subscription_prefix(object);
            let at = now_ms();
            let now = Instant::now();
            let roll: f64 = rng.random();
            let target = store.object(object).and_then(|o| o.random_live(&mut rng));
            match target {
                Some(id) if roll < DELETE_SHARE => {
                    store.archive(object, id, at, now);
                    events.push(self.event_with(
                        &format!("{prefix}.deletion"),
                        &id.to_string(),
                        at.timestamp_millis(),
                        None,
                    ));
                }
                Some(id) if roll >= DELETE_SHARE + CREATE_SHARE => {
                    let (name, value) = random_change(object, &mut rng);
                    let mut properties = Map::new();
                    properties.insert(name.to_string(), json!(value));
                    store.update(object, id, properties, at, now);
                    events.push(self.event_with(
                        &format!("{prefix}.propertyChange"),
                        &id.to_string(),
                        at.timestamp_millis(),
                        Some((name, &value)),
                    ));
                }
                _ => {
                    let id = store.allocate_id();
                    store.insert(object, id, generated_properties(object, id), at, at, now);
                    events.push(self.event_with(
                        &format!("{prefix}.creation"),
                        &id.to_string(),
                        at.timestamp_millis(),
                        None,
                    ));
                }
            }
        }
        events
    }
}

/// A property an update changes, and its new value.
fn random_change(object: &str, rng: &mut impl Rng) -> (&'static str, String) {
    let n: u32 = rng.random_range(0..1_000_000);
    let names: &[&'static str] = match object {
        "contacts" => &["firstname", "lastname", "phone", "jobtitle"],
        "companies" => &["name", "industry", "city"],
        "deals" => &["amount", "dealstage"],
        _ => &["name"],
    };
    let name = *names.choose(rng).expect("the lists are not empty");
    let value = match name {
        "phone" => format!("+1555{n:07}"),
        "amount" => (n % 100_000).to_string(),
        "dealstage" => ["appointmentscheduled", "qualifiedtobuy", "closedwon", "closedlost"][n as usize % 4].into(),
        _ => format!("{name} {n}"),
    };
    (name, value)
}
