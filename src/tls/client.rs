//! TLS to `https://` upstreams: which CAs are trusted (the configured
//! `ca_file`, else the public web PKI roots), the optional client
//! certificate presented to the store, and the watcher that rebuilds an
//! upstream's client when those files change (rotated Secrets).

use std::sync::Arc;
use std::time::Duration;

use rustls::{ClientConfig, RootCertStore};
use tokio::sync::watch;

use super::{pem, TlsError};
use crate::config::UpstreamTlsConfig;
use crate::state::App;

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

/// Polls every upstream's TLS files every `interval`; on a change rebuilds
/// that upstream's client (a failure keeps the old one). Counted in
/// `purposegate_tls_reloads_total{result}`. Ends on `stop`.
pub async fn watch_upstreams(app: Arc<App>, interval: Duration, stop: watch::Receiver<bool>) {
    let loops: Vec<_> = app
        .upstreams
        .iter()
        .filter(|(_, u)| !u.tls_files().is_empty())
        .map(|(name, u)| {
            let (files, loaded) = (u.tls_files(), u.loaded_fingerprint());
            let (app, name) = (app.clone(), name.to_string());
            let watched = crate::files::Watched {
                files: move || files.clone(),
                reload: move || reload_upstream(&app, &name),
                loaded,
            };
            crate::files::watch(interval, watched, || {}, None, stop.clone())
        })
        .collect();
    futures_util::future::join_all(loops).await;
}

fn reload_upstream(app: &App, name: &str) {
    let Some(upstream) = app.upstreams.get(name) else {
        return;
    };
    let result = upstream.reload_tls();
    app.metrics.tls_reload(result.is_ok());
    match result {
        Ok(()) => tracing::info!(upstream = name, "upstream TLS files reloaded"),
        Err(e) => {
            tracing::error!(upstream = name, error = %e, "upstream TLS reload failed; keeping the previous client")
        }
    }
}
