//! `[[connection]]`: one CRM account the daemon keeps in step. Keys every provider shares live here; the
//! provider's own keys live in its config struct (`providers/<crm>/config.rs`).

use std::fmt;
use std::time::Duration;

use serde::Deserialize;
use url::Url;

use super::{Problem, Unset, decode, duration};
use crate::providers::hubspot::HubSpotConfig;
use crate::providers::odoo::OdooConfig;

/// One configured connection.
#[derive(Debug, Clone)]
pub struct ConnectionConfig {
    /// Unique id; the webhook URL is `/webhooks/{id}` and every metric carries it.
    pub id: String,
    /// The CRM's API base URL (configurable for proxies and simulators).
    pub base_url: Url,
    /// How often to poll for changes when no webhook says otherwise.
    pub poll_interval: Duration,
    /// The connection's request budget: never more than `requests` in any window of `per`.
    pub rate_limit: RateLimitConfig,
    /// How far behind the cursor each pull re-reads, for rows a CRM commits late.
    pub overlap: Duration,
    /// Timeout for one whole request to the CRM.
    pub request_timeout: Duration,
    /// Timeout for establishing a connection to the CRM.
    pub connect_timeout: Duration,
    /// Delay after a failed cycle or write: starts at `min`, doubles with jitter, never exceeds `max`. Retries
    /// never give up while the daemon runs.
    pub retry_backoff: BackoffConfig,
    /// The provider and its own settings.
    pub provider: ProviderConfig,
}

/// `rate_limit = { requests = 100, per = "10s" }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    pub requests: u32,
    #[serde(with = "duration")]
    pub per: Duration,
}

/// `retry_backoff = { min = "1s", max = "5m" }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackoffConfig {
    #[serde(with = "duration")]
    pub min: Duration,
    #[serde(with = "duration")]
    pub max: Duration,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        Self {
            min: Duration::from_secs(1),
            max: Duration::from_secs(300),
        }
    }
}

/// The CRM behind a connection, with its own keys.
#[derive(Debug, Clone)]
pub enum ProviderConfig {
    Hubspot(HubSpotConfig),
    Odoo(OdooConfig),
}

/// The CRM kind, for metrics labels and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProviderKind {
    HubSpot,
    Odoo,
}

impl ProviderKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::HubSpot => "hubspot",
            ProviderKind::Odoo => "odoo",
        }
    }
}

impl fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl ProviderConfig {
    pub fn kind(&self) -> ProviderKind {
        match self {
            ProviderConfig::Hubspot(_) => ProviderKind::HubSpot,
            ProviderConfig::Odoo(_) => ProviderKind::Odoo,
        }
    }

    /// Whether webhook verification signs the public URL (HubSpot v2/v3).
    pub fn needs_public_url(&self) -> bool {
        match self {
            ProviderConfig::Hubspot(h) => h.webhook_secret.is_some() && h.signature_version.signs_uri(),
            ProviderConfig::Odoo(_) => false,
        }
    }

    /// The objects (HubSpot) or models (Odoo) this connection syncs.
    pub fn objects(&self) -> &[String] {
        match self {
            ProviderConfig::Hubspot(h) => &h.objects,
            ProviderConfig::Odoo(o) => &o.models,
        }
    }

    fn default_rate_limit(&self) -> RateLimitConfig {
        match self {
            // HubSpot's private-app limit on Free/Starter portals.
            ProviderConfig::Hubspot(_) => RateLimitConfig {
                requests: 100,
                per: Duration::from_secs(10),
            },
            // Odoo documents none; stay polite to a shared server.
            ProviderConfig::Odoo(_) => RateLimitConfig {
                requests: 10,
                per: Duration::from_secs(1),
            },
        }
    }

    fn default_overlap(&self) -> Duration {
        match self {
            // Covers HubSpot's search-index lag (seconds) with a wide margin.
            ProviderConfig::Hubspot(_) => Duration::from_secs(60),
            // write_date is the transaction's start: covers transactions up to this long.
            ProviderConfig::Odoo(_) => Duration::from_secs(300),
        }
    }
}

/// The keys every provider shares; the rest of the table goes to the provider's struct.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Common {
    id: String,
    base_url: Url,
    #[serde(default = "default_poll_interval", with = "duration")]
    poll_interval: Duration,
    rate_limit: Option<RateLimitConfig>,
    #[serde(default, deserialize_with = "optional_duration")]
    overlap: Option<Duration>,
    #[serde(default = "default_request_timeout", with = "duration")]
    request_timeout: Duration,
    #[serde(default = "default_connect_timeout", with = "duration")]
    connect_timeout: Duration,
    #[serde(default)]
    retry_backoff: BackoffConfig,
}

