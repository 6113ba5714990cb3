//! An OAuth2 authorisation server as the CRMs run one, for the simulators of CRMs that use OAuth2 (HubSpot public
//! apps, Zoho, Salesforce, Creatio): the refresh-token grant and the client-credentials grant, access tokens that
//! expire, refresh tokens that rotate, and `invalid_grant` for a spent or revoked refresh token.
//!
//! A simulator routes its token path to [`TokenIssuer::handle`] and checks every API request's token with
//! [`TokenIssuer::check`].

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;
use http::StatusCode;
use serde_json::{Map, Value, json};

use crate::server::{SimRequest, SimResponse};

/// How the authorisation server behaves.
#[derive(Debug, Clone)]
pub struct OAuthSimConfig {
    pub client_id: String,
    pub client_secret: String,
    /// The refresh token the app got when it was authorised.
    pub refresh_token: String,
    /// How long an access token lives.
    pub access_ttl: Duration,
    /// Each refresh answers a new refresh token and retires the one it used.
    pub rotate_refresh_tokens: bool,
    /// Whether answers carry `expires_in` (Salesforce's do not).
    pub send_expires_in: bool,
    /// Whether `grant_type=client_credentials` is accepted (Creatio's OAuth).
    pub client_credentials: bool,
    /// Refusals come back as 200 `{"error": "invalid_code"}`, as Zoho's accounts server answers them, rather than
    /// RFC 6749's 400 `{"error": "invalid_grant"}`.
    pub errors_with_200: bool,
    /// Extra members of every token answer (`instance_url`, `api_domain`).
    pub extra: Map<String, Value>,
}

impl Default for OAuthSimConfig {
    fn default() -> Self {
        Self {
            client_id: "sim-client-id".into(),
            client_secret: "sim-client-secret".into(),
            refresh_token: "sim-refresh-token".into(),
            access_ttl: Duration::from_secs(1800),
            rotate_refresh_tokens: false,
            send_expires_in: true,
            client_credentials: false,
            errors_with_200: false,
            extra: Map::new(),
        }
    }
}

/// What an access token check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessCheck {
    Valid,
    Expired,
    Unknown,
}

#[derive(Debug, Default)]
struct State {
    live_refresh: HashSet<String>,
    access: HashMap<String, Instant>,
    issued: u64,
    refreshes: u64,
    refused: u64,
}

/// The authorisation server's state.
#[derive(Debug)]
pub struct TokenIssuer {
    config: OAuthSimConfig,
    state: Mutex<State>,
}

impl TokenIssuer {
    pub fn new(config: OAuthSimConfig) -> Self {
        let mut state = State::default();
        state.live_refresh.insert(config.refresh_token.clone());
        Self {
            config,
            state: Mutex::new(state),
        }
    }

    pub fn config(&self) -> &OAuthSimConfig {
        &self.config
    }

