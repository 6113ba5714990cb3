//! Secrets never leave the daemon: run the real binary with a secret in every place a config holds one, make
//! everything fail (refused webhooks carrying the right secrets in the wrong places, CRMs and token endpoints
//! that answer errors echoing the whole request back, an invalid config), and scan every log line, error
//! message, HTTP answer and the metrics for the secret values.

use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Every secret the config holds, each distinctive enough that a hit is certainly a leak.
const SECRETS: &[(&str, &str)] = &[
    ("API_TOKEN", "SECRET-api-token-6f1c9a"),
    ("HS_TOKEN", "SECRET-hubspot-access-token-7d2e"),
    ("HS_WEBHOOK", "SECRET-hubspot-webhook-secret-8a3f"),
    ("ODOO_KEY", "SECRET-odoo-api-key-9b40"),
    ("ODOO_HOOK", "SECRET-odoo-webhook-token-0c51"),
    ("PD_TOKEN", "SECRET-pipedrive-api-token-1d62"),
    ("PD_HOOK", "SECRET-pipedrive-webhook-password-2e73"),
    ("KL_KEY", "SECRET-klaviyo-api-key-3f84"),
    ("KL_HOOK", "SECRET-klaviyo-webhook-secret-4095"),
    ("ZO_CLIENT", "SECRET-zoho-client-secret-51a6"),
    ("ZO_REFRESH", "SECRET-zoho-refresh-token-62b7"),
    ("ZO_NOTIFY", "SECRET-zoho-notify-token-73c8"),
    ("SF_CLIENT", "SECRET-salesforce-client-secret-84d9"),
    ("SF_REFRESH", "SECRET-salesforce-refresh-token-95ea"),
    ("SF_HOOK", "SECRET-salesforce-webhook-token-a6fb"),
    ("CR_PASSWORD", "SECRET-creatio-password-b70c"),
    ("CREDENTIALS_KEY", "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="),
];

/// Parts of secrets that are still leaks when a secret shows up encoded or cut (a base64'd Basic header, a
/// truncated message).
fn leaks(text: &str) -> Vec<&'static str> {
    SECRETS
        .iter()
        .filter(|(_, s)| text.contains(s) || (s.len() > 20 && text.contains(&s[7..20])))
        .map(|(name, _)| *name)
        .collect()
}

/// A CRM (and OAuth token endpoint) that answers every request with an error whose body echoes the request,
/// headers and form body included, in the fields error messages are built from.
async fn echoing_crm() -> (String, Arc<Mutex<usize>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(0));
    let counter = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                continue;
            };
            let counter = counter.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                let mut got = 0;
                // Read the head and whatever body follows within a moment.
                while let Ok(Ok(n)) =
                    tokio::time::timeout(Duration::from_millis(100), stream.read(&mut buf[got..])).await
                {
                    if n == 0 {
                        break;
                    }
                    got += n;
                }
                *counter.lock().unwrap() += 1;
                let echo = String::from_utf8_lossy(&buf[..got]).into_owned();
                let status = if echo.contains("token") { 400 } else { 500 };
                let body = serde_json::json!({
                    "error": "invalid_request",
                    "error_description": echo,
                    "message": echo,
                    "errors": [{"detail": echo, "message": echo}],
                })
                .to_string();
                let answer = format!(
                    "HTTP/1.1 {status} Error\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(answer.as_bytes()).await;
            });
        }
    });
    (url, seen)
}

