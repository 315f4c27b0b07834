//! `purposegate_jwks_refresh_total{issuer,result}` (counted as fetches end)
//! and, computed at scrape time, `purposegate_jwks_keys{issuer}` and
//! `purposegate_jwks_age_seconds{issuer}`. The issuer label is a configured
//! issuer string, so its values are bounded by the config.

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::auth::issuer::IssuerKeys;

/// Labels of `purposegate_jwks_refresh_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RefreshLabels {
    pub issuer: String,
    /// `ok` or `error`.
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct IssuerLabel {
    issuer: String,
}

/// The counters the fetchers update.
#[derive(Clone, Default)]
pub(crate) struct JwksMetrics {
    pub refresh: Family<RefreshLabels, Counter>,
}

impl JwksMetrics {
    pub(crate) fn count(&self, issuer: &str, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.refresh
            .get_or_create(&RefreshLabels {
                issuer: issuer.to_string(),
                result,
            })
            .inc();
    }
}

/// Registers the counter (both results pre-created for every remote
/// issuer, so alerts see a 0) and the scrape-time gauges.
pub(crate) fn register(metrics: &JwksMetrics, issuers: &[Arc<IssuerKeys>], r: &mut Registry) {
    for issuer in issuers.iter().filter(|i| i.remote.is_some()) {
        for result in ["ok", "error"] {
            let _ = metrics.refresh.get_or_create(&RefreshLabels {
                issuer: issuer.cfg.issuer.clone(),
                result,
            });
        }
    }
    r.register(
        "jwks_refresh",
        "Key set fetches from identity providers by issuer and result",
        metrics.refresh.clone(),
    );
    r.register_collector(Box::new(Gauges {
        issuers: issuers.to_vec(),
    }));
}

/// Reads key counts and ages from the live issuers on each scrape.
struct Gauges {
    issuers: Vec<Arc<IssuerKeys>>,
}

impl std::fmt::Debug for Gauges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JwksGauges")
    }
}

impl Collector for Gauges {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        {
            let mut keys = encoder.encode_descriptor(
                "jwks_keys",
                "Verification keys currently loaded, by issuer",
                None,
                MetricType::Gauge,
            )?;
            for issuer in &self.issuers {
                let label = IssuerLabel {
                    issuer: issuer.cfg.issuer.clone(),
                };
                let n = i64::try_from(issuer.key_count()).unwrap_or(i64::MAX);
                ConstGauge::new(n).encode(keys.encode_family(&label)?)?;
            }
        }
        let mut age = encoder.encode_descriptor(
            "jwks_age_seconds",
            "Seconds since the current remote key set was fetched, by issuer",
            None,
            MetricType::Gauge,
        )?;
        for issuer in &self.issuers {
            let Some(seconds) = issuer.remote.as_ref().and_then(|r| r.age_seconds()) else {
                continue;
            };
            let label = IssuerLabel {
                issuer: issuer.cfg.issuer.clone(),
            };
            ConstGauge::new(seconds).encode(age.encode_family(&label)?)?;
        }
        Ok(())
    }
}
