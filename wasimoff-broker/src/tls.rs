//! [`TlsConfig`]: how [`Broker::spawn`](crate::Broker::spawn) terminates TLS itself (rustls
//! with the ring provider), and turning PEM files into a rustls `ServerConfig` with errors that
//! name the file and what is wrong with it.
//!
//! The handshake runs in the server loop ([`crate::server`]), per connection and bounded by
//! [`Limits::tls_handshake_timeout`](crate::Limits::tls_handshake_timeout).

use std::{borrow::Cow, path::PathBuf, sync::Arc};

use rustls::{
    ServerConfig,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
};

use crate::BrokerError;

/// How the broker's own server speaks TLS (`https://` and `wss://` on its port). Only
/// [`Broker::spawn`](crate::Broker::spawn) uses it; a router mounted in your own server is
/// served with your server's TLS.
///
/// ```no_run
/// # async fn run() -> Result<(), wasimoff_broker::BrokerError> {
/// use wasimoff_broker::{Broker, TlsConfig};
/// let broker = Broker::builder()
///     .tls(TlsConfig::files("/etc/wasimoff/cert.pem", "/etc/wasimoff/key.pem"))
///     .build()
///     .await?; // a missing file or a key that does not fit fails here
/// let handle = broker.spawn().await?;
/// println!("serving {}", handle.url());
/// # Ok(()) }
/// ```
#[derive(Clone)]
#[non_exhaustive]
pub enum TlsConfig {
    /// PEM files, read when the broker is built: the certificate chain (the broker's own
    /// certificate first, then intermediates) and its private key (PKCS#8, PKCS#1 or SEC1).
    Files {
        /// The certificate chain.
        cert: PathBuf,
        /// The private key.
        key: PathBuf,
    },
    /// The same as PEM text.
    Pem {
        /// The certificate chain.
        cert: Vec<u8>,
        /// The private key.
        key: Vec<u8>,
    },
    /// A rustls config of your own (client certificates, certificate rotation through a
    /// resolver, session settings). The broker speaks HTTP/1.1 only: its ALPN protocols should
    /// be empty or include `http/1.1`. Use [`wasimoff_broker::rustls`](crate::rustls), the
    /// version the broker is built with.
    Rustls(Arc<ServerConfig>),
}

impl TlsConfig {
    /// PEM files of the certificate chain and its key.
    pub fn files(cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        TlsConfig::Files {
            cert: cert.into(),
            key: key.into(),
        }
    }

    /// PEM text of the certificate chain and its key.
    pub fn pem(cert: impl Into<Vec<u8>>, key: impl Into<Vec<u8>>) -> Self {
        TlsConfig::Pem {
            cert: cert.into(),
            key: key.into(),
        }
    }

