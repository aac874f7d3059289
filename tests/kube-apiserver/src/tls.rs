//! HTTPS for the test server when RBAC is enforced: kubectl (client-go's
//! kubeconfig loader) sends a user's credentials only over TLS, so a server
//! that authenticates must speak it. The certificate is a fixed test
//! certificate (`certs/`, for `127.0.0.1` and `localhost`, signed by a test
//! CA valid until 2126): it protects nothing and must never be trusted
//! outside tests.

use std::sync::Arc;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// The test CA's certificate (PEM), for clients and kubeconfigs.
pub const CA_PEM: &str = include_str!("../certs/ca.crt");
const SERVER_CERT_PEM: &str = include_str!("../certs/server.crt");
const SERVER_KEY_PEM: &str = include_str!("../certs/server.key");

/// The DER bytes of the first certificate in a PEM text.
pub fn pem_to_der(pem: &str) -> Vec<u8> {
    use base64::Engine;
    let b64: String = pem
        .lines()
        .skip_while(|l| !l.starts_with("-----BEGIN"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .expect("the test certificates are valid PEM")
}

fn acceptor() -> TlsAcceptor {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    crate::install_crypto_provider();
    let certs = vec![CertificateDer::from(pem_to_der(SERVER_CERT_PEM))];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pem_to_der(SERVER_KEY_PEM)));
    let mut cfg = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("the test certificate and key match");
    // HTTP/1.1 only: the router is served by axum without its http2 feature
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    TlsAcceptor::from(Arc::new(cfg))
}

/// An axum listener that completes TLS handshakes off the accept path (a
/// slow or failing handshake delays no other client).
pub struct TlsListener {
    rx: tokio::sync::mpsc::Receiver<(TlsStream<TcpStream>, std::net::SocketAddr)>,
    local: std::net::SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl TlsListener {
    /// Serves TLS on `tcp`.
    pub fn new(tcp: TcpListener) -> std::io::Result<Self> {
        let local = tcp.local_addr()?;
        let acceptor = acceptor();
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let task = tokio::spawn(async move {
            loop {
                let Ok((sock, addr)) = tcp.accept().await else {
                    // out of descriptors and the like: try again shortly
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                };
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    // a client that fails the handshake is just dropped
                    if let Ok(tls) = acceptor.accept(sock).await {
                        let _ = tx.send((tls, addr)).await;
                    }
                });
            }
        });
        Ok(TlsListener { rx, local, task })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(c) => c,
            // the accept task only ends when aborted, with the listener
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}
