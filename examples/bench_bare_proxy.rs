//! purposegate's transport with nothing else: the same hyper server
//! (HTTP/1.1 + h2c auto builder), the same pooled, inline-driven upstream
//! connections (`purposegate::upstream::pool`) and the same allocator, but no
//! token check, policy, consent lookup, audit record or metrics. bench/peers.sh
//! runs it beside purposegate so the table separates what the Rust HTTP stack
//! costs per request from what purposegate's checks and audit trail add.
//! Not a product: it checks nothing and forwards every request (it only
//! drops the Authorization header). Usage:
//!   bench_bare_proxy LISTEN_ADDR UPSTREAM_ADDR

use std::convert::Infallible;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use purposegate::upstream::pool::ConnPool;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(upstream)) = (args.next(), args.next()) else {
        eprintln!("usage: bench_bare_proxy LISTEN_ADDR UPSTREAM_ADDR");
        std::process::exit(2);
    };
    let pool = ConnPool::new(upstream, Duration::from_secs(1));
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    println!("bare proxy on {}", listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let pool = pool.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: hyper::Request<Incoming>| {
                let pool = pool.clone();
                async move {
                    let (mut parts, _body) = req.into_parts();
                    if let Some(pq) = parts.uri.path_and_query() {
                        parts.uri = http::Uri::from(pq.clone());
                    }
                    parts.headers.remove(http::header::AUTHORIZATION);
                    let resp = match pool
                        .send(hyper::Request::from_parts(
                            parts,
                            http_body_util::Empty::<bytes::Bytes>::new(),
                        ))
                        .await
                    {
                        Ok(resp) => resp.map(http_body_util::Either::Left),
                        Err(_) => {
                            let mut r = hyper::Response::new(http_body_util::Either::Right(
                                http_body_util::Empty::<bytes::Bytes>::new(),
                            ));
                            *r.status_mut() = http::StatusCode::BAD_GATEWAY;
                            r
                        }
                    };
                    Ok::<_, Infallible>(resp)
                }
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
