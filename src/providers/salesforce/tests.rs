//! The provider against the simulator: paging through dying query locators, the org's `instance_url`, the
//! delete log and its limits, upserts in both answer forms, session refresh and the API limit.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use crmsyncd_sim::salesforce::{SalesforceSim, SalesforceSimConfig};
use serde_json::json;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::providers::{BuildContext, Deletions, Provider, ProviderError, PushRequest};
use crate::ratelimit::RateGate;

/// A provider for `sim`. Its `base_url` leads nowhere: only the token answer's `instance_url` reaches the org.
fn provider(sim: &SalesforceSim, extra: &str) -> Arc<dyn Provider> {
    let text = format!(
        r#"
[database]
credentials_key = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="

[[connection]]
id = "sf"
provider = "salesforce"
base_url = "http://127.0.0.1:9"
objects = ["Account"]
request_timeout = "5s"
oauth = {{ token_url = "{token_url}", client_id = "sf-client-id", client_secret = "sf-client-secret", refresh_token = "sf-refresh-token" }}
{extra}
"#,
        token_url = sim.token_url()
    );
    let config = Config::parse(&text, std::path::Path::new("t.toml"), &|_| None).unwrap_or_else(|e| panic!("{e}"));
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

async fn sim(config: SalesforceSimConfig) -> SalesforceSim {
    SalesforceSim::start(config).await.unwrap()
}

#[tokio::test]
async fn a_pull_pages_an_equal_timestamp_block_and_resumes_by_keyset_when_the_locator_dies() {
    let sim = sim(SalesforceSimConfig::default()).await;
    let at = Utc::now() - chrono::Duration::hours(1);
    let ids = sim.seed("Account", 900, Some(at));
    let p = provider(&sim, "batch_size = 200");
    let since = at - chrono::Duration::minutes(1);
    let mut seen = Vec::new();
    let mut page = p.pull_page("Account", since, None).await.unwrap();
    let mut pages = 1;
    loop {
        seen.extend(page.records.iter().map(|r| r.remote_id.clone()));
        let Some(next) = page.next else { break };
        if pages == 2 {
            // The locator dies mid-pass (idle, or too many open): the pass goes on from the last row read.
            sim.release_query_locators();
        }
        page = p.pull_page("Account", since, Some(next)).await.unwrap();
        pages += 1;
    }
    assert_eq!(seen, ids, "every record once, in (SystemModstamp, Id) order");
    assert!(pages >= 5, "{pages} pages");
    let operations: Vec<String> = sim.log().snapshot().into_iter().map(|r| r.operation).collect();
    assert!(
        operations.iter().filter(|o| *o == "query").count() >= 2,
        "a fresh query resumed the pass"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn fetch_reads_records_by_id_and_reports_deleted_ones_missing() {
    let sim = sim(SalesforceSimConfig::default()).await;
    let ids = sim.seed("Account", 3, None);
    sim.delete("Account", &ids[1]);
    let p = provider(&sim, r#"fields = { Account = ["Name"] }"#);
    let fetched = p.fetch("Account", &ids).await.unwrap();
    let found: Vec<&str> = fetched.found.iter().map(|r| r.remote_id.as_str()).collect();
    assert_eq!(found, [ids[0].as_str(), ids[2].as_str()]);
    assert_eq!(fetched.missing, [ids[1].clone()]);
    assert!(fetched.found[0].data.get("attributes").is_none());
    assert!(fetched.found[0].data["Name"].is_string());
    assert_eq!(p.list_ids("Account").await.unwrap(), [ids[0].clone(), ids[2].clone()]);
    sim.shutdown().await;
}

#[tokio::test]
async fn the_delete_log_names_deletions_and_says_when_it_no_longer_reaches_back() {
    let sim = sim(SalesforceSimConfig {
        replication_step: Duration::from_secs(1),
        ..SalesforceSimConfig::default()
    })
    .await;
    let ids = sim.seed("Account", 3, None);
    let since = Utc::now() - chrono::Duration::minutes(2);
    sim.delete("Account", &ids[0]);
    let p = provider(&sim, "");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    match p.deleted_since("Account", since).await.unwrap() {
        Deletions::Since(deleted) => {
            assert_eq!(deleted.len(), 1);
            assert_eq!(deleted[0].0, ids[0]);
        }
        other => panic!("{other:?}"),
    }
    sim.purge_deleted_before(Utc::now());
    assert_eq!(p.deleted_since("Account", since).await.unwrap(), Deletions::TooOld);
    assert_eq!(
        p.deleted_since("Account", Utc::now() - chrono::Duration::days(40))
            .await
            .unwrap(),
        Deletions::TooOld,
        "Salesforce refuses a start more than 30 days back"
    );
    sim.shutdown().await;
}

fn write(key: &str, name: &str) -> PushRequest {
    PushRequest {
        idempotency_key: key.into(),
        object: "Account".into(),
        match_key: None,
        match_value: None,
        properties: json!({"Name": name}),
        queued_at: chrono::Utc::now(),
    }
}

#[tokio::test]
async fn pushes_upsert_on_the_external_id_in_both_answer_forms() {
    let sim = sim(SalesforceSimConfig::default()).await;
    sim.seed("Account", 1, None);
    let p = provider(&sim, "");
    let created = p.push(&write("k/1 ü", "A")).await.unwrap();
    let updated = p.push(&write("k/1 ü", "B")).await.unwrap();
    assert_eq!(created, updated);
    let old = provider(&sim, "api_version = \"45.0\"\nfields = { Account = [\"Name\"] }");
    assert_eq!(
        old.push(&write("k/1 ü", "C")).await.unwrap(),
        created,
        "a 204 update is followed by a read of the id"
    );
    assert_eq!(sim.creates_for("Account", "Crmsyncd_Key__c", "k/1 ü"), 1);
    let record = sim.records("Account").into_iter().find(|r| r.id == created).unwrap();
    assert_eq!(record.fields["Name"], "C");
    let refused = p
        .push(&PushRequest {
            properties: json!({"Bad__x": 1}),
            ..write("k2", "x")
        })
        .await;
    assert!(matches!(refused, Err(ProviderError::Permanent(m)) if m.contains("INVALID_FIELD")));
    sim.shutdown().await;
}

#[tokio::test]
async fn an_ended_session_is_refreshed_once_and_the_request_retried() {
    let sim = sim(SalesforceSimConfig::default()).await;
    sim.seed("Account", 2, None);
    let p = provider(&sim, "");
    assert_eq!(p.list_ids("Account").await.unwrap().len(), 2);
    assert_eq!(sim.oauth().refreshes(), 1);
    sim.oauth().expire_access_tokens();
    assert_eq!(p.list_ids("Account").await.unwrap().len(), 2);
    assert_eq!(sim.oauth().refreshes(), 2, "one refresh for the 401");
    assert_eq!(sim.log().count_status(401), 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn a_spent_allocation_is_a_rate_limit_not_an_auth_failure() {
    let sim = sim(SalesforceSimConfig {
        api_limit: (3, Duration::from_secs(60)),
        ..SalesforceSimConfig::default()
    })
    .await;
    sim.seed("Account", 2, None);
    sim.spend_api_calls(3);
    let p = provider(&sim, "");
    match p.list_ids("Account").await {
        Err(ProviderError::RateLimited { wait }) => assert!(wait >= Duration::from_secs(1), "{wait:?}"),
        other => panic!("{other:?}"),
    }
    sim.shutdown().await;
}
