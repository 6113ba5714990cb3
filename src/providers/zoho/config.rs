//! Zoho CRM's own connection keys.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::auth::{Credential, OAuthConfig, OAuthSession};
use crate::config::{Problem, RateLimitConfig, RateLimits, Secret, duration};
use crate::providers::{BuildContext, Provider, ProviderSettings};

/// Zoho's own limit on a notification token's length.
pub const MAX_NOTIFY_TOKEN_CHARS: usize = 50;
/// Most records a COQL query returns for one API credit.
pub const MAX_PAGE_SIZE: u32 = 200;
/// COQL selects at most 50 columns; `id` and `Modified_Time` are always two of them.
pub const MAX_FIELDS: usize = 48;

/// `provider = "zoho"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZohoConfig {
    /// The app's OAuth2 grant from Zoho's accounts server of the org's data centre (`token_url =
    /// "https://accounts.zoho.com/oauth/v2/token"`, `.eu`, `.in`, ...). Access tokens last an hour and are
    /// refreshed before they expire; the refresh token needs the scopes `ZohoCRM.modules.ALL`,
    /// `ZohoCRM.coql.READ` and, with `notify_token`, `ZohoCRM.notifications.ALL`.
    pub oauth: OAuthConfig,
    /// Modules to sync, by API name: "Leads", "Contacts", "Accounts", "Deals", ...
    pub modules: Vec<String>,
    /// Fields to read per module, by API name (`fields = { Leads = ["Last_Name", "Email"] }`); a module not named
    /// here reads a default list for the standard modules and `Name` for others. `id` and `Modified_Time` are
    /// always read.
    #[serde(default)]
    pub fields: HashMap<String, Vec<String>>,
    /// Records per COQL page, 1 to 200 (a query of up to 200 costs one API credit; more costs two or three).
    #[serde(default = "default_page_size")]
    pub page_size: u32,
    /// The field (API name) that holds a write's idempotency key. Create it in every module you push to as a
    /// single-line field with "Do not allow duplicate values": upsert checks it for a duplicate, so a retried
    /// write updates the record an earlier attempt created instead of creating another.
    #[serde(default = "default_push_key_field")]
    pub push_key_field: String,
    /// The token Zoho echoes in every notification callback (at most 50 characters). When set, the connection
    /// subscribes a notification channel for its modules at `{http.public_url}/webhooks/{id}` and renews it
    /// before it expires; callbacks without this token are refused.
    pub notify_token: Option<Secret>,
    /// The notification channel's id (a number); by default one derived from the connection id.
    pub channel_id: Option<u64>,
    /// How long each channel subscription asks to live (Zoho caps it); it is renewed at half its remaining life.
    #[serde(default = "default_channel_ttl", with = "duration")]
    pub channel_ttl: Duration,
    /// How old a callback's `server_time` may be before it is refused as a replay.
    #[serde(default = "default_notify_tolerance", with = "duration")]
    pub notify_tolerance: Duration,
    /// How far back Zoho's delete log (`/deleted`) is trusted to reach; after a longer gap every id is compared
    /// instead.
    #[serde(default = "default_delete_log_retention", with = "duration")]
    pub delete_log_retention: Duration,
}

