//! The HTTP side: `POST /jsonrpc`, the rate-limit window and injected faults in front of it, the JSON-RPC
//! envelope, and the `common` and `object` services.

use std::time::Duration;

use http::{Method, StatusCode};
use serde_json::{Map, Value, json};

use super::error::OdooError;
use super::methods::{self, Call};
use super::{Shared, UID};
use crate::faults::Fault;
use crate::request_log::RequestRecord;
use crate::server::{Handler, SimRequest, SimResponse};
use crate::window::Admission;

const BAD_GATEWAY: &str = "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad \
                           Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n";

const NOT_FOUND: &str = "<!doctype html>\n<html lang=en>\n<title>404 Not Found</title>\n<h1>Not Found</h1>\n<p>The \
                         requested URL was not found on the server. If you entered the URL manually please check \
                         your spelling and try again.</p>\n";

impl Handler for Shared {
    async fn handle(&self, request: SimRequest) -> SimResponse {
        let (operation, response) = self.answer(&request);
        self.log.push(RequestRecord {
            at: request.received_at,
            method: request.method.to_string(),
            path: request.path().to_owned(),
            operation,
            // A reset connection gets no status at all: logged as 0.
            status: if response.reset { 0 } else { response.status.as_u16() },
        });
        response
    }
}

/// What a request asks for, for the log: "login", "execute_kw:search_read", ...
fn operation(body: &Value) -> String {
    let params = &body["params"];
    let method = params["method"].as_str().unwrap_or("?");
    match method {
        "execute_kw" | "execute" => format!("{method}:{}", params["args"][4].as_str().unwrap_or("?")),
        other => other.to_owned(),
    }
}

/// Whole seconds, rounded up, as Retry-After carries them.
fn retry_after_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

fn too_many_requests(retry_after: Duration) -> SimResponse {
    SimResponse::new(StatusCode::TOO_MANY_REQUESTS, "Too Many Requests")
        .with_header("content-type", "text/plain; charset=utf-8")
        .with_header("retry-after", retry_after_secs(retry_after).to_string())
}

fn html(status: StatusCode, body: &'static str) -> SimResponse {
    SimResponse::new(status, body).with_header("content-type", "text/html; charset=utf-8")
}

