//! The daemon's configuration: TOML with `${VAR}` interpolation, validated as a whole. Loading reports every
//! problem at once, each with the key and the file, so an operator fixes a config in one pass.

mod connection;
pub mod duration;
mod interpolate;
mod ratelimit;
mod secret;

use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use url::Url;

pub use connection::{BackoffConfig, ConnectionConfig, ProviderConfig, ProviderKind};
pub use interpolate::Unset;
pub use ratelimit::{RateLimitConfig, RateLimitGroup, RateLimits};
pub use secret::{Secret, redact};

/// Where `crmsyncd run` looks for its config unless told otherwise.
pub const DEFAULT_CONFIG_PATH: &str = "config/crmsyncd.toml";
/// The environment variable that overrides [`DEFAULT_CONFIG_PATH`].
pub const CONFIG_PATH_ENV: &str = "CRMSYNCD_CONFIG";

/// The whole configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub http: HttpConfig,
    pub database: DatabaseConfig,
    pub supervisor: SupervisorConfig,
    /// Budgets shared by several connections on one CRM account.
    pub rate_limit_groups: Vec<RateLimitGroup>,
    pub connections: Vec<ConnectionConfig>,
}

/// `[http]`: the endpoint CRMs and applications call.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Address to listen on for webhooks, the API, metrics and health.
    pub listen: SocketAddr,
    /// A separate address for `/metrics` (and `/healthz`, `/readyz`), e.g. a private interface, so the address the
    /// CRMs reach does not expose metrics. Unset: everything on `listen`.
    pub metrics_listen: Option<SocketAddr>,
    /// The public URL the CRMs call (behind any proxy). HubSpot signs it, so v2/v3 verification needs it.
    pub public_url: Option<Url>,
    /// Largest webhook or API body accepted; larger ones get 413.
    pub max_body_bytes: usize,
    /// Bearer token for `/v1/*`. The API is disabled when unset.
    pub api_token: Option<Secret>,
    /// How long a client may take to send its request head.
    #[serde(with = "duration")]
    pub header_read_timeout: Duration,
    /// How long a client may take to send a whole request body (a body that never ends gets 408).
    #[serde(with = "duration")]
    pub body_read_timeout: Duration,
    /// Most connections served at once; more wait to be accepted.
    pub max_connections: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            metrics_listen: None,
            public_url: None,
            max_body_bytes: 1024 * 1024,
            api_token: None,
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            max_connections: 1024,
        }
    }
}

/// `[database]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// `sqlite://path?mode=rwc` (the embedded default) or `postgres://user@host/db`.
    pub url: String,
    /// The key that seals OAuth tokens stored in the database: 32 random bytes, base64 or hex. Required as soon
    /// as a connection uses OAuth; keep it in the environment (`"${CRMSYNCD_CREDENTIALS_KEY}"`).
    pub credentials_key: Option<Secret>,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: "sqlite://data/crmsyncd.db?mode=rwc".to_string(),
            credentials_key: None,
        }
    }
}

impl DatabaseConfig {
    /// The parsed credential key, if one is set and valid.
    pub fn credential_key(&self) -> Option<crate::auth::CredentialKey> {
        self.credentials_key
            .as_ref()
            .and_then(|k| crate::auth::CredentialKey::parse(k.expose()).ok())
    }
}

/// `[supervisor]`: how failed connection actors are restarted.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SupervisorConfig {
    /// Restarts allowed before a connection is marked `failed` and left down.
    pub max_restarts: u32,
    /// After this long without failing, a connection's restart count and backoff reset.
    #[serde(with = "duration")]
    pub healthy_after: Duration,
    /// First restart delay (doubles each time, with jitter).
    #[serde(with = "duration")]
    pub min_backoff: Duration,
    /// Cap on the restart delay.
    #[serde(with = "duration")]
    pub max_backoff: Duration,
    /// On SIGTERM, how long to wait for requests in flight and pull pages to finish before exiting.
    #[serde(with = "duration")]
    pub shutdown_grace: Duration,
}

