//! The fake Zoho's endpoints: COQL, the record list (with Zoho's own page tokens), upsert, the delete log and
//! notification subscriptions. Each takes the store lock once and never across an await.

use std::cmp::Ordering;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::Utc;
use http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::coql::{self, Cell};
use super::notifications::Channel;
use super::store::{Store, Stored};
use super::time::{format_time, now_s, parse_time};
use super::wire::{error, record_json, user};
use super::{Change, Shared};
use crate::server::{SimRequest, SimResponse};

/// Records per page of the list API (Zoho: 200).
pub const MAX_PER_PAGE: usize = 200;
/// How far `page` (not `page_token`) may reach into a listing (Zoho: 2,000 records).
pub const MAX_PAGE_REACH: usize = 2_000;
/// Records per upsert call (Zoho: 100).
pub const MAX_UPSERT: usize = 100;
/// Ids per `?ids=` read (Zoho: 100).
pub const MAX_IDS: usize = 100;

/// The modules every org has; others exist once seeded.
const STANDARD_MODULES: &[&str] = &["Leads", "Contacts", "Accounts", "Deals"];

/// Fields a module's records cannot be created without.
fn mandatory(module: &str) -> &'static [&'static str] {
    match module {
        "Leads" | "Contacts" => &["Last_Name"],
        "Accounts" => &["Account_Name"],
        "Deals" => &["Deal_Name", "Stage"],
        _ => &[],
    }
}

/// The fields an upsert checks for a duplicate when the request names none (Zoho's system-defined ones).
fn default_duplicate_check(module: &str) -> &'static [&'static str] {
    match module {
        "Leads" | "Contacts" => &["Email"],
        "Accounts" => &["Account_Name"],
        "Deals" => &["Deal_Name"],
        _ => &[],
    }
}

fn invalid_module(module: &str) -> SimResponse {
    error(
        StatusCode::BAD_REQUEST,
        "INVALID_MODULE",
        "the module name given seems to be invalid",
        json!({"module": module}),
    )
}

/// A field's value as COQL and the list API compare it.
fn cell(id: u64, record: &Stored, field: &str) -> Cell {
    let Some(version) = record.visible() else {
        return Cell::Null;
    };
    match field {
        "id" => Cell::Id(id),
        "Modified_Time" => Cell::Time(version.modified),
        "Created_Time" => Cell::Time(record.created),
        other => Cell::from_json(version.fields.get(other)),
    }
}

/// The list API's page token: where the next page starts, as an offset into the same query. It is Zoho's own
/// paging, and it shares offset paging's flaw: a record that changes between two pages moves, and the records
/// behind it shift.
#[derive(Debug, Serialize, Deserialize)]
struct ListToken {
    offset: usize,
}

impl Shared {
    pub(super) fn known_module(&self, store: &Store, module: &str) -> bool {
        STANDARD_MODULES.contains(&module) || store.module(module).is_some()
    }

