//! What Odoo's "Send Webhook Notification" server action POSTs: the record's id and model plus the fields the
//! action selects, as JSON, with no signature and no retry.

use serde_json::{Map, Value};

use super::clock::format_odoo_datetime;
use super::store::Store;

/// The body for a committed row; fields of a missing row (or unknown fields) read `false`.
pub(crate) fn body_for_row(store: &mut Store, model: &str, id: i64, fields: &[&str]) -> Value {
    let mut values = Map::new();
    for field in fields {
        let value = store
            .model(model)
            .and_then(|m| m.rows.get(&id).map(|row| m.read_field(id, row, field)))
            .unwrap_or(Value::Bool(false));
        values.insert((*field).to_owned(), value);
    }
    body(store, model, id, values)
}

/// The body for values the caller already has (a change not yet committed, a row about to be deleted).
pub(crate) fn body(store: &mut Store, model: &str, id: i64, values: Map<String, Value>) -> Value {
    let action = store.webhook_action_id(model);
    let mut out = Map::new();
    out.insert(
        "_action".to_owned(),
        Value::String(format!("Send Webhook Notification(#{action})")),
    );
    out.insert("_id".to_owned(), Value::from(id));
    out.insert("_model".to_owned(), Value::String(model.to_owned()));
    out.extend(values);
    Value::Object(out)
}

/// The body for a change inside a transaction, read from the transaction's own values.
pub(crate) fn body_for_values(
    store: &mut Store,
    model: &str,
    id: i64,
    vals: &Map<String, Value>,
    write_date: chrono::NaiveDateTime,
) -> Value {
    let mut values = vals.clone();
    values.insert("write_date".to_owned(), Value::String(format_odoo_datetime(write_date)));
    body(store, model, id, values)
}

pub(crate) async fn post(http: &reqwest::Client, url: &str, body: &Value) -> reqwest::Result<reqwest::StatusCode> {
    let response = http
        .post(url)
        .header("content-type", "application/json")
        .body(serde_json::to_vec(body).expect("JSON values serialise"))
        .send()
        .await?;
    Ok(response.status())
}
