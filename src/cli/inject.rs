//! `purposegate inject`: argument parsing and I/O around `crate::inject`.
//! Reads manifests from a file or stdin, writes them to stdout, reports the
//! injected workloads, changes to the ConfigMap and warnings on stderr.

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
    /// Sidecar image: yours, built from the repository's Dockerfile (the
    /// default names no published image; docs/kubernetes.md).
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
    /// PersistentVolumeClaim for the audit log (default: an emptyDir). Only
    /// for one replica: refused for a workload with more (a StatefulSet with
    /// a volumeClaimTemplate named purposegate-audit gets one per replica).
    #[arg(long)]
    pub audit_claim: Option<String>,
    /// Port of the proxy (client-facing) listener [default: the ConfigMap's
    /// `listen` when it is in the input, else 8443]. With the ConfigMap in
    /// the input, its config.yaml is changed to listen there.
    #[arg(long)]
    pub proxy_port: Option<u16>,
    /// Port of the admin listener (/metrics /healthz /readyz) [default: the
    /// ConfigMap's `admin_listen`, else 9100]; written into the ConfigMap too.
    #[arg(long)]
    pub admin_port: Option<u16>,
    /// The store's own port, on 127.0.0.1 only [default: the ConfigMap's
    /// loopback upstream, else 9090]; written into the ConfigMap's upstream url.
    #[arg(long)]
    pub store_port: Option<u16>,
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
    for c in &out.changes {
        eprintln!("changed {c}");
    }
    for w in &out.warnings {
        eprintln!("warning: {w}");
    }
    if args.image == InjectOptions::default().image && !out.workloads.is_empty() {
        eprintln!(
            "warning: no --image given, and {} is not published: build the image from the repository's Dockerfile, push it to your registry and pass --image (docs/kubernetes.md)",
            args.image
        );
    }
    if out.workloads.is_empty() {
        eprintln!("warning: no Deployment or StatefulSet in the input");
    }
    for w in &out.workloads {
        eprintln!("injected {w}");
    }
    ExitCode::SUCCESS
}
