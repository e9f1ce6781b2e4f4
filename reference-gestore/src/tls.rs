//! TLS material for every listener and for outbound connections (RFC 6109 §5.3: user↔provider and
//! provider↔provider traffic runs over TLS). rustls with the ring provider, chosen explicitly so the
//! result never depends on which crypto features other crates enable.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use std::path::Path;
use std::sync::Arc;

/// A TLS setup error, naming what (or which file) is wrong.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {message}")]
pub struct TlsError {
    /// The file or the item concerned, e.g. `certificate chain PEM` or a path.
    pub what: String,
    /// What is wrong with it.
    pub message: String,
}

impl TlsError {
    fn new(what: impl Into<String>, message: impl std::fmt::Display) -> Self {
        TlsError {
            what: what.into(),
            message: message.to_string(),
        }
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Every `CERTIFICATE` section of a PEM text, in order; an error when there is none.
pub fn certificates_from_pem(
    what: &str,
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::new(what, format!("unreadable PEM: {e}")))?;
    if certs.is_empty() {
        return Err(TlsError::new(what, "no CERTIFICATE section found"));
    }
    Ok(certs)
}

/// A server configuration from a PEM certificate chain (leaf first) and a PEM private key
/// (PKCS#8, PKCS#1 or SEC1).
pub fn server_config_from_pem(
    cert_chain_pem: &[u8],
    key_pem: &[u8],
) -> Result<Arc<ServerConfig>, TlsError> {
    server_config_named(
        "certificate chain PEM",
        "private key PEM",
        cert_chain_pem,
        key_pem,
    )
}

/// [`server_config_from_pem`] reading the two files; errors name the file.
pub fn server_config_from_files(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let cert_name = cert.display().to_string();
    let key_name = key.display().to_string();
    let cert_pem = std::fs::read(cert).map_err(|e| TlsError::new(&cert_name, e))?;
    let key_pem = std::fs::read(key).map_err(|e| TlsError::new(&key_name, e))?;
    server_config_named(&cert_name, &key_name, &cert_pem, &key_pem)
}

fn server_config_named(
    cert_name: &str,
    key_name: &str,
    cert_chain_pem: &[u8],
    key_pem: &[u8],
) -> Result<Arc<ServerConfig>, TlsError> {
    let certs = certificates_from_pem(cert_name, cert_chain_pem)?;
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| {
        TlsError::new(
            key_name,
            format!("no usable private key (PKCS#8, PKCS#1 or SEC1 PEM): {e}"),
        )
    })?;
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::new("TLS protocol versions", e))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| {
            TlsError::new(
                format!("{cert_name} with {key_name}"),
                format!("certificate and key do not form a usable pair: {e}"),
            )
        })?;
    Ok(Arc::new(config))
}

/// A root store holding every certificate of a PEM text (trust anchors).
pub fn root_store_from_pem(pem: &[u8]) -> Result<RootCertStore, TlsError> {
    root_store_named("trust anchors PEM", pem)
}

/// A root store holding every certificate of the given PEM files; errors name the file.
pub fn root_store_from_files<P: AsRef<Path>>(files: &[P]) -> Result<RootCertStore, TlsError> {
    let mut store = RootCertStore::empty();
    for file in files {
        let name = file.as_ref().display().to_string();
        let pem = std::fs::read(file).map_err(|e| TlsError::new(&name, e))?;
        let more = root_store_named(&name, &pem)?;
        store.roots.extend(more.roots);
    }
    Ok(store)
}

fn root_store_named(what: &str, pem: &[u8]) -> Result<RootCertStore, TlsError> {
    let mut store = RootCertStore::empty();
    for (n, cert) in certificates_from_pem(what, pem)?.into_iter().enumerate() {
        store.add(cert).map_err(|e| {
            TlsError::new(
                what,
                format!("certificate #{} is not a usable trust anchor: {e}", n + 1),
            )
        })?;
    }
    Ok(store)
}

/// A client configuration trusting exactly `roots` (no client certificate).
pub fn client_config(roots: RootCertStore) -> Arc<ClientConfig> {
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        // The ring provider supports the safe default versions; this cannot fail.
        .expect("ring supports TLS 1.2 and 1.3")
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_pem_is_named() {
        let err = server_config_from_pem(b"", b"").unwrap_err();
        assert_eq!(err.what, "certificate chain PEM");
        assert!(err.message.contains("no CERTIFICATE"), "{err}");
        let err = root_store_from_pem(b"garbage").unwrap_err();
        assert!(err.to_string().starts_with("trust anchors PEM:"), "{err}");
    }

    #[test]
    fn missing_file_is_named() {
        let err =
            server_config_from_files(Path::new("/nonexistent/c.pem"), Path::new("/k")).unwrap_err();
        assert_eq!(err.what, "/nonexistent/c.pem");
    }
}
