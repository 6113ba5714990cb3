//! The ceilings a benchmark is measured against, in the same run: a raw hyper server that answers 200 to
//! anything (what the machine's HTTP stack can do), and a bare group-commit server that only makes each event
//! durable (what the database can do): one writer task takes every event waiting and commits them in one
//! transaction, and each request is answered once its event is committed.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use crmsyncd::store::{NewWebhookEvent, Store};
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// Most events one commit takes.
const MAX_BATCH: usize = 1024;

type Reply = oneshot::Sender<bool>;

/// Serves `listener` with `answer` (status, body) for every request until the task is aborted.
fn serve<F, Fut>(listener: TcpListener, answer: F) -> JoinHandle<()>
where
    F: Fn(http::Request<hyper::body::Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = http::Response<Full<Bytes>>> + Send + 'static,
{
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let answer = answer.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request| {
                    let answer = answer.clone();
                    async move { Ok::<_, Infallible>(answer(request).await) }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}

fn status(code: http::StatusCode) -> http::Response<Full<Bytes>> {
    let mut response = http::Response::new(Full::new(Bytes::from_static(b"{}")));
    *response.status_mut() = code;
    response
}

/// Answers 200 after reading the body, and does nothing else.
pub fn raw(listener: TcpListener) -> JoinHandle<()> {
    serve(listener, |request: http::Request<hyper::body::Incoming>| async move {
        let _ = request.into_body().collect().await;
        status(http::StatusCode::OK)
    })
}

/// Commits each request's body as one webhook event (the `x-bench-event-id` header is its id), batching whatever is
/// waiting into one transaction, and answers 200 only after the commit.
pub fn group_commit(listener: TcpListener, store: Store) -> (JoinHandle<()>, JoinHandle<()>) {
    let (tx, mut rx) = mpsc::channel::<(NewWebhookEvent, Reply)>(4 * MAX_BATCH);
    let writer = tokio::spawn(async move {
        let mut batch: Vec<(NewWebhookEvent, Reply)> = Vec::with_capacity(MAX_BATCH);
        while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
            let (events, replies): (Vec<_>, Vec<_>) = std::mem::take(&mut batch).into_iter().unzip();
            let committed = store.insert_webhook_events("bench", &events).await.is_ok();
            for reply in replies {
                let _ = reply.send(committed);
            }
        }
    });
    let tx = Arc::new(tx);
    let server = serve(listener, move |request: http::Request<hyper::body::Incoming>| {
        let tx = tx.clone();
        async move {
            let event_id = request
                .headers()
                .get("x-bench-event-id")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            let Ok(body) = request.into_body().collect().await else {
                return status(http::StatusCode::BAD_REQUEST);
            };
            let Ok(body) = serde_json::from_slice(&body.to_bytes()) else {
                return status(http::StatusCode::BAD_REQUEST);
            };
            let event = NewWebhookEvent {
                event_id,
                object: None,
                headers: serde_json::json!({}),
                body,
            };
            let (reply, committed) = oneshot::channel();
            if tx.send((event, reply)).await.is_err() {
                return status(http::StatusCode::SERVICE_UNAVAILABLE);
            }
            match committed.await {
                Ok(true) => status(http::StatusCode::OK),
                _ => status(http::StatusCode::SERVICE_UNAVAILABLE),
            }
        }
    });
    (server, writer)
}
