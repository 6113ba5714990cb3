//! Salesforce's own connection keys.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::limits::ApiUsage;
use crate::auth::{Credential, OAuthConfig, OAuthSession};
use crate::config::{Problem, RateLimits, Secret, duration};
use crate::providers::{BuildContext, Provider, ProviderSettings};

/// `provider = "salesforce"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SalesforceConfig {
    /// The connected app's OAuth2 grant (`token_url = "https://login.salesforce.com/services/oauth2/token"`, or
    /// your My Domain's). Salesforce names the org's API host in each token answer (`instance_url`), which then
    /// takes the place of `base_url`; its token answers carry no expiry, so `assumed_lifetime` (default 1 h)
    /// says when to refresh, and a session Salesforce ends earlier is refreshed on its 401.
    pub oauth: OAuthConfig,
    /// sObjects to sync: "Account", "Contact", "Lead", "Opportunity", custom "Invoice__c", ...
    pub objects: Vec<String>,
    /// The REST API version, as in `/services/data/v62.0/` (29.0 or later: getDeleted needs it).
    #[serde(default = "default_api_version")]
    pub api_version: String,
    /// Fields to read per object (`fields = { Account = ["Name", "Industry"] }`); `Id` and `SystemModstamp` are
    /// always read. An object not named here reads `FIELDS(STANDARD)`.
    #[serde(default)]
    pub fields: HashMap<String, Vec<String>>,
    /// The External ID field (unique) that holds each write's idempotency key, on every object written to:
    /// pushes are upserts on it, so a retry updates the record an earlier attempt created.
    #[serde(default = "default_external_id_field")]
    pub external_id_field: String,
    /// The token Outbound Messages must carry in `?token=`; they are refused while it is unset.
    pub webhook_token: Option<Secret>,
    /// When set, an Outbound Message from another org is refused even with the right token.
    pub organization_id: Option<String>,
    /// Rows per query batch (`Sforce-Query-Options: batchSize`), 200 to 2,000.
    #[serde(default = "default_batch_size")]
    pub batch_size: u32,
    /// The share (percent) of the org's daily API allocation left for its other integrations: once
    /// `Sforce-Limit-Info` shows the org past the rest, requests slow to what the allocation refills.
    #[serde(default = "default_api_reserve_percent")]
    pub api_reserve_percent: u8,
    /// The period of the org's API allocation (Salesforce: a rolling 24 hours).
    #[serde(default = "default_api_usage_window", with = "duration")]
    pub api_usage_window: Duration,
}

fn default_api_version() -> String {
    "62.0".to_string()
}

fn default_external_id_field() -> String {
    "Crmsyncd_Key__c".to_string()
}

fn default_batch_size() -> u32 {
    2000
}

fn default_api_reserve_percent() -> u8 {
    20
}

fn default_api_usage_window() -> Duration {
    Duration::from_secs(24 * 3600)
}

