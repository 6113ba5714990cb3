//! `[[connection]]`: one CRM account the daemon keeps in step. Keys every provider shares live here; the
//! provider's own keys live in its config struct (`providers/<crm>/config.rs`).

use std::fmt;
use std::time::Duration;

use serde::Deserialize;
use url::Url;

use super::ratelimit::Windows;
use super::{Problem, RateLimits, Unset, decode, duration};
use crate::providers::ProviderSettings;
use crate::providers::creatio::CreatioConfig;
use crate::providers::hubspot::HubSpotConfig;
use crate::providers::klaviyo::KlaviyoConfig;
use crate::providers::odoo::OdooConfig;
use crate::providers::pipedrive::PipedriveConfig;
use crate::providers::salesforce::SalesforceConfig;
use crate::providers::zoho::ZohoConfig;

/// One configured connection.
#[derive(Debug, Clone)]
pub struct ConnectionConfig {
    /// Unique id; the webhook URL is `/webhooks/{id}` and every metric carries it.
    pub id: String,
    /// The CRM's API base URL (configurable for proxies and simulators).
    pub base_url: Url,
    /// How often to poll for changes when no webhook says otherwise.
    pub poll_interval: Duration,
    /// The connection's own request budget: never more than `requests` in any window of `per`, for every window.
    /// Unused when the connection draws from a [`rate_limit_group`](Self::rate_limit_group).
    pub rate_limit: RateLimits,
    /// The `[[rate_limit_group]]` whose budget this connection shares with others on the same CRM account.
    pub rate_limit_group: Option<String>,
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
    /// Changes whenever anything in the connection's table changes; a reload restarts exactly the connections
    /// whose fingerprint (or group budget) changed.
    pub fingerprint: String,
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

/// Declares every CRM once: the config enum, the kind enum and the dispatch between them. Adding a CRM adds one
/// line here; everything else about it lives in its own module (`providers/<crm>/`), behind [`ProviderSettings`].
macro_rules! provider_table {
    ($( $variant:ident($config:ty) = $name:literal, )+) => {
        /// The CRM behind a connection, with its own keys.
        #[derive(Debug, Clone)]
        pub enum ProviderConfig {
            $( $variant($config), )+
        }

        /// The CRM kind, for metrics labels and logs.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ProviderKind {
            $( $variant, )+
        }

        impl ProviderKind {
            /// Every CRM the daemon speaks.
            pub const ALL: &'static [ProviderKind] = &[$( ProviderKind::$variant, )+];

            /// The `provider = "..."` name.
            pub fn as_str(self) -> &'static str {
                match self {
                    $( ProviderKind::$variant => $name, )+
                }
            }
        }

        impl ProviderConfig {
            pub fn kind(&self) -> ProviderKind {
                match self {
                    $( ProviderConfig::$variant(_) => ProviderKind::$variant, )+
                }
            }

            /// The provider's own settings, behind the trait every provider implements.
            pub fn settings(&self) -> &dyn ProviderSettings {
                match self {
                    $( ProviderConfig::$variant(c) => c, )+
                }
            }

            /// Decodes the provider's own keys of a `[[connection]]` table; None for an unknown name.
            fn decode(name: &str, table: toml::Value, key: &str, unset: &[Unset]) -> Option<Result<Self, Vec<Problem>>> {
                match name {
                    $( $name => Some(decode::<$config>(table, key, unset).map(ProviderConfig::$variant)), )+
                    _ => None,
                }
            }
        }
    };
}

provider_table! {
    HubSpot(HubSpotConfig) = "hubspot",
    Odoo(OdooConfig) = "odoo",
    Klaviyo(KlaviyoConfig) = "klaviyo",
    Creatio(CreatioConfig) = "creatio",
    Salesforce(SalesforceConfig) = "salesforce",
    Pipedrive(PipedriveConfig) = "pipedrive",
    Zoho(ZohoConfig) = "zoho",
}

