//! OAuth2 access tokens that expire. One caller refreshes while the others wait for its answer (no stampede); a
//! refresh token the CRM rotates is sealed into the database as soon as it arrives, so a restart continues the
//! chain instead of presenting a spent token; a grant the CRM refuses (`invalid_grant`) is an auth failure, which
//! parks the connection until an operator re-authorises it.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::Mutex;
use url::Url;

use super::vault::{CredentialVault, StoredTokens, VaultError};
use crate::config::{Secret, duration};
use crate::metrics::OAuthOutcome;
use crate::providers::{CrmClient, ProviderError};

/// `oauth = { ... }` in a connection whose CRM uses OAuth2.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OAuthConfig {
    /// The CRM's token endpoint (HubSpot `https://api.hubapi.com/oauth/v1/token`, Zoho
    /// `https://accounts.zoho.com/oauth/v2/token`, Salesforce `https://login.salesforce.com/services/oauth2/token`).
    pub token_url: Url,
    pub client_id: String,
    pub client_secret: Secret,
    /// The refresh token from the app's authorisation (`grant_type=refresh_token`). Without one the connection
    /// uses the client-credentials grant (Creatio).
    pub refresh_token: Option<Secret>,
    /// Scopes asked for in the client-credentials grant.
    pub scope: Option<String>,
    /// How the client proves itself to the token endpoint: `"body"` (client_id and client_secret in the form, as
    /// HubSpot, Zoho and Salesforce take them) or `"basic"` (HTTP Basic, as Klaviyo requires).
    #[serde(default)]
    pub client_auth: ClientAuth,
    /// Refresh this long before the access token expires.
    #[serde(default = "default_refresh_before", with = "duration")]
    pub refresh_before: Duration,
    /// How long an access token is taken to live when the token answer has no `expires_in` (Salesforce's); a
    /// token refused earlier is refreshed then.
    #[serde(default = "default_assumed_lifetime", with = "duration")]
    pub assumed_lifetime: Duration,
}

/// Where the client id and secret go in a token request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    #[default]
    Body,
    Basic,
}

fn default_refresh_before() -> Duration {
    Duration::from_secs(300)
}

fn default_assumed_lifetime() -> Duration {
    Duration::from_secs(3600)
}

/// What the session holds.
#[derive(Default)]
struct State {
    /// Whether stored tokens were looked for yet (lazily, on first use, so building a provider needs no I/O).
    loaded: bool,
    access: Option<Secret>,
    expires_at: Option<DateTime<Utc>>,
    refresh: Option<Secret>,
    instance_url: Option<String>,
    /// A refresh whose tokens are not stored yet (the database was down): stored again on the next use.
    unsaved: bool,
}

/// One connection's OAuth2 tokens.
pub struct OAuthSession {
    connection: String,
    config: OAuthConfig,
    vault: Option<CredentialVault>,
    state: Mutex<State>,
}

impl std::fmt::Debug for OAuthSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuthSession")
            .field("connection", &self.connection)
            .finish_non_exhaustive()
    }
}

/// A token endpoint's answer (RFC 6749 §5.1, plus what CRMs add).
#[derive(Deserialize)]
struct TokenAnswer {
    access_token: Option<String>,
    /// Seconds; Zoho and some others send it as a string.
    expires_in: Option<Value>,
    /// A new refresh token when the CRM rotates them.
    refresh_token: Option<String>,
    /// Salesforce: the org's API host.
    instance_url: Option<String>,
    /// Zoho: the data centre's API host.
    api_domain: Option<String>,
    /// Zoho answers some refusals with 200 and this.
    error: Option<String>,
}

impl OAuthSession {
    /// A session for `connection`; tokens are kept in `vault` when given (the config check makes sure it is for
    /// every OAuth connection the daemon runs).
    pub fn new(connection: &str, config: OAuthConfig, vault: Option<CredentialVault>) -> Self {
        Self {
            connection: connection.to_string(),
            config,
            vault,
            state: Mutex::new(State::default()),
        }
    }

