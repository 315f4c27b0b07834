//! `purposegate_justification_lookups_total{result}` and
//! `purposegate_justification_lookup_duration_seconds`. The only label is a
//! bounded result; never a case, ticket, employee or user.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

/// How one lookup ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LookupResult {
    /// Answered from the cache within the TTL (found or 404).
    Hit,
    /// Asked the service, which found the justification.
    Miss,
    /// The service failed; a cached answer within the staleness limit was used.
    Stale,
    /// Asked the service, which answered 404.
    NotFound,
    /// No usable answer: the request fails closed with 503.
    Error,
}

impl LookupResult {
    pub const ALL: [LookupResult; 5] = [
        LookupResult::Hit,
        LookupResult::Miss,
        LookupResult::Stale,
        LookupResult::NotFound,
        LookupResult::Error,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            LookupResult::Hit => "hit",
            LookupResult::Miss => "miss",
            LookupResult::Stale => "stale",
            LookupResult::NotFound => "not_found",
            LookupResult::Error => "error",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

/// The two metrics. Cheap to clone (handles are `Arc`s).
#[derive(Clone, Debug)]
pub struct JustificationMetrics {
    lookups: Family<ResultLabel, Counter>,
    duration: Histogram,
}

impl Default for JustificationMetrics {
    fn default() -> Self {
        let m = JustificationMetrics {
            lookups: Family::default(),
            duration: Histogram::new(buckets()),
        };
        // Every result exists from the start so that alerts see a 0.
        for r in LookupResult::ALL {
            let _ = m.lookups.get_or_create(&ResultLabel { result: r.as_str() });
        }
        m
    }
}

/// From a cache hit (about a microsecond) to the longest timeout.
fn buckets() -> impl Iterator<Item = f64> {
    [
        0.000_005, 0.00001, 0.000_025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
        0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    ]
    .into_iter()
}

impl JustificationMetrics {
    /// Registers both metrics (in a registry prefixed `purposegate`).
    pub fn register(&self, r: &mut Registry) {
        r.register(
            "justification_lookups",
            "Justification lookups by result (hit, miss, stale, not_found, error)",
            self.lookups.clone(),
        );
        r.register_with_unit(
            "justification_lookup_duration",
            "Time a justification lookup took, cache hits included",
            Unit::Seconds,
            self.duration.clone(),
        );
    }

    /// Counts one lookup.
    pub fn observe(&self, result: LookupResult, seconds: f64) {
        self.lookups
            .get_or_create(&ResultLabel {
                result: result.as_str(),
            })
            .inc();
        self.duration.observe(seconds);
    }

    /// The count of one result (tests and diagnostics).
    pub fn count(&self, result: LookupResult) -> u64 {
        self.lookups
            .get_or_create(&ResultLabel {
                result: result.as_str(),
            })
            .get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_zero_series() {
        let m = JustificationMetrics::default();
        let mut r = Registry::with_prefix("purposegate");
        m.register(&mut r);
        m.observe(LookupResult::Stale, 0.002);
        let text = crate::metrics::encode_classic(&r);
        for line in [
            "# TYPE purposegate_justification_lookups_total counter",
            "purposegate_justification_lookups_total{result=\"error\"} 0",
            "purposegate_justification_lookups_total{result=\"not_found\"} 0",
            "purposegate_justification_lookups_total{result=\"stale\"} 1",
            "purposegate_justification_lookup_duration_seconds_count 1",
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
        assert_eq!(m.count(LookupResult::Stale), 1);
    }
}
