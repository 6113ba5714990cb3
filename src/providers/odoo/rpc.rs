//! Odoo's JSON-RPC: `/jsonrpc` calls, login, and the error member that arrives with HTTP 200.

use serde_json::{Value, json};
use tokio::sync::Mutex;

use super::config::OdooConfig;
use crate::providers::{CrmClient, ProviderError};

/// A JSON-RPC session: logs in once and keeps the uid.
pub struct Rpc {
    url: String,
    config: OdooConfig,
    client: CrmClient,
    uid: Mutex<Option<i64>>,
}

impl Rpc {
    pub fn new(base: &str, config: OdooConfig, client: CrmClient) -> Self {
        Self {
            url: format!("{base}/jsonrpc"),
            config,
            client,
            uid: Mutex::new(None),
        }
    }

    async fn call(&self, operation: &str, service: &str, method: &str, args: Value) -> Result<Value, ProviderError> {
        let body = json!({
            "jsonrpc": "2.0",
            "method": "call",
            "params": {"service": service, "method": method, "args": args},
            "id": 1,
        });
        let request = self.client.http().post(&self.url).json(&body);
        let answer: Value = self.client.send(operation, request).await?.json()?;
        if let Some(error) = answer.get("error") {
            return Err(classify(error));
        }
        answer
            .get("result")
            .cloned()
            .ok_or_else(|| ProviderError::Transient("JSON-RPC answer without result or error".into()))
    }

    async fn uid(&self) -> Result<i64, ProviderError> {
        let mut uid = self.uid.lock().await;
        if let Some(u) = *uid {
            return Ok(u);
        }
        let result = self
            .call(
                "login",
                "common",
                "login",
                json!([self.config.database, self.config.username, self.config.api_key.expose()]),
            )
            .await?;
        let u = result
            .as_i64()
            .ok_or_else(|| ProviderError::Auth("Odoo refused the login (wrong database, user or API key)".into()))?;
        *uid = Some(u);
        Ok(u)
    }

    /// `execute_kw(db, uid, key, model, method, args, kwargs)`.
    pub async fn execute_kw(
        &self,
        model: &str,
        method: &str,
        args: Value,
        kwargs: Value,
    ) -> Result<Value, ProviderError> {
        let uid = self.uid().await?;
        let result = self
            .call(
                &format!("execute_kw:{method}"),
                "object",
                "execute_kw",
                json!([
                    self.config.database,
                    uid,
                    self.config.api_key.expose(),
                    model,
                    method,
                    args,
                    kwargs
                ]),
            )
            .await;
        if let Err(ProviderError::Auth(_)) = &result {
            // A revoked key or a changed uid: log in again next time.
            *self.uid.lock().await = None;
        }
        result
    }
}

/// Odoo's error member: an access error stops the connection; a programming or validation error is permanent;
/// anything else (a serialization failure, a worker killed) is worth retrying.
pub fn classify(error: &Value) -> ProviderError {
    let name = error.pointer("/data/name").and_then(Value::as_str).unwrap_or("");
    let message = error
        .pointer("/data/message")
        .or_else(|| error.get("message"))
        .and_then(Value::as_str)
        .unwrap_or("Odoo error")
        .to_string();
    let text = format!("{name}: {message}");
    if name.contains("AccessDenied") || name.contains("AccessError") || name.contains("SessionExpired") {
        ProviderError::Auth(text)
    } else if [
        "ValueError",
        "UserError",
        "ValidationError",
        "KeyError",
        "MissingError",
        "TypeError",
    ]
    .iter()
    .any(|n| name.contains(n))
    {
        ProviderError::Permanent(text)
    } else {
        ProviderError::Transient(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn odoo_errors_are_classified_by_exception_name() {
        let err =
            |name: &str| json!({"code": 200, "message": "Odoo Server Error", "data": {"name": name, "message": "m"}});
        assert!(matches!(
            classify(&err("odoo.exceptions.AccessDenied")),
            ProviderError::Auth(_)
        ));
        assert!(matches!(
            classify(&err("builtins.ValueError")),
            ProviderError::Permanent(_)
        ));
        assert!(matches!(
            classify(&err("odoo.exceptions.ValidationError")),
            ProviderError::Permanent(_)
        ));
        assert!(matches!(
            classify(&err("psycopg2.errors.SerializationFailure")),
            ProviderError::Transient(_)
        ));
    }
}
