//! The comparison at the end of a run, as pure functions over plain values so that each can be shown to fail:
//! records against the simulators' truth, acknowledged webhooks against the inbox, pushed writes against the
//! simulators' create counters, and cursors against the stored data.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

/// One record as the CRM simulator holds it now.
#[derive(Debug, Clone, PartialEq)]
pub struct TruthRecord {
    pub id: String,
    /// The CRM's modified time, in milliseconds.
    pub updated_at_ms: i64,
    /// Deleted (archived in HubSpot); such a record may be absent locally or marked deleted, never live.
    pub deleted: bool,
    /// Fields whose local copy must be equal.
    pub fields: Map<String, Value>,
}

/// One record as the daemon stored it.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalRecord {
    pub id: String,
    pub updated_at: DateTime<Utc>,
    pub deleted: bool,
    pub data: Value,
}

/// Something the daemon lost or got wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// A live CRM record with no local row.
    Missing { stream: String, id: String },
    /// Live in the CRM, deleted locally.
    WronglyDeleted { stream: String, id: String },
    /// Deleted in the CRM (or gone from it), live locally.
    NotDeleted { stream: String, id: String },
    /// A local copy older or newer than the CRM's version.
    Stale {
        stream: String,
        id: String,
        local_ms: i64,
        truth_ms: i64,
    },
    /// A field differs from the CRM's value.
    FieldDiffers { stream: String, id: String, field: String },
    /// A webhook answered 2xx whose event is not in the inbox.
    WebhookLost { connection: String, event_id: String },
    /// A write acknowledged by the API that the CRM did not create exactly once.
    WriteNotOnce {
        connection: String,
        key: String,
        creates: usize,
    },
    /// A write that never reached status "done".
    WriteNotDone {
        connection: String,
        key: String,
        status: String,
    },
    /// A stored cursor with no stored record at or past it.
    CursorAhead { stream: String, cursor: String },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Missing { stream, id } => write!(f, "{stream} {id}: live in the CRM, missing locally"),
            Problem::WronglyDeleted { stream, id } => write!(f, "{stream} {id}: live in the CRM, deleted locally"),
            Problem::NotDeleted { stream, id } => write!(f, "{stream} {id}: deleted in the CRM, live locally"),
            Problem::Stale {
                stream,
                id,
                local_ms,
                truth_ms,
            } => write!(f, "{stream} {id}: local version at {local_ms} ms, CRM at {truth_ms} ms"),
            Problem::FieldDiffers { stream, id, field } => write!(f, "{stream} {id}: field {field} differs"),
            Problem::WebhookLost { connection, event_id } => {
                write!(
                    f,
                    "{connection}: webhook event {event_id} was acknowledged but is not in the inbox"
                )
            }
            Problem::WriteNotOnce {
                connection,
                key,
                creates,
            } => write!(f, "{connection}: write {key} created {creates} times"),
            Problem::WriteNotDone {
                connection,
                key,
                status,
            } => write!(f, "{connection}: write {key} ended {status}, not done"),
            Problem::CursorAhead { stream, cursor } => {
                write!(f, "{stream}: cursor {cursor} is past every stored record")
            }
        }
    }
}

/// Compares one stream (`stream` names it in problems): every live CRM record present, live, at the same
/// version and with equal fields; every deleted one absent or deleted; every local live row still in the CRM.
pub fn compare_records(stream: &str, truth: &[TruthRecord], local: &[LocalRecord]) -> Vec<Problem> {
    let mut problems = Vec::new();
    let local_by_id: HashMap<&str, &LocalRecord> = local.iter().map(|r| (r.id.as_str(), r)).collect();
    let stream_ = || stream.to_owned();
    for record in truth {
        let id = record.id.clone();
        match local_by_id.get(record.id.as_str()) {
            None if record.deleted => {}
            None => problems.push(Problem::Missing { stream: stream_(), id }),
            Some(row) if record.deleted => {
                if !row.deleted {
                    problems.push(Problem::NotDeleted { stream: stream_(), id });
                }
            }
            Some(row) if row.deleted => problems.push(Problem::WronglyDeleted { stream: stream_(), id }),
            Some(row) => {
                let local_ms = row.updated_at.timestamp_millis();
                if local_ms != record.updated_at_ms {
                    problems.push(Problem::Stale {
                        stream: stream_(),
                        id,
                        local_ms,
                        truth_ms: record.updated_at_ms,
                    });
                    continue;
                }
                for (field, value) in &record.fields {
                    if row.data.get(field) != Some(value) {
                        problems.push(Problem::FieldDiffers {
                            stream: stream_(),
                            id: id.clone(),
                            field: field.clone(),
                        });
                    }
                }
            }
        }
    }
    let known: HashSet<&str> = truth.iter().map(|r| r.id.as_str()).collect();
    for row in local {
        if !row.deleted && !known.contains(row.id.as_str()) {
            problems.push(Problem::NotDeleted {
                stream: stream_(),
                id: row.id.clone(),
            });
        }
    }
    problems
}

/// Every event id in `acknowledged` (answered 2xx) must be in `stored` (the connection's inbox).
pub fn lost_webhooks(connection: &str, acknowledged: &BTreeSet<String>, stored: &HashSet<String>) -> Vec<Problem> {
    acknowledged
        .iter()
        .filter(|id| !stored.contains(*id))
        .map(|id| Problem::WebhookLost {
            connection: connection.to_owned(),
            event_id: id.clone(),
        })
        .collect()
}

/// Each acknowledged write (its idempotency key and how often the CRM created it) must have been created once.
pub fn writes_not_once(connection: &str, creates: &[(String, usize)]) -> Vec<Problem> {
    creates
        .iter()
        .filter(|(_, n)| *n != 1)
        .map(|(key, n)| Problem::WriteNotOnce {
            connection: connection.to_owned(),
            key: key.clone(),
            creates: *n,
        })
        .collect()
}

/// A cursor `(ts, id)` is only ever stored with the page that holds record `id` at `ts`: that row must exist, at
/// `ts` or later (a later version, or its deletion, moves its time up; nothing moves it down).
pub fn cursor_ahead(stream: &str, cursor: Option<(DateTime<Utc>, String)>, local: &[LocalRecord]) -> Option<Problem> {
    let (ts, id) = cursor?;
    let backed = local
        .iter()
        .any(|r| r.id == id && r.updated_at.timestamp_micros() >= ts.timestamp_micros());
    (!backed).then(|| Problem::CursorAhead {
        stream: stream.to_owned(),
        cursor: format!("({ts}, {id})"),
    })
}
