//! The remote-key part of `jwt:`: `jwks_url` / `oidc_issuer` (HTTPS, or
//! plain HTTP to loopback unless `allow_insecure_http`), the refresh timing
//! options, and `jwt.additional_issuers` (further issuers, each with its own
//! audiences and key source, inheriting everything else from `jwt:`).

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_saphyr::Spanned;

use super::{line_of, ConfigError, JwtConfig, RawJwt, RemoteKeysConfig, RemoteSource};

/// One entry of `jwt.additional_issuers`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawIssuer {
    issuer: Spanned<String>,
    audiences: Vec<String>,
    #[serde(default)]
    algorithms: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    jwks_file: Option<String>,
    #[serde(default)]
    jwks_url: Option<Spanned<String>>,
    #[serde(default)]
    oidc_issuer: Option<Spanned<String>>,
    #[serde(default)]
    allow_insecure_http: bool,
}

/// The `jwt:`-level settings shared by every remote source.
pub(super) struct Timing {
    refresh_min: Duration,
    refresh_max: Duration,
    unknown_kid_refetch: Duration,
    fetch_timeout: Duration,
    cache_dir: Option<PathBuf>,
    ca_file: Option<PathBuf>,
}

pub(super) fn timing(
    file: &Path,
    raw: &RawJwt,
    resolve: &dyn Fn(&str) -> PathBuf,
) -> Result<Timing, ConfigError> {
    let min = raw.refresh_min_seconds.max(1);
    if raw.refresh_max_seconds < min {
        return Err(ConfigError::new(
            file,
            None,
            "jwt.refresh_max_seconds must not be smaller than jwt.refresh_min_seconds",
        ));
    }
    Ok(Timing {
        refresh_min: Duration::from_secs(min),
        refresh_max: Duration::from_secs(raw.refresh_max_seconds),
        // At least 1 s: unknown kids come from unauthenticated clients, and
        // the limit is what keeps them from driving traffic to the IdP.
        unknown_kid_refetch: Duration::from_secs(raw.unknown_kid_refetch_seconds.max(1)),
        fetch_timeout: Duration::from_millis(raw.fetch_timeout_ms.clamp(1, 60_000)),
        cache_dir: raw.cache_dir.as_deref().map(resolve),
        ca_file: raw.ca_file.as_deref().map(resolve),
    })
}

/// Validates the key source of one issuer block (`prefix` names it in
/// messages). `Ok(None)` when keys come from a file (or only a secret).
pub(super) fn remote_source(
    file: &Path,
    prefix: &str,
    has_file: bool,
    url: Option<&Spanned<String>>,
    oidc: Option<&Spanned<String>>,
    allow_insecure_http: bool,
    t: &Timing,
) -> Result<Option<RemoteKeysConfig>, ConfigError> {
    let source = match (url, oidc) {
        (Some(_), Some(o)) => {
            return Err(ConfigError::at(
                file,
                o,
                format!("{prefix}: set either jwks_url or oidc_issuer, not both"),
            ))
        }
        (Some(u), None) => {
            let uri = checked_url(&u.value, allow_insecure_http)
                .map_err(|m| ConfigError::at(file, u, format!("{prefix}.jwks_url: {m}")))?;
            RemoteSource::JwksUrl(uri)
        }
        (None, Some(o)) => {
            checked_url(&discovery_url(&o.value), allow_insecure_http)
                .map_err(|m| ConfigError::at(file, o, format!("{prefix}.oidc_issuer: {m}")))?;
            RemoteSource::OidcIssuer(o.value.clone())
        }
        (None, None) => return Ok(None),
    };
    if has_file {
        let at = url.or(oidc);
        let line = at.and_then(line_of);
        return Err(ConfigError::new(
            file,
            line,
            format!("{prefix}: set one key source: jwks_file, jwks_url or oidc_issuer"),
        ));
    }
    Ok(Some(RemoteKeysConfig {
        source,
        allow_insecure_http,
        refresh_min: t.refresh_min,
        refresh_max: t.refresh_max,
        unknown_kid_refetch: t.unknown_kid_refetch,
        fetch_timeout: t.fetch_timeout,
        cache_dir: t.cache_dir.clone(),
        ca_file: t.ca_file.clone(),
    }))
}

/// The OIDC discovery document's URL for an issuer.
pub fn discovery_url(issuer: &str) -> String {
    format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    )
}

