//! Turns a verified payload into `Claims` under logical (contract) names,
//! applying the `claims:` renames (logical name → name in the token) and
//! their reverse for the free-form string claims. Types are strict: a claim
//! of the wrong type refuses the token instead of being read as absent, so a
//! malformed claim can never silently widen or narrow what the policy sees.

use serde_json::{Map, Value};

use super::registered::{numeric_date, Registered};
use super::{AuthError, Claims};
use crate::config::ClaimNames;

/// Logical names with a field of their own in `Claims`.
const STRUCTURED: [&str; 6] = [
    "sub",
    "roles",
    "purpose",
    "subjects",
    "training_cert_exp",
    "jti",
];
/// Registered claims, checked by `registered` and never renamed.
const REGISTERED: [&str; 5] = ["iss", "aud", "exp", "iat", "nbf"];

/// Builds `Claims` from a payload whose registered claims passed.
pub(crate) fn claims(
    payload: &Map<String, Value>,
    names: &ClaimNames,
    reg: Registered,
) -> Result<Claims, AuthError> {
    let get = |logical: &str| payload.get(names.token_name(logical));
    let sub = match get("sub") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        None | Some(Value::String(_)) => return Err(AuthError::MissingClaim("sub")),
        Some(_) => return Err(AuthError::BadClaim("sub")),
    };
    Ok(Claims {
        sub,
        roles: string_list(get("roles"), "roles")?,
        purpose: opt_string(get("purpose"), "purpose")?,
        subjects: string_list(get("subjects"), "subjects")?,
        training_cert_exp: get("training_cert_exp")
            .map(|v| numeric_date(v).ok_or(AuthError::BadClaim("training_cert_exp")))
            .transpose()?,
        iss: reg.iss,
        exp: reg.exp,
        iat: reg.iat,
        nbf: reg.nbf,
        jti: opt_string(get("jti"), "jti")?,
        strings: other_strings(payload, names),
    })
}

fn opt_string(value: Option<&Value>, name: &'static str) -> Result<Option<String>, AuthError> {
    match value {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(AuthError::BadClaim(name)),
    }
}

fn string_list(value: Option<&Value>, name: &'static str) -> Result<Vec<String>, AuthError> {
    match value {
        None => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .ok_or(AuthError::BadClaim(name))
            })
            .collect(),
        Some(_) => Err(AuthError::BadClaim(name)),
    }
}

/// Every other top-level string claim, keyed by logical name.
fn other_strings(
    payload: &Map<String, Value>,
    names: &ClaimNames,
) -> std::collections::BTreeMap<String, String> {
    let mut out = std::collections::BTreeMap::new();
    for (token_name, value) in payload {
        let Value::String(text) = value else { continue };
        for logical in logical_names(token_name, names) {
            if !STRUCTURED.contains(&logical) && !REGISTERED.contains(&logical) {
                out.insert(logical.to_string(), text.clone());
            }
        }
    }
    out
}

/// The logical names a token claim stands for. A claim that carries the
/// logical name of a renamed claim is shadowed: with `case_id: cid`, a
/// token's literal `case_id` must not compete with its `cid`.
fn logical_names<'a>(token_name: &'a str, names: &'a ClaimNames) -> Vec<&'a str> {
    let renamed_to: Vec<&str> = names
        .renames
        .iter()
        .filter(|(_, in_token)| *in_token == token_name)
        .map(|(logical, _)| logical.as_str())
        .collect();
    if !renamed_to.is_empty() {
        renamed_to
    } else if names.renames.contains_key(token_name) {
        Vec::new()
    } else {
        vec![token_name]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn reg() -> Registered {
        Registered {
            iss: "i".into(),
            exp: 20,
            iat: 10,
            nbf: None,
        }
    }

    fn build(v: Value, names: &ClaimNames) -> Result<Claims, AuthError> {
        claims(v.as_object().unwrap(), names, reg())
    }

    fn plain(v: Value) -> Result<Claims, AuthError> {
        build(v, &ClaimNames::default())
    }

    #[test]
    fn maps_default_names() {
        let c = plain(json!({
            "sub": "e1", "roles": ["support"], "purpose": "support", "subjects": ["u1", "u2"],
            "training_cert_exp": 99.7, "jti": "j1", "ticket_id": "T-1", "iss": "i", "n": 5,
        }))
        .unwrap();
        assert_eq!(c.sub, "e1");
        assert_eq!(c.roles, ["support"]);
        assert_eq!(c.purpose.as_deref(), Some("support"));
        assert_eq!(c.subjects, ["u1", "u2"]);
        assert_eq!(c.training_cert_exp, Some(99));
        assert_eq!(c.jti.as_deref(), Some("j1"));
        assert_eq!(c.string("ticket_id"), Some("T-1"));
        assert_eq!(c.strings.len(), 1, "{:?}", c.strings);
        assert_eq!((c.exp, c.iat), (20, 10));
    }

    #[test]
    fn absent_and_wrong_types() {
        let c = plain(json!({"sub": "e1"})).unwrap();
        assert!(c.roles.is_empty() && c.subjects.is_empty() && c.purpose.is_none());
        assert_eq!(plain(json!({})), Err(AuthError::MissingClaim("sub")));
        assert_eq!(
            plain(json!({"sub": ""})),
            Err(AuthError::MissingClaim("sub"))
        );
        assert_eq!(plain(json!({"sub": 7})), Err(AuthError::BadClaim("sub")));
        assert_eq!(
            plain(json!({"sub": "e", "roles": "legal"})),
            Err(AuthError::BadClaim("roles"))
        );
        assert_eq!(
            plain(json!({"sub": "e", "roles": ["a", 1]})),
            Err(AuthError::BadClaim("roles"))
        );
        assert_eq!(
            plain(json!({"sub": "e", "subjects": {}})),
            Err(AuthError::BadClaim("subjects"))
        );
        assert_eq!(
            plain(json!({"sub": "e", "purpose": ["x"]})),
            Err(AuthError::BadClaim("purpose"))
        );
        assert_eq!(
            plain(json!({"sub": "e", "jti": 5})),
            Err(AuthError::BadClaim("jti"))
        );
        assert_eq!(
            plain(json!({"sub": "e", "training_cert_exp": "2030"})),
            Err(AuthError::BadClaim("training_cert_exp"))
        );
    }

    #[test]
    fn renames_apply_both_ways() {
        let mut names = ClaimNames::default();
        for (l, t) in [
            ("sub", "eid"),
            ("purpose", "prp"),
            ("case_id", "cid"),
            ("roles", "grp"),
        ] {
            names.renames.insert(l.into(), t.into());
        }
        let c = build(
            json!({"eid": "e9", "prp": "abuse", "purpose": "marketing", "grp": ["security"],
                   "cid": "C-1", "case_id": "C-forged", "sub": "ignored", "note": "n"}),
            &names,
        )
        .unwrap();
        assert_eq!(c.sub, "e9");
        assert_eq!(c.purpose.as_deref(), Some("abuse"));
        assert_eq!(c.roles, ["security"]);
        assert_eq!(c.string("case_id"), Some("C-1"));
        let keys: Vec<_> = c.strings.keys().map(String::as_str).collect();
        assert_eq!(keys, ["case_id", "note"]);
    }
}
