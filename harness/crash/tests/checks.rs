//! The harness's comparison must catch each kind of loss; a checker that always passes proves nothing.

use std::collections::{BTreeSet, HashSet};

use chrono::{DateTime, TimeZone, Utc};
use crmsyncd_crash::Problem;
use crmsyncd_crash::checks::{LocalRecord, TruthRecord, compare_records, cursor_ahead, lost_webhooks, writes_not_once};
use serde_json::{Map, Value, json};

fn at(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).unwrap()
}

fn fields(v: Value) -> Map<String, Value> {
    v.as_object().unwrap().clone()
}

fn truth(id: &str, ms: i64, deleted: bool, name: &str) -> TruthRecord {
    TruthRecord {
        id: id.into(),
        updated_at_ms: ms,
        deleted,
        fields: fields(json!({"name": name})),
    }
}

fn local(id: &str, ms: i64, deleted: bool, name: &str) -> LocalRecord {
    LocalRecord {
        id: id.into(),
        updated_at: at(ms),
        deleted,
        data: json!({"name": name, "extra": 1}),
    }
}

#[test]
fn identical_streams_have_no_problems() {
    let t = [truth("1", 1_000, false, "a"), truth("2", 2_000, true, "b")];
    let l = [local("1", 1_000, false, "a"), local("2", 2_500, true, "")];
    assert_eq!(compare_records("s", &t, &l), vec![]);
    // A record deleted in the CRM may also be absent locally.
    assert_eq!(compare_records("s", &t, &l[..1]), vec![]);
}

#[test]
fn each_kind_of_record_loss_is_reported() {
    let t = [
        truth("missing", 1_000, false, "a"),
        truth("stale", 2_000, false, "b"),
        truth("field", 3_000, false, "c"),
        truth("undeleted", 4_000, true, "d"),
        truth("wrongly-deleted", 5_000, false, "e"),
    ];
    let l = [
        local("stale", 1_500, false, "b"),
        local("field", 3_000, false, "other"),
        local("undeleted", 3_900, false, "d"),
        local("wrongly-deleted", 5_000, true, "e"),
        local("gone-from-crm", 6_000, false, "f"),
    ];
    let problems = compare_records("s", &t, &l);
    let s = || "s".to_string();
    assert_eq!(
        problems,
        vec![
            Problem::Missing {
                stream: s(),
                id: "missing".into()
            },
            Problem::Stale {
                stream: s(),
                id: "stale".into(),
                local_ms: 1_500,
                truth_ms: 2_000
            },
            Problem::FieldDiffers {
                stream: s(),
                id: "field".into(),
                field: "name".into()
            },
            Problem::NotDeleted {
                stream: s(),
                id: "undeleted".into()
            },
            Problem::WronglyDeleted {
                stream: s(),
                id: "wrongly-deleted".into()
            },
            Problem::NotDeleted {
                stream: s(),
                id: "gone-from-crm".into()
            },
        ]
    );
}

#[test]
fn an_acknowledged_webhook_missing_from_the_inbox_is_lost() {
    let acknowledged: BTreeSet<String> = ["e1", "e2", "e3"].map(String::from).into();
    let stored: HashSet<String> = ["e1", "e3", "unacknowledged"].map(String::from).into();
    assert_eq!(
        lost_webhooks("c", &acknowledged, &stored),
        vec![Problem::WebhookLost {
            connection: "c".into(),
            event_id: "e2".into()
        }]
    );
    assert!(lost_webhooks("c", &acknowledged, &acknowledged.iter().cloned().collect()).is_empty());
}

#[test]
fn a_write_created_twice_or_never_is_reported() {
    let creates = [("once".to_string(), 1), ("twice".into(), 2), ("never".into(), 0)];
    let keys: Vec<String> = writes_not_once("c", &creates)
        .into_iter()
        .map(|p| match p {
            Problem::WriteNotOnce { key, .. } => key,
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(keys, ["twice", "never"]);
}

#[test]
fn a_cursor_past_the_stored_data_is_reported() {
    let l = [local("7", 1_000, false, "a"), local("9", 2_000, true, "b")];
    assert_eq!(cursor_ahead("s", None, &l), None);
    assert_eq!(cursor_ahead("s", Some((at(1_000), "7".into())), &l), None);
    // Record 9 was deleted after the cursor reached it: its time moved up, the cursor is still backed.
    assert_eq!(cursor_ahead("s", Some((at(1_500), "9".into())), &l), None);
    assert!(
        cursor_ahead("s", Some((at(1_001), "7".into())), &l).is_some(),
        "cursor later than its record"
    );
    assert!(
        cursor_ahead("s", Some((at(500), "8".into())), &l).is_some(),
        "cursor on a record never stored"
    );
}
