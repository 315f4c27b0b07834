//! Upstream stores: a connection pool per configured upstream, with a
//! connect timeout and a response-head timeout mapped to reason codes.
//! `http://` upstreams use `pool` (HTTP/1.1 connections driven by the
//! request's own task); `https://` upstreams go through hyper-util's pooled
//! client over rustls (see `tls::client`), with HTTP/2 or HTTP/1.1 as ALPN
//! decides; when their CA or client certificate files change, `reload_tls`
//! swaps in a new client (new connections use the new files, requests in
//! flight finish on the old pool).

mod body;
pub mod pool;

pub use body::UpstreamBody;

/// What a forwarded request carries: nothing. Only reads are forwarded, and
/// a body a client sends with one never reaches the store.
pub type ForwardBody = http_body_util::Empty<bytes::Bytes>;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;

use http::uri::{self, Authority, PathAndQuery, Scheme};
use http::{HeaderValue, Request, Response, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::config::{ConfigError, UpstreamConfig};
use crate::policy::Reason;

/// Why a request did not get a response head from its store. The proxy
/// maps it to a reason code (`reason`) and logs it with the request's span.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("connecting to the store timed out after {0:?}")]
    ConnectTimeout(Duration),
    #[error("connecting to the store failed: {0}")]
    Connect(#[source] std::io::Error),
    #[error("the HTTP handshake with the store failed: {0}")]
    Handshake(#[source] hyper::Error),
    #[error("the store did not answer the request: {0}")]
    Request(#[source] hyper::Error),
    #[error("the request to the store failed: {0}")]
    Client(#[source] hyper_util::client::legacy::Error),
    #[error("no response head from the store within {0:?}")]
    Timeout(Duration),
    #[error("{0} requests to the store are in flight already (upstream max_connections)")]
    ConnectionLimit(usize),
    #[error("the request URI for the store cannot be built: {0}")]
    Uri(#[source] http::uri::InvalidUriParts),
}

impl UpstreamError {
    /// The reason code a client is answered with.
    pub fn reason(&self) -> Reason {
        match self {
            UpstreamError::Timeout(_) => Reason::UpstreamTimeout,
            _ => Reason::UpstreamUnavailable,
        }
    }
}

type Pool = Client<HttpsConnector<HttpConnector>, ForwardBody>;

/// How requests reach one upstream.
enum Transport {
    /// `http://`: pooled HTTP/1.1 connections driven inline.
    Plain(Arc<pool::ConnPool>),
    /// `https://`: hyper-util's client, swapped whole when TLS files change.
    Tls(ArcSwap<Pool>),
}

/// One upstream store and its connection pool.
pub struct Upstream {
    transport: Transport,
    scheme: Scheme,
    authority: Authority,
    /// The `Host` header every forwarded request carries (built once).
    host: HeaderValue,
    response_timeout: Duration,
    /// Requests in flight to this upstream (each holds a permit until its
    /// response body is done): bounds the connections it is asked to take.
    in_flight: Arc<tokio::sync::Semaphore>,
    /// Kept to rebuild the client when TLS files change.
    config: UpstreamConfig,
    /// The TLS files' fingerprint taken just before the first load, so that
    /// a change before the watcher starts is not missed.
    loaded: Vec<(PathBuf, u64, Option<SystemTime>)>,
}

/// Every configured upstream by name.
#[derive(Default)]
pub struct Upstreams {
    by_name: HashMap<String, Upstream>,
}

impl Upstreams {
    /// Builds a pool per upstream. Connections are reused across requests.
    /// Fails when an upstream's TLS files do not load.
    pub fn new<'a>(
        configs: impl IntoIterator<Item = (&'a String, &'a UpstreamConfig)>,
    ) -> Result<Self, ConfigError> {
        let mut by_name = HashMap::new();
        for (name, cfg) in configs {
            if let Some(u) = Upstream::new(cfg)? {
                by_name.insert(name.clone(), u);
            }
        }
        Ok(Upstreams { by_name })
    }

    pub fn get(&self, name: &str) -> Option<&Upstream> {
        self.by_name.get(name)
    }

    pub fn names(&self) -> Vec<&str> {
        self.by_name.keys().map(String::as_str).collect()
    }

    /// Every upstream with its name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Upstream)> {
        self.by_name.iter().map(|(n, u)| (n.as_str(), u))
    }
}

impl Upstream {
    fn new(cfg: &UpstreamConfig) -> Result<Option<Self>, ConfigError> {
        let loaded = crate::files::fingerprint(&tls_files(cfg));
        let Some(authority) = cfg.url.authority() else {
            return Ok(None);
        };
        let Ok(host) = HeaderValue::from_str(authority.as_str()) else {
            return Ok(None);
        };
        let transport = if cfg.url.scheme_str() == Some("https") {
            Transport::Tls(ArcSwap::from_pointee(client(cfg)?))
        } else {
            Transport::Plain(pool::ConnPool::with_header_limit(
                plain_addr(authority),
                cfg.connect_timeout,
                cfg.max_response_header_bytes,
            ))
        };
        Ok(Some(Upstream {
            transport,
            scheme: cfg.url.scheme().cloned().unwrap_or(Scheme::HTTP),
            authority: authority.clone(),
            host,
            response_timeout: cfg.response_timeout,
            in_flight: Arc::new(tokio::sync::Semaphore::new(cfg.max_connections)),
            config: cfg.clone(),
            loaded,
        }))
    }

    /// The TLS files this upstream reads (CA bundle, client certificate and key).
    pub fn tls_files(&self) -> Vec<PathBuf> {
        tls_files(&self.config)
    }

    /// The fingerprint of `tls_files` as they were when first loaded.
    pub fn loaded_fingerprint(&self) -> crate::files::Fingerprint {
        self.loaded.clone()
    }

    /// Rebuilds the client from the TLS files (blocking reads) and swaps it
    /// in; on error the old client stays.
    pub fn reload_tls(&self) -> Result<(), ConfigError> {
        if let Transport::Tls(current) = &self.transport {
            current.store(Arc::new(client(&self.config)?));
        }
        Ok(())
    }

    /// The request URI for `path_and_query` (`/` when absent) on this
    /// upstream: origin-form on a pooled connection, absolute for the
    /// client (which picks its connection by it). The already parsed path
    /// is reused, not parsed again.
    pub fn uri(&self, path_and_query: Option<PathAndQuery>) -> Result<Uri, UpstreamError> {
        let mut parts = uri::Parts::default();
        if let Transport::Tls(_) = self.transport {
            parts.scheme = Some(self.scheme.clone());
            parts.authority = Some(self.authority.clone());
        }
        parts.path_and_query =
            Some(path_and_query.unwrap_or_else(|| PathAndQuery::from_static("/")));
        Uri::from_parts(parts).map_err(UpstreamError::Uri)
    }

    pub fn host_header(&self) -> &HeaderValue {
        &self.host
    }

    /// Sends the request and waits for the response head. A connection that
    /// cannot be made is `upstream_unavailable`; a head that does not arrive
    /// within the response timeout is `upstream_timeout`. When
    /// `max_connections` requests are already in flight, a request waits for
    /// one to finish up to the connect timeout, then is `upstream_unavailable`.
    pub async fn send(
        &self,
        req: Request<ForwardBody>,
    ) -> Result<Response<UpstreamBody>, UpstreamError> {
        let permit = match self.in_flight.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                let wait = self.in_flight.clone().acquire_owned();
                match tokio::time::timeout(self.config.connect_timeout, wait).await {
                    Ok(Ok(p)) => p,
                    _ => return Err(UpstreamError::ConnectionLimit(self.config.max_connections)),
                }
            }
        };
        let limit = self.response_timeout;
        match &self.transport {
            Transport::Plain(pool) => match tokio::time::timeout(limit, pool.send(req)).await {
                Err(_) => Err(UpstreamError::Timeout(limit)),
                Ok(sent) => sent.map(|resp| resp.map(|b| UpstreamBody::pooled(b, permit))),
            },
            Transport::Tls(client) => {
                let client = client.load_full();
                match tokio::time::timeout(limit, client.request(req)).await {
                    Err(_) => Err(UpstreamError::Timeout(limit)),
                    Ok(Err(e)) => Err(UpstreamError::Client(e)),
                    Ok(Ok(resp)) => Ok(resp.map(|b| UpstreamBody::client(b, permit))),
                }
            }
        }
    }
}

/// `host:port` to connect to for a plain upstream (port 80 when absent).
fn plain_addr(authority: &Authority) -> String {
    let host = authority.host();
    let port = authority.port_u16().unwrap_or(80);
    format!("{host}:{port}")
}

fn tls_files(cfg: &UpstreamConfig) -> Vec<PathBuf> {
    let t = &cfg.tls;
    [&t.ca_file, &t.client_cert_file, &t.client_key_file]
        .into_iter()
        .flatten()
        .cloned()
        .collect()
}

/// A pooled client for one `https://` upstream.
fn client(cfg: &UpstreamConfig) -> Result<Pool, ConfigError> {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(cfg.connect_timeout));
    connector.enforce_http(false);
    Ok(Client::builder(TokioExecutor::new())
        .pool_idle_timeout(pool::IDLE_TIMEOUT)
        .pool_max_idle_per_host(pool::MAX_IDLE.min(cfg.max_connections))
        .http1_max_buf_size(cfg.max_response_header_bytes.max(8192))
        .http2_max_header_list_size(
            u32::try_from(cfg.max_response_header_bytes).unwrap_or(u32::MAX),
        )
        .build(https_connector(cfg, connector)?))
}

/// Wraps the TCP connector in TLS, trusting the upstream's CA bundle and
/// presenting its client certificate.
fn https_connector(
    cfg: &UpstreamConfig,
    tcp: HttpConnector,
) -> Result<HttpsConnector<HttpConnector>, ConfigError> {
    Ok(hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(crate::tls::client::upstream_config(&cfg.tls)?)
        .https_only()
        .enable_http1()
        .enable_http2()
        .wrap_connector(tcp))
}
