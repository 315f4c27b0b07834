//! The response body streamed to the client: upstream bytes pass through
//! frame by frame (never buffered whole) while they are counted; when the body
//! ends, fails or is dropped (client gone) the `complete` audit record goes out.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::{Either, Full};

use crate::audit::{AuditEvent, AuditSink, EventKind};
use crate::upstream::UpstreamBody;

/// What the proxy answers with: a small denial body or a streamed upstream one.
pub type ProxyBody = Either<Full<Bytes>, AuditedBody>;

/// Emits the `complete` record exactly once.
struct Completion {
    audit: AuditSink,
    event: AuditEvent,
    started: Instant,
}

impl Completion {
    /// Writes the `complete` record; `ended` says how the body ended.
    fn finish(self, bytes: u64, ended: &'static str) {
        let mut event = self.event;
        event.event = EventKind::Complete;
        event.bytes = Some(bytes);
        event.ended = Some(ended);
        event.duration_ms = Some(self.started.elapsed().as_secs_f64() * 1000.0);
        self.audit.record_nowait(&event);
    }
}

pin_project_lite::pin_project! {
    /// An upstream body that reports its size and how it ended to the audit
    /// log when done.
    pub struct AuditedBody {
        #[pin]
        inner: UpstreamBody,
        bytes: u64,
        completion: Option<Completion>,
    }

    impl PinnedDrop for AuditedBody {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(c) = this.completion.take() {
                // Dropped before the end: the client went away (or hyper
                // stopped at a known length without asking for the end).
                let ended = if this.inner.is_end_stream() { "complete" } else { "client_gone" };
                c.finish(*this.bytes, ended);
            }
        }
    }
}

impl AuditedBody {
    /// Wraps `inner`; `event` is the allowed decision record to complete.
    pub fn new(inner: UpstreamBody, audit: AuditSink, event: AuditEvent, started: Instant) -> Self {
        AuditedBody {
            inner,
            bytes: 0,
            completion: Some(Completion {
                audit,
                event,
                started,
            }),
        }
    }
}

impl Body for AuditedBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    *this.bytes += data.len() as u64;
                }
            }
            Poll::Ready(None) => {
                if let Some(c) = this.completion.take() {
                    c.finish(*this.bytes, "complete");
                }
            }
            Poll::Ready(Some(Err(_))) => {
                // The store's body broke off (reset, bad chunk): the client
                // got a cut response, and the record says so.
                if let Some(c) = this.completion.take() {
                    c.finish(*this.bytes, "upstream_error");
                }
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
