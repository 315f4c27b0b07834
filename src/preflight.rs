//! The start-up check shared by `policy check` and `serve`: loads and
//! validates every file `serve` reads when it starts — the policy and the
//! consent registry, the JWT keys (JWKS / HS256 secret files, a remote
//! issuer's CA and cached key set), the audit checkpoint signing key, the TLS
//! files of the listener and of `https://` upstreams, the database password
//! source of the PostgreSQL consent backend, and the files of the
//! `justifications:` and `budgets:` sections — without binding a port,
//! opening the audit log for writing or contacting a database or service.
//!
//! So a config that `policy check` calls `ok` is one `serve` can start with,
//! short of what only the running system can tell (a port in use, a database
//! that does not answer, an audit volume that is not writable).

use std::path::Path;

use crate::config::{Config, ConfigError};
use crate::consent::file::ConsentData;
use crate::policy::Policy;

/// What the check loaded, for a summary.
#[derive(Debug)]
pub struct Checked {
    pub policy: Policy,
    /// The consent file's registry (empty with the PostgreSQL backend,
    /// which is not contacted).
    pub consent: ConsentData,
}

/// Loads everything `serve` loads at start; the first problem is returned
/// as `file:line: message` (or `file: message`).
pub fn preflight(config: &Config) -> Result<Checked, ConfigError> {
    let (policy, consent) = crate::state::load_policy_and_consent(config)?;
    crate::auth::Verifier::new(&config.jwt, &config.claims)?;
    crate::tls::check(config)?;
    check_audit(config)?;
    check_consent_db(config)?;
    check_justifications(config, &policy)?;
    check_budgets(config, &policy)?;
    Ok(Checked { policy, consent })
}

/// The checkpoint signing key loads, and the log's path is not a directory
/// (the log itself is opened only by `serve`, which creates it).
fn check_audit(config: &Config) -> Result<(), ConfigError> {
    let audit = &config.audit;
    if audit.path.is_dir() {
        return Err(ConfigError::new(
            &audit.path,
            None,
            "audit.path: is a directory; name the log file, e.g. audit/audit.jsonl",
        ));
    }
    let Some(cp) = &audit.checkpoint else {
        return Ok(());
    };
    if let Err(e) = std::fs::metadata(&cp.key_file) {
        return Err(ConfigError::new(
            &cp.key_file,
            None,
            format!(
                "audit.checkpoint.key_file: cannot read: {e} (make one with `purposegate audit keygen --out DIR`)"
            ),
        ));
    }
    crate::audit::sign::SigningKey::load(&cp.key_file)
        .map(|_| ())
        .map_err(|e| {
            ConfigError::new(
                &e.path,
                None,
                format!("audit.checkpoint.key_file: {}", e.msg),
            )
        })
}

/// The PostgreSQL backend's password source can be read (the database is
/// not contacted).
fn check_consent_db(config: &Config) -> Result<(), ConfigError> {
    use crate::consent::pg_config::PasswordError;
    let Some(db) = &config.consent_db else {
        return Ok(());
    };
    db.connect_config().map(|_| ()).map_err(|e| match e {
        PasswordError::File { path, source } => ConfigError::new(
            &path,
            None,
            format!("consent.password_file: cannot read: {source}"),
        ),
        e @ PasswordError::Env(_) => ConfigError::new(&config.file, None, e.to_string()),
    })
}

/// `justifications:` fits the policy, and its CA and credential files load
/// (the case service is not asked).
fn check_justifications(config: &Config, policy: &Policy) -> Result<(), ConfigError> {
    let Some(j) = &config.justifications else {
        return Ok(());
    };
    j.check_policy(policy)?;
    crate::justification::client::CaseClient::new(j).map(|_| ())
}

/// `budgets:` names only purposes of the policy, and its password and hash
/// key sources can be read (Redis is not contacted).
fn check_budgets(config: &Config, policy: &Policy) -> Result<(), ConfigError> {
    use crate::budget::SecretError;
    let Some(b) = &config.budgets else {
        return Ok(());
    };
    b.check_purposes(&|p| policy.purpose(p).is_some())?;
    let secret = |e: SecretError| match e {
        SecretError::File { key, path, source } => {
            ConfigError::new(&path, None, format!("budgets.{key}: cannot read: {source}"))
        }
        SecretError::EmptyHashKey(path) => {
            ConfigError::new(&path, None, "budgets.hash_key_file: the file is empty")
        }
        e @ SecretError::Env(_) => ConfigError::new(&config.file, None, e.to_string()),
    };
    b.connection_info().map_err(secret)?;
    b.hash_key().map_err(secret)?;
    Ok(())
}

/// Loads the config file and runs `preflight` on it.
pub fn preflight_file(file: &Path) -> Result<(Config, Checked), ConfigError> {
    let config = Config::load(file)?;
    let checked = preflight(&config)?;
    Ok((config, checked))
}

#[cfg(test)]
mod tests;
