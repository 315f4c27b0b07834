//! Reading PEM files: certificate chains, private keys and CA bundles, via
//! `rustls-pki-types`' `PemObject`. Every error names the file.

use std::path::Path;
use std::sync::Arc;

use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::TlsError;

/// Reads a whole file (small: certificates and keys).
pub fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Every `CERTIFICATE` block of a PEM text; at least one.
pub fn certs(path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(path, &e))?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            path: path.to_path_buf(),
            message: "no CERTIFICATE block found".into(),
        });
    }
    Ok(certs)
}

/// The first private key (PKCS#8, PKCS#1 or SEC1) of a PEM text.
pub fn key(path: &Path, pem: &[u8]) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| pem_error(path, &e))
}

/// A root store of every certificate in a PEM CA bundle.
pub fn roots(path: &Path) -> Result<Arc<RootCertStore>, TlsError> {
    let mut store = RootCertStore::empty();
    for cert in certs(path, &read(path)?)? {
        store
            .add(cert)
            .map_err(|e| TlsError::invalid(path, format!("not a usable CA certificate: {e}")))?;
    }
    Ok(Arc::new(store))
}

/// Reads a certificate chain and its key from two files.
pub fn pair(
    cert_file: &Path,
    key_file: &Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let chain = certs(cert_file, &read(cert_file)?)?;
    let key = key(key_file, &read(key_file)?)?;
    Ok((chain, key))
}

fn pem_error(path: &Path, e: &rustls_pki_types::pem::Error) -> TlsError {
    let message = match e {
        rustls_pki_types::pem::Error::NoItemsFound => {
            "no PEM block of the expected kind found".into()
        }
        other => format!("not valid PEM: {other}"),
    };
    TlsError::Pem {
        path: path.to_path_buf(),
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_file() {
        let p = Path::new("/nowhere/cert.pem");
        assert!(read(p)
            .unwrap_err()
            .to_string()
            .starts_with("/nowhere/cert.pem: cannot read"));
        let e = certs(p, b"not pem at all").unwrap_err();
        assert!(e.to_string().contains("no CERTIFICATE block"), "{e}");
        let e = key(
            p,
            b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap_err();
        assert!(e.to_string().starts_with("/nowhere/cert.pem: "), "{e}");
    }
}