    /// Which configured refresh token a stored chain descends from.
    fn seed(&self) -> String {
        match (&self.vault, &self.config.refresh_token) {
            (Some(vault), Some(token)) => vault.fingerprint(token),
            (Some(vault), None) => vault.fingerprint(&Secret::new(format!("client:{}", self.config.client_id))),
            (None, _) => String::new(),
        }
    }

    /// The access token to send now, refreshed first when it is missing or within `refresh_before` of expiry.
    pub async fn access_token(&self, client: &CrmClient) -> Result<Secret, ProviderError> {
        // Held across the refresh: callers that arrive meanwhile wait, then find the new token.
        let mut state = self.state.lock().await;
        self.load(&mut state).await?;
        let margin = chrono::Duration::from_std(self.config.refresh_before).unwrap_or_default();
        if let (Some(access), Some(expires_at)) = (&state.access, state.expires_at)
            && Utc::now() + margin < expires_at
        {
            let access = access.clone();
            if state.unsaved {
                self.save(&mut state).await;
            }
            return Ok(access);
        }
        self.refresh(&mut state, client).await
    }

    /// The CRM refused `token` before its time: forget it, so the next call refreshes.
    pub async fn rejected(&self, token: &Secret) {
        let mut state = self.state.lock().await;
        if state.access.as_ref() == Some(token) {
            state.access = None;
        }
    }

    /// The API host the token endpoint named, if any.
    pub async fn instance_url(&self) -> Option<String> {
        self.state.lock().await.instance_url.clone()
    }

    /// Reads the stored tokens once. A stored chain that descends from the configured refresh token continues
    /// (it holds the rotated one); one from an older configured token is ignored.
    async fn load(&self, state: &mut State) -> Result<(), ProviderError> {
        if state.loaded {
            return Ok(());
        }
        state.refresh = self.config.refresh_token.clone();
        if let Some(vault) = &self.vault {
            match vault.load(&self.connection).await {
                Ok(Some(stored)) if stored.seed == self.seed() => {
                    state.access = stored.access_token;
                    state.expires_at = stored.expires_at;
                    state.refresh = stored.refresh_token.or(state.refresh.take());
                    state.instance_url = stored.instance_url;
                }
                Ok(Some(_)) => tracing::info!(
                    connection = %self.connection,
                    "The configured refresh token changed; starting from it instead of the stored one."
                ),
                Ok(None) => {}
                Err(VaultError::Unreadable) => tracing::warn!(
                    connection = %self.connection,
                    "Stored OAuth tokens do not open with this credentials_key; starting from the configured refresh token."
                ),
                Err(VaultError::Store(e)) => {
                    return Err(ProviderError::Transient(format!("reading stored OAuth tokens: {e}")));
                }
            }
        }
        state.loaded = true;
        Ok(())
    }

    async fn save(&self, state: &mut State) {
        let Some(vault) = &self.vault else {
            state.unsaved = false;
            return;
        };
        let tokens = StoredTokens {
            seed: self.seed(),
            refresh_token: state.refresh.clone(),
            access_token: state.access.clone(),
            expires_at: state.expires_at,
            instance_url: state.instance_url.clone(),
        };
        match vault.save(&self.connection, &tokens).await {
            Ok(()) => state.unsaved = false,
            Err(e) => {
                state.unsaved = true;
                tracing::warn!(connection = %self.connection, error = %e, "Could not store refreshed OAuth tokens; will try again on next use.");
            }
        }
    }

