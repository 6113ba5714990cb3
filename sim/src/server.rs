//! The HTTP scaffolding every simulator shares: a hyper 1 server on a local port that buffers each request,
//! hands it to the simulator's [`Handler`], and applies the response's injected delay, truncation or reset.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A fully buffered request.
#[derive(Debug, Clone)]
pub struct SimRequest {
    pub method: Method,
    pub uri: Uri,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// When the request's head arrived, before the body was read.
    pub received_at: Instant,
}

impl SimRequest {
    /// The request's path without the query.
    pub fn path(&self) -> &str {
        self.uri.path()
    }

    /// One query parameter, percent-decoded.
    pub fn query_param(&self, name: &str) -> Option<String> {
        let query = self.uri.query()?;
        url::form_urlencoded::parse(query.as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// What a simulator answers, plus the fault (if any) to apply on the way out.
#[derive(Debug, Clone)]
pub struct SimResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// Wait this long before answering.
    pub delay: Option<Duration>,
    /// Send only the first half of the body (a truncated JSON document).
    pub truncate: bool,
    /// Close the connection without answering.
    pub reset: bool,
}

impl SimResponse {
    pub fn new(status: StatusCode, body: impl Into<Bytes>) -> Self {
        Self {
            status,
            headers: HeaderMap::new(),
            body: body.into(),
            delay: None,
            truncate: false,
            reset: false,
        }
    }

    /// A JSON answer.
    pub fn json(status: StatusCode, value: &serde_json::Value) -> Self {
        Self::new(status, serde_json::to_vec(value).expect("JSON values serialise"))
            .with_header("content-type", "application/json;charset=utf-8")
    }

    pub fn with_header(mut self, name: &'static str, value: impl AsRef<str>) -> Self {
        if let Ok(v) = HeaderValue::from_str(value.as_ref()) {
            self.headers.insert(name, v);
        }
        self
    }
}

/// A simulator's request handler.
pub trait Handler: Send + Sync + 'static {
    fn handle(&self, request: SimRequest) -> impl Future<Output = SimResponse> + Send;
}

/// A running simulator server; dropping it does not stop it, [`Running::shutdown`] does.
#[derive(Debug)]
pub struct Running {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Running {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting connections and closes the open ones.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

#[derive(Debug)]
struct Reset;

impl std::fmt::Display for Reset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("simulated connection reset")
    }
}

impl std::error::Error for Reset {}

/// Serves `handler` on `addr` (use port 0 for a free port).
pub async fn spawn<H: Handler>(addr: SocketAddr, handler: Arc<H>) -> std::io::Result<Running> {
    let listener = TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let (stop, mut stopped) = watch::channel(false);
    let task = tokio::spawn(async move {
        let mut connections = tokio::task::JoinSet::new();
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                _ = stopped.changed() => break,
            };
            let Ok((stream, _)) = accepted else { continue };
            let _ = stream.set_nodelay(true);
            let handler = handler.clone();
            let mut stopped = stopped.clone();
            connections.spawn(async move {
                let service = service_fn(move |req| serve_one(handler.clone(), req));
                let conn = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
                tokio::pin!(conn);
                tokio::select! {
                    _ = conn.as_mut() => {}
                    _ = stopped.changed() => conn.as_mut().graceful_shutdown(),
                }
            });
            while connections.try_join_next().is_some() {}
        }
        connections.abort_all();
    });
    Ok(Running { addr, stop, task })
}

async fn serve_one<H: Handler>(handler: Arc<H>, req: http::Request<Incoming>) -> Result<Response<Full<Bytes>>, Reset> {
    let received_at = Instant::now();
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => return Err(Reset),
    };
    let request = SimRequest {
        method: parts.method,
        uri: parts.uri,
        headers: parts.headers,
        body,
        received_at,
    };
    let answer = handler.handle(request).await;
    if let Some(delay) = answer.delay {
        tokio::time::sleep(delay).await;
    }
    if answer.reset {
        return Err(Reset);
    }
    let body = if answer.truncate {
        answer.body.slice(0..answer.body.len() / 2)
    } else {
        answer.body
    };
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = answer.status;
    *response.headers_mut() = answer.headers;
    Ok(response)
}

/// A handler that never fails, for the sake of tests of the scaffolding itself.
#[doc(hidden)]
pub struct Echo;

impl Handler for Echo {
    async fn handle(&self, request: SimRequest) -> SimResponse {
        SimResponse::new(StatusCode::OK, request.body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Faulty;

    impl Handler for Faulty {
        async fn handle(&self, request: SimRequest) -> SimResponse {
            let mut answer = SimResponse::new(StatusCode::OK, "0123456789");
            match request.path() {
                "/truncate" => answer.truncate = true,
                "/reset" => answer.reset = true,
                _ => {}
            }
            answer
        }
    }

    #[tokio::test]
    async fn echo_round_trip() {
        let running = spawn(([127, 0, 0, 1], 0).into(), Arc::new(Echo)).await.unwrap();
        let body = reqwest::Client::new()
            .post(format!("{}/x", running.base_url()))
            .body("hello")
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(body, "hello");
        running.shutdown().await;
    }

    #[tokio::test]
    async fn truncation_and_reset_are_applied() {
        let running = spawn(([127, 0, 0, 1], 0).into(), Arc::new(Faulty)).await.unwrap();
        let client = reqwest::Client::new();
        let half = client
            .get(format!("{}/truncate", running.base_url()))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(half, "01234");
        let reset = client.get(format!("{}/reset", running.base_url())).send().await;
        assert!(reset.is_err(), "a reset connection gives the client an error");
        running.shutdown().await;
    }
}
