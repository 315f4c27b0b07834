//! A development PKI made with rcgen: a CA, server certificates for local
//! names and client certificates, all signed by the CA (ECDSA P-256). Used by
//! `purposegate certs dev` and by tests; never for production.

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SerialNumber,
};
use rustls_pki_types::CertificateDer;
use time::{Duration, OffsetDateTime};

/// The organisation name on every dev certificate.
const ORG: &str = "purposegate dev";

/// The names a dev server certificate covers by default.
pub const LOCAL_NAMES: &[&str] = &["localhost", "127.0.0.1", "::1"];

/// A dev certificate authority that can issue leaves.
pub struct DevCa {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
    key_pem: String,
}

/// An issued certificate and its private key, PEM.
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
    der: CertificateDer<'static>,
}

impl Issued {
    pub fn cert_der(&self) -> CertificateDer<'static> {
        self.der.clone()
    }

    /// An issued pair read back from PEM (e.g. files `certs dev` wrote).
    /// The DER is empty when `cert_pem` holds no certificate.
    pub fn from_pem(cert_pem: String, key_pem: String) -> Issued {
        use rustls_pki_types::pem::PemObject;
        let der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .unwrap_or_else(|_| CertificateDer::from(Vec::new()));
        Issued {
            cert_pem,
            key_pem,
            der,
        }
    }
}

/// Everything `certs dev` writes.
pub struct DevPki {
    pub ca: DevCa,
    pub server: Issued,
    pub client: Issued,
}

/// A CA, a server certificate for localhost/127.0.0.1/::1 and a client
/// certificate, leaves valid for `days`.
pub fn generate(days: i64) -> Result<DevPki, rcgen::Error> {
    let ca = DevCa::new("purposegate dev CA")?;
    let server = ca.server("localhost", LOCAL_NAMES, days)?;
    let client = ca.client("purposegate-dev-client", days)?;
    Ok(DevPki { ca, server, client })
}

impl DevCa {
    /// A new self-signed CA valid for ten years.
    pub fn new(common_name: &str) -> Result<DevCa, rcgen::Error> {
        let mut params = base_params(common_name, Vec::new(), 3650)?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        Ok(DevCa {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            issuer: Issuer::new(params, key),
        })
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// A server certificate for `names` (DNS names or IP addresses).
    pub fn server(
        &self,
        common_name: &str,
        names: &[&str],
        days: i64,
    ) -> Result<Issued, rcgen::Error> {
        let names = names.iter().map(|n| n.to_string()).collect();
        self.issue(
            common_name,
            names,
            days,
            ExtendedKeyUsagePurpose::ServerAuth,
        )
    }

    /// A client certificate whose subject is `CN=<common_name>, O=purposegate dev`.
    pub fn client(&self, common_name: &str, days: i64) -> Result<Issued, rcgen::Error> {
        self.issue(
            common_name,
            Vec::new(),
            days,
            ExtendedKeyUsagePurpose::ClientAuth,
        )
    }

    fn issue(
        &self,
        common_name: &str,
        names: Vec<String>,
        days: i64,
        usage: ExtendedKeyUsagePurpose,
    ) -> Result<Issued, rcgen::Error> {
        let mut params = base_params(common_name, names, days)?;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![usage];
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
        })
    }
}

/// Subject, names, a random serial and a validity from yesterday (clock
/// skew) to `days` from now.
fn base_params(
    common_name: &str,
    names: Vec<String>,
    days: i64,
) -> Result<CertificateParams, rcgen::Error> {
    let mut params = CertificateParams::new(names)?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn.push(DnType::OrganizationName, ORG);
    params.distinguished_name = dn;
    let mut serial: [u8; 16] = rand::random();
    serial[0] &= 0x7f; // a positive INTEGER
    params.serial_number = Some(SerialNumber::from_slice(&serial));
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::days(1);
    params.not_after = now + Duration::days(days.max(1));
    Ok(params)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::x509;
    use rustls::client::danger::ServerCertVerifier;

    #[test]
    fn leaves_chain_to_the_ca() {
        let pki = generate(30).unwrap();
        let subject = x509::subject(&pki.client.cert_der()).unwrap();
        assert!(subject.contains("CN=purposegate-dev-client"), "{subject}");
        // The server leaf verifies against the CA for every local name.
        let roots = {
            let mut r = rustls::RootCertStore::empty();
            let ca = rustls_pki_types::pem::PemObject::from_pem_slice(pki.ca.cert_pem().as_bytes())
                .unwrap();
            r.add(ca).unwrap();
            std::sync::Arc::new(r)
        };
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            roots,
            crate::tls::provider(),
        )
        .build()
        .unwrap();
        for name in LOCAL_NAMES {
            let name = rustls_pki_types::ServerName::try_from(*name).unwrap();
            verifier
                .verify_server_cert(
                    &pki.server.cert_der(),
                    &[],
                    &name,
                    &[],
                    rustls_pki_types::UnixTime::now(),
                )
                .unwrap();
        }
        assert_ne!(pki.server.key_pem, pki.client.key_pem);
    }
}
