//! The YAML shapes of `policy test` case files and their conversion into
//! `testcases::Case`. Kept apart from the runner so that the runner reads as
//! "evaluate exactly like the proxy", and this file as "parse strictly".

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::sync::Arc;

use http::{HeaderMap, HeaderName, HeaderValue, Method};
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_saphyr::Spanned;

use super::decide::{has_method_override, Outcome};
use super::reason::Reason;
use super::testcases::{Case, MetaSpec, StatedBudget, TokenSpec, Unavailable};
use crate::auth::Claims;
use crate::budget::{Counted, Limit, LimitKind};
use crate::config::{line_of, ConfigError};
use crate::consent::file::{ConsentData, RawConsent};
use crate::justification::{Answer, Justification, Unavailable as NoAnswer};
use crate::time::{parse_rfc3339, Millis};

/// The clock of cases that name none: documented in `policies/README.md`.
pub const DEFAULT_NOW: &str = "2026-11-29T12:00:00Z";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSuite {
    #[serde(default)]
    now: Option<Spanned<String>>,
    #[serde(default)]
    consent: Option<RawConsent>,
    #[serde(default)]
    cases: Vec<Spanned<RawCase>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCase {
    name: String,
    #[serde(default)]
    now: Option<Spanned<String>>,
    request: RawRequest,
    token: Spanned<RawToken>,
    #[serde(default)]
    response: Option<RawResponse>,
    #[serde(default)]
    consent: Option<RawConsent>,
    #[serde(default)]
    consent_unavailable: Option<Spanned<String>>,
    #[serde(default)]
    justification: Option<Spanned<RawStated>>,
    #[serde(default)]
    budget: Option<Spanned<RawBudget>>,
    expect: Spanned<RawExpect>,
}

/// The case service's answer: `not_found`, `unavailable`, or the
/// justification as the service would describe it (strict: unknown keys
/// refused).
enum RawStated {
    Word(String),
    Found(Justification),
}

impl<'de> Deserialize<'de> for RawStated {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct StatedVisitor;
        impl<'de> Visitor<'de> for StatedVisitor {
            type Value = RawStated;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "`not_found`, `unavailable` or `{status, assignees, subjects, requested_by}`",
                )
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawStated, E> {
                Ok(RawStated::Word(v.to_string()))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawStated, A::Error> {
                Justification::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(RawStated::Found)
            }
        }
        d.deserialize_any(StatedVisitor)
    }
}

