//! Creatio's own connection keys.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::auth::CreatioAuth;
use super::odata::{CreatioPolicy, is_identifier};
use super::session::FormsSession;
use crate::auth::{Credential, OAuthConfig, OAuthSession};
use crate::config::{Problem, RateLimits, Secret, duration};
use crate::providers::{BuildContext, Provider, ProviderSettings};

/// The most rows one OData query may ask for (Creatio's default `MaxEntityRowCount`).
pub const MAX_PAGE_SIZE: u32 = 20_000;

/// `provider = "creatio"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreatioConfig {
    /// The API user's login, for forms authentication (`AuthService.svc/Login`). Set it with `password`, or set
    /// `oauth` instead.
    pub username: Option<String>,
    /// The API user's password.
    pub password: Option<Secret>,
    /// OAuth 2.0 client credentials from Creatio's Identity Service (`token_url = "https://<identity
    /// service>/connect/token"`, `client_id`, `client_secret`; no `refresh_token`). Set this or
    /// `username` + `password`.
    pub oauth: Option<OAuthConfig>,
    /// Entities (OData collections) to sync: "Contact", "Account", ...
    pub objects: Vec<String>,
    /// The column that holds a write's idempotency key, searched before a create so a retry cannot create twice.
    /// Add it to each entity you push to (Object designer, a text column; `Usr` is Creatio's custom prefix).
    #[serde(default = "default_push_key_field")]
    pub push_key_field: String,
    /// How often to compare id sets to find deleted rows (Creatio's deletes leave nothing OData can show).
    #[serde(default = "default_sweep_interval", with = "duration")]
    pub sweep_interval: Duration,
    /// Rows per OData page (`$top`), at most 20,000.
    #[serde(default = "default_page_size")]
    pub page_size: u32,
    /// Where OData 4 lives under `base_url`: "0/odata" on .NET Framework, "odata" on .NET 6 and later.
    #[serde(default = "default_odata_path")]
    pub odata_path: String,
    /// Columns to read per entity (`columns = { Contact = ["Name", "Email"] }`); an entity not named here reads
    /// every column. `Id` and `ModifiedOn` are always read.
    #[serde(default)]
    pub columns: HashMap<String, Vec<String>>,
}

impl ProviderSettings for CreatioConfig {
    fn objects_key(&self) -> &'static str {
        "objects"
    }

    fn objects(&self) -> &[String] {
        &self.objects
    }

    /// Creatio documents no API rate limit; every request runs on the same application server as its users, so
    /// stay polite: one request every 200 ms.
    fn default_rate_limit(&self) -> RateLimits {
        RateLimits::one(5, Duration::from_secs(1))
    }

    /// ModifiedOn is stamped when a save starts, and a save that runs business processes commits later: re-read
    /// five minutes.
    fn default_overlap(&self) -> Duration {
        Duration::from_secs(300)
    }

    fn uses_oauth(&self) -> bool {
        self.oauth.is_some()
    }

    fn problems(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        let problem = |key: &str, message: &str| Problem {
            key: key.to_string(),
            message: message.to_string(),
        };
        match (&self.username, &self.password, &self.oauth) {
            (Some(_), Some(_), None) | (None, None, Some(_)) => {}
            (None, None, None) => problems.push(problem(
                "username",
                "is required with password (forms authentication), unless `oauth` is set (OAuth 2.0 client credentials)",
            )),
            (Some(_), None, None) => problems.push(problem("password", "is required with username")),
            (None, Some(_), None) => problems.push(problem("username", "is required with password")),
            (_, _, Some(_)) => problems.push(problem(
                "oauth",
                "set either username and password (forms authentication) or oauth (client credentials), not both",
            )),
        }
        if let Some(oauth) = &self.oauth
            && oauth.refresh_token.is_some()
        {
            problems.push(problem(
                "oauth.refresh_token",
                "Creatio's integrations use the client-credentials grant: remove refresh_token",
            ));
        }
        for (i, object) in self.objects.iter().enumerate() {
            if !is_identifier(object) {
                problems.push(problem(
                    &format!("objects[{i}]"),
                    "must be an entity name (letters, digits and _), such as \"Contact\"",
                ));
            }
        }
        if !is_identifier(&self.push_key_field) {
            problems.push(problem(
                "push_key_field",
                "must be a column name (letters, digits and _)",
            ));
        }
        for (entity, columns) in &self.columns {
            if let Some(bad) = columns.iter().find(|c| !is_identifier(c)) {
                problems.push(Problem {
                    key: format!("columns.{entity}"),
                    message: format!("{bad:?} is not a column name (letters, digits and _)"),
                });
            }
        }
        if self.page_size == 0 || self.page_size > MAX_PAGE_SIZE {
            problems.push(problem("page_size", "must be between 1 and 20000"));
        }
        if self.sweep_interval.is_zero() {
            problems.push(problem("sweep_interval", "must be longer than 0s"));
        }
        let path = self.odata_path.trim_matches('/');
        if path.is_empty() || !path.split('/').all(is_identifier_or_digits) {
            problems.push(problem(
                "odata_path",
                "must be a URL path such as \"0/odata\" or \"odata\"",
            ));
        }
        problems
    }

    fn build(&self, ctx: BuildContext<'_>) -> anyhow::Result<Arc<dyn Provider>> {
        let base = ctx.connection.base_url.as_str().trim_end_matches('/').to_string();
        let auth = match (&self.username, &self.password, &self.oauth) {
            (_, _, Some(oauth)) => CreatioAuth::OAuth(Credential::OAuth(Arc::new(OAuthSession::new(
                &ctx.connection.id,
                oauth.clone(),
                ctx.vault.clone(),
            )))),
            (Some(user), Some(password), None) => {
                CreatioAuth::Forms(FormsSession::new(&base, user.clone(), password.clone()))
            }
            _ => anyhow::bail!(
                "connection {}: no username and password and no oauth",
                ctx.connection.id
            ),
        };
        let client = ctx.client(Arc::new(CreatioPolicy))?;
        Ok(Arc::new(super::Creatio::new(&base, self.clone(), client, auth)))
    }
}

