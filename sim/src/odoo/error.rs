//! Odoo's server errors as the JSON-RPC `error` member carries them: HTTP 200, `code` 200, "Odoo Server Error",
//! and the Python exception's dotted name, message and arguments under `data`.

use serde_json::{Value, json};

/// One Python exception raised by the simulated server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OdooError {
    /// The exception's dotted class name, e.g. `odoo.exceptions.AccessDenied` or `builtins.ValueError`.
    pub(crate) name: &'static str,
    pub(crate) message: String,
}

impl OdooError {
    fn new(name: &'static str, message: impl Into<String>) -> Self {
        Self {
            name,
            message: message.into(),
        }
    }

    pub(crate) fn access_denied() -> Self {
        Self::new("odoo.exceptions.AccessDenied", "Access Denied")
    }

    pub(crate) fn access_error(message: impl Into<String>) -> Self {
        Self::new("odoo.exceptions.AccessError", message)
    }

    pub(crate) fn user_error(message: impl Into<String>) -> Self {
        Self::new("odoo.exceptions.UserError", message)
    }

    /// The error for ids that do not exist (any more): `read`, `write` and `unlink` raise it.
    pub(crate) fn missing(model: &str, ids: &[i64], uid: i64) -> Self {
        let ids = match ids {
            [one] => format!("({one},)"),
            many => format!("({})", many.iter().map(i64::to_string).collect::<Vec<_>>().join(", ")),
        };
        Self::new(
            "odoo.exceptions.MissingError",
            format!("Record does not exist or has been deleted.\n(Record: {model}{ids}, User: {uid})"),
        )
    }

    pub(crate) fn value_error(message: impl Into<String>) -> Self {
        Self::new("builtins.ValueError", message)
    }

    pub(crate) fn type_error(message: impl Into<String>) -> Self {
        Self::new("builtins.TypeError", message)
    }

    pub(crate) fn attribute_error(message: impl Into<String>) -> Self {
        Self::new("builtins.AttributeError", message)
    }

    pub(crate) fn key_error(message: impl Into<String>) -> Self {
        Self::new("builtins.KeyError", message)
    }

    /// The whole JSON-RPC answer for a request with id `id`.
    pub(crate) fn to_response(&self, id: &Value) -> Value {
        let class = self.name.strip_prefix("builtins.").unwrap_or(self.name);
        let debug = format!(
            "Traceback (most recent call last):\n  File \"/usr/lib/python3/dist-packages/odoo/http.py\", line 1783, \
             in _serve_db\n    return service_model.retrying(self._serve_ir_http, self.env)\n  File \
             \"/usr/lib/python3/dist-packages/odoo/service/model.py\", line 133, in retrying\n    result = func()\n\
             {class}: {}\n",
            self.message
        );
        json!({
            "jsonrpc": "2.0",
            "id": id,
            "error": {
                "code": 200,
                "message": "Odoo Server Error",
                "data": {
                    "name": self.name,
                    "debug": debug,
                    "message": self.message,
                    "arguments": [self.message],
                    "context": {},
                },
            },
        })
    }
}

/// A JSON value written the way Python's `repr` writes the same value, for messages that quote a domain or leaf.
pub(crate) fn python_repr(value: &Value) -> String {
    match value {
        Value::Null => "None".to_owned(),
        Value::Bool(true) => "True".to_owned(),
        Value::Bool(false) => "False".to_owned(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'")),
        Value::Array(items) => format!("[{}]", items.iter().map(python_repr).collect::<Vec<_>>().join(", ")),
        Value::Object(map) => format!(
            "{{{}}}",
            map.iter()
                .map(|(k, v)| format!("'{k}': {}", python_repr(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// A leaf the way Odoo quotes it after normalising it to a tuple: `('name', '=', 'x')`.
pub(crate) fn leaf_repr(parts: &[Value]) -> String {
    format!("({})", parts.iter().map(python_repr).collect::<Vec<_>>().join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_have_the_odoo_server_error_shape() {
        let body = OdooError::access_denied().to_response(&json!(7));
        assert_eq!(body["id"], 7);
        assert_eq!(body["error"]["code"], 200);
        assert_eq!(body["error"]["message"], "Odoo Server Error");
        assert_eq!(body["error"]["data"]["name"], "odoo.exceptions.AccessDenied");
        assert_eq!(body["error"]["data"]["arguments"], json!(["Access Denied"]));
        assert!(
            body["error"]["data"]["debug"]
                .as_str()
                .unwrap()
                .starts_with("Traceback")
        );
    }

    #[test]
    fn missing_error_names_the_records_like_python() {
        assert!(
            OdooError::missing("res.partner", &[9], 2)
                .message
                .contains("res.partner(9,), User: 2")
        );
        assert!(
            OdooError::missing("res.partner", &[9, 10], 2)
                .message
                .contains("res.partner(9, 10)")
        );
    }

    #[test]
    fn leaves_are_quoted_as_python_tuples() {
        assert_eq!(
            leaf_repr(&[json!("foo"), json!("="), json!(false)]),
            "('foo', '=', False)"
        );
    }
}
