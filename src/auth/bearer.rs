//! Finding the bearer token in a request (docs/reference.md §6 rule 3). Only the
//! `Authorization` header counts: tokens in query strings or cookies leak
//! into logs and caches, so they are never looked at.

use http::header::AUTHORIZATION;
use http::HeaderMap;

/// What the `Authorization` header(s) of a request hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bearer<'a> {
    /// No `Authorization` header, another scheme (e.g. `Basic`) or an empty
    /// token: the proxy answers `missing_token`.
    Missing,
    /// More than one `Authorization` header, or a `Bearer` credential that is
    /// not readable text: the proxy answers `invalid_token` rather than
    /// guessing which one was meant.
    Ambiguous,
    /// The token text, trimmed.
    Token(&'a str),
}

/// Extracts the bearer token. The scheme is matched case-insensitively
/// (RFC 9110 §11.1) and surrounding whitespace is ignored.
pub fn bearer(headers: &HeaderMap) -> Bearer<'_> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Bearer::Missing;
    };
    if values.next().is_some() {
        return Bearer::Ambiguous;
    }
    match value.to_str() {
        Ok(text) => parse(text),
        // Opaque bytes: if they claim the Bearer scheme the client did send a
        // token, just not a valid one, so this must not read as "missing".
        Err(_) if claims_bearer(value.as_bytes()) => Bearer::Ambiguous,
        Err(_) => Bearer::Missing,
    }
}

fn parse(text: &str) -> Bearer<'_> {
    let text = text.trim();
    let Some((scheme, token)) = text.split_once([' ', '\t']) else {
        return Bearer::Missing;
    };
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Bearer::Missing;
    }
    match token.trim() {
        "" => Bearer::Missing,
        token => Bearer::Token(token),
    }
}

fn claims_bearer(bytes: &[u8]) -> bool {
    let trimmed = bytes.trim_ascii_start();
    trimmed.len() > 7
        && trimmed[..6].eq_ignore_ascii_case(b"bearer")
        && matches!(trimmed[6], b' ' | b'\t')
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn with(values: &[&[u8]]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(AUTHORIZATION, HeaderValue::from_bytes(v).unwrap());
        }
        h
    }

    #[test]
    fn finds_the_token() {
        assert_eq!(
            bearer(&with(&[b"Bearer abc.def.ghi"])),
            Bearer::Token("abc.def.ghi")
        );
        assert_eq!(bearer(&with(&[b"bearer x"])), Bearer::Token("x"));
        assert_eq!(bearer(&with(&[b"BEARER   x  "])), Bearer::Token("x"));
        assert_eq!(bearer(&with(&[b"  Bearer\tx"])), Bearer::Token("x"));
    }

    #[test]
    fn missing_cases() {
        assert_eq!(bearer(&HeaderMap::new()), Bearer::Missing);
        assert_eq!(bearer(&with(&[b"Basic dXNlcjpwYXNz"])), Bearer::Missing);
        assert_eq!(bearer(&with(&[b"Bearer"])), Bearer::Missing);
        assert_eq!(bearer(&with(&[b"Bearer    "])), Bearer::Missing);
        assert_eq!(bearer(&with(&[b""])), Bearer::Missing);
        assert_eq!(bearer(&with(&[b"Bearerx abc"])), Bearer::Missing);
        assert_eq!(bearer(&with(&[b"Basic \xff"])), Bearer::Missing);
    }

    #[test]
    fn ambiguous_cases() {
        assert_eq!(
            bearer(&with(&[b"Bearer a", b"Bearer b"])),
            Bearer::Ambiguous
        );
        assert_eq!(bearer(&with(&[b"Bearer a", b"Basic b"])), Bearer::Ambiguous);
        assert_eq!(bearer(&with(&[b"Bearer \xffabc"])), Bearer::Ambiguous);
    }
}
