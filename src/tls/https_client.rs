//! The outbound HTTPS client used to fetch keys from identity providers
//! (the upstream stores' TLS client config lives in `tls::client`):
//! hyper-util's legacy client over a rustls (aws-lc-rs) connector, trusting
//! the webpki root set plus an optional extra PEM CA bundle (`jwt.ca_file`).
//! HTTP/1.1 only; plain `http://` is let through the connector because the
//! config layer has already decided which URLs may use it.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls_pki_types::CertificateDer;

use crate::config::ConfigError;

/// A pooled HTTPS/HTTP client for small GET requests.
pub type HttpsClient = Client<HttpsConnector<HttpConnector>, Empty<Bytes>>;

/// Builds the client. `ca_file` certificates are added to the webpki roots;
/// an unreadable or empty bundle is a config error naming the file.
pub fn https_client(
    ca_file: Option<&Path>,
    connect_timeout: Duration,
) -> Result<HttpsClient, ConfigError> {
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(path) = ca_file {
        for cert in read_certs(path)? {
            roots.add(cert).map_err(|e| {
                ConfigError::new(path, None, format!("unusable CA certificate: {e}"))
            })?;
        }
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ConfigError::new(Path::new("tls"), None, format!("TLS setup: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(connect_timeout));
    http.set_nodelay(true);
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .pool_timer(TokioTimer::new())
        .build(connector))
}

/// The CA bundle's certificates, read with the same PEM loader as every
/// other TLS file.
fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    super::pem::read(path)
        .and_then(|pem| super::pem::certs(path, &pem))
        .map_err(|e| ConfigError::new(path, None, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_file_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "nothing here\n").unwrap();
        let e = https_client(Some(&empty), Duration::from_secs(1))
            .err()
            .unwrap();
        assert!(e.to_string().contains("empty.pem"), "{e}");
        let missing = dir.path().join("missing.pem");
        assert!(https_client(Some(&missing), Duration::from_secs(1)).is_err());
    }

    #[tokio::test]
    async fn builds_with_a_real_ca() {
        let ca = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, ca.cert.pem()).unwrap();
        assert!(https_client(Some(&path), Duration::from_secs(1)).is_ok());
        assert!(https_client(None, Duration::from_secs(1)).is_ok());
    }
}