/// Rule 18 as a case states it: `unavailable`, or the purpose's limits with
/// what each counted before the request.
enum RawBudget {
    Word(String),
    Limits(Vec<Spanned<RawStatedLimit>>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStatedLimit {
    #[serde(default)]
    distinct_owners: Option<u64>,
    #[serde(default)]
    requests: Option<u64>,
    window_seconds: u64,
    /// Owners or requests counted in the window before this request.
    used: u64,
    /// `distinct_owners`: the path owner is already counted in the window.
    #[serde(default)]
    owner_counted: bool,
    /// Seconds until the window ends (default: the whole window).
    #[serde(default)]
    resets_in_seconds: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRequest {
    #[serde(default)]
    method: Option<Spanned<String>>,
    path: Spanned<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawResponse {
    #[serde(default)]
    status: Option<u16>,
    #[serde(default, rename = "x-content-owner")]
    owner: Option<String>,
    #[serde(default, rename = "x-content-created-at")]
    created_at: Option<String>,
    #[serde(default, rename = "x-content-source")]
    source: Option<String>,
    #[serde(default, rename = "x-content-org")]
    org: Option<String>,
    #[serde(default, rename = "x-content-deidentified")]
    deidentified: Option<String>,
}

/// `missing`, `invalid`, or a mapping of claims.
enum RawToken {
    Word(String),
    Claims(RawClaims),
}

/// `allow` or `{deny: code}`.
enum RawExpect {
    Allow(String),
    Deny(String),
}

/// A time given as RFC 3339 text or as NumericDate seconds.
enum RawTime {
    Text(String),
    Seconds(i64),
}

#[derive(Default)]
struct RawClaims {
    sub: Option<String>,
    roles: Vec<String>,
    purpose: Option<String>,
    subjects: Vec<String>,
    training_cert_exp: Option<RawTime>,
    jti: Option<String>,
    /// Every other key: a string claim (justifications live here).
    strings: BTreeMap<String, String>,
}

impl<'de> Deserialize<'de> for RawToken {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(TokenVisitor)
    }
}

struct TokenVisitor;

impl<'de> Visitor<'de> for TokenVisitor {
    type Value = RawToken;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("`missing`, `invalid` or a mapping of claims")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<RawToken, E> {
        Ok(RawToken::Word(v.to_string()))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawToken, A::Error> {
        let mut c = RawClaims::default();
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "sub" => c.sub = Some(map.next_value()?),
                "roles" => c.roles = map.next_value()?,
                "purpose" => c.purpose = Some(map.next_value()?),
                "subjects" => c.subjects = map.next_value()?,
                "training_cert_exp" => c.training_cert_exp = Some(map.next_value()?),
                "jti" => c.jti = Some(map.next_value()?),
                _ => {
                    let value: String = map.next_value()?;
                    c.strings.insert(key, value);
                }
            }
        }
        Ok(RawToken::Claims(c))
    }
}

impl<'de> Deserialize<'de> for RawBudget {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct BudgetVisitor;
        impl<'de> Visitor<'de> for BudgetVisitor {
            type Value = RawBudget;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("`unavailable` or a list of limits with their usage")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawBudget, E> {
                Ok(RawBudget::Word(v.to_string()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawBudget, A::Error> {
                let mut limits = Vec::new();
                while let Some(l) = seq.next_element()? {
                    limits.push(l);
                }
                Ok(RawBudget::Limits(limits))
            }
        }
        d.deserialize_any(BudgetVisitor)
    }
}

impl<'de> Deserialize<'de> for RawTime {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct TimeVisitor;
        impl Visitor<'_> for TimeVisitor {
            type Value = RawTime;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an RFC 3339 timestamp or seconds since the epoch")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawTime, E> {
                Ok(RawTime::Text(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawTime, E> {
                Ok(RawTime::Seconds(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawTime, E> {
                i64::try_from(v)
                    .map(RawTime::Seconds)
                    .map_err(|_| E::custom("time out of range"))
            }
        }
        d.deserialize_any(TimeVisitor)
    }
}

impl<'de> Deserialize<'de> for RawExpect {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ExpectVisitor;
        impl<'de> Visitor<'de> for ExpectVisitor {
            type Value = RawExpect;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("`allow` or `{deny: <reason code>}`")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawExpect, E> {
                Ok(RawExpect::Allow(v.to_string()))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawExpect, A::Error> {
                let key: String = map
                    .next_key()?
                    .ok_or_else(|| de::Error::custom("expected `{deny: <reason code>}`"))?;
                if key != "deny" {
                    return Err(de::Error::custom(format!(
                        "unknown key `{key}`, expected `deny`"
                    )));
                }
                let code: String = map.next_value()?;
                if map.next_key::<String>()?.is_some() {
                    return Err(de::Error::custom("`expect` takes only `deny`"));
                }
                Ok(RawExpect::Deny(code))
            }
        }
        d.deserialize_any(ExpectVisitor)
    }
}

/// File-level defaults for a suite's cases.
struct SuiteDefaults {
    now: Millis,
    consent: Option<Arc<ConsentData>>,
}

/// Converts a parsed suite file into cases.
pub(super) fn suite_cases(file: &Path, suite: RawSuite) -> Result<Vec<Case>, ConfigError> {
    let now = match &suite.now {
        Some(n) => timestamp(file, n)?,
        None => parse_rfc3339(DEFAULT_NOW).unwrap_or(0),
    };
    let consent = suite
        .consent
        .map(|c| ConsentData::compile(file, c).map(Arc::new))
        .transpose()?;
    let defaults = SuiteDefaults { now, consent };
    suite
        .cases
        .into_iter()
        .map(|c| case(file, &defaults, c))
        .collect()
}

fn case(file: &Path, d: &SuiteDefaults, raw: Spanned<RawCase>) -> Result<Case, ConfigError> {
    let line = line_of(&raw);
    let c = raw.value;
    let now = c.now.as_ref().map(|n| timestamp(file, n)).transpose()?;
    let now = now.unwrap_or(d.now);
    let (method, path, method_override) = request(file, line, &c.request)?;
    let consent = match c.consent {
        Some(raw) => Some(Arc::new(ConsentData::compile(file, raw)?)),
        None => d.consent.clone(),
    };
    Ok(Case {
        file: file.to_path_buf(),
        line,
        name: c.name,
        now,
        method,
        path,
        method_override,
        token: token(file, &c.token, now)?,
        response: c.response.map(meta),
        consent,
        unavailable: unavailable(file, c.consent_unavailable.as_ref())?,
        justification: c
            .justification
            .as_ref()
            .map(|j| stated(file, j))
            .transpose()?,
        budget: c
            .budget
            .as_ref()
            .map(|b| stated_budget(file, b, purpose_of(&c.token)))
            .transpose()?,
        expect: expect(file, &c.expect)?,
    })
}

fn request(
    file: &Path,
    line: Option<u32>,
    r: &RawRequest,
) -> Result<(Method, String, bool), ConfigError> {
    let method = match &r.method {
        Some(m) => Method::from_bytes(m.value.as_bytes()).map_err(|_| {
            ConfigError::at(file, m, format!("`{}` is not an HTTP method", m.value))
        })?,
        None => Method::GET,
    };
    let mut headers = HeaderMap::new();
    for (name, value) in &r.headers {
        let n = HeaderName::from_bytes(name.as_bytes());
        let v = HeaderValue::from_str(value);
        let (Ok(n), Ok(v)) = (n, v) else {
            let msg = format!("header `{name}: {value}` is not a valid HTTP header");
            return Err(ConfigError::new(file, line, msg));
        };
        headers.append(n, v);
    }
    // The proxy matches and checks the path without its query string.
    let path = r.path.value.split('?').next().unwrap_or("").to_string();
    Ok((method, path, has_method_override(&headers)))
}

fn token(file: &Path, t: &Spanned<RawToken>, now: Millis) -> Result<TokenSpec, ConfigError> {
    match &t.value {
        RawToken::Word(w) if w == "missing" => Ok(TokenSpec::Missing),
        RawToken::Word(w) if w == "invalid" => Ok(TokenSpec::Invalid(
            "the test case says the token does not verify".to_string(),
        )),
        RawToken::Word(w) => Err(ConfigError::at(
            file,
            t,
            format!("token: `{w}` is not `missing`, `invalid` or a mapping of claims"),
        )),
        RawToken::Claims(c) => claims(file, t, c, now).map(TokenSpec::Claims),
    }
}

fn claims(
    file: &Path,
    at: &Spanned<RawToken>,
    c: &RawClaims,
    now: Millis,
) -> Result<Claims, ConfigError> {
    let cert = match &c.training_cert_exp {
        None => None,
        Some(RawTime::Seconds(s)) => Some(*s),
        Some(RawTime::Text(t)) => Some(parse_rfc3339(t).map(|ms| ms.div_euclid(1000)).ok_or_else(
            || {
                ConfigError::at(
                    file,
                    at,
                    format!("token.training_cert_exp: `{t}` is not RFC 3339"),
                )
            },
        )?),
    };
    let now_s = now.div_euclid(1000);
    Ok(Claims {
        sub: c.sub.clone().unwrap_or_else(|| "employee".to_string()),
        roles: c.roles.clone(),
        purpose: c.purpose.clone(),
        subjects: c.subjects.clone(),
        training_cert_exp: cert,
        iss: "policy-test".to_string(),
        exp: now_s + 300,
        iat: now_s,
        nbf: None,
        jti: c.jti.clone(),
        strings: c.strings.clone(),
    })
}

fn meta(r: RawResponse) -> MetaSpec {
    MetaSpec {
        status: r.status.unwrap_or(200),
        owner: r.owner,
        created_at: r.created_at,
        source: r.source,
        org: r.org,
        deidentified: r.deidentified,
    }
}

fn unavailable(file: &Path, v: Option<&Spanned<String>>) -> Result<Unavailable, ConfigError> {
    let Some(v) = v else {
        return Ok(Unavailable::None);
    };
    match v.value.as_str() {
        "users" => Ok(Unavailable::Users),
        "orgs" => Ok(Unavailable::Orgs),
        "all" => Ok(Unavailable::All),
        other => Err(ConfigError::at(
            file,
            v,
            format!("consent_unavailable: `{other}` is not users, orgs or all"),
        )),
    }
}

fn stated(file: &Path, j: &Spanned<RawStated>) -> Result<Answer, ConfigError> {
    match &j.value {
        RawStated::Found(found) => Ok(Answer::Found(Arc::new(found.clone()))),
        RawStated::Word(w) if w == "not_found" => Ok(Answer::NotFound),
        RawStated::Word(w) if w == "unavailable" => Ok(Answer::Unavailable(NoAnswer::Stated)),
        RawStated::Word(w) => Err(ConfigError::at(
            file,
            j,
            format!("justification: `{w}` is not `not_found`, `unavailable` or a mapping {{status, assignees, subjects, requested_by}}"),
        )),
    }
}

/// The purpose a case's token claims (the stated limits are that purpose's).
fn purpose_of(t: &Spanned<RawToken>) -> &str {
    match &t.value {
        RawToken::Claims(c) => c.purpose.as_deref().unwrap_or_default(),
        RawToken::Word(_) => "",
    }
}

fn stated_budget(
    file: &Path,
    b: &Spanned<RawBudget>,
    purpose: &str,
) -> Result<StatedBudget, ConfigError> {
    match &b.value {
        RawBudget::Word(w) if w == "unavailable" => Ok(StatedBudget::Unavailable),
        RawBudget::Word(w) => Err(ConfigError::at(
            file,
            b,
            format!("budget: `{w}` is not `unavailable` or a list of limits"),
        )),
        RawBudget::Limits(ls) if ls.is_empty() => Err(ConfigError::at(
            file,
            b,
            "budget: list at least one limit (or leave `budget` out)",
        )),
        RawBudget::Limits(ls) => ls
            .iter()
            .map(|l| stated_limit(file, l, purpose))
            .collect::<Result<_, _>>()
            .map(StatedBudget::Usage),
    }
}

/// One stated limit, checked like a `budgets.limits` entry of the config.
fn stated_limit(
    file: &Path,
    item: &Spanned<RawStatedLimit>,
    purpose: &str,
) -> Result<(Limit, Counted), ConfigError> {
    let r = &item.value;
    let err = |msg: &str| ConfigError::at(file, item, format!("budget: {msg}"));
    let (kind, max) = match (r.distinct_owners, r.requests) {
        (Some(n), None) => (LimitKind::DistinctOwners, n),
        (None, Some(n)) => (LimitKind::Requests, n),
        _ => return Err(err("set exactly one of distinct_owners and requests")),
    };
    let (max_limit, max_window) = (
        crate::budget::config::MAX_LIMIT,
        crate::budget::config::MAX_WINDOW_SECONDS,
    );
    if max == 0 || max > max_limit {
        return Err(err(&format!(
            "{} must be between 1 and {max_limit}",
            kind.as_str()
        )));
    }
    if r.window_seconds == 0 || r.window_seconds > max_window {
        return Err(err(&format!(
            "window_seconds must be between 1 and {max_window}"
        )));
    }
    if r.owner_counted && kind == LimitKind::Requests {
        return Err(err("owner_counted applies to distinct_owners only"));
    }
    let resets = r.resets_in_seconds.unwrap_or(r.window_seconds);
    if resets > r.window_seconds {
        return Err(err("resets_in_seconds is longer than the window"));
    }
    let limit = Limit {
        purpose: purpose.to_string(),
        kind,
        max,
        window_seconds: r.window_seconds,
        line: line_of(item),
    };
    let counted = Counted {
        used: r.used,
        owner_counted: r.owner_counted,
        resets_in: std::time::Duration::from_secs(resets),
    };
    Ok((limit, counted))
}

fn expect(file: &Path, e: &Spanned<RawExpect>) -> Result<Outcome, ConfigError> {
    match &e.value {
        RawExpect::Allow(w) if w == "allow" => Ok(Outcome::Allow),
        RawExpect::Allow(w) => Err(ConfigError::at(
            file,
            e,
            format!("expect: `{w}` is not `allow` or `{{deny: <reason code>}}`"),
        )),
        RawExpect::Deny(code) => Reason::from_code(code).map(Outcome::Deny).ok_or_else(|| {
            let known: Vec<&str> = Reason::ALL.iter().map(|r| r.code()).collect();
            let msg = format!(
                "expect: unknown reason code `{code}` (known: {})",
                known.join(", ")
            );
            ConfigError::at(file, e, msg)
        }),
    }
}

fn timestamp(file: &Path, v: &Spanned<String>) -> Result<Millis, ConfigError> {
    parse_rfc3339(&v.value).ok_or_else(|| {
        ConfigError::at(
            file,
            v,
            format!(
                "`{}` is not an RFC 3339 timestamp like {DEFAULT_NOW}",
                v.value
            ),
        )
    })
}
