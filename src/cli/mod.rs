//! The command line (docs/reference.md §1). Each command is a thin call into the
//! modules that own the work; this file only parses arguments and prints.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

mod audit_db;
mod certs;
mod consent;
pub mod demo;
mod explain;
mod inject;
mod token;
pub use crate::files::write_private_file;

use crate::config::Config;

#[derive(Parser)]
#[command(
    name = "purposegate",
    version,
    about = "Purpose-bound access-control reverse proxy for stores of user content.\n\nEvery read of user content must carry a JWT that states a lawful purpose (abuse, support, legal, training), a justification, the users it is scoped to and a current security-and-privacy training certification. purposegate checks all of it, writes a tamper-evident audit record of every attempt and forwards only authorized reads."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the proxy (client listener + admin listener with /metrics /healthz /readyz).
    Serve(ConfigArg),
    /// Run everything on loopback with no setup: a sample content store, the proxy with dev keys,
    /// and ready-to-paste curl lines showing an allowed read per purpose and several denials.
    Demo(DemoArgs),
    /// Validate or test the access policy.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Print the decision for a token and request, its reason code and every check made,
    /// without contacting the upstream.
    Explain(ExplainArgs),
    /// Development tokens and keys.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Audit log tools.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Add the purposegate sidecar to Deployments/StatefulSets in Kubernetes manifests
    /// (file or stdin) and write them to stdout.
    Inject(Box<inject::InjectArgs>),
    /// TLS certificates for development.
    #[command(subcommand)]
    Certs(CertsCommand),
    /// PostgreSQL consent registry: apply migrations, import a consent file.
    #[command(subcommand)]
    Consent(consent::ConsentCommand),
}

