//! HubSpot's own connection keys.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::auth::{Credential, OAuthConfig, OAuthSession};
use crate::config::{Problem, RateLimits, Secret, duration};
use crate::providers::{BuildContext, Provider, ProviderSettings};

/// `provider = "hubspot"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HubSpotConfig {
    /// Private-app access token (sent as `Authorization: Bearer`). Set this or `oauth`.
    pub access_token: Option<Secret>,
    /// A public app's OAuth2 grant (`token_url = "https://api.hubapi.com/oauth/v1/token"`): access tokens last
    /// 30 minutes and are refreshed before they expire. Set this or `access_token`.
    pub oauth: Option<OAuthConfig>,
    /// The app's client secret, which signs webhooks. Webhooks are refused while it is unset.
    pub webhook_secret: Option<Secret>,
    /// Objects to sync: "contacts", "companies", "deals", ...
    pub objects: Vec<String>,
    /// Which webhook signature HubSpot sends: "v1", "v2" or "v3" (the default).
    #[serde(default)]
    pub signature_version: SignatureVersion,
    /// How old a v3 request timestamp may be.
    #[serde(default = "default_tolerance", with = "duration")]
    pub webhook_tolerance: Duration,
    /// How often to list archived records for deletions no webhook reported (HubSpot's search never returns
    /// archived records, so without this only webhooks would tell of deletes).
    #[serde(default = "default_archived_poll_interval", with = "duration")]
    pub archived_poll_interval: Duration,
    /// Records per search page (HubSpot's maximum is 200).
    #[serde(default = "default_page_size")]
    pub page_size: u32,
    /// Properties to read per object (`properties = { contacts = ["email", "firstname"] }`); objects not named
    /// here use a default list for the standard objects and HubSpot's own defaults for the rest.
    #[serde(default)]
    pub properties: HashMap<String, Vec<String>>,
}

impl ProviderSettings for HubSpotConfig {
    fn objects_key(&self) -> &'static str {
        "objects"
    }

    fn objects(&self) -> &[String] {
        &self.objects
    }

    /// HubSpot's private-app limit on Free/Starter portals.
    fn default_rate_limit(&self) -> RateLimits {
        RateLimits::one(100, Duration::from_secs(10))
    }

    /// Covers HubSpot's search-index lag (seconds) with a wide margin.
    fn default_overlap(&self) -> Duration {
        Duration::from_secs(60)
    }

    fn needs_public_url(&self) -> bool {
        self.webhook_secret.is_some() && self.signature_version.signs_uri()
    }

    fn uses_oauth(&self) -> bool {
        self.oauth.is_some()
    }

    fn problems(&self) -> Vec<Problem> {
        match (&self.access_token, &self.oauth) {
            (Some(_), None) | (None, Some(_)) => Vec::new(),
            (None, None) => vec![Problem {
                key: "access_token".into(),
                message: "is required (a private app's token), unless `oauth` is set (a public app)".into(),
            }],
            (Some(_), Some(_)) => vec![Problem {
                key: "oauth".into(),
                message: "set either access_token (a private app) or oauth (a public app), not both".into(),
            }],
        }
    }

    fn build(&self, ctx: BuildContext<'_>) -> anyhow::Result<Arc<dyn Provider>> {
        let credential = match (&self.access_token, &self.oauth) {
            (_, Some(oauth)) => Credential::OAuth(Arc::new(OAuthSession::new(
                &ctx.connection.id,
                oauth.clone(),
                ctx.vault.clone(),
            ))),
            (Some(token), None) => Credential::Static(token.clone()),
            (None, None) => anyhow::bail!("connection {}: no access_token and no oauth", ctx.connection.id),
        };
        let client = ctx.client(Arc::new(super::QuotaHeaders))?;
        Ok(Arc::new(super::HubSpot::new(
            ctx.connection,
            self.clone(),
            client,
            credential,
        )))
    }
}

impl HubSpotConfig {
    /// The properties to request for `object`.
    pub fn properties_for(&self, object: &str) -> Vec<String> {
        if let Some(list) = self.properties.get(object) {
            return list.clone();
        }
        let defaults: &[&str] = match object {
            "contacts" => &["email", "firstname", "lastname", "phone", "company"],
            "companies" => &["name", "domain", "industry", "phone"],
            "deals" => &["dealname", "amount", "dealstage", "pipeline"],
            _ => &[],
        };
        defaults.iter().map(|s| s.to_string()).collect()
    }
}

/// HubSpot's webhook signature versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SignatureVersion {
    V1,
    V2,
    #[default]
    V3,
}

impl SignatureVersion {
    /// v2 and v3 sign the URL HubSpot called.
    pub fn signs_uri(self) -> bool {
        !matches!(self, SignatureVersion::V1)
    }
}

fn default_tolerance() -> Duration {
    Duration::from_secs(300)
}

fn default_archived_poll_interval() -> Duration {
    Duration::from_secs(600)
}

fn default_page_size() -> u32 {
    200
}
