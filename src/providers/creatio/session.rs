//! Creatio's forms authentication: `POST /ServiceModel/AuthService.svc/Login` with `UserName`/`UserPassword`
//! answers `Set-Cookie` for `.ASPXAUTH` (the session) and `BPMCSRF` (the CSRF token); every request then sends the
//! cookies back and repeats `BPMCSRF` as a header. Sessions expire on the server without notice, so a refused
//! request logs in again once (see [`super::auth`]). One login runs at a time; callers that arrive meanwhile wait
//! for it and use its session.

use std::sync::Arc;

use cookie::Cookie;
use http::HeaderMap;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::Mutex;

use crate::config::Secret;
use crate::providers::{CrmClient, CrmResponse, ProviderError};

/// The session cookie.
const AUTH_COOKIE: &str = ".ASPXAUTH";
/// The CSRF cookie, whose value goes in the header of the same name.
pub const CSRF: &str = "BPMCSRF";

/// A logged-in session: what every request carries. Never logged.
#[derive(Debug)]
pub struct Cookies {
    /// `name=value; name=value` for the `Cookie` header.
    pub header: Secret,
    /// The `BPMCSRF` value for the header.
    pub csrf: Secret,
}

/// The login answer's body.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct LoginAnswer {
    code: i64,
    #[serde(default)]
    message: Option<String>,
}

/// The session of one connection.
pub struct FormsSession {
    login_url: String,
    username: String,
    password: Secret,
    current: Mutex<Option<Arc<Cookies>>>,
}

impl std::fmt::Debug for FormsSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FormsSession")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

impl FormsSession {
    pub fn new(base: &str, username: String, password: Secret) -> Self {
        Self {
            login_url: format!("{base}/ServiceModel/AuthService.svc/Login"),
            username,
            password,
            current: Mutex::new(None),
        }
    }

    /// The session to use now, logging in first when there is none.
    pub async fn cookies(&self, client: &CrmClient) -> Result<Arc<Cookies>, ProviderError> {
        // Held across the login: concurrent callers wait for it rather than each logging in.
        let mut current = self.current.lock().await;
        if let Some(cookies) = current.as_ref() {
            return Ok(cookies.clone());
        }
        let fresh = Arc::new(self.login(client).await?);
        *current = Some(fresh.clone());
        Ok(fresh)
    }

    /// The server refused `cookies`: the next [`FormsSession::cookies`] logs in again (unless another caller
    /// already did).
    pub async fn rejected(&self, cookies: &Arc<Cookies>) {
        let mut current = self.current.lock().await;
        if current.as_ref().is_some_and(|c| Arc::ptr_eq(c, cookies)) {
            *current = None;
        }
    }

    async fn login(&self, client: &CrmClient) -> Result<Cookies, ProviderError> {
        let body = json!({"UserName": self.username, "UserPassword": self.password.expose()});
        let request = client
            .http()
            .post(&self.login_url)
            .header("ForceUseSession", "true")
            .json(&body);
        let cookies = read_login(client.send("login", request).await?)?;
        tracing::info!(connection = %client.connection(), user = %self.username, "Logged in to Creatio.");
        Ok(cookies)
    }
}

/// The session in a login answer. Creatio refuses wrong credentials with a 200 whose `Code` is not 0: that, like
/// a 401, is an auth failure (which parks the connection: retrying a wrong password would only lock the user out).
pub fn read_login(response: CrmResponse) -> Result<Cookies, ProviderError> {
    let answer: LoginAnswer = response.json()?;
    if answer.code != 0 {
        return Err(ProviderError::Auth(format!(
            "Creatio refused the login (code {}): {}",
            answer.code,
            answer.message.as_deref().unwrap_or("no message")
        )));
    }
    cookies_from(&response.headers)
}

fn cookies_from(headers: &HeaderMap) -> Result<Cookies, ProviderError> {
    let mut pairs = Vec::new();
    let mut has_session = false;
    let mut csrf = None;
    for value in headers.get_all(http::header::SET_COOKIE) {
        let Some(cookie) = value.to_str().ok().and_then(|v| Cookie::parse(v.to_owned()).ok()) else {
            continue;
        };
        match cookie.name() {
            AUTH_COOKIE => has_session = true,
            CSRF => csrf = Some(cookie.value().to_owned()),
            _ => {}
        }
        pairs.push(format!("{}={}", cookie.name(), cookie.value()));
    }
    match (has_session, csrf) {
        (true, Some(csrf)) => Ok(Cookies {
            header: Secret::new(pairs.join("; ")),
            csrf: Secret::new(csrf),
        }),
        // Code 0 without the cookies: a proxy that strips them, or not Creatio at all. Retrying cannot help.
        _ => Err(ProviderError::Auth(
            "the login succeeded but set no .ASPXAUTH and BPMCSRF cookies (is base_url the Creatio application address?)"
                .into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::StatusCode;

    fn answer(body: &str, cookies: &[&str]) -> CrmResponse {
        let mut headers = HeaderMap::new();
        for c in cookies {
            headers.append(http::header::SET_COOKIE, c.parse().unwrap());
        }
        CrmResponse {
            status: StatusCode::OK,
            headers,
            body: bytes::Bytes::from(body.to_string()),
        }
    }

    const OK: &str = r#"{"Code":0,"Message":"","Exception":null,"PasswordChangeUrl":null,"RedirectUrl":null}"#;

    #[test]
    fn a_login_answer_yields_every_cookie_and_the_csrf_value() {
        let cookies = read_login(answer(
            OK,
            &[
                "BPMLOADER=l0; path=/; HttpOnly",
                ".ASPXAUTH=A1B2; path=/; HttpOnly",
                "BPMCSRF=csrf9; path=/",
                "UserName=83|117; expires=Tue, 01 Dec 2026 22:00:00 GMT; path=/; HttpOnly",
            ],
        ))
        .unwrap();
        assert_eq!(
            cookies.header.expose(),
            "BPMLOADER=l0; .ASPXAUTH=A1B2; BPMCSRF=csrf9; UserName=83|117"
        );
        assert_eq!(cookies.csrf.expose(), "csrf9");
        assert!(!format!("{cookies:?}").contains("A1B2"), "cookies never print");
    }

    #[test]
    fn a_refused_login_is_an_auth_failure_with_creatios_message() {
        let refused = r#"{"Code":1,"Message":"Either user name or password is incorrect","Exception":null}"#;
        match read_login(answer(refused, &[])) {
            Err(ProviderError::Auth(m)) => assert!(m.contains("password is incorrect"), "{m}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_login_without_the_session_cookies_is_refused_and_a_cut_answer_is_transient() {
        assert!(matches!(
            read_login(answer(OK, &["BPMCSRF=x; path=/"])),
            Err(ProviderError::Auth(_))
        ));
        assert!(matches!(
            read_login(answer(r#"{"Code":0,"Mess"#, &[])),
            Err(ProviderError::Transient(_))
        ));
    }
}