fn is_identifier_or_digits(segment: &str) -> bool {
    is_identifier(segment) || (!segment.is_empty() && segment.chars().all(|c| c.is_ascii_digit()))
}

impl CreatioConfig {
    /// The `$select` for `entity`: the configured columns plus `Id` and `ModifiedOn`, or None for every column.
    pub fn select_for(&self, entity: &str) -> Option<String> {
        let columns = self.columns.get(entity)?;
        let mut all: Vec<&str> = vec!["Id", "ModifiedOn"];
        all.extend(
            columns
                .iter()
                .map(String::as_str)
                .filter(|c| *c != "Id" && *c != "ModifiedOn"),
        );
        Some(all.join(","))
    }
}

fn default_push_key_field() -> String {
    "UsrCrmsyncdKey".to_string()
}

fn default_sweep_interval() -> Duration {
    Duration::from_secs(600)
}

fn default_page_size() -> u32 {
    500
}

fn default_odata_path() -> String {
    "0/odata".to_string()
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::{Config, Problem, ProviderConfig};

    const KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";

    fn connection(extra: &str) -> String {
        format!(
            "[database]\ncredentials_key = \"{KEY}\"\n\n[[connection]]\nid = \"c\"\nprovider = \"creatio\"\nbase_url = \"https://x.creatio.com\"\nobjects = [\"Contact\"]\n{extra}\n"
        )
    }

    fn problems(extra: &str) -> Vec<Problem> {
        Config::parse(&connection(extra), Path::new("t.toml"), &|_| None)
            .expect_err("should be rejected")
            .problems
    }

    fn keys(extra: &str) -> Vec<String> {
        problems(extra).into_iter().map(|p| p.key).collect()
    }

    #[test]
    fn forms_and_oauth_configs_parse_with_creatio_defaults() {
        let config = Config::parse(
            &connection("username = \"Supervisor\"\npassword = \"p\""),
            Path::new("t.toml"),
            &|_| None,
        )
        .unwrap();
        let c = &config.connections[0];
        let ProviderConfig::Creatio(creatio) = &c.provider else {
            panic!("not creatio")
        };
        assert_eq!(creatio.push_key_field, "UsrCrmsyncdKey");
        assert_eq!(creatio.odata_path, "0/odata");
        assert_eq!(c.rate_limit.primary().requests, 5);
        assert_eq!(c.overlap, std::time::Duration::from_secs(300));
        assert!(!c.provider.settings().uses_oauth());

        let oauth = Config::parse(
            &connection("oauth = { token_url = \"https://x-is.creatio.com/connect/token\", client_id = \"c\", client_secret = \"s\" }"),
            Path::new("t.toml"),
            &|_| None,
        )
        .unwrap();
        assert!(oauth.connections[0].provider.settings().uses_oauth());
    }

    #[test]
    fn a_connection_needs_exactly_one_way_to_authenticate() {
        assert_eq!(keys(""), ["connection[0].username"]);
        assert_eq!(keys("username = \"u\""), ["connection[0].password"]);
        assert_eq!(keys("password = \"p\""), ["connection[0].username"]);
        assert_eq!(
            keys(
                "username = \"u\"\npassword = \"p\"\noauth = { token_url = \"https://i/connect/token\", client_id = \"c\", client_secret = \"s\" }"
            ),
            ["connection[0].oauth"]
        );
        assert_eq!(
            keys(
                "oauth = { token_url = \"https://i/connect/token\", client_id = \"c\", client_secret = \"s\", refresh_token = \"r\" }"
            ),
            ["connection[0].oauth.refresh_token"]
        );
    }

    #[test]
    fn names_that_would_reach_a_url_must_be_identifiers() {
        let found = keys(
            "username = \"u\"\npassword = \"p\"\npush_key_field = \"Key eq 'x'\"\ncolumns = { Contact = [\"Name\", \"a b\"] }\npage_size = 0\nodata_path = \"../x\"",
        );
        for key in ["push_key_field", "columns.Contact", "page_size", "odata_path"] {
            assert!(found.contains(&format!("connection[0].{key}")), "{key} in {found:?}");
        }
        let bad_object = Config::parse(
            &connection("username = \"u\"\npassword = \"p\"").replace("[\"Contact\"]", "[\"Contact(1)\"]"),
            Path::new("t.toml"),
            &|_| None,
        )
        .unwrap_err();
        assert_eq!(bad_object.problems[0].key, "connection[0].objects[0]");
    }

    #[test]
    fn select_always_reads_id_and_modified_on() {
        let config = Config::parse(
            &connection("username = \"u\"\npassword = \"p\"\ncolumns = { Contact = [\"Name\", \"Id\"] }"),
            Path::new("t.toml"),
            &|_| None,
        )
        .unwrap();
        let ProviderConfig::Creatio(creatio) = &config.connections[0].provider else {
            panic!("not creatio")
        };
        assert_eq!(creatio.select_for("Contact").as_deref(), Some("Id,ModifiedOn,Name"));
        assert_eq!(creatio.select_for("Account"), None);
    }
}