    /// `POST /crm/v8/coql`.
    pub(super) fn coql(&self, request: &SimRequest) -> SimResponse {
        #[derive(Deserialize)]
        struct Body {
            select_query: String,
        }
        let body: Body = match serde_json::from_slice(&request.body) {
            Ok(b) => b,
            Err(_) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "INVALID_DATA",
                    "the body must be {\"select_query\": \"...\"}",
                    json!({}),
                );
            }
        };
        let query = match coql::parse(&body.select_query) {
            Ok(q) => q,
            Err(e) => return error(StatusCode::BAD_REQUEST, e.code, &e.message, json!({})),
        };
        let store = self.store.lock().unwrap();
        if !self.known_module(&store, &query.module) {
            return error(
                StatusCode::BAD_REQUEST,
                "INVALID_QUERY",
                "invalid module given",
                json!({"module": query.module}),
            );
        }
        let Some(records) = store.module(&query.module) else {
            return SimResponse::new(StatusCode::NO_CONTENT, "");
        };
        let mut rows: Vec<(u64, &Stored)> = Vec::new();
        for (id, record) in records {
            if record.visible().is_none() {
                continue;
            }
            let matched = match &query.filter {
                Some(filter) => coql::matches(filter, &|f| cell(*id, record, f)),
                None => Ok(true),
            };
            match matched {
                Ok(true) => rows.push((*id, record)),
                Ok(false) => {}
                Err(e) => return error(StatusCode::BAD_REQUEST, e.code, &e.message, json!({})),
            }
        }
        rows.sort_by(|(a_id, a), (b_id, b)| {
            for (field, ascending) in &query.order {
                let ordering = cell(*a_id, a, field).order(&cell(*b_id, b, field));
                let ordering = if *ascending { ordering } else { ordering.reverse() };
                if ordering != Ordering::Equal {
                    return ordering;
                }
            }
            a_id.cmp(b_id)
        });
        let start = query.offset as usize;
        let end = (start + query.limit as usize).min(rows.len());
        if start >= rows.len() {
            return SimResponse::new(StatusCode::NO_CONTENT, "");
        }
        let data: Vec<Value> = rows[start..end]
            .iter()
            .map(|(id, r)| {
                let version = r.visible().expect("filtered above");
                record_json(*id, r.created, version, Some(&query.columns), self.offset)
            })
            .collect();
        SimResponse::json(
            StatusCode::OK,
            &json!({"data": data, "info": {"count": end - start, "more_records": end < rows.len()}}),
        )
    }

    /// `GET /crm/v8/{module}`: by `ids`, or a listing paged with `page` or Zoho's `page_token`, filtered by
    /// `If-Modified-Since`.
    pub(super) fn list(&self, module: &str, request: &SimRequest) -> SimResponse {
        let Some(fields) = request.query_param("fields").filter(|f| !f.trim().is_empty()) else {
            return error(
                StatusCode::BAD_REQUEST,
                "REQUIRED_PARAM_MISSING",
                "One of the expected parameter is missing",
                json!({"param": "fields"}),
            );
        };
        let columns: Vec<String> = fields.split(',').map(|f| f.trim().to_string()).collect();
        if columns.len() > coql::MAX_COLUMNS {
            return error(
                StatusCode::BAD_REQUEST,
                "LIMIT_EXCEEDED",
                "too many fields",
                json!({"limit": coql::MAX_COLUMNS}),
            );
        }
        let store = self.store.lock().unwrap();
        if !self.known_module(&store, module) {
            return invalid_module(module);
        }
        let empty = Default::default();
        let records = store.module(module).unwrap_or(&empty);
        let render = |id: u64, r: &Stored| {
            record_json(
                id,
                r.created,
                r.visible().expect("visible"),
                Some(&columns),
                self.offset,
            )
        };

        if let Some(ids) = request.query_param("ids") {
            let ids: Vec<&str> = ids.split(',').map(str::trim).filter(|s| !s.is_empty()).collect();
            if ids.len() > MAX_IDS {
                return error(
                    StatusCode::BAD_REQUEST,
                    "LIMIT_EXCEEDED",
                    "too many ids",
                    json!({"limit": MAX_IDS}),
                );
            }
            let data: Vec<Value> = ids
                .iter()
                .filter_map(|id| id.parse::<u64>().ok())
                .filter_map(|id| {
                    records
                        .get(&id)
                        .filter(|r| r.visible().is_some())
                        .map(|r| render(id, r))
                })
                .collect();
            if data.is_empty() {
                return SimResponse::new(StatusCode::NO_CONTENT, "");
            }
            return SimResponse::json(StatusCode::OK, &json!({"data": data, "info": {"count": data.len()}}));
        }

        let since = match request.header("if-modified-since") {
            None => None,
            Some(text) => match parse_time(text) {
                Some(t) => Some(t),
                None => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "INVALID_DATA",
                        "If-Modified-Since must be an ISO-8601 datetime",
                        json!({"header": "If-Modified-Since"}),
                    );
                }
            },
        };
        let sort_by = request.query_param("sort_by").unwrap_or_else(|| "id".into());
        if !["id", "Created_Time", "Modified_Time"].contains(&sort_by.as_str()) {
            return error(
                StatusCode::BAD_REQUEST,
                "INVALID_DATA",
                "sort_by must be id, Created_Time or Modified_Time",
                json!({"param": "sort_by"}),
            );
        }
        let ascending = request.query_param("sort_order").as_deref() == Some("asc");
        let per_page = request
            .query_param("per_page")
            .and_then(|p| p.parse::<usize>().ok())
            .unwrap_or(MAX_PER_PAGE)
            .clamp(1, MAX_PER_PAGE);
        let (offset, page) = match request.query_param("page_token") {
            Some(token) => {
                let decoded = URL_SAFE_NO_PAD
                    .decode(token.as_bytes())
                    .ok()
                    .and_then(|b| serde_json::from_slice::<ListToken>(&b).ok());
                match decoded {
                    Some(t) => (t.offset, t.offset / per_page + 1),
                    None => {
                        return error(
                            StatusCode::BAD_REQUEST,
                            "INVALID_DATA",
                            "invalid page token",
                            json!({"param": "page_token"}),
                        );
                    }
                }
            }
            None => {
                let page = request
                    .query_param("page")
                    .and_then(|p| p.parse::<usize>().ok())
                    .unwrap_or(1)
                    .max(1);
                if page * per_page > MAX_PAGE_REACH {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "DISCRETE_PAGINATION_LIMIT_EXCEEDED",
                        "you cannot fetch more than 2000 records with page; use page_token",
                        json!({}),
                    );
                }
                ((page - 1) * per_page, page)
            }
        };
        let mut rows: Vec<(u64, &Stored)> = records
            .iter()
            .filter(|(_, r)| r.visible().is_some_and(|v| since.is_none_or(|s| v.modified > s)))
            .map(|(id, r)| (*id, r))
            .collect();
        rows.sort_by(|(a_id, a), (b_id, b)| {
            let ordering = cell(*a_id, a, &sort_by)
                .order(&cell(*b_id, b, &sort_by))
                .then(a_id.cmp(b_id));
            if ascending { ordering } else { ordering.reverse() }
        });
        if offset >= rows.len() {
            // Nothing changed since If-Modified-Since: 304; an empty listing: 204.
            let status = if since.is_some() {
                StatusCode::NOT_MODIFIED
            } else {
                StatusCode::NO_CONTENT
            };
            return SimResponse::new(status, "");
        }
        let end = (offset + per_page).min(rows.len());
        let data: Vec<Value> = rows[offset..end].iter().map(|(id, r)| render(*id, r)).collect();
        let more = end < rows.len();
        let next = more
            .then(|| URL_SAFE_NO_PAD.encode(serde_json::to_vec(&ListToken { offset: end }).expect("token serialises")));
        SimResponse::json(
            StatusCode::OK,
            &json!({
                "data": data,
                "info": {
                    "per_page": per_page,
                    "count": end - offset,
                    "page": page,
                    "sort_by": sort_by,
                    "sort_order": if ascending { "asc" } else { "desc" },
                    "more_records": more,
                    "next_page_token": next,
                    "previous_page_token": null,
                    "page_token_expiry": format_time(Utc::now() + chrono::Duration::days(1), self.offset),
                }
            }),
        )
    }

    /// `POST /crm/v8/{module}/upsert`: each record updates the first existing record that has the same value in
    /// one of the `duplicate_check_fields` (tried in order), or is inserted.
    pub(super) fn upsert(&self, module: &str, request: &SimRequest) -> (SimResponse, Vec<Change>) {
        let body: Value = match serde_json::from_slice(&request.body) {
            Ok(v) => v,
            Err(_) => {
                let e = error(
                    StatusCode::BAD_REQUEST,
                    "INVALID_DATA",
                    "body is not valid JSON",
                    json!({}),
                );
                return (e, Vec::new());
            }
        };
        let Some(items) = body.get("data").and_then(Value::as_array) else {
            let e = error(
                StatusCode::BAD_REQUEST,
                "MANDATORY_NOT_FOUND",
                "required field not found",
                json!({"api_name": "data", "json_path": "$.data"}),
            );
            return (e, Vec::new());
        };
        if items.is_empty() || items.len() > MAX_UPSERT {
            let e = error(
                StatusCode::BAD_REQUEST,
                "LIMIT_EXCEEDED",
                "between 1 and 100 records may be upserted per call",
                json!({"limit": MAX_UPSERT}),
            );
            return (e, Vec::new());
        }
        let check: Vec<String> = match body.get("duplicate_check_fields").and_then(Value::as_array) {
            Some(list) => list.iter().filter_map(Value::as_str).map(String::from).collect(),
            None => default_duplicate_check(module).iter().map(|s| s.to_string()).collect(),
        };
        let mut store = self.store.lock().unwrap();
        if !self.known_module(&store, module) {
            return (invalid_module(module), Vec::new());
        }
        let now = now_s();
        let mut results = Vec::with_capacity(items.len());
        let (mut inserted, mut updated, mut failed) = (Vec::new(), Vec::new(), 0);
        for (index, item) in items.iter().enumerate() {
            match upsert_one(&mut store, module, index, item, &check, now) {
                Ok((id, duplicate_field)) => {
                    let action = if duplicate_field.is_some() { "update" } else { "insert" };
                    if duplicate_field.is_some() {
                        updated.push(id.to_string());
                    } else {
                        inserted.push(id.to_string());
                    }
                    let created = store.module(module).and_then(|m| m.get(&id)).map_or(now, |r| r.created);
                    results.push(json!({
                        "code": "SUCCESS",
                        "duplicate_field": duplicate_field,
                        "action": action,
                        "details": {
                            "Modified_Time": format_time(now, self.offset),
                            "Modified_By": user(),
                            "Created_Time": format_time(created, self.offset),
                            "id": id.to_string(),
                            "Created_By": user(),
                        },
                        "message": if action == "insert" { "record added" } else { "record updated" },
                        "status": "success",
                    }));
                }
                Err(e) => {
                    failed += 1;
                    results.push(e);
                }
            }
        }
        let status = match (failed, inserted.is_empty()) {
            (f, _) if f == items.len() => StatusCode::BAD_REQUEST,
            (0, false) => StatusCode::CREATED,
            (0, true) => StatusCode::OK,
            _ => StatusCode::MULTI_STATUS,
        };
        let mut changes = Vec::new();
        if !inserted.is_empty() {
            changes.push(Change::new(module, "insert", inserted));
        }
        if !updated.is_empty() {
            changes.push(Change::new(module, "update", updated));
        }
        (SimResponse::json(status, &json!({"data": results})), changes)
    }

    /// `GET /crm/v8/{module}/deleted`: the delete log, newest first, paged with `page` and `per_page`, filtered by
    /// `If-Modified-Since` (deleted at or after it) and `type`.
    pub(super) fn deleted(&self, module: &str, request: &SimRequest) -> SimResponse {
        let kind = request.query_param("type").unwrap_or_else(|| "all".into());
        if !["all", "recycle", "permanent"].contains(&kind.as_str()) {
            return error(
                StatusCode::BAD_REQUEST,
                "INVALID_DATA",
                "type must be all, recycle or permanent",
                json!({"param": "type"}),
            );
        }
        let since = match request.header("if-modified-since").map(parse_time) {
            None => None,
            Some(Some(t)) => Some(t),
            Some(None) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "INVALID_DATA",
                    "If-Modified-Since must be an ISO-8601 datetime",
                    json!({"header": "If-Modified-Since"}),
                );
            }
        };
        let per_page = request
            .query_param("per_page")
            .and_then(|p| p.parse::<usize>().ok())
            .unwrap_or(MAX_PER_PAGE)
            .clamp(1, MAX_PER_PAGE);
        let page = request
            .query_param("page")
            .and_then(|p| p.parse::<usize>().ok())
            .unwrap_or(1)
            .max(1);
        let mut store = self.store.lock().unwrap();
        if !self.known_module(&store, module) {
            return invalid_module(module);
        }
        let cutoff = chrono::Duration::from_std(self.deleted_retention)
            .ok()
            .and_then(|retention| Utc::now().checked_sub_signed(retention));
        if let Some(cutoff) = cutoff {
            store.purge_deleted_before(cutoff);
        }
        // Everything the simulator deletes goes to the recycle bin.
        let mut entries: Vec<_> = store
            .deleted(module)
            .iter()
            .filter(|e| kind != "permanent" && since.is_none_or(|s| e.deleted_time >= s))
            .collect();
        entries.sort_by(|a, b| b.deleted_time.cmp(&a.deleted_time).then(b.id.cmp(&a.id)));
        let start = (page - 1) * per_page;
        if start >= entries.len() {
            return SimResponse::new(StatusCode::NO_CONTENT, "");
        }
        let end = (start + per_page).min(entries.len());
        let data: Vec<Value> = entries[start..end]
            .iter()
            .map(|e| {
                json!({
                    "deleted_by": user(),
                    "id": e.id,
                    "display_name": e.display_name,
                    "type": "recycle",
                    "created_by": user(),
                    "deleted_time": format_time(e.deleted_time, self.offset),
                })
            })
            .collect();
        SimResponse::json(
            StatusCode::OK,
            &json!({"data": data, "info": {"per_page": per_page, "count": end - start, "page": page, "more_records": end < entries.len()}}),
        )
    }

    /// `POST /crm/v8/actions/watch`: subscribes (or re-subscribes, replacing) channels.
    pub(super) fn watch(&self, request: &SimRequest) -> SimResponse {
        let body: Value = serde_json::from_slice(&request.body).unwrap_or(Value::Null);
        let Some(items) = body
            .get("watch")
            .and_then(Value::as_array)
            .filter(|a| !a.is_empty() && a.len() <= 50)
        else {
            return error(
                StatusCode::BAD_REQUEST,
                "INVALID_DATA",
                "the body must hold a watch array of 1 to 50 channels",
                json!({"api_name": "watch"}),
            );
        };
        let now = Utc::now();
        let max_ttl = chrono::Duration::from_std(self.max_channel_ttl).unwrap_or(chrono::Duration::days(1));
        let mut results = Vec::new();
        let mut channels = self.channels.lock().unwrap();
        for (i, item) in items.iter().enumerate() {
            let path = |name: &str| format!("$.watch[{i}].{name}");
            let channel_id = match item.get("channel_id") {
                Some(Value::String(s)) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => s.clone(),
                Some(Value::Number(n)) if n.is_u64() => n.to_string(),
                _ => {
                    results.push(super::wire::error_body(
                        "INVALID_DATA",
                        "channel_id must be a number",
                        json!({"api_name": "channel_id", "json_path": path("channel_id")}),
                    ));
                    continue;
                }
            };
            let Some(notify_url) = item
                .get("notify_url")
                .and_then(Value::as_str)
                .filter(|u| u.starts_with("http"))
            else {
                results.push(super::wire::error_body(
                    "MANDATORY_NOT_FOUND",
                    "required field not found",
                    json!({"api_name": "notify_url", "json_path": path("notify_url")}),
                ));
                continue;
            };
            let token = item.get("token").and_then(Value::as_str).map(String::from);
            if token.as_ref().is_some_and(|t| t.chars().count() > 50) {
                results.push(super::wire::error_body(
                    "INVALID_DATA",
                    "token must be at most 50 characters",
                    json!({"api_name": "token", "json_path": path("token"), "maximum_length": 50}),
                ));
                continue;
            }
            let events: Vec<String> = item
                .get("events")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).map(String::from).collect())
                .unwrap_or_default();
            let valid_event = |e: &String| {
                e.split_once('.')
                    .is_some_and(|(_, what)| ["all", "create", "edit", "delete"].contains(&what))
            };
            if events.is_empty() || !events.iter().all(valid_event) {
                results.push(super::wire::error_body(
                    "INVALID_DATA",
                    "events must name Module.all, .create, .edit or .delete",
                    json!({"api_name": "events", "json_path": path("events")}),
                ));
                continue;
            }
            // Without an expiry a channel lives an hour; no channel lives longer than the maximum.
            let asked = match item.get("channel_expiry").and_then(Value::as_str) {
                Some(text) => match parse_time(text) {
                    Some(t) => t,
                    None => {
                        results.push(super::wire::error_body(
                            "INVALID_DATA",
                            "channel_expiry must be an ISO-8601 datetime",
                            json!({"api_name": "channel_expiry", "json_path": path("channel_expiry")}),
                        ));
                        continue;
                    }
                },
                None => now + chrono::Duration::hours(1),
            };
            let expiry = asked.min(now + max_ttl);
            let channel = Channel {
                channel_id: channel_id.clone(),
                events: events.clone(),
                notify_url: notify_url.to_string(),
                token,
                expiry,
            };
            channels.retain(|c| c.channel_id != channel_id);
            channels.push(channel);
            self.subscriptions.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let base = self.base_url();
            let details: Vec<Value> = events
                .iter()
                .map(|e| {
                    let module = e.split('.').next().unwrap_or_default();
                    json!({
                        "channel_expiry": format_time(expiry, self.offset),
                        "resource_uri": format!("{base}/crm/v8/{module}"),
                        "resource_id": "5725767000000002175",
                        "resource_name": module,
                        "channel_id": channel_id,
                    })
                })
                .collect();
            results.push(json!({
                "code": "SUCCESS",
                "details": {"events": details},
                "message": "Successfully subscribed for actions-watch of the given module",
                "status": "success",
            }));
        }
        let ok = results.iter().filter(|r| r["status"] == "success").count();
        let status = match ok {
            0 => StatusCode::BAD_REQUEST,
            n if n == results.len() => StatusCode::CREATED,
            _ => StatusCode::MULTI_STATUS,
        };
        SimResponse::json(status, &json!({"watch": results}))
    }
}

