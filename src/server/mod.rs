//! Listeners and lifecycle: the client listener (HTTP/1.1 and h2c on one
//! port, or TLS with ALPN h2/http1.1 when `tls:` is configured), the admin listener, the reload watcher (file changes and SIGHUP),
//! and graceful shutdown (stop accepting, drain in-flight requests up to the
//! grace period, flush the audit log).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub mod conn;

use crate::config::Config;
use crate::proxy::ClientConn;
use crate::state::{App, StartError};
use crate::tls::ServerTls;

/// A started proxy: its bound addresses and a handle to stop it.
pub struct Running {
    pub addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub app: Arc<App>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

/// Loads everything, binds both listeners and starts serving.
pub async fn start(config: Config) -> Result<Running, StartError> {
    let listener = bind(config.listen).await?;
    let admin = bind(config.admin_listen).await?;
    let addr = listener.local_addr().map_err(|source| StartError::Listen {
        addr: config.listen,
        source,
    })?;
    let admin_addr = admin.local_addr().map_err(|source| StartError::Listen {
        addr: config.admin_listen,
        source,
    })?;
    let grace = config.shutdown_grace;
    let app = Arc::new(App::new(config)?);
    let tls = load_tls(&app)?;
    let (stop, stopped) = watch::channel(false);
    let key_fetchers = app.verifier.spawn_refreshers(stopped.clone());
    let mut tasks = vec![
        tokio::spawn(serve_proxy(
            app.clone(),
            listener,
            stopped.clone(),
            grace,
            tls.clone(),
        )),
        tokio::spawn(serve_admin(app.clone(), admin, stopped.clone())),
    ];
    tasks.extend(key_fetchers);
    if let Some(tls) = tls {
        let interval = app.config.reload_interval;
        tasks.push(tokio::spawn(crate::tls::server::watch(
            tls,
            interval,
            stopped.clone(),
        )));
    }
    tasks.push(tokio::spawn(crate::tls::client::watch_upstreams(
        app.clone(),
        app.config.reload_interval,
        stopped.clone(),
    )));
    // The SIGHUP handler is installed before the listening line is logged, so
    // a reload signal sent once the proxy says it listens never kills it.
    let hup = hangup_signal();
    tasks.push(tokio::spawn(watch_for_reload(app.clone(), hup, stopped)));
    tracing::info!(%addr, %admin_addr, "purposegate listening");
    Ok(Running {
        addr,
        admin_addr,
        app,
        stop,
        tasks,
    })
}

/// The client listener's TLS state, when `tls:` is configured.
fn load_tls(app: &App) -> Result<Option<Arc<ServerTls>>, StartError> {
    let Some(settings) = &app.config.tls else {
        return Ok(None);
    };
    let tls =
        ServerTls::load(settings, app.metrics.clone()).map_err(|e| StartError::Config(e.into()))?;
    Ok(Some(Arc::new(tls)))
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Listen { addr, source })
}

impl Running {
    /// Graceful shutdown: readiness down, stop accepting, drain in-flight
    /// requests (bounded by `shutdown_grace`), then flush the audit log.
    /// With `audit.ship`, what is left is shipped after the flush (bounded
    /// by `audit.ship.drain_seconds`); the result says whether the local log
    /// was shipped whole.
    pub async fn shutdown(self) -> Shutdown {
        self.app.accepting.store(false, Ordering::Relaxed);
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
        let flushed = self.app.audit.flush().await;
        if let Err(e) = &flushed {
            tracing::error!(error = %e, "audit flush at shutdown failed");
        }
        let shipper = self.app.shipper.lock().ok().and_then(|mut s| s.take());
        let shipped = match (shipper, &self.app.config.audit.ship) {
            (Some(handle), Some(cfg)) => {
                let summary = handle.drain(std::time::Instant::now() + cfg.drain).await;
                if summary.all_shipped {
                    tracing::info!(
                        shipped = summary.shipped,
                        stored_seq = summary.stored_seq,
                        "audit log shipped completely"
                    );
                } else {
                    tracing::error!(
                        lag_records = summary.lag_records,
                        stored_seq = summary.stored_seq,
                        "audit log NOT shipped completely; the rest stays on the local volume and ships at the next start"
                    );
                }
                Some(summary.all_shipped)
            }
            _ => None,
        };
        tracing::info!("purposegate stopped");
        Shutdown {
            flushed: flushed.is_ok(),
            shipped,
        }
    }
}

