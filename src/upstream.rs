//! Upstream stores: one pooled hyper client per configured upstream, with a
//! connect timeout and a response-head timeout mapped to reason codes.
//! `https://` upstreams go through rustls (see `tls::client`), with HTTP/2
//! or HTTP/1.1 as ALPN decides; when their CA or client certificate files
//! change, `reload_tls` swaps in a new client (new connections use the new
//! files, requests in flight finish on the old pool).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;

use http::uri::{Authority, Scheme};
use http::{Request, Response, Uri};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::config::{ConfigError, UpstreamConfig};
use crate::policy::Reason;

type Pool = Client<HttpsConnector<HttpConnector>, Incoming>;

/// One upstream store and its connection pool.
pub struct Upstream {
    client: ArcSwap<Pool>,
    scheme: Scheme,
    authority: Authority,
    response_timeout: Duration,
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
        let loaded = crate::state::fingerprint(&tls_files(cfg));
        let client = pool(cfg)?;
        let Some(authority) = cfg.url.authority() else {
            return Ok(None);
        };
        Ok(Some(Upstream {
            client: ArcSwap::from_pointee(client),
            scheme: cfg.url.scheme().cloned().unwrap_or(Scheme::HTTP),
            authority: authority.clone(),
            response_timeout: cfg.response_timeout,
            config: cfg.clone(),
            loaded,
        }))
    }

    /// The TLS files this upstream reads (CA bundle, client certificate and key).
    pub fn tls_files(&self) -> Vec<PathBuf> {
        tls_files(&self.config)
    }

    /// The fingerprint of `tls_files` as they were when first loaded.
    pub fn loaded_fingerprint(&self) -> Vec<(PathBuf, u64, Option<SystemTime>)> {
        self.loaded.clone()
    }

    /// Rebuilds the client from the TLS files (blocking reads) and swaps it
    /// in; on error the old client stays.
    pub fn reload_tls(&self) -> Result<(), ConfigError> {
        self.client.store(Arc::new(pool(&self.config)?));
        Ok(())
    }

    /// The absolute URI of `path_and_query` on this upstream.
    pub fn uri(&self, path_and_query: &str) -> Result<Uri, Reason> {
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(path_and_query)
            .build()
            .map_err(|_| Reason::NonCanonicalPath)
    }

    pub fn authority(&self) -> &Authority {
        &self.authority
    }

    /// Sends the request and waits for the response head. A connection that
    /// cannot be made is `upstream_unavailable`; a head that does not arrive
    /// within the response timeout is `upstream_timeout`.
    pub async fn send(&self, req: Request<Incoming>) -> Result<Response<Incoming>, Reason> {
        let client = self.client.load_full();
        match tokio::time::timeout(self.response_timeout, client.request(req)).await {
            Err(_) => Err(Reason::UpstreamTimeout),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, connect = e.is_connect(), "upstream request failed");
                Err(Reason::UpstreamUnavailable)
            }
            Ok(Ok(resp)) => Ok(resp),
        }
    }
}

fn tls_files(cfg: &UpstreamConfig) -> Vec<PathBuf> {
    let t = &cfg.tls;
    [&t.ca_file, &t.client_cert_file, &t.client_key_file]
        .into_iter()
        .flatten()
        .cloned()
        .collect()
}

/// A pooled client for one upstream.
fn pool(cfg: &UpstreamConfig) -> Result<Pool, ConfigError> {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(cfg.connect_timeout));
    connector.enforce_http(false);
    Ok(Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(256)
        .build(https_connector(cfg, connector)?))
}

/// Wraps the TCP connector: TLS (trusting the upstream's CA bundle, with its
/// client certificate) for `https://`, a pass-through for `http://`.
fn https_connector(
    cfg: &UpstreamConfig,
    tcp: HttpConnector,
) -> Result<HttpsConnector<HttpConnector>, ConfigError> {
    let builder = hyper_rustls::HttpsConnectorBuilder::new();
    let connector = if cfg.url.scheme_str() == Some("https") {
        builder
            .with_tls_config(crate::tls::client::upstream_config(&cfg.tls)?)
            .https_only()
            .enable_http1()
            .enable_http2()
            .wrap_connector(tcp)
    } else {
        let unused = crate::tls::client::unused_config().map_err(|e| {
            ConfigError::new(std::path::Path::new("upstreams"), None, e.to_string())
        })?;
        builder
            .with_tls_config(unused)
            .https_or_http()
            .enable_http1()
            .wrap_connector(tcp)
    };
    Ok(connector)
}
