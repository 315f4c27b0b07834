//! A minimal content store for benchmarks: answers every GET with a 1 KiB
//! body and the docs/reference.md §4 metadata headers (owner taken from the path).
//! Usage: bench_upstream 127.0.0.1:9090

use std::convert::Infallible;

use bytes::Bytes;
use http::HeaderValue;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9090".into());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    let body = Bytes::from(vec![b'x'; 1024]);
    println!("bench upstream on {}", listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let body = body.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let owner = req.uri().path().split('/').nth(3).unwrap_or("").to_string();
                let mut resp = hyper::Response::new(Full::new(body.clone()));
                let h = resp.headers_mut();
                h.insert(
                    "content-type",
                    HeaderValue::from_static("application/octet-stream"),
                );
                h.insert(
                    "x-content-owner",
                    HeaderValue::from_str(&owner).unwrap_or(HeaderValue::from_static("")),
                );
                h.insert(
                    "x-content-created-at",
                    HeaderValue::from_static("2026-05-01T00:00:00Z"),
                );
                h.insert("x-content-source", HeaderValue::from_static("consumer"));
                h.insert("x-content-deidentified", HeaderValue::from_static("false"));
                async move { Ok::<_, Infallible>(resp) }
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
