//! The `justifications:` config section (docs/reference.md §10): raw YAML shape and
//! its validation into `JustificationsConfig`, plus which purposes the check
//! covers. Kept out of `config.rs` so that the shared config file only gains
//! a field.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_saphyr::Spanned;

use super::template::UrlTemplate;
use super::Kind;
use crate::config::{line_of, ConfigError};
use crate::policy::Policy;

/// The validated `justifications:` section.
#[derive(Debug, Clone)]
pub struct JustificationsConfig {
    /// The config file (for errors found when checked against the policy).
    pub file: PathBuf,
    pub url: UrlTemplate,
    /// `url` as written (for messages; it holds no secret).
    pub url_text: String,
    /// The purposes checked; `None`: every purpose with a justification claim.
    pub purposes: Option<Vec<String>>,
    /// Line of `purposes` (or of the section), for errors against the policy.
    pub purposes_line: Option<u32>,
    /// File holding the bearer credential sent to the service.
    pub bearer_token_file: Option<PathBuf>,
    /// Extra PEM CA certificates trusted for the service (besides webpki roots).
    pub ca_file: Option<PathBuf>,
    pub allow_insecure_http: bool,
    /// How long an answer (found or 404) is used without asking again.
    pub cache_ttl: Duration,
    /// How old a cached answer may be and still be used while the service fails.
    pub max_staleness: Duration,
    /// Bound of one lookup: connect, TLS, request, response and body.
    pub timeout: Duration,
    /// Bound of the cache, in (kind, id) entries.
    pub cache_max_entries: usize,
    /// After a failure, lookups with no usable cached answer fail at once
    /// for this long instead of each waiting for `timeout`.
    pub fail_fast: Duration,
}

/// The section as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawJustifications {
    url: Spanned<String>,
    #[serde(default)]
    purposes: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    bearer_token_file: Option<String>,
    #[serde(default)]
    ca_file: Option<String>,
    #[serde(default)]
    allow_insecure_http: bool,
    #[serde(default = "default_ttl")]
    cache_ttl_seconds: u64,
    #[serde(default)]
    max_staleness_seconds: Option<Spanned<u64>>,
    #[serde(default)]
    timeout_ms: Option<Spanned<u64>>,
    #[serde(default = "default_entries")]
    cache_max_entries: usize,
    #[serde(default)]
    fail_fast_ms: Option<Spanned<u64>>,
}

fn default_ttl() -> u64 {
    30
}
fn default_entries() -> usize {
    10_000
}
const DEFAULT_STALENESS_SECONDS: u64 = 300;
const DEFAULT_TIMEOUT_MS: u64 = 500;
const MAX_TIMEOUT_MS: u64 = 60_000;
const DEFAULT_FAIL_FAST_MS: u64 = 1000;
const MAX_FAIL_FAST_MS: u64 = 60_000;

impl RawJustifications {
    /// Validates the section (`section` is its whole span, for errors that
    /// have no finer location).
    pub fn validate(
        section: Spanned<RawJustifications>,
        file: &Path,
        resolve: &dyn Fn(&str) -> PathBuf,
    ) -> Result<JustificationsConfig, ConfigError> {
        let at = line_of(&section);
        let raw = section.value;
        let url = UrlTemplate::parse(&raw.url.value, raw.allow_insecure_http)
            .map_err(|m| ConfigError::at(file, &raw.url, format!("justifications.url: {m}")))?;
        let purposes = raw
            .purposes
            .as_ref()
            .map(|p| checked_purposes(file, p))
            .transpose()?;
        let ttl = Duration::from_secs(raw.cache_ttl_seconds);
        let staleness = seconds_or(&raw.max_staleness_seconds, DEFAULT_STALENESS_SECONDS);
        if staleness < ttl {
            let line = raw.max_staleness_seconds.as_ref().and_then(line_of).or(at);
            return Err(ConfigError::new(
                file,
                line,
                "justifications.max_staleness_seconds must be at least cache_ttl_seconds",
            ));
        }
        let timeout = bounded_ms(
            file,
            &raw.timeout_ms,
            "timeout_ms",
            (DEFAULT_TIMEOUT_MS, 1, MAX_TIMEOUT_MS),
        )?;
        let fail_fast = bounded_ms(
            file,
            &raw.fail_fast_ms,
            "fail_fast_ms",
            (DEFAULT_FAIL_FAST_MS, 0, MAX_FAIL_FAST_MS),
        )?;
        Ok(JustificationsConfig {
            file: file.to_path_buf(),
            url,
            url_text: raw.url.value.clone(),
            purposes,
            purposes_line: raw.purposes.as_ref().and_then(line_of).or(at),
            bearer_token_file: raw.bearer_token_file.as_deref().map(resolve),
            ca_file: raw.ca_file.as_deref().map(resolve),
            allow_insecure_http: raw.allow_insecure_http,
            cache_ttl: ttl,
            max_staleness: staleness,
            timeout,
            cache_max_entries: raw.cache_max_entries.max(1),
            fail_fast,
        })
    }
}

