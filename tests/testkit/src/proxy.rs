//! A TCP proxy on loopback that a test can cut, to inject network faults between a component
//! and its peer (a controller and its API server, an agent and its broker) without touching
//! either side: [`Link::Pass`] forwards, [`Link::Refuse`] resets every connection (a peer that
//! is down or a firewall that rejects), [`Link::Blackhole`] accepts and forwards nothing (a
//! partition where packets vanish, so clients hit their own timeouts).
//!
//! Changing the mode cuts the connections already open, as a partition does, so a client with
//! a keep-alive connection cannot keep talking through it. [`Proxy::retarget`] plays a
//! Service whose endpoints change (a rolling update moves traffic to another replica).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::copy_bidirectional;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What the proxy does with traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Link {
    /// Forward both ways.
    Pass,
    /// Close every connection at once (new ones too).
    Refuse,
    /// Hold connections open and forward nothing.
    Blackhole,
}

/// A running proxy; stops when dropped.
#[derive(Debug)]
pub struct Proxy {
    addr: SocketAddr,
    mode: watch::Sender<(Link, u64)>,
    target: Arc<std::sync::Mutex<SocketAddr>>,
    accepted: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Proxy {
    /// Listens on a free loopback port and forwards to `target`.
    pub async fn start(target: SocketAddr) -> std::io::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (mode, rx) = watch::channel((Link::Pass, 0u64));
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        let target = Arc::new(std::sync::Mutex::new(target));
        let current = target.clone();
        let task = tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::Relaxed);
                let to = *current.lock().unwrap_or_else(|e| e.into_inner());
                tokio::spawn(serve(conn, to, rx.clone()));
            }
        });
        Ok(Proxy {
            addr,
            mode,
            target,
            accepted,
            task,
        })
    }

    /// The proxy's address, to give the client instead of the target's.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Switches the mode; connections open under the old mode are cut.
    pub fn set(&self, link: Link) {
        self.mode.send_modify(|(l, epoch)| {
            *l = link;
            *epoch += 1;
        });
    }

    /// Forwards new connections to `target` from now on, and cuts those open to the old one.
    pub fn retarget(&self, target: SocketAddr) {
        *self.target.lock().unwrap_or_else(|e| e.into_inner()) = target;
        self.mode.send_modify(|(_, epoch)| *epoch += 1);
    }

    /// Connections accepted so far (a measure of how hard clients retry).
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::Relaxed)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(mut conn: TcpStream, target: SocketAddr, mut mode: watch::Receiver<(Link, u64)>) {
    let (link, epoch) = *mode.borrow_and_update();
    let cut = async move {
        // Any later change of mode cuts this connection.
        while mode.changed().await.is_ok() {
            if mode.borrow().1 != epoch {
                return;
            }
        }
        std::future::pending::<()>().await;
    };
    match link {
        Link::Refuse => {
            // Dropping the stream closes it; with SO_LINGER 0 it would be a reset, but a
            // close is what a dead peer's kernel sends for a half-open connect as well.
        }
        Link::Blackhole => cut.await,
        Link::Pass => {
            let Ok(mut upstream) = TcpStream::connect(target).await else {
                return;
            };
            let _ = conn.set_nodelay(true);
            let _ = upstream.set_nodelay(true);
            tokio::select! {
                _ = copy_bidirectional(&mut conn, &mut upstream) => {}
                () = cut => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn echo_server() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut c, _)) = l.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 64];
                    while let Ok(n) = c.read(&mut buf).await {
                        if n == 0 || c.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        addr
    }

    async fn roundtrip(c: &mut TcpStream) -> bool {
        if c.write_all(b"ping").await.is_err() {
            return false;
        }
        let mut buf = [0u8; 4];
        matches!(
            tokio::time::timeout(
                std::time::Duration::from_millis(300),
                c.read_exact(&mut buf)
            )
            .await,
            Ok(Ok(4))
        ) && &buf == b"ping"
    }

    #[tokio::test]
    async fn pass_refuse_blackhole_and_cut() {
        let p = Proxy::start(echo_server().await).await.unwrap();
        let mut c = TcpStream::connect(p.addr()).await.unwrap();
        assert!(roundtrip(&mut c).await, "passes");
        p.set(Link::Refuse);
        assert!(!roundtrip(&mut c).await, "open connection cut");
        let mut c2 = TcpStream::connect(p.addr()).await.unwrap();
        assert!(!roundtrip(&mut c2).await, "new connection refused");
        p.set(Link::Blackhole);
        let mut c3 = TcpStream::connect(p.addr()).await.unwrap();
        assert!(!roundtrip(&mut c3).await, "blackholed");
        p.set(Link::Pass);
        let mut c4 = TcpStream::connect(p.addr()).await.unwrap();
        assert!(roundtrip(&mut c4).await, "passes again");
        assert_eq!(p.accepted(), 4);
    }

    #[tokio::test]
    async fn retarget_moves_new_connections_and_cuts_old_ones() {
        let first = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let p = Proxy::start(first.local_addr().unwrap()).await.unwrap();
        let _old = TcpStream::connect(p.addr()).await.unwrap();
        let (mut at_first, _) = first.accept().await.unwrap();
        p.retarget(echo_server().await);
        let mut buf = [0u8; 1];
        let read =
            tokio::time::timeout(std::time::Duration::from_secs(5), at_first.read(&mut buf)).await;
        assert!(matches!(read, Ok(Ok(0))), "old connection cut: {read:?}");
        let mut c = TcpStream::connect(p.addr()).await.unwrap();
        assert!(
            roundtrip(&mut c).await,
            "new connection reaches the new target"
        );
    }
}
