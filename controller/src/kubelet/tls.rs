//! The kubelet API's TLS: a serving certificate from files or generated at start, and, when a
//! client CA is configured, client certificates verified against it (optional, so a caller
//! with a bearer token can still connect and be reviewed).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// Why the TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A file holds no PEM block of the expected kind.
    #[error("{path} holds no PEM {what}")]
    NoPem {
        /// The file.
        path: PathBuf,
        /// What was looked for.
        what: &'static str,
    },
    /// Only one of the certificate and key files was given.
    #[error("KUBELET_TLS_CERT_FILE and KUBELET_TLS_KEY_FILE must be given together")]
    Pair,
    /// The certificate could not be generated.
    #[error("generating the serving certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// rustls refused the material.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// The client CA could not be used.
    #[error("client CA: {0}")]
    ClientCa(#[from] rustls::server::VerifierBuilderError),
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut pem.as_slice())
        .filter_map(Result::ok)
        .collect();
    if certs.is_empty() {
        return Err(TlsError::NoPem {
            path: path.to_path_buf(),
            what: "CERTIFICATE",
        });
    }
    Ok(certs)
}

/// Builds the server configuration. `names` go into a generated certificate's subject
/// alternative names (used only when no files are given).
pub fn server_config(
    cert_key: Option<(&Path, &Path)>,
    client_ca: Option<&Path>,
    names: Vec<String>,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let (chain, key) = match cert_key {
        Some((cert, key)) => {
            let pem = read(key)?;
            let key = rustls_pemfile::private_key(&mut pem.as_slice())
                .ok()
                .flatten()
                .ok_or_else(|| TlsError::NoPem {
                    path: key.to_path_buf(),
                    what: "PRIVATE KEY",
                })?;
            (certs(cert)?, key)
        }
        None => {
            let generated = rcgen::generate_simple_self_signed(names)?;
            let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
                generated.signing_key.serialize_der(),
            ));
            (vec![generated.cert.der().clone()], key)
        }
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let builder = match client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in certs(ca)? {
                roots.add(c)?;
            }
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                    .allow_unauthenticated()
                    .build()?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut cfg = builder.with_single_cert(chain, key)?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_files_generated_and_with_a_client_ca() {
        let dir = tempfile::tempdir().unwrap();
        let made = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
        std::fs::write(&cert, made.cert.pem()).unwrap();
        std::fs::write(&key, made.signing_key.serialize_pem()).unwrap();
        assert!(server_config(Some((&cert, &key)), None, vec![]).is_ok());
        assert!(server_config(None, Some(&cert), vec!["localhost".into()]).is_ok());
        // Key and certificate swapped, a missing file, a file without PEM.
        assert!(matches!(
            server_config(Some((&key, &cert)), None, vec![]),
            Err(TlsError::NoPem { .. })
        ));
        let missing = dir.path().join("missing.crt");
        assert!(matches!(
            server_config(None, Some(&missing), vec![]),
            Err(TlsError::Read { .. })
        ));
        let junk = dir.path().join("junk.crt");
        std::fs::write(&junk, "not pem").unwrap();
        assert!(matches!(
            server_config(None, Some(&junk), vec![]),
            Err(TlsError::NoPem { .. })
        ));
    }
}
