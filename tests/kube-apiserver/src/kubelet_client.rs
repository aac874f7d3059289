//! The API server's client for kubelets (kube-apiserver's
//! `--kubelet-client-certificate`, `--kubelet-client-key`,
//! `--kubelet-certificate-authority`, `--kubelet-preferred-address-types`),
//! used by the `pods/log` subresource (see [`crate::pod_log`]).
//!
//! As a default kube-apiserver, it presents a client certificate and does
//! not verify the kubelet's serving certificate unless a CA is configured.
//! The certificates here are fixed test material (`certs/`, valid until
//! 2126): a CA, the client certificate it signs for user
//! `kube-apiserver-kubelet-client` in group `system:masters`, and a serving
//! certificate for `127.0.0.1`/`localhost` that test kubelets may present.
//! They protect nothing and must never be trusted outside tests.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use std::net::SocketAddr;
use std::sync::Arc;

/// The CA that signs [`KUBELET_CLIENT_CERT_PEM`] (PEM): what a kubelet
/// (its `--client-ca-file`) trusts to authenticate this API server.
pub const KUBELET_CLIENT_CA_PEM: &str = include_str!("../certs/kubelet-client-ca.crt");
/// The API server's kubelet client certificate (PEM), subject
/// `O=system:masters, CN=kube-apiserver-kubelet-client`, extended key usage
/// clientAuth, signed by [`KUBELET_CLIENT_CA_PEM`].
pub const KUBELET_CLIENT_CERT_PEM: &str = include_str!("../certs/kubelet-client.crt");
/// The private key (PKCS#8, P-256) of [`KUBELET_CLIENT_CERT_PEM`].
pub const KUBELET_CLIENT_KEY_PEM: &str = include_str!("../certs/kubelet-client.key");
/// A kubelet serving certificate (PEM) for `127.0.0.1` and `localhost`,
/// signed by [`KUBELET_CLIENT_CA_PEM`], for test kubelets.
pub const KUBELET_SERVING_CERT_PEM: &str = include_str!("../certs/kubelet-serving.crt");
/// The private key (PKCS#8, P-256) of [`KUBELET_SERVING_CERT_PEM`].
pub const KUBELET_SERVING_KEY_PEM: &str = include_str!("../certs/kubelet-serving.key");
/// The user name (certificate CN) of [`KUBELET_CLIENT_CERT_PEM`].
pub const KUBELET_CLIENT_USER: &str = "kube-apiserver-kubelet-client";
/// The group (certificate O) of [`KUBELET_CLIENT_CERT_PEM`].
pub const KUBELET_CLIENT_GROUP: &str = "system:masters";

/// How the server reaches kubelets.
#[derive(Debug, Clone)]
pub struct KubeletConfig {
    /// Connect here instead of the Node's address (tests: a kubelet on
    /// loopback while the Node reports another IP). A port of 0 keeps the
    /// Node's kubelet port.
    pub address_override: Option<SocketAddr>,
    /// Node address types tried in order
    /// (`--kubelet-preferred-address-types`). The default is kubeadm's
    /// `InternalIP,ExternalIP,Hostname`.
    pub preferred_address_types: Vec<String>,
    /// The port used when a Node reports no
    /// `status.daemonEndpoints.kubeletEndpoint.Port` (`--kubelet-port`).
    pub default_port: u16,
    /// The client certificate chain presented to kubelets (PEM).
    pub client_cert_pem: String,
    /// Its private key (PEM: PKCS#8, SEC1 or PKCS#1).
    pub client_key_pem: String,
    /// The CA that kubelet serving certificates must chain to
    /// (`--kubelet-certificate-authority`); `None`, the default as in
    /// kube-apiserver, does not verify them.
    pub certificate_authority_pem: Option<String>,
}

impl Default for KubeletConfig {
    fn default() -> Self {
        KubeletConfig {
            address_override: None,
            preferred_address_types: ["InternalIP", "ExternalIP", "Hostname"]
                .map(String::from)
                .to_vec(),
            default_port: 10250,
            client_cert_pem: KUBELET_CLIENT_CERT_PEM.to_string(),
            client_key_pem: KUBELET_CLIENT_KEY_PEM.to_string(),
            certificate_authority_pem: None,
        }
    }
}

/// A kubelet client configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KubeletClientError {
    /// A certificate or key is not valid PEM.
    #[error("kubelet client {what}: {why}")]
    Pem {
        /// Which input.
        what: &'static str,
        /// The parser's complaint.
        why: String,
    },
    /// rustls refused the material (e.g. the key does not match).
    #[error("kubelet client TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
}

/// A failed request to a kubelet, worded as Go's `http.Client` reports it
/// (`Get "<url>": dial tcp <addr>: connect: connection refused`), which is
/// what kube-apiserver answers with.
#[derive(Debug, thiserror::Error)]
#[error("Get \"{url}\": {why}")]
pub struct KubeletRequestError {
    /// The URL requested.
    pub url: String,
    /// Why it failed.
    pub why: String,
}