fn config(port: u16, crm: &str) -> String {
    let common = "poll_interval = \"300ms\"\nrequest_timeout = \"1s\"\nconnect_timeout = \"1s\"\nretry_backoff = { min = \"100ms\", max = \"300ms\" }";
    format!(
        r#"
[http]
listen = "127.0.0.1:{port}"
public_url = "http://127.0.0.1:{port}"
api_token = "${{API_TOKEN}}"

[database]
url = "sqlite://{{DB}}?mode=rwc"
credentials_key = "${{CREDENTIALS_KEY}}"

[supervisor]
min_backoff = "100ms"
max_backoff = "500ms"
max_restarts = 1000

[[connection]]
id = "hs"
provider = "hubspot"
base_url = "{crm}"
access_token = "${{HS_TOKEN}}"
webhook_secret = "${{HS_WEBHOOK}}"
objects = ["contacts"]
{common}

[[connection]]
id = "od"
provider = "odoo"
base_url = "{crm}"
database = "d"
username = "u"
api_key = "${{ODOO_KEY}}"
models = ["res.partner"]
webhook_token = "${{ODOO_HOOK}}"
{common}

[[connection]]
id = "pd"
provider = "pipedrive"
base_url = "{crm}"
api_token = "${{PD_TOKEN}}"
objects = ["persons"]
webhook_user = "hook"
webhook_password = "${{PD_HOOK}}"
{common}

[[connection]]
id = "kl"
provider = "klaviyo"
base_url = "{crm}"
api_key = "${{KL_KEY}}"
webhook_secret = "${{KL_HOOK}}"
{common}

[[connection]]
id = "zo"
provider = "zoho"
base_url = "{crm}"
modules = ["Leads"]
notify_token = "${{ZO_NOTIFY}}"
oauth = {{ token_url = "{crm}/oauth/v2/token", client_id = "zoho-client", client_secret = "${{ZO_CLIENT}}", refresh_token = "${{ZO_REFRESH}}" }}
{common}

[[connection]]
id = "sf"
provider = "salesforce"
base_url = "{crm}"
objects = ["Contact"]
webhook_token = "${{SF_HOOK}}"
oauth = {{ token_url = "{crm}/services/oauth2/token", client_id = "sf-client", client_secret = "${{SF_CLIENT}}", refresh_token = "${{SF_REFRESH}}" }}
{common}

[[connection]]
id = "cr"
provider = "creatio"
base_url = "{crm}"
username = "Supervisor"
password = "${{CR_PASSWORD}}"
objects = ["Contact"]
{common}
"#
    )
}

fn daemon(args: &[&str], config: &std::path::Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_crmsyncd"));
    command.args(args).arg("--config").arg(config).env("RUST_LOG", "debug");
    for (var, value) in SECRETS {
        command.env(var, value);
    }
    command
}

/// Requests that fail verification, several of them carrying the right secret somewhere it does not belong.
/// A request to send: path and query, headers, body.
type Hostile = (String, Vec<(String, String)>, String);

