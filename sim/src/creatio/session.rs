//! Creatio's forms authentication: `POST /ServiceModel/AuthService.svc/Login` answers `Set-Cookie` for
//! `BPMLOADER`, `.ASPXAUTH`, `BPMCSRF` and `UserName`; every later request carries the cookies and repeats the
//! `BPMCSRF` value in a `BPMCSRF` header. A session lives for a fixed time (short in tests) and then every request
//! on it is answered 401 until the client logs in again. A request whose session is fine but whose `BPMCSRF`
//! header is missing or wrong is answered 403, as Creatio's CSRF check does.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use cookie::Cookie;
use http::StatusCode;
use serde_json::{Value, json};

use crate::server::{SimRequest, SimResponse};

/// The cookie that carries the session.
pub const AUTH_COOKIE: &str = ".ASPXAUTH";
/// The cookie (and header) that carries the CSRF token.
pub const CSRF_COOKIE: &str = "BPMCSRF";

#[derive(Debug)]
struct Session {
    csrf: String,
    expires: Instant,
}

/// What a request's cookies and CSRF header amount to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SessionCheck {
    Valid,
    /// No session cookie, an unknown one, or an expired one: 401.
    Unauthenticated,
    /// A live session without the matching `BPMCSRF` header: 403.
    BadCsrf,
}

/// The server's sessions and its one API user.
#[derive(Debug)]
pub(crate) struct Sessions {
    pub(crate) username: String,
    pub(crate) password: String,
    pub(crate) ttl: Duration,
    live: HashMap<String, Session>,
    logins: u64,
    refused: u64,
}

fn token() -> String {
    format!("{:032X}", rand::random::<u128>())
}

impl Sessions {
    pub(crate) fn new(username: String, password: String, ttl: Duration) -> Self {
        Self {
            username,
            password,
            ttl,
            live: HashMap::new(),
            logins: 0,
            refused: 0,
        }
    }

    /// Answers a login request. Wrong credentials get Creatio's 200 with `Code: 1`, not a 401.
    pub(crate) fn login(&mut self, request: &SimRequest) -> SimResponse {
        let body: Value = serde_json::from_slice(&request.body).unwrap_or(Value::Null);
        let user = body.get("UserName").and_then(Value::as_str);
        let password = body.get("UserPassword").and_then(Value::as_str);
        if user != Some(self.username.as_str()) || password != Some(self.password.as_str()) {
            self.refused += 1;
            return SimResponse::json(
                StatusCode::OK,
                &json!({
                    "Code": 1,
                    "Message": "Either user name or password is incorrect",
                    "Exception": null,
                    "PasswordChangeUrl": null,
                    "RedirectUrl": null,
                }),
            );
        }
        self.logins += 1;
        let auth = token();
        let csrf = format!("{:022x}", rand::random::<u128>() >> 40);
        self.live.insert(
            auth.clone(),
            Session {
                csrf: csrf.clone(),
                expires: Instant::now() + self.ttl,
            },
        );
        let mut response = SimResponse::json(
            StatusCode::OK,
            &json!({"Code": 0, "Message": "", "Exception": null, "PasswordChangeUrl": null, "RedirectUrl": null}),
        );
        let cookies = [
            Cookie::build(("BPMLOADER", token())).path("/").http_only(true).build(),
            Cookie::build((AUTH_COOKIE, auth)).path("/").http_only(true).build(),
            Cookie::build((CSRF_COOKIE, csrf)).path("/").build(),
            Cookie::build(("UserName", self.username.clone()))
                .path("/")
                .http_only(true)
                .build(),
        ];
        for cookie in cookies {
            let value = cookie.to_string().parse().expect("a cookie is a valid header value");
            response.headers.append(http::header::SET_COOKIE, value);
        }
        response
    }

    /// Checks a request's session cookie and CSRF header.
    pub(crate) fn check(&mut self, request: &SimRequest) -> SessionCheck {
        let now = Instant::now();
        self.live.retain(|_, s| s.expires > now);
        let cookies: HashMap<String, String> = request
            .headers
            .get_all(http::header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| Cookie::split_parse(v.to_owned()).filter_map(Result::ok))
            .map(|c| (c.name().to_owned(), c.value().to_owned()))
            .collect();
        let Some(session) = cookies.get(AUTH_COOKIE).and_then(|a| self.live.get(a)) else {
            return SessionCheck::Unauthenticated;
        };
        match request.header(CSRF_COOKIE) {
            Some(header) if header == session.csrf => SessionCheck::Valid,
            _ => SessionCheck::BadCsrf,
        }
    }

    /// Ends every session now.
    pub(crate) fn expire_all(&mut self) {
        self.live.clear();
    }

    pub(crate) fn logins(&self) -> u64 {
        self.logins
    }

    pub(crate) fn refused(&self) -> u64 {
        self.refused
    }
}
