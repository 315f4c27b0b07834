//! Mints many distinct tokens quickly, for benchmarks that must defeat the
//! verified-token cache (`bench/peers.sh`, "every token unique"). Each token
//! carries the same claims as the bench's main token but its own `jti`.
//!
//! Usage: mint_many KEY.pem KID COUNT OUT_FILE   (one token per line)

use std::io::Write;

use jsonwebtoken::Algorithm;
use purposegate::auth::mint::{mint, MintRequest, SigningKey};

fn request(pem: &[u8], kid: &str, now: i64) -> MintRequest {
    MintRequest {
        alg: Algorithm::RS256,
        key: SigningKey::Pem(pem.to_vec()),
        kid: Some(kid.to_string()),
        iss: "https://idp.example.test".into(),
        aud: vec!["purposegate".into()],
        sub: "employee-42".into(),
        roles: vec!["support".into()],
        purpose: Some("support".into()),
        justification: vec![("ticket_id".into(), "T-1".into())],
        subjects: vec!["u1".into()],
        training_cert_exp: Some(now + 180 * 86_400),
        iat: now,
        ttl_seconds: 3000,
        ..MintRequest::default()
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, key, kid, count, out] = args.as_slice() else {
        return Err("usage: mint_many KEY.pem KID COUNT OUT_FILE".into());
    };
    let pem = std::fs::read(key)?;
    let count: usize = count.parse()?;
    let now = purposegate::time::now_millis() / 1000;
    let base = request(&pem, kid, now);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    // Signing dominates (RSA 2048); split the work across the CPUs.
    let chunks: Vec<Result<Vec<String>, String>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let base = &base;
                s.spawn(move || {
                    (t..count)
                        .step_by(threads)
                        .map(|i| {
                            let req = MintRequest {
                                jti: Some(format!("bench-unique-{i:08}")),
                                ..base.clone()
                            };
                            mint(&req).map_err(|e| e.to_string())
                        })
                        .collect::<Result<Vec<String>, String>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("minting thread panicked".into()))
            })
            .collect()
    });
    let mut file = std::io::BufWriter::new(std::fs::File::create(out)?);
    for chunk in chunks {
        for token in chunk? {
            writeln!(file, "{token}")?;
        }
    }
    file.flush()?;
    Ok(())
}