/// The fields of [`Common`], which are split off the table before the provider's struct sees the rest.
const COMMON_KEYS: &[&str] = &[
    "id",
    "base_url",
    "poll_interval",
    "rate_limit",
    "overlap",
    "request_timeout",
    "connect_timeout",
    "retry_backoff",
];

fn default_poll_interval() -> Duration {
    Duration::from_secs(30)
}

fn default_request_timeout() -> Duration {
    Duration::from_secs(30)
}

fn default_connect_timeout() -> Duration {
    Duration::from_secs(10)
}

fn optional_duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    duration::deserialize(d).map(Some)
}

impl ConnectionConfig {
    /// Parses one `[[connection]]` table; `key` is its position (`connection[2]`) for error messages.
    pub(super) fn from_toml(value: toml::Value, key: &str, unset: &[Unset]) -> Result<Self, Vec<Problem>> {
        let toml::Value::Table(table) = value else {
            return Err(vec![Problem {
                key: key.to_string(),
                message: "must be a table".into(),
            }]);
        };
        let (common, specific): (toml::Table, toml::Table) =
            table.into_iter().partition(|(k, _)| COMMON_KEYS.contains(&k.as_str()));
        let mut problems = Vec::new();
        let common: Option<Common> = decode(toml::Value::Table(common), key, unset)
            .map_err(|mut p| problems.append(&mut p))
            .ok();
        let mut specific = specific;
        // Dispatch on `provider` by hand rather than with serde's internally tagged enum: that buffers the table
        // and loses the key path of any error inside it.
        let provider = match specific.remove("provider") {
            Some(toml::Value::String(name)) => {
                let rest = toml::Value::Table(specific);
                let decoded = match name.as_str() {
                    "hubspot" => decode(rest, key, unset).map(ProviderConfig::Hubspot),
                    "odoo" => decode(rest, key, unset).map(ProviderConfig::Odoo),
                    other => Err(vec![Problem {
                        key: format!("{key}.provider"),
                        message: format!("unknown provider {other:?}; expected \"hubspot\" or \"odoo\""),
                    }]),
                };
                decoded.map_err(|mut p| problems.append(&mut p)).ok()
            }
            Some(_) | None => {
                problems.push(Problem {
                    key: format!("{key}.provider"),
                    message: "is required (\"hubspot\" or \"odoo\")".into(),
                });
                None
            }
        };
        let (Some(common), Some(provider)) = (common, provider) else {
            return Err(problems);
        };

        let id_ok = !common.id.is_empty()
            && common
                .id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
        if !id_ok {
            problems.push(Problem {
                key: format!("{key}.id"),
                message: "must be non-empty and use only letters, digits, '-', '_' and '.' (it is a URL path segment)"
                    .into(),
            });
        }
        let rate_limit = common.rate_limit.unwrap_or_else(|| provider.default_rate_limit());
        if rate_limit.requests == 0 {
            problems.push(Problem {
                key: format!("{key}.rate_limit.requests"),
                message: "must be greater than 0".into(),
            });
        }
        if rate_limit.per.is_zero() {
            problems.push(Problem {
                key: format!("{key}.rate_limit.per"),
                message: "must be longer than 0s".into(),
            });
        }
        if common.retry_backoff.min.is_zero() || common.retry_backoff.min > common.retry_backoff.max {
            problems.push(Problem {
                key: format!("{key}.retry_backoff"),
                message: "min must be longer than 0s and not longer than max".into(),
            });
        }
        if common.poll_interval.is_zero() {
            problems.push(Problem {
                key: format!("{key}.poll_interval"),
                message: "must be longer than 0s".into(),
            });
        }
        if provider.objects().is_empty() {
            let name = match provider {
                ProviderConfig::Hubspot(_) => "objects",
                ProviderConfig::Odoo(_) => "models",
            };
            problems.push(Problem {
                key: format!("{key}.{name}"),
                message: "must name at least one".into(),
            });
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(ConnectionConfig {
            overlap: common.overlap.unwrap_or_else(|| provider.default_overlap()),
            id: common.id,
            base_url: common.base_url,
            poll_interval: common.poll_interval,
            rate_limit,
            request_timeout: common.request_timeout,
            connect_timeout: common.connect_timeout,
            retry_backoff: common.retry_backoff,
            provider,
        })
    }
}
