//! A TCP proxy between the daemon and PostgreSQL that can be cut: every open socket closed, new connections
//! refused. This is how the outage harness takes the database away without stopping the machine's server.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::task::{AbortHandle, JoinHandle};

/// A proxy from a local port to `upstream`.
pub struct CuttableProxy {
    addr: SocketAddr,
    upstream: SocketAddr,
    inner: Arc<Mutex<Inner>>,
}

struct Inner {
    accept: Option<JoinHandle<()>>,
    sockets: Vec<AbortHandle>,
}

impl CuttableProxy {
    /// Listens on a free local port and forwards to `upstream`.
    pub async fn start(upstream: SocketAddr) -> std::io::Result<CuttableProxy> {
        let listener = listen(([127, 0, 0, 1], 0).into())?;
        let addr = listener.local_addr()?;
        let proxy = CuttableProxy {
            addr,
            upstream,
            inner: Arc::new(Mutex::new(Inner {
                accept: None,
                sockets: Vec::new(),
            })),
        };
        proxy.serve(listener);
        Ok(proxy)
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Closes every proxied connection and the listener, so new connections are refused.
    pub fn cut(&self) {
        let mut inner = self.inner.lock().unwrap();
        if let Some(accept) = inner.accept.take() {
            accept.abort();
        }
        for socket in inner.sockets.drain(..) {
            socket.abort();
        }
    }

    /// Listens again on the same port.
    pub async fn restore(&self) -> std::io::Result<()> {
        // The old listener is dropped when its aborted task finishes; retry the bind briefly until it has.
        let mut tries = 0;
        let listener = loop {
            match listen(self.addr) {
                Ok(l) => break l,
                Err(e) if tries > 50 => return Err(e),
                Err(_) => {
                    tries += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
            }
        };
        self.serve(listener);
        Ok(())
    }

    fn serve(&self, listener: TcpListener) {
        let inner = self.inner.clone();
        let upstream = self.upstream;
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let task = tokio::spawn(pipe(client, upstream));
                let mut inner = inner.lock().unwrap();
                inner.sockets.retain(|s| !s.is_finished());
                inner.sockets.push(task.abort_handle());
            }
        });
        self.inner.lock().unwrap().accept = Some(accept);
    }
}

impl Drop for CuttableProxy {
    fn drop(&mut self) {
        self.cut();
    }
}

fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(128)
}

async fn pipe(mut client: TcpStream, upstream: SocketAddr) {
    let Ok(mut server) = TcpStream::connect(upstream).await else {
        return;
    };
    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// An echo server as the upstream.
    async fn echo() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        addr
    }

    async fn round_trip(stream: &mut TcpStream) -> std::io::Result<()> {
        stream.write_all(b"ping").await?;
        let mut buf = [0; 4];
        stream.read_exact(&mut buf).await?;
        assert_eq!(&buf, b"ping");
        Ok(())
    }

    #[tokio::test]
    async fn cut_closes_open_sockets_and_refuses_new_ones_until_restored() {
        let proxy = CuttableProxy::start(echo().await).await.unwrap();
        let mut open = TcpStream::connect(proxy.addr()).await.unwrap();
        round_trip(&mut open).await.unwrap();

        proxy.cut();
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(round_trip(&mut open).await.is_err(), "the open socket was closed");
        assert!(
            TcpStream::connect(proxy.addr()).await.is_err(),
            "new connections are refused"
        );

        proxy.restore().await.unwrap();
        let mut again = TcpStream::connect(proxy.addr()).await.unwrap();
        round_trip(&mut again).await.unwrap();
    }
}
