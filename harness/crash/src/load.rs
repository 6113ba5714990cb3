//! The steady load on the daemon while it is being killed, and what it was told: HubSpot churn with its signed
//! webhooks, Odoo churn with webhooks for random rows, and writes through the `/v1` API. Every webhook answered
//! 2xx and every write accepted is remembered; those are the promises the daemon must keep.

use std::collections::{BTreeSet, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use crmsyncd::store::Store;
use crmsyncd_entities::webhook_events;
use crmsyncd_sim::hubspot::{HubSpotSim, SignatureVersion};
use crmsyncd_sim::odoo::{OdooSim, format_odoo_datetime};
use rand::seq::IndexedRandom;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QuerySelect};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use tokio::task::JoinHandle;

use crate::checks::{self, LocalRecord, Problem, TruthRecord};
use crate::daemon::{API_TOKEN, HUBSPOT, ODOO, ODOO_HOOK_TOKEN};

const HUBSPOT_OBJECTS: [&str; 2] = ["contacts", "companies"];
const ODOO_MODELS: [&str; 2] = ["res.partner", "crm.lead"];

/// One write pushed through the API.
#[derive(Debug, Clone)]
pub(crate) struct Write {
    connection: &'static str,
    key: String,
    body: Value,
    /// The write's id once the API accepted it (202).
    id: Option<i64>,
}

#[derive(Default)]
struct Promises {
    hubspot_webhooks: Mutex<BTreeSet<String>>,
    odoo_webhooks: Mutex<BTreeSet<String>>,
    writes: Mutex<Vec<Write>>,
}

/// The load while it runs.
pub(crate) struct Load {
    stop: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<()>>,
    odoo_churn: JoinHandle<()>,
    promises: Arc<Promises>,
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("a plain HTTP client builds")
}

impl Load {
    pub(crate) fn start(hubspot: &HubSpotSim, odoo: &Arc<OdooSim>, daemon: &str) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let promises = Arc::new(Promises::default());
        let odoo_churn = odoo.spawn_churn(
            Duration::from_millis(200),
            3,
            ODOO_MODELS.iter().map(|m| m.to_string()).collect(),
            None,
        );
        let tasks = vec![
            tokio::spawn(hubspot_webhooks(
                hubspot.clone(),
                format!("{daemon}/webhooks/{HUBSPOT}"),
                stop.clone(),
                promises.clone(),
            )),
            tokio::spawn(odoo_webhooks(
                odoo.clone(),
                format!("{daemon}/webhooks/{ODOO}?token={ODOO_HOOK_TOKEN}"),
                stop.clone(),
                promises.clone(),
            )),
            tokio::spawn(writes(daemon.to_owned(), stop.clone(), promises.clone())),
        ];
        Load {
            stop,
            tasks,
            odoo_churn,
            promises,
        }
    }

    /// Stops every load task and returns what the daemon acknowledged.
    pub(crate) async fn stop(self) -> Truth {
        self.stop.store(true, Ordering::Release);
        self.odoo_churn.abort();
        for task in self.tasks {
            let _ = task.await;
        }
        let p = &self.promises;
        Truth {
            hubspot_webhooks: p.hubspot_webhooks.lock().unwrap().clone(),
            odoo_webhooks: p.odoo_webhooks.lock().unwrap().clone(),
            writes: p.writes.lock().unwrap().clone(),
        }
    }
}