fn seconds_or(v: &Option<Spanned<u64>>, default: u64) -> Duration {
    Duration::from_secs(v.as_ref().map(|s| s.value).unwrap_or(default))
}

/// A millisecond key within `(default, min, max)`.
fn bounded_ms(
    file: &Path,
    v: &Option<Spanned<u64>>,
    key: &str,
    (default, min, max): (u64, u64, u64),
) -> Result<Duration, ConfigError> {
    let Some(s) = v else {
        return Ok(Duration::from_millis(default));
    };
    if s.value < min || s.value > max {
        return Err(ConfigError::at(
            file,
            s,
            format!("justifications.{key}: must be between {min} and {max}"),
        ));
    }
    Ok(Duration::from_millis(s.value))
}

fn checked_purposes(file: &Path, list: &Spanned<Vec<String>>) -> Result<Vec<String>, ConfigError> {
    if list.value.is_empty() {
        return Err(ConfigError::at(
            file,
            list,
            "justifications.purposes: list at least one purpose (omit the key for every purpose with a justification claim)",
        ));
    }
    for (i, p) in list.value.iter().enumerate() {
        if p.trim().is_empty() || list.value[..i].contains(p) {
            return Err(ConfigError::at(
                file,
                list,
                format!("justifications.purposes: `{p}` is empty or listed twice"),
            ));
        }
    }
    Ok(list.value.clone())
}

impl JustificationsConfig {
    /// The files whose change should trigger a reload: the bearer
    /// credential (`ca_file` is read at start only).
    pub fn watched_files(&self) -> Vec<PathBuf> {
        self.bearer_token_file.iter().cloned().collect()
    }

    /// Whether rules 17a–e apply to `purpose` (whose policy rule names
    /// `justification_claim`), and for which kind. Purposes without a claim
    /// whose kind is known are never checked; `check_policy` refuses a config
    /// that would silently leave such a purpose unchecked.
    pub fn kind_for(&self, purpose: &str, justification_claim: Option<&str>) -> Option<Kind> {
        let kind = Kind::from_claim(justification_claim?)?;
        match &self.purposes {
            Some(list) => list.iter().any(|p| p == purpose).then_some(kind),
            None => Some(kind),
        }
    }

