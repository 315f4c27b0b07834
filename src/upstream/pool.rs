//! Plain-HTTP upstream connections, pooled and driven inline: the request's
//! own task polls the HTTP/1.1 connection while it waits for the response
//! head and while it streams the body, and hands the connection back to the
//! pool once the body has been read to its end.
//!
//! Why not hyper-util's pooled client here: it runs every connection on a
//! task of its own, so each request crosses two task hand-offs (request in,
//! response head out) and a pool checkout keyed by scheme and authority.
//! Driving the connection inline removes those wake-ups; on the bench
//! (bench/peers.sh) a bare proxy built this way needs ~3 µs less CPU per
//! request than the same proxy on hyper-util's client. `https://` upstreams
//! keep hyper-util's client (TLS, ALPN h2).

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use super::ForwardBody;
use hyper::client::conn::http1::{self, Connection, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::UpstreamError;

/// How long an idle connection may wait in the pool before it is closed
/// (also the TLS client's setting).
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Most idle connections kept per upstream; more are closed when returned
/// (also the TLS client's setting).
pub(crate) const MAX_IDLE: usize = 256;
/// Default bound of an upstream response head.
pub const DEFAULT_MAX_HEADER_BYTES: usize = 64 * 1024;

/// One HTTP/1.1 connection to the upstream: the request half and the
/// connection future that does its I/O.
pub struct Conn {
    tx: SendRequest<ForwardBody>,
    io: Connection<TokioIo<TcpStream>, ForwardBody>,
}

impl Conn {
    /// Polls the connection's I/O; `true` once it has ended (closed by the
    /// peer, failed, or shut down), after which it can never be reused.
    fn drive(&mut self, cx: &mut Context<'_>) -> bool {
        self.io.poll_without_shutdown(cx).is_ready()
    }
}

struct Idle {
    conn: Box<Conn>,
    since: Instant,
}

/// The idle connections of one upstream.
pub struct ConnPool {
    addr: String,
    connect_timeout: Duration,
    /// Bound of a response head (bytes), see `UpstreamConfig`.
    max_header_bytes: usize,
    idle_timeout: Duration,
    /// Oldest first: connections are returned to and taken from the end, so
    /// the ones idle longest sit at the front.
    idle: Mutex<Vec<Idle>>,
}

impl ConnPool {
    pub fn new(addr: String, connect_timeout: Duration) -> Arc<Self> {
        Self::with_header_limit(addr, connect_timeout, DEFAULT_MAX_HEADER_BYTES)
    }

    /// A pool whose connections refuse response heads over `max_header_bytes`.
    pub fn with_header_limit(
        addr: String,
        connect_timeout: Duration,
        max_header_bytes: usize,
    ) -> Arc<Self> {
        Arc::new(ConnPool {
            addr,
            connect_timeout,
            max_header_bytes,
            idle_timeout: IDLE_TIMEOUT,
            idle: Mutex::new(Vec::new()),
        })
    }

    /// Sends `req` (origin-form URI) and waits for the response head. The
    /// connection stays with the returned body until the body is read.
    /// A stale pooled connection that refuses the request before writing
    /// it is dropped and the request goes out on another one.
    pub async fn send(
        self: &Arc<Self>,
        req: Request<ForwardBody>,
    ) -> Result<Response<PooledBody>, UpstreamError> {
        let mut req = req;
        loop {
            let (mut conn, reused) = match self.checkout().await {
                Some(c) => (c, true),
                None => (self.connect().await?, false),
            };
            let mut sent = Box::pin(conn.tx.try_send_request(req));
            let head = std::future::poll_fn(|cx| {
                conn.drive(cx);
                sent.as_mut().poll(cx)
            })
            .await;
            match head {
                Ok(resp) => return Ok(self.attach(resp, conn)),
                Err(mut e) => match e.take_message() {
                    // Never written: safe to send again, on a fresh connection.
                    Some(again) if reused => req = again,
                    _ => return Err(UpstreamError::Request(e.into_error())),
                },
            }
        }
    }

    fn attach(self: &Arc<Self>, resp: Response<Incoming>, conn: Box<Conn>) -> Response<PooledBody> {
        resp.map(|body| PooledBody {
            body,
            conn: Some(conn),
            pool: Arc::clone(self),
            ended: false,
        })
    }

    /// An idle connection that is still open and ready for a request.
    async fn checkout(&self) -> Option<Box<Conn>> {
        loop {
            let mut conn = self.pop()?;
            let ready = std::future::poll_fn(|cx| {
                if conn.drive(cx) {
                    return Poll::Ready(false);
                }
                conn.tx.poll_ready(cx).map(|r| r.is_ok())
            })
            .await;
            if ready {
                return Some(conn);
            }
        }
    }

    /// The most recently returned idle connection that has not timed out
    /// (older ones are closed on the way).
    fn pop(&self) -> Option<Box<Conn>> {
        let mut idle = self.idle.lock().ok()?;
        while let Some(entry) = idle.pop() {
            if entry.since.elapsed() < self.idle_timeout {
                return Some(entry.conn);
            }
        }
        None
    }

    fn put(&self, conn: Box<Conn>) {
        if conn.tx.is_closed() {
            return;
        }
        let Ok(mut idle) = self.idle.lock() else {
            return;
        };
        // Close the connections idle too long (a prefix, as they are oldest
        // first), so that a pool busier at its end still lets them go.
        let now = Instant::now();
        let too_old = |e: &Idle| now.saturating_duration_since(e.since) >= self.idle_timeout;
        if idle.first().is_some_and(too_old) {
            let expired = idle.partition_point(too_old);
            idle.drain(..expired);
        }
        if idle.len() < MAX_IDLE {
            idle.push(Idle { conn, since: now });
        }
    }

    async fn connect(&self) -> Result<Box<Conn>, UpstreamError> {
        let stream = tokio::time::timeout(self.connect_timeout, TcpStream::connect(&self.addr))
            .await
            .map_err(|_| UpstreamError::ConnectTimeout(self.connect_timeout))?
            .map_err(UpstreamError::Connect)?;
        let _ = stream.set_nodelay(true);
        // hyper's floor for the read buffer is 8 KiB.
        let (tx, io) = http1::Builder::new()
            .max_buf_size(self.max_header_bytes.max(8192))
            .max_headers(200)
            .handshake(TokioIo::new(stream))
            .await
            .map_err(UpstreamError::Handshake)?;
        Ok(Box::new(Conn { tx, io }))
    }
}

/// A response body read from a pooled connection. Polling it also drives
/// the connection; once the body has been read to its end the connection
/// goes back to the pool (a body dropped early closes it instead).
pub struct PooledBody {
    body: Incoming,
    /// Boxed: the connection is large and moves between body and pool.
    conn: Option<Box<Conn>>,
    pool: Arc<ConnPool>,
    /// The body said it ended (`None`). A body of known length also ends
    /// when `is_end_stream` turns true, which a reader may stop at; a
    /// chunked one only says so by returning `None`.
    ended: bool,
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        if let Some(conn) = this.conn.as_mut() {
            if conn.drive(cx) {
                this.conn = None;
            }
        }
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        if let Poll::Ready(None) = polled {
            this.ended = true;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for PooledBody {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            // Only a connection whose response was read to the end can carry
            // another request.
            if self.ended || self.body.is_end_stream() {
                self.pool.put(conn);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A listener that accepts connections, keeps them open and never
    /// answers: the pool only needs open connections here.
    async fn sink() -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                held.push(s);
            }
        });
        addr
    }

    fn idle_len(pool: &ConnPool) -> usize {
        pool.idle.lock().unwrap().len()
    }

    #[tokio::test]
    async fn idle_connections_expire_even_when_the_pool_stays_busy() {
        let pool = Arc::new(ConnPool {
            idle_timeout: Duration::from_millis(100),
            ..Arc::into_inner(ConnPool::new(sink().await, Duration::from_secs(1))).unwrap()
        });
        for _ in 0..3 {
            let conn = pool.connect().await.unwrap();
            pool.put(conn);
        }
        assert_eq!(idle_len(&pool), 3);
        tokio::time::sleep(Duration::from_millis(150)).await;
        // A busy pool returns and takes connections at its end; the three
        // old ones at the front must go all the same.
        let fresh = pool.connect().await.unwrap();
        pool.put(fresh);
        assert_eq!(idle_len(&pool), 1, "the expired connections were closed");
        assert!(pool.pop().is_some(), "the fresh one is handed out");
        assert!(pool.pop().is_none());
    }

    #[tokio::test]
    async fn the_pool_keeps_at_most_max_idle_connections() {
        let pool = ConnPool::new(sink().await, Duration::from_secs(1));
        for _ in 0..MAX_IDLE + 5 {
            let conn = pool.connect().await.unwrap();
            pool.put(conn);
        }
        assert_eq!(idle_len(&pool), MAX_IDLE);
    }

    #[tokio::test]
    async fn nothing_listening_is_upstream_unavailable() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let pool = ConnPool::new(format!("127.0.0.1:{port}"), Duration::from_millis(500));
        let err = pool.connect().await.err().unwrap();
        assert!(matches!(err, UpstreamError::Connect(_)), "{err:?}");
        assert_eq!(err.reason(), crate::upstream::Reason::UpstreamUnavailable);
    }
}
