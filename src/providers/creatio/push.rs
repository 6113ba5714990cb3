//! Idempotent writes. Creatio has no upsert and no idempotency header, so the key travels with the row: every
//! write stores its idempotency key in `push_key_field`, and every attempt first searches that column. A retry
//! after a lost answer (a timeout, a reset, a truncated body) finds the row its earlier attempt created and
//! PATCHes it instead of creating another: a key causes at most one create.

use reqwest::Method;
use serde_json::{Value, json};

use super::Creatio;
use super::odata::{self, is_identifier, string_literal};
use crate::providers::{ProviderError, PushRequest};

/// Applies `write`; returns the GUID of the row written.
pub async fn push(creatio: &Creatio, write: &PushRequest) -> Result<String, ProviderError> {
    let entity = &write.object;
    if !is_identifier(entity) {
        return Err(ProviderError::Permanent(format!(
            "{entity:?} is not a Creatio entity name"
        )));
    }
    let key_field = &creatio.config.push_key_field;
    let mut body = write.properties.clone();
    let Some(map) = body.as_object_mut() else {
        return Err(ProviderError::Permanent("properties must be a JSON object".into()));
    };
    if let Some(bad) = map.keys().find(|k| !is_identifier(k)) {
        return Err(ProviderError::Permanent(format!(
            "{bad:?} is not a Creatio column name"
        )));
    }
    // The row's identity is Creatio's to give; a client-chosen Id would break the search below.
    map.remove("Id");
    map.insert(key_field.clone(), json!(write.idempotency_key));

    let mut target = find(creatio, entity, key_field, &write.idempotency_key).await?;
    if target.is_none()
        && let (Some(column), Some(value)) = (&write.match_key, &write.match_value)
    {
        if !is_identifier(column) {
            return Err(ProviderError::Permanent(format!(
                "{column:?} is not a Creatio column name"
            )));
        }
        map.entry(column.clone()).or_insert_with(|| json!(value));
        target = find(creatio, entity, column, value).await?;
    }
    match target {
        Some(id) => {
            match creatio
                .write("update", Method::PATCH, &format!("{entity}({id})"), &body)
                .await
            {
                Ok(_) => Ok(id),
                // Deleted between the search and the write: the next attempt searches again (and creates).
                Err(ProviderError::Permanent(message)) if message.starts_with("404") => Err(ProviderError::Transient(
                    format!("{entity} {id} vanished before it was written ({message}); searching again"),
                )),
                Err(e) => Err(e),
            }
        }
        None => {
            let created: Value = creatio.write("create", Method::POST, entity, &body).await?.json()?;
            created
                .get("Id")
                .and_then(Value::as_str)
                .and_then(odata::guid)
                .ok_or_else(|| ProviderError::Transient("the create answered without an Id".into()))
        }
    }
}

/// The first row whose `column` equals `value`, if any.
async fn find(creatio: &Creatio, entity: &str, column: &str, value: &str) -> Result<Option<String>, ProviderError> {
    let options = [
        ("$filter", format!("{column} eq {}", string_literal(value))),
        ("$select", "Id".to_string()),
        ("$orderby", "CreatedOn asc".to_string()),
        ("$top", "2".to_string()),
    ];
    let answer = creatio.query("search", entity, &options).await?;
    if answer.value.len() > 1 {
        // Someone else wrote the same value twice; write the oldest, as every later attempt will.
        tracing::warn!(connection = %creatio.client.connection(), entity, column, "Several Creatio rows hold the same key; writing the oldest.");
    }
    Ok(answer
        .value
        .first()
        .and_then(|e| e.get("Id"))
        .and_then(Value::as_str)
        .and_then(odata::guid))
}
