//! Prometheus metrics (docs/reference.md §8) on a `prometheus-client` registry. Label
//! values are bounded enums or policy-defined names, never per-person values.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

/// Labels of `purposegate_requests_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// `allow` or `deny`.
    pub decision: &'static str,
    /// One of the policy's purposes, a prohibited purpose, `unknown` or `none`.
    pub purpose: String,
    /// A reason code, or `none` for allowed requests.
    pub reason: &'static str,
}

/// Labels of `purposegate_policy_reloads_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabels {
    /// `ok` or `error`.
    pub result: &'static str,
}

/// Labels of `purposegate_tls_cert_expiry_seconds`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CertLabels {
    /// Which certificate: `server` (the client listener's).
    pub cert: &'static str,
}

/// Labels of `purposegate_consent_lookups_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConsentLookupLabels {
    /// `hit`, `miss`, `error` or `stale`.
    pub result: &'static str,
}

/// Labels of `purposegate_http_errors_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpErrorLabels {
    /// `head_too_large` (414/431), `bad_request` (framing, syntax) or
    /// `header_timeout` (a head not complete within the header-read timeout).
    pub kind: &'static str,
}

/// Labels of `purposegate_build_info`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabels {
    pub version: &'static str,
}

/// Every metric the proxy exports. Cheap to clone (handles are `Arc`s).
#[derive(Clone)]
pub struct Metrics {
    pub requests: Family<RequestLabels, Counter>,
    pub request_duration: Histogram,
    pub upstream_duration: Histogram,
    pub audit_records: Counter,
    pub audit_errors: Counter,
    pub policy_reloads: Family<ReloadLabels, Counter>,
    /// Seconds until the serving certificate's notAfter; no series without `tls:`.
    pub tls_cert_expiry: Family<CertLabels, Gauge>,
    pub tls_reloads: Family<ReloadLabels, Counter>,
    /// Consent lookups of the PostgreSQL backend by result.
    pub consent_lookups: Family<ConsentLookupLabels, Counter>,
    pub consent_lookup_duration: Histogram,
    /// Connections the HTTP parser refused or timed out, by kind.
    pub http_errors: Family<HttpErrorLabels, Counter>,
    /// Client connections open now.
    pub client_connections: Gauge,
    /// Client connections closed at once because `limits.max_connections` were open.
    pub connections_refused: Counter,
    /// Requests being handled now (head received, response head not yet sent).
    pub requests_in_flight: Gauge,
    /// Bytes of the local audit files (live and rotated).
    pub audit_local_bytes: Gauge,
    /// `audit.max_local_bytes` (0: no bound), for the alert on 80 %.
    pub audit_max_local_bytes: Gauge,
    pub process: ProcessMetrics,
    /// Lookups of the live justification check (always exported, so that
    /// alerts see a 0 also where the check is off).
    pub justification: crate::justification::JustificationMetrics,
}

/// Process metrics, refreshed from `/proc` when `/metrics` is scraped.
#[derive(Clone, Default)]
pub struct ProcessMetrics {
    pub resident_memory_bytes: Gauge,
    pub open_fds: Gauge,
    pub max_fds: Gauge,
    pub cpu_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
    pub threads: Gauge,
}

impl ProcessMetrics {
    /// Reads the process's figures (blocking reads of `/proc`; call it on
    /// the blocking pool).
    pub fn refresh(&self) {
        #[cfg(target_os = "linux")]
        {
            // SAFETY: sysconf has no preconditions.
            let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1);
            let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1);
            if let Ok(statm) = std::fs::read_to_string("/proc/self/statm") {
                if let Some(rss) = statm
                    .split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse::<i64>().ok())
                {
                    self.resident_memory_bytes.set(rss * page);
                }
            }
            if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
                // Fields after the parenthesised command name: utime is the
                // 14th field overall, stime the 15th, num_threads the 20th.
                if let Some((_, rest)) = stat.rsplit_once(')') {
                    let f: Vec<&str> = rest.split_whitespace().collect();
                    let num = |i: usize| f.get(i).and_then(|v| v.parse::<i64>().ok()).unwrap_or(0);
                    self.cpu_seconds
                        .set((num(11) + num(12)) as f64 / ticks as f64);
                    self.threads.set(num(17));
                }
            }
            if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
                self.open_fds
                    .set(i64::try_from(dir.count()).unwrap_or(i64::MAX));
            }
            let mut lim = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            // SAFETY: getrlimit fills the struct.
            if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 {
                self.max_fds
                    .set(i64::try_from(lim.rlim_cur).unwrap_or(i64::MAX));
            }
        }
    }
}