impl ProviderSettings for ZohoConfig {
    fn objects_key(&self) -> &'static str {
        "modules"
    }

    fn objects(&self) -> &[String] {
        &self.modules
    }

    /// A Standard-edition org with a handful of users: 50,000 API credits in any rolling 24 hours and 10
    /// requests in flight. Set `rate_limit` (and `max_concurrent_requests`) for a bigger edition.
    fn default_rate_limit(&self) -> RateLimits {
        RateLimits {
            windows: vec![RateLimitConfig {
                requests: 50_000,
                per: Duration::from_secs(24 * 3600),
            }],
            max_concurrent: Some(10),
        }
    }

    /// Modified_Time has second precision and a slow operation (a mass update, a workflow) commits rows stamped
    /// with its start: re-read five minutes.
    fn default_overlap(&self) -> Duration {
        Duration::from_secs(300)
    }

    fn needs_public_url(&self) -> bool {
        self.notify_token.is_some()
    }

    fn uses_oauth(&self) -> bool {
        true
    }

    fn problems(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        let mut problem = |key: &str, message: String| {
            problems.push(Problem {
                key: key.to_string(),
                message,
            })
        };
        if !(1..=MAX_PAGE_SIZE).contains(&self.page_size) {
            problem(
                "page_size",
                format!("must be between 1 and {MAX_PAGE_SIZE} (one API credit per query)"),
            );
        }
        if let Some(token) = &self.notify_token
            && token.expose().chars().count() > MAX_NOTIFY_TOKEN_CHARS
        {
            problem(
                "notify_token",
                format!("must be at most {MAX_NOTIFY_TOKEN_CHARS} characters (Zoho's limit)"),
            );
        }
        for (i, module) in self.modules.iter().enumerate() {
            if !is_api_name(module) {
                problem(
                    &format!("modules[{i}]"),
                    format!("{module:?} is not a module API name (letters, digits and _)"),
                );
            }
        }
        for (module, fields) in &self.fields {
            if !self.modules.contains(module) {
                problem(
                    &format!("fields.{module}"),
                    "names a module that is not in `modules`".into(),
                );
            }
            if fields.len() > MAX_FIELDS {
                problem(
                    &format!("fields.{module}"),
                    format!("at most {MAX_FIELDS} fields (COQL selects 50 columns, id and Modified_Time among them)"),
                );
            }
            if let Some(bad) = fields.iter().find(|f| !is_api_name(f)) {
                problem(
                    &format!("fields.{module}"),
                    format!("{bad:?} is not a field API name (letters, digits and _)"),
                );
            }
        }
        if !is_api_name(&self.push_key_field) {
            problem(
                "push_key_field",
                "must be a field API name (letters, digits and _)".into(),
            );
        }
        if self.channel_ttl < Duration::from_secs(1) {
            problem("channel_ttl", "must be at least 1s".into());
        }
        problems
    }

    fn build(&self, ctx: BuildContext<'_>) -> anyhow::Result<Arc<dyn Provider>> {
        let credential = Credential::OAuth(Arc::new(OAuthSession::new(
            &ctx.connection.id,
            self.oauth.clone(),
            ctx.vault.clone(),
        )));
        let client = ctx.client(Arc::new(super::CreditHeaders))?;
        Ok(Arc::new(super::Zoho::new(
            ctx.connection,
            self.clone(),
            client,
            credential,
            ctx.webhook_url(),
        )))
    }
}

impl ZohoConfig {
    /// The fields to read for `module`, `id` and `Modified_Time` included. Names are checked at load, so they
    /// are safe to put in a COQL query.
    pub fn fields_for(&self, module: &str) -> Vec<String> {
        let mut fields: Vec<String> = match self.fields.get(module) {
            Some(list) => list.clone(),
            None => {
                let defaults: &[&str] = match module {
                    "Leads" => &["Last_Name", "First_Name", "Email", "Company", "Lead_Status", "Phone"],
                    "Contacts" => &["Last_Name", "First_Name", "Email", "Phone"],
                    "Accounts" => &["Account_Name", "Website", "Industry", "Phone"],
                    "Deals" => &["Deal_Name", "Stage", "Amount", "Closing_Date"],
                    _ => &["Name"],
                };
                defaults.iter().map(|s| s.to_string()).collect()
            }
        };
        for always in ["id", "Modified_Time"] {
            if !fields.iter().any(|f| f == always) {
                fields.push(always.to_string());
            }
        }
        fields
    }

    /// The notification channel's id: the configured one, or a stable 13-digit number derived from `connection`.
    pub fn channel_id_for(&self, connection: &str) -> u64 {
        self.channel_id.unwrap_or_else(|| {
            // FNV-1a: stable across runs and builds, unlike the standard library's hasher.
            let hash = connection.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
            });
            1_000_000_000_000 + hash % 9_000_000_000_000
        })
    }
}

