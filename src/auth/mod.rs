//! How a connection proves who it is to its CRM: a key or token from the config, or OAuth2 access tokens that
//! expire and are refreshed, with rotated refresh tokens kept (sealed) in the database so a restart does not lose
//! them.

mod oauth;
mod vault;

use std::sync::Arc;

pub use oauth::{ClientAuth, OAuthConfig, OAuthSession};
pub use vault::{CredentialKey, CredentialVault, KeyError, StoredTokens};

use crate::config::Secret;
use crate::providers::{CrmClient, ProviderError};

/// What a connection authenticates with.
#[derive(Clone, Debug)]
pub enum Credential {
    /// A key or token that does not expire on its own (HubSpot private-app tokens, Klaviyo and Pipedrive keys).
    Static(Secret),
    /// OAuth2 access tokens, refreshed before they expire.
    OAuth(Arc<OAuthSession>),
}

impl Credential {
    /// The token to send now. An OAuth token close to expiry is refreshed first (through `client`, so the
    /// token request passes the connection's rate gate too).
    pub async fn token(&self, client: &CrmClient) -> Result<Secret, ProviderError> {
        match self {
            Credential::Static(s) => Ok(s.clone()),
            Credential::OAuth(session) => session.access_token(client).await,
        }
    }

    /// Whether a refused token is worth refreshing and trying again.
    pub fn is_refreshable(&self) -> bool {
        matches!(self, Credential::OAuth(_))
    }

    /// The CRM refused `token`: the next [`Credential::token`] gets a fresh one.
    pub async fn rejected(&self, token: &Secret) {
        if let Credential::OAuth(session) = self {
            session.rejected(token).await;
        }
    }

    /// The API base the token endpoint named (Salesforce's `instance_url`, Zoho's `api_domain`), if any.
    pub async fn instance_url(&self) -> Option<String> {
        match self {
            Credential::Static(_) => None,
            Credential::OAuth(session) => session.instance_url().await,
        }
    }
}