fn latency_buckets() -> impl Iterator<Item = f64> {
    [
        0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
        5.0, 10.0,
    ]
    .into_iter()
}

impl Metrics {
    /// Creates the metrics and registers them in a fresh registry.
    pub fn new() -> (Metrics, Registry) {
        let m = Metrics {
            requests: Family::default(),
            request_duration: Histogram::new(latency_buckets()),
            upstream_duration: Histogram::new(latency_buckets()),
            audit_records: Counter::default(),
            audit_errors: Counter::default(),
            policy_reloads: Family::default(),
            tls_cert_expiry: Family::default(),
            tls_reloads: Family::default(),
            consent_lookups: Family::default(),
            consent_lookup_duration: Histogram::new(consent_buckets()),
            http_errors: Family::default(),
            client_connections: Gauge::default(),
            connections_refused: Counter::default(),
            requests_in_flight: Gauge::default(),
            audit_local_bytes: Gauge::default(),
            audit_max_local_bytes: Gauge::default(),
            process: ProcessMetrics::default(),
            justification: Default::default(),
        };
        // Both results exist from the start so that alerts on `error` see a 0.
        for result in ["ok", "error"] {
            let _ = m.policy_reloads.get_or_create(&ReloadLabels { result });
            let _ = m.tls_reloads.get_or_create(&ReloadLabels { result });
        }
        let mut r = Registry::with_prefix("purposegate");
        r.register(
            "requests",
            "Requests by decision, purpose and reason code",
            m.requests.clone(),
        );
        r.register_with_unit(
            "request_duration",
            "Time from request head to response head, including the audit write",
            Unit::Seconds,
            m.request_duration.clone(),
        );
        r.register_with_unit(
            "upstream_duration",
            "Time the upstream store took to answer with a response head",
            Unit::Seconds,
            m.upstream_duration.clone(),
        );
        r.register(
            "audit_records",
            "Audit records written",
            m.audit_records.clone(),
        );
        r.register(
            "audit_errors",
            "Audit records that could not be written",
            m.audit_errors.clone(),
        );
        r.register(
            "policy_reloads",
            "Reloads of policy, consent and keys by result",
            m.policy_reloads.clone(),
        );
        r.register_with_unit(
            "tls_cert_expiry",
            "Seconds until the serving TLS certificate's notAfter (negative once expired)",
            Unit::Seconds,
            m.tls_cert_expiry.clone(),
        );
        r.register(
            "tls_reloads",
            "Reloads of TLS files (listener certificate, key, client CA; upstream CA and client certificate) by result",
            m.tls_reloads.clone(),
        );
        register_consent(&m, &mut r);
        register_limits(&m, &mut r);
        register_process(&m, &mut r);
        m.justification.register(&mut r);
        (m, r)
    }

    /// Counts a connection the HTTP parser refused.
    pub fn http_error(&self, kind: &'static str) {
        self.http_errors
            .get_or_create(&HttpErrorLabels { kind })
            .inc();
    }

    /// Counts one consent lookup of the PostgreSQL backend.
    pub fn consent_lookup(&self, result: &'static str, seconds: f64) {
        self.consent_lookups
            .get_or_create(&ConsentLookupLabels { result })
            .inc();
        self.consent_lookup_duration.observe(seconds);
    }

    /// Counts a policy/consent/key reload.
    pub fn reload(&self, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.policy_reloads
            .get_or_create(&ReloadLabels { result })
            .inc();
    }
}

impl Metrics {
    /// Counts a reload of the TLS files.
    pub fn tls_reload(&self, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.tls_reloads
            .get_or_create(&ReloadLabels { result })
            .inc();
    }

    /// Sets the seconds left until the serving certificate expires.
    pub fn tls_cert_expiry(&self, seconds: i64) {
        self.tls_cert_expiry
            .get_or_create(&CertLabels { cert: "server" })
            .set(seconds);
    }
}

/// Consent lookups range from a cache hit (about a microsecond) to a lookup
/// timeout, so the buckets start lower than the request ones.
fn consent_buckets() -> impl Iterator<Item = f64> {
    [
        0.000_005, 0.00001, 0.000_025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
        0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    ]
    .into_iter()
}

fn register_consent(m: &Metrics, r: &mut Registry) {
    // Every result exists from the start so that alerts on `error` see a 0.
    for result in ["hit", "miss", "error", "stale"] {
        let _ = m
            .consent_lookups
            .get_or_create(&ConsentLookupLabels { result });
    }
    r.register(
        "consent_lookups",
        "Consent lookups of the PostgreSQL backend by result (hit, miss, error, stale)",
        m.consent_lookups.clone(),
    );
    r.register_with_unit(
        "consent_lookup_duration",
        "Time a consent lookup of the PostgreSQL backend took, cache hits included",
        Unit::Seconds,
        m.consent_lookup_duration.clone(),
    );
}

