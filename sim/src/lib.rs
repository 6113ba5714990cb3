//! In-memory simulators of the CRM APIs that crmsyncd talks to.
//!
//! Each simulator is a real HTTP server on a local port that speaks the CRM's wire format (see
//! `shared/CRM-APIS.md`), including its pitfalls: rate limits answered exactly as the CRM does, injected faults,
//! equal timestamps, index lag and late commits. Tests, benchmarks and `crmsyncd demo` all use them.

pub mod creatio;
pub mod faults;
pub mod hubspot;
pub mod klaviyo;
pub mod oauth;
pub mod odoo;
pub mod pipedrive;
pub mod request_log;
pub mod salesforce;
pub mod server;
pub mod window;
pub mod zoho;

pub use faults::{Fault, Faults};
pub use request_log::{RequestLog, RequestRecord};
pub use server::{Handler, Running, SimRequest, SimResponse};
pub use window::SlidingWindow;