/// An API name: a letter, then letters, digits and underscores (custom ones end in `__c`). Checked so nothing
/// from the config can change the meaning of a SOQL query or a URL.
pub(super) fn is_api_name(s: &str) -> bool {
    s.starts_with(|c: char| c.is_ascii_alphabetic()) && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A field path: API names joined by dots (`Account.Name` reads a parent's field).
fn is_field_path(s: &str) -> bool {
    !s.is_empty() && s.split('.').all(is_api_name)
}

impl SalesforceConfig {
    /// `62.0` as a number, when well formed.
    fn version_number(&self) -> Option<f64> {
        let (major, minor) = self.api_version.split_once('.')?;
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        (digits(major) && digits(minor)).then(|| self.api_version.parse().ok())?
    }
}

impl ProviderSettings for SalesforceConfig {
    fn objects_key(&self) -> &'static str {
        "objects"
    }

    fn objects(&self) -> &[String] {
        &self.objects
    }

    /// Salesforce has no per-second limit, only the org's daily allocation, which `Sforce-Limit-Info` tracks
    /// (see `api_reserve_percent`). Ten a second keeps a first sync (2,000 rows a request) fast without letting
    /// one connection burn an org's allocation in minutes.
    fn default_rate_limit(&self) -> RateLimits {
        RateLimits::one(10, Duration::from_secs(1))
    }

    /// SystemModstamp is set when a transaction starts and becomes visible when it commits; five minutes covers
    /// long triggers and bulk jobs.
    fn default_overlap(&self) -> Duration {
        Duration::from_secs(300)
    }

    fn uses_oauth(&self) -> bool {
        true
    }

    fn problems(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        let mut problem = |key: String, message: String| problems.push(Problem { key, message });
        for (i, object) in self.objects.iter().enumerate() {
            if !is_api_name(object) {
                problem(
                    format!("objects[{i}]"),
                    format!("{object:?} is not an sObject API name (letters, digits, '_')"),
                );
            }
        }
        for (object, fields) in &self.fields {
            if !self.objects.contains(object) {
                problem(
                    format!("fields.{object}"),
                    "names an object that is not in `objects`".into(),
                );
            }
            for field in fields {
                if !is_field_path(field) {
                    problem(format!("fields.{object}"), format!("{field:?} is not a field API name"));
                }
            }
        }
        if !is_api_name(&self.external_id_field) {
            problem(
                "external_id_field".into(),
                format!("{:?} is not a field API name", self.external_id_field),
            );
        }
        match self.version_number() {
            Some(v) if v < 51.0 && self.objects.iter().any(|o| !self.fields.contains_key(o)) => problem(
                "fields".into(),
                format!(
                    "objects without a field list read FIELDS(STANDARD), which needs api_version 51.0 or later (it is {}); list their fields or raise the version",
                    self.api_version
                ),
            ),
            Some(v) if v >= 29.0 => {}
            _ => problem(
                "api_version".into(),
                format!(
                    "{:?} must look like \"62.0\" and be 29.0 or later (getDeleted needs it)",
                    self.api_version
                ),
            ),
        }
        if !(200..=2000).contains(&self.batch_size) {
            problem("batch_size".into(), "must be between 200 and 2000".into());
        }
        if self.api_reserve_percent > 90 {
            problem(
                "api_reserve_percent".into(),
                "must be at most 90 (percent of the org's allocation)".into(),
            );
        }
        if self.api_usage_window.is_zero() {
            problem("api_usage_window".into(), "must be longer than 0s".into());
        }
        if let Some(org) = &self.organization_id
            && !(matches!(org.len(), 15 | 18) && org.chars().all(|c| c.is_ascii_alphanumeric()))
        {
            problem(
                "organization_id".into(),
                "must be the org's 15- or 18-character id (00D...)".into(),
            );
        }
        problems
    }

    fn build(&self, ctx: BuildContext<'_>) -> anyhow::Result<Arc<dyn Provider>> {
        let credential = Credential::OAuth(Arc::new(OAuthSession::new(
            &ctx.connection.id,
            self.oauth.clone(),
            ctx.vault.clone(),
        )));
        let client = ctx.client(Arc::new(ApiUsage::new(self.api_reserve_percent, self.api_usage_window)))?;
        Ok(Arc::new(super::Salesforce::new(
            ctx.connection,
            self.clone(),
            client,
            credential,
        )))
    }
}

impl SalesforceConfig {
    /// The SELECT list for `object`: the configured fields plus `Id` and `SystemModstamp`, or
    /// `FIELDS(STANDARD)`.
    pub fn select_list(&self, object: &str) -> String {
        match self.fields.get(object) {
            Some(list) => {
                let mut fields = vec!["Id".to_string(), "SystemModstamp".to_string()];
                for f in list {
                    if !fields.iter().any(|have| have.eq_ignore_ascii_case(f)) {
                        fields.push(f.clone());
                    }
                }
                fields.join(", ")
            }
            None => "FIELDS(STANDARD)".to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> Result<crate::config::Config, String> {
        let text = format!(
            r#"
[database]
credentials_key = "{key}"

[[connection]]
id = "sf"
provider = "salesforce"
base_url = "https://example.my.salesforce.com"
objects = ["Account", "Contact"]
oauth = {{ token_url = "https://login.salesforce.com/services/oauth2/token", client_id = "c", client_secret = "s", refresh_token = "r" }}
{extra}
"#,
            key = "A".repeat(43) + "="
        );
        crate::config::Config::parse(&text, std::path::Path::new("t.toml"), &|_| None).map_err(|e| e.to_string())
    }

    #[test]
    fn a_minimal_connection_parses_with_salesforce_defaults() {
        let config = config("").unwrap();
        let c = &config.connections[0];
        assert_eq!(c.overlap, Duration::from_secs(300));
        assert_eq!(c.rate_limit, RateLimits::one(10, Duration::from_secs(1)));
        assert!(c.provider.settings().uses_oauth());
    }

    #[test]
    fn every_bad_key_is_reported_at_once() {
        let error = config(
            r#"api_version = "62"
batch_size = 5000
api_reserve_percent = 95
external_id_field = "Key; DROP"
organization_id = "nope"
fields = { Account = ["Name", "bad field"], Task = ["Subject"] }"#,
        )
        .unwrap_err();
        for key in [
            "api_version",
            "batch_size",
            "api_reserve_percent",
            "external_id_field",
            "organization_id",
            "fields.Account",
            "fields.Task",
        ] {
            assert!(error.contains(&format!("connection[0].{key}")), "{key} in:\n{error}");
        }
    }

    #[test]
    fn an_old_api_version_needs_a_field_list_for_every_object() {
        let error = config(
            r#"api_version = "45.0"
fields = { Account = ["Name"] }"#,
        )
        .unwrap_err();
        assert!(
            error.contains("connection[0].fields: objects without a field list"),
            "{error}"
        );
        config(
            r#"api_version = "45.0"
fields = { Account = ["Name"], Contact = ["Email"] }"#,
        )
        .unwrap();
    }

    #[test]
    fn api_names_are_checked_so_nothing_can_change_a_query() {
        assert!(is_api_name("Invoice__c"));
        assert!(!is_api_name("Account WHERE Id != null"));
        assert!(!is_api_name("1Account"));
        assert!(!is_api_name(""));
        assert!(is_field_path("Account.Owner.Name"));
        assert!(!is_field_path("Name,"));
        assert!(!is_field_path("Account..Name"));
    }

    #[test]
    fn the_select_list_always_has_id_and_system_modstamp() {
        let config = config(r#"fields = { Account = ["Name", "id"] }"#).unwrap();
        let crate::config::ProviderConfig::Salesforce(sf) = &config.connections[0].provider else {
            panic!("a Salesforce connection");
        };
        assert_eq!(sf.select_list("Account"), "Id, SystemModstamp, Name");
        assert_eq!(sf.select_list("Contact"), "FIELDS(STANDARD)");
    }
}
