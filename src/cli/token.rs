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
        iat: now,
        ttl_seconds: a.ttl,
        nbf: None,
        jti: a.jti.clone(),
        claim_names: Default::default(),
        extra: serde_json::Map::new(),
    })
}

/// `token mint`: prints the token on stdout.
pub fn mint(a: &MintArgs) -> ExitCode {
    match request(a).and_then(|r| mint_token(&r).map_err(|e| e.to_string())) {
        Ok(token) => {
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
