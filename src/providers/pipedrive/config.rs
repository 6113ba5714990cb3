//! Pipedrive's own connection keys.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::config::{Problem, RateLimitConfig, RateLimits, Secret, duration};
use crate::providers::{BuildContext, Provider, ProviderSettings};

/// The entities this provider syncs, by their API v2 path segment.
pub const OBJECTS: [&str; 3] = ["persons", "organizations", "deals"];

/// Pipedrive's largest page.
pub const MAX_PAGE_SIZE: u32 = 500;

/// `provider = "pipedrive"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipedriveConfig {
    /// The API token of the user to sync as (Personal preferences > API), sent as `x-api-token`. The user needs
    /// to see every record to sync: use an admin user.
    pub api_token: Secret,
    /// Entities to sync: any of "persons", "organizations", "deals".
    pub objects: Vec<String>,
    /// The HTTP Basic user name set on the Pipedrive webhook (`http_auth_user`). Webhooks are refused while this
    /// and `webhook_password` are unset.
    pub webhook_user: Option<String>,
    /// The HTTP Basic password set on the Pipedrive webhook (`http_auth_password`).
    pub webhook_password: Option<Secret>,
    /// The key (40 hex characters, from Company settings > Data fields) of a text custom field on each pushed
    /// entity that holds the write's idempotency key. Writes are dead-lettered while it is unset.
    pub push_key_field: Option<String>,
    /// Records per list page (Pipedrive's maximum is 500).
    #[serde(default = "default_page_size")]
    pub page_size: u32,
    /// How often to compare id sets to find deletes that no webhook reported (Pipedrive's lists leave deleted
    /// records out and keep no delete log). Each comparison lists every id: one request per 500 records.
    #[serde(default = "default_sweep_interval", with = "duration")]
    pub sweep_interval: Duration,
    /// The search endpoints' own budget, on top of `rate_limit` (Pipedrive: 10 requests per 2 s on every plan).
    /// Pushes search for their idempotency key.
    #[serde(default = "default_search_rate_limit")]
    pub search_rate_limit: RateLimitConfig,
}

impl ProviderSettings for PipedriveConfig {
    fn objects_key(&self) -> &'static str {
        "objects"
    }

    fn objects(&self) -> &[String] {
        &self.objects
    }

    /// The Professional plan's limit for an API token: 80 requests per 2 s. Smaller plans (20 or 40) are kept
    /// by the `x-ratelimit-remaining` header, which pauses the gate when the window is spent; set `rate_limit`
    /// to the plan's number to avoid even that.
    fn default_rate_limit(&self) -> RateLimits {
        RateLimits::one(80, Duration::from_secs(2))
    }

    /// Covers writes that become visible a little after the second they are stamped with, with a wide margin.
    fn default_overlap(&self) -> Duration {
        Duration::from_secs(60)
    }

    fn problems(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        let mut problem = |key: &str, message: String| {
            problems.push(Problem {
                key: key.to_string(),
                message,
            })
        };
        for object in &self.objects {
            if !OBJECTS.contains(&object.as_str()) {
                problem(
                    "objects",
                    format!("{object:?} is not a Pipedrive entity this daemon syncs; expected one of {OBJECTS:?}"),
                );
            }
        }
        match (&self.webhook_user, &self.webhook_password) {
            (Some(user), Some(_)) if user.is_empty() => problem("webhook_user", "must not be empty".into()),
            // HTTP Basic joins user and password with the first ':', so such a user could never be matched.
            (Some(user), _) if user.contains(':') => problem(
                "webhook_user",
                "must not contain ':' (HTTP Basic separates the user from the password with it)".into(),
            ),
            (Some(_), None) => problem(
                "webhook_password",
                "is required with webhook_user (both are set on the Pipedrive webhook)".into(),
            ),
            (None, Some(_)) => problem(
                "webhook_user",
                "is required with webhook_password (both are set on the Pipedrive webhook)".into(),
            ),
            _ => {}
        }
        if self.push_key_field.as_ref().is_some_and(|k| k.trim().is_empty()) {
            problem("push_key_field", "must not be empty".into());
        }
        if self.page_size == 0 || self.page_size > MAX_PAGE_SIZE {
            problem("page_size", format!("must be from 1 to {MAX_PAGE_SIZE}"));
        }
        if self.sweep_interval.is_zero() {
            problem("sweep_interval", "must be longer than 0s".into());
        }
        if self.search_rate_limit.requests == 0 || self.search_rate_limit.per.is_zero() {
            problem("search_rate_limit", "needs requests and per greater than 0".into());
        }
        problems
    }

    fn build(&self, ctx: BuildContext<'_>) -> anyhow::Result<Arc<dyn Provider>> {
        let client = ctx.client(Arc::new(super::quota::QuotaHeaders::default()))?;
        Ok(Arc::new(super::Pipedrive::new(ctx.connection, self.clone(), client)))
    }
}

