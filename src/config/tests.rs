use std::path::Path;

use super::*;

const EXAMPLE: &str = r#"
[http]
listen = "127.0.0.1:8080"
public_url = "https://crm-hooks.example.com"
max_body_bytes = 1048576
api_token = "${CRMSYNCD_API_TOKEN}"

[database]
url = "sqlite://data/crmsyncd.db?mode=rwc"

[[connection]]
id = "hubspot-main"
provider = "hubspot"
base_url = "https://api.hubapi.com"
access_token = "${HUBSPOT_TOKEN}"
webhook_secret = "${HUBSPOT_CLIENT_SECRET}"
objects = ["contacts", "companies", "deals"]
poll_interval = "30s"
rate_limit = { requests = 100, per = "10s" }

[[connection]]
id = "odoo-main"
provider = "odoo"
base_url = "https://example.odoo.com"
database = "prod"
username = "api@example.com"
api_key = "${ODOO_API_KEY}"
models = ["res.partner", "crm.lead"]
webhook_token = "${ODOO_WEBHOOK_TOKEN}"
poll_interval = "60s"
rate_limit = { requests = 10, per = "1s" }
"#;

fn full_env(var: &str) -> Option<String> {
    match var {
        "CRMSYNCD_API_TOKEN" => Some("api-secret-value".into()),
        "HUBSPOT_TOKEN" => Some("hs-secret-value".into()),
        "HUBSPOT_CLIENT_SECRET" => Some("hs-client-secret".into()),
        "ODOO_API_KEY" => Some("odoo-secret-value".into()),
        "ODOO_WEBHOOK_TOKEN" => Some("odoo-hook-token".into()),
        _ => None,
    }
}

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new("test.toml"), &full_env)
}

fn problems(text: &str) -> Vec<Problem> {
    parse(text).expect_err("config should be rejected").problems
}

#[test]
fn issue_example_config_parses() {
    let config = parse(EXAMPLE).unwrap();
    assert_eq!(config.connections.len(), 2);
    let hs = &config.connections[0];
    assert_eq!(hs.id, "hubspot-main");
    assert_eq!(hs.rate_limit, RateLimits::one(100, Duration::from_secs(10)));
    assert_eq!(hs.provider.objects(), ["contacts", "companies", "deals"]);
    let ProviderConfig::Odoo(odoo) = &config.connections[1].provider else {
        panic!("second connection is odoo")
    };
    assert_eq!(odoo.api_key.expose(), "odoo-secret-value");
    assert_eq!(odoo.push_key_field, "x_crmsyncd_key");
    assert_eq!(config.http.api_token.as_ref().unwrap().expose(), "api-secret-value");
}

#[test]
fn empty_config_is_the_embedded_default() {
    let config = parse("").unwrap();
    assert!(config.connections.is_empty());
    assert!(config.database.url.starts_with("sqlite://"));
    assert!(config.http.api_token.is_none());
}

#[test]
fn unset_optional_secret_disables_the_feature() {
    let config = Config::parse(
        "[http]\napi_token = \"${NOT_SET_ANYWHERE}\"",
        Path::new("t.toml"),
        &|_| None,
    )
    .unwrap();
    assert!(config.http.api_token.is_none());
}

#[test]
fn every_problem_is_reported_at_once_with_its_key() {
    let text = r#"
[http]
listen = "not an address"
bogus = 1

[[connection]]
id = "a"
provider = "hubspot"
base_url = "https://api.hubapi.com"
access_token = "${MISSING_TOKEN}"
objects = ["contacts"]
rate_limit = { requests = 0, per = "10s" }

[[connection]]
id = "b"
provider = "odoo"
base_url = "https://example.odoo.com"
database = "prod"
username = "u"
api_key = "k"
models = ["res.partner"]
poll_interval = "10 parsecs"

[[connection]]
id = "c"
provider = "salesfarce"
base_url = "https://x"
"#;
    let found = problems(text);
    let keys: Vec<&str> = found.iter().map(|p| p.key.as_str()).collect();
    assert!(
        keys.contains(&"http.listen") || keys.contains(&"http.bogus"),
        "{found:?}"
    );
    assert!(keys.contains(&"connection[0].access_token"), "{found:?}");
    assert!(keys.contains(&"connection[1].poll_interval"), "{found:?}");
    assert!(keys.iter().any(|k| k.starts_with("connection[2]")), "{found:?}");
    let token = found.iter().find(|p| p.key == "connection[0].access_token").unwrap();
    assert_eq!(token.message, "environment variable MISSING_TOKEN is not set");
}

