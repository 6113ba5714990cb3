//! The Creatio provider against the simulator, one behaviour at a time: re-login on an expired session, keyset
//! pages across an equal-timestamp block that changes between pages, a lost create answer, the id listing.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use crmsyncd_sim::Fault;
use crmsyncd_sim::creatio::{CreatioSim, CreatioSimConfig};
use serde_json::json;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::providers::{BuildContext, Provider, ProviderError, PushRequest, WebhookError, WebhookRequest};
use crate::ratelimit::RateGate;

async fn provider(sim: &CreatioSim, extra: &str) -> Arc<dyn Provider> {
    let text = format!(
        "[[connection]]\nid = \"c\"\nprovider = \"creatio\"\nbase_url = \"{}\"\nusername = \"Supervisor\"\npassword = \"creatio-test-password\"\nobjects = [\"Contact\"]\nrate_limit = {{ requests = 1000, per = \"1s\" }}\n{extra}\n",
        sim.base_url()
    );
    let config = Config::parse(&text, Path::new("t.toml"), &|_| None).unwrap();
    let connection = &config.connections[0];
    crate::providers::build(BuildContext {
        connection,
        gate: Arc::new(RateGate::new(&connection.rate_limit)),
        metrics: Arc::new(Metrics::new()),
        public_url: None,
        vault: None,
    })
    .unwrap()
}

fn epoch() -> DateTime<Utc> {
    DateTime::UNIX_EPOCH
}

#[tokio::test]
async fn an_expired_session_logs_in_again_once_and_a_changed_password_is_an_auth_failure() {
    let sim = CreatioSim::start(CreatioSimConfig::default()).await.unwrap();
    sim.seed("Contact", 3, None);
    let creatio = provider(&sim, "").await;
    assert_eq!(
        creatio.pull_page("Contact", epoch(), None).await.unwrap().records.len(),
        3
    );
    assert_eq!(sim.logins(), 1);

    sim.expire_sessions();
    assert_eq!(
        creatio.pull_page("Contact", epoch(), None).await.unwrap().records.len(),
        3
    );
    assert_eq!(sim.logins(), 2, "one new login, then the same request again");

    sim.set_password("rotated");
    sim.expire_sessions();
    match creatio.pull_page("Contact", epoch(), None).await {
        Err(ProviderError::Auth(message)) => assert!(message.contains("password is incorrect"), "{message}"),
        other => panic!("expected an auth failure, got {other:?}"),
    }
    assert_eq!(sim.refused_logins(), 1, "a refused login is not repeated");
    sim.shutdown().await;
}

#[tokio::test]
async fn keyset_pages_read_a_changing_equal_timestamp_block_without_skipping_a_row() {
    let sim = CreatioSim::start(CreatioSimConfig::default()).await.unwrap();
    let t = Utc::now() - chrono::Duration::hours(1);
    let mut block = sim.seed("Contact", 250, Some(t));
    block.sort();
    let creatio = provider(&sim, "page_size = 100").await;
    let first = creatio.pull_page("Contact", t, None).await.unwrap();
    assert_eq!(first.records.len(), 100);
    // Rows already read are edited between pages: with $skip, the rows behind them would shift into page one.
    for id in &block[..5] {
        sim.update("Contact", id, json!({"City": "Lviv"}).as_object().unwrap().clone());
    }
    let mut seen: Vec<String> = first.records.iter().map(|r| r.remote_id.clone()).collect();
    let mut token = first.next;
    while let Some(next) = token {
        let page = creatio.pull_page("Contact", t, Some(next)).await.unwrap();
        seen.extend(page.records.iter().map(|r| r.remote_id.clone()));
        token = page.next;
    }
    let unique: HashSet<&String> = seen.iter().collect();
    assert!(
        block.iter().all(|id| unique.contains(id)),
        "every row of the block was read"
    );
    assert_eq!(seen.len(), 255, "the five edited rows come again, at their new time");
    sim.shutdown().await;
}

#[tokio::test]
async fn a_lost_create_answer_is_found_by_its_key_on_the_retry() {
    let sim = CreatioSim::start(CreatioSimConfig::default()).await.unwrap();
    let creatio = provider(&sim, "").await;
    for (key, fault) in [("key-reset", Fault::ConnectionReset), ("key-cut", Fault::TruncatedJson)] {
        let write = PushRequest {
            idempotency_key: key.into(),
            object: "Contact".into(),
            match_key: None,
            match_value: None,
            properties: json!({"Name": "Ada"}),
            queued_at: chrono::Utc::now(),
        };
        // The create runs, and its answer never arrives whole.
        sim.fault_next("create", fault);
        let lost = creatio.push(&write).await;
        assert!(matches!(lost, Err(ProviderError::Transient(_))), "{lost:?}");
        assert_eq!(sim.creates_with("Contact", "UsrCrmsyncdKey", key), 1);
        let id = creatio.push(&write).await.unwrap();
        let again = creatio.push(&write).await.unwrap();
        assert_eq!(id, again);
        assert_eq!(
            sim.creates_with("Contact", "UsrCrmsyncdKey", key),
            1,
            "{key}: still one create"
        );
        assert!(sim.record("Contact", &id).is_some());
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn the_id_listing_pages_by_id_and_sees_every_row_under_the_configured_odata_path() {
    let sim = CreatioSim::start(CreatioSimConfig::default()).await.unwrap();
    let mut ids = sim.seed("Contact", 230, None);
    // Creatio on .NET 6 serves OData at /odata rather than /0/odata.
    let creatio = provider(&sim, "page_size = 50\nodata_path = \"odata\"").await;
    let mut listed = creatio.list_ids("Contact").await.unwrap();
    ids.sort();
    listed.sort();
    assert_eq!(listed, ids);
    let log = sim.log().snapshot();
    let pages: Vec<_> = log.iter().filter(|r| r.operation == "list").collect();
    assert_eq!(pages.len(), 5);
    assert!(pages.iter().all(|r| r.path == "/odata/Contact"), "{pages:?}");
    sim.shutdown().await;
}

#[tokio::test]
async fn every_webhook_is_refused_as_unauthorized() {
    let sim = CreatioSim::start(CreatioSimConfig::default()).await.unwrap();
    let creatio = provider(&sim, "").await;
    let headers = http::HeaderMap::new();
    let body = bytes::Bytes::from_static(b"{}");
    let request = WebhookRequest {
        method: &http::Method::POST,
        path_and_query: "/webhooks/c",
        headers: &headers,
        body: &body,
        public_url: None,
        now: Utc::now(),
    };
    assert!(matches!(
        creatio.verify_webhook(&request),
        Err(WebhookError::Unauthorized("Creatio sends no webhooks; polling only"))
    ));
    assert!(creatio.interpret_event(&json!({"Id": "x"})).is_empty());
    sim.shutdown().await;
}
