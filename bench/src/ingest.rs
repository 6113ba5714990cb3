//! Scenario 1, webhook ingest: signed HubSpot v3 webhooks with unique event ids, each answered 200 only once it is
//! committed to the inbox, against the full daemon and, in the same run, the two ceilings (a raw hyper server, and
//! a bare group-commit server doing only the durable insert).

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use crate::db::Db;
use bytes::Bytes;
use crmsyncd::store::Store;
use crmsyncd::testing::TestDatabase;
use crmsyncd::{Application, Config};
use crmsyncd_sim::hubspot::{HubSpotSim, HubSpotSimConfig, sign_v3};
use http_body_util::Full;
use tokio::net::TcpListener;

use crate::ceiling;
use crate::loadgen::{self, Load};

/// The client secret the daemon's connection verifies with.
const SECRET: &str = "bench-client-secret";
/// Contacts the simulator holds; events name them in turn.
const CONTACTS: u64 = 1_000;

/// What the load is sent to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// A hyper server answering 200: the HTTP ceiling.
    Raw,
    /// Only the durable insert, group-committed: the database ceiling.
    GroupCommit,
    /// crmsyncd: verify, parse, commit, answer (and its connection then reads the records the events name).
    Daemon,
}

impl Target {
    pub fn name(self) -> &'static str {
        match self {
            Target::Raw => "raw hyper 200",
            Target::GroupCommit => "bare group commit",
            Target::Daemon => "crmsyncd",
        }
    }
}

/// One measurement's setting.
#[derive(Debug, Clone, Copy)]
pub struct Setting {
    pub target: Target,
    pub db: Db,
    pub connections: usize,
    pub warmup: Duration,
    pub measure: Duration,
}

/// Runs one measurement on a fresh database.
pub async fn measure(setting: Setting) -> anyhow::Result<Load> {
    let db = setting.db.fresh().await?;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let result = match setting.target {
        Target::Raw => {
            let server = ceiling::raw(listener);
            let load = drive(addr, setting).await;
            server.abort();
            load
        }
        Target::GroupCommit => {
            let store = Store::connect(&db.url).await?;
            store.migrate().await?;
            let (server, writer) = ceiling::group_commit(listener, store.clone());
            let load = drive(addr, setting).await;
            server.abort();
            writer.abort();
            store.close().await;
            load
        }
        Target::Daemon => {
            drop(listener);
            daemon(addr, &db, setting).await
        }
    };
    db.cleanup().await;
    result
}

async fn daemon(addr: SocketAddr, db: &TestDatabase, setting: Setting) -> anyhow::Result<Load> {
    let sim = HubSpotSim::start(HubSpotSimConfig::default()).await?;
    sim.seed("contacts", CONTACTS as usize, None);
    let text = format!(
        r#"
[http]
listen = "{addr}"
public_url = "http://{addr}"
max_connections = 4096

[database]
url = "{url}"

[[connection]]
id = "bench"
provider = "hubspot"
base_url = "{base}"
access_token = "hs-test-token"
webhook_secret = "{SECRET}"
objects = ["contacts"]
poll_interval = "1h"
rate_limit = {{ requests = 100000, per = "1s" }}
"#,
        url = db.url,
        base = sim.base_url(),
    );
    let config = Config::parse(&text, Path::new("bench.toml"), &|_| None).map_err(|e| anyhow::anyhow!("{e}"))?;
    let app = Application::build(config).await?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(app.run_until_stopped(async {
        let _ = stopped.await;
    }));
    let load = drive(addr, setting).await;
    let _ = stop.send(());
    running.await??;
    sim.shutdown().await;
    load
}

/// The load: one signed event per request, each with a new id.
async fn drive(addr: SocketAddr, setting: Setting) -> anyhow::Result<Load> {
    let uri = format!("http://{addr}/webhooks/bench");
    loadgen::run(addr, setting.connections, setting.warmup, setting.measure, move |n| {
        signed_event(&uri, addr, n)
    })
    .await
}

fn signed_event(uri: &str, addr: SocketAddr, n: u64) -> http::Request<Full<Bytes>> {
    let now = chrono::Utc::now().timestamp_millis();
    let event_id = n + 1;
    let body = serde_json::json!([{
        "eventId": event_id,
        "subscriptionId": 1,
        "portalId": 1,
        "appId": 1,
        "occurredAt": now,
        "subscriptionType": "contact.propertyChange",
        "attemptNumber": 0,
        "objectId": 1 + n % CONTACTS,
        "propertyName": "firstname",
        "propertyValue": "Ada",
        "changeSource": "CRM",
    }])
    .to_string();
    let signature = sign_v3(SECRET, "POST", uri, body.as_bytes(), now);
    http::Request::post(uri)
        .header(http::header::HOST, addr.to_string())
        .header(http::header::CONTENT_TYPE, "application/json")
        .header("x-hubspot-signature-v3", signature)
        .header("x-hubspot-request-timestamp", now.to_string())
        .header("x-bench-event-id", event_id.to_string())
        .body(Full::new(Bytes::from(body)))
        .expect("a valid request")
}
