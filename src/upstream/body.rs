//! The upstream response body, whichever transport carried it.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use super::pool::PooledBody;

/// A response body from a pooled plain connection or from the TLS client.
pub enum UpstreamBody {
    Pooled(PooledBody),
    Client(Incoming),
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        // Both variants are Unpin, so the enum is too.
        match self.get_mut() {
            UpstreamBody::Pooled(b) => Pin::new(b).poll_frame(cx),
            UpstreamBody::Client(b) => Pin::new(b).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::Pooled(b) => b.is_end_stream(),
            UpstreamBody::Client(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpstreamBody::Pooled(b) => b.size_hint(),
            UpstreamBody::Client(b) => b.size_hint(),
        }
    }
}
