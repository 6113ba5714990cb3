//! The command line: check-config reports every problem with its key and exits non-zero.

use std::process::Command;

fn crmsyncd() -> Command {
    Command::new(env!("CARGO_BIN_EXE_crmsyncd"))
}

#[test]
fn check_config_accepts_the_shipped_default_and_example() {
    let out = crmsyncd()
        .args(["check-config", "--config", "config/crmsyncd.toml"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = crmsyncd()
        .args(["check-config", "--config", "config/crmsyncd.example.toml"])
        .env("CRMSYNCD_API_TOKEN", "a")
        .env("HUBSPOT_TOKEN", "b")
        .env("HUBSPOT_CLIENT_SECRET", "c")
        .env("ODOO_API_KEY", "d")
        .env("ODOO_WEBHOOK_TOKEN", "e")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn check_config_names_every_bad_key_and_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        r#"
[http]
listen = "nowhere"

[[connection]]
id = "hs"
provider = "hubspot"
base_url = "https://api.hubapi.com"
access_token = "${SURELY_NOT_SET_IN_CI}"
objects = ["contacts"]
poll_interval = "often"
"#,
    )
    .unwrap();
    let out = crmsyncd()
        .args(["check-config", "--config"])
        .arg(&path)
        .env_remove("SURELY_NOT_SET_IN_CI")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.toml"), "{err}");
    assert!(err.contains("http.listen"), "{err}");
    assert!(
        err.contains("connection[0].access_token: environment variable SURELY_NOT_SET_IN_CI is not set"),
        "{err}"
    );
    assert!(err.contains("connection[0].poll_interval"), "{err}");
}

#[test]
fn missing_config_file_is_a_clear_error() {
    let out = crmsyncd()
        .args(["check-config", "--config", "/nonexistent/crmsyncd.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/crmsyncd.toml"));
}