fn register_limits(m: &Metrics, r: &mut Registry) {
    for kind in ["head_too_large", "bad_request", "header_timeout"] {
        let _ = m.http_errors.get_or_create(&HttpErrorLabels { kind });
    }
    r.register(
        "http_errors",
        "Client connections the HTTP parser refused or timed out (head too large: 414/431; bad framing; header-read timeout)",
        m.http_errors.clone(),
    );
    r.register(
        "client_connections",
        "Client connections open now",
        m.client_connections.clone(),
    );
    r.register(
        "connections_refused",
        "Client connections closed at once because limits.max_connections were open",
        m.connections_refused.clone(),
    );
    r.register(
        "requests_in_flight",
        "Requests being handled (head received, response head not yet sent)",
        m.requests_in_flight.clone(),
    );
    r.register_with_unit(
        "audit_local",
        "Bytes of the local audit files (live and rotated)",
        Unit::Bytes,
        m.audit_local_bytes.clone(),
    );
    r.register_with_unit(
        "audit_local_max",
        "audit.max_local_bytes (0: no bound)",
        Unit::Bytes,
        m.audit_max_local_bytes.clone(),
    );
    let build = Family::<BuildLabels, Gauge>::default();
    build
        .get_or_create(&BuildLabels {
            version: env!("CARGO_PKG_VERSION"),
        })
        .set(1);
    r.register("build_info", "The running build (always 1)", build);
}

fn register_process(m: &Metrics, r: &mut Registry) {
    let p = &m.process;
    r.register_with_unit(
        "process_resident_memory",
        "Resident set size",
        Unit::Bytes,
        p.resident_memory_bytes.clone(),
    );
    r.register(
        "process_open_fds",
        "Open file descriptors",
        p.open_fds.clone(),
    );
    r.register(
        "process_max_fds",
        "File descriptor limit (soft)",
        p.max_fds.clone(),
    );
    r.register_with_unit(
        "process_cpu",
        "User and system CPU time used",
        Unit::Seconds,
        p.cpu_seconds.clone(),
    );
    r.register("process_threads", "OS threads", p.threads.clone());
}

/// Encodes a registry in the OpenMetrics text format.
pub fn encode(registry: &Registry) -> String {
    let mut out = String::with_capacity(4096);
    if prometheus_client::encoding::text::encode(&mut out, registry).is_err() {
        out.clear();
    }
    out
}

/// Encodes a registry in the classic Prometheus text format (0.0.4), for
/// scrapers and tools (`promtool check metrics`) that do not ask for
/// OpenMetrics: counter families are named with their `_total` suffix, and
/// the `# UNIT` and `# EOF` lines are dropped.
pub fn encode_classic(registry: &Registry) -> String {
    let open = encode(registry);
    let counters: Vec<&str> = open
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(open.len());
    for line in open.lines() {
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(&name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        out.push_str(renamed.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_contract() {
        let (m, r) = Metrics::new();
        m.requests
            .get_or_create(&RequestLabels {
                decision: "deny",
                purpose: "none".into(),
                reason: "missing_token",
            })
            .inc();
        m.audit_records.inc();
        m.reload(false);
        m.request_duration.observe(0.001);
        let text = encode(&r);
        let classic = encode_classic(&r);
        assert!(
            classic.contains("# TYPE purposegate_requests_total counter"),
            "{classic}"
        );
        assert!(
            classic.contains("# HELP purposegate_audit_records_total Audit records written"),
            "{classic}"
        );
        assert!(!classic.contains("# EOF") && !classic.contains("# UNIT"));
        for name in [
            "purposegate_requests_total{decision=\"deny\",purpose=\"none\",reason=\"missing_token\"} 1",
            "purposegate_request_duration_seconds_bucket",
            "purposegate_upstream_duration_seconds_count",
            "purposegate_audit_records_total 1",
            "purposegate_audit_errors_total 0",
            "purposegate_policy_reloads_total{result=\"error\"} 1",
            "purposegate_tls_reloads_total{result=\"error\"} 0",
            "purposegate_consent_lookups_total{result=\"stale\"} 0",
            "purposegate_consent_lookup_duration_seconds_count 0",
        ] {
            assert!(text.contains(name), "missing {name} in\n{text}");
        }
    }
}
