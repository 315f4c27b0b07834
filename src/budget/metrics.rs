//! Metrics of the budget checks: `purposegate_budget_checks_total{purpose,
//! result}` and `purposegate_budget_check_duration_seconds`. The purpose is
//! a configured limit's purpose (bounded); no employee or owner labels.

use std::collections::HashMap;
use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

/// Labels of `purposegate_budget_checks_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BudgetCheckLabels {
    /// A purpose with limits.
    pub purpose: String,
    /// `allowed`, `exceeded` or `unavailable`.
    pub result: &'static str,
}

/// The budget metrics. Cheap to clone.
#[derive(Clone)]
pub struct BudgetMetrics {
    pub checks: Family<BudgetCheckLabels, Counter>,
    pub check_duration: Histogram,
    /// Each configured purpose's series by `RESULTS` index, taken from the
    /// family at registration: a check counts without building a label
    /// set (a String) or locking the family.
    series: Arc<HashMap<String, [Counter; 3]>>,
}

/// Every `result` value.
pub const RESULTS: [&str; 3] = ["allowed", "exceeded", "unavailable"];

/// From a failed-fast check (microseconds) to a timeout (tens of ms).
fn buckets() -> impl Iterator<Item = f64> {
    [
        0.000_01, 0.000_025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
        0.05, 0.1, 0.25, 0.5, 1.0,
    ]
    .into_iter()
}

impl BudgetMetrics {
    /// Registers the metrics in `registry` (the proxy's, prefixed
    /// `purposegate`), with a zero series for each purpose and result so that
    /// alerts see a 0 before the first check.
    pub fn register<'a>(
        registry: &mut Registry,
        purposes: impl IntoIterator<Item = &'a str>,
    ) -> BudgetMetrics {
        let checks: Family<BudgetCheckLabels, Counter> = Family::default();
        let series = purposes
            .into_iter()
            .map(|purpose| {
                let counter = |result| {
                    checks
                        .get_or_create(&BudgetCheckLabels {
                            purpose: purpose.to_string(),
                            result,
                        })
                        .clone()
                };
                (purpose.to_string(), RESULTS.map(counter))
            })
            .collect();
        let m = BudgetMetrics {
            checks,
            check_duration: Histogram::new(buckets()),
            series: Arc::new(series),
        };
        registry.register(
            "budget_checks",
            "Access budget checks (rule 18) by purpose and result (allowed, exceeded, unavailable)",
            m.checks.clone(),
        );
        registry.register_with_unit(
            "budget_check_duration",
            "Time an access budget check took, Redis round trip included (failed-fast checks too)",
            Unit::Seconds,
            m.check_duration.clone(),
        );
        m
    }

    /// Counts one check.
    pub fn observe(&self, purpose: &str, result: &'static str, seconds: f64) {
        let known = RESULTS.iter().position(|r| *r == result).and_then(|i| {
            let series = self.series.get(purpose)?;
            series.get(i)
        });
        match known {
            Some(counter) => {
                counter.inc();
            }
            None => {
                self.checks
                    .get_or_create(&BudgetCheckLabels {
                        purpose: purpose.to_string(),
                        result,
                    })
                    .inc();
            }
        }
        self.check_duration.observe(seconds);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_zero_series() {
        let mut r = Registry::with_prefix("purposegate");
        let m = BudgetMetrics::register(&mut r, ["support", "training"]);
        m.observe("support", "exceeded", 0.002);
        m.observe("support", "exceeded", 0.002);
        m.observe("other", "allowed", 0.001);
        let text = crate::metrics::encode_classic(&r);
        for want in [
            "purposegate_budget_checks_total{purpose=\"support\",result=\"exceeded\"} 2",
            "purposegate_budget_checks_total{purpose=\"support\",result=\"allowed\"} 0",
            "purposegate_budget_checks_total{purpose=\"other\",result=\"allowed\"} 1",
            "purposegate_budget_checks_total{purpose=\"training\",result=\"unavailable\"} 0",
            "purposegate_budget_check_duration_seconds_count 3",
            "# TYPE purposegate_budget_check_duration_seconds histogram",
        ] {
            assert!(text.contains(want), "missing {want} in\n{text}");
        }
    }
}
