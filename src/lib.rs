//! crmsyncd: keeps a local database in step with the CRMs a business uses.
//!
//! A supervisor runs one actor per CRM connection; each pulls changes with a durable cursor, applies webhook
//! events, and pushes the application's writes, all through its own rate gate. See `ARCHITECTURE.md`.

pub mod actors;
pub mod app;
pub mod auth;
pub mod backoff;
pub mod config;
pub mod connections;
pub mod demo;
pub mod http;
pub mod metrics;
pub mod model;
pub mod providers;
pub mod ratelimit;
pub mod registry;
pub mod store;
pub mod sync;
pub mod systemd;
pub mod telemetry;
#[doc(hidden)]
pub mod testing;

pub use app::{AppHandle, Application};
pub use config::Config;
