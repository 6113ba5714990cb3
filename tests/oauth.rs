//! OAuth2 connections against the HubSpot simulator's token endpoint (a public app): tokens refreshed before they
//! expire, rotated refresh tokens sealed in the database and used after a restart, and a refused grant parking
//! the connection until it is re-authorised.

mod support;

use std::path::Path;
use std::time::Duration;

use base64::Engine;
use crmsyncd::Config;
use crmsyncd::metrics::ConnectionState;
use crmsyncd::testing::TestDatabase;
use crmsyncd_entities::credentials;
use crmsyncd_sim::hubspot::{HubSpotSim, HubSpotSimConfig};
use crmsyncd_sim::oauth::OAuthSimConfig;
use sea_orm::EntityTrait;
use support::{TestApp, free_port, on_each_database, start, wait_for};

/// A daemon with one HubSpot connection "hs" that authenticates with `refresh_token` through the simulator's
/// token endpoint.
async fn oauth_app(db: &TestDatabase, sim: &HubSpotSim, refresh_token: &str) -> TestApp {
    let key = base64::engine::general_purpose::STANDARD.encode([42u8; 32]);
    let base = sim.base_url();
    let text = format!(
        r#"
[http]
listen = "127.0.0.1:{port}"

[database]
url = "{url}"
credentials_key = "{key}"

[[connection]]
id = "hs"
provider = "hubspot"
base_url = "{base}"
objects = ["contacts"]
oauth = {{ token_url = "{base}/oauth/v1/token", client_id = "sim-client-id", client_secret = "sim-client-secret", refresh_token = "{refresh_token}", refresh_before = "1s" }}
poll_interval = "200ms"
rate_limit = {{ requests = 1000, per = "1s" }}
request_timeout = "2s"
retry_backoff = {{ min = "50ms", max = "500ms" }}
"#,
        port = free_port(),
        url = db.url
    );
    let config = Config::parse(&text, Path::new("oauth.toml"), &|_| None).unwrap_or_else(|e| panic!("{e}"));
    start(config).await
}

async fn sim_with_oauth(ttl: Duration, rotate: bool) -> HubSpotSim {
    HubSpotSim::start(HubSpotSimConfig {
        oauth: Some(OAuthSimConfig {
            access_ttl: ttl,
            rotate_refresh_tokens: rotate,
            ..OAuthSimConfig::default()
        }),
        ..HubSpotSimConfig::default()
    })
    .await
    .unwrap()
}

