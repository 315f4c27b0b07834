//! `purposegate inject`: argument parsing and I/O around `crate::inject`.
//! Reads manifests from a file or stdin, writes them to stdout, reports the
//! injected workloads and warnings on stderr.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{ArgGroup, Args};

use crate::inject::{inject_str, InjectOptions, Selection};

#[derive(Args)]
#[command(group(ArgGroup::new("select").required(true).args(["all", "workload"])))]
pub struct InjectArgs {
    /// Manifest file (YAML, multi-document); `-` or absent: stdin.
    pub file: Option<PathBuf>,
    /// Inject every Deployment and StatefulSet.
    #[arg(long)]
    pub all: bool,
    /// Inject the Deployment/StatefulSet with this name (repeatable).
    #[arg(long, value_name = "NAME")]
    pub workload: Vec<String>,
    /// Sidecar image.
    #[arg(long, default_value_t = InjectOptions::default().image)]
    pub image: String,
    /// ConfigMap holding config.yaml, policy.yaml and consent.yaml.
    #[arg(long, default_value = "purposegate-config")]
    pub config_map: String,
    /// Secret holding jwks.json (JWT verification keys).
    #[arg(long, default_value = "purposegate-jwt")]
    pub jwt_secret: String,
    /// Do not mount a JWT key Secret (e.g. keys come from the ConfigMap).
    #[arg(long, conflicts_with = "jwt_secret")]
    pub no_jwt_secret: bool,
    /// Secret holding tls.crt, tls.key and optionally ca.crt (mounted at
    /// /var/run/secrets/purposegate/tls).
    #[arg(long)]
    pub tls_secret: Option<String>,
    /// PersistentVolumeClaim for the audit log (default: an emptyDir).
    #[arg(long)]
    pub audit_claim: Option<String>,
    /// Port of the proxy (client-facing) listener.
    #[arg(long, default_value_t = 8443)]
    pub proxy_port: u16,
    /// Port of the admin listener (/metrics /healthz /readyz).
    #[arg(long, default_value_t = 9100)]
    pub admin_port: u16,
    /// The store's own port (it must listen on 127.0.0.1 only).
    #[arg(long, default_value_t = 9090)]
    pub store_port: u16,
}

impl InjectArgs {
    fn options(&self) -> InjectOptions {
        InjectOptions {
            selection: if self.all {
                Selection::All
            } else {
                Selection::Names(self.workload.clone())
            },
            image: self.image.clone(),
            config_map: self.config_map.clone(),
            jwt_secret: (!self.no_jwt_secret).then(|| self.jwt_secret.clone()),
            tls_secret: self.tls_secret.clone(),
            audit_claim: self.audit_claim.clone(),
            proxy_port: self.proxy_port,
            admin_port: self.admin_port,
            store_port: self.store_port,
        }
    }
}

fn read_input(file: Option<&PathBuf>) -> Result<String, String> {
    let mut text = String::new();
    match file {
        Some(p) if p.as_os_str() != "-" => {
            text = std::fs::read_to_string(p)
                .map_err(|e| format!("{}: cannot read: {e}", p.display()))?;
        }
        _ => {
            std::io::stdin()
                .read_to_string(&mut text)
                .map_err(|e| format!("cannot read stdin: {e}"))?;
        }
    }
    Ok(text)
}

/// Runs `purposegate inject`.
pub fn run(args: &InjectArgs) -> ExitCode {
    let input = match read_input(args.file.as_ref()) {
        Ok(t) => t,
        Err(e) => return super::fail(e),
    };
    let out = match inject_str(&input, &args.options()) {
        Ok(o) => o,
        Err(e) => return super::fail(format!("inject: {e}")),
    };
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout.write_all(out.yaml.as_bytes()) {
        return super::fail(format!("cannot write stdout: {e}"));
    }
    for w in &out.warnings {
        eprintln!("warning: {w}");
    }
    if out.workloads.is_empty() {
        eprintln!("warning: no Deployment or StatefulSet in the input");
    }
    for w in &out.workloads {
        eprintln!("injected {w}");
    }
    ExitCode::SUCCESS
}
