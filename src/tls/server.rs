//! The client listener's TLS: a rustls `ServerConfig` built from the
//! configured files (TLS 1.2/1.3, ALPN `h2` and `http/1.1`, optional client
//! certificate verification) held in an `ArcSwap` so that a reload swaps it
//! atomically for new handshakes while established connections keep theirs.
//! A watcher polls the files (Kubernetes rotates mounted Secrets by swapping
//! a symlink) and reloads on change; a pair that does not load keeps the old
//! configuration, is logged and counted.

use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use rustls::server::WebPkiClientVerifier;
use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use super::{pem, x509, PeerSubject, TlsError};
use crate::config::{ClientAuth, TlsConfig};
use crate::files::fingerprint;
use crate::metrics::Metrics;

/// How long a client may take to complete the handshake before the
/// connection is dropped (bounds what a silent client can hold).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A built configuration and what the metrics need to know about it.
pub struct Built {
    pub config: Arc<ServerConfig>,
    /// `notAfter` of the serving (leaf) certificate, Unix seconds.
    pub not_after: i64,
    pub subject: String,
}

/// The live TLS configuration of the client listener.
pub struct ServerTls {
    settings: TlsConfig,
    current: ArcSwap<ServerConfig>,
    not_after: AtomicI64,
    metrics: Metrics,
    /// The files' fingerprint taken just before the first load, so that a
    /// change before the watcher starts is not missed.
    loaded: Vec<(PathBuf, u64, Option<SystemTime>)>,
}

/// Builds a `ServerConfig` from the files (blocking reads).
pub fn build(settings: &TlsConfig) -> Result<Built, TlsError> {
    let (chain, key) = pem::pair(&settings.cert_file, &settings.key_file)?;
    let leaf = chain
        .first()
        .ok_or_else(|| TlsError::invalid(&settings.cert_file, "empty certificate chain"))?;
    let not_after = x509::not_after(leaf)
        .ok_or_else(|| TlsError::invalid(&settings.cert_file, "the certificate does not parse"))?;
    let subject = x509::subject(leaf).unwrap_or_default();
    let builder = ServerConfig::builder_with_provider(super::provider())
        .with_protocol_versions(super::VERSIONS)
        .map_err(|e| TlsError::invalid(&settings.cert_file, e.to_string()))?;
    let builder = match &settings.client_ca_file {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let roots = pem::roots(ca)?;
            let verifier = WebPkiClientVerifier::builder_with_provider(roots, super::provider());
            let verifier = match settings.client_auth.unwrap_or(ClientAuth::Required) {
                ClientAuth::Required => verifier,
                ClientAuth::Optional => verifier.allow_unauthenticated(),
            };
            let verifier = verifier
                .build()
                .map_err(|e| TlsError::invalid(ca, format!("client CA: {e}")))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(chain, key).map_err(|e| {
        TlsError::invalid(
            &settings.key_file,
            format!(
                "does not fit the certificate in {}: {e}",
                settings.cert_file.display()
            ),
        )
    })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Built {
        config: Arc::new(config),
        not_after,
        subject,
    })
}

impl ServerTls {
    /// Loads the files once; an error here stops the start.
    pub fn load(settings: &TlsConfig, metrics: Metrics) -> Result<ServerTls, TlsError> {
        let loaded = fingerprint(&files(settings));
        let built = build(settings)?;
        tracing::info!(subject = %built.subject, not_after = built.not_after, "TLS certificate loaded");
        let tls = ServerTls {
            settings: settings.clone(),
            current: ArcSwap::new(built.config),
            not_after: AtomicI64::new(built.not_after),
            metrics,
            loaded,
        };
        tls.update_expiry();
        Ok(tls)
    }

    /// Rebuilds from the files and swaps the configuration in; on error the
    /// old one stays. Counted in `purposegate_tls_reloads_total{result}`.
    pub fn reload(&self) -> Result<(), TlsError> {
        let result = build(&self.settings);
        self.metrics.tls_reload(result.is_ok());
        match result {
            Ok(built) => {
                tracing::info!(subject = %built.subject, not_after = built.not_after, "TLS certificate reloaded");
                self.current.store(built.config);
                self.not_after.store(built.not_after, Ordering::Relaxed);
                self.update_expiry();
                Ok(())
            }
            Err(e) => {
                tracing::error!(error = %e, "TLS reload failed; keeping the previous certificate");
                Err(e)
            }
        }
    }

    /// An acceptor for one new connection with the current configuration.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.current.load_full())
    }

    /// The files whose change triggers a reload.
    pub fn files(&self) -> Vec<PathBuf> {
        files(&self.settings)
    }

    /// `notAfter` of the serving certificate, Unix seconds.
    pub fn not_after(&self) -> i64 {
        self.not_after.load(Ordering::Relaxed)
    }

    /// Sets `purposegate_tls_cert_expiry_seconds` from the current time.
    pub fn update_expiry(&self) {
        let now = crate::time::now_millis() / 1000;
        self.metrics.tls_cert_expiry(self.not_after() - now);
    }
}

fn files(settings: &TlsConfig) -> Vec<PathBuf> {
    let mut files = vec![settings.cert_file.clone(), settings.key_file.clone()];
    files.extend(settings.client_ca_file.clone());
    files
}

/// Polls the certificate files every `interval` and reloads when their size
/// or mtime changes; also keeps the expiry gauge current. Ends on `stop`.
pub async fn watch(tls: Arc<ServerTls>, interval: Duration, stop: watch::Receiver<bool>) {
    let files = tls.files();
    let (reload, expiry) = (tls.clone(), tls.clone());
    let watched = crate::files::Watched {
        files: move || files.clone(),
        reload: move || {
            let _ = reload.reload();
        },
        loaded: tls.loaded.clone(),
    };
    crate::files::watch(
        interval,
        watched,
        move || expiry.update_expiry(),
        None,
        stop,
    )
    .await;
}

/// Completes the server handshake (bounded by `HANDSHAKE_TIMEOUT`) and
/// returns the stream with the verified client certificate's subject.
pub async fn handshake<IO>(
    acceptor: TlsAcceptor,
    io: IO,
) -> io::Result<(TlsStream<IO>, Option<PeerSubject>)>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let stream = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(io))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out"))??;
    let peer = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|certs| certs.first())
        .and_then(x509::subject)
        .map(|s| PeerSubject(Arc::from(s)));
    Ok((stream, peer))
}
