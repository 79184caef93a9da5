//! The one TLS crypto provider: ring. reqwest is built without a provider of its
//! own (it would link aws-lc beside ring, about 2 MB), so every HTTP client is
//! made after [`install_ring`] set ring as the process default. Connections that do
//! not go through reqwest (ThingsBoard over MQTT) get their rustls config from
//! [`client_config`], with the same trust as the HTTP clients: the system roots
//! through the platform verifier, or only the CAs of `ca_bundle`.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls_platform_verifier::BuilderVerifierExt;

/// Makes ring the process-wide rustls provider; idempotent, and harmless when a
/// provider is already installed (tests may install ring themselves).
pub fn install_ring() {
    // `Err` only means a default exists already; either way one is installed.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A TLS set-up that cannot be used; names the file and what is wrong with it.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct TlsError {
    pub path: String,
    pub message: String,
}

fn tls_error(path: &Path, message: impl std::fmt::Display) -> TlsError {
    TlsError {
        path: path.display().to_string(),
        message: message.to_string(),
    }
}

/// A rustls client config on ring: trusting only the CAs in `ca_bundle` (PEM)
/// when given, else the system's roots; presenting `client_cert` (PEM chain) with
/// `client_key` (PEM; may be in the certificate's file) when given.
pub fn client_config(
    ca_bundle: Option<&Path>,
    client_cert: Option<&Path>,
    client_key: Option<&Path>,
) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    install_ring();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_error(Path::new("TLS"), e))?;
    let builder = match ca_bundle {
        Some(path) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in certificates(path)? {
                roots
                    .add(cert)
                    .map_err(|e| tls_error(path, format!("not a usable CA certificate: {e}")))?;
            }
            builder.with_root_certificates(roots)
        }
        None => builder
            .with_platform_verifier()
            .map_err(|e| tls_error(Path::new("system CA roots"), e))?,
    };
    let config = match client_cert {
        None => builder.with_no_client_auth(),
        Some(cert) => {
            let chain = certificates(cert)?;
            let key_file = client_key.unwrap_or(cert);
            let key = PrivateKeyDer::from_pem_file(key_file)
                .map_err(|e| tls_error(key_file, format!("no PEM private key: {e}")))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| tls_error(cert, format!("client certificate and key: {e}")))?
        }
    };
    Ok(Arc::new(config))
}

/// Every certificate of a PEM file; at least one.
fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|e| tls_error(path, format!("not a PEM certificate file: {e}")))?;
    if certs.is_empty() {
        return Err(tls_error(path, "no certificate in the file"));
    }
    Ok(certs)
}