#[derive(Subcommand)]
pub enum CertsCommand {
    /// Write a dev CA, a server certificate for localhost/127.0.0.1/::1 and a client
    /// certificate into DIR (ca.pem, ca.key, server.pem, server.key, client.pem, client.key;
    /// keys mode 0600). For local TLS and mTLS only.
    Dev {
        dir: PathBuf,
        /// Validity of the server and client certificates in days.
        #[arg(long, default_value_t = 365)]
        days: i64,
        /// Replace existing files.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Args)]
pub struct ConfigArg {
    /// The config file (YAML, docs/reference.md §2).
    #[arg(long, env = "PURPOSEGATE_CONFIG")]
    pub config: PathBuf,
}

#[derive(Args)]
pub struct DemoArgs {
    /// Client-facing address of the demo proxy (an ephemeral port is used if busy).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// Admin address of the demo proxy (an ephemeral port is used if busy).
    #[arg(long, default_value = "127.0.0.1:9100")]
    pub admin_listen: String,
    /// Where to write the demo's config, keys, policy and audit log (default: a new temp dir).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Print the walkthrough, then stop instead of serving until Ctrl-C.
    #[arg(long)]
    pub once: bool,
}

#[derive(Subcommand)]
pub enum PolicyCommand {
    /// Validate the config, the policy files and the consent file; errors as `file:line: message`.
    Check {
        /// The config file (default: $PURPOSEGATE_CONFIG, else ./purposegate.yaml).
        #[arg(long, env = "PURPOSEGATE_CONFIG", default_value = "purposegate.yaml")]
        config: PathBuf,
    },
    /// Run decision test cases (YAML) against the policy; prints `N passed, N failed`.
    Test {
        /// Directory of test case files (e.g. policies/tests).
        dir: PathBuf,
        /// Take the policy and consent file from this config instead of DIR's parent directory.
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

#[derive(Args)]
pub struct ExplainArgs {
    #[arg(long, env = "PURPOSEGATE_CONFIG")]
    pub config: PathBuf,
    /// The bearer token (with or without the "Bearer " prefix). Prefer
    /// --token-file: a token on the command line stays in shell history.
    #[arg(
        long,
        required_unless_present = "token_file",
        conflicts_with = "token_file"
    )]
    pub token: Option<String>,
    /// Read the token from this file (`-`: standard input).
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// HTTP method, e.g. GET.
    pub method: String,
    /// Request path, e.g. /v1/users/u1/conversations/c1.
    pub path: String,
    /// Simulated response metadata header of the upstream, e.g. x-content-owner:u1 (repeatable).
    #[arg(long = "meta", value_name = "NAME:VALUE")]
    pub meta: Vec<String>,
    /// Simulated request header, e.g. X-HTTP-Method-Override:DELETE (repeatable).
    #[arg(long = "header", value_name = "NAME:VALUE")]
    pub headers: Vec<String>,
    /// Evaluate at this time (RFC 3339) instead of now.
    #[arg(long)]
    pub now: Option<String>,
}

#[derive(Subcommand)]
pub enum TokenCommand {
    /// Mint a token for development and tests.
    Mint(Box<MintArgs>),
    /// Generate a dev signing key: writes DIR/<kid>.pem (private) and DIR/jwks.json (public).
    Keygen {
        #[arg(long, default_value = "ES256")]
        alg: String,
        #[arg(long, default_value = "dev-1")]
        kid: String,
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Args)]
pub struct MintArgs {
    /// Signing algorithm (RS256, RS384, RS512, PS256, ES256, ES384, EdDSA, HS256).
    #[arg(long, default_value = "ES256")]
    pub alg: String,
    /// Private key PEM file (asymmetric algorithms).
    #[arg(long, conflicts_with = "secret_file")]
    pub key: Option<PathBuf>,
    /// HS256 secret file.
    #[arg(long)]
    pub secret_file: Option<PathBuf>,
    #[arg(long)]
    pub kid: Option<String>,
    #[arg(long, default_value = "https://idp.example.test")]
    pub iss: String,
    #[arg(long, default_value = "purposegate")]
    pub aud: String,
    /// Employee id.
    #[arg(long, default_value = "e-dev")]
    pub sub: String,
    /// Role (repeatable).
    #[arg(long = "role")]
    pub roles: Vec<String>,
    #[arg(long)]
    pub purpose: Option<String>,
    #[arg(long)]
    pub case_id: Option<String>,
    #[arg(long)]
    pub ticket_id: Option<String>,
    #[arg(long)]
    pub matter_id: Option<String>,
    /// A user id the access is scoped to (repeatable).
    #[arg(long = "subject")]
    pub subjects: Vec<String>,
    /// Days until the training certification expires (negative: already expired).
    #[arg(long, default_value_t = 180, allow_negative_numbers = true)]
    pub cert_days: i64,
    /// Leave out training_cert_exp.
    #[arg(long)]
    pub no_cert: bool,
    /// Lifetime in seconds. Above 3600 the proxy refuses the token unless
    /// `jwt.max_lifetime_seconds` is raised; negative: a token that expired
    /// that many seconds ago (for tests).
    #[arg(long, default_value_t = 900, allow_negative_numbers = true)]
    pub ttl: i64,
    #[arg(long)]
    pub jti: Option<String>,
    /// Any other string claim, NAME=VALUE (repeatable).
    #[arg(long = "claim", value_name = "NAME=VALUE")]
    pub claims: Vec<String>,
}

#[derive(Subcommand)]
pub enum AuditCommand {
    /// Verify the hash chain of one or more audit files (given oldest first:
    /// rotated files, then the live file, e.g. `audit.jsonl.[0-9]* audit.jsonl`)
    /// and, with --public-key, every checkpoint signature. A first file that
    /// starts after seq 1 (the live file after a rotation) is checked as a
    /// continuation of the records before it, and the output says so.
    ///
    /// With --postgres: every chain stored in the central database instead (exit 1 names the
    /// instance, chain and seq of the first fault).
    Verify {
        /// Ed25519 public key of the checkpoints (PEM or raw base64; `audit keygen` writes it).
        #[arg(long)]
        public_key: Option<PathBuf>,
        /// Require the files to hold the whole chain, from seq 1.
        #[arg(long)]
        from_genesis: bool,
        #[arg(required_unless_present = "postgres", conflicts_with = "postgres")]
        files: Vec<PathBuf>,
        #[command(flatten)]
        pg: audit_db::PgArgs,
        /// With --postgres: only this instance's chains.
        #[arg(long, requires = "postgres")]
        instance: Option<String>,
    },
    /// Generate an Ed25519 checkpoint signing key: DIR/audit-signing.pem (private, 0600)
    /// and DIR/audit-signing.pub.pem (public, for `audit verify --public-key`).
    Keygen {
        #[arg(long)]
        out: PathBuf,
    },
    /// Create or update the central audit tables (audit.ship's database) and the monthly
    /// partitions ahead; safe to run again and from several replicas at once.
    Migrate {
        #[arg(long, env = "PURPOSEGATE_CONFIG")]
        config: PathBuf,
        /// Months of partitions to create beyond the current one.
        #[arg(long, default_value_t = crate::audit::ship::schema::DEFAULT_MONTHS_AHEAD)]
        months_ahead: u32,
    },
    /// Every access (allowed and denied) of one owner, employee or justification, oldest first,
    /// from every replica, out of the central database.
    Report(Box<audit_db::ReportArgs>),
    /// Ship the local log of a proxy that is not running (e.g. a volume left by a crashed pod)
    /// to the central database, deleting the rotated files then stored.
    Ship {
        #[arg(long, env = "PURPOSEGATE_CONFIG")]
        config: PathBuf,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 600)]
        timeout_seconds: u64,
    },
}