    async fn refresh(&self, state: &mut State, client: &CrmClient) -> Result<Secret, ProviderError> {
        let mut form: Vec<(&str, &str)> = Vec::new();
        if self.config.client_auth == ClientAuth::Body {
            form.push(("client_id", self.config.client_id.as_str()));
            form.push(("client_secret", self.config.client_secret.expose()));
        }
        match &state.refresh {
            Some(refresh) => {
                form.push(("grant_type", "refresh_token"));
                form.push(("refresh_token", refresh.expose()));
            }
            None => {
                form.push(("grant_type", "client_credentials"));
                if let Some(scope) = &self.config.scope {
                    form.push(("scope", scope));
                }
            }
        }
        let mut request = client.http().post(self.config.token_url.clone()).form(&form);
        if self.config.client_auth == ClientAuth::Basic {
            request = request.basic_auth(&self.config.client_id, Some(self.config.client_secret.expose()));
        }
        let answer = match client.send("oauth_token", request).await {
            Ok(response) => response.json::<TokenAnswer>(),
            Err(e) => Err(e),
        };
        let answer = match answer {
            // A token endpoint's 4xx (invalid_grant, invalid_client, ...) cannot get better by retrying.
            Err(ProviderError::Permanent(message) | ProviderError::Auth(message)) => {
                client.metrics().oauth_refresh(&self.connection, OAuthOutcome::Rejected);
                return Err(ProviderError::Auth(format!(
                    "the token endpoint refused the grant ({message}); re-authorise the app, put the new refresh token in the config and resume the connection"
                )));
            }
            Err(e) => {
                client.metrics().oauth_refresh(&self.connection, OAuthOutcome::Error);
                return Err(e);
            }
            Ok(answer) => answer,
        };
        let access = match (answer.access_token, answer.error) {
            (Some(access), None) if !access.is_empty() => Secret::new(access),
            (_, error) => {
                client.metrics().oauth_refresh(&self.connection, OAuthOutcome::Rejected);
                return Err(ProviderError::Auth(format!(
                    "the token endpoint refused the grant ({}); re-authorise the app, put the new refresh token in the config and resume the connection",
                    error.as_deref().unwrap_or("no access_token in the answer")
                )));
            }
        };
        let lifetime = answer
            .expires_in
            .as_ref()
            .and_then(|v| v.as_u64().or_else(|| v.as_str().and_then(|s| s.trim().parse().ok())))
            .map(Duration::from_secs)
            .unwrap_or(self.config.assumed_lifetime);
        state.access = Some(access.clone());
        state.expires_at = Some(Utc::now() + chrono::Duration::from_std(lifetime).unwrap_or_default());
        if let Some(rotated) = answer.refresh_token.filter(|t| !t.is_empty()) {
            state.refresh = Some(Secret::new(rotated));
        }
        if let Some(host) = answer.instance_url.or(answer.api_domain) {
            state.instance_url = Some(host);
        }
        client.metrics().oauth_refresh(&self.connection, OAuthOutcome::Ok);
        tracing::info!(connection = %self.connection, expires_in = ?lifetime, "Refreshed the OAuth access token.");
        self.save(state).await;
        Ok(access)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use crmsyncd_sim::hubspot::{HubSpotSim, HubSpotSimConfig};
    use crmsyncd_sim::oauth::OAuthSimConfig;

    use super::*;
    use crate::metrics::Metrics;
    use crate::providers::client::PlainPolicy;
    use crate::ratelimit::RateGate;

    async fn setup(ttl: Duration) -> (HubSpotSim, CrmClient, OAuthConfig) {
        let sim = HubSpotSim::start(HubSpotSimConfig {
            oauth: Some(OAuthSimConfig {
                access_ttl: ttl,
                ..OAuthSimConfig::default()
            }),
            ..HubSpotSimConfig::default()
        })
        .await
        .unwrap();
        let config = crate::config::Config::parse(
            &format!(
                "[[connection]]\nid = \"h\"\nprovider = \"hubspot\"\nbase_url = \"{}\"\naccess_token = \"t\"\nobjects = [\"contacts\"]\n",
                sim.base_url()
            ),
            std::path::Path::new("t.toml"),
            &|_| None,
        )
        .unwrap();
        let connection = &config.connections[0];
        let client = CrmClient::new(
            connection,
            Arc::new(RateGate::new(&connection.rate_limit)),
            Arc::new(Metrics::new()),
            Arc::new(PlainPolicy),
        )
        .unwrap();
        let oauth = OAuthConfig {
            token_url: format!("{}/oauth/v1/token", sim.base_url()).parse().unwrap(),
            client_id: "sim-client-id".into(),
            client_secret: Secret::new("sim-client-secret"),
            refresh_token: Some(Secret::new("sim-refresh-token")),
            scope: None,
            client_auth: ClientAuth::Body,
            refresh_before: Duration::from_secs(1),
            assumed_lifetime: Duration::from_secs(3600),
        };
        (sim, client, oauth)
    }

    #[tokio::test]
    async fn callers_that_find_the_token_expired_share_one_refresh() {
        let (sim, client, oauth) = setup(Duration::from_secs(600)).await;
        let session = Arc::new(OAuthSession::new("h", oauth, None));
        let callers: Vec<_> = (0..16)
            .map(|_| {
                let (session, client) = (session.clone(), client.clone());
                tokio::spawn(async move { session.access_token(&client).await })
            })
            .collect();
        let mut tokens = Vec::new();
        for caller in callers {
            tokens.push(caller.await.unwrap().unwrap());
        }
        assert!(tokens.windows(2).all(|w| w[0] == w[1]), "everyone got the same token");
        assert_eq!(sim.oauth().unwrap().refreshes(), 1, "one refresh, not a stampede");
        sim.shutdown().await;
    }

    #[tokio::test]
    async fn a_token_within_the_margin_is_refreshed_before_use_and_a_rejected_one_at_once() {
        // Tokens live 2 s (`expires_in` is in whole seconds) and are refreshed 1 s before expiry.
        let (sim, client, oauth) = setup(Duration::from_secs(2)).await;
        let session = OAuthSession::new("h", oauth, None);
        let first = session.access_token(&client).await.unwrap();
        assert_eq!(session.access_token(&client).await.unwrap(), first, "fresh: reused");
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let second = session.access_token(&client).await.unwrap();
        assert_ne!(second, first, "inside the margin: refreshed before it expired");
        session.rejected(&first).await;
        assert_eq!(
            session.access_token(&client).await.unwrap(),
            second,
            "a stale rejection changes nothing"
        );
        session.rejected(&second).await;
        assert_ne!(session.access_token(&client).await.unwrap(), second);
        assert_eq!(sim.oauth().unwrap().refreshes(), 3);
        sim.shutdown().await;
    }

    #[tokio::test]
    async fn a_revoked_grant_is_an_auth_failure_and_a_zoho_style_200_error_too() {
        let (sim, client, oauth) = setup(Duration::from_secs(600)).await;
        sim.oauth().unwrap().revoke_refresh_tokens();
        let session = OAuthSession::new("h", oauth.clone(), None);
        let err = session.access_token(&client).await.unwrap_err();
        assert!(
            matches!(&err, ProviderError::Auth(m) if m.contains("invalid_grant")),
            "{err:?}"
        );
        sim.shutdown().await;

        let zoho = HubSpotSim::start(HubSpotSimConfig {
            oauth: Some(OAuthSimConfig {
                errors_with_200: true,
                ..OAuthSimConfig::default()
            }),
            ..HubSpotSimConfig::default()
        })
        .await
        .unwrap();
        zoho.oauth().unwrap().revoke_refresh_tokens();
        let oauth = OAuthConfig {
            token_url: format!("{}/oauth/v1/token", zoho.base_url()).parse().unwrap(),
            ..oauth
        };
        let err = OAuthSession::new("h", oauth, None)
            .access_token(&client)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, ProviderError::Auth(m) if m.contains("invalid_code")),
            "{err:?}"
        );
        zoho.shutdown().await;
    }

    #[tokio::test]
    async fn client_credentials_can_go_as_http_basic() {
        let (sim, client, oauth) = setup(Duration::from_secs(600)).await;
        let session = OAuthSession::new(
            "h",
            OAuthConfig {
                client_auth: ClientAuth::Basic,
                ..oauth.clone()
            },
            None,
        );
        session.access_token(&client).await.unwrap();
        assert_eq!(sim.oauth().unwrap().refreshes(), 1);
        let wrong = OAuthSession::new(
            "h",
            OAuthConfig {
                client_auth: ClientAuth::Basic,
                client_secret: Secret::new("not-the-secret"),
                ..oauth
            },
            None,
        );
        assert!(matches!(wrong.access_token(&client).await, Err(ProviderError::Auth(_))));
        sim.shutdown().await;
    }
}
