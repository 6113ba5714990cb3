//! Klaviyo's own connection keys.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::auth::{Credential, OAuthConfig, OAuthSession};
use crate::config::{Problem, RateLimitConfig, RateLimits, Secret, duration};
use crate::providers::{BuildContext, Provider, ProviderSettings};

/// The only object the Klaviyo provider syncs.
pub const PROFILES: &str = "profiles";

/// `provider = "klaviyo"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KlaviyoConfig {
    /// A private API key (`pk_...`, sent as `Authorization: Klaviyo-API-Key`) with the scopes `profiles:read`
    /// and `profiles:write`. Set this or `oauth`.
    pub api_key: Option<Secret>,
    /// An installed OAuth app's grant (`token_url = "https://a.klaviyo.com/oauth/token"`); access tokens last an
    /// hour and are refreshed before they expire. Set this or `api_key`.
    pub oauth: Option<OAuthConfig>,
    /// The API revision sent in every request's `revision` header (`YYYY-MM-DD`, or a `.pre` beta).
    #[serde(default = "default_revision")]
    pub revision: String,
    /// The system webhook's secret key, which signs every delivery. Webhooks are refused while it is unset.
    pub webhook_secret: Option<Secret>,
    /// The system webhook's id: when set, deliveries from any other webhook are refused.
    pub webhook_id: Option<String>,
    /// How far a delivery's `Klaviyo-Timestamp` may be from now.
    #[serde(default = "default_tolerance", with = "duration")]
    pub webhook_tolerance: Duration,
    /// What to sync: Klaviyo's profiles (the only object supported).
    #[serde(default = "default_objects")]
    pub objects: Vec<String>,
    /// Profiles per page (Klaviyo's maximum is 100).
    #[serde(default = "default_page_size")]
    pub page_size: u32,
    /// Attributes to read (`fields = ["email", "first_name"]`, a sparse fieldset); empty: every attribute.
    /// `updated` is always read.
    #[serde(default)]
    pub fields: Vec<String>,
    /// How often to list every profile id to find deletions (Klaviyo's deletions leave no trace to poll).
    #[serde(default = "default_sweep_interval", with = "duration")]
    pub sweep_interval: Duration,
}

impl ProviderSettings for KlaviyoConfig {
    fn objects_key(&self) -> &'static str {
        "objects"
    }

    fn objects(&self) -> &[String] {
        &self.objects
    }

    /// The profile endpoints' documented limits (tier L): 75 per second (burst) and 700 per minute (steady).
    /// Klaviyo counts each endpoint separately, so one budget for all of them is on the safe side.
    fn default_rate_limit(&self) -> RateLimits {
        RateLimits {
            windows: vec![
                RateLimitConfig {
                    requests: 75,
                    per: Duration::from_secs(1),
                },
                RateLimitConfig {
                    requests: 700,
                    per: Duration::from_secs(60),
                },
            ],
            max_concurrent: None,
        }
    }

    /// Klaviyo's profile reads are eventually consistent: a write can show up in the list seconds after
    /// profiles updated later. A minute covers that with a wide margin.
    fn default_overlap(&self) -> Duration {
        Duration::from_secs(60)
    }

    fn uses_oauth(&self) -> bool {
        self.oauth.is_some()
    }

    fn problems(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        match (&self.api_key, &self.oauth) {
            (Some(_), None) | (None, Some(_)) => {}
            (None, None) => problems.push(Problem {
                key: "api_key".into(),
                message: "is required (a private API key), unless `oauth` is set (an installed app)".into(),
            }),
            (Some(_), Some(_)) => problems.push(Problem {
                key: "oauth".into(),
                message: "set either api_key (a private key) or oauth (an installed app), not both".into(),
            }),
        }
        if let Some(other) = self.objects.iter().find(|o| *o != PROFILES) {
            problems.push(Problem {
                key: "objects".into(),
                message: format!("Klaviyo syncs only \"{PROFILES}\", not {other:?}"),
            });
        }
        if !(1..=100).contains(&self.page_size) {
            problems.push(Problem {
                key: "page_size".into(),
                message: "must be between 1 and 100 (Klaviyo's largest page)".into(),
            });
        }
        if !valid_revision(&self.revision) {
            problems.push(Problem {
                key: "revision".into(),
                message: format!(
                    "{:?} is not a Klaviyo revision (YYYY-MM-DD, or YYYY-MM-DD.pre)",
                    self.revision
                ),
            });
        }
        if self.sweep_interval.is_zero() {
            problems.push(Problem {
                key: "sweep_interval".into(),
                message: "must be longer than 0s".into(),
            });
        }
        problems
    }

    fn build(&self, ctx: BuildContext<'_>) -> anyhow::Result<Arc<dyn Provider>> {
        let credential = match (&self.api_key, &self.oauth) {
            (_, Some(oauth)) => Credential::OAuth(Arc::new(OAuthSession::new(
                &ctx.connection.id,
                oauth.clone(),
                ctx.vault.clone(),
            ))),
            (Some(key), None) => Credential::Static(key.clone()),
            (None, None) => anyhow::bail!("connection {}: no api_key and no oauth", ctx.connection.id),
        };
        let client = ctx.client(Arc::new(super::quota::KlaviyoQuota))?;
        Ok(Arc::new(super::Klaviyo::new(
            ctx.connection,
            self.clone(),
            client,
            credential,
        )))
    }
}