/// A Zoho API name: a letter, then letters, digits and underscores. Anything else could break out of a COQL
/// query.
fn is_api_name(name: &str) -> bool {
    name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn default_page_size() -> u32 {
    MAX_PAGE_SIZE
}

fn default_push_key_field() -> String {
    "crmsyncd_key".to_string()
}

fn default_channel_ttl() -> Duration {
    Duration::from_secs(24 * 3600)
}

fn default_notify_tolerance() -> Duration {
    Duration::from_secs(300)
}

fn default_delete_log_retention() -> Duration {
    Duration::from_secs(60 * 24 * 3600)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> Result<crate::config::Config, crate::config::ConfigError> {
        crate::config::Config::parse(
            &format!(
                r#"
[http]
public_url = "https://hooks.example.com"

[database]
credentials_key = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="

[[connection]]
id = "zoho"
provider = "zoho"
base_url = "https://www.zohoapis.com"
oauth = {{ token_url = "https://accounts.zoho.com/oauth/v2/token", client_id = "c", client_secret = "s", refresh_token = "r" }}
modules = ["Leads", "Deals"]
{extra}
"#
            ),
            std::path::Path::new("t.toml"),
            &|_| None,
        )
    }

    #[test]
    fn a_minimal_connection_gets_zohos_defaults() {
        let config = config("").unwrap();
        let connection = &config.connections[0];
        assert_eq!(connection.rate_limit.windows[0].requests, 50_000);
        assert_eq!(connection.rate_limit.max_concurrent, Some(10));
        assert_eq!(connection.overlap, Duration::from_secs(300));
        let crate::config::ProviderConfig::Zoho(zoho) = &connection.provider else {
            panic!("a zoho connection");
        };
        assert_eq!(zoho.fields_for("Deals").last().unwrap(), "Modified_Time");
        assert_eq!(zoho.channel_id_for("zoho"), zoho.channel_id_for("zoho"));
        assert_ne!(zoho.channel_id_for("zoho"), zoho.channel_id_for("zoho-2"));
        assert_eq!(zoho.channel_id_for("zoho").to_string().len(), 13);
    }

    #[test]
    fn bad_keys_are_each_reported() {
        let long = "x".repeat(51);
        let err = config(&format!(
            "page_size = 500\nnotify_token = \"{long}\"\nfields = {{ Leads = [\"Email; drop\"], Tasks = [\"Subject\"] }}"
        ))
        .unwrap_err();
        let keys: Vec<&str> = err.problems.iter().map(|p| p.key.as_str()).collect();
        for key in [
            "connection[0].page_size",
            "connection[0].notify_token",
            "connection[0].fields.Leads",
            "connection[0].fields.Tasks",
        ] {
            assert!(keys.contains(&key), "{key} missing from {keys:?}");
        }
    }

    #[test]
    fn notifications_need_the_public_url_and_oauth_needs_the_credentials_key() {
        let text = r#"
[[connection]]
id = "zoho"
provider = "zoho"
base_url = "https://www.zohoapis.com"
oauth = { token_url = "https://accounts.zoho.com/oauth/v2/token", client_id = "c", client_secret = "s", refresh_token = "r" }
modules = ["Leads"]
notify_token = "t"
"#;
        let err = crate::config::Config::parse(text, std::path::Path::new("t.toml"), &|_| None).unwrap_err();
        let keys: Vec<&str> = err.problems.iter().map(|p| p.key.as_str()).collect();
        assert!(keys.contains(&"http.public_url"), "{keys:?}");
        assert!(keys.contains(&"database.credentials_key"), "{keys:?}");
        let no_oauth = text.replace("oauth = {", "# oauth = {");
        let err = crate::config::Config::parse(&no_oauth, std::path::Path::new("t.toml"), &|_| None).unwrap_err();
        assert!(
            err.problems
                .iter()
                .any(|p| p.key == "connection[0].oauth" && p.message == "is required")
        );
    }
}
