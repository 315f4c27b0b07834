//! The registered claims of a signature-checked payload: `iss`, `aud`, `exp`,
//! `iat`, `nbf` and the lifetime bound (docs/reference.md §6 rule 4). Checked here
//! rather than by `jsonwebtoken::Validation` so that `now` comes from the
//! caller (tests, `explain`) and the clock is never read during verification.
//! These claims are never renamed by the `claims:` config section: they are
//! the standard JWT ones every issuer uses.

use serde_json::{Map, Value};

use super::AuthError;
use crate::config::JwtConfig;

/// The registered claims that passed the checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Registered {
    pub iss: String,
    pub exp: i64,
    pub iat: i64,
    pub nbf: Option<i64>,
}

/// Checks the registered claims against the config at time `now` (Unix
/// seconds).
pub(crate) fn check(
    payload: &Map<String, Value>,
    cfg: &JwtConfig,
    now: i64,
) -> Result<Registered, AuthError> {
    let iss = match payload.get("iss") {
        None => return Err(AuthError::MissingClaim("iss")),
        Some(Value::String(iss)) => iss,
        Some(_) => return Err(AuthError::BadClaim("iss")),
    };
    if *iss != cfg.issuer {
        return Err(AuthError::WrongIssuer);
    }
    check_audience(payload.get("aud"), &cfg.audiences)?;
    let reg = Registered {
        iss: iss.clone(),
        exp: required_date(payload, "exp")?,
        iat: required_date(payload, "iat")?,
        nbf: payload
            .get("nbf")
            .map(|v| numeric_date(v).ok_or(AuthError::BadClaim("nbf")))
            .transpose()?,
    };
    check_times(&reg, cfg, now)?;
    Ok(reg)
}

/// `aud` is a string or an array of strings (RFC 7519 §4.1.3); one of them
/// must be an audience we accept.
fn check_audience(aud: Option<&Value>, accepted: &[String]) -> Result<(), AuthError> {
    let ok = |a: &str| accepted.iter().any(|x| x == a);
    match aud {
        None => Err(AuthError::MissingClaim("aud")),
        Some(Value::String(a)) if ok(a) => Ok(()),
        Some(Value::String(_)) => Err(AuthError::WrongAudience),
        Some(Value::Array(list)) => {
            let mut any = false;
            for item in list {
                any |= ok(item.as_str().ok_or(AuthError::BadClaim("aud"))?);
            }
            if any {
                Ok(())
            } else {
                Err(AuthError::WrongAudience)
            }
        }
        Some(_) => Err(AuthError::BadClaim("aud")),
    }
}

fn check_times(reg: &Registered, cfg: &JwtConfig, now: i64) -> Result<(), AuthError> {
    let leeway = leeway(cfg);
    let (valid_from, valid_until) = window(reg.exp, reg.nbf, leeway);
    if now >= valid_until {
        return Err(AuthError::Expired);
    }
    if now < valid_from {
        return Err(AuthError::NotYetValid);
    }
    if reg.iat > now.saturating_add(leeway) {
        return Err(AuthError::IssuedInFuture);
    }
    if reg.exp < reg.iat {
        return Err(AuthError::BadClaim("exp"));
    }
    let lifetime = reg.exp.saturating_sub(reg.iat);
    if lifetime.unsigned_abs() > cfg.max_lifetime_seconds {
        return Err(AuthError::LifetimeTooLong {
            lifetime,
            max: cfg.max_lifetime_seconds,
        });
    }
    Ok(())
}

/// The configured leeway as a signed number of seconds.
pub(crate) fn leeway(cfg: &JwtConfig) -> i64 {
    i64::try_from(cfg.leeway_seconds).unwrap_or(i64::MAX)
}

/// The half-open interval `[from, until)` of instants at which a token with
/// these `exp`/`nbf` is acceptable. Shared with the cache so that a cached
/// token is served exactly as long as it would verify afresh.
pub(crate) fn window(exp: i64, nbf: Option<i64>, leeway: i64) -> (i64, i64) {
    let from = nbf.map_or(i64::MIN, |nbf| nbf.saturating_sub(leeway));
    (from, exp.saturating_add(leeway))
}

fn required_date(payload: &Map<String, Value>, name: &'static str) -> Result<i64, AuthError> {
    let value = payload.get(name).ok_or(AuthError::MissingClaim(name))?;
    numeric_date(value).ok_or(AuthError::BadClaim(name))
}