/// Applies one upsert record; returns the record's id and the field that matched an existing record (None:
/// inserted), or the record's error entry.
fn upsert_one(
    store: &mut Store,
    module: &str,
    index: usize,
    item: &Value,
    check: &[String],
    now: chrono::DateTime<Utc>,
) -> Result<(u64, Option<String>), Value> {
    let path = |name: &str| format!("$.data[{index}].{name}");
    let Some(fields) = item.as_object() else {
        return Err(super::wire::error_body(
            "INVALID_DATA",
            "invalid data",
            json!({"json_path": format!("$.data[{index}]")}),
        ));
    };
    let mut fields: Map<String, Value> = fields.clone();
    fields.remove("id");
    for name in fields.keys() {
        let valid = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid || ["Modified_Time", "Created_Time", "Created_By", "Modified_By"].contains(&name.as_str()) {
            return Err(super::wire::error_body(
                "INVALID_DATA",
                "invalid data",
                json!({"api_name": name, "json_path": path(name)}),
            ));
        }
    }
    for field in check {
        let Some(value) = fields.get(field).filter(|v| !v.is_null()) else {
            continue;
        };
        if let Some(id) = store.find_by(module, field, value) {
            store.update(module, id, fields, now);
            return Ok((id, Some(field.clone())));
        }
    }
    for field in mandatory(module) {
        if fields.get(*field).is_none_or(|v| v.is_null() || v == "") {
            return Err(super::wire::error_body(
                "MANDATORY_NOT_FOUND",
                "required field not found",
                json!({"api_name": field, "json_path": path(field)}),
            ));
        }
    }
    let id = store.allocate_id();
    store.count_create(module, &fields);
    store.insert(module, id, fields, now);
    Ok((id, None))
}