fn valid_revision(revision: &str) -> bool {
    let date = revision.strip_suffix(".pre").unwrap_or(revision);
    date.len() == 10 && chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d").is_ok()
}

fn default_revision() -> String {
    "2024-10-15".to_string()
}

fn default_tolerance() -> Duration {
    Duration::from_secs(300)
}

fn default_objects() -> Vec<String> {
    vec![PROFILES.to_string()]
}

fn default_page_size() -> u32 {
    100
}

fn default_sweep_interval() -> Duration {
    Duration::from_secs(3600)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(keys: &str) -> Result<crate::config::Config, String> {
        let text = format!(
            "[[connection]]\nid = \"kl\"\nprovider = \"klaviyo\"\nbase_url = \"https://a.klaviyo.com\"\n{keys}\n"
        );
        crate::config::Config::parse(&text, std::path::Path::new("t.toml"), &|_| None).map_err(|e| e.to_string())
    }

    #[test]
    fn a_minimal_connection_gets_klaviyos_defaults() {
        let config = parse("api_key = \"pk_x\"").unwrap();
        let connection = &config.connections[0];
        assert_eq!(connection.provider.objects(), ["profiles"]);
        assert_eq!(connection.rate_limit.windows.len(), 2, "burst and steady");
        assert_eq!(connection.rate_limit.windows[1].requests, 700);
        assert_eq!(connection.overlap, Duration::from_secs(60));
    }

    #[test]
    fn every_bad_key_is_reported_at_once() {
        let error = parse("objects = [\"lists\"]\npage_size = 200\nrevision = \"latest\"\nsweep_interval = \"0s\"")
            .unwrap_err();
        for key in ["api_key", "objects", "page_size", "revision", "sweep_interval"] {
            assert!(error.contains(&format!("connection[0].{key}")), "{key} in:\n{error}");
        }
        let both = parse("api_key = \"pk\"\noauth = { token_url = \"https://a.klaviyo.com/oauth/token\", client_id = \"c\", client_secret = \"s\", refresh_token = \"r\" }").unwrap_err();
        assert!(both.contains("connection[0].oauth"), "{both}");
        assert!(
            parse("api_key = \"pk\"\nfavourite = 1")
                .unwrap_err()
                .contains("favourite")
        );
    }

    #[test]
    fn revisions_are_dates_or_betas() {
        assert!(valid_revision("2024-10-15"));
        assert!(valid_revision("2024-10-15.pre"));
        assert!(!valid_revision("2024-13-01"));
        assert!(!valid_revision("latest"));
    }
}