    /// Reads and checks the certificate and key: the server config for the accept loop.
    pub(crate) async fn server_config(&self) -> Result<Arc<ServerConfig>, BrokerError> {
        let (cert, key, cert_name, key_name) = match self {
            TlsConfig::Rustls(config) => return Ok(config.clone()),
            TlsConfig::Files { cert, key } => (
                Cow::Owned(read(cert, "certificate").await?),
                Cow::Owned(read(key, "private key").await?),
                format!("the certificate file {}", cert.display()),
                format!("the key file {}", key.display()),
            ),
            TlsConfig::Pem { cert, key } => (
                Cow::Borrowed(cert.as_slice()),
                Cow::Borrowed(key.as_slice()),
                "the certificate PEM".to_owned(),
                "the key PEM".to_owned(),
            ),
        };
        let chain = CertificateDer::pem_slice_iter(&cert)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| BrokerError::Tls(format!("{cert_name} is not valid PEM: {e}")))?;
        if chain.is_empty() {
            return Err(BrokerError::Tls(format!(
                "{cert_name} holds no certificate (expected PEM: -----BEGIN CERTIFICATE-----)"
            )));
        }
        let key = PrivateKeyDer::from_pem_slice(&key).map_err(|e| {
            BrokerError::Tls(format!(
                "{key_name} holds no usable private key (expected PEM: PRIVATE KEY, RSA \
                 PRIVATE KEY or EC PRIVATE KEY): {e}"
            ))
        })?;
        let mut config =
            ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .map_err(|e| BrokerError::Tls(e.to_string()))?
                .with_no_client_auth()
                .with_single_cert(chain, key)
                .map_err(|e| {
                    BrokerError::Tls(format!(
                        "{cert_name} and {key_name} cannot be used together: {e}"
                    ))
                })?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

async fn read(path: &std::path::Path, what: &str) -> Result<Vec<u8>, BrokerError> {
    tokio::fs::read(path).await.map_err(|e| {
        BrokerError::Tls(format!(
            "cannot read the TLS {what} {}: {e}",
            path.display()
        ))
    })
}

impl From<Arc<ServerConfig>> for TlsConfig {
    fn from(config: Arc<ServerConfig>) -> Self {
        TlsConfig::Rustls(config)
    }
}

impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TlsConfig::Files { cert, key } => f
                .debug_struct("Files")
                .field("cert", cert)
                .field("key", key)
                .finish(),
            // Never the key.
            TlsConfig::Pem { .. } => f.debug_struct("Pem").finish_non_exhaustive(),
            TlsConfig::Rustls(_) => f.debug_struct("Rustls").finish_non_exhaustive(),
        }
    }
}

impl PartialEq for TlsConfig {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (TlsConfig::Files { cert, key }, TlsConfig::Files { cert: c, key: k }) => {
                cert == c && key == k
            }
            (TlsConfig::Pem { cert, key }, TlsConfig::Pem { cert: c, key: k }) => {
                cert == c && key == k
            }
            (TlsConfig::Rustls(a), TlsConfig::Rustls(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

impl Eq for TlsConfig {}

#[cfg(test)]
mod tests {
    use super::*;

    fn self_signed() -> (String, String) {
        let key = rcgen::generate_simple_self_signed(["localhost".into()]).unwrap();
        (key.cert.pem(), key.signing_key.serialize_pem())
    }

    async fn error(config: TlsConfig) -> String {
        config.server_config().await.unwrap_err().to_string()
    }

    #[tokio::test]
    async fn a_certificate_and_its_key_make_a_config() {
        let (cert, key) = self_signed();
        let config = TlsConfig::pem(cert, key).server_config().await.unwrap();
        assert_eq!(config.alpn_protocols, vec![b"http/1.1".to_vec()]);
    }

    #[tokio::test]
    async fn bad_files_are_named_with_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = self_signed();
        let (other_cert, _) = self_signed();
        let write = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            path
        };
        let (cert_file, key_file) = (write("cert.pem", &cert), write("key.pem", &key));

        let missing = dir.path().join("missing.pem");
        let e = error(TlsConfig::files(&missing, &key_file)).await;
        assert!(
            e.contains("cannot read the TLS certificate") && e.contains("missing.pem"),
            "{e}"
        );

        let e = error(TlsConfig::files(write("garbage.pem", "hello"), &key_file)).await;
        assert!(e.contains("garbage.pem holds no certificate"), "{e}");

        // The key and the certificate swapped.
        let e = error(TlsConfig::files(&key_file, &cert_file)).await;
        assert!(e.contains("holds no certificate"), "{e}");
        let e = error(TlsConfig::files(&cert_file, &cert_file)).await;
        assert!(e.contains("no usable private key"), "{e}");

        let e = error(TlsConfig::files(write("other.pem", &other_cert), &key_file)).await;
        assert!(e.contains("cannot be used together"), "{e}");
    }

    #[test]
    fn debug_never_shows_the_key() {
        let shown = format!("{:?}", TlsConfig::pem("CERT", "SECRET KEY"));
        assert!(!shown.contains("SECRET"), "{shown}");
    }
}
