//! TLS for native clients of a broker (feature `rustls`; not on wasm32, where the browser does
//! TLS itself).
//!
//! One way to trust a broker, shared by every native peer: a rustls [`ClientConfig`] with the
//! ring crypto provider, the Mozilla roots of `webpki-roots`, and optionally more CA
//! certificates (a self-signed broker, a private CA). The same config serves the WebSocket
//! ([`WebSocketTransport::connect_with_tls`](crate::transport::WebSocketTransport::connect_with_tls))
//! and HTTP (reqwest's `use_preconfigured_tls`), so `wss://` and `https://` trust the same
//! certificates.
//!
//! [`find_rustls_error`] recognises a TLS failure inside an error chain (reqwest, tungstenite and
//! tokio-rustls wrap it in `io::Error`s), so callers can tell "certificate not trusted" from
//! "connection refused".
//!
//! ```
//! # fn demo(ca_pem: &[u8]) -> Result<(), wasimoff_core::tls::TlsError> {
//! let config = wasimoff_core::tls::client_config_from_pem(Some(ca_pem))?;
//! # let _ = config; Ok(()) }
//! ```

use std::sync::{Arc, OnceLock};

pub use rustls;
use rustls::{
    ClientConfig, RootCertStore,
    crypto::CryptoProvider,
    pki_types::{CertificateDer, pem::PemObject},
};

/// Why TLS settings could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// The text holds no PEM certificate.
    #[error("no certificate found (expected PEM text with -----BEGIN CERTIFICATE-----)")]
    NoCertificate,
    /// The PEM text is malformed.
    #[error("invalid PEM: {0}")]
    Pem(String),
    /// A certificate cannot serve as a trusted root.
    #[error("the certificate cannot be trusted as a CA: {0}")]
    BadRoot(String),
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// The crypto provider every wasimoff TLS config uses: ring.
pub fn crypto_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The certificates of a PEM text (other PEM sections, such as keys, are skipped). At least one
/// is required.
///
/// ```
/// use wasimoff_core::tls::{TlsError, certificates_from_pem};
/// assert!(matches!(certificates_from_pem(b"not pem"), Err(TlsError::NoCertificate)));
/// ```
pub fn certificates_from_pem(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certificates = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem(e.to_string()))?;
    if certificates.is_empty() {
        return Err(TlsError::NoCertificate);
    }
    Ok(certificates)
}

/// A client config trusting the webpki roots and `extra_roots`.
pub fn client_config(
    extra_roots: impl IntoIterator<Item = CertificateDer<'static>>,
) -> Result<Arc<ClientConfig>, TlsError> {
    let mut roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    for certificate in extra_roots {
        roots
            .add(certificate)
            .map_err(|e| TlsError::BadRoot(e.to_string()))?;
    }
    let config = ClientConfig::builder_with_provider(crypto_provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The client config with the webpki roots only, built once per process.
pub fn default_client_config() -> Result<Arc<ClientConfig>, TlsError> {
    static DEFAULT: OnceLock<Arc<ClientConfig>> = OnceLock::new();
    if let Some(config) = DEFAULT.get() {
        return Ok(config.clone());
    }
    let config = client_config([])?;
    Ok(DEFAULT.get_or_init(|| config).clone())
}

/// The client config for an optional PEM text of extra CA certificates (one or more): the
/// [default](default_client_config) without one.
pub fn client_config_from_pem(ca_pem: Option<&[u8]>) -> Result<Arc<ClientConfig>, TlsError> {
    match ca_pem {
        Some(pem) => client_config(certificates_from_pem(pem)?),
        None => default_client_config(),
    }
}

/// The rustls error somewhere in `error`'s chain, also inside the `io::Error`s that
/// tokio-rustls, hyper and tungstenite wrap it in (`io::Error::source` skips its inner error).
pub fn find_rustls_error<'a>(
    error: &'a (dyn std::error::Error + 'static),
) -> Option<&'a rustls::Error> {
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && let Some(inner) = io.get_ref()
            && let Some(tls) = find_rustls_error(inner)
        {
            return Some(tls);
        }
        next = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_rustls_errors_inside_io_errors() {
        let tls = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, tls.clone());
        assert_eq!(find_rustls_error(&io), Some(&tls));
        let outer = std::io::Error::other(io);
        assert_eq!(find_rustls_error(&outer), Some(&tls));
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert_eq!(find_rustls_error(&refused), None);
    }

    #[test]
    fn pem_errors_are_told_apart() {
        assert!(matches!(
            certificates_from_pem(b""),
            Err(TlsError::NoCertificate)
        ));
        let broken = b"-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n";
        assert!(matches!(
            certificates_from_pem(broken),
            Err(TlsError::Pem(_))
        ));
        assert!(default_client_config().is_ok());
        assert!(client_config_from_pem(Some(b"nothing")).is_err());
    }
}
