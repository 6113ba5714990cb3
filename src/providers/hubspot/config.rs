//! HubSpot's own connection keys.

use std::collections::HashMap;
use std::time::Duration;

use serde::Deserialize;

use crate::config::{Secret, duration};

/// `provider = "hubspot"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HubSpotConfig {
    /// Private-app access token (sent as `Authorization: Bearer`).
    pub access_token: Secret,
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
    /// Records per search page (HubSpot's maximum is 200).
    #[serde(default = "default_page_size")]
    pub page_size: u32,
    /// Properties to read per object (`properties = { contacts = ["email", "firstname"] }`); objects not named
    /// here use a default list for the standard objects and HubSpot's own defaults for the rest.
    #[serde(default)]
    pub properties: HashMap<String, Vec<String>>,
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

fn default_page_size() -> u32 {
    200
}
