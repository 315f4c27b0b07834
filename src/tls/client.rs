//! TLS to `https://` upstreams: which CAs are trusted (the configured
//! `ca_file`, else the public web PKI roots) and the optional client
//! certificate presented to the store.

use std::sync::Arc;

use rustls::{ClientConfig, RootCertStore};

use super::{pem, TlsError};
use crate::config::UpstreamTlsConfig;

/// The rustls client configuration for one upstream (blocking reads). ALPN
/// is left to the HTTP connector.
pub fn upstream_config(settings: &UpstreamTlsConfig) -> Result<ClientConfig, TlsError> {
    let roots = match &settings.ca_file {
        Some(ca) => pem::roots(ca)?,
        None => Arc::new(RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        }),
    };
    let builder = ClientConfig::builder_with_provider(super::provider())
        .with_protocol_versions(super::VERSIONS)
        .map_err(|e| {
            TlsError::invalid(
                settings.ca_file.as_deref().unwrap_or("ca_file".as_ref()),
                e.to_string(),
            )
        })?
        .with_root_certificates(roots);
    match (&settings.client_cert_file, &settings.client_key_file) {
        (Some(cert), Some(key)) => {
            let (chain, private) = pem::pair(cert, key)?;
            builder.with_client_auth_cert(chain, private).map_err(|e| {
                TlsError::invalid(
                    key,
                    format!("does not fit the certificate in {}: {e}", cert.display()),
                )
            })
        }
        _ => Ok(builder.with_no_client_auth()),
    }
}

/// A configuration for plain-HTTP upstreams, which never handshake: the
/// connector type is shared, so it needs one, but it trusts nothing.
pub fn unused_config() -> Result<ClientConfig, rustls::Error> {
    Ok(ClientConfig::builder_with_provider(super::provider())
        .with_protocol_versions(super::VERSIONS)?
        .with_root_certificates(RootCertStore::empty())
        .with_no_client_auth())
}
