//! TLS: the client listener's rustls configuration (certificate chain and key
//! from files, hot-reloaded, optional client-certificate verification), the
//! upstream client configuration (`https://` stores with a custom CA and an
//! optional client certificate), certificate inspection (subject, notAfter)
//! and the dev PKI behind `purposegate certs dev`.
//!
//! Only TLS 1.2 and 1.3 exist here (rustls implements nothing older), with
//! the aws-lc-rs provider chosen explicitly so that another crate enabling a
//! second provider cannot change which one is used.

pub mod client;
pub mod dev;
pub mod https_client;
pub mod pem;
pub mod server;
pub mod x509;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::config::ConfigError;

pub use server::ServerTls;

/// The verified client certificate of a TLS connection, as recorded in the
/// audit log (`client_cert_subject`). The server inserts it as a request
/// extension on every request of that connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerSubject(pub Arc<str>);

/// Why certificates, keys or a TLS configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {message}", path.display())]
    Pem { path: PathBuf, message: String },
    #[error("{}: {message}", path.display())]
    Invalid { path: PathBuf, message: String },
}

impl TlsError {
    /// The file the error is about.
    pub fn path(&self) -> &Path {
        match self {
            TlsError::Read { path, .. }
            | TlsError::Pem { path, .. }
            | TlsError::Invalid { path, .. } => path,
        }
    }

    pub(crate) fn invalid(path: &Path, message: impl Into<String>) -> TlsError {
        TlsError::Invalid {
            path: path.to_path_buf(),
            message: message.into(),
        }
    }
}

impl From<TlsError> for ConfigError {
    fn from(e: TlsError) -> ConfigError {
        let message = match &e {
            TlsError::Read { source, .. } => format!("cannot read: {source}"),
            TlsError::Pem { message, .. } | TlsError::Invalid { message, .. } => message.clone(),
        };
        ConfigError::new(e.path(), None, message)
    }
}

/// The crypto provider every TLS configuration here is built with.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// The protocol versions offered and accepted: TLS 1.3 and 1.2, nothing older.
pub const VERSIONS: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

/// Checks that every TLS file the config names loads (for `policy check`
/// and start-up): the listener's pair and CA, and each upstream's.
pub fn check(config: &crate::config::Config) -> Result<(), ConfigError> {
    if let Some(tls) = &config.tls {
        server::build(tls)?;
    }
    for up in config.upstreams.values() {
        if up.url.scheme_str() == Some("https") {
            client::upstream_config(&up.tls)?;
        }
    }
    Ok(())
}