/// A NumericDate (RFC 7519 §2): a JSON number of seconds, possibly with a
/// fraction, which is truncated. Out-of-range values saturate.
pub(crate) fn numeric_date(value: &Value) -> Option<i64> {
    if let Some(i) = value.as_i64() {
        Some(i)
    } else if value.as_u64().is_some() {
        Some(i64::MAX)
    } else {
        // `as` saturates on overflow; JSON has no NaN.
        value.as_f64().map(|f| f.trunc() as i64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cfg() -> JwtConfig {
        JwtConfig {
            issuer: "https://idp.test".into(),
            audiences: vec!["pg".into(), "pg2".into()],
            algorithms: vec![jsonwebtoken::Algorithm::ES256],
            jwks_file: None,
            hs256_secret_file: None,
            leeway_seconds: 30,
            max_lifetime_seconds: 3600,
            cache_max_entries: 10,
            remote: None,
            additional_issuers: Vec::new(),
        }
    }

    fn payload(v: Value) -> Map<String, Value> {
        let mut base = json!({"iss": "https://idp.test", "aud": "pg", "iat": 1000, "exp": 2000});
        if let (Some(b), Value::Object(o)) = (base.as_object_mut(), v) {
            b.extend(o);
        }
        base.as_object().cloned().unwrap()
    }

    fn at(v: Value, now: i64) -> Result<Registered, AuthError> {
        check(&payload(v), &cfg(), now)
    }

    #[test]
    fn numeric_dates() {
        assert_eq!(numeric_date(&json!(5)), Some(5));
        assert_eq!(numeric_date(&json!(5.9)), Some(5));
        assert_eq!(numeric_date(&json!(u64::MAX)), Some(i64::MAX));
        assert_eq!(numeric_date(&json!(1e300)), Some(i64::MAX));
        assert_eq!(numeric_date(&json!("5")), None);
    }

    #[test]
    fn issuer_and_audience() {
        assert_eq!(at(json!({}), 1500).unwrap().iss, "https://idp.test");
        assert_eq!(
            at(json!({"iss": "https://evil"}), 1500),
            Err(AuthError::WrongIssuer)
        );
        assert_eq!(at(json!({"iss": 1}), 1500), Err(AuthError::BadClaim("iss")));
        assert_eq!(
            at(json!({"aud": "other"}), 1500),
            Err(AuthError::WrongAudience)
        );
        assert!(at(json!({"aud": ["other", "pg2"]}), 1500).is_ok());
        assert_eq!(
            at(json!({"aud": ["other"]}), 1500),
            Err(AuthError::WrongAudience)
        );
        assert_eq!(at(json!({"aud": []}), 1500), Err(AuthError::WrongAudience));
        assert_eq!(
            at(json!({"aud": ["pg", 3]}), 1500),
            Err(AuthError::BadClaim("aud"))
        );
        assert_eq!(
            at(json!({"aud": {"pg": 1}}), 1500),
            Err(AuthError::BadClaim("aud"))
        );
        let mut p = payload(json!({}));
        p.remove("aud");
        assert_eq!(check(&p, &cfg(), 1500), Err(AuthError::MissingClaim("aud")));
        p.remove("iss");
        assert_eq!(check(&p, &cfg(), 1500), Err(AuthError::MissingClaim("iss")));
    }

    #[test]
    fn time_claims() {
        assert_eq!(at(json!({}), 2029).map(|r| r.exp), Ok(2000));
        assert_eq!(at(json!({}), 2030), Err(AuthError::Expired));
        assert!(at(json!({"nbf": 1530}), 1500).is_ok());
        assert_eq!(at(json!({"nbf": 1531}), 1500), Err(AuthError::NotYetValid));
        assert_eq!(
            at(json!({"iat": 1531, "exp": 2000}), 1500),
            Err(AuthError::IssuedInFuture)
        );
        assert!(at(json!({"iat": 1530, "exp": 2000}), 1500).is_ok());
        assert_eq!(
            at(json!({"exp": "2000"}), 1500),
            Err(AuthError::BadClaim("exp"))
        );
        assert_eq!(
            at(json!({"iat": null}), 1500),
            Err(AuthError::BadClaim("iat"))
        );
        assert_eq!(
            at(json!({"iat": 1420, "exp": 1400}), 1410),
            Err(AuthError::BadClaim("exp"))
        );
        assert_eq!(
            at(json!({"iat": 1000, "exp": 4601}), 1500),
            Err(AuthError::LifetimeTooLong {
                lifetime: 3601,
                max: 3600
            })
        );
        assert!(at(json!({"iat": 1000, "exp": 4600}), 1500).is_ok());
        assert_eq!(
            at(json!({"exp": i64::MAX}), 1500).map(|_| ()).unwrap_err(),
            AuthError::LifetimeTooLong {
                lifetime: i64::MAX - 1000,
                max: 3600
            }
        );
        let mut p = payload(json!({}));
        p.remove("exp");
        assert_eq!(check(&p, &cfg(), 1500), Err(AuthError::MissingClaim("exp")));
    }
}