async fn live_records(app: &TestApp) -> usize {
    app.handle
        .store
        .records("hs", "contacts")
        .await
        .unwrap()
        .iter()
        .filter(|r| !r.deleted)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_tokens_are_refreshed_before_they_expire() {
    on_each_database(|db| async move {
        let sim = sim_with_oauth(Duration::from_secs(2), false).await;
        sim.seed("contacts", 30, None);
        let app = oauth_app(&db, &sim, "sim-refresh-token").await;
        wait_for("the first sync", Duration::from_secs(20), || async {
            live_records(&app).await == 30
        })
        .await;
        let issuer = sim.oauth().unwrap();
        // Tokens live 2 s and are refreshed 1 s before expiry: over 4 s of polling, at least three refreshes.
        wait_for("several refreshes", Duration::from_secs(20), || async {
            issuer.refreshes() >= 3
        })
        .await;
        sim.seed("contacts", 5, None);
        wait_for("records made after the refreshes", Duration::from_secs(20), || async {
            live_records(&app).await == 35
        })
        .await;
        assert_eq!(
            sim.log().count_status(401),
            0,
            "no request ever carried an expired token"
        );
        assert_eq!(issuer.refused(), 0);
        app.stop().await.unwrap();
        sim.shutdown().await;
        db
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_refresh_tokens_are_sealed_and_used_after_a_restart() {
    on_each_database(|db| async move {
        let sim = sim_with_oauth(Duration::from_secs(600), true).await;
        sim.seed("contacts", 10, None);
        let issuer = sim.oauth().unwrap();

        let app = oauth_app(&db, &sim, "sim-refresh-token").await;
        wait_for("the first sync", Duration::from_secs(20), || async {
            live_records(&app).await == 10
        })
        .await;
        assert_eq!(issuer.refreshes(), 1);
        let live = issuer.live_refresh_tokens();
        assert_eq!(live.len(), 1);
        assert_ne!(
            live[0], "sim-refresh-token",
            "the configured token was spent and rotated"
        );
        let stored = credentials::Entity::find_by_id("hs".to_owned())
            .one(app.handle.store.db())
            .await
            .unwrap()
            .expect("the rotated tokens are stored");
        assert!(!stored.sealed.contains(&live[0]), "stored sealed, not in the clear");
        app.stop().await.unwrap();

        // Same config (still naming the spent token): the daemon continues from the stored chain. Its stored
        // access token is still valid, so it does not even refresh.
        let app = oauth_app(&db, &sim, "sim-refresh-token").await;
        sim.seed("contacts", 5, None);
        wait_for("sync after the restart", Duration::from_secs(20), || async {
            live_records(&app).await == 15
        })
        .await;
        assert_eq!(issuer.refreshes(), 1, "the stored access token was reused");

        // The access token dies early: one refused request, one refresh with the rotated token, and on.
        issuer.expire_access_tokens();
        sim.seed("contacts", 5, None);
        wait_for("sync after the early expiry", Duration::from_secs(20), || async {
            live_records(&app).await == 20
        })
        .await;
        assert_eq!(issuer.refreshes(), 2);
        assert_eq!(issuer.refused(), 0, "the spent refresh token was never presented again");
        // The pass that stored them may still be finishing: the connection must settle idle, not park.
        wait_for("the connection to settle idle", Duration::from_secs(20), || async {
            app.handle.metrics.current_state("hs") == Some(ConnectionState::Idle)
        })
        .await;
        app.stop().await.unwrap();
        sim.shutdown().await;
        db
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_grant_parks_the_connection_until_it_is_reauthorised() {
    on_each_database(|db| async move {
        let sim = sim_with_oauth(Duration::from_secs(600), false).await;
        sim.seed("contacts", 10, None);
        let issuer = sim.oauth().unwrap();
        let app = oauth_app(&db, &sim, "sim-refresh-token").await;
        wait_for("the first sync", Duration::from_secs(20), || async {
            live_records(&app).await == 10
        })
        .await;

        // The user uninstalls the app: refresh tokens are revoked and access tokens die.
        issuer.revoke_refresh_tokens();
        issuer.expire_access_tokens();
        wait_for("the connection to park", Duration::from_secs(20), || async {
            app.handle.metrics.current_state("hs") == Some(ConnectionState::AuthFailed)
        })
        .await;
        let requests = sim.log().len();
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(sim.log().len(), requests, "a parked connection sends nothing");
        let metrics = reqwest::get(app.url("/metrics")).await.unwrap().text().await.unwrap();
        assert!(
            metrics.contains(r#"crmsyncd_oauth_refreshes_total{connection="hs",outcome="rejected"} 1"#),
            "{metrics}"
        );
        app.stop().await.unwrap();

        // Re-authorised: the operator puts the new refresh token in the config. The stored chain descends from
        // the old one and is ignored.
        let fresh = issuer.authorize();
        let app = oauth_app(&db, &sim, &fresh).await;
        sim.seed("contacts", 5, None);
        wait_for("sync after re-authorisation", Duration::from_secs(20), || async {
            live_records(&app).await == 15
        })
        .await;
        // The pass that stored them may still be finishing: the connection must settle idle, not park.
        wait_for("the connection to settle idle", Duration::from_secs(20), || async {
            app.handle.metrics.current_state("hs") == Some(ConnectionState::Idle)
        })
        .await;
        app.stop().await.unwrap();
        sim.shutdown().await;
        db
    })
    .await;
}
