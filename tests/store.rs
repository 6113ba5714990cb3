//! The storage layer against real databases: every test runs on SQLite and, when reachable, PostgreSQL.

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use crmsyncd::model::{Cursor, RemoteRecord};
use crmsyncd::store::{
    Enqueued, InboxOutcome, InboxWriter, NewWebhookEvent, NewWrite, OutboxCounts, PageOutcome, Store, StoreError,
    StoreOptions, WebhookBatch,
};
use crmsyncd::testing::TestDatabase;
use crmsyncd_entities::outbox::OutboxStatus;
use crmsyncd_entities::webhook_events::WebhookStatus;
use futures::FutureExt;
use migration::{Migrator, MigratorTrait, SchemaManager};
use sea_orm::{ConnectionTrait, DbBackend, SqliteTransactionMode, Statement, TransactionOptions, TransactionTrait};
use serde_json::{Value, json};

const CONN: &str = "hubspot-main";
const OBJ: &str = "contacts";

/// Runs `test` on a migrated store for each test database, cleaning the database up even if the test panics.
async fn on_each_database<F, Fut>(test: F)
where
    F: Fn(Store) -> Fut,
    Fut: Future<Output = ()>,
{
    for db in TestDatabase::all().await {
        eprintln!("--- on {}", db.backend);
        let store = Store::connect(&db.url).await.unwrap();
        store.migrate().await.unwrap();
        let result = AssertUnwindSafe(test(store.clone())).catch_unwind().await;
        store.close().await;
        let backend = db.backend;
        db.cleanup().await;
        if let Err(panic) = result {
            eprintln!("--- failed on {backend}");
            std::panic::resume_unwind(panic);
        }
    }
}

fn t(secs: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap() + chrono::Duration::seconds(secs)
}

fn rec(id: &str, secs: i64, data: Value) -> RemoteRecord {
    RemoteRecord {
        remote_id: id.into(),
        updated_at: t(secs),
        data,
    }
}

fn outcome(inserted: usize, updated: usize, unchanged: usize) -> PageOutcome {
    PageOutcome {
        inserted,
        updated,
        unchanged,
    }
}

fn write(key: &str, properties: Value) -> NewWrite {
    NewWrite {
        idempotency_key: key.into(),
        connection_id: CONN.into(),
        object: OBJ.into(),
        match_key: Some("email".into()),
        match_value: Some("a@example.com".into()),
        properties,
    }
}

fn event(id: &str) -> NewWebhookEvent {
    NewWebhookEvent {
        event_id: id.into(),
        object: Some(OBJ.into()),
        headers: json!({"x-hubspot-request-timestamp": "1"}),
        body: json!({"eventId": id, "objectId": 7}),
    }
}

// ---- migrations ----

#[tokio::test]
async fn migrations_go_up_down_and_up_again() {
    on_each_database(|store| async move {
        let tables = ["records", "change_counter", "cursors", "webhook_events", "outbox"];
        let manager = SchemaManager::new(store.db());
        for table in tables {
            assert!(manager.has_table(table).await.unwrap(), "{table} after up");
        }
        Migrator::down(store.db(), None).await.unwrap();
        for table in tables {
            assert!(!manager.has_table(table).await.unwrap(), "{table} after down");
        }
        Migrator::up(store.db(), None).await.unwrap();
        store.migrate().await.unwrap(); // a second up is a no-op
        let applied = store
            .apply_page(CONN, OBJ, &[rec("1", 0, json!({}))], None)
            .await
            .unwrap();
        assert_eq!(applied, outcome(1, 0, 0));
        assert_eq!(
            store.records(CONN, OBJ).await.unwrap()[0].change_seq,
            1,
            "counter starts again at 0"
        );
    })
    .await;
}

// ---- records ----

#[tokio::test]
async fn new_records_are_inserted_with_consecutive_change_seqs() {
    on_each_database(|store| async move {
        let page = [rec("1", 0, json!({"name": "Ada"})), rec("2", 1, json!({"name": "Bob"}))];
        let applied = store.apply_page(CONN, OBJ, &page, None).await.unwrap();
        assert_eq!(applied, outcome(2, 0, 0));

        let rows = store.records(CONN, OBJ).await.unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!((rows[0].remote_id.as_str(), rows[0].change_seq), ("1", 1));
        assert_eq!((rows[1].remote_id.as_str(), rows[1].change_seq), ("2", 2));
        assert_eq!(rows[0].data, json!({"name": "Ada"}));
        assert_eq!(rows[0].remote_updated_at, t(0));
        assert!(!rows[0].deleted);
        assert_eq!(
            rows[0].content_hash,
            crmsyncd::store::content_hash(&json!({"name": "Ada"}))
        );
        assert_eq!(store.record(CONN, OBJ, "2").await.unwrap().unwrap(), rows[1]);
        assert_eq!(store.record(CONN, OBJ, "3").await.unwrap(), None);
        assert_eq!(
            store.record(CONN, "deals", "1").await.unwrap(),
            None,
            "objects are separate"
        );
    })
    .await;
}