impl Default for SupervisorConfig {
    fn default() -> Self {
        Self {
            max_restarts: 10,
            healthy_after: Duration::from_secs(300),
            min_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(300),
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

/// One problem in a config: the key it is about and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    pub message: String,
}

/// Every problem found in one config file.
#[derive(Debug, Clone)]
pub struct ConfigError {
    pub file: PathBuf,
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        writeln!(
            f,
            "{}: {n} problem{}",
            self.file.display(),
            if n == 1 { "" } else { "s" }
        )?;
        for p in &self.problems {
            writeln!(f, "  {}: {}", p.key, p.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Reads and validates the file at `path`, interpolating from the process environment.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_path_buf(),
            problems: vec![Problem {
                key: "(file)".into(),
                message: format!("cannot read: {e}"),
            }],
        })?;
        Self::parse(&text, path, &|var| std::env::var(var).ok())
    }

    /// Parses and validates `text`; `file` is only used in the error.
    pub fn parse(text: &str, file: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let fail = |problems| ConfigError {
            file: file.to_path_buf(),
            problems,
        };
        let mut root: toml::Value = toml::from_str(text).map_err(|e| {
            fail(vec![Problem {
                key: "(syntax)".into(),
                message: e.to_string().trim().replace('\n', " "),
            }])
        })?;
        let mut problems = Vec::new();
        let unset = match interpolate::interpolate(&mut root, env) {
            Ok(unset) => unset,
            Err(errors) => {
                problems.extend(errors.into_iter().map(|(key, message)| Problem { key, message }));
                Vec::new()
            }
        };
        let toml::Value::Table(mut table) = root else {
            unreachable!("a TOML document is a table")
        };

        let http: HttpConfig = section(&mut table, "http", &unset, &mut problems).unwrap_or_default();
        let database: DatabaseConfig = section(&mut table, "database", &unset, &mut problems).unwrap_or_default();
        let supervisor: SupervisorConfig = section(&mut table, "supervisor", &unset, &mut problems).unwrap_or_default();
        let mut rate_limit_groups = Vec::new();
        match table.remove("rate_limit_group") {
            None => {}
            Some(toml::Value::Array(items)) => {
                for (i, item) in items.into_iter().enumerate() {
                    let key = format!("rate_limit_group[{i}]");
                    match decode::<ratelimit::RawGroup>(item, &key, &unset) {
                        Ok(raw) => {
                            let group = RateLimitGroup::from(raw);
                            problems.extend(group.limits.problems(&key));
                            rate_limit_groups.push(group);
                        }
                        Err(mut p) => problems.append(&mut p),
                    }
                }
            }
            Some(_) => problems.push(Problem {
                key: "rate_limit_group".into(),
                message: "must be an array of tables: write each as [[rate_limit_group]]".into(),
            }),
        }
        let mut connections = Vec::new();
        match table.remove("connection") {
            None => {}
            Some(toml::Value::Array(items)) => {
                for (i, item) in items.into_iter().enumerate() {
                    match ConnectionConfig::from_toml(item, &format!("connection[{i}]"), &unset) {
                        Ok(c) => connections.push(c),
                        Err(mut p) => problems.append(&mut p),
                    }
                }
            }
            Some(_) => problems.push(Problem {
                key: "connection".into(),
                message: "must be an array of tables: write each as [[connection]]".into(),
            }),
        }
        for key in table.keys() {
            problems.push(Problem {
                key: key.clone(),
                message:
                    "unknown key; expected one of `http`, `database`, `supervisor`, `rate_limit_group`, `connection`"
                        .into(),
            });
        }

        let config = Config {
            http,
            database,
            supervisor,
            rate_limit_groups,
            connections,
        };
        problems.extend(config.validate());
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(fail(problems))
        }
    }

