//! Every metric name the daemon exports. Dashboards and alert rules use only these; a test checks that.

pub const CRM_REQUESTS_TOTAL: &str = "crmsyncd_crm_requests_total";
pub const CRM_REQUEST_DURATION_SECONDS: &str = "crmsyncd_crm_request_duration_seconds";
pub const RECORDS_SYNCED_TOTAL: &str = "crmsyncd_records_synced_total";
pub const SYNC_LAG_SECONDS: &str = "crmsyncd_sync_lag_seconds";
pub const RATE_LIMIT_WAIT_SECONDS_TOTAL: &str = "crmsyncd_rate_limit_wait_seconds_total";
pub const CRM_THROTTLED_TOTAL: &str = "crmsyncd_crm_throttled_total";
pub const RETRIES_TOTAL: &str = "crmsyncd_retries_total";
pub const ACTOR_RESTARTS_TOTAL: &str = "crmsyncd_actor_restarts_total";
pub const CONNECTION_STATE: &str = "crmsyncd_connection_state";
pub const CONNECTION_INFO: &str = "crmsyncd_connection_info";
pub const CONNECTION_ACTORS: &str = "crmsyncd_connection_actors";
pub const WEBHOOKS_TOTAL: &str = "crmsyncd_webhooks_total";
pub const OUTBOX_PENDING: &str = "crmsyncd_outbox_pending";
pub const OUTBOX_DEAD: &str = "crmsyncd_outbox_dead";
pub const OAUTH_REFRESHES_TOTAL: &str = "crmsyncd_oauth_refreshes_total";
pub const BUILD_INFO: &str = "crmsyncd_build_info";

/// Every family above, for the test that checks dashboards and alerts against what is exported.
pub const ALL: &[&str] = &[
    CRM_REQUESTS_TOTAL,
    CRM_REQUEST_DURATION_SECONDS,
    RECORDS_SYNCED_TOTAL,
    SYNC_LAG_SECONDS,
    RATE_LIMIT_WAIT_SECONDS_TOTAL,
    CRM_THROTTLED_TOTAL,
    RETRIES_TOTAL,
    ACTOR_RESTARTS_TOTAL,
    CONNECTION_STATE,
    CONNECTION_INFO,
    CONNECTION_ACTORS,
    WEBHOOKS_TOTAL,
    OUTBOX_PENDING,
    OUTBOX_DEAD,
    OAUTH_REFRESHES_TOTAL,
    BUILD_INFO,
];
