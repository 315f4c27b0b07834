//! Latency and throughput of access budget checks (`Budgets::charge`),
//! calling the handle directly (no proxy) against a Redis: sequential
//! charges of new owners, of re-read owners, and of a request budget, then
//! CONCURRENCY tasks charging at once. Keys get a prefix of their own per run
//! and expire with their one-hour window; nothing is flushed.
//! Usage: budget_check [REDIS_URL] [SAMPLES] [CONCURRENCY]
//! (default redis://127.0.0.1:6379/14, 20000, 64).

use std::path::Path;
use std::time::{Duration, Instant};

use purposegate::budget::{Budgets, Outcome};
use purposegate::config::Config;

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e6
}

fn report(name: &str, mut d: Vec<Duration>) {
    d.sort();
    let mean = d.iter().sum::<Duration>().as_secs_f64() * 1e6 / d.len() as f64;
    println!(
        "| {name} | {} | {:.1} | {:.1} | {:.1} |",
        d.len(),
        percentile(&d, 0.5),
        percentile(&d, 0.99),
        mean
    );
}

async fn timed(b: &Budgets, sub: &str, purpose: &str, owner: &str) -> Duration {
    let t = Instant::now();
    let o = b.charge(sub, purpose, owner).await;
    let d = t.elapsed();
    assert!(matches!(o, Outcome::Allowed { .. }), "{o:?}");
    d
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let url = args
        .get(1)
        .cloned()
        .unwrap_or_else(|| "redis://127.0.0.1:6379/14".into());
    let samples: usize = args
        .get(2)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(20_000);
    let conc: usize = args.get(3).map(|s| s.parse()).transpose()?.unwrap_or(64);
    let text = format!(
        "listen: \"127.0.0.1:0\"\nadmin_listen: \"127.0.0.1:0\"\njwt:\n  issuer: i\n  audiences: [a]\n  algorithms: [ES256]\n  jwks_file: j\npolicy_dir: p\nconsent_file: c\nupstreams:\n  content: {{url: \"http://127.0.0.1:1\"}}\naudit:\n  path: a\nbudgets:\n  redis_url: \"{url}\"\n  key_prefix: \"pgbench:{}:\"\n  timeout_ms: 1000\n  limits:\n    - {{purpose: support, distinct_owners: 1000000, window_seconds: 3600}}\n    - {{purpose: training, requests: 1000000000, window_seconds: 3600}}\n",
        std::process::id()
    );
    let cfg = Config::parse(Path::new("bench.yaml"), &text)?
        .budgets
        .ok_or("no budgets")?;
    let b = Budgets::new(&cfg, &mut prometheus_client::registry::Registry::default())?;
    // Connected, and the scripts loaded.
    for _ in 0..100 {
        if matches!(
            b.charge("warm", "training", "x").await,
            Outcome::Allowed { .. }
        ) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    b.peek("warm", "support", "x").await?;

    println!("| check | samples | p50 µs | p99 µs | mean µs |\n|---|---|---|---|---|");
    let mut d = Vec::with_capacity(samples);
    for i in 0..samples {
        d.push(timed(&b, &format!("e{}", i % 100), "support", &format!("u{i}")).await);
    }
    report("distinct_owners, new owner (SADD)", d);
    let mut d = Vec::with_capacity(samples);
    for i in 0..samples {
        d.push(timed(&b, &format!("e{}", i % 100), "support", &format!("u{i}")).await);
    }
    report("distinct_owners, re-read (no write)", d);
    let mut d = Vec::with_capacity(samples);
    for i in 0..samples {
        d.push(timed(&b, &format!("e{}", i % 100), "training", "u").await);
    }
    report("requests (INCR)", d);

    let per_task = samples.div_ceil(conc);
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..conc {
        let b = b.clone();
        tasks.spawn(async move {
            let mut d = Vec::with_capacity(per_task);
            for i in 0..per_task {
                d.push(timed(&b, &format!("c{t}"), "support", &format!("v{i}")).await);
            }
            d
        });
    }
    let mut all = Vec::new();
    while let Some(d) = tasks.join_next().await {
        all.extend(d?);
    }
    let secs = started.elapsed().as_secs_f64();
    let n = all.len();
    report(&format!("{conc} concurrent, new owners"), all);
    println!("\n{conc} concurrent: {:.0} checks/s", n as f64 / secs);
    Ok(())
}
