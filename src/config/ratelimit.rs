//! Request budgets: `rate_limit` (one window or several), `max_concurrent_requests`, and the `[[rate_limit_group]]`
//! tables that let several connections draw from one CRM account's quota.

use std::fmt;
use std::time::Duration;

use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};

use super::duration;

/// One window: never more than `requests` in any window of length `per`
/// (`rate_limit = { requests = 100, per = "10s" }`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    pub requests: u32,
    #[serde(with = "duration")]
    pub per: Duration,
}

/// A connection's (or a group's) whole budget: every window holds at once, and at most `max_concurrent` requests
/// are in flight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimits {
    /// At least one window. Klaviyo, for instance, has a burst window per second and a steady one per minute.
    pub windows: Vec<RateLimitConfig>,
    /// Most requests in flight at once (Zoho's concurrency limit); None: no limit beyond the windows.
    pub max_concurrent: Option<u32>,
}

impl RateLimits {
    /// A budget of one window and no concurrency limit.
    pub fn one(requests: u32, per: Duration) -> Self {
        Self {
            windows: vec![RateLimitConfig { requests, per }],
            max_concurrent: None,
        }
    }

    /// The first window (the one most CRMs document).
    pub fn primary(&self) -> RateLimitConfig {
        self.windows[0]
    }

    /// Problems with the values, keyed under `key` (`connection[0]` or `rate_limit_group[1]`).
    pub(crate) fn problems(&self, key: &str) -> Vec<super::Problem> {
        let mut problems = Vec::new();
        let many = self.windows.len() > 1;
        for (i, w) in self.windows.iter().enumerate() {
            let at = if many {
                format!("{key}.rate_limit[{i}]")
            } else {
                format!("{key}.rate_limit")
            };
            if w.requests == 0 {
                problems.push(super::Problem {
                    key: format!("{at}.requests"),
                    message: "must be greater than 0".into(),
                });
            }
            if w.per.is_zero() {
                problems.push(super::Problem {
                    key: format!("{at}.per"),
                    message: "must be longer than 0s".into(),
                });
            }
        }
        if self.max_concurrent == Some(0) {
            problems.push(super::Problem {
                key: format!("{key}.max_concurrent_requests"),
                message: "must be greater than 0".into(),
            });
        }
        problems
    }
}

/// `rate_limit` as written: one table, or an array of tables for several windows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Windows(pub Vec<RateLimitConfig>);

impl<'de> Deserialize<'de> for Windows {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct OneOrMany;

        impl<'de> Visitor<'de> for OneOrMany {
            type Value = Windows;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(
                    "a table like { requests = 100, per = \"10s\" }, or an array of such tables for several windows",
                )
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Windows, A::Error> {
                let one = RateLimitConfig::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(Windows(vec![one]))
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Windows, A::Error> {
                let mut windows = Vec::new();
                while let Some(w) = seq.next_element::<RateLimitConfig>()? {
                    windows.push(w);
                }
                if windows.is_empty() {
                    return Err(de::Error::custom("must name at least one window"));
                }
                Ok(Windows(windows))
            }
        }

        deserializer.deserialize_any(OneOrMany)
    }
}

/// `[[rate_limit_group]]`: one CRM account's quota, shared by every connection that names it in
/// `rate_limit_group` (two HubSpot connections on one portal, one Zoho org's credits).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitGroup {
    /// The name connections refer to.
    pub id: String,
    pub limits: RateLimits,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawGroup {
    pub id: String,
    pub rate_limit: Windows,
    pub max_concurrent_requests: Option<u32>,
}

impl From<RawGroup> for RateLimitGroup {
    fn from(raw: RawGroup) -> Self {
        RateLimitGroup {
            id: raw.id,
            limits: RateLimits {
                windows: raw.rate_limit.0,
                max_concurrent: raw.max_concurrent_requests,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct Holder {
        rate_limit: Windows,
    }

    #[test]
    fn one_window_or_several_parse() {
        let one: Holder = toml::from_str("rate_limit = { requests = 5, per = \"1s\" }").unwrap();
        assert_eq!(
            one.rate_limit.0,
            vec![RateLimitConfig {
                requests: 5,
                per: Duration::from_secs(1)
            }]
        );
        let two: Holder =
            toml::from_str("rate_limit = [{ requests = 75, per = \"1s\" }, { requests = 700, per = \"1m\" }]").unwrap();
        assert_eq!(two.rate_limit.0.len(), 2);
        assert_eq!(two.rate_limit.0[1].per, Duration::from_secs(60));
        assert!(toml::from_str::<Holder>("rate_limit = []").is_err());
        assert!(toml::from_str::<Holder>("rate_limit = 3").is_err());
    }
}
