//! The HTTP clients connections send with: one per distinct (connect timeout, request timeout), shared by every
//! connection with those settings in the process. A `reqwest::Client` holds its own connection pool, resolver and
//! TLS configuration (the root store included), which at thousands of connections costs far more than the
//! connections themselves; shared, connections to the same CRM host also reuse each other's idle sockets.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

type Key = (Duration, Duration);

fn clients() -> &'static Mutex<HashMap<Key, reqwest::Client>> {
    static CLIENTS: OnceLock<Mutex<HashMap<Key, reqwest::Client>>> = OnceLock::new();
    CLIENTS.get_or_init(Default::default)
}

/// The shared client for these timeouts, built on first use.
pub fn shared(connect_timeout: Duration, request_timeout: Duration) -> Result<reqwest::Client, reqwest::Error> {
    let mut all = clients().lock().unwrap_or_else(|p| p.into_inner());
    if let Some(client) = all.get(&(connect_timeout, request_timeout)) {
        return Ok(client.clone());
    }
    let client = reqwest::Client::builder()
        .connect_timeout(connect_timeout)
        .timeout(request_timeout)
        .pool_idle_timeout(Duration::from_secs(60))
        .tcp_nodelay(true)
        .user_agent(concat!("crmsyncd/", env!("CARGO_PKG_VERSION")))
        .build()?;
    all.insert((connect_timeout, request_timeout), client.clone());
    Ok(client)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// A keep-alive HTTP/1.1 server that answers every request 200 and counts the TCP connections it accepted.
    async fn counting_server() -> (String, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    loop {
                        match socket.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(_) => {
                                let answer = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                                if socket.write_all(answer.as_bytes()).await.is_err() {
                                    return;
                                }
                            }
                        }
                    }
                });
            }
        });
        (url, accepted)
    }

    #[tokio::test]
    async fn connections_with_the_same_timeouts_share_one_client_and_its_sockets() {
        let (url, accepted) = counting_server().await;
        // Timeouts no other test uses, so this key's client is this test's own.
        let first = shared(Duration::from_millis(4_321), Duration::from_millis(12_345)).unwrap();
        let second = shared(Duration::from_millis(4_321), Duration::from_millis(12_345)).unwrap();
        for client in [&first, &second, &first, &second] {
            let answer = client.get(&url).send().await.unwrap();
            assert_eq!(answer.text().await.unwrap(), "ok");
        }
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            1,
            "both handles reuse one pooled socket"
        );
        let other = shared(Duration::from_millis(4_321), Duration::from_millis(12_346)).unwrap();
        other.get(&url).send().await.unwrap();
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            2,
            "other timeouts get a client of their own"
        );
    }
}
