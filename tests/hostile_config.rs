//! Every kind of invalid config, one row each: loading the file fails with an error that names the file and the
//! exact key, and never echoes a secret value.

use std::path::Path;

use crmsyncd::Config;

/// Secret values every row carries, which no error may print.
const SECRETS: [&str; 5] = [
    "row-secret-access-token",
    "row-secret-webhook",
    "row-secret-api-token",
    "row-secret-password",
    "row-secret-client-secret",
];

fn hubspot(extra: &str) -> String {
    format!(
        "[[connection]]\nid = \"h\"\nprovider = \"hubspot\"\nbase_url = \"https://api.hubapi.com\"\naccess_token = \"row-secret-access-token\"\nwebhook_secret = \"row-secret-webhook\"\nobjects = [\"contacts\"]\n{extra}\n"
    )
}

fn odoo(extra: &str) -> String {
    format!(
        "[[connection]]\nid = \"o\"\nprovider = \"odoo\"\nbase_url = \"https://x.odoo.com\"\ndatabase = \"d\"\nusername = \"u\"\napi_key = \"row-secret-password\"\nmodels = [\"res.partner\"]\n{extra}\n"
    )
}

fn klaviyo(extra: &str) -> String {
    format!(
        "[[connection]]\nid = \"k\"\nprovider = \"klaviyo\"\nbase_url = \"https://a.klaviyo.com\"\napi_key = \"row-secret-access-token\"\nwebhook_secret = \"row-secret-webhook\"\n{extra}\n"
    )
}

fn pipedrive(extra: &str) -> String {
    format!(
        "[[connection]]\nid = \"p\"\nprovider = \"pipedrive\"\nbase_url = \"https://x.pipedrive.com\"\napi_token = \"row-secret-access-token\"\nobjects = [\"persons\"]\n{extra}\n"
    )
}

fn creatio(extra: &str) -> String {
    format!(
        "[[connection]]\nid = \"c\"\nprovider = \"creatio\"\nbase_url = \"https://x.creatio.com\"\nusername = \"u\"\npassword = \"row-secret-password\"\nobjects = [\"Contact\"]\n{extra}\n"
    )
}

const KEY: &str = "[database]\ncredentials_key = \"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\"\n";

fn oauth() -> &'static str {
    "oauth = { token_url = \"https://login.example.com/token\", client_id = \"c\", client_secret = \"row-secret-client-secret\", refresh_token = \"r\" }"
}

fn zoho(extra: &str) -> String {
    format!(
        "{KEY}[[connection]]\nid = \"z\"\nprovider = \"zoho\"\nbase_url = \"https://www.zohoapis.com\"\nmodules = [\"Leads\"]\n{}\n{extra}\n",
        oauth()
    )
}

fn salesforce(extra: &str) -> String {
    format!(
        "{KEY}[[connection]]\nid = \"s\"\nprovider = \"salesforce\"\nbase_url = \"https://x.my.salesforce.com\"\nobjects = [\"Contact\"]\n{}\n{extra}\n",
        oauth()
    )
}

