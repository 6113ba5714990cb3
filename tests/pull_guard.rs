//! A CRM that keeps answering with the same page must not keep a connection busy forever.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use crmsyncd::backoff::Backoff;
use crmsyncd::config::ProviderKind;
use crmsyncd::metrics::Metrics;
use crmsyncd::model::RemoteRecord;
use crmsyncd::providers::{
    EventAction, Fetched, Page, PageToken, Provider, ProviderError, PushRequest, WebhookError, WebhookRequest,
};
use crmsyncd::store::{NewWebhookEvent, Store};
use crmsyncd::sync::{SyncContext, SyncError, pull_object};
use serde_json::json;
use tokio_util::sync::CancellationToken;

/// Answers every page with one record and a "next" token equal to the one it was asked for.
struct SamePageForever {
    objects: Vec<String>,
}

#[async_trait]
impl Provider for SamePageForever {
    fn kind(&self) -> ProviderKind {
        ProviderKind::HubSpot
    }

    fn objects(&self) -> &[String] {
        &self.objects
    }

    async fn pull_page(&self, _: &str, _: DateTime<Utc>, page: Option<PageToken>) -> Result<Page, ProviderError> {
        Ok(Page {
            records: vec![RemoteRecord {
                remote_id: "1".into(),
                updated_at: DateTime::UNIX_EPOCH,
                data: json!({}),
            }],
            next: Some(page.unwrap_or(json!({"after": "stuck"}))),
        })
    }

    async fn fetch(&self, _: &str, _: &[String]) -> Result<Fetched, ProviderError> {
        Ok(Fetched::default())
    }

    async fn push(&self, _: &PushRequest) -> Result<String, ProviderError> {
        Err(ProviderError::Permanent("read-only".into()))
    }

    fn verify_webhook(&self, _: &WebhookRequest<'_>) -> Result<Vec<NewWebhookEvent>, WebhookError> {
        Err(WebhookError::Unauthorized("no webhooks"))
    }

    fn interpret_event(&self, _: &serde_json::Value) -> Vec<EventAction> {
        Vec::new()
    }
}

#[tokio::test]
async fn a_page_that_repeats_its_position_fails_the_pass_instead_of_looping() {
    let db = crmsyncd::testing::TestDatabase::sqlite().await;
    let store = Store::connect(&db.url).await.unwrap();
    store.migrate().await.unwrap();
    let ctx = SyncContext {
        connection: "stuck".into(),
        provider: Arc::new(SamePageForever {
            objects: vec!["contacts".into()],
        }),
        store: store.clone(),
        metrics: Arc::new(Metrics::new()),
        overlap: Duration::ZERO,
        inbox_pending: Arc::new(AtomicBool::new(false)),
        cancel: CancellationToken::new(),
        write_backoff: Backoff::new(Duration::from_millis(10), Duration::from_millis(100)),
    };
    let result = tokio::time::timeout(Duration::from_secs(30), pull_object(&ctx, "contacts"))
        .await
        .expect("the pass ends instead of looping");
    assert!(
        matches!(result, Err(SyncError::Provider(ProviderError::Transient(_)))),
        "{result:?}"
    );
    // The page it did read was committed.
    assert_eq!(store.records("stuck", "contacts").await.unwrap().len(), 1);
}