#[cfg(unix)]
fn restore_sigpipe() {
    // SAFETY: resets one signal's disposition before any thread writes.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

#[cfg(not(unix))]
fn restore_sigpipe() {}

/// Runs the parsed command; the exit code follows docs/reference.md §1.
pub fn run(cli: Cli) -> ExitCode {
    if !matches!(cli.command, Command::Serve(_) | Command::Demo(_)) {
        // A report piped into `head` ends quietly, as other Unix tools do,
        // instead of panicking on the closed pipe. The servers keep SIGPIPE
        // ignored: a client closing its socket must never kill them.
        restore_sigpipe();
    }
    match cli.command {
        Command::Serve(a) => serve(&a.config),
        Command::Demo(a) => demo::run(a),
        Command::Policy(PolicyCommand::Check { config }) => policy_check(&config),
        Command::Policy(PolicyCommand::Test { dir, config }) => {
            policy_test(&dir, config.as_deref())
        }
        Command::Explain(a) => explain::run(&a),
        Command::Token(TokenCommand::Mint(a)) => token::mint(&a),
        Command::Token(TokenCommand::Keygen { alg, kid, out }) => token::keygen(&alg, &kid, &out),
        Command::Audit(AuditCommand::Verify {
            files,
            public_key,
            pg,
            instance,
            from_genesis,
        }) => match pg.postgres {
            Some(_) => audit_db::verify_postgres(&pg, instance.as_deref(), public_key.as_deref()),
            None => audit_verify(&files, public_key.as_deref(), from_genesis),
        },
        Command::Audit(AuditCommand::Migrate {
            config,
            months_ahead,
        }) => audit_db::migrate(&config, months_ahead),
        Command::Audit(AuditCommand::Report(a)) => audit_db::report(&a),
        Command::Audit(AuditCommand::Ship {
            config,
            timeout_seconds,
        }) => audit_db::ship(&config, std::time::Duration::from_secs(timeout_seconds)),
        Command::Audit(AuditCommand::Keygen { out }) => audit_keygen(&out),
        Command::Inject(a) => inject::run(&a),
        Command::Certs(CertsCommand::Dev { dir, days, force }) => certs::dev(&dir, days, force),
        Command::Consent(c) => consent::run(c),
    }
}

/// Prints an error and returns exit code 1.
pub fn fail(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("{message}");
    ExitCode::FAILURE
}

/// The runtime `serve` runs on (`worker_threads`, see docs/configuration.md).
fn runtime(worker_threads: Option<usize>) -> std::io::Result<tokio::runtime::Runtime> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    match worker_threads_for(worker_threads, cpus) {
        0 => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        n => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n)
            .enable_all()
            .build(),
    }
}