fn rows() -> Vec<(&'static str, String, &'static str)> {
    let http = "[http]\napi_token = \"row-secret-api-token\"\n";
    vec![
        (
            "listen is not an address",
            format!("{http}listen = \"nope\""),
            "http.listen",
        ),
        (
            "zero body limit",
            format!("{http}max_body_bytes = 0"),
            "http.max_body_bytes",
        ),
        (
            "zero connection cap",
            format!("{http}max_connections = 0"),
            "http.max_connections",
        ),
        ("unknown [http] key", format!("{http}colour = \"red\""), "http.colour"),
        (
            "header timeout not a duration",
            format!("{http}header_read_timeout = \"soon\""),
            "http.header_read_timeout",
        ),
        (
            "public_url not a URL",
            format!("{http}public_url = \"::\""),
            "http.public_url",
        ),
        (
            "unsupported database",
            "[database]\nurl = \"mysql://x\"".into(),
            "database.url",
        ),
        (
            "credentials key too short",
            "[database]\ncredentials_key = \"row-secret-password\"".into(),
            "database.credentials_key",
        ),
        (
            "backoff min above max",
            "[supervisor]\nmin_backoff = \"10m\"\nmax_backoff = \"1s\"".into(),
            "supervisor.min_backoff",
        ),
        ("unknown top-level key", "whatever = 1".into(), "whatever"),
        (
            "secret from an unset variable",
            hubspot("").replace("\"row-secret-access-token\"", "\"${ROW_UNSET_VAR}\""),
            "connection[0].access_token",
        ),
        (
            "unknown provider",
            hubspot("").replace("\"hubspot\"", "\"salesfarce\""),
            "connection[0].provider",
        ),
        (
            "missing provider",
            hubspot("").replace("provider = \"hubspot\"\n", ""),
            "connection[0].provider",
        ),
        (
            "id with a space",
            hubspot("").replace("id = \"h\"", "id = \"h h\""),
            "connection[0].id",
        ),
        (
            "duplicate id",
            format!("{}{}", hubspot(""), hubspot("")),
            "connection[1].id",
        ),
        (
            "base_url not a URL",
            hubspot("").replace("https://api.hubapi.com", "not a url"),
            "connection[0].base_url",
        ),
        (
            "zero rate",
            hubspot("rate_limit = { requests = 0, per = \"1s\" }"),
            "connection[0].rate_limit.requests",
        ),
        (
            "zero period",
            hubspot("rate_limit = { requests = 5, per = \"0s\" }"),
            "connection[0].rate_limit.per",
        ),
        (
            "poll interval not a duration",
            hubspot("poll_interval = \"soon\""),
            "connection[0].poll_interval",
        ),
        (
            "retry backoff min above max",
            hubspot("retry_backoff = { min = \"10s\", max = \"1s\" }"),
            "connection[0].retry_backoff",
        ),
        (
            "unknown connection key",
            hubspot("colour = \"red\""),
            "connection[0].colour",
        ),
        (
            "hubspot: unknown signature version",
            hubspot("signature_version = \"v9\""),
            "connection[0].signature_version",
        ),
        (
            "hubspot: webhook secret without public_url",
            hubspot(""),
            "http.public_url",
        ),
        (
            "hubspot: no objects",
            hubspot("").replace("objects = [\"contacts\"]", "objects = []"),
            "connection[0].objects",
        ),
        (
            "rate limit group that does not exist",
            hubspot("rate_limit_group = \"nowhere\""),
            "connection[0].rate_limit_group",
        ),
        (
            "odoo: no models",
            odoo("").replace("models = [\"res.partner\"]", "models = []"),
            "connection[0].models",
        ),
        (
            "odoo: missing api_key",
            odoo("").replace("api_key = \"row-secret-password\"\n", ""),
            "connection[0].api_key",
        ),
        (
            "klaviyo: unknown object",
            klaviyo("objects = [\"lists\"]"),
            "connection[0].objects",
        ),
        (
            "klaviyo: page size too large",
            klaviyo("page_size = 100000"),
            "connection[0].page_size",
        ),
        (
            "pipedrive: unknown entity",
            pipedrive("").replace("[\"persons\"]", "[\"leads\"]"),
            "connection[0].objects",
        ),
        (
            "pipedrive: webhook user with ':'",
            pipedrive("webhook_user = \"a:b\"\nwebhook_password = \"row-secret-webhook\""),
            "connection[0].webhook_user",
        ),
        (
            "pipedrive: webhook password without a user",
            pipedrive("webhook_password = \"row-secret-webhook\""),
            "connection[0].webhook_user",
        ),
        (
            "pipedrive: page size 0",
            pipedrive("page_size = 0"),
            "connection[0].page_size",
        ),
        (
            "pipedrive: zero sweep interval",
            pipedrive("sweep_interval = \"0s\""),
            "connection[0].sweep_interval",
        ),
        (
            "creatio: missing password",
            creatio("").replace("password = \"row-secret-password\"\n", ""),
            "connection[0].password",
        ),
        (
            "zoho: notify token over 50 characters",
            zoho(&format!("notify_token = \"{}\"", "x".repeat(51))),
            "connection[0].notify_token",
        ),
        ("zoho: page size 0", zoho("page_size = 0"), "connection[0].page_size"),
        (
            "creatio: oauth with a refresh token",
            format!("{KEY}{}", creatio(oauth())),
            "connection[0].oauth.refresh_token",
        ),
        (
            "salesforce: batch size out of range",
            salesforce("batch_size = 10"),
            "connection[0].batch_size",
        ),
        (
            "salesforce: oauth without the credentials key",
            salesforce("").replace(KEY, ""),
            "database.credentials_key",
        ),
        (
            "salesforce: unknown key",
            salesforce("colour = \"red\""),
            "connection[0].colour",
        ),
    ]
}

#[test]
fn every_invalid_config_gets_an_error_naming_the_file_and_the_key_and_no_secret() {
    let dir = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    let all = rows();
    for (i, (what, text, key)) in all.iter().enumerate() {
        let path = dir.path().join(format!("row-{i}.toml"));
        std::fs::write(&path, text).unwrap();
        let message = match Config::load(&path) {
            Ok(_) => {
                failures.push(format!("{what}: accepted"));
                continue;
            }
            Err(e) => {
                if !e.problems.iter().any(|p| p.key == *key) {
                    failures.push(format!("{what}: no problem at {key}: {:?}", e.problems));
                }
                e.to_string()
            }
        };
        if !message.contains(&path.display().to_string()) {
            failures.push(format!("{what}: the message does not name the file: {message}"));
        }
        if !message.contains(key) {
            failures.push(format!("{what}: the message does not name {key}: {message}"));
        }
        if let Some(secret) = SECRETS.iter().find(|s| message.contains(*s)) {
            failures.push(format!("{what}: the message shows the secret {secret}: {message}"));
        }
    }
    assert!(all.len() >= 35, "{} rows", all.len());
    assert!(
        failures.is_empty(),
        "{} of {} rows failed:\n{}",
        failures.len(),
        all.len(),
        failures.join("\n")
    );
}

#[test]
fn an_unreadable_config_file_is_named_in_the_error() {
    let err = Config::load(Path::new("/nonexistent/crmsyncd.toml")).unwrap_err();
    assert!(err.to_string().contains("/nonexistent/crmsyncd.toml"), "{err}");
}
