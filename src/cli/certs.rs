//! `purposegate certs dev DIR`: writes a development CA, a server certificate
//! for localhost/127.0.0.1/::1 and a client certificate (all signed by the
//! CA) as PEM files; private keys are mode 0600. For local TLS and mTLS only.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::fail;
use crate::tls::dev;

/// What goes where: (file name, contents, is a private key).
fn files(pki: &dev::DevPki) -> [(&'static str, &str, bool); 6] {
    [
        ("ca.pem", pki.ca.cert_pem(), false),
        ("ca.key", pki.ca.key_pem(), true),
        ("server.pem", &pki.server.cert_pem, false),
        ("server.key", &pki.server.key_pem, true),
        ("client.pem", &pki.client.cert_pem, false),
        ("client.key", &pki.client.key_pem, true),
    ]
}

/// Generates the dev PKI into `dir` and prints what it wrote.
pub fn dev(dir: &Path, days: i64, force: bool) -> ExitCode {
    match write_dev(dir, days, force) {
        Ok(written) => {
            for (path, what) in written {
                println!("{:<28} {what}", path.display());
            }
            println!(
                "config:  tls: {{cert_file: {d}/server.pem, key_file: {d}/server.key, client_ca_file: {d}/ca.pem}}",
                d = dir.display()
            );
            println!(
                "try:     curl --cacert {d}/ca.pem --cert {d}/client.pem --key {d}/client.key https://localhost:8080/...",
                d = dir.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}

fn write_dev(dir: &Path, days: i64, force: bool) -> Result<Vec<(PathBuf, &'static str)>, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let pki = dev::generate(days).map_err(|e| format!("cannot generate certificates: {e}"))?;
    let files = files(&pki);
    if !force {
        if let Some((name, _, _)) = files.iter().find(|(n, _, _)| dir.join(n).exists()) {
            return Err(format!(
                "{}: exists; use --force to replace the dev certificates",
                dir.join(name).display()
            ));
        }
    }
    let mut written = Vec::new();
    for (name, text, private) in files {
        let path = dir.join(name);
        if private {
            write_private(&path, text.as_bytes())?;
        } else {
            std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
        }
        written.push((path, describe(name)));
    }
    Ok(written)
}

/// Writes a key readable by its owner only, also when the file existed.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), String> {
    super::write_private_file(path, bytes)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(())
}

fn describe(name: &str) -> &'static str {
    match name {
        "ca.pem" => "dev CA certificate (trust it; tls.client_ca_file, upstream ca_file)",
        "ca.key" => "dev CA private key (0600)",
        "server.pem" => "server certificate: localhost, 127.0.0.1, ::1 (tls.cert_file)",
        "server.key" => "server private key (0600, tls.key_file)",
        "client.pem" => "client certificate CN=purposegate-dev-client (mTLS)",
        _ => "client private key (0600)",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_six_files_keys_private_and_refuses_to_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let written = write_dev(dir.path(), 30, false).unwrap();
        assert_eq!(written.len(), 6);
        for (path, _) in &written {
            let text = std::fs::read_to_string(path).unwrap();
            assert!(text.starts_with("-----BEGIN "), "{}", path.display());
            #[cfg(unix)]
            if path.extension().is_some_and(|e| e == "key") {
                use std::os::unix::fs::PermissionsExt;
                let mode = std::fs::metadata(path).unwrap().permissions().mode();
                assert_eq!(mode & 0o777, 0o600, "{}", path.display());
            }
        }
        let e = write_dev(dir.path(), 30, false).unwrap_err();
        assert!(e.contains("--force"), "{e}");
        assert!(write_dev(dir.path(), 30, true).is_ok());
    }
}
