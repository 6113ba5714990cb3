//! Odoo's own connection keys.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::config::{RateLimits, Secret, duration};
use crate::providers::client::PlainPolicy;
use crate::providers::{BuildContext, Provider, ProviderSettings};

/// `provider = "odoo"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OdooConfig {
    /// The Odoo database name.
    pub database: String,
    /// The API user's login.
    pub username: String,
    /// The API user's key.
    pub api_key: Secret,
    /// Models to sync: "res.partner", "crm.lead", ...
    pub models: Vec<String>,
    /// The token Odoo's "Send Webhook Notification" action must carry in `?token=`. Webhooks are refused while unset.
    pub webhook_token: Option<Secret>,
    /// The field that holds a write's idempotency key, searched before create so a retry cannot create twice.
    #[serde(default = "default_push_key_field")]
    pub push_key_field: String,
    /// How often to compare id sets to find hard deletes (Odoo's `unlink` leaves no trace).
    #[serde(default = "default_sweep_interval", with = "duration")]
    pub sweep_interval: Duration,
    /// Rows per search_read page.
    #[serde(default = "default_page_size")]
    pub page_size: u32,
    /// Fields to read per model (`fields = { "res.partner" = ["name", "email"] }`); a model not named here reads
    /// every field.
    #[serde(default)]
    pub fields: HashMap<String, Vec<String>>,
}

impl ProviderSettings for OdooConfig {
    fn objects_key(&self) -> &'static str {
        "models"
    }

    fn objects(&self) -> &[String] {
        &self.models
    }

    /// Odoo documents none; stay polite to a shared server.
    fn default_rate_limit(&self) -> RateLimits {
        RateLimits::one(10, Duration::from_secs(1))
    }

    /// write_date is the transaction's start: covers transactions up to this long.
    fn default_overlap(&self) -> Duration {
        Duration::from_secs(300)
    }

    fn build(&self, ctx: BuildContext<'_>) -> anyhow::Result<Arc<dyn Provider>> {
        let client = ctx.client(Arc::new(PlainPolicy))?;
        Ok(Arc::new(super::Odoo::new(ctx.connection, self.clone(), client)))
    }
}

fn default_push_key_field() -> String {
    "x_crmsyncd_key".to_string()
}

fn default_sweep_interval() -> Duration {
    Duration::from_secs(600)
}

fn default_page_size() -> u32 {
    500
}
