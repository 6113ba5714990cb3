//! The Odoo simulator's documented behaviour, driven over real JSON-RPC.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::NaiveDateTime;
use crmsyncd_sim::Faults;
use crmsyncd_sim::odoo::{OdooSim, OdooSimConfig, format_odoo_datetime};
use crmsyncd_sim::server::{self, Handler, SimRequest, SimResponse};
use http::StatusCode;
use serde_json::{Map, Value, json};

const KEY: &str = "odoo-test-key";

async fn start() -> OdooSim {
    OdooSim::start(OdooSimConfig::default()).await.unwrap()
}

fn vals(v: Value) -> Map<String, Value> {
    serde_json::from_value(v).unwrap()
}

fn at(s: &str) -> NaiveDateTime {
    NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S").unwrap()
}

/// POSTs one JSON-RPC call and returns the HTTP response.
async fn post(sim: &OdooSim, service: &str, method: &str, args: Value) -> reqwest::Response {
    let body = json!({"jsonrpc": "2.0", "method": "call", "params": {"service": service, "method": method, "args": args}, "id": 1});
    reqwest::Client::new()
        .post(format!("{}/jsonrpc", sim.base_url()))
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// One JSON-RPC call's envelope (`result` or `error`).
async fn rpc(sim: &OdooSim, service: &str, method: &str, args: Value) -> Value {
    let response = post(sim, service, method, args).await;
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

async fn execute_kw(sim: &OdooSim, model: &str, method: &str, args: Value, kwargs: Value) -> Value {
    rpc(
        sim,
        "object",
        "execute_kw",
        json!(["sim", sim.uid(), KEY, model, method, args, kwargs]),
    )
    .await
}

/// `execute_kw`'s result, failing the test on an error.
async fn ok(sim: &OdooSim, model: &str, method: &str, args: Value, kwargs: Value) -> Value {
    let envelope = execute_kw(sim, model, method, args, kwargs).await;
    assert!(envelope.get("error").is_none(), "unexpected error: {envelope}");
    envelope["result"].clone()
}

fn ids_of(records: &Value) -> Vec<i64> {
    records
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_i64().unwrap())
        .collect()
}

async fn search_ids(sim: &OdooSim, model: &str, domain: Value) -> Vec<i64> {
    let ids = ok(sim, model, "search", json!([domain]), json!({})).await;
    serde_json::from_value(ids).unwrap()
}

#[tokio::test]
async fn login_returns_the_uid_and_a_wrong_key_returns_false() {
    let sim = start().await;
    let good = rpc(&sim, "common", "login", json!(["sim", "api@example.com", KEY])).await;
    assert_eq!(good["result"], json!(sim.uid()));
    let wrong = rpc(&sim, "common", "login", json!(["sim", "api@example.com", "nope"])).await;
    assert_eq!(wrong["result"], json!(false));
    let auth = rpc(
        &sim,
        "common",
        "authenticate",
        json!(["sim", "api@example.com", KEY, {}]),
    )
    .await;
    assert_eq!(auth["result"], json!(sim.uid()));
    let version = rpc(&sim, "common", "version", json!([])).await;
    assert_eq!(version["result"]["server_version"], "17.0");
    sim.shutdown().await;
}

#[tokio::test]
async fn execute_kw_with_a_wrong_or_revoked_key_is_access_denied() {
    let sim = start().await;
    let wrong = rpc(
        &sim,
        "object",
        "execute_kw",
        json!(["sim", 2, "nope", "res.partner", "search", [[]]]),
    )
    .await;
    assert_eq!(wrong["id"], 1);
    assert!(wrong.get("result").is_none());
    let error = &wrong["error"];
    assert_eq!(error["code"], 200);
    assert_eq!(error["message"], "Odoo Server Error");
    assert_eq!(error["data"]["name"], "odoo.exceptions.AccessDenied");
    assert_eq!(error["data"]["message"], "Access Denied");
    assert_eq!(error["data"]["arguments"], json!(["Access Denied"]));
    assert!(error["data"]["debug"].as_str().unwrap().starts_with("Traceback"));

    sim.set_api_key("rotated");
    let revoked = execute_kw(&sim, "res.partner", "search", json!([[]]), json!({})).await;
    assert_eq!(revoked["error"]["data"]["name"], "odoo.exceptions.AccessDenied");
    sim.shutdown().await;
}

#[tokio::test]
async fn keyset_paging_walks_an_equal_timestamp_block_without_loss_or_repeat() {
    let sim = start().await;
    let mut expected = sim.seed("res.partner", 40, Some(at("2024-01-01 09:00:00")));
    expected.extend(sim.seed("res.partner", 1_234, Some(at("2024-01-01 10:00:00"))));
    expected.extend(sim.seed("res.partner", 30, Some(at("2024-01-01 11:00:00"))));
    // A row written later moves to the end of the (write_date, id) order.
    sim.set_now(at("2024-01-01 12:00:00"));
    sim.write("res.partner", expected[0], vals(json!({"phone": "+1"})));
    let first = expected.remove(0);
    expected.push(first);

    let (mut ts, mut last_id) = ("1970-01-01 00:00:00".to_owned(), 0i64);
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let domain = json!([
            "|",
            ["write_date", ">", ts],
            "&",
            ["write_date", "=", ts],
            ["id", ">", last_id]
        ]);
        let kwargs = json!({"fields": ["name", "email"], "order": "write_date asc, id asc", "limit": 500, "context": {"active_test": false}});
        let page = ok(&sim, "res.partner", "search_read", json!([domain]), kwargs).await;
        let page = page.as_array().unwrap().clone();
        pages += 1;
        if let Some(last) = page.last() {
            ts = last["write_date"].as_str().unwrap().to_owned();
            last_id = last["id"].as_i64().unwrap();
        }
        seen.extend(page.iter().map(|r| r["id"].as_i64().unwrap()));
        if page.len() < 500 {
            break;
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, expected, "every row once, in (write_date, id) order");
    sim.shutdown().await;
}

#[tokio::test]
async fn records_carry_id_dates_active_and_the_requested_fields() {
    let sim = start().await;
    sim.set_now(at("2024-02-03 04:05:06"));
    let id = sim.create("res.partner", vals(json!({"name": "Ada", "email": "ada@example.com"})));
    let records = ok(&sim, "res.partner", "read", json!([[id], ["name", "phone"]]), json!({})).await;
    assert_eq!(
        records,
        json!([{"id": id, "name": "Ada", "phone": false, "write_date": "2024-02-03 04:05:06",
                "create_date": "2024-02-03 04:05:06", "active": true}])
    );
    let all = ok(
        &sim,
        "res.partner",
        "search_read",
        json!([[["id", "=", id]]]),
        json!({}),
    )
    .await;
    assert_eq!(all[0]["email"], "ada@example.com", "no fields means all fields");
    sim.shutdown().await;
}

#[tokio::test]
async fn archived_rows_are_hidden_unless_active_test_is_false() {
    let sim = start().await;
    let ids = sim.seed("res.partner", 3, None);
    sim.archive("res.partner", ids[1]);

    assert_eq!(search_ids(&sim, "res.partner", json!([])).await, vec![ids[0], ids[2]]);
    let count = ok(&sim, "res.partner", "search_count", json!([[]]), json!({})).await;
    assert_eq!(count, json!(2));
    let all = ok(
        &sim,
        "res.partner",
        "search",
        json!([[]]),
        json!({"context": {"active_test": false}}),
    )
    .await;
    assert_eq!(all, json!(ids));
    let archived = search_ids(&sim, "res.partner", json!([["active", "=", false]])).await;
    assert_eq!(
        archived,
        vec![ids[1]],
        "a domain on active disables the implicit filter"
    );
    let read = ok(&sim, "res.partner", "read", json!([[ids[1]], ["active"]]), json!({})).await;
    assert_eq!(read[0]["active"], false, "read by id sees archived rows");
    sim.shutdown().await;
}

#[tokio::test]
async fn unlink_leaves_no_trace_and_search_ids_shrink() {
    let sim = start().await;
    let ids = sim.seed("crm.lead", 4, None);
    sim.unlink("crm.lead", ids[0]);
    let rpc_deleted = ok(&sim, "crm.lead", "unlink", json!([[ids[1]]]), json!({})).await;
    assert_eq!(rpc_deleted, json!(true));

    let all = ok(
        &sim,
        "crm.lead",
        "search",
        json!([[]]),
        json!({"context": {"active_test": false}}),
    )
    .await;
    assert_eq!(all, json!([ids[2], ids[3]]));
    assert!(sim.records("crm.lead").iter().all(|r| r.id != ids[0] && r.id != ids[1]));
    let gone = execute_kw(&sim, "crm.lead", "read", json!([[ids[0]]]), json!({})).await;
    assert_eq!(gone["error"]["data"]["name"], "odoo.exceptions.MissingError");
    sim.shutdown().await;
}

#[tokio::test]
async fn a_late_transaction_is_invisible_until_commit_then_older_than_rows_written_meanwhile() {
    let sim = start().await;
    sim.set_now(at("2024-06-01 08:00:00"));
    let mut tx = sim.begin();
    let late = tx.create("res.partner", vals(json!({"name": "Late", "x_key": "late"})));
    let existing = sim.create("res.partner", vals(json!({"name": "Before"})));
    tx.write("res.partner", existing, vals(json!({"name": "Rewritten in tx"})));

    sim.advance_clock(Duration::from_secs(5));
    let meanwhile = sim.create("res.partner", vals(json!({"name": "Meanwhile"})));
    assert!(late < meanwhile, "the transaction took its id first");
    assert_eq!(
        search_ids(&sim, "res.partner", json!([])).await,
        vec![existing, meanwhile]
    );
    let before_commit = ok(&sim, "res.partner", "read", json!([[existing], ["name"]]), json!({})).await;
    assert_eq!(
        before_commit[0]["name"], "Before",
        "uncommitted writes are not visible either"
    );

    // A client that pulled now would move its watermark to the newest row it saw.
    let watermark = format_odoo_datetime(at("2024-06-01 08:00:05"));
    tx.commit();

    let rows = ok(
        &sim,
        "res.partner",
        "search_read",
        json!([[]]),
        json!({"fields": ["name"], "order": "write_date asc, id asc"}),
    )
    .await;
    assert_eq!(ids_of(&rows), vec![late, existing, meanwhile]);
    assert_eq!(rows[0]["write_date"], "2024-06-01 08:00:00");
    assert_eq!(rows[1]["name"], "Rewritten in tx");
    assert_eq!(rows[1]["write_date"], "2024-06-01 08:00:00");
    assert_eq!(rows[2]["write_date"], "2024-06-01 08:00:05");
    let past_watermark = search_ids(&sim, "res.partner", json!([["write_date", ">=", watermark]])).await;
    assert_eq!(
        past_watermark,
        vec![meanwhile],
        "the late rows hide behind the watermark: the pitfall"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn a_dropped_transaction_rolls_back() {
    let sim = start().await;
    let mut tx = sim.begin();
    let id = tx.create("res.partner", vals(json!({"name": "Ghost"})));
    drop(tx);
    assert!(sim.records("res.partner").iter().all(|r| r.id != id));
    sim.shutdown().await;
}

#[tokio::test]
async fn creates_with_counts_rpc_creates_only() {
    let sim = start().await;
    sim.create("res.partner", vals(json!({"x_sync_key": "k1"})));
    let single = ok(
        &sim,
        "res.partner",
        "create",
        json!([{"name": "A", "x_sync_key": "k1"}]),
        json!({}),
    )
    .await;
    assert!(single.is_i64(), "a dict creates one row and returns its id");
    let many = ok(
        &sim,
        "res.partner",
        "create",
        json!([[{"name": "B", "x_sync_key": "k2"}, {"name": "C", "x_sync_key": "k1"}]]),
        json!({}),
    )
    .await;
    assert_eq!(
        many.as_array().unwrap().len(),
        2,
        "a list creates one row each and returns the ids"
    );

    assert_eq!(sim.creates_with("res.partner", "x_sync_key", "k1"), 2);
    assert_eq!(sim.creates_with("res.partner", "x_sync_key", "k2"), 1);
    assert_eq!(sim.creates_with("res.partner", "name", "A"), 1);
    assert_eq!(sim.creates_with("crm.lead", "x_sync_key", "k1"), 0);
    sim.shutdown().await;
}

#[tokio::test]
async fn rpc_write_updates_fields_and_write_date() {
    let sim = start().await;
    sim.set_now(at("2024-01-01 00:00:00"));
    let id = sim.create("res.partner", vals(json!({"name": "Old"})));
    sim.advance_clock(Duration::from_secs(60));
    let done = ok(&sim, "res.partner", "write", json!([[id], {"name": "New"}]), json!({})).await;
    assert_eq!(done, json!(true));
    let row = &sim.records("res.partner")[0];
    assert_eq!(row.fields["name"], "New");
    assert_eq!(row.write_date, at("2024-01-01 00:01:00"));
    assert_eq!(row.create_date, at("2024-01-01 00:00:00"));
    sim.shutdown().await;
}

#[tokio::test]
async fn a_full_window_answers_429_with_retry_after_and_counts_the_excess() {
    let config = OdooSimConfig {
        rate_limit: Some((3, Duration::from_secs(60))),
        ..OdooSimConfig::default()
    };
    let sim = OdooSim::start(config).await.unwrap();
    for _ in 0..3 {
        assert_eq!(
            post(&sim, "common", "version", json!([])).await.status(),
            StatusCode::OK
        );
    }
    let refused = post(&sim, "common", "version", json!([])).await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = refused.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry_after), "retry-after {retry_after}");
    assert_eq!(refused.text().await.unwrap(), "Too Many Requests");
    assert_eq!(sim.rate_limit_excess(), 1);

    let log = sim.log().snapshot();
    assert_eq!(log.len(), 4);
    assert_eq!((log[3].operation.as_str(), log[3].status), ("version", 429));
    sim.shutdown().await;
}

#[tokio::test]
async fn an_unknown_field_in_a_domain_is_a_value_error() {
    let sim = start().await;
    let answer = execute_kw(
        &sim,
        "res.partner",
        "search_read",
        json!([[["no_such_field", "=", 1]]]),
        json!({}),
    )
    .await;
    assert_eq!(answer["error"]["data"]["name"], "builtins.ValueError");
    assert_eq!(
        answer["error"]["data"]["message"],
        "Invalid field res.partner.no_such_field in leaf ('no_such_field', '=', 1)"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn unknown_methods_models_and_keyword_arguments_are_errors() {
    let sim = start().await;
    let method = execute_kw(&sim, "res.partner", "frobnicate", json!([]), json!({})).await;
    assert_eq!(method["error"]["data"]["name"], "builtins.AttributeError");
    let model = execute_kw(&sim, "no.such.model", "search", json!([[]]), json!({})).await;
    assert_eq!(model["error"]["data"]["name"], "odoo.exceptions.UserError");
    let kwarg = execute_kw(&sim, "res.partner", "search_read", json!([[]]), json!({"limits": 5})).await;
    assert_eq!(kwarg["error"]["data"]["name"], "builtins.TypeError");
    sim.shutdown().await;
}

#[tokio::test]
async fn unparseable_json_is_a_bad_request() {
    let sim = start().await;
    let response = reqwest::Client::new()
        .post(format!("{}/jsonrpc", sim.base_url()))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(sim.log().snapshot()[0].operation, "invalid_json");
    sim.shutdown().await;
}

#[tokio::test]
async fn injected_faults_answer_like_a_proxy_in_front_of_odoo() {
    let sim = start().await;
    sim.set_faults(Faults {
        server_error: 1.0,
        ..Faults::none()
    });
    let failed = post(&sim, "common", "version", json!([])).await;
    assert_eq!(failed.status(), StatusCode::BAD_GATEWAY);
    assert!(failed.text().await.unwrap().contains("<title>502 Bad Gateway</title>"));

    sim.set_faults(Faults {
        truncated_json: 1.0,
        ..Faults::none()
    });
    let truncated = post(&sim, "common", "version", json!([])).await;
    assert_eq!(truncated.status(), StatusCode::OK);
    assert!(serde_json::from_slice::<Value>(&truncated.bytes().await.unwrap()).is_err());

    sim.set_faults(Faults::none());
    let log = sim.log().snapshot();
    assert_eq!(log.iter().map(|r| r.status).collect::<Vec<_>>(), vec![502, 200]);
    assert_eq!(log[0].operation, "version");
    sim.shutdown().await;
}

/// Records every request it receives and answers 200.
#[derive(Default)]
struct Capture {
    seen: Mutex<Vec<SimRequest>>,
}

impl Handler for Capture {
    async fn handle(&self, request: SimRequest) -> SimResponse {
        self.seen.lock().unwrap().push(request);
        SimResponse::new(StatusCode::OK, "")
    }
}

#[tokio::test]
async fn send_webhook_posts_the_documented_unsigned_body() {
    let sim = start().await;
    let capture = Arc::new(Capture::default());
    let receiver = server::spawn(([127, 0, 0, 1], 0).into(), capture.clone())
        .await
        .unwrap();
    let id = sim.create("res.partner", vals(json!({"name": "Ada", "email": "ada@example.com"})));

    let url = format!("{}/hooks/odoo/secret-token", receiver.base_url());
    let status = sim
        .send_webhook(&url, "res.partner", id, &["name", "email"])
        .await
        .unwrap();
    assert_eq!(status, reqwest::StatusCode::OK);

    let seen = capture.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    let request = &seen[0];
    assert_eq!(request.method, http::Method::POST);
    assert_eq!(request.path(), "/hooks/odoo/secret-token");
    assert_eq!(request.header("content-type"), Some("application/json"));
    assert!(
        request.headers.keys().all(|k| !k.as_str().contains("signature")),
        "Odoo signs nothing"
    );
    let body: Value = serde_json::from_slice(&request.body).unwrap();
    let action = body["_action"].as_str().unwrap();
    assert!(
        action.starts_with("Send Webhook Notification(#") && action.ends_with(')'),
        "{action}"
    );
    assert_eq!(body["_id"], id);
    assert_eq!(body["_model"], "res.partner");
    assert_eq!(body["name"], "Ada");
    assert_eq!(body["email"], "ada@example.com");
    assert_eq!(body.as_object().unwrap().len(), 5);
    receiver.shutdown().await;
    sim.shutdown().await;
}

#[tokio::test]
async fn churn_changes_rows_and_announces_them_by_webhook() {
    let sim = start().await;
    let capture = Arc::new(Capture::default());
    let receiver = server::spawn(([127, 0, 0, 1], 0).into(), capture.clone())
        .await
        .unwrap();
    sim.seed("res.partner", 20, Some(at("2020-01-01 00:00:00")));
    let churn = sim.spawn_churn(
        Duration::from_millis(5),
        5,
        vec!["res.partner".to_owned()],
        Some(format!("{}/hook", receiver.base_url())),
    );

    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let changed = sim
            .records("res.partner")
            .iter()
            .any(|r| r.write_date > at("2020-01-01 00:00:00"));
        let announced = capture.seen.lock().unwrap().len() >= 10;
        if changed && announced {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "churn made no visible change in time"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    churn.abort();
    let seen = capture.seen.lock().unwrap().clone();
    let body: Value = serde_json::from_slice(&seen[0].body).unwrap();
    assert_eq!(body["_model"], "res.partner");
    assert!(body["_id"].is_i64());
    receiver.shutdown().await;
    sim.shutdown().await;
}

#[tokio::test]
async fn seeding_at_a_sub_second_time_stores_whole_seconds_like_odoo() {
    let sim = OdooSim::start(OdooSimConfig::default()).await.unwrap();
    let at = chrono::NaiveDate::from_ymd_opt(2024, 5, 1)
        .unwrap()
        .and_hms_milli_opt(10, 0, 0, 750)
        .unwrap();
    sim.seed("res.partner", 2, Some(at));
    for row in sim.records("res.partner") {
        assert_eq!(format_odoo_datetime(row.write_date), "2024-05-01 10:00:00");
        assert_eq!(row.write_date.and_utc().timestamp_subsec_nanos(), 0);
    }
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_never_moves_a_rows_write_date_backwards() {
    let sim = start().await;
    // Few rows and many changes: the churn's writes often land on rows an open late transaction also wrote.
    sim.seed("res.partner", 10, None);
    let churn = sim.spawn_churn(Duration::from_millis(10), 10, vec!["res.partner".into()], None);
    let mut newest: std::collections::HashMap<i64, NaiveDateTime> = Default::default();
    let until = tokio::time::Instant::now() + Duration::from_millis(3_500);
    while tokio::time::Instant::now() < until {
        for row in sim.records("res.partner") {
            let seen = newest.entry(row.id).or_insert(row.write_date);
            assert!(
                row.write_date >= *seen,
                "row {} went from write_date {seen} back to {}",
                row.id,
                row.write_date
            );
            *seen = row.write_date;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    churn.abort();
    sim.shutdown().await;
}
