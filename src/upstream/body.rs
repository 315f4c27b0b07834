//! The upstream response body, whichever transport carried it.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use super::pool::PooledBody;

/// A response body from a pooled plain connection or from the TLS client,
/// holding its share of the upstream's connection bound until it is done.
pub struct UpstreamBody {
    inner: Inner,
    _permit: Option<tokio::sync::OwnedSemaphorePermit>,
}

enum Inner {
    Pooled(PooledBody),
    Client(Incoming),
}

impl UpstreamBody {
    pub(crate) fn pooled(b: PooledBody, permit: tokio::sync::OwnedSemaphorePermit) -> Self {
        UpstreamBody {
            inner: Inner::Pooled(b),
            _permit: Some(permit),
        }
    }

    pub(crate) fn client(b: Incoming, permit: tokio::sync::OwnedSemaphorePermit) -> Self {
        UpstreamBody {
            inner: Inner::Client(b),
            _permit: Some(permit),
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        // Both variants and the permit are Unpin, so the struct is too.
        match &mut self.get_mut().inner {
            Inner::Pooled(b) => Pin::new(b).poll_frame(cx),
            Inner::Client(b) => Pin::new(b).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Pooled(b) => b.is_end_stream(),
            Inner::Client(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Pooled(b) => b.size_hint(),
            Inner::Client(b) => b.size_hint(),
        }
    }
}
