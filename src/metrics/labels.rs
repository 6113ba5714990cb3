//! The closed sets of label values. Every label a connection's series carries besides `connection` (and the
//! object names of its own configuration) comes from one of these enums, so the number of series per connection
//! has a bound the code guarantees: see [`super::connection::max_series`].

use http::StatusCode;

/// A connection's lifecycle state, exported as `crmsyncd_connection_state{state}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConnectionState {
    Starting,
    Syncing,
    Idle,
    BackingOff,
    AuthFailed,
    Failed,
}

impl ConnectionState {
    pub const ALL: [ConnectionState; 6] = [
        ConnectionState::Starting,
        ConnectionState::Syncing,
        ConnectionState::Idle,
        ConnectionState::BackingOff,
        ConnectionState::AuthFailed,
        ConnectionState::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ConnectionState::Starting => "starting",
            ConnectionState::Syncing => "syncing",
            ConnectionState::Idle => "idle",
            ConnectionState::BackingOff => "backing_off",
            ConnectionState::AuthFailed => "auth_failed",
            ConnectionState::Failed => "failed",
        }
    }

    pub(super) fn index(self) -> usize {
        self as usize
    }
}

/// What became of one webhook request, exported as `crmsyncd_webhooks_total{outcome}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookOutcome {
    Accepted,
    Duplicate,
    Unauthorized,
    Malformed,
    TooLarge,
    Unavailable,
    /// Counted under `connection="unknown"`, never under a real connection.
    UnknownConnection,
}

impl WebhookOutcome {
    pub const ALL: [WebhookOutcome; 7] = [
        WebhookOutcome::Accepted,
        WebhookOutcome::Duplicate,
        WebhookOutcome::Unauthorized,
        WebhookOutcome::Malformed,
        WebhookOutcome::TooLarge,
        WebhookOutcome::Unavailable,
        WebhookOutcome::UnknownConnection,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            WebhookOutcome::Accepted => "accepted",
            WebhookOutcome::Duplicate => "duplicate",
            WebhookOutcome::Unauthorized => "unauthorized",
            WebhookOutcome::Malformed => "malformed",
            WebhookOutcome::TooLarge => "too_large",
            WebhookOutcome::Unavailable => "unavailable",
            WebhookOutcome::UnknownConnection => "unknown_connection",
        }
    }

    pub(super) fn index(self) -> usize {
        self as usize
    }
}

/// Direction of a synced record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Pull,
    Push,
}

impl Direction {
    pub const ALL: [Direction; 2] = [Direction::Pull, Direction::Push];

    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Pull => "pull",
            Direction::Push => "push",
        }
    }

    pub(super) fn index(self) -> usize {
        self as usize
    }
}

/// The class of a CRM request's outcome, exported as `crmsyncd_crm_requests_total{outcome}`: the HTTP status
/// folded into the classes an operator acts on (the exact status is in the log line of a failure).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestOutcome {
    /// 2xx.
    Ok,
    /// 429.
    Throttled,
    /// 401 or 403.
    Unauthorized,
    /// Any other 4xx (and 1xx/3xx, which no CRM client follows up).
    ClientError,
    /// 5xx.
    ServerError,
    /// No answer within the request timeout.
    Timeout,
    /// No answer: connection refused or reset, DNS, TLS.
    Error,
}

impl RequestOutcome {
    pub const ALL: [RequestOutcome; 7] = [
        RequestOutcome::Ok,
        RequestOutcome::Throttled,
        RequestOutcome::Unauthorized,
        RequestOutcome::ClientError,
        RequestOutcome::ServerError,
        RequestOutcome::Timeout,
        RequestOutcome::Error,
    ];

    /// The class of an HTTP answer's status.
    pub fn of_status(status: StatusCode) -> Self {
        match status.as_u16() {
            200..=299 => RequestOutcome::Ok,
            429 => RequestOutcome::Throttled,
            401 | 403 => RequestOutcome::Unauthorized,
            500..=599 => RequestOutcome::ServerError,
            _ => RequestOutcome::ClientError,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RequestOutcome::Ok => "ok",
            RequestOutcome::Throttled => "throttled",
            RequestOutcome::Unauthorized => "unauthorized",
            RequestOutcome::ClientError => "client_error",
            RequestOutcome::ServerError => "server_error",
            RequestOutcome::Timeout => "timeout",
            RequestOutcome::Error => "error",
        }
    }

    pub(super) fn index(self) -> usize {
        self as usize
    }
}

/// Why a connection retries, exported as `crmsyncd_retries_total{reason}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryReason {
    /// The CRM said to slow down (429 or its own quota answer).
    RateLimited,
    /// The CRM failed (5xx, timeout, unreadable answer).
    Transient,
    /// The daemon's own database was unavailable.
    Database,
}

impl RetryReason {
    pub const ALL: [RetryReason; 3] = [RetryReason::RateLimited, RetryReason::Transient, RetryReason::Database];

    pub fn as_str(self) -> &'static str {
        match self {
            RetryReason::RateLimited => "rate_limited",
            RetryReason::Transient => "transient",
            RetryReason::Database => "database",
        }
    }

    pub(super) fn index(self) -> usize {
        self as usize
    }
}

/// What became of one OAuth token refresh, exported as `crmsyncd_oauth_refreshes_total{outcome}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OAuthOutcome {
    Ok,
    /// The CRM refused the grant (invalid_grant, invalid_client): a human must re-authorise.
    Rejected,
    /// The token endpoint could not be reached or failed; retried.
    Error,
}

impl OAuthOutcome {
    pub const ALL: [OAuthOutcome; 3] = [OAuthOutcome::Ok, OAuthOutcome::Rejected, OAuthOutcome::Error];

    pub fn as_str(self) -> &'static str {
        match self {
            OAuthOutcome::Ok => "ok",
            OAuthOutcome::Rejected => "rejected",
            OAuthOutcome::Error => "error",
        }
    }

    pub(super) fn index(self) -> usize {
        self as usize
    }
}
