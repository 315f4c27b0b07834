//! The `justifications.url` template: `{kind}` and `{id}` placeholders in the
//! path or query of an https URL (plain http only to loopback unless
//! `allow_insecure_http`, as for JWKS URLs). Values are percent-encoded
//! byte by byte, so an id can never change the URL's structure.

use super::Kind;
use crate::config::checked_key_url;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Kind,
    Id,
}

/// A parsed URL template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlTemplate {
    parts: Vec<Part>,
}

impl UrlTemplate {
    /// Parses and checks a template; the message says what is wrong.
    pub fn parse(text: &str, allow_insecure_http: bool) -> Result<UrlTemplate, String> {
        let parts = split(text)?;
        let has = |p: &Part| parts.iter().any(|q| q == p);
        if !has(&Part::Kind) || !has(&Part::Id) {
            // Without `{kind}` a case id could be answered by a ticket of the
            // same id; without `{id}` every lookup would ask the same thing.
            return Err(format!("`{text}` must contain both {{kind}} and {{id}}"));
        }
        if let Some(Part::Literal(head)) = parts.first() {
            let authority_ends = head
                .split_once("://")
                .is_some_and(|(_, rest)| rest.contains('/'));
            if !authority_ends {
                return Err(format!(
                    "`{text}`: {{kind}} and {{id}} may appear only in the path or query, after the host"
                ));
            }
        } else {
            return Err(format!("`{text}` must start with https://host/"));
        }
        let template = UrlTemplate { parts };
        checked_key_url(&template.render_text(Kind::Case, "x"), allow_insecure_http)?;
        Ok(template)
    }

    /// The URL for one lookup.
    pub fn render(&self, kind: Kind, id: &str) -> Result<http::Uri, http::uri::InvalidUri> {
        self.render_text(kind, id).parse()
    }

    fn render_text(&self, kind: Kind, id: &str) -> String {
        let mut out = String::with_capacity(64 + id.len() * 3);
        for part in &self.parts {
            match part {
                Part::Literal(s) => out.push_str(s),
                Part::Kind => out.push_str(kind.as_str()),
                Part::Id => out.push_str(&encode_segment(id)),
            }
        }
        out
    }
}

/// Splits a template into literals and placeholders; any other brace is an
/// error (braces are not valid in a URL, so a leftover one is a typo).
fn split(text: &str) -> Result<Vec<Part>, String> {
    let mut parts = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find(['{', '}']) {
        let (lit, tail) = rest.split_at(open);
        if !lit.is_empty() {
            parts.push(Part::Literal(lit.to_string()));
        }
        let (part, len) = if tail.starts_with("{kind}") {
            (Part::Kind, "{kind}".len())
        } else if tail.starts_with("{id}") {
            (Part::Id, "{id}".len())
        } else {
            let shown: String = tail.chars().take(12).collect();
            return Err(format!(
                "`{text}`: unknown placeholder at `{shown}` (only {{kind}} and {{id}})"
            ));
        };
        parts.push(part);
        rest = &tail[len..];
    }
    if !rest.is_empty() {
        parts.push(Part::Literal(rest.to_string()));
    }
    Ok(parts)
}

/// Percent-encodes every byte outside RFC 3986's unreserved set
/// (`A-Z a-z 0-9 - . _ ~`).
pub fn percent_encode(value: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(value.len());
    for &b in value.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        }
    }
    out
}

/// `percent_encode`, and an id of only dots (`.`, `..`) fully encoded so
/// that it cannot be read as a dot-segment of the path.
fn encode_segment(id: &str) -> String {
    if !id.is_empty() && id.bytes().all(|b| b == b'.') {
        return "%2E".repeat(id.len());
    }
    percent_encode(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: &str = "https://cases.internal/v1/justifications/{kind}/{id}";

    #[test]
    fn renders_with_encoding() {
        let t = UrlTemplate::parse(T, false).unwrap();
        assert_eq!(
            t.render(Kind::Ticket, "T-1").unwrap(),
            "https://cases.internal/v1/justifications/ticket/T-1"
        );
        assert_eq!(
            t.render(Kind::Case, "a b/c?d#e%f&g=h").unwrap().path(),
            "/v1/justifications/case/a%20b%2Fc%3Fd%23e%25f%26g%3Dh"
        );
        assert_eq!(
            t.render(Kind::Matter, "ü").unwrap().path(),
            "/v1/justifications/matter/%C3%BC"
        );
        assert_eq!(
            t.render(Kind::Matter, "..").unwrap().path(),
            "/v1/justifications/matter/%2E%2E"
        );
        assert_eq!(percent_encode("A-z_0.9~"), "A-z_0.9~");
        let q = UrlTemplate::parse("https://c.internal/lookup?kind={kind}&id={id}", false).unwrap();
        assert_eq!(
            q.render(Kind::Case, "x&y").unwrap().query(),
            Some("kind=case&id=x%26y")
        );
    }

    #[test]
    fn refuses_bad_templates() {
        let bad = [
            ("https://cases.internal/v1/{id}", "both"),
            ("https://cases.internal/v1/{kind}", "both"),
            ("https://{kind}.internal/{id}", "after the host"),
            ("https://cases.internal{kind}/{id}", "after the host"),
            ("{kind}/{id}", "must start"),
            ("https://c.internal/{kind}/{ID}", "unknown placeholder"),
            ("https://c.internal/{kind}/{id}}", "unknown placeholder"),
            ("http://cases.internal/{kind}/{id}", "loopback"),
            ("ftp://cases.internal/{kind}/{id}", "https://"),
        ];
        for (text, want) in bad {
            let e = UrlTemplate::parse(text, false).unwrap_err();
            assert!(e.contains(want), "{text}: {e}");
        }
        assert!(UrlTemplate::parse("http://127.0.0.1:8/{kind}/{id}", false).is_ok());
        assert!(UrlTemplate::parse("http://cases.internal/{kind}/{id}", true).is_ok());
    }
}
