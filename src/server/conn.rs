//! Per-connection limits the HTTP library does not enforce by itself: the
//! cap on open client connections (beyond it a new connection is closed at
//! once, so the rest keep being served and descriptors never run out), and
//! the idle watchdog (a connection with no request in flight for
//! `idle_timeout` since it was accepted or its last request ended is closed
//! — silent sockets, HTTP/2 connections left open, clients that never send
//! a preface). Activity is noted per request, not per read or write: two
//! clock reads per request instead of one per syscall; a request counts as
//! in flight until its response body is done, so a long download is never
//! cut as idle.
//! Request-head bounds and the header-read timeout (slowloris) are hyper's,
//! configured in `builder`.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;

use prometheus_client::metrics::gauge::Gauge;

use crate::config::LimitsConfig;
use crate::metrics::Metrics;

/// The server builder with the configured request-head limits.
pub fn builder(limits: &LimitsConfig) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_headers(limits.max_headers)
        // The whole head must fit the read buffer, else 431.
        .max_buf_size(limits.max_header_bytes.max(8192));
    b.http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_concurrent_streams)
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        // Rapid reset: a client that resets streams faster than it lets
        // them finish is sent GOAWAY.
        .max_pending_accept_reset_streams(Some(20));
    b
}

/// Whether the connection did anything lately.
#[derive(Debug)]
pub struct Activity {
    base: Instant,
    /// Milliseconds after `base` of the accept or the last request's end.
    last_ms: AtomicU64,
    /// Requests whose response head has not been returned yet.
    in_flight: AtomicUsize,
}

impl Activity {
    /// A connection accepted now.
    pub fn new() -> Arc<Self> {
        Arc::new(Activity {
            base: Instant::now(),
            last_ms: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
        })
    }

    fn touch(&self) {
        let ms = u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// How long the connection has been idle, or None while a request is
    /// in flight.
    fn idle_for(&self) -> Option<Duration> {
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            return None;
        }
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        Some(self.base.elapsed().saturating_sub(last))
    }

    /// Marks a request in flight on the connection until the guard is
    /// dropped: the server moves it into the response body, so a body that
    /// streams for longer than the idle timeout keeps its connection, and
    /// the guard also goes when the client goes away mid-request.
    pub fn request(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }
}

/// A request in flight on a connection (its response body not yet done).
pub struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A request counted in `purposegate_requests_in_flight` until its
/// response head is returned (or the client goes away).
pub struct Counted(Gauge);

impl Counted {
    pub fn new(gauge: &Gauge) -> Self {
        gauge.inc();
        Counted(gauge.clone())
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.dec();
    }
}

pin_project_lite::pin_project! {
    /// A response body that holds its request's [`InFlight`] until hyper
    /// has sent it (or dropped it).
    pub struct Held<B> {
        #[pin]
        body: B,
        _busy: InFlight,
    }
}

impl<B> Held<B> {
    pub fn new(body: B, busy: InFlight) -> Self {
        Held { body, _busy: busy }
    }
}

impl<B: http_body::Body> http_body::Body for Held<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        self.project().body.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// Resolves once the connection has been idle for `limit`.
pub async fn idle(activity: &Activity, limit: Duration) {
    let mut wait = limit;
    loop {
        tokio::time::sleep(wait).await;
        match activity.idle_for() {
            Some(idle) if idle >= limit => return,
            Some(idle) => wait = limit - idle,
            None => wait = limit,
        }
    }
}

/// Counts a connection that ended with an error the HTTP parser raised
/// (`purposegate_http_errors_total{kind}`): heads too large (414/431), bad
/// framing, header-read timeouts. Client resets and closes are not counted.
pub fn count_error(metrics: &Metrics, err: &(dyn std::error::Error + 'static)) {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cause {
        if let Some(h) = e.downcast_ref::<hyper::Error>() {
            let kind = if h.is_parse_too_large() {
                "head_too_large"
            } else if h.is_parse_status() || h.is_parse() {
                "bad_request"
            } else if h.is_timeout() {
                "header_timeout"
            } else {
                return;
            };
            metrics.http_error(kind);
            return;
        }
        cause = e.source();
    }
}