#[tokio::test]
async fn unchanged_record_does_not_take_a_change_seq() {
    on_each_database(|store| async move {
        let page = [rec("1", 0, json!({"a": 1, "b": 2}))];
        store.apply_page(CONN, OBJ, &page, None).await.unwrap();
        let before = store.record(CONN, OBJ, "1").await.unwrap().unwrap();

        // Same timestamp, same content with keys in another order.
        let reread = [rec("1", 0, serde_json::from_str(r#"{"b":2,"a":1}"#).unwrap())];
        assert_eq!(
            store.apply_page(CONN, OBJ, &reread, None).await.unwrap(),
            outcome(0, 0, 1)
        );

        let after = store.record(CONN, OBJ, "1").await.unwrap().unwrap();
        assert_eq!(after, before, "not even synced_at moves");
        assert!(store.changes_since(before.change_seq, 10).await.unwrap().is_empty());
    })
    .await;
}

#[tokio::test]
async fn timestamps_finer_than_microseconds_do_not_make_a_reread_look_changed() {
    on_each_database(|store| async move {
        let mut record = rec("1", 0, json!({"a": 1}));
        record.updated_at += chrono::Duration::nanoseconds(123_456_789);
        store
            .apply_page(CONN, OBJ, std::slice::from_ref(&record), None)
            .await
            .unwrap();
        assert_eq!(
            store.apply_page(CONN, OBJ, &[record], None).await.unwrap(),
            outcome(0, 0, 1)
        );
        let row = store.record(CONN, OBJ, "1").await.unwrap().unwrap();
        assert_eq!(row.remote_updated_at, t(0) + chrono::Duration::microseconds(123_456));
    })
    .await;
}

#[tokio::test]
async fn changed_record_takes_a_larger_change_seq() {
    on_each_database(|store| async move {
        store
            .apply_page(CONN, OBJ, &[rec("1", 0, json!({"v": 1})), rec("2", 0, json!({}))], None)
            .await
            .unwrap();
        let before = store.record(CONN, OBJ, "1").await.unwrap().unwrap();

        let applied = store
            .apply_page(CONN, OBJ, &[rec("1", 5, json!({"v": 2}))], None)
            .await
            .unwrap();
        assert_eq!(applied, outcome(0, 1, 0));
        let after = store.record(CONN, OBJ, "1").await.unwrap().unwrap();
        assert_eq!(after.id, before.id, "updated in place");
        assert_eq!(after.data, json!({"v": 2}));
        assert_eq!(after.remote_updated_at, t(5));
        assert_eq!(after.change_seq, 3);
        assert!(after.synced_at >= before.synced_at);
    })
    .await;
}

#[tokio::test]
async fn same_timestamp_with_different_content_is_an_update() {
    on_each_database(|store| async move {
        store
            .apply_page(CONN, OBJ, &[rec("1", 0, json!({"v": 1}))], None)
            .await
            .unwrap();
        let applied = store
            .apply_page(CONN, OBJ, &[rec("1", 0, json!({"v": 2}))], None)
            .await
            .unwrap();
        assert_eq!(applied, outcome(0, 1, 0));
        assert_eq!(
            store.record(CONN, OBJ, "1").await.unwrap().unwrap().data,
            json!({"v": 2})
        );
    })
    .await;
}

#[tokio::test]
async fn older_version_never_replaces_a_newer_one() {
    on_each_database(|store| async move {
        store
            .apply_page(CONN, OBJ, &[rec("1", 10, json!({"v": "new"}))], None)
            .await
            .unwrap();
        let before = store.record(CONN, OBJ, "1").await.unwrap().unwrap();

        let applied = store
            .apply_page(CONN, OBJ, &[rec("1", 5, json!({"v": "old"}))], None)
            .await
            .unwrap();
        assert_eq!(applied, outcome(0, 0, 1));
        assert_eq!(store.record(CONN, OBJ, "1").await.unwrap().unwrap(), before);
    })
    .await;
}

#[tokio::test]
async fn record_repeated_within_a_page_is_stored_once_at_its_newest_version() {
    on_each_database(|store| async move {
        let page = [
            rec("1", 2, json!({"v": 2})),
            rec("2", 0, json!({})),
            rec("1", 1, json!({"v": 1})),
        ];
        assert_eq!(
            store.apply_page(CONN, OBJ, &page, None).await.unwrap(),
            outcome(2, 0, 1)
        );
        let row = store.record(CONN, OBJ, "1").await.unwrap().unwrap();
        assert_eq!((row.data, row.remote_updated_at), (json!({"v": 2}), t(2)));
    })
    .await;
}

#[tokio::test]
async fn large_page_is_written_in_batches() {
    on_each_database(|store| async move {
        let page: Vec<RemoteRecord> = (0..1200).map(|i| rec(&i.to_string(), i, json!({"i": i}))).collect();
        assert_eq!(
            store.apply_page(CONN, OBJ, &page, None).await.unwrap(),
            outcome(1200, 0, 0)
        );
        assert_eq!(
            store.apply_page(CONN, OBJ, &page, None).await.unwrap(),
            outcome(0, 0, 1200)
        );
        let seqs: Vec<i64> = store
            .changes_since(0, 2000)
            .await
            .unwrap()
            .iter()
            .map(|r| r.change_seq)
            .collect();
        assert_eq!(seqs, (1..=1200).collect::<Vec<i64>>());
    })
    .await;
}

#[tokio::test]
async fn mark_deleted_flags_live_rows_once_with_new_change_seqs() {
    on_each_database(|store| async move {
        let page: Vec<RemoteRecord> = (1..=4).map(|i| rec(&i.to_string(), i, json!({}))).collect();
        store.apply_page(CONN, OBJ, &page, None).await.unwrap();

        let gone = vec!["2".to_string(), "3".to_string(), "3".to_string()];
        assert_eq!(store.mark_deleted(CONN, OBJ, &gone, t(10)).await.unwrap(), 2);
        assert_eq!(
            store.mark_deleted(CONN, OBJ, &gone, t(11)).await.unwrap(),
            0,
            "already deleted"
        );
        assert_eq!(store.mark_deleted(CONN, OBJ, &[], t(12)).await.unwrap(), 0);

        assert_eq!(store.live_remote_ids(CONN, OBJ).await.unwrap(), vec!["1", "4"]);
        let changed = store.changes_since(4, 10).await.unwrap();
        let changed: Vec<(&str, i64, bool)> = changed
            .iter()
            .map(|r| (r.remote_id.as_str(), r.change_seq, r.deleted))
            .collect();
        assert_eq!(changed, vec![("2", 5, true), ("3", 6, true)]);
        assert_eq!(
            store.records(CONN, OBJ).await.unwrap().len(),
            4,
            "deleted rows are kept"
        );
    })
    .await;
}

#[tokio::test]
async fn deleted_record_seen_again_comes_back() {
    on_each_database(|store| async move {
        store
            .apply_page(CONN, OBJ, &[rec("1", 0, json!({"v": 1}))], None)
            .await
            .unwrap();
        store.mark_deleted(CONN, OBJ, &["1".to_string()], t(1)).await.unwrap();

        // A restore is a newer version than the deletion.
        let applied = store
            .apply_page(CONN, OBJ, &[rec("1", 2, json!({"v": 1}))], None)
            .await
            .unwrap();
        assert_eq!(applied, outcome(0, 1, 0));
        let row = store.record(CONN, OBJ, "1").await.unwrap().unwrap();
        assert!(!row.deleted);
        assert_eq!(row.change_seq, 3);
        assert_eq!(store.live_remote_ids(CONN, OBJ).await.unwrap(), vec!["1"]);
    })
    .await;
}

#[tokio::test]
async fn deletion_wins_over_an_older_or_simultaneous_version_seen_later() {
    on_each_database(|store| async move {
        store
            .apply_page(CONN, OBJ, &[rec("1", 0, json!({"v": 1}))], None)
            .await
            .unwrap();
        store.mark_deleted(CONN, OBJ, &["1".to_string()], t(5)).await.unwrap();
        // A lagging search index or an overlap re-read returns versions from before the deletion.
        for secs in [0, 3, 5] {
            let applied = store
                .apply_page(CONN, OBJ, &[rec("1", secs, json!({"v": secs}))], None)
                .await
                .unwrap();
            assert_eq!(applied, outcome(0, 0, 1), "version at {secs}s");
        }
        let row = store.record(CONN, OBJ, "1").await.unwrap().unwrap();
        assert!(row.deleted);
        assert_eq!(row.remote_updated_at, t(5));
    })
    .await;
}

#[tokio::test]
async fn deletion_of_an_unseen_record_leaves_a_tombstone_that_blocks_older_versions() {
    on_each_database(|store| async move {
        assert_eq!(
            store.mark_deleted(CONN, OBJ, &["7".to_string()], t(5)).await.unwrap(),
            0,
            "no live row became deleted"
        );
        let tombstone = store.record(CONN, OBJ, "7").await.unwrap().unwrap();
        assert!(tombstone.deleted);
        assert_eq!(tombstone.remote_updated_at, t(5));
        assert_eq!(
            tombstone.change_seq, 1,
            "applications see the tombstone in change order"
        );
        let applied = store
            .apply_page(CONN, OBJ, &[rec("7", 4, json!({"v": 1}))], None)
            .await
            .unwrap();
        assert_eq!(applied, outcome(0, 0, 1));
        assert!(store.live_remote_ids(CONN, OBJ).await.unwrap().is_empty());
        // A later restore still comes back.
        let applied = store
            .apply_page(CONN, OBJ, &[rec("7", 6, json!({"v": 2}))], None)
            .await
            .unwrap();
        assert_eq!(applied, outcome(0, 1, 0));
        assert_eq!(store.live_remote_ids(CONN, OBJ).await.unwrap(), vec!["7"]);
    })
    .await;
}

// ---- cursors ----

#[tokio::test]
async fn cursor_is_stored_with_its_page() {
    on_each_database(|store| async move {
        assert_eq!(store.cursor(CONN, OBJ).await.unwrap(), None);
        assert_eq!(store.cursor_row(CONN, OBJ).await.unwrap(), None);

        let page = [rec("7", 3, json!({}))];
        store
            .apply_page(CONN, OBJ, &page, Some(&page[0].position()))
            .await
            .unwrap();
        assert_eq!(store.cursor(CONN, OBJ).await.unwrap(), Some(Cursor::new(t(3), "7")));
        let row = store.cursor_row(CONN, OBJ).await.unwrap().unwrap();
        assert!(row.advanced_at.is_some());
        assert_eq!(store.cursor(CONN, "deals").await.unwrap(), None, "streams are separate");

        // An empty page can still carry a cursor.
        store
            .apply_page(CONN, OBJ, &[], Some(&Cursor::new(t(4), "1")))
            .await
            .unwrap();
        assert_eq!(store.cursor(CONN, OBJ).await.unwrap(), Some(Cursor::new(t(4), "1")));
    })
    .await;
}

#[tokio::test]
async fn cursor_never_moves_backwards() {
    on_each_database(|store| async move {
        store
            .apply_page(CONN, OBJ, &[], Some(&Cursor::new(t(5), "10")))
            .await
            .unwrap();
        let advanced_at = store.cursor_row(CONN, OBJ).await.unwrap().unwrap().advanced_at;

        for older in [Cursor::new(t(4), "99"), Cursor::new(t(5), "9"), Cursor::new(t(5), "10")] {
            store.apply_page(CONN, OBJ, &[], Some(&older)).await.unwrap();
            assert_eq!(
                store.cursor(CONN, OBJ).await.unwrap(),
                Some(Cursor::new(t(5), "10")),
                "{older:?}"
            );
        }
        assert_eq!(
            store.cursor_row(CONN, OBJ).await.unwrap().unwrap().advanced_at,
            advanced_at
        );

        // Ids compare as numbers: "100" is past "10" (and would be before "9" as a string).
        store
            .apply_page(CONN, OBJ, &[], Some(&Cursor::new(t(5), "100")))
            .await
            .unwrap();
        assert_eq!(store.cursor(CONN, OBJ).await.unwrap(), Some(Cursor::new(t(5), "100")));
    })
    .await;
}

#[tokio::test]
async fn page_without_cursor_leaves_the_cursor_alone() {
    on_each_database(|store| async move {
        store
            .apply_page(CONN, OBJ, &[], Some(&Cursor::new(t(5), "1")))
            .await
            .unwrap();
        store
            .apply_page(CONN, OBJ, &[rec("2", 9, json!({}))], None)
            .await
            .unwrap();
        assert_eq!(store.cursor(CONN, OBJ).await.unwrap(), Some(Cursor::new(t(5), "1")));
    })
    .await;
}

#[tokio::test]
async fn pass_completion_and_sweep_times_are_recorded() {
    on_each_database(|store| async move {
        store.pass_completed(CONN, OBJ, t(100)).await.unwrap();
        store.swept(CONN, OBJ, t(200)).await.unwrap();
        store.pass_completed(CONN, OBJ, t(300)).await.unwrap();
        let row = store.cursor_row(CONN, OBJ).await.unwrap().unwrap();
        assert_eq!(row.pass_started_at, Some(t(300)));
        assert_eq!(row.swept_at, Some(t(200)));
        assert_eq!(store.cursor(CONN, OBJ).await.unwrap(), None, "no cursor yet");
    })
    .await;
}

// ---- change order ----

#[tokio::test]
async fn changes_since_returns_rows_in_change_seq_order() {
    on_each_database(|store| async move {
        store
            .apply_page(CONN, OBJ, &[rec("a", 0, json!({})), rec("b", 0, json!({}))], None)
            .await
            .unwrap();
        store
            .apply_page(CONN, "deals", &[rec("c", 0, json!({}))], None)
            .await
            .unwrap();
        store
            .apply_page(CONN, OBJ, &[rec("a", 1, json!({"v": 2}))], None)
            .await
            .unwrap();

        let all = store.changes_since(0, 100).await.unwrap();
        let order: Vec<(&str, i64)> = all.iter().map(|r| (r.remote_id.as_str(), r.change_seq)).collect();
        assert_eq!(
            order,
            vec![("b", 2), ("c", 3), ("a", 4)],
            "a moved to the end when it changed"
        );
        let page: Vec<i64> = store
            .changes_since(2, 1)
            .await
            .unwrap()
            .iter()
            .map(|r| r.change_seq)
            .collect();
        assert_eq!(page, vec![3]);
    })
    .await;
}

#[tokio::test]
async fn reader_polling_changes_never_skips_a_row_under_concurrent_writers() {
    on_each_database(|store| async move {
        const WRITERS: usize = 6;
        const PAGES: usize = 40;
        const PER_PAGE: usize = 5;
        let done = Arc::new(AtomicBool::new(false));

        let reader = {
            let store = store.clone();
            let done = done.clone();
            tokio::spawn(async move {
                let mut last = 0i64;
                let mut seen: Vec<(String, String, i64)> = Vec::new();
                loop {
                    // Read `done` before polling: if it was set, this poll sees every committed row.
                    let finished = done.load(Ordering::SeqCst);
                    let batch = store.changes_since(last, 64).await.unwrap();
                    for row in &batch {
                        assert!(row.change_seq > last, "change_seq goes up");
                        last = row.change_seq;
                        seen.push((row.object.clone(), row.remote_id.clone(), row.change_seq));
                    }
                    if batch.is_empty() {
                        if finished {
                            return seen;
                        }
                        tokio::task::yield_now().await;
                    }
                }
            })
        };

        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                let store = store.clone();
                tokio::spawn(async move {
                    let object = format!("object-{w}");
                    for p in 0..PAGES {
                        let page: Vec<RemoteRecord> = (0..PER_PAGE)
                            .map(|i| rec(&format!("{p}-{i}"), p as i64, json!({"w": w, "p": p, "i": i})))
                            .collect();
                        let cursor = page.last().unwrap().position();
                        store.apply_page(CONN, &object, &page, Some(&cursor)).await.unwrap();
                    }
                })
            })
            .collect();
        for writer in writers {
            writer.await.unwrap();
        }
        done.store(true, Ordering::SeqCst);
        let seen = tokio::time::timeout(Duration::from_secs(30), reader)
            .await
            .unwrap()
            .unwrap();

        let all = store.changes_since(0, 100_000).await.unwrap();
        assert_eq!(all.len(), WRITERS * PAGES * PER_PAGE);
        let expected: Vec<(String, String, i64)> = all
            .iter()
            .map(|r| (r.object.clone(), r.remote_id.clone(), r.change_seq))
            .collect();
        // The poller's change_seqs went strictly up (asserted as it read), so "every row, once, in order" is:
        let seen_set: HashSet<&(String, String, i64)> = seen.iter().collect();
        let missed: Vec<_> = expected.iter().filter(|row| !seen_set.contains(row)).collect();
        assert!(
            missed.is_empty(),
            "the poller skipped {} rows, first {:?}",
            missed.len(),
            missed.first()
        );
        assert_eq!(seen.len(), expected.len(), "and saw nothing twice");
    })
    .await;
}

#[tokio::test]
async fn concurrent_pages_of_one_stream_keep_the_newest_version() {
    on_each_database(|store| async move {
        let tasks: Vec<_> = (0..8i64)
            .map(|v| {
                let store = store.clone();
                tokio::spawn(async move {
                    let page: Vec<RemoteRecord> = (0..20).map(|i| rec(&i.to_string(), v, json!({"v": v}))).collect();
                    let cursor = Cursor::new(t(v), "19");
                    store.apply_page(CONN, OBJ, &page, Some(&cursor)).await.unwrap()
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        for row in store.records(CONN, OBJ).await.unwrap() {
            assert_eq!(
                (row.data, row.remote_updated_at),
                (json!({"v": 7}), t(7)),
                "{}",
                row.remote_id
            );
        }
        assert_eq!(store.cursor(CONN, OBJ).await.unwrap(), Some(Cursor::new(t(7), "19")));
    })
    .await;
}

// ---- webhook inbox ----

#[tokio::test]
async fn redelivered_webhook_event_is_stored_once() {
    on_each_database(|store| async move {
        let first = store
            .insert_webhook_events(CONN, &[event("e1"), event("e2")])
            .await
            .unwrap();
        assert_eq!((first.inserted, first.duplicates), (2, 0));
        let again = store
            .insert_webhook_events(CONN, &[event("e2"), event("e3"), event("e3")])
            .await
            .unwrap();
        assert_eq!(
            (again.inserted, again.duplicates),
            (1, 2),
            "e2 redelivered, e3 repeated"
        );
        let other = store.insert_webhook_events("odoo", &[event("e1")]).await.unwrap();
        assert_eq!(other.inserted, 1, "event ids are per connection");
        assert_eq!(store.insert_webhook_events(CONN, &[]).await.unwrap().inserted, 0);

        let pending = store.pending_webhook_events(CONN, 10).await.unwrap();
        let ids: Vec<&str> = pending.iter().map(|e| e.event_id.as_str()).collect();
        assert_eq!(ids, vec!["e1", "e2", "e3"], "oldest first");
        assert_eq!(pending[0].status, WebhookStatus::Received);
        assert_eq!(pending[0].body, json!({"eventId": "e1", "objectId": 7}));
        assert_eq!(pending[0].object.as_deref(), Some(OBJ));
        assert_eq!(store.pending_webhook_events(CONN, 2).await.unwrap().len(), 2);
    })
    .await;
}

#[tokio::test]
async fn a_group_commit_tells_each_request_what_became_of_its_own_events() {
    on_each_database(|store| async move {
        store.insert_webhook_events(CONN, &[event("old")]).await.unwrap();
        let first = [event("old"), event("a1"), event("shared")];
        let second = [event("shared"), event("b1")];
        let elsewhere = [event("a1")];
        let outcomes = store
            .insert_webhook_batches(&[
                WebhookBatch {
                    connection: CONN,
                    events: &first,
                },
                WebhookBatch {
                    connection: CONN,
                    events: &second,
                },
                WebhookBatch {
                    connection: "odoo",
                    events: &elsewhere,
                },
            ])
            .await
            .unwrap();
        assert_eq!(
            outcomes,
            vec![
                InboxOutcome {
                    inserted: 2,
                    duplicates: 1
                },
                InboxOutcome {
                    inserted: 1,
                    duplicates: 1
                },
                InboxOutcome {
                    inserted: 1,
                    duplicates: 0
                },
            ],
            "old was stored before; shared counts for the first request only; ids are per connection"
        );
        let pending = store.pending_webhook_events(CONN, 10).await.unwrap();
        let ids: Vec<&str> = pending.iter().map(|e| e.event_id.as_str()).collect();
        assert_eq!(ids, vec!["old", "a1", "shared", "b1"]);
        assert_eq!(store.pending_webhook_events("odoo", 10).await.unwrap().len(), 1);
    })
    .await;
}

#[tokio::test]
async fn the_inbox_writer_commits_concurrent_requests_and_a_refused_event_fails_alone() {
    on_each_database(|store| async move {
        let writer = InboxWriter::spawn(store.clone());
        // PostgreSQL's jsonb refuses a NUL character, which makes the whole group's transaction fail; SQLite
        // stores it. Either way every other request must be stored and answered as stored.
        let mut poison = event("poison");
        poison.body = json!({"name": "nul\u{0}"});
        let mut requests = Vec::new();
        for i in 0..64 {
            let writer = writer.clone();
            let events = if i == 17 {
                vec![poison.clone()]
            } else {
                vec![event(&format!("w{i}")), event("dup")]
            };
            requests.push(tokio::spawn(async move { (i, writer.insert(CONN, events).await) }));
        }
        let mut dup_stored = 0;
        for request in requests {
            let (i, outcome) = request.await.unwrap();
            if i == 17 {
                assert_eq!(outcome.is_err(), store.backend() == DbBackend::Postgres, "{outcome:?}");
                continue;
            }
            let outcome = outcome.unwrap();
            assert_eq!(outcome.inserted + outcome.duplicates, 2);
            assert!(outcome.inserted >= 1, "its own event is new");
            dup_stored += outcome.inserted - 1;
        }
        assert_eq!(dup_stored, 1, "the shared event id is stored once, for one request");
        let stored = store.pending_webhook_events(CONN, 1000).await.unwrap();
        let expected = if store.backend() == DbBackend::Postgres { 64 } else { 65 };
        assert_eq!(
            stored.len(),
            expected,
            "63 own events, dup once, and the poison on SQLite"
        );
    })
    .await;
}

#[tokio::test]
async fn finished_webhook_events_leave_the_pending_list() {
    on_each_database(|store| async move {
        store.insert_webhook_events(CONN, &[event("e1"), event("e2"), event("e3")]).await.unwrap();
        let pending = store.pending_webhook_events(CONN, 10).await.unwrap();

        store.finish_webhook_events(&[pending[0].id, pending[1].id], Ok(())).await.unwrap();
        store.finish_webhook_events(&[pending[2].id], Err("CRM said 404".into())).await.unwrap();
        store.finish_webhook_events(&[], Ok(())).await.unwrap();

        assert!(store.pending_webhook_events(CONN, 10).await.unwrap().is_empty());
        let rows: Vec<(String, String, i32, Option<String>, bool)> = store
            .db()
            .query_all_raw(Statement::from_string(
                store.backend(),
                "SELECT event_id, status, attempts, last_error, processed_at IS NOT NULL FROM webhook_events ORDER BY id",
            ))
            .await
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r.try_get_by_index(0).unwrap(),
                    r.try_get_by_index(1).unwrap(),
                    r.try_get_by_index(2).unwrap(),
                    r.try_get_by_index(3).unwrap(),
                    r.try_get_by_index(4).unwrap(),
                )
            })
            .collect();
        assert_eq!(
            rows,
            vec![
                ("e1".into(), "processed".into(), 1, None, true),
                ("e2".into(), "processed".into(), 1, None, true),
                ("e3".into(), "failed".into(), 1, Some("CRM said 404".into()), false),
            ],
            "statuses are stored as lowercase words"
        );
    })
    .await;
}

// ---- outbox ----

#[tokio::test]
async fn enqueue_with_a_used_key_gives_existing_for_the_same_body_and_conflict_for_another() {
    on_each_database(|store| async move {
        let Enqueued::Created(created) = store.enqueue_write(write("k1", json!({"a": 1, "b": 2}))).await.unwrap()
        else {
            panic!("first enqueue creates")
        };
        assert_eq!(created.status, OutboxStatus::Pending);
        assert_eq!(created.attempts, 0);
        assert_eq!(created.properties, json!({"a": 1, "b": 2}));

        let same = write("k1", serde_json::from_str(r#"{"b":2,"a":1}"#).unwrap());
        assert_eq!(
            store.enqueue_write(same).await.unwrap(),
            Enqueued::Existing(created.clone())
        );

        let other = write("k1", json!({"a": 2}));
        assert_eq!(
            store.enqueue_write(other).await.unwrap(),
            Enqueued::Conflict(created.clone())
        );
        let mut other_match = write("k1", json!({"a": 1, "b": 2}));
        other_match.match_value = Some("b@example.com".into());
        assert!(matches!(
            store.enqueue_write(other_match).await.unwrap(),
            Enqueued::Conflict(_)
        ));

        assert_eq!(store.write_by_id(created.id).await.unwrap(), Some(created));
        assert_eq!(store.write_by_id(-1).await.unwrap(), None);
    })
    .await;
}

#[tokio::test]
async fn concurrent_enqueues_of_one_key_leave_one_row() {
    on_each_database(|store| async move {
        let tasks: Vec<_> = (0..20)
            .map(|_| {
                let store = store.clone();
                tokio::spawn(async move { store.enqueue_write(write("same-key", json!({"n": 1}))).await.unwrap() })
            })
            .collect();
        let mut created = 0;
        let mut ids = HashSet::new();
        for task in tasks {
            match task.await.unwrap() {
                Enqueued::Created(w) => {
                    created += 1;
                    ids.insert(w.id);
                }
                Enqueued::Existing(w) => {
                    ids.insert(w.id);
                }
                Enqueued::Conflict(w) => panic!("same body cannot conflict: {w:?}"),
            }
        }
        assert_eq!(created, 1);
        assert_eq!(ids.len(), 1);
        assert_eq!(
            store.outbox_counts(CONN).await.unwrap(),
            OutboxCounts { pending: 1, dead: 0 }
        );
    })
    .await;
}

#[tokio::test]
async fn due_writes_waits_for_next_attempt_at() {
    on_each_database(|store| async move {
        let Enqueued::Created(w1) = store.enqueue_write(write("k1", json!({}))).await.unwrap() else {
            panic!()
        };
        let Enqueued::Created(w2) = store.enqueue_write(write("k2", json!({}))).await.unwrap() else {
            panic!()
        };
        let now = Utc::now();
        let due: Vec<i64> = store
            .due_writes(CONN, now, 10)
            .await
            .unwrap()
            .iter()
            .map(|w| w.id)
            .collect();
        assert_eq!(due, vec![w1.id, w2.id], "oldest first");
        assert!(store.due_writes("other", now, 10).await.unwrap().is_empty());

        let later = now + chrono::Duration::seconds(30);
        store.write_retry(w1.id, "429", later).await.unwrap();
        let due: Vec<i64> = store
            .due_writes(CONN, now, 10)
            .await
            .unwrap()
            .iter()
            .map(|w| w.id)
            .collect();
        assert_eq!(due, vec![w2.id]);
        let due: Vec<i64> = store
            .due_writes(CONN, later, 10)
            .await
            .unwrap()
            .iter()
            .map(|w| w.id)
            .collect();
        assert_eq!(due, vec![w1.id, w2.id]);
        assert_eq!(store.due_writes(CONN, later, 1).await.unwrap().len(), 1);

        let retried = store.write_by_id(w1.id).await.unwrap().unwrap();
        assert_eq!((retried.attempts, retried.last_error.as_deref()), (1, Some("429")));
        assert_eq!(retried.status, OutboxStatus::Pending);

        store.write_done(w2.id, "crm-42").await.unwrap();
        let done = store.write_by_id(w2.id).await.unwrap().unwrap();
        assert_eq!(
            (done.status, done.remote_id.as_deref()),
            (OutboxStatus::Done, Some("crm-42"))
        );
        let due: Vec<i64> = store
            .due_writes(CONN, later, 10)
            .await
            .unwrap()
            .iter()
            .map(|w| w.id)
            .collect();
        assert_eq!(due, vec![w1.id], "done writes are not due");
    })
    .await;
}

#[tokio::test]
async fn dead_write_can_be_replayed() {
    on_each_database(|store| async move {
        let Enqueued::Created(w) = store.enqueue_write(write("k1", json!({}))).await.unwrap() else {
            panic!()
        };
        store
            .write_retry(w.id, "timeout", Utc::now() - chrono::Duration::seconds(1))
            .await
            .unwrap();
        store.write_dead(w.id, "400 invalid email").await.unwrap();

        let dead = store.write_by_id(w.id).await.unwrap().unwrap();
        assert_eq!((dead.status, dead.attempts), (OutboxStatus::Dead, 2));
        assert_eq!(dead.last_error.as_deref(), Some("400 invalid email"));
        assert!(
            store.due_writes(CONN, Utc::now(), 10).await.unwrap().is_empty(),
            "dead writes are not due"
        );
        assert_eq!(
            store.outbox_counts(CONN).await.unwrap(),
            OutboxCounts { pending: 0, dead: 1 }
        );

        let replayed = store.replay_write(w.id).await.unwrap().unwrap();
        assert_eq!(
            (replayed.status, replayed.attempts),
            (OutboxStatus::Pending, 2),
            "attempts are kept"
        );
        assert_eq!(store.due_writes(CONN, Utc::now(), 10).await.unwrap().len(), 1);
        assert_eq!(
            store.outbox_counts(CONN).await.unwrap(),
            OutboxCounts { pending: 1, dead: 0 }
        );

        store.write_done(w.id, "r1").await.unwrap();
        let again = store.replay_write(w.id).await.unwrap().unwrap();
        assert_eq!(again.status, OutboxStatus::Done, "only dead writes are replayed");
        assert_eq!(store.replay_write(-1).await.unwrap(), None);
        assert_eq!(store.outbox_counts(CONN).await.unwrap(), OutboxCounts::default());
    })
    .await;
}

#[tokio::test]
async fn statuses_are_stored_as_lowercase_words() {
    on_each_database(|store| async move {
        let Enqueued::Created(a) = store.enqueue_write(write("a", json!({}))).await.unwrap() else {
            panic!()
        };
        let Enqueued::Created(b) = store.enqueue_write(write("b", json!({}))).await.unwrap() else {
            panic!()
        };
        store.enqueue_write(write("c", json!({}))).await.unwrap();
        store.write_done(a.id, "1").await.unwrap();
        store.write_dead(b.id, "no").await.unwrap();
        let statuses: Vec<String> = store
            .db()
            .query_all_raw(Statement::from_string(
                store.backend(),
                "SELECT status FROM outbox ORDER BY id",
            ))
            .await
            .unwrap()
            .iter()
            .map(|r| r.try_get_by_index(0).unwrap())
            .collect();
        assert_eq!(statuses, vec!["done", "dead", "pending"]);
    })
    .await;
}

// ---- connecting and errors ----

#[tokio::test]
async fn sqlite_file_and_directory_are_created_with_wal_journal() {
    let db = TestDatabase::sqlite().await;
    let dir = db
        .url
        .trim_start_matches("sqlite://")
        .trim_end_matches("?mode=rwc")
        .replace("crmsyncd.db", "");
    let url = format!("sqlite://{dir}nested/deeper/state.db");
    let store = Store::connect(&url).await.unwrap();
    store.migrate().await.unwrap();
    assert_eq!(store.backend(), DbBackend::Sqlite);
    assert!(std::path::Path::new(&format!("{dir}nested/deeper/state.db")).exists());
    let mode: String = store
        .db()
        .query_one_raw(Statement::from_string(DbBackend::Sqlite, "PRAGMA journal_mode"))
        .await
        .unwrap()
        .unwrap()
        .try_get_by_index(0)
        .unwrap();
    assert_eq!(mode, "wal");
    store.close().await;
}

#[tokio::test]
async fn in_memory_sqlite_keeps_one_database_across_calls() {
    let store = Store::connect("sqlite::memory:").await.unwrap();
    store.migrate().await.unwrap();
    store
        .apply_page(CONN, OBJ, &[rec("1", 0, json!({}))], None)
        .await
        .unwrap();
    assert_eq!(store.records(CONN, OBJ).await.unwrap().len(), 1);
}

#[tokio::test]
async fn unsupported_url_is_rejected_as_permanent() {
    let err = Store::connect("mysql://localhost/x").await.unwrap_err();
    assert!(matches!(err, StoreError::InvalidUrl(_)), "{err}");
    assert!(!err.is_transient());
}

#[tokio::test]
async fn refused_connection_is_transient() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let options = StoreOptions {
        acquire_timeout: Duration::from_secs(2),
        ..Default::default()
    };
    let err = Store::connect_with(&format!("postgres://postgres@127.0.0.1:{port}/x"), &options)
        .await
        .unwrap_err();
    assert!(err.is_transient(), "{err:?}");
}

#[tokio::test]
async fn closed_pool_is_transient() {
    on_each_database(|store| async move {
        store.close().await;
        let err = store.ping().await.unwrap_err();
        assert!(err.is_transient(), "{err:?}");
        let err = store
            .apply_page(CONN, OBJ, &[rec("1", 0, json!({}))], None)
            .await
            .unwrap_err();
        assert!(err.is_transient(), "{err:?}");
    })
    .await;
}

#[tokio::test]
async fn locked_sqlite_database_is_transient() {
    let db = TestDatabase::sqlite().await;
    let holder = Store::connect(&db.url).await.unwrap();
    holder.migrate().await.unwrap();
    let impatient = StoreOptions {
        sqlite_busy_timeout: Duration::ZERO,
        ..Default::default()
    };
    let other = Store::connect_with(&db.url, &impatient).await.unwrap();

    let options = TransactionOptions {
        sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
        ..Default::default()
    };
    let lock = holder.db().begin_with_options(options).await.unwrap();
    let err = other.enqueue_write(write("k", json!({}))).await.unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    lock.rollback().await.unwrap();
    assert!(matches!(
        other.enqueue_write(write("k", json!({}))).await.unwrap(),
        Enqueued::Created(_)
    ));
}

#[tokio::test]
async fn constraint_violation_is_not_transient() {
    on_each_database(|store| async move {
        let sql = "INSERT INTO change_counter (id, value) VALUES (1, 0)";
        let err: StoreError = store.db().execute_unprepared(sql).await.unwrap_err().into();
        assert!(!err.is_transient(), "{err:?}");
    })
    .await;
}

#[tokio::test]
async fn records_round_trip_through_both_backends_identically() {
    /// (remote_id, data, remote_updated_at, deleted, change_seq)
    type Summary = (String, Value, DateTime<Utc>, bool, i64);
    let mut results: BTreeMap<&'static str, Vec<Summary>> = BTreeMap::new();
    for db in TestDatabase::all().await {
        let store = Store::connect(&db.url).await.unwrap();
        store.migrate().await.unwrap();
        let data = json!({"name": "Zoë", "n": 1.5, "tags": ["a", "b"], "nested": {"x": null}});
        store.apply_page(CONN, OBJ, &[rec("1", 7, data)], None).await.unwrap();
        let rows = store.records(CONN, OBJ).await.unwrap();
        results.insert(
            db.backend,
            rows.into_iter()
                .map(|r| (r.remote_id, r.data, r.remote_updated_at, r.deleted, r.change_seq))
                .collect(),
        );
        store.close().await;
        db.cleanup().await;
    }
    let mut values = results.values();
    let first = values.next().unwrap();
    for other in values {
        assert_eq!(other, first);
    }
}

/// A prepared statement's generic plan, made without the parameters' values, stopped using the index for a page
/// lookup as the table grew; every PostgreSQL session plans each statement for its own values instead.
#[tokio::test]
async fn postgres_sessions_plan_each_statement_for_its_own_values() {
    let Some(db) = TestDatabase::postgres().await else {
        return;
    };
    let store = Store::connect(&db.url).await.unwrap();
    // The option is part of every session's startup packet, so any pooled session shows it.
    {
        let row = store
            .db()
            .query_one_raw(Statement::from_string(DbBackend::Postgres, "SHOW plan_cache_mode"))
            .await
            .unwrap()
            .unwrap();
        let mode: String = row.try_get_by_index(0).unwrap();
        assert_eq!(mode, "force_custom_plan");
    }
    store.close().await;
    db.cleanup().await;
}

/// A `records` table that was never analysed made PostgreSQL take a stream for a couple of rows, so it read the
/// whole stream for every page's `remote_id IN (...)` lookup; the store analyses the table as a bulk load grows it,
/// so the planner knows the stream's real size.
#[tokio::test]
async fn a_bulk_load_gives_the_planner_the_true_size_of_the_stream() {
    let Some(db) = TestDatabase::postgres().await else {
        return;
    };
    let store = Store::connect(&db.url).await.unwrap();
    store.migrate().await.unwrap();
    for page in 0..4 {
        let records: Vec<RemoteRecord> = (0..500)
            .map(|i| rec(&format!("{}", page * 500 + i), i, json!({"n": i})))
            .collect();
        store.apply_page(CONN, OBJ, &records, None).await.unwrap();
    }
    let plan = store
        .db()
        .query_one_raw(Statement::from_string(
            DbBackend::Postgres,
            format!("EXPLAIN SELECT remote_id FROM records WHERE connection_id = '{CONN}' AND object = '{OBJ}'"),
        ))
        .await
        .unwrap()
        .unwrap()
        .try_get_by_index::<String>(0)
        .unwrap();
    let estimate: u64 = plan
        .split("rows=")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("a row estimate in {plan:?}"));
    // 2,000 rows are stored; without statistics PostgreSQL estimates about 2 (0.5% of 0.5% of the table).
    assert!(
        estimate >= 1_000,
        "the planner estimates {estimate} rows for a stream of 2,000: {plan}"
    );
    store.close().await;
    db.cleanup().await;
}