/// HubSpot: a few changes every 100 ms, each batch sent as one signed webhook request.
async fn hubspot_webhooks(sim: HubSpotSim, url: String, stop: Arc<AtomicBool>, promises: Arc<Promises>) {
    let objects: Vec<String> = HUBSPOT_OBJECTS.iter().map(|o| o.to_string()).collect();
    while !stop.load(Ordering::Acquire) {
        let events = sim.churn_once(3, &objects);
        if let Ok(status) = sim.send_webhook(&url, &events, SignatureVersion::V3).await
            && status.is_success()
        {
            let ids = events.iter().filter_map(|e| e.get("eventId")).map(|id| match id {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            });
            promises.hubspot_webhooks.lock().unwrap().extend(ids);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Odoo: every 150 ms, the webhook Odoo's server action would send for a random live partner. The daemon keys
/// an Odoo event by the SHA-256 of its body.
async fn odoo_webhooks(sim: Arc<OdooSim>, url: String, stop: Arc<AtomicBool>, promises: Arc<Promises>) {
    let http = client();
    while !stop.load(Ordering::Acquire) {
        let body = {
            let rows = sim.records("res.partner");
            rows.choose(&mut rand::rng()).map(|row| {
                json!({
                    "_action": "Send Webhook Notification(#1)",
                    "_id": row.id,
                    "_model": "res.partner",
                    "name": row.fields.get("name").cloned().unwrap_or(Value::Bool(false)),
                    "active": row.active,
                    "write_date": format_odoo_datetime(row.write_date),
                })
            })
        };
        if let Some(body) = body {
            let bytes = serde_json::to_vec(&body).expect("JSON values serialise");
            let event_id = hex::encode(Sha256::digest(&bytes));
            let sent = http
                .post(&url)
                .header("content-type", "application/json")
                .body(bytes)
                .send()
                .await;
            if sent.is_ok_and(|r| r.status().is_success()) {
                promises.odoo_webhooks.lock().unwrap().insert(event_id);
            }
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}

/// Every 250 ms a new write, alternately to each CRM, after retrying (same key, same body) those not yet accepted.
async fn writes(daemon: String, stop: Arc<AtomicBool>, promises: Arc<Promises>) {
    let http = client();
    let mut n = 0u64;
    while !stop.load(Ordering::Acquire) {
        let write = new_write(n);
        n += 1;
        promises.writes.lock().unwrap().push(write);
        submit_pending(&http, &daemon, &promises).await;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn new_write(n: u64) -> Write {
    let key = format!("crash-write-{n}");
    if n.is_multiple_of(2) {
        Write {
            connection: HUBSPOT,
            body: json!({"object": "contacts", "match": {"email": format!("{key}@example.com")}, "properties": {"firstname": format!("Crash {n}")}}),
            key,
            id: None,
        }
    } else {
        Write {
            connection: ODOO,
            body: json!({"object": "res.partner", "properties": {"name": format!("Crash {n}")}}),
            key,
            id: None,
        }
    }
}

/// Posts every write that has no id yet; returns how many are still without one.
async fn submit_pending(http: &reqwest::Client, daemon: &str, promises: &Promises) -> usize {
    let pending: Vec<(usize, Write)> = {
        let writes = promises.writes.lock().unwrap();
        writes
            .iter()
            .enumerate()
            .filter(|(_, w)| w.id.is_none())
            .map(|(i, w)| (i, w.clone()))
            .collect()
    };
    let mut left = 0;
    for (i, write) in pending {
        let answer = http
            .post(format!("{daemon}/v1/connections/{}/writes", write.connection))
            .bearer_auth(API_TOKEN)
            .header("idempotency-key", &write.key)
            .json(&write.body)
            .send()
            .await;
        let id = match answer {
            Ok(r) if r.status().as_u16() == 202 => r.json::<Value>().await.ok().and_then(|v| v["id"].as_i64()),
            _ => None,
        };
        match id {
            Some(id) => promises.writes.lock().unwrap()[i].id = Some(id),
            None => left += 1,
        }
    }
    left
}

/// What the daemon promised, for the comparison.
pub(crate) struct Truth {
    hubspot_webhooks: BTreeSet<String>,
    odoo_webhooks: BTreeSet<String>,
    writes: Vec<Write>,
}

/// How the writes ended.
pub(crate) struct WritesOutcome {
    pub(crate) acknowledged: usize,
    pub(crate) problems: Vec<Problem>,
}

impl Truth {
    pub(crate) fn webhooks_acknowledged(&self) -> usize {
        self.hubspot_webhooks.len() + self.odoo_webhooks.len()
    }

    /// With the daemon running again: submits the writes a kill cut off until the API accepts each, waits for
    /// every write to be done, then checks the simulators created each exactly once.
    pub(crate) async fn finish_writes(
        &self,
        daemon: &str,
        hubspot: &HubSpotSim,
        odoo: &OdooSim,
        timeout: Duration,
    ) -> WritesOutcome {
        let http = client();
        let deadline = tokio::time::Instant::now() + timeout;
        let promises = Promises {
            writes: Mutex::new(self.writes.clone()),
            ..Promises::default()
        };
        while submit_pending(&http, daemon, &promises).await > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let writes = promises.writes.into_inner().unwrap();
        let mut problems = Vec::new();
        let mut statuses: Vec<String> = vec![String::new(); writes.len()];
        loop {
            for (write, status) in writes.iter().zip(statuses.iter_mut()) {
                if status == "done" {
                    continue;
                }
                if let Some(id) = write.id {
                    let answer = http
                        .get(format!("{daemon}/v1/writes/{id}"))
                        .bearer_auth(API_TOKEN)
                        .send()
                        .await;
                    if let Ok(r) = answer
                        && let Ok(v) = r.json::<Value>().await
                    {
                        *status = v["status"].as_str().unwrap_or_default().to_owned();
                    }
                }
            }
            if statuses.iter().all(|s| s == "done") || tokio::time::Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        let mut hubspot_creates = Vec::new();
        let mut odoo_creates = Vec::new();
        for (write, status) in writes.iter().zip(&statuses) {
            if status != "done" {
                problems.push(Problem::WriteNotDone {
                    connection: write.connection.to_owned(),
                    key: write.key.clone(),
                    status: if write.id.is_none() {
                        "never accepted".into()
                    } else {
                        status.clone()
                    },
                });
            }
            if write.connection == HUBSPOT {
                let email = format!("{}@example.com", write.key);
                hubspot_creates.push((write.key.clone(), hubspot.creates_for("contacts", "email", &email)));
            } else {
                odoo_creates.push((
                    write.key.clone(),
                    odoo.creates_with("res.partner", "x_crmsyncd_key", &write.key),
                ));
            }
        }
        problems.extend(checks::writes_not_once(HUBSPOT, &hubspot_creates));
        problems.extend(checks::writes_not_once(ODOO, &odoo_creates));
        WritesOutcome {
            acknowledged: writes.iter().filter(|w| w.id.is_some()).count(),
            problems,
        }
    }

    /// Records against the simulators (used while waiting for the daemon to catch up).
    pub(crate) async fn compare_records(
        &self,
        db_url: &str,
        hubspot: &HubSpotSim,
        odoo: &OdooSim,
    ) -> anyhow::Result<Vec<Problem>> {
        Ok(self.compare(db_url, hubspot, odoo, false).await?.1)
    }

    /// Records, cursors and the inbox; returns how many records were compared and the problems.
    pub(crate) async fn compare_all(
        &self,
        db_url: &str,
        hubspot: &HubSpotSim,
        odoo: &OdooSim,
    ) -> anyhow::Result<(usize, Vec<Problem>)> {
        self.compare(db_url, hubspot, odoo, true).await
    }

    async fn compare(
        &self,
        db_url: &str,
        hubspot: &HubSpotSim,
        odoo: &OdooSim,
        everything: bool,
    ) -> anyhow::Result<(usize, Vec<Problem>)> {
        let store = Store::connect(db_url).await?;
        let mut problems = Vec::new();
        let mut compared = 0;
        let streams = HUBSPOT_OBJECTS
            .iter()
            .map(|o| (HUBSPOT, *o, hubspot_truth(hubspot, o)))
            .chain(ODOO_MODELS.iter().map(|m| (ODOO, *m, odoo_truth(odoo, m))));
        for (connection, object, truth) in streams {
            let stream = format!("{connection}/{object}");
            let local: Vec<LocalRecord> = store
                .records(connection, object)
                .await?
                .into_iter()
                .map(|r| LocalRecord {
                    id: r.remote_id,
                    updated_at: r.remote_updated_at,
                    deleted: r.deleted,
                    data: r.data,
                })
                .collect();
            compared += truth.len();
            problems.extend(checks::compare_records(&stream, &truth, &local));
            if everything {
                let cursor = store.cursor(connection, object).await?.map(|c| (c.ts, c.id));
                problems.extend(checks::cursor_ahead(&stream, cursor, &local));
            }
        }
        if everything {
            for (connection, acknowledged) in [(HUBSPOT, &self.hubspot_webhooks), (ODOO, &self.odoo_webhooks)] {
                let stored: Vec<String> = webhook_events::Entity::find()
                    .select_only()
                    .column(webhook_events::Column::EventId)
                    .filter(webhook_events::Column::ConnectionId.eq(connection))
                    .into_tuple()
                    .all(store.db())
                    .await?;
                let stored: HashSet<String> = stored.into_iter().collect();
                problems.extend(checks::lost_webhooks(connection, acknowledged, &stored));
            }
        }
        store.close().await;
        Ok((compared, problems))
    }
}

fn hubspot_truth(sim: &HubSpotSim, object: &str) -> Vec<TruthRecord> {
    let fields: &[&str] = match object {
        "contacts" => &["email", "firstname", "lastname"],
        _ => &["name", "domain"],
    };
    sim.records(object)
        .into_iter()
        .map(|r| TruthRecord {
            updated_at_ms: r.updated_at.timestamp_millis(),
            deleted: r.archived,
            fields: pick(&r.properties, fields),
            id: r.id,
        })
        .collect()
}

fn odoo_truth(sim: &OdooSim, model: &str) -> Vec<TruthRecord> {
    sim.records(model)
        .into_iter()
        .map(|r| {
            let mut fields = pick(&r.fields, &["name"]);
            fields.insert("active".into(), Value::Bool(r.active));
            let at: DateTime<Utc> = r.write_date.and_utc();
            TruthRecord {
                id: r.id.to_string(),
                updated_at_ms: at.timestamp_millis(),
                // Odoo forgets an unlinked row: it is simply absent here, and must be deleted locally.
                deleted: false,
                fields,
            }
        })
        .collect()
}

fn pick(all: &Map<String, Value>, names: &[&str]) -> Map<String, Value> {
    names
        .iter()
        .filter_map(|n| all.get(*n).map(|v| ((*n).to_owned(), v.clone())))
        .collect()
}
