//! Plain-HTTP upstream connections (src/upstream/pool.rs): reused across
//! requests (bodies of known length and chunked ones), replaced when the
//! upstream closes them, never reused after a
//! response body that was not read to its end, and bounded by the number of
//! concurrent requests.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::{Harness, Opts, Reply, Tok};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const PATH: &str = "/v1/users/u1/conversations/c1";

#[tokio::test]
async fn sequential_requests_share_one_upstream_connection() {
    let h = Harness::start().await;
    let token = h.token(&Tok::support("u1"));
    for _ in 0..20 {
        let resp = h.get(PATH, Some(&token)).await;
        assert_eq!(resp.status, 200);
        assert_eq!(&resp.body[..], b"user content");
    }
    assert_eq!(h.upstream.count(), 20);
    assert_eq!(h.upstream.connections(), 1, "one connection, reused");
}

#[tokio::test]
async fn a_chunked_body_read_to_its_end_returns_its_connection() {
    let h = Harness::start().await;
    let streamed = "/v1/users/u1/conversations/streamed";
    let mut reply = Reply::ok(&[("x-content-owner", "u1")]);
    reply.stream_bytes = Some(300 * 1024); // chunked: no content-length
    h.upstream.reply(streamed, reply);
    let token = h.token(&Tok::support("u1"));
    for _ in 0..5 {
        let resp = h.get(streamed, Some(&token)).await;
        assert_eq!(resp.status, 200);
        assert_eq!(resp.body.len(), 300 * 1024);
        assert!(resp.headers.get("content-length").is_none(), "chunked");
    }
    assert_eq!(h.upstream.connections(), 1, "one connection, reused");
}

#[tokio::test]
async fn concurrent_requests_open_at_most_one_connection_each_and_reuse_them() {
    let h = Arc::new(Harness::start().await);
    let token = h.token(&Tok::support("u1"));
    for _round in 0..3 {
        let tasks: Vec<_> = (0..16)
            .map(|_| {
                let (h, token) = (h.clone(), token.clone());
                tokio::spawn(async move { h.get(PATH, Some(&token)).await.status })
            })
            .collect();
        for t in tasks {
            assert_eq!(t.await.unwrap(), 200);
        }
    }
    assert_eq!(h.upstream.count(), 48);
    let opened = h.upstream.connections();
    assert!(
        (1..=16).contains(&opened),
        "{opened} connections for 3 rounds of 16 concurrent requests"
    );
}

#[tokio::test]
async fn a_connection_the_upstream_closes_is_replaced() {
    let h = Harness::start().await;
    let mut reply = Reply::ok(&[("x-content-owner", "u1")]);
    reply.close = true;
    h.upstream.reply(PATH, reply);
    let token = h.token(&Tok::support("u1"));
    for _ in 0..5 {
        assert_eq!(h.get(PATH, Some(&token)).await.status, 200);
    }
    assert_eq!(
        h.upstream.connections(),
        5,
        "a new connection per closed one"
    );
}

#[tokio::test]
async fn a_body_not_read_to_its_end_does_not_return_its_connection() {
    let h = Harness::start().await;
    let big = "/v1/users/u1/conversations/big";
    let mut reply = Reply::ok(&[("x-content-owner", "u1")]);
    reply.stream_bytes = Some(8 * 1024 * 1024);
    h.upstream.reply(big, reply);
    let token = h.token(&Tok::support("u1"));

    // Read one frame of the large body, then hang up.
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let req = http::Request::get(format!("http://{}{big}", h.addr))
        .header("authorization", format!("Bearer {token}"))
        .body(Empty::new())
        .unwrap();
    let resp = client.request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let first = body.frame().await.unwrap().unwrap();
    assert!(first.data_ref().is_some_and(|d| !d.is_empty()));
    drop(body);
    drop(client);

    // The half-read connection cannot carry another request: a new one is made.
    common::eventually(
        "the next request is answered",
        Duration::from_secs(5),
        || {
            let (h, token) = (&h, &token);
            async move { h.get(PATH, Some(token)).await.status == 200 }
        },
    )
    .await;
    assert_eq!(h.upstream.connections(), 2);
    let after = h.upstream.connections();
    assert_eq!(h.get(PATH, Some(&token)).await.status, 200);
    assert_eq!(
        h.upstream.connections(),
        after,
        "the new connection is reused"
    );
}

/// A bare HTTP/1.1 upstream that answers one request per connection with a
/// keep-alive response and then, after a pause, closes the connection
/// without saying so (as an upstream's idle timeout does).
async fn upstream_that_drops_idle_connections() -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let body = "user content";
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nx-content-owner: u1\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(head.as_bytes()).await;
                tokio::time::sleep(Duration::from_millis(50)).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    (addr, accepted)
}

#[tokio::test]
async fn an_idle_connection_the_upstream_dropped_is_not_used() {
    let (addr, accepted) = upstream_that_drops_idle_connections().await;
    let h = Harness::start_with(Opts {
        upstream_override: Some(addr),
        ..Opts::default()
    })
    .await;
    let token = h.token(&Tok::support("u1"));
    for i in 0..3 {
        let resp = h.get(PATH, Some(&token)).await;
        assert_eq!(resp.status, 200, "request {i}");
        assert_eq!(&resp.body[..], b"user content");
        // Let the upstream drop the now idle connection.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn a_stopped_upstream_is_unavailable_and_nothing_is_pooled_for_it() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener); // nothing listens there any more
    let h = Harness::start_with(Opts {
        upstream_override: Some(addr),
        ..Opts::default()
    })
    .await;
    let token = h.token(&Tok::support("u1"));
    for _ in 0..2 {
        let resp = h.get(PATH, Some(&token)).await;
        assert_eq!(resp.status, 502);
        assert_eq!(resp.reason().as_deref(), Some("upstream_unavailable"));
    }
}