/// Worker threads for `serve` (0: one current-thread runtime). Unset, a
/// process that may use one CPU (its affinity mask or cgroup quota, as a
/// sidecar limited to one core) runs current-thread: on one CPU the
/// multi-thread scheduler's hand-offs cost more than they give (bench/peers.sh
/// `pg-ct`: 1.16x the requests at 64 connections); with more CPUs, one worker
/// per CPU.
fn worker_threads_for(configured: Option<usize>, cpus: usize) -> usize {
    match configured {
        Some(n) => n,
        None if cpus <= 1 => 0,
        None => cpus,
    }
}

fn serve(config: &Path) -> ExitCode {
    crate::logging::init_json();
    // Everything `policy check` checks, before any port is bound.
    let config = match crate::preflight::preflight_file(config) {
        Ok((c, _)) => c,
        Err(e) => return fail(e),
    };
    let rt = match runtime(config.worker_threads) {
        Ok(rt) => rt,
        Err(e) => return fail(format!("cannot start the runtime: {e}")),
    };
    match rt.block_on(crate::server::serve(config)) {
        Ok(done) if done.clean() => ExitCode::SUCCESS,
        Ok(done) => {
            // The log said what is left; the exit code says that something is.
            eprintln!(
                "purposegate: stopped with {}",
                if done.shipped == Some(false) {
                    "audit records not yet shipped to PostgreSQL (they stay on the local volume)"
                } else {
                    "audit records that could not be written"
                }
            );
            ExitCode::from(3)
        }
        Err(e) => fail(e),
    }
}

fn policy_check(config: &Path) -> ExitCode {
    let (config, checked) = match crate::preflight::preflight_file(config) {
        Ok(loaded) => loaded,
        Err(e) => return fail(e),
    };
    let policy = &checked.policy;
    let consent = if config.consent_db.is_some() {
        "consent in PostgreSQL (not contacted)".to_string()
    } else {
        format!(
            "{} users and {} orgs in the consent registry",
            checked.consent.users.len(),
            checked.consent.orgs.len()
        )
    };
    // As serve builds it (checked against the policy, files read; the case
    // service is not contacted).
    let metrics = crate::metrics::Metrics::new().0;
    let justified = match crate::state::build_justifications(&config, policy, &metrics) {
        Ok(j) => j.map(|j| justified_purposes(policy, &j)),
        Err(e) => return fail(e),
    };
    let budgets = match check_budgets(&config) {
        Ok(b) => b,
        Err(e) => return fail(e),
    };
    println!(
        "ok: {} purposes, {} roles, {} routes, {consent}{}{budgets} (policy {})",
        policy.purposes.len(),
        policy.roles.len(),
        policy.routes.routes().len(),
        justification_note(justified.as_deref()),
        &policy.digest[..policy.digest.len().min(12)]
    );
    ExitCode::SUCCESS
}

/// The purposes the live justification check applies to, sorted.
fn justified_purposes(
    policy: &crate::policy::Policy,
    j: &crate::justification::Justifications,
) -> Vec<String> {
    let mut names: Vec<String> = policy
        .purposes
        .values()
        .filter(|p| {
            j.kind_for(&p.name, p.justification_claim.as_deref())
                .is_some()
        })
        .map(|p| p.name.clone())
        .collect();
    names.sort();
    names
}

/// `, justifications checked for a, b (case service not contacted)`, or nothing.
fn justification_note(checked: Option<&[String]>) -> String {
    match checked {
        Some(names) => format!(
            ", justifications checked for {} (case service not contacted)",
            names.join(", ")
        ),
        None => String::new(),
    }
}

/// The `budgets:` section as `serve` loads it (its limits' purposes were
/// checked with the policy; here the password and hash key are read),
/// without contacting Redis. Returns the summary for the `ok:` line.
fn check_budgets(c: &Config) -> Result<String, crate::config::ConfigError> {
    let Some(b) = &c.budgets else {
        return Ok(String::new());
    };
    b.check_secrets()
        .map_err(|e| crate::config::ConfigError::new(&b.file, None, e.to_string()))?;
    let mut purposes: Vec<&str> = Vec::new();
    for l in &b.limits {
        if !purposes.contains(&l.purpose.as_str()) {
            purposes.push(&l.purpose);
        }
    }
    Ok(format!(
        ", {} access budget limits for {} (Redis not contacted)",
        b.limits.len(),
        purposes.join(", ")
    ))
}