    /// Answers a request to the token endpoint. Parameters are read from a form body, or from the query string
    /// (Zoho's accounts server takes both).
    pub fn handle(&self, request: &SimRequest) -> SimResponse {
        let mut params: HashMap<String, String> = url::form_urlencoded::parse(&request.body).into_owned().collect();
        if let Some(query) = request.uri.query() {
            params.extend(url::form_urlencoded::parse(query.as_bytes()).into_owned());
        }
        // Client authentication in the form, or as HTTP Basic (RFC 6749 §2.3.1 allows both).
        if let Some((id, secret)) = request
            .header("authorization")
            .and_then(|h| h.strip_prefix("Basic "))
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b.trim()).ok())
            .and_then(|raw| String::from_utf8(raw).ok())
            .and_then(|text| text.split_once(':').map(|(i, s)| (i.to_string(), s.to_string())))
        {
            params.insert("client_id".into(), id);
            params.insert("client_secret".into(), secret);
        }
        let param = |name: &str| params.get(name).map(String::as_str).unwrap_or("");
        if param("client_id") != self.config.client_id || param("client_secret") != self.config.client_secret {
            return self.refusal(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                "client authentication failed",
            );
        }
        let mut state = self.state.lock().unwrap();
        let refresh = match param("grant_type") {
            "refresh_token" => {
                let presented = param("refresh_token");
                if !state.live_refresh.contains(presented) {
                    state.refused += 1;
                    return self.refusal(StatusCode::BAD_REQUEST, "invalid_grant", "expired access/refresh token");
                }
                if self.config.rotate_refresh_tokens {
                    state.live_refresh.remove(presented);
                    state.issued += 1;
                    let next = format!("rt-{}-{:016x}", state.issued, rand::random::<u64>());
                    state.live_refresh.insert(next.clone());
                    Some(next)
                } else {
                    None
                }
            }
            "client_credentials" if self.config.client_credentials => None,
            other => {
                state.refused += 1;
                return self.refusal(
                    StatusCode::BAD_REQUEST,
                    "unsupported_grant_type",
                    &format!("grant type {other:?} is not supported"),
                );
            }
        };
        state.issued += 1;
        state.refreshes += 1;
        let access = format!("at-{}-{:016x}", state.issued, rand::random::<u64>());
        state
            .access
            .insert(access.clone(), Instant::now() + self.config.access_ttl);
        let mut body = json!({"access_token": access, "token_type": "bearer"});
        if self.config.send_expires_in {
            body["expires_in"] = json!(self.config.access_ttl.as_secs());
        }
        if let Some(refresh) = refresh {
            body["refresh_token"] = json!(refresh);
        }
        for (k, v) in &self.config.extra {
            body[k] = v.clone();
        }
        SimResponse::json(StatusCode::OK, &body)
    }

    fn refusal(&self, status: StatusCode, error: &str, description: &str) -> SimResponse {
        if self.config.errors_with_200 {
            // Zoho: every refusal is a 200 whose body names the error.
            return SimResponse::json(StatusCode::OK, &json!({"error": "invalid_code"}));
        }
        SimResponse::json(status, &json!({"error": error, "error_description": description}))
    }

    /// Checks an access token presented to the API.
    pub fn check(&self, token: &str) -> AccessCheck {
        match self.state.lock().unwrap().access.get(token) {
            Some(expires) if Instant::now() < *expires => AccessCheck::Valid,
            Some(_) => AccessCheck::Expired,
            None => AccessCheck::Unknown,
        }
    }

    /// How many tokens the endpoint issued (refreshes and client-credentials grants).
    pub fn refreshes(&self) -> u64 {
        self.state.lock().unwrap().refreshes
    }

    /// How many grants it refused.
    pub fn refused(&self) -> u64 {
        self.state.lock().unwrap().refused
    }

    /// The refresh tokens that work now (after rotations, the newest).
    pub fn live_refresh_tokens(&self) -> Vec<String> {
        self.state.lock().unwrap().live_refresh.iter().cloned().collect()
    }

    /// Revokes every refresh token: the next refresh gets `invalid_grant` (the user removed the app).
    pub fn revoke_refresh_tokens(&self) {
        self.state.lock().unwrap().live_refresh.clear();
    }

    /// A new authorisation: returns a refresh token that works from now on.
    pub fn authorize(&self) -> String {
        let mut state = self.state.lock().unwrap();
        state.issued += 1;
        let token = format!("rt-{}-{:016x}", state.issued, rand::random::<u64>());
        state.live_refresh.insert(token.clone());
        token
    }

    /// Every access token expires now.
    pub fn expire_access_tokens(&self) {
        let now = Instant::now();
        for expires in self.state.lock().unwrap().access.values_mut() {
            *expires = now;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn token_request(body: &str) -> SimRequest {
        SimRequest {
            method: http::Method::POST,
            uri: "/oauth/token".parse().unwrap(),
            headers: http::HeaderMap::new(),
            body: Bytes::from(body.to_string()),
            received_at: Instant::now(),
        }
    }

    fn refresh_body(token: &str) -> String {
        format!(
            "grant_type=refresh_token&client_id=sim-client-id&client_secret=sim-client-secret&refresh_token={token}"
        )
    }

    fn answer(response: &SimResponse) -> Value {
        serde_json::from_slice(&response.body).unwrap()
    }

    #[test]
    fn a_refresh_issues_an_access_token_that_expires() {
        let issuer = TokenIssuer::new(OAuthSimConfig {
            access_ttl: Duration::from_millis(50),
            ..OAuthSimConfig::default()
        });
        let response = issuer.handle(&token_request(&refresh_body("sim-refresh-token")));
        assert_eq!(response.status, StatusCode::OK);
        let access = answer(&response)["access_token"].as_str().unwrap().to_string();
        assert_eq!(issuer.check(&access), AccessCheck::Valid);
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(issuer.check(&access), AccessCheck::Expired);
        assert_eq!(issuer.check("made-up"), AccessCheck::Unknown);
        assert_eq!(issuer.refreshes(), 1);
    }

    #[test]
    fn rotation_retires_the_refresh_token_it_used() {
        let issuer = TokenIssuer::new(OAuthSimConfig {
            rotate_refresh_tokens: true,
            ..OAuthSimConfig::default()
        });
        let first = answer(&issuer.handle(&token_request(&refresh_body("sim-refresh-token"))));
        let rotated = first["refresh_token"].as_str().unwrap().to_string();
        let again = issuer.handle(&token_request(&refresh_body("sim-refresh-token")));
        assert_eq!(again.status, StatusCode::BAD_REQUEST);
        assert_eq!(answer(&again)["error"], "invalid_grant");
        let next = issuer.handle(&token_request(&refresh_body(&rotated)));
        assert_eq!(next.status, StatusCode::OK);
        assert_eq!(issuer.refused(), 1);
    }

    #[test]
    fn refusals_follow_the_configured_style() {
        let zoho = TokenIssuer::new(OAuthSimConfig {
            errors_with_200: true,
            ..OAuthSimConfig::default()
        });
        zoho.revoke_refresh_tokens();
        let response = zoho.handle(&token_request(&refresh_body("sim-refresh-token")));
        assert_eq!(response.status, StatusCode::OK);
        assert_eq!(answer(&response)["error"], "invalid_code");
        let plain = TokenIssuer::new(OAuthSimConfig::default());
        let bad_client = plain.handle(&token_request(
            "grant_type=refresh_token&client_id=x&client_secret=y&refresh_token=sim-refresh-token",
        ));
        assert_eq!(bad_client.status, StatusCode::UNAUTHORIZED);
        let cc = plain.handle(&token_request(
            "grant_type=client_credentials&client_id=sim-client-id&client_secret=sim-client-secret",
        ));
        assert_eq!(
            cc.status,
            StatusCode::BAD_REQUEST,
            "client credentials are off by default"
        );
    }
}