fn hostile_requests() -> Vec<Hostile> {
    let s = |name: &str| SECRETS.iter().find(|(n, _)| *n == name).unwrap().1.to_string();
    let b64 = |t: &str| {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(t)
    };
    vec![
        // The right token, a malformed body: refused as malformed, the URL with its token must not be logged.
        (
            format!("/webhooks/od?token={}", s("ODOO_HOOK")),
            vec![],
            "{not json".into(),
        ),
        (
            format!("/webhooks/sf?token={}", s("SF_HOOK")),
            vec![],
            "<not-soap/>".into(),
        ),
        (format!("/webhooks/sf?token={}x", s("SF_HOOK")), vec![], "<x/>".into()),
        (
            "/webhooks/hs".into(),
            vec![("x-hubspot-signature".into(), s("HS_WEBHOOK"))],
            "[]".into(),
        ),
        (
            "/webhooks/hs".into(),
            vec![
                ("x-hubspot-signature-v3".into(), s("HS_WEBHOOK")),
                ("x-hubspot-request-timestamp".into(), s("HS_WEBHOOK")),
            ],
            "[]".into(),
        ),
        (
            "/webhooks/kl".into(),
            vec![
                ("klaviyo-signature".into(), s("KL_HOOK")),
                ("klaviyo-timestamp".into(), s("KL_HOOK")),
                ("klaviyo-webhook-id".into(), s("KL_HOOK")),
            ],
            "{}".into(),
        ),
        (
            "/webhooks/pd".into(),
            vec![(
                "authorization".into(),
                format!("Basic {}", b64(&format!("hook:{}", s("PD_HOOK")))),
            )],
            "{not json".into(),
        ),
        (
            "/webhooks/pd".into(),
            vec![(
                "authorization".into(),
                format!("Basic {}", b64(&format!("hook:{}x", s("PD_HOOK")))),
            )],
            "{}".into(),
        ),
        (
            "/webhooks/zo".into(),
            vec![],
            format!(r#"{{"token":"{}","module":"","ids":[]}}"#, s("ZO_NOTIFY")),
        ),
        (
            "/webhooks/zo".into(),
            vec![],
            format!(r#"{{"token":"{}x"}}"#, s("ZO_NOTIFY")),
        ),
        (
            "/webhooks/cr".into(),
            vec![("authorization".into(), s("CR_PASSWORD"))],
            s("CR_PASSWORD"),
        ),
        (
            "/v1/connections".into(),
            vec![("authorization".into(), format!("Bearer {}x", s("API_TOKEN")))],
            String::new(),
        ),
        (
            format!("/v1/connections/nope/writes?token={}", s("API_TOKEN")),
            vec![("authorization".into(), format!("Bearer {}", s("API_TOKEN")))],
            format!("{{\"object\": \"{}\"}}", s("API_TOKEN")),
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_appears_in_logs_errors_answers_or_metrics() {
    let (crm, crm_requests) = echoing_crm().await;
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let db = dir.path().join("secrets.db");
    let text = config(port, &crm).replace("{DB}", &db.display().to_string());
    let path = dir.path().join("crmsyncd.toml");
    std::fs::write(&path, &text).unwrap();
    let log_path = dir.path().join("daemon.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut child = daemon(&["run"], &path)
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while client.get(format!("{base}/healthz")).send().await.is_err() {
        assert!(Instant::now() < deadline, "the daemon did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Let every connection fail against the echoing CRM a few times (pulls, token refreshes, logins).
    let deadline = Instant::now() + Duration::from_secs(20);
    while *crm_requests.lock().unwrap() < 40 {
        assert!(Instant::now() < deadline, "the connections did not call the CRM");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut answers = String::new();
    for (path, headers, body) in hostile_requests() {
        let mut request = client.post(format!("{base}{path}")).body(body);
        for (k, v) in headers {
            request = request.header(k, v);
        }
        let response = request.send().await.unwrap();
        assert!(!response.status().is_success(), "{path} must be refused");
        answers.push_str(&response.text().await.unwrap());
        answers.push('\n');
    }
    for path in ["/metrics", "/readyz", "/healthz", "/v1/connections"] {
        let r = client
            .get(format!("{base}{path}"))
            .bearer_auth(SECRETS[0].1)
            .send()
            .await
            .unwrap();
        answers.push_str(&r.text().await.unwrap());
        answers.push('\n');
    }
    // Give the connections time to log what they make of the errors, then stop as systemd would.
    tokio::time::sleep(Duration::from_secs(2)).await;
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "the daemon exits cleanly: {status}");
    let logs = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        logs.lines().count() > 50,
        "enough was logged to mean something:\n{logs}"
    );
    assert!(logs.contains("Webhook refused"), "the refusals were logged");

    // An invalid config holding the same secrets: check-config and run both print the problems.
    let bad = text
        .replace("objects = [\"contacts\"]", "objects = []")
        .replace("listen = ", "listen = \"x\"\n#");
    let bad_path = dir.path().join("bad.toml");
    std::fs::write(&bad_path, bad).unwrap();
    let mut errors = String::new();
    for args in [&["check-config"][..], &["run"][..]] {
        let out = daemon(args, &bad_path).output().unwrap();
        assert!(!out.status.success());
        errors.push_str(&String::from_utf8_lossy(&out.stdout));
        errors.push_str(&String::from_utf8_lossy(&out.stderr));
    }
    assert!(errors.contains("connection[0].objects"), "{errors}");

    for (what, text) in [
        ("logs", &logs),
        ("HTTP answers and metrics", &answers),
        ("config errors", &errors),
    ] {
        let found = leaks(text);
        assert!(found.is_empty(), "{what} show the secrets {found:?}:\n{text}");
    }
}