#[test]
fn invalid_configs_name_the_key() {
    let hs = |extra: &str| {
        format!(
            "[[connection]]\nid = \"h\"\nprovider = \"hubspot\"\nbase_url = \"https://api.hubapi.com\"\naccess_token = \"t\"\nobjects = [\"contacts\"]\n{extra}"
        )
    };
    let cases: Vec<(String, &str)> = vec![
        ("[http]\nlisten = \"nope\"".into(), "http.listen"),
        ("[http]\nmax_body_bytes = 0".into(), "http.max_body_bytes"),
        ("[http]\nextra = true".into(), "http.extra"),
        ("[database]\nurl = \"mysql://x\"".into(), "database.url"),
        (
            "[supervisor]\nmin_backoff = \"10m\"\nmax_backoff = \"1s\"".into(),
            "supervisor.min_backoff",
        ),
        ("whatever = 1".into(), "whatever"),
        ("connection = 3".into(), "connection"),
        (
            hs("rate_limit = { requests = 0, per = \"1s\" }"),
            "connection[0].rate_limit.requests",
        ),
        (
            hs("rate_limit = { requests = 5, per = \"0s\" }"),
            "connection[0].rate_limit.per",
        ),
        (hs("rate_limit = { requests = 5 }"), "connection[0].rate_limit.per"),
        (hs("poll_interval = \"soon\""), "connection[0].poll_interval"),
        (
            hs("retry_backoff = { min = \"10s\", max = \"1s\" }"),
            "connection[0].retry_backoff",
        ),
        (hs("unknown_key = 1"), "connection[0].unknown_key"),
        (hs("signature_version = \"v9\""), "connection[0].signature_version"),
        (hs("webhook_secret = \"s\""), "http.public_url"),
        (
            hs("").replace("objects = [\"contacts\"]", "objects = []"),
            "connection[0].objects",
        ),
        (hs("").replace("id = \"h\"", "id = \"has space\""), "connection[0].id"),
        (
            hs("").replace("access_token = \"t\"\n", ""),
            "connection[0].access_token",
        ),
        (hs("").replace("provider = \"hubspot\"\n", ""), "connection[0].provider"),
        (format!("{}\n{}", hs(""), hs("")), "connection[1].id"),
        (hs("rate_limit = []"), "connection[0].rate_limit"),
        (
            hs("rate_limit = [{ requests = 5, per = \"1s\" }, { requests = 0, per = \"1m\" }]"),
            "connection[0].rate_limit[1].requests",
        ),
        (hs("max_concurrent_requests = 0"), "connection[0].max_concurrent_requests"),
        (hs("rate_limit_group = \"nowhere\""), "connection[0].rate_limit_group"),
        (
            format!(
                "[[rate_limit_group]]\nid = \"g\"\nrate_limit = {{ requests = 5, per = \"1s\" }}\n{}",
                hs("rate_limit_group = \"g\"\nrate_limit = { requests = 1, per = \"1s\" }")
            ),
            "connection[0].rate_limit",
        ),
        (
            "[[rate_limit_group]]\nid = \"g\"\nrate_limit = { requests = 0, per = \"1s\" }".into(),
            "rate_limit_group[0].rate_limit.requests",
        ),
        (
            "[[rate_limit_group]]\nid = \"g\"\nrate_limit = { requests = 1, per = \"1s\" }\n[[rate_limit_group]]\nid = \"g\"\nrate_limit = { requests = 1, per = \"1s\" }".into(),
            "rate_limit_group[1].id",
        ),
        ("[[rate_limit_group]]\nid = \"g\"".into(), "rate_limit_group[0].rate_limit"),
        ("rate_limit_group = 1".into(), "rate_limit_group"),
        (
            hs("").replace("access_token = \"t\"\n", "") + "oauth = { token_url = \"https://x/t\", client_id = \"c\", client_secret = \"s\", refresh_token = \"r\" }\n",
            "database.credentials_key",
        ),
        (
            hs("oauth = { token_url = \"https://x/t\", client_id = \"c\", client_secret = \"s\" }"),
            "connection[0].oauth",
        ),
        ("[database]\ncredentials_key = \"too-short\"".into(), "database.credentials_key"),
    ];
    for (text, key) in cases {
        let found = problems(&text);
        assert!(
            found.iter().any(|p| p.key == key),
            "expected a problem at {key} for:\n{text}\ngot {found:?}"
        );
    }
}