/// The client: TLS configurations built once from a [`KubeletConfig`].
pub struct KubeletClient {
    config: KubeletConfig,
    /// Verifies kubelet certificates when a CA is configured, else not.
    tls: Arc<rustls::ClientConfig>,
    /// Never verifies (`insecureSkipTLSVerifyBackend=true`).
    insecure: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for KubeletClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeletClient")
            .field("address_override", &self.config.address_override)
            .field("verifies_kubelets", &self.verifies_kubelets())
            .finish_non_exhaustive()
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Accepts any kubelet serving certificate (kube-apiserver without
/// `--kubelet-certificate-authority`) but still checks the handshake
/// signatures, so the connection is encrypted to whoever holds that key.
#[derive(Debug)]
struct AnyServerCert(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn certs_of(
    pem: &str,
    what: &'static str,
) -> Result<Vec<CertificateDer<'static>>, KubeletClientError> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| KubeletClientError::Pem {
            what,
            why: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(KubeletClientError::Pem {
            what,
            why: "no CERTIFICATE block".into(),
        });
    }
    Ok(certs)
}

impl KubeletClient {
    /// Builds the TLS configurations; fails on unusable certificates.
    pub fn new(config: KubeletConfig) -> Result<Self, KubeletClientError> {
        let certs = certs_of(&config.client_cert_pem, "certificate")?;
        let key = PrivateKeyDer::from_pem_slice(config.client_key_pem.as_bytes()).map_err(|e| {
            KubeletClientError::Pem {
                what: "key",
                why: e.to_string(),
            }
        })?;
        let build = |verifier: Arc<dyn rustls::client::danger::ServerCertVerifier>| {
            let mut cfg = rustls::ClientConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()?
                .dangerous()
                .with_custom_certificate_verifier(verifier)
                .with_client_auth_cert(certs.clone(), key.clone_key())?;
            // the kubelet API is served over HTTP/1.1 here (no upgrades needed for logs)
            cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
            Ok::<_, KubeletClientError>(Arc::new(cfg))
        };
        let insecure = build(Arc::new(AnyServerCert(provider())))?;
        let tls = match &config.certificate_authority_pem {
            None => insecure.clone(),
            Some(pem) => {
                let mut roots = rustls::RootCertStore::empty();
                for c in certs_of(pem, "certificate authority")? {
                    roots.add(c)?;
                }
                let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider(),
                )
                .build()
                .map_err(|e| KubeletClientError::Pem {
                    what: "certificate authority",
                    why: e.to_string(),
                })?;
                build(verifier)?
            }
        };
        Ok(KubeletClient {
            config,
            tls,
            insecure,
        })
    }

    /// The configuration it was built from.
    pub fn config(&self) -> &KubeletConfig {
        &self.config
    }

    /// Whether kubelet serving certificates are verified.
    pub fn verifies_kubelets(&self) -> bool {
        self.config.certificate_authority_pem.is_some()
    }

    /// `GET https://<host>:<port><path_and_query>` with the client
    /// certificate; answers the response head with its body still
    /// streaming. The connection lives as long as the body (dropping it
    /// closes the connection).
    pub async fn get(
        &self,
        host: &str,
        port: u16,
        path_and_query: &str,
        skip_verify: bool,
    ) -> Result<http::Response<axum::body::Body>, KubeletRequestError> {
        let authority = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        let url = format!("https://{authority}{path_and_query}");
        let fail = |why: String| KubeletRequestError {
            url: url.clone(),
            why,
        };
        let tcp = tokio::net::TcpStream::connect((host, port))
            .await
            .map_err(|e| fail(dial_error(&authority, &e)))?;
        let _ = tcp.set_nodelay(true);
        let server_name = ServerName::try_from(host.to_string())
            .map_err(|e| fail(format!("invalid host {host:?}: {e}")))?;
        let cfg = if skip_verify {
            &self.insecure
        } else {
            &self.tls
        };
        let tls = tokio_rustls::TlsConnector::from(cfg.clone())
            .connect(server_name, tcp)
            .await
            .map_err(|e| fail(chain(&e)))?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
                .await
                .map_err(|e| fail(chain(&e)))?;
        let conn = AbortOnDrop(tokio::spawn(async move {
            let _ = conn.await;
        }));
        let req = http::Request::get(path_and_query)
            .header(http::header::HOST, &authority)
            .header(http::header::USER_AGENT, "koupleless-kube-apiserver")
            .body(axum::body::Body::empty())
            .map_err(|e| fail(chain(&e)))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| fail(chain(&e)))?;
        let (parts, body) = resp.into_parts();
        // the connection task goes with the body: a client that goes away
        // closes the kubelet connection, as kube-apiserver's does
        let stream = futures::StreamExt::map(axum::body::Body::new(body).into_data_stream(), {
            move |chunk| {
                let _conn = &conn;
                chunk
            }
        });
        Ok(http::Response::from_parts(
            parts,
            axum::body::Body::from_stream(stream),
        ))
    }
}

/// An error with its sources (hyper's own text is only "connection error";
/// the TLS alert is in the source).
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cur = s.source();
    }
    out
}

/// Go's wording of a failed dial.
fn dial_error(authority: &str, e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => {
            format!("dial tcp {authority}: connect: connection refused")
        }
        _ => format!("dial tcp {authority}: {e}"),
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
