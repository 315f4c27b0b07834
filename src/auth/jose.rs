//! The compact JWS envelope: splitting a token into its three parts and
//! reading the protected header (`alg`, `kid`, `crit`) before any key is
//! chosen. We read the header ourselves, instead of via
//! `jsonwebtoken::decode_header`, so that `alg: none` (which that crate cannot
//! even represent) is reported as a refused algorithm rather than a parse
//! error, and so that `crit` can be refused.

use std::str::FromStr;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::Algorithm;
use serde_json::{Map, Value};

use super::AuthError;

/// Longest token we look at. Real tokens are a few KiB; the cap bounds the
/// work (base64, JSON, hashing) an unauthenticated client can make us do.
pub(crate) const MAX_TOKEN_BYTES: usize = 32 * 1024;

/// The protected header fields verification depends on.
#[derive(Debug)]
pub(crate) struct JoseHeader {
    pub alg: Algorithm,
    pub kid: Option<String>,
}

/// Checks the envelope shape and returns the encoded header. The signature
/// part may be empty here (an unsigned token); it then fails signature
/// checking, after `alg` has been refused with a clearer reason.
pub(crate) fn encoded_header(token: &str) -> Result<&str, AuthError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(AuthError::Malformed);
    }
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(AuthError::Malformed);
    };
    let shaped = !header.is_empty()
        && !payload.is_empty()
        && [header, payload, signature].iter().all(|p| is_b64url(p));
    if shaped {
        Ok(header)
    } else {
        Err(AuthError::Malformed)
    }
}

fn is_b64url(part: &str) -> bool {
    // A table and no early exit: this runs over every byte of every token
    // the cache has not seen, and the branchy form cost ~1 µs per token.
    part.bytes()
        .fold(true, |ok, b| ok & B64URL_BYTE[usize::from(b)])
}

/// `B64URL_BYTE[b]`: whether `b` belongs to the base64url alphabet.
static B64URL_BYTE: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric() || c == b'-' || c == b'_';
        b += 1;
    }
    table
};

/// Decodes the header and checks `alg` against the allowed list first, so a
/// refused algorithm never gets as far as key selection.
pub(crate) fn read_header(encoded: &str, allowed: &[Algorithm]) -> Result<JoseHeader, AuthError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(encoded)
        .map_err(|_| AuthError::Malformed)?;
    let map: Map<String, Value> =
        serde_json::from_slice(&bytes).map_err(|_| AuthError::Malformed)?;
    let Some(Value::String(name)) = map.get("alg") else {
        return Err(AuthError::Malformed);
    };
    let alg = Algorithm::from_str(name)
        .ok()
        .filter(|a| allowed.contains(a))
        .ok_or_else(|| AuthError::AlgorithmNotAllowed(alg_label(name)))?;
    // RFC 7515 §4.1.11: a recipient must reject a JWS whose `crit` lists an
    // extension it does not understand; we understand none (e.g. `b64`).
    if map.contains_key("crit") {
        return Err(AuthError::CriticalHeader);
    }
    let kid = match map.get("kid") {
        None => None,
        Some(Value::String(kid)) => Some(kid.clone()),
        Some(_) => return Err(AuthError::Malformed),
    };
    Ok(JoseHeader { alg, kid })
}

/// The algorithm name to show in an error: the name itself when it is one we
/// know, otherwise a placeholder, so that arbitrary header text from an
/// unauthenticated client never reaches a log line.
fn alg_label(name: &str) -> String {
    if name.eq_ignore_ascii_case("none") {
        "none".to_string()
    } else if Algorithm::from_str(name).is_ok() {
        name.to_string()
    } else {
        "(unrecognized)".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        URL_SAFE_NO_PAD.encode(s)
    }

    #[test]
    fn envelope_shape() {
        assert_eq!(encoded_header("a.b.c"), Ok("a"));
        assert_eq!(encoded_header("a.b."), Ok("a"));
        for bad in [
            "", "a", "a.b", "a.b.c.d", ".b.c", "a..c", "a b.c.d", "a=.b.c", "a.b.c+",
        ] {
            assert_eq!(encoded_header(bad), Err(AuthError::Malformed), "{bad:?}");
        }
        let long = format!("{}.b.c", "a".repeat(MAX_TOKEN_BYTES));
        assert_eq!(encoded_header(&long), Err(AuthError::Malformed));
    }

    #[test]
    fn header_fields() {
        let all = [Algorithm::RS256, Algorithm::ES256];
        let h = read_header(&b64(r#"{"alg":"RS256","kid":"k1"}"#), &all).unwrap();
        assert_eq!((h.alg, h.kid.as_deref()), (Algorithm::RS256, Some("k1")));
        let h = read_header(&b64(r#"{"alg":"ES256"}"#), &all).unwrap();
        assert_eq!(h.kid, None);
        let e = read_header(&b64(r#"{"alg":"none"}"#), &all).unwrap_err();
        assert_eq!(e, AuthError::AlgorithmNotAllowed("none".into()));
        let e = read_header(&b64(r#"{"alg":"HS256"}"#), &all).unwrap_err();
        assert_eq!(e, AuthError::AlgorithmNotAllowed("HS256".into()));
        let e = read_header(&b64(r#"{"alg":"<script>"}"#), &all).unwrap_err();
        assert_eq!(e, AuthError::AlgorithmNotAllowed("(unrecognized)".into()));
    }

    #[test]
    fn header_refusals() {
        let all = [Algorithm::RS256];
        for (json, want) in [
            (r#"{"kid":"k"}"#, AuthError::Malformed),
            (r#"{"alg":5}"#, AuthError::Malformed),
            (r#"["RS256"]"#, AuthError::Malformed),
            (r#"{"alg":"RS256","kid":7}"#, AuthError::Malformed),
            (
                r#"{"alg":"RS256","crit":["b64"],"b64":false}"#,
                AuthError::CriticalHeader,
            ),
        ] {
            assert_eq!(read_header(&b64(json), &all).unwrap_err(), want, "{json}");
        }
        assert_eq!(read_header("!!", &all).unwrap_err(), AuthError::Malformed);
    }
}