fn default_page_size() -> u32 {
    MAX_PAGE_SIZE
}

fn default_sweep_interval() -> Duration {
    Duration::from_secs(30 * 60)
}

fn default_search_rate_limit() -> RateLimitConfig {
    RateLimitConfig {
        requests: 10,
        per: Duration::from_secs(2),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::{Config, ConfigError, ProviderConfig};

    fn parse(keys: &str) -> Result<Config, ConfigError> {
        let text = format!(
            "[[connection]]\nid = \"pd\"\nprovider = \"pipedrive\"\nbase_url = \"https://acme.pipedrive.com\"\n\
             api_token = \"${{PIPEDRIVE_TOKEN}}\"\n{keys}\n"
        );
        Config::parse(&text, Path::new("t.toml"), &|var| {
            (var == "PIPEDRIVE_TOKEN").then(|| "pd-secret".to_string())
        })
    }

    fn problem_keys(keys: &str) -> Vec<String> {
        let error = parse(keys).expect_err("the config should be rejected");
        error.problems.into_iter().map(|p| p.key).collect()
    }

    #[test]
    fn defaults_are_the_professional_plan_and_a_minute_of_overlap() {
        let config = parse("objects = [\"persons\", \"deals\"]").unwrap();
        let connection = &config.connections[0];
        let window = connection.rate_limit.primary();
        assert_eq!((window.requests, window.per.as_secs()), (80, 2));
        assert_eq!(connection.overlap.as_secs(), 60);
        let ProviderConfig::Pipedrive(pipedrive) = &connection.provider else {
            panic!("a Pipedrive connection");
        };
        assert_eq!(pipedrive.api_token.expose(), "pd-secret");
        assert_eq!(pipedrive.page_size, 500);
        assert_eq!(pipedrive.sweep_interval.as_secs(), 1800);
        assert_eq!(
            (
                pipedrive.search_rate_limit.requests,
                pipedrive.search_rate_limit.per.as_secs()
            ),
            (10, 2)
        );
    }

    #[test]
    fn every_problem_with_the_pipedrive_keys_is_reported_at_once() {
        let keys = problem_keys(
            "objects = [\"persons\", \"leads\"]\nwebhook_user = \"hook\"\npage_size = 501\npush_key_field = \" \"\n\
             sweep_interval = \"0s\"\nsearch_rate_limit = { requests = 0, per = \"2s\" }",
        );
        for key in [
            "connection[0].objects",
            "connection[0].webhook_password",
            "connection[0].page_size",
            "connection[0].push_key_field",
            "connection[0].sweep_interval",
            "connection[0].search_rate_limit",
        ] {
            assert!(keys.iter().any(|k| k == key), "{key} missing from {keys:?}");
        }
        assert!(
            problem_keys("objects = [\"persons\"]\nwebhook_password = \"p\"")
                .contains(&"connection[0].webhook_user".to_string())
        );
        assert!(
            problem_keys("objects = [\"persons\"]\ncolour = \"red\"")
                .iter()
                .any(|k| k.contains("colour")),
            "unknown keys are refused"
        );
    }

    #[test]
    fn a_webhook_user_with_a_colon_is_refused_at_load() {
        let error = parse("objects = [\"persons\"]\nwebhook_user = \"hook:er\"\nwebhook_password = \"p\"")
            .expect_err("a user with ':' can never match HTTP Basic credentials");
        let problem = error
            .problems
            .iter()
            .find(|p| p.key == "connection[0].webhook_user")
            .expect("the problem names webhook_user");
        assert!(problem.message.contains("':'"), "{}", problem.message);
    }
}