#[test]
fn errors_never_contain_secret_values() {
    // A secret of the wrong type and a wrong neighbour key: the message must not echo the secrets.
    let text = EXAMPLE.replace("poll_interval = \"30s\"", "poll_interval = 30");
    let err = parse(&text).unwrap_err().to_string();
    for (_, secret) in [
        ("", "api-secret-value"),
        ("", "hs-secret-value"),
        ("", "hs-client-secret"),
        ("", "odoo-secret-value"),
    ] {
        assert!(!err.contains(secret), "{err}");
    }
    assert!(err.contains("test.toml"), "error names the file: {err}");
    assert!(err.contains("connection[0].poll_interval"), "{err}");
}

#[test]
fn config_debug_output_hides_secrets() {
    let config = parse(EXAMPLE).unwrap();
    let debug = format!("{config:?}");
    assert!(
        !debug.contains("hs-secret-value") && !debug.contains("odoo-secret-value"),
        "{debug}"
    );
}

#[test]
fn connections_in_a_rate_limit_group_share_its_budget() {
    let text = r#"
[[rate_limit_group]]
id = "portal-1"
rate_limit = [{ requests = 100, per = "10s" }, { requests = 250000, per = "24h" }]
max_concurrent_requests = 4

[[connection]]
id = "a"
provider = "hubspot"
base_url = "https://api.hubapi.com"
access_token = "t"
objects = ["contacts"]
rate_limit_group = "portal-1"

[[connection]]
id = "b"
provider = "hubspot"
base_url = "https://api.hubapi.com"
access_token = "t"
objects = ["companies"]
rate_limit_group = "portal-1"
"#;
    let config = parse(text).unwrap();
    assert_eq!(config.rate_limit_groups.len(), 1);
    let group = &config.rate_limit_groups[0];
    assert_eq!(group.limits.windows.len(), 2);
    assert_eq!(group.limits.max_concurrent, Some(4));
    assert!(
        config
            .connections
            .iter()
            .all(|c| c.rate_limit_group.as_deref() == Some("portal-1"))
    );
}

#[test]
fn an_oauth_connection_with_a_credentials_key_parses() {
    let key = "A".repeat(43) + "=";
    let text = format!(
        r#"
[database]
credentials_key = "{key}"

[[connection]]
id = "hs-public"
provider = "hubspot"
base_url = "https://api.hubapi.com"
objects = ["contacts"]
oauth = {{ token_url = "https://api.hubapi.com/oauth/v1/token", client_id = "c", client_secret = "s", refresh_token = "r" }}
"#
    );
    let config = parse(&text).unwrap();
    assert!(config.database.credential_key().is_some());
    assert!(config.connections[0].provider.settings().uses_oauth());
    assert!(!format!("{config:?}").contains(&key), "the key never prints");
}
