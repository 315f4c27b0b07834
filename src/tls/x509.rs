//! What the proxy needs to know about a certificate: its subject, rendered
//! short for the audit record, and its `notAfter` for the expiry metric.

use rustls_pki_types::CertificateDer;

/// The longest subject recorded; longer ones are cut (a DN is attacker
/// supplied only through a CA the operator trusts, but stays bounded anyway).
const MAX_SUBJECT: usize = 256;

/// The subject DN (RFC 4514 style, e.g. `CN=alice, O=Example`); `None` when
/// the certificate does not parse.
pub fn subject(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let mut dn = parsed.subject().to_string();
    if dn.len() > MAX_SUBJECT {
        let mut end = MAX_SUBJECT;
        while !dn.is_char_boundary(end) {
            end -= 1;
        }
        dn.truncate(end);
    }
    Some(dn)
}

/// The certificate's `notAfter` as Unix seconds.
pub fn not_after(cert: &CertificateDer<'_>) -> Option<i64> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    Some(parsed.validity().not_after.timestamp())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::dev::DevCa;

    #[test]
    fn reads_subject_and_not_after() {
        let ca = DevCa::new("Test CA").unwrap();
        let leaf = ca.client("alice", 30).unwrap();
        let der = leaf.cert_der();
        let s = subject(&der).unwrap();
        assert!(s.contains("CN=alice"), "{s}");
        let days = (not_after(&der).unwrap() - crate::time::now_millis() / 1000) / 86_400;
        assert!((29..=30).contains(&days), "{days}");
        assert_eq!(subject(&CertificateDer::from(vec![1, 2, 3])), None);
    }
}
