//! Lookup latency of the PostgreSQL consent backend, calling the store
//! directly (no proxy): cache misses (one database round trip each) and
//! cache hits, sequentially, for random users of a loaded database.
//! Usage: consent_pg_lookup POSTGRES_URL USERS SAMPLES
//! (users are named u0..u{USERS-1}, as bench/consent_pg.sh loads them).

use std::time::{Duration, Instant};

use purposegate::consent::pg_config::PgConsentConfig;
use purposegate::consent::postgres::PgConsent;
use purposegate::consent::ConsentStore;
use rand::Rng;

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e6
}

fn report(name: &str, mut d: Vec<Duration>) {
    d.sort();
    let mean = d.iter().sum::<Duration>().as_secs_f64() * 1e6 / d.len() as f64;
    println!(
        "| {name} | {} | {:.1} | {:.1} | {:.1} | {:.1} |",
        d.len(),
        percentile(&d, 0.5),
        percentile(&d, 0.99),
        mean,
        percentile(&d, 1.0)
    );
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let url = args
        .get(1)
        .ok_or("usage: consent_pg_lookup URL USERS SAMPLES")?;
    let users: u64 = args
        .get(2)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(10_000_000);
    let samples: usize = args
        .get(3)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(20_000);
    let config = PgConsentConfig {
        pg: url.parse()?,
        password_env: None,
        password_file: None,
        cache_ttl: Duration::from_secs(600),
        max_staleness: Duration::from_secs(600),
        cache_max_entries: samples * 2,
        pool_size: 4,
        lookup_timeout: Duration::from_secs(5),
    };
    let (metrics, _registry) = purposegate::metrics::Metrics::new();
    let store = PgConsent::start(&config, metrics)?;
    // The listener clears the cache when it connects; let it do so first.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut rng = rand::rng();
    let mut ids: Vec<String> = (0..samples)
        .map(|_| format!("u{}", rng.random_range(0..users)))
        .collect();
    ids.sort();
    ids.dedup();
    // Shuffle back into random order so that neighbours are not index-adjacent.
    for i in (1..ids.len()).rev() {
        ids.swap(i, rng.random_range(0..=i));
    }
    // Warm the pool's connections and prepared statements.
    for i in 0..50 {
        store.user(&format!("warm{i}")).await?;
    }
    let (mut misses, mut hits) = (Vec::new(), Vec::new());
    let mut opted_out = 0usize;
    let now = purposegate::time::now_millis();
    for id in &ids {
        let t = Instant::now();
        let u = store.user(id).await?;
        misses.push(t.elapsed());
        opted_out += usize::from(u.opted_out_at(now));
    }
    for id in &ids {
        let t = Instant::now();
        store.user(id).await?;
        hits.push(t.elapsed());
    }
    println!("| lookup | samples | p50 µs | p99 µs | mean µs | max µs |");
    println!("|---|---:|---:|---:|---:|---:|");
    report("cache miss (1 round trip)", misses);
    report("cache hit", hits);
    println!(
        "\n{} distinct random users of {users}; {opted_out} ({:.1}%) opted out now",
        ids.len(),
        100.0 * opted_out as f64 / ids.len() as f64
    );
    Ok(())
}