    /// Checks that span keys: things no single struct can see.
    fn validate(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        if !(self.database.url.starts_with("sqlite:") || self.database.url.starts_with("postgres")) {
            problems.push(Problem {
                key: "database.url".into(),
                message: "must start with sqlite:// or postgres://".into(),
            });
        }
        if let Some(key) = &self.database.credentials_key
            && let Err(e) = crate::auth::CredentialKey::parse(key.expose())
        {
            problems.push(Problem {
                key: "database.credentials_key".into(),
                message: e.to_string(),
            });
        }
        if self.database.credentials_key.is_none()
            && let Some(c) = self.connections.iter().find(|c| c.provider.settings().uses_oauth())
        {
            problems.push(Problem {
                key: "database.credentials_key".into(),
                message: format!(
                    "required: connection {:?} uses OAuth, and its rotated tokens are stored sealed with this key; set it to \"${{CRMSYNCD_CREDENTIALS_KEY}}\" and put 32 random bytes in that variable (`openssl rand -base64 32`)",
                    c.id
                ),
            });
        }
        if self.http.max_body_bytes == 0 {
            problems.push(Problem {
                key: "http.max_body_bytes".into(),
                message: "must be greater than 0".into(),
            });
        }
        if self.http.max_connections == 0 {
            problems.push(Problem {
                key: "http.max_connections".into(),
                message: "must be greater than 0".into(),
            });
        }
        if self.supervisor.min_backoff > self.supervisor.max_backoff {
            problems.push(Problem {
                key: "supervisor.min_backoff".into(),
                message: "must not be greater than supervisor.max_backoff".into(),
            });
        }
        let mut groups = HashSet::new();
        for (i, g) in self.rate_limit_groups.iter().enumerate() {
            if !groups.insert(g.id.as_str()) {
                problems.push(Problem {
                    key: format!("rate_limit_group[{i}].id"),
                    message: format!("duplicate rate limit group {:?}", g.id),
                });
            }
        }
        let mut seen = HashSet::new();
        for (i, c) in self.connections.iter().enumerate() {
            if let Some(group) = &c.rate_limit_group
                && !groups.contains(group.as_str())
            {
                problems.push(Problem {
                    key: format!("connection[{i}].rate_limit_group"),
                    message: format!("no [[rate_limit_group]] has id {group:?}"),
                });
            }
            if !seen.insert(c.id.as_str()) {
                problems.push(Problem {
                    key: format!("connection[{i}].id"),
                    message: format!("duplicate connection id {:?}", c.id),
                });
            }
            if c.provider.needs_public_url() && self.http.public_url.is_none() {
                problems.push(Problem {
                    key: "http.public_url".into(),
                    message: format!(
                        "required: connection {:?} verifies signatures over the URL the CRM calls",
                        c.id
                    ),
                });
            }
        }
        problems
    }

    /// The connection with `id`.
    pub fn connection(&self, id: &str) -> Option<&ConnectionConfig> {
        self.connections.iter().find(|c| c.id == id)
    }
}

/// Deserialises `table[name]` (absent = default), recording problems with full key paths.
fn section<T: DeserializeOwned + Default>(
    table: &mut toml::Table,
    name: &str,
    unset: &[Unset],
    problems: &mut Vec<Problem>,
) -> Option<T> {
    let value = table.remove(name)?;
    decode(value, name, unset).map_err(|mut p| problems.append(&mut p)).ok()
}

/// Deserialises `value`, turning serde's error into a [`Problem`] with the full key, and explaining a missing
/// field whose `${VAR}` was not set.
pub(crate) fn decode<T: DeserializeOwned>(
    value: toml::Value,
    prefix: &str,
    unset: &[Unset],
) -> Result<T, Vec<Problem>> {
    serde_path_to_error::deserialize(value).map_err(|err| {
        let path = err.path().to_string();
        let mut key = if path == "." || path.is_empty() {
            prefix.to_string()
        } else {
            format!("{prefix}.{path}")
        };
        let full = err.into_inner().to_string();
        // toml appends "\nin `key`"; the key is already in front of the message.
        let mut message = full.lines().next().unwrap_or("").trim().to_string();
        if let Some(field) = quoted_after(&message, "unknown field `") {
            if !key.ends_with(&format!(".{field}")) {
                key = format!("{key}.{field}");
            }
            message = format!(
                "unknown key; {}",
                message.split_once(", ").map(|(_, rest)| rest).unwrap_or("remove it")
            );
        } else if let Some(field) = quoted_after(&message, "missing field `") {
            key = format!("{key}.{field}");
            message = match unset.iter().find(|u| u.key == key) {
                Some(u) => format!("environment variable {} is not set", u.var),
                None => "is required".to_string(),
            };
        }
        vec![Problem { key, message }]
    })
}

/// The name in "<prefix>name`..." (serde's unknown/missing field messages).
fn quoted_after<'a>(message: &'a str, prefix: &str) -> Option<&'a str> {
    message.strip_prefix(prefix)?.split('`').next()
}

#[cfg(test)]
mod tests;