/// Parses a key URL and enforces the transport rule: `https`, or `http` only
/// to a loopback host unless insecure HTTP was explicitly allowed.
pub fn checked_url(text: &str, allow_insecure_http: bool) -> Result<http::Uri, String> {
    let uri: http::Uri = text.parse().map_err(|_| format!("`{text}` is not a URL"))?;
    let Some(host) = uri.host() else {
        return Err(format!("`{text}` has no host"));
    };
    match uri.scheme_str() {
        Some("https") => Ok(uri),
        Some("http") if allow_insecure_http || is_loopback(host) => Ok(uri),
        Some("http") => Err(format!(
            "`{text}`: plain http is allowed only to a loopback address (set allow_insecure_http: true to override)"
        )),
        _ => Err(format!("`{text}` must be an https:// URL")),
    }
}

fn is_loopback(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Validates `jwt.additional_issuers` into complete configs inheriting from
/// the primary issuer (`base`).
pub(super) fn additional(
    file: &Path,
    base: &JwtConfig,
    raws: Vec<RawIssuer>,
    t: &Timing,
    resolve: &dyn Fn(&str) -> PathBuf,
) -> Result<Vec<JwtConfig>, ConfigError> {
    let mut out: Vec<JwtConfig> = Vec::new();
    for (i, raw) in raws.into_iter().enumerate() {
        let prefix = format!("jwt.additional_issuers[{i}]");
        let dup =
            raw.issuer.value == base.issuer || out.iter().any(|c| c.issuer == raw.issuer.value);
        if dup {
            return Err(ConfigError::at(
                file,
                &raw.issuer,
                format!(
                    "{prefix}.issuer: `{}` is configured twice",
                    raw.issuer.value
                ),
            ));
        }
        out.push(one_additional(file, &prefix, base, raw, t, resolve)?);
    }
    Ok(out)
}

fn one_additional(
    file: &Path,
    prefix: &str,
    base: &JwtConfig,
    raw: RawIssuer,
    t: &Timing,
    resolve: &dyn Fn(&str) -> PathBuf,
) -> Result<JwtConfig, ConfigError> {
    let remote = remote_source(
        file,
        prefix,
        raw.jwks_file.is_some(),
        raw.jwks_url.as_ref(),
        raw.oidc_issuer.as_ref(),
        raw.allow_insecure_http,
        t,
    )?;
    if raw.jwks_file.is_none() && remote.is_none() {
        return Err(ConfigError::at(
            file,
            &raw.issuer,
            format!("{prefix}: set one key source: jwks_file, jwks_url or oidc_issuer"),
        ));
    }
    if raw.audiences.is_empty() {
        return Err(ConfigError::at(
            file,
            &raw.issuer,
            format!("{prefix}.audiences: list at least one audience"),
        ));
    }
    let algorithms = match &raw.algorithms {
        None => base.algorithms.clone(),
        Some(list) => public_key_algorithms(file, prefix, list)?,
    };
    Ok(JwtConfig {
        issuer: raw.issuer.value,
        audiences: raw.audiences,
        // An HMAC secret belongs to the primary issuer only.
        algorithms: algorithms
            .into_iter()
            .filter(|a| *a != jsonwebtoken::Algorithm::HS256)
            .collect(),
        jwks_file: raw.jwks_file.as_deref().map(resolve),
        hs256_secret_file: None,
        leeway_seconds: base.leeway_seconds,
        max_lifetime_seconds: base.max_lifetime_seconds,
        cache_max_entries: base.cache_max_entries,
        remote,
        additional_issuers: Vec::new(),
    })
}

fn public_key_algorithms(
    file: &Path,
    prefix: &str,
    list: &Spanned<Vec<String>>,
) -> Result<Vec<jsonwebtoken::Algorithm>, ConfigError> {
    let mut out = Vec::new();
    for name in &list.value {
        let alg: jsonwebtoken::Algorithm = name
            .parse()
            .ok()
            .filter(|a: &jsonwebtoken::Algorithm| {
                !matches!(
                    a,
                    jsonwebtoken::Algorithm::HS256
                        | jsonwebtoken::Algorithm::HS384
                        | jsonwebtoken::Algorithm::HS512
                )
            })
            .ok_or_else(|| {
                ConfigError::at(
                    file,
                    list,
                    format!("{prefix}.algorithms: `{name}` is not a public-key algorithm"),
                )
            })?;
        out.push(alg);
    }
    if out.is_empty() {
        return Err(ConfigError::at(
            file,
            list,
            format!("{prefix}.algorithms: list at least one algorithm"),
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    const BASE: &str = r#"
listen: "127.0.0.1:8080"
admin_listen: "127.0.0.1:9100"
jwt:
  issuer: "https://idp.example.test"
  audiences: ["purposegate"]
  algorithms: ["RS256", "ES256"]
  KEYS
policy_dir: "policies"
consent_file: "policies/consent.yaml"
upstreams:
  content: {url: "http://127.0.0.1:9090"}
audit:
  path: "audit/audit.jsonl"
"#;

    fn parse(keys: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("/etc/pg/c.yaml"), &BASE.replace("KEYS", keys))
    }

    #[test]
    fn transport_rule() {
        assert!(checked_url("https://idp.example/jwks", false).is_ok());
        assert!(checked_url("http://127.0.0.1:8/jwks", false).is_ok());
        assert!(checked_url("http://[::1]:8/jwks", false).is_ok());
        assert!(checked_url("http://localhost/jwks", false).is_ok());
        assert!(checked_url("http://idp.example/jwks", false).is_err());
        assert!(checked_url("http://idp.example/jwks", true).is_ok());
        assert!(checked_url("ftp://idp.example/jwks", true).is_err());
        assert!(checked_url("/jwks", true).is_err());
    }

    #[test]
    fn remote_sources_parse() {
        let c = parse("jwks_url: \"https://idp.example.test/jwks\"\n  cache_dir: \"keys\"\n  refresh_min_seconds: 5").unwrap();
        let r = c.jwt.remote.unwrap();
        assert!(matches!(r.source, RemoteSource::JwksUrl(_)));
        assert_eq!(r.refresh_min, Duration::from_secs(5));
        assert_eq!(r.cache_dir, Some(PathBuf::from("/etc/pg/keys")));
        let c = parse("oidc_issuer: \"https://idp.example.test/\"").unwrap();
        assert_eq!(
            c.jwt.remote.unwrap().source,
            RemoteSource::OidcIssuer("https://idp.example.test/".into())
        );
        assert_eq!(
            discovery_url("https://idp.example.test/"),
            "https://idp.example.test/.well-known/openid-configuration"
        );
    }

    #[test]
    fn remote_errors_point_at_lines() {
        let e = parse("jwks_url: \"http://idp.example.test/jwks\"").unwrap_err();
        assert_eq!(e.line, Some(8), "{e}");
        assert!(e.message.contains("loopback"), "{e}");
        assert!(
            parse("jwks_url: \"http://idp.example.test/jwks\"\n  allow_insecure_http: true")
                .is_ok()
        );
        let e = parse("jwks_url: \"https://a/jwks\"\n  jwks_file: \"j.json\"").unwrap_err();
        assert!(e.message.contains("one key source"), "{e}");
        let e = parse("jwks_url: \"https://a/jwks\"\n  oidc_issuer: \"https://a\"").unwrap_err();
        assert!(e.message.contains("not both"), "{e}");
        let e = parse("jwks_file: \"j.json\"\n  refresh_min_seconds: 10\n  refresh_max_seconds: 5")
            .unwrap_err();
        assert!(e.message.contains("refresh_max_seconds"), "{e}");
    }

    #[test]
    fn additional_issuers_inherit_and_are_checked() {
        let c = parse(
            "jwks_file: \"j.json\"\n  additional_issuers:\n    - {issuer: \"https://b\", audiences: [\"x\"], oidc_issuer: \"https://b\"}",
        )
        .unwrap();
        let b = &c.jwt.additional_issuers[0];
        assert_eq!(b.issuer, "https://b");
        assert_eq!(b.algorithms, c.jwt.algorithms);
        assert!(b.remote.is_some());
        let e = parse(
            "jwks_file: \"j.json\"\n  additional_issuers:\n    - {issuer: \"https://idp.example.test\", audiences: [\"x\"], jwks_file: \"k.json\"}",
        )
        .unwrap_err();
        assert!(e.message.contains("configured twice"), "{e}");
        let e = parse(
            "jwks_file: \"j.json\"\n  additional_issuers:\n    - {issuer: \"https://b\", audiences: [\"x\"]}",
        )
        .unwrap_err();
        assert!(e.message.contains("key source"), "{e}");
        let e = parse(
            "jwks_file: \"j.json\"\n  additional_issuers:\n    - {issuer: \"https://b\", audiences: [\"x\"], jwks_file: \"k\", algorithms: [\"HS256\"]}",
        )
        .unwrap_err();
        assert!(e.message.contains("public-key"), "{e}");
    }
}