/// How a shutdown ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shutdown {
    /// The audit log's last flush succeeded.
    pub flushed: bool,
    /// With `audit.ship`: every durable record is stored centrally.
    pub shipped: Option<bool>,
}

impl Shutdown {
    /// Nothing is left behind that should not be.
    pub fn clean(self) -> bool {
        self.flushed && self.shipped != Some(false)
    }
}

async fn serve_proxy(
    app: Arc<App>,
    listener: TcpListener,
    mut stop: watch::Receiver<bool>,
    grace: Duration,
    tls: Option<Arc<ServerTls>>,
) {
    let graceful = GracefulShutdown::new();
    let builder = conn::builder(&app.config.limits);
    let slots = Arc::new(tokio::sync::Semaphore::new(
        app.config.limits.max_connections,
    ));
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.changed() => break,
        };
        let (stream, client) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and similar: back off rather than
                // spin, and say so on /readyz.
                tracing::warn!(error = %e, "accept failed");
                app.connections.accept_failed();
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            // At the cap: close this one at once, keep serving the others.
            app.metrics.connections_refused.inc();
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let accepted = Accepted {
            app: app.clone(),
            builder: builder.clone(),
            watcher: graceful.watcher(),
            _slot: slot,
        };
        match &tls {
            // The handshake runs in the connection's task, so a slow client
            // never holds up the accept loop.
            Some(tls) => {
                tokio::spawn(accepted.serve_tls(tls.acceptor(), stream, client));
            }
            None => {
                let conn = Arc::new(ClientConn::new(client, None));
                tokio::spawn(accepted.serve(stream, conn));
            }
        }
    }
    drop(listener);
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            grace_seconds = grace.as_secs(),
            "grace period over; closing remaining connections"
        );
    }
}

/// One accepted client connection and what serving it needs; holds its
/// slot of `limits.max_connections` until the connection ends.
struct Accepted {
    app: Arc<App>,
    builder: auto::Builder<TokioExecutor>,
    watcher: hyper_util::server::graceful::Watcher,
    _slot: tokio::sync::OwnedSemaphorePermit,
}

impl Accepted {
    /// A TLS connection: handshake, then HTTP/2 or HTTP/1.1 (as ALPN chose;
    /// the auto builder also recognises the HTTP/2 preface). Every request's
    /// audit record carries the verified client certificate's subject.
    async fn serve_tls(
        self,
        acceptor: tokio_rustls::TlsAcceptor,
        stream: tokio::net::TcpStream,
        client: SocketAddr,
    ) {
        let (tls, peer) = match crate::tls::server::handshake(acceptor, stream).await {
            Ok(ok) => ok,
            Err(e) => {
                tracing::debug!(%client, error = %e, "TLS handshake failed");
                return;
            }
        };
        let conn = Arc::new(ClientConn::new(client, peer));
        self.serve(tls, conn).await;
    }

