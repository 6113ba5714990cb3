//! How a Creatio connection proves who it is: a forms-authentication session (cookies plus the `BPMCSRF` header),
//! or OAuth 2.0 client-credentials tokens from Creatio's Identity Service. Either way a refused request gets one
//! fresh session or token and one more try; a second refusal is an auth failure.

use std::sync::Arc;

use super::session::{CSRF, FormsSession};
use crate::auth::Credential;
use crate::providers::{CrmClient, CrmResponse, ProviderError};

/// A connection's way in.
pub enum CreatioAuth {
    /// `username` + `password`: log in, send the cookies and `BPMCSRF`.
    Forms(FormsSession),
    /// `oauth`: `Authorization: Bearer` with a client-credentials token.
    OAuth(Credential),
}

impl CreatioAuth {
    /// Sends the request `build` makes, authenticated. When Creatio refuses it (401, or 403 for a stale CSRF
    /// token) logs in again, or fetches a new token, once and sends it again.
    pub async fn send<F>(&self, client: &CrmClient, operation: &str, build: F) -> Result<CrmResponse, ProviderError>
    where
        F: Fn(&reqwest::Client) -> reqwest::RequestBuilder,
    {
        let session = match self {
            CreatioAuth::OAuth(credential) => {
                return client
                    .send_authorized(operation, credential, |http, token| {
                        build(http).bearer_auth(token.expose())
                    })
                    .await;
            }
            CreatioAuth::Forms(session) => session,
        };
        let send = |cookies: Arc<super::session::Cookies>| {
            let request = build(client.http())
                .header(http::header::COOKIE, cookies.header.expose())
                .header(CSRF, cookies.csrf.expose())
                .header("ForceUseSession", "true");
            client.send(operation, request)
        };
        let cookies = session.cookies(client).await?;
        match send(cookies.clone()).await {
            Err(ProviderError::Auth(first)) => {
                tracing::info!(connection = %client.connection(), operation, "Creatio refused the session; logging in again once.");
                session.rejected(&cookies).await;
                let fresh = session.cookies(client).await?;
                send(fresh).await.map_err(|e| match e {
                    ProviderError::Auth(again) => {
                        ProviderError::Auth(format!("{again} (also with the previous session: {first})"))
                    }
                    other => other,
                })
            }
            other => other,
        }
    }
}
