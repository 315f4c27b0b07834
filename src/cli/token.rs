//! `purposegate token mint` and `token keygen`: development tokens and keys.

use std::path::Path;
use std::process::ExitCode;

use jsonwebtoken::Algorithm;

use super::{fail, MintArgs};
use crate::auth::mint::{generate_dev_key, jwks_json, mint as mint_token, MintRequest, SigningKey};

fn algorithm(name: &str) -> Result<Algorithm, String> {
    name.parse()
        .map_err(|_| format!("unknown algorithm `{name}`"))
}

/// Builds the mint request from the command line.
fn request(a: &MintArgs) -> Result<MintRequest, String> {
    let alg = algorithm(&a.alg)?;
    let key = match (&a.key, &a.secret_file) {
        (Some(k), None) => {
            SigningKey::Pem(std::fs::read(k).map_err(|e| format!("{}: {e}", k.display()))?)
        }
        (None, Some(s)) => {
            let mut bytes = std::fs::read(s).map_err(|e| format!("{}: {e}", s.display()))?;
            if bytes.last() == Some(&b'\n') {
                bytes.pop();
            }
            SigningKey::Secret(bytes)
        }
        _ => return Err("give --key PEM_FILE (asymmetric) or --secret-file FILE (HS256)".into()),
    };
    let now = crate::time::now_millis() / 1000;
    let (iat, ttl_seconds) = lifetime(now, a.ttl);
    let mut justification = Vec::new();
    for (name, value) in [
        ("case_id", &a.case_id),
        ("ticket_id", &a.ticket_id),
        ("matter_id", &a.matter_id),
    ] {
        if let Some(v) = value {
            justification.push((name.to_string(), v.clone()));
        }
    }
    for pair in &a.claims {
        let (n, v) = pair
            .split_once('=')
            .ok_or_else(|| format!("--claim `{pair}`: expected NAME=VALUE"))?;
        justification.push((n.to_string(), v.to_string()));
    }
    Ok(MintRequest {
        alg,
        key,
        kid: a.kid.clone(),
        iss: a.iss.clone(),
        aud: vec![a.aud.clone()],
        sub: a.sub.clone(),
        roles: a.roles.clone(),
        purpose: a.purpose.clone(),
        justification,
        subjects: a.subjects.clone(),
        training_cert_exp: (!a.no_cert).then_some(now + a.cert_days * 86_400),
        iat,
        ttl_seconds,
        nbf: None,
        jti: a.jti.clone(),
        claim_names: Default::default(),
        extra: serde_json::Map::new(),
    })
}

/// The proxy's default `jwt.max_lifetime_seconds` and `jwt.leeway_seconds`.
const DEFAULT_MAX_LIFETIME: i64 = 3600;
const DEFAULT_LEEWAY: i64 = 30;
/// The lifetime an already-expired token is given (the default `--ttl`).
const EXPIRED_LIFETIME: i64 = 900;

/// `iat` and lifetime for `--ttl`. A negative TTL mints a token that
/// expired `-ttl` seconds ago as a real one would have: issued
/// `EXPIRED_LIFETIME` seconds before it expired, so the proxy refuses it as
/// expired rather than for an `exp` before its `iat`.
fn lifetime(now: i64, ttl: i64) -> (i64, i64) {
    if ttl < 0 {
        (
            now.saturating_add(ttl).saturating_sub(EXPIRED_LIFETIME),
            EXPIRED_LIFETIME,
        )
    } else {
        (now, ttl)
    }
}

/// What the proxy (with its default `jwt:` settings) will make of a token
/// minted with `--ttl`, when that is not simply "accepted until it expires".
fn ttl_notice(ttl: i64) -> Option<String> {
    if ttl > DEFAULT_MAX_LIFETIME {
        Some(format!(
            "warning: --ttl {ttl} is longer than the default jwt.max_lifetime_seconds ({DEFAULT_MAX_LIFETIME}): \
             the proxy refuses this token (invalid_token) unless jwt.max_lifetime_seconds is raised to at least {ttl}"
        ))
    } else if ttl < 0 && -ttl <= DEFAULT_LEEWAY {
        Some(format!(
            "note: --ttl {ttl}: the token expired {} s ago, within the default jwt.leeway_seconds ({DEFAULT_LEEWAY}), \
             so the proxy still accepts it; use --ttl -{} or less for a token it refuses as expired",
            -ttl,
            DEFAULT_LEEWAY + 1
        ))
    } else if ttl < 0 {
        Some(format!(
            "note: --ttl {ttl}: the token expired {} s ago (a {EXPIRED_LIFETIME}-second token); \
             the proxy refuses it as expired (invalid_token) unless jwt.leeway_seconds is at least {}. For tests only",
            -ttl, -ttl
        ))
    } else {
        None
    }
}

/// `token mint`: prints the token on stdout, and on stderr what the proxy
/// will make of an unusual `--ttl`.
pub fn mint(a: &MintArgs) -> ExitCode {
    match request(a).and_then(|r| mint_token(&r).map_err(|e| e.to_string())) {
        Ok(token) => {
            if let Some(notice) = ttl_notice(a.ttl) {
                eprintln!("{notice}");
            }
            println!("{token}");
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}

/// `token keygen`: writes `<out>/<kid>.pem` (mode 0600) and `<out>/jwks.json`.
pub fn keygen(alg: &str, kid: &str, out: &Path) -> ExitCode {
    let result = algorithm(alg)
        .and_then(|alg| generate_dev_key(alg, kid).map_err(|e| e.to_string()))
        .and_then(|key| {
            std::fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
            let pem = out.join(format!("{kid}.pem"));
            crate::files::write_private_file(&pem, key.private_pem.as_bytes())?;
            let jwks = out.join("jwks.json");
            std::fs::write(&jwks, jwks_json(&[&key]))
                .map_err(|e| format!("{}: {e}", jwks.display()))?;
            Ok((pem, jwks))
        });
    match result {
        Ok((pem, jwks)) => {
            println!(
                "private key: {}\npublic JWKS: {}",
                pem.display(),
                jwks.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_negative_ttl_is_an_expired_token_of_ordinary_lifetime() {
        assert_eq!(lifetime(1_000_000, 900), (1_000_000, 900));
        let (iat, ttl) = lifetime(1_000_000, -100);
        assert_eq!(iat + ttl, 1_000_000 - 100, "exp is 100 s ago");
        assert!(ttl > 0 && iat < 1_000_000);
    }

    #[test]
    fn unusual_ttls_are_explained() {
        assert_eq!(ttl_notice(900), None);
        assert_eq!(ttl_notice(3600), None);
        let long = ttl_notice(86_400).unwrap();
        assert!(
            long.starts_with("warning:") && long.contains("jwt.max_lifetime_seconds"),
            "{long}"
        );
        let past = ttl_notice(-100).unwrap();
        assert!(
            past.contains("expired 100 s ago") && past.contains("refuses"),
            "{past}"
        );
        let recent = ttl_notice(-10).unwrap();
        assert!(
            recent.contains("still accepts") && recent.contains("--ttl -31"),
            "{recent}"
        );
    }
}