    /// Serves HTTP on `io` until the client closes it, it fails, it stays
    /// idle past `limits.idle_timeout`, or shutdown drains it.
    async fn serve<I>(self, io: I, conn: Arc<ClientConn>)
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let app = self.app;
        app.connections.open.fetch_add(1, Ordering::Relaxed);
        app.metrics.client_connections.inc();
        let activity = conn::Activity::new();
        let service = {
            let (app, activity) = (app.clone(), activity.clone());
            service_fn(move |req: hyper::Request<Incoming>| {
                let (app, conn) = (app.clone(), conn.clone());
                let busy = activity.request();
                let counted = conn::Counted::new(&app.metrics.requests_in_flight);
                async move {
                    let resp = crate::proxy::handle(app, req, conn).await;
                    drop(counted);
                    Ok::<_, Infallible>(resp.map(|body| conn::Held::new(body, busy)))
                }
            })
        };
        let http = self
            .builder
            .serve_connection(TokioIo::new(io), service)
            .into_owned();
        let http = self.watcher.watch(http);
        tokio::select! {
            ended = http => {
                if let Err(e) = ended {
                    conn::count_error(&app.metrics, e.as_ref());
                    tracing::debug!(error = %e, "client connection ended with an error");
                }
            }
            _ = conn::idle(&activity, app.config.limits.idle_timeout) => {
                tracing::debug!("closing an idle client connection");
            }
        }
        app.connections.open.fetch_sub(1, Ordering::Relaxed);
        app.metrics.client_connections.dec();
    }
}

async fn serve_admin(app: Arc<App>, listener: TcpListener, mut stop: watch::Receiver<bool>) {
    let builder = auto::Builder::new(TokioExecutor::new());
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.changed() => break,
        };
        let Ok((stream, _)) = accepted else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let app = app.clone();
        let service = service_fn(move |req: hyper::Request<Incoming>| {
            let resp = crate::admin::handle(&app, &req);
            async move { Ok::<_, Infallible>(resp) }
        });
        let conn = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        tokio::spawn(async move {
            let _ = conn.await;
        });
    }
}

/// Reloads when a watched file changes (polled, so it also sees ConfigMap
/// symlink swaps) or on SIGHUP. File reads happen on the blocking pool.
async fn watch_for_reload(app: Arc<App>, mut hup: Hangup, stop: watch::Receiver<bool>) {
    let (kick, kicks) = tokio::sync::mpsc::unbounded_channel();
    let mut hup_stop = stop.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = recv_hangup(&mut hup) => {}
                _ = hup_stop.changed() => return,
            }
            if kick.send(()).is_err() {
                return;
            }
        }
    });
    let (probe, reload) = (app.clone(), app.clone());
    let watched = crate::files::Watched {
        files: move || probe.watched_files(),
        reload: move || {
            let _ = reload.reload();
        },
        loaded: app.loaded_fingerprint.clone(),
    };
    crate::files::watch(
        app.config.reload_interval,
        watched,
        || {},
        Some(kicks),
        stop,
    )
    .await;
}

#[cfg(unix)]
type Hangup = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hangup = Option<()>;

#[cfg(unix)]
fn hangup_signal() -> Hangup {
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok()
}
#[cfg(not(unix))]
fn hangup_signal() -> Hangup {
    None
}

#[cfg(unix)]
async fn recv_hangup(sig: &mut Hangup) {
    match sig {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending().await,
    }
}
#[cfg(not(unix))]
async fn recv_hangup(_: &mut Hangup) {
    std::future::pending().await
}

/// Waits for SIGTERM or SIGINT.
/// SIGTERM or SIGINT, the handlers installed when this is called (so a
/// signal that arrives before the future is first polled — e.g. right
/// after the listening line — is still caught and drains gracefully).
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let term = signal(SignalKind::terminate()).ok();
        let int = signal(SignalKind::interrupt()).ok();
        async move {
            let wait = |s: Option<tokio::signal::unix::Signal>| async move {
                match s {
                    Some(mut s) => {
                        s.recv().await;
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = wait(term) => {},
                _ = wait(int) => {},
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// `purposegate serve`: start, wait for SIGTERM/SIGINT, shut down gracefully.
pub async fn serve(config: Config) -> Result<Shutdown, StartError> {
    let stop = shutdown_signal();
    let running = start(config).await?;
    stop.await;
    tracing::info!("shutdown signal received; draining");
    Ok(running.shutdown().await)
}