fn policy_test(dir: &Path, config: Option<&Path>) -> ExitCode {
    use crate::consent::file::ConsentData;
    use crate::policy::{load, testcases};
    let loaded = match config {
        Some(c) => Config::load(c).and_then(|c| {
            let (policy, consent) = crate::state::load_policy_and_consent(&c)?;
            if let Some(j) = &c.justifications {
                j.check_policy(&policy)?;
            }
            Ok((policy, consent, c.justifications))
        }),
        None => {
            let policy_dir = default_policy_dir(dir);
            let consent_file = policy_dir.join("consent.yaml");
            let consent = if consent_file.exists() {
                ConsentData::load(&consent_file)
            } else {
                Ok(ConsentData::default())
            };
            consent.and_then(|consent| {
                Ok((
                    load::load_dir(&policy_dir, &[consent_file.as_path()])?,
                    consent,
                    None,
                ))
            })
        }
    };
    let (policy, consent, justifications) = match loaded {
        Ok(l) => l,
        Err(e) => return fail(e),
    };
    let cases = match testcases::load_cases(dir) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    // Never calls out: cases state the case service's answer inline.
    let suite = testcases::Suite {
        policy: &policy,
        consent: &consent,
        justifications: justifications.as_ref(),
    };
    let report = testcases::run_suite(suite, &cases);
    println!("{}", report.render().trim_end());
    if report.failed == 0 && report.passed > 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Where `policy test` looks for the policy without `--config`: the parent
/// of the folder holding the cases (for a single case file, of the file's
/// folder), e.g. `policies/` for `policies/tests` and `policies/tests/a.yaml`.
fn default_policy_dir(cases: &Path) -> PathBuf {
    let folder = if cases.is_file() {
        cases.parent().unwrap_or(Path::new(""))
    } else {
        cases
    };
    let folder = if folder.as_os_str().is_empty() {
        Path::new(".")
    } else {
        folder
    };
    match folder.parent() {
        Some(p) if !p.as_os_str().is_empty() && !folder.ends_with("..") => p.to_path_buf(),
        Some(_) if !folder.ends_with("..") && folder != Path::new(".") => PathBuf::from("."),
        _ => folder.join(".."),
    }
}

fn audit_verify(files: &[PathBuf], public_key: Option<&Path>, from_genesis: bool) -> ExitCode {
    use crate::audit::verify::{verify, VerifyOptions};
    let key = match public_key.map(crate::audit::sign::PublicKey::load) {
        None => None,
        Some(Ok(k)) => Some(k),
        Some(Err(e)) => return fail(format!("audit verify: {e}")),
    };
    let opts = VerifyOptions {
        key: key.as_ref(),
        from_genesis,
    };
    match verify(files, opts) {
        Ok(report) => {
            println!("{}", crate::audit::verify::render(&report, key.as_ref()));
            ExitCode::SUCCESS
        }
        Err(e) => fail(format!("audit verify failed: {e}")),
    }
}

fn audit_keygen(out: &Path) -> ExitCode {
    match crate::audit::sign::keygen(out) {
        Ok(g) => {
            println!(
                "wrote {} (private, keep it secret; set audit.checkpoint.key_file)\nwrote {} (public, for `audit verify --public-key`)\nkey id {}",
                g.private.display(),
                g.public.display(),
                g.key_id
            );
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}

#[cfg(test)]
mod runtime_tests {
    use super::worker_threads_for;

    #[test]
    fn one_cpu_runs_current_thread_unless_configured() {
        assert_eq!(worker_threads_for(None, 1), 0);
        assert_eq!(worker_threads_for(None, 4), 4);
        assert_eq!(worker_threads_for(Some(2), 1), 2);
        assert_eq!(worker_threads_for(Some(0), 8), 0);
    }
}
