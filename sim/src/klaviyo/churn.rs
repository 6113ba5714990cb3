//! Background churn for the demo and for concurrent-modification tests: keeps changing random profiles — mostly
//! attribute edits, some consent changes, some new profiles, rare deletions — and, given a URL, sends the system
//! webhooks Klaviyo would send for them: consent events only. Plain edits and deletions send none, as in Klaviyo,
//! where only polling (and the id sweep) can find them.

use std::time::{Duration, Instant};

use rand::Rng;
use serde_json::{Map, Value, json};
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

use super::store::now_s;
use super::{KlaviyoSim, PROFILES, SUBSCRIBED_TOPIC, UNSUBSCRIBED_TOPIC, generated_attributes};

/// Share of changes that create a profile (which subscribes it to email marketing).
const CREATE_SHARE: f64 = 0.10;
/// Share of changes that delete a profile.
const DELETE_SHARE: f64 = 0.03;
/// Share of changes that subscribe or unsubscribe a profile.
const CONSENT_SHARE: f64 = 0.25;
/// Klaviyo batches events; this many per delivery at most.
const EVENTS_PER_REQUEST: usize = 100;

impl KlaviyoSim {
    /// Every `every`, makes `per_tick` changes to random profiles and, when `webhook_url` is given, sends the
    /// consent events among them as one signed delivery (errors are ignored, as a test of the receiver judges it
    /// by what it stored). `objects` must be `["profiles"]` (or empty). Abort the handle to stop.
    pub fn spawn_churn(
        &self,
        every: Duration,
        per_tick: usize,
        objects: Vec<String>,
        webhook_url: Option<String>,
    ) -> JoinHandle<()> {
        assert!(
            objects.iter().all(|o| o == PROFILES),
            "Klaviyo's simulator only has profiles"
        );
        let sim = self.clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(every.max(Duration::from_millis(1)));
            ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
            ticker.tick().await;
            loop {
                ticker.tick().await;
                let events = sim.churn_once(per_tick);
                let Some(url) = &webhook_url else { continue };
                for chunk in events.chunks(EVENTS_PER_REQUEST) {
                    if let Err(error) = sim.send_webhook(url, chunk).await {
                        tracing::debug!(%error, "Churn webhook delivery failed.");
                    }
                }
            }
        })
    }

    /// Applies one tick of changes and returns their webhook events.
    fn churn_once(&self, changes: usize) -> Vec<Value> {
        let mut rng = rand::rng();
        let mut events = Vec::new();
        for _ in 0..changes {
            let at = now_s();
            let now = Instant::now();
            let roll: f64 = rng.random();
            let mut store = self.store();
            let target = store.random_live(&mut rng);
            match target {
                Some(id) if roll < DELETE_SHARE => {
                    store.delete(&id, at, now);
                }
                Some(id) if roll < DELETE_SHARE + CONSENT_SHARE => {
                    let subscribed = rng.random_bool(0.5);
                    let mut change = Map::new();
                    change.insert(
                        "properties".into(),
                        json!({"email_marketing": if subscribed { "SUBSCRIBED" } else { "UNSUBSCRIBED" }}),
                    );
                    store.update(&id, &change, at, now);
                    drop(store);
                    let topic = if subscribed {
                        SUBSCRIBED_TOPIC
                    } else {
                        UNSUBSCRIBED_TOPIC
                    };
                    events.push(self.event(topic, &id));
                }
                Some(id) if roll >= DELETE_SHARE + CONSENT_SHARE + CREATE_SHARE => {
                    store.update(&id, &random_edit(&mut rng), at, now);
                }
                _ => {
                    let id = store.allocate_id(at);
                    let seq = self.shared.next_seed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let mut attributes = generated_attributes(seq);
                    attributes.insert("properties".into(), json!({"email_marketing": "SUBSCRIBED"}));
                    store.insert(id.clone(), attributes, at, now, false);
                    drop(store);
                    events.push(self.event(SUBSCRIBED_TOPIC, &id));
                }
            }
        }
        events
    }
}

/// An attribute edit: a name, a title, an organisation or a city.
fn random_edit(rng: &mut impl Rng) -> Map<String, Value> {
    let n: u32 = rng.random_range(0..1_000_000);
    let choices = [
        ("first_name", json!(format!("First {n}"))),
        ("last_name", json!(format!("Last {n}"))),
        ("title", json!(format!("Title {n}"))),
        ("organization", json!(format!("Org {n}"))),
        ("location", json!({"city": format!("City {n}")})),
    ];
    let (name, value) = choices[rng.random_range(0..choices.len())].clone();
    let mut change = Map::new();
    change.insert(name.to_string(), value);
    change
}