impl fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `"hubspot", "odoo", ...` for error messages.
fn provider_names() -> String {
    ProviderKind::ALL
        .iter()
        .map(|k| format!("\"{}\"", k.as_str()))
        .collect::<Vec<_>>()
        .join(", ")
}

impl ProviderConfig {
    /// Whether the provider needs `http.public_url` (HubSpot v2/v3 sign it; Zoho subscribes with it).
    pub fn needs_public_url(&self) -> bool {
        self.settings().needs_public_url()
    }

    /// The objects (HubSpot), models (Odoo) or modules (Zoho) this connection syncs.
    pub fn objects(&self) -> &[String] {
        self.settings().objects()
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
    rate_limit: Option<Windows>,
    max_concurrent_requests: Option<u32>,
    rate_limit_group: Option<String>,
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
    "max_concurrent_requests",
    "rate_limit_group",
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
        let fingerprint = fingerprint(&table);
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
                let decoded = ProviderConfig::decode(&name, rest, key, unset).unwrap_or_else(|| {
                    Err(vec![Problem {
                        key: format!("{key}.provider"),
                        message: format!("unknown provider {name:?}; expected one of {}", provider_names()),
                    }])
                });
                decoded.map_err(|mut p| problems.append(&mut p)).ok()
            }
            Some(_) | None => {
                problems.push(Problem {
                    key: format!("{key}.provider"),
                    message: format!("is required (one of {})", provider_names()),
                });
                None
            }
        };
        if let Some(provider) = &provider {
            problems.extend(provider.settings().problems().into_iter().map(|p| {
                let full = format!("{key}.{}", p.key);
                // A key the provider misses because its `${VAR}` was unset: say so rather than "is required".
                let message = match unset.iter().find(|u| u.key == full) {
                    Some(u) => format!("environment variable {} is not set", u.var),
                    None => p.message,
                };
                Problem { key: full, message }
            }));
        }
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
        let settings = provider.settings();
        if common.rate_limit_group.is_some() {
            // The group is the account's budget; a second, per-connection one would only be confusing.
            for (given, name) in [
                (common.rate_limit.is_some(), "rate_limit"),
                (common.max_concurrent_requests.is_some(), "max_concurrent_requests"),
            ] {
                if given {
                    problems.push(Problem {
                        key: format!("{key}.{name}"),
                        message: "set it on the [[rate_limit_group]] this connection names, not here".into(),
                    });
                }
            }
        }
        // Each part of the CRM's documented budget holds unless overridden: setting the windows keeps its
        // concurrency cap (Zoho's), and the other way round.
        let defaults = settings.default_rate_limit();
        let rate_limit = RateLimits {
            windows: common.rate_limit.map_or(defaults.windows, |Windows(w)| w),
            max_concurrent: common.max_concurrent_requests.or(defaults.max_concurrent),
        };
        problems.extend(rate_limit.problems(key));
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
        if settings.objects().is_empty() {
            problems.push(Problem {
                key: format!("{key}.{}", settings.objects_key()),
                message: "must name at least one".into(),
            });
        }

        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(ConnectionConfig {
            overlap: common.overlap.unwrap_or_else(|| settings.default_overlap()),
            id: common.id,
            base_url: common.base_url,
            poll_interval: common.poll_interval,
            rate_limit,
            rate_limit_group: common.rate_limit_group,
            request_timeout: common.request_timeout,
            connect_timeout: common.connect_timeout,
            retry_backoff: common.retry_backoff,
            provider,
            fingerprint,
        })
    }
}

/// A digest of a connection's table after interpolation: equal exactly when nothing in it (secrets included)
/// changed. Holds no secret itself.
fn fingerprint(table: &toml::Table) -> String {
    use sha2::{Digest, Sha256};
    // toml's Table is ordered by key, so the text is canonical.
    let text = toml::to_string(table).unwrap_or_default();
    hex::encode(&Sha256::digest(text.as_bytes())[..16])
}