impl Shared {
    /// The answer and the operation to log. Order: route, rate-limit window, injected fault, then the call.
    fn answer(&self, request: &SimRequest) -> (String, SimResponse) {
        if request.path() != "/jsonrpc" {
            return ("not_found".to_owned(), html(StatusCode::NOT_FOUND, NOT_FOUND));
        }
        if request.method != Method::POST {
            let answer =
                SimResponse::new(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed").with_header("allow", "POST");
            return ("method_not_allowed".to_owned(), answer);
        }
        let parsed: Result<Value, _> = serde_json::from_slice(&request.body);
        let operation = parsed.as_ref().map_or_else(|_| "invalid_json".to_owned(), operation);

        if let Some(window) = self.window.lock().unwrap().as_mut()
            && let Admission::Refused { retry_after } = window.admit(request.received_at)
        {
            return (operation, too_many_requests(retry_after));
        }
        let fault = self.faults.lock().unwrap().roll();
        match fault {
            Fault::ServerError => return (operation, html(StatusCode::BAD_GATEWAY, BAD_GATEWAY)),
            Fault::RateLimited(retry_after) => return (operation, too_many_requests(retry_after)),
            _ => {}
        }

        let mut response = match parsed {
            // Odoo's JSON-RPC dispatcher aborts with a bare 400 before any JSON-RPC handling.
            Err(_) => html(StatusCode::BAD_REQUEST, "Invalid JSON data"),
            Ok(body) => {
                let id = body.get("id").cloned().unwrap_or(Value::Null);
                let answer = match self.dispatch(&body["params"]) {
                    Ok(result) => json!({"jsonrpc": "2.0", "id": id, "result": result}),
                    Err(error) => error.to_response(&id),
                };
                SimResponse::json(StatusCode::OK, &answer)
            }
        };
        // These faults hit after the call ran: the client cannot tell whether a write happened.
        match fault {
            Fault::Slow(delay) => response.delay = Some(delay),
            Fault::TruncatedJson if response.status == StatusCode::OK => response.truncate = true,
            Fault::ConnectionReset => response.reset = true,
            _ => {}
        }
        (operation, response)
    }

    fn dispatch(&self, params: &Value) -> Result<Value, OdooError> {
        let service = params["service"].as_str().unwrap_or_default();
        let method = params["method"].as_str().unwrap_or_default();
        let args: &[Value] = match &params["args"] {
            Value::Array(args) => args,
            Value::Null => &[],
            _ => return Err(OdooError::type_error("args must be a list")),
        };
        match (service, method) {
            ("common", "login") => Ok(self.login(args, 3)),
            ("common", "authenticate") => Ok(self.login(args, 4)),
            ("common", "version") => Ok(json!({
                "server_version": "17.0",
                "server_version_info": [17, 0, 0, "final", 0, ""],
                "server_serie": "17.0",
                "protocol_version": 1,
            })),
            ("common", other) => Err(OdooError::key_error(format!("'exp_{other}'"))),
            ("object", "execute_kw") => self.execute_kw(args, true),
            ("object", "execute") => self.execute_kw(args, false),
            ("object", other) => Err(OdooError::key_error(format!("'exp_{other}'"))),
            ("db", "list") => Ok(json!([self.database])),
            ("db", "server_version") => Ok(json!("17.0")),
            (other, _) => Err(OdooError::key_error(format!("Unknown service '{other}'"))),
        }
    }

    /// `login(db, login, key)` / `authenticate(db, login, key, user_agent_env)`: the uid, or `false`.
    fn login(&self, args: &[Value], arity: usize) -> Value {
        let ok = args.len() == arity
            && args[0].as_str() == Some(&self.database)
            && args[1].as_str() == Some(&self.login)
            && args[2].as_str() == Some(self.api_key.lock().unwrap().as_str());
        if ok { json!(UID) } else { Value::Bool(false) }
    }

    fn check_credentials(&self, db: &Value, uid: &Value, key: &Value) -> Result<(), OdooError> {
        let ok = db.as_str() == Some(&self.database)
            && uid.as_i64() == Some(UID)
            && key.as_str() == Some(self.api_key.lock().unwrap().as_str());
        if ok { Ok(()) } else { Err(OdooError::access_denied()) }
    }

    /// `execute_kw(db, uid, key, model, method, args, kwargs)`, or `execute(db, uid, key, model, method, *args)`.
    fn execute_kw(&self, args: &[Value], with_kwargs: bool) -> Result<Value, OdooError> {
        let [db, uid, key, model, method, rest @ ..] = args else {
            return Err(OdooError::type_error(format!(
                "execute_kw() missing required positional arguments (got {} of 5)",
                args.len()
            )));
        };
        self.check_credentials(db, uid, key)?;
        let model = model
            .as_str()
            .ok_or_else(|| OdooError::type_error("model must be a string"))?;
        let method = method
            .as_str()
            .ok_or_else(|| OdooError::type_error("method must be a string"))?;
        let no_kwargs = Map::new();
        let (positional, kwargs): (&[Value], &Map<String, Value>) = if with_kwargs {
            if rest.len() > 2 {
                return Err(OdooError::type_error(format!(
                    "execute_kw() takes from 5 to 7 positional arguments but {} were given",
                    args.len()
                )));
            }
            let positional = match rest.first() {
                None | Some(Value::Null) => &[][..],
                Some(Value::Array(a)) => a.as_slice(),
                Some(_) => return Err(OdooError::type_error("execute_kw args must be a list")),
            };
            let kwargs = match rest.get(1) {
                None | Some(Value::Null) => &no_kwargs,
                Some(Value::Object(m)) => m,
                Some(_) => return Err(OdooError::type_error("execute_kw kwargs must be a dict")),
            };
            (positional, kwargs)
        } else {
            (rest, &no_kwargs)
        };
        let call = Call {
            model,
            method,
            positional,
            kwargs,
            uid: UID,
        };
        methods::call(&mut self.store.lock().unwrap(), &call)
    }
}
