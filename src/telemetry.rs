//! Logging setup: structured fields, `RUST_LOG` to filter, JSON with `CRMSYNCD_LOG_FORMAT=json`.

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber (once; later calls do nothing).
pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,sea_orm=warn"));
    let json = std::env::var("CRMSYNCD_LOG_FORMAT").is_ok_and(|v| v == "json");
    // The test writer goes through libtest's capture, so test logs appear only for failing tests.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_test_writer();
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
