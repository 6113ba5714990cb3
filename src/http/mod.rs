//! The HTTP endpoint (hyper 1, no framework): webhooks, the `/v1` API, `/metrics`, `/healthz` and `/readyz`.

mod api;
mod body;
mod db_wait;
pub mod fd_limit;
mod response;
mod webhooks;

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use ractor::{ActorRef, ActorStatus};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::actors::SupervisorMsg;
use crate::config::HttpConfig;
use crate::metrics::Metrics;
use crate::registry::Registry;
use crate::store::{InboxWriter, Store};
use response::Body;

/// What every request handler can reach.
pub struct HttpState {
    pub http: HttpConfig,
    pub store: Store,
    /// Group-commits webhook events; see [`crate::store::InboxWriter`].
    pub inbox: InboxWriter,
    pub metrics: Arc<Metrics>,
    pub registry: Arc<Registry>,
    pub supervisor: ActorRef<SupervisorMsg>,
}

/// Which of the daemon's addresses a listener is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface {
    /// `http.listen`: webhooks, the API, health, and metrics unless they have their own address.
    Main,
    /// `http.metrics_listen`: metrics and health only.
    Metrics,
}

/// Serves `listener` until `shutdown` resolves, then stops accepting and waits up to `grace` for requests in
/// flight (a webhook being committed finishes and gets its answer).
pub async fn serve(
    listener: TcpListener,
    state: Arc<HttpState>,
    surface: Surface,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) {
    // Below the open-file limit whatever `max_connections` says: a connection flood must not take the
    // descriptors the database and the CRM clients need.
    let cap = fd_limit::connection_cap(state.http.max_connections, fd_limit::raise_to_hard_limit());
    if cap < state.http.max_connections {
        tracing::warn!(
            configured = state.http.max_connections,
            cap,
            "http.max_connections is above what the open-file limit allows; capping it."
        );
    }
    let permits = Arc::new(Semaphore::new(cap));
    let graceful = GracefulShutdown::new();
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(state.http.header_read_timeout)
        .max_buf_size(64 * 1024);
    tokio::pin!(shutdown);
    loop {
        // At the connection cap, stop accepting until one closes: the kernel's backlog queues the rest.
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => p.expect("semaphore is never closed"),
            _ = &mut shutdown => break,
        };
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "Accept failed.");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        let service = service_fn(move |req| {
            let state = state.clone();
            async move { Ok::<_, Infallible>(route(&state, surface, req).await) }
        });
        let conn = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            let _ = conn.await;
            drop(permit);
        });
    }
    drop(listener);
    if tokio::time::timeout(grace, graceful.shutdown()).await.is_err() {
        tracing::warn!(
            ?grace,
            "HTTP connections still open after the grace period; closing them."
        );
    }
}

async fn route(state: &HttpState, surface: Surface, request: Request<Incoming>) -> Response<Body> {
    let path = request.uri().path().to_string();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let metrics_here = match surface {
        Surface::Main => state.http.metrics_listen.is_none(),
        Surface::Metrics => true,
    };
    match (request.method(), segments.as_slice()) {
        (_, ["webhooks", connection]) if surface == Surface::Main => webhooks::handle(state, connection, request).await,
        (_, ["v1", rest @ ..]) if surface == Surface::Main => api::handle(state, rest, request).await,
        (&Method::GET, ["metrics"]) if metrics_here => response::text(
            StatusCode::OK,
            state.metrics.render(),
            "text/plain; version=0.0.4; charset=utf-8",
        ),
        (&Method::GET, ["healthz"]) => response::text(StatusCode::OK, "ok\n", "text/plain"),
        (&Method::GET, ["readyz"]) => readyz(state).await,
        _ => response::error(StatusCode::NOT_FOUND, "not found"),
    }
}

/// Ready when the database answers and the supervisor runs.
async fn readyz(state: &HttpState) -> Response<Body> {
    let db = tokio::time::timeout(Duration::from_secs(2), state.store.ping()).await;
    let supervisor = state.supervisor.get_status() == ActorStatus::Running;
    match (db, supervisor) {
        (Ok(Ok(())), true) => response::text(StatusCode::OK, "ready\n", "text/plain"),
        (Ok(Ok(())), false) => response::text(
            StatusCode::SERVICE_UNAVAILABLE,
            "supervisor not running\n",
            "text/plain",
        ),
        _ => response::text(StatusCode::SERVICE_UNAVAILABLE, "database unavailable\n", "text/plain"),
    }
}
