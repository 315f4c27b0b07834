//! Micro-benchmarks of the live justification check on its hot path: a
//! cached lookup (what a request pays while the answer is within
//! `cache_ttl_seconds`) and rules 17a–e on the answer. The case service is
//! the embedded sample on 127.0.0.1:0, asked once to fill the cache.
//! Run: `cargo bench --bench justification`.

use std::hint::black_box;
use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion};
use purposegate::config::Config;
use purposegate::justification::rules::check_quiet;
use purposegate::justification::sample::CaseService;
use purposegate::justification::{Facts, JustificationMetrics, Justifications, Kind};

fn handle(url: &str) -> Justifications {
    let text = format!(
        "listen: \"127.0.0.1:8080\"\nadmin_listen: \"127.0.0.1:9100\"\njwt:\n  issuer: \"i\"\n  audiences: [\"a\"]\n  algorithms: [\"ES256\"]\n  jwks_file: \"jwks.json\"\npolicy_dir: \"policies\"\nconsent_file: \"consent.yaml\"\nupstreams:\n  content: {{url: \"http://127.0.0.1:9090\"}}\naudit:\n  path: \"audit.jsonl\"\njustifications:\n  url: \"{url}\"\n  cache_ttl_seconds: 3600\n  max_staleness_seconds: 3600\n"
    );
    let cfg = match Config::parse(Path::new("bench.yaml"), &text) {
        Ok(c) => c.justifications,
        Err(e) => panic!("config: {e}"),
    };
    match cfg.map(|c| Justifications::new(&c, JustificationMetrics::default())) {
        Some(Ok(j)) => j,
        _ => panic!("justifications section"),
    }
}

fn bench(c: &mut Criterion) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => panic!("runtime: {e}"),
    };
    let (svc, j) = rt.block_on(async {
        let svc = match CaseService::demo(([127, 0, 0, 1], 0).into()).await {
            Ok(s) => s,
            Err(e) => panic!("case service: {e}"),
        };
        let j = handle(&svc.url());
        j.lookup(Kind::Ticket, "TICKET-77").await;
        (svc, j)
    });
    let facts = Facts {
        id: "TICKET-77",
        sub: "employee-support",
        owner: "u1",
        requested_by_required: true,
    };
    c.bench_function("justification_lookup_cache_hit", |b| {
        b.iter(|| rt.block_on(j.lookup(Kind::Ticket, black_box("TICKET-77"))))
    });
    let looked = rt.block_on(j.lookup(Kind::Ticket, "TICKET-77"));
    c.bench_function("justification_rules_17a_to_17e", |b| {
        b.iter(|| check_quiet(black_box(&looked), black_box(&facts)))
    });
    assert_eq!(svc.asked_count(), 1, "the benchmark must run on cache hits");
}

criterion_group!(benches, bench);
criterion_main!(benches);