    /// Checks the section against a policy (at start and on every policy
    /// reload): every listed purpose exists and has a justification claim of
    /// a known kind; with the default, every purpose with a claim has one.
    pub fn check_policy(&self, policy: &Policy) -> Result<(), ConfigError> {
        let err = |m: String| ConfigError::new(&self.file, self.purposes_line, m);
        let claim_kind = |name: &str, claim: &str| {
            Kind::from_claim(claim).map(|_| ()).ok_or_else(|| {
                err(format!(
                    "justifications: purpose `{name}` is justified by `{claim}`, which names no kind the case service knows (case_id, ticket_id, matter_id)"
                ))
            })
        };
        match &self.purposes {
            Some(list) => {
                for name in list {
                    let rule = policy.purpose(name).ok_or_else(|| {
                        err(format!(
                            "justifications.purposes: `{name}` is not a purpose of the policy"
                        ))
                    })?;
                    let claim = rule.justification_claim.as_deref().ok_or_else(|| {
                        err(format!(
                            "justifications.purposes: purpose `{name}` has no justification_claim to look up"
                        ))
                    })?;
                    claim_kind(name, claim)?;
                }
            }
            None => {
                let mut names: Vec<&String> = policy.purposes.keys().collect();
                names.sort();
                for name in names {
                    if let Some(claim) = policy.purposes[name].justification_claim.as_deref() {
                        claim_kind(name, claim)?;
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::policy::PurposeRule;

    fn config(section: &str) -> String {
        format!(
            "listen: \"127.0.0.1:8080\"\nadmin_listen: \"127.0.0.1:9100\"\njwt:\n  issuer: \"i\"\n  audiences: [\"a\"]\n  algorithms: [\"ES256\"]\n  jwks_file: \"jwks.json\"\npolicy_dir: \"policies\"\nconsent_file: \"consent.yaml\"\nupstreams:\n  content: {{url: \"http://127.0.0.1:9090\"}}\naudit:\n  path: \"audit.jsonl\"\n{section}"
        )
    }

    fn parse(section: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("/etc/pg/c.yaml"), &config(section))
    }

    const URL: &str = "  url: \"https://cases.internal/v1/justifications/{kind}/{id}\"\n";

    #[test]
    fn defaults_and_resolved_paths() {
        let c = parse(&format!(
            "justifications:\n{URL}  bearer_token_file: \"secrets/cases-token\"\n  ca_file: ca.pem\n"
        ))
        .unwrap();
        let j = c.justifications.unwrap();
        assert_eq!(j.purposes, None);
        assert_eq!(j.cache_ttl, Duration::from_secs(30));
        assert_eq!(j.max_staleness, Duration::from_secs(300));
        assert_eq!(j.timeout, Duration::from_millis(500));
        assert_eq!(j.fail_fast, Duration::from_millis(1000));
        assert_eq!(j.cache_max_entries, 10_000);
        assert_eq!(
            j.bearer_token_file.as_deref(),
            Some(Path::new("/etc/pg/secrets/cases-token"))
        );
        assert_eq!(j.ca_file.as_deref(), Some(Path::new("/etc/pg/ca.pem")));
        assert!(parse("").unwrap().justifications.is_none());
    }

    #[test]
    fn errors_point_at_lines() {
        // The section starts on line 14; `url` is on line 15.
        let cases = [
            (
                "justifications:\n  url: \"http://cases.internal/{kind}/{id}\"\n".to_string(),
                15,
                "justifications.url",
            ),
            (
                "justifications:\n  url: \"https://c.internal/{id}\"\n".to_string(),
                15,
                "{kind}",
            ),
            (
                format!("justifications:\n{URL}  purposes: []\n"),
                16,
                "at least one purpose",
            ),
            (
                format!("justifications:\n{URL}  purposes: [abuse, abuse]\n"),
                16,
                "listed twice",
            ),
            (
                format!(
                    "justifications:\n{URL}  cache_ttl_seconds: 60\n  max_staleness_seconds: 30\n"
                ),
                17,
                "max_staleness_seconds",
            ),
            (
                format!("justifications:\n{URL}  timeout_ms: 0\n"),
                16,
                "timeout_ms",
            ),
            (
                format!("justifications:\n{URL}  fail_fast_ms: 600000\n"),
                16,
                "fail_fast_ms",
            ),
            (
                format!("justifications:\n{URL}  cache_ttl: 5\n"),
                16,
                "cache_ttl",
            ),
        ];
        for (section, line, needle) in cases {
            let e = parse(&section).unwrap_err();
            assert_eq!(e.line, Some(line), "{section}: {e}");
            assert!(
                e.to_string()
                    .starts_with(&format!("/etc/pg/c.yaml:{line}: ")),
                "{e}"
            );
            assert!(e.message.contains(needle), "{section}: {e}");
        }
        let e = parse("justifications:\n  purposes: [abuse]\n").unwrap_err();
        assert!(e.message.contains("url"), "{e}");
    }

    #[test]
    fn insecure_http_needs_the_opt_in() {
        let ok = parse(
            "justifications:\n  url: \"http://cases.internal/{kind}/{id}\"\n  allow_insecure_http: true\n",
        );
        assert!(ok.unwrap().justifications.unwrap().allow_insecure_http);
        let loopback = parse("justifications:\n  url: \"http://127.0.0.1:7000/{kind}/{id}\"\n");
        assert!(loopback.is_ok());
    }

    fn policy(purposes: &[(&str, Option<&str>)]) -> Policy {
        let mut p = Policy::default();
        for (name, claim) in purposes {
            p.purposes.insert(
                name.to_string(),
                PurposeRule {
                    name: name.to_string(),
                    justification_claim: claim.map(str::to_string),
                    ..Default::default()
                },
            );
        }
        p
    }

    #[test]
    fn purposes_resolve_against_the_policy() {
        let default = parse(&format!("justifications:\n{URL}"))
            .unwrap()
            .justifications
            .unwrap();
        let listed = parse(&format!("justifications:\n{URL}  purposes: [support]\n"))
            .unwrap()
            .justifications
            .unwrap();
        assert_eq!(default.kind_for("abuse", Some("case_id")), Some(Kind::Case));
        assert_eq!(default.kind_for("training", None), None);
        assert_eq!(listed.kind_for("abuse", Some("case_id")), None);
        assert_eq!(
            listed.kind_for("support", Some("ticket_id")),
            Some(Kind::Ticket)
        );

        let shipped = policy(&[
            ("abuse", Some("case_id")),
            ("support", Some("ticket_id")),
            ("legal", Some("matter_id")),
            ("training", None),
        ]);
        assert!(default.check_policy(&shipped).is_ok());
        assert!(listed.check_policy(&shipped).is_ok());

        let odd = policy(&[
            ("abuse", Some("incident_id")),
            ("support", Some("ticket_id")),
        ]);
        let e = default.check_policy(&odd).unwrap_err();
        assert!(e.message.contains("incident_id"), "{e}");
        // Without `purposes`, the error points at the section's first key.
        assert_eq!(e.line, Some(15), "{e}");
        assert!(listed.check_policy(&odd).is_ok());

        let e = listed
            .check_policy(&policy(&[("abuse", Some("case_id"))]))
            .unwrap_err();
        assert!(e.message.contains("not a purpose"), "{e}");
        assert_eq!(e.line, Some(16), "{e}");
        let e = listed
            .check_policy(&policy(&[("support", None)]))
            .unwrap_err();
        assert!(e.message.contains("no justification_claim"), "{e}");
    }
}
