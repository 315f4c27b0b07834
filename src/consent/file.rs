//! The file consent backend: a docs/reference.md §5 YAML file, validated with line
//! numbers, compiled into hash maps and swapped atomically on reload.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;
use serde::Deserialize;
use serde_saphyr::Spanned;

use super::{ConsentFuture, ConsentStore, OrgConsent, Period, UserConsent};
use crate::config::{parse_yaml, read_file, ConfigError};
use crate::time::parse_rfc3339;

/// A compiled consent registry.
#[derive(Debug, Default)]
pub struct ConsentData {
    pub users: HashMap<String, Arc<UserConsent>>,
    pub orgs: HashMap<String, Arc<OrgConsent>>,
}

/// The docs/reference.md §5 YAML shape, before validation. Public so that other
/// documents embedding a registry (decision test cases) parse it identically.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConsent {
    #[serde(default)]
    users: BTreeMap<String, RawUser>,
    #[serde(default)]
    orgs: BTreeMap<String, RawOrg>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUser {
    #[serde(default)]
    training_opt_outs: Vec<RawPeriod>,
    #[serde(default)]
    deletion_requested_at: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOrg {
    #[serde(default)]
    api_training_opt_ins: Vec<RawPeriod>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPeriod {
    from: Spanned<String>,
    #[serde(default)]
    until: Option<Spanned<String>>,
}

impl ConsentData {
    /// Loads and validates a consent file.
    pub fn load(path: &Path) -> Result<ConsentData, ConfigError> {
        let text = read_file(path)?;
        Self::parse(path, &text)
    }

    /// Validates consent YAML text as if read from `file`.
    pub fn parse(file: &Path, text: &str) -> Result<ConsentData, ConfigError> {
        if text.trim().is_empty() {
            return Ok(ConsentData::default());
        }
        let raw: RawConsent = parse_yaml(file, text)?;
        Self::compile(file, raw)
    }

    /// Validates a parsed registry; errors point at `file:line`.
    pub fn compile(file: &Path, raw: RawConsent) -> Result<ConsentData, ConfigError> {
        let mut data = ConsentData::default();
        for (id, u) in raw.users {
            let opt_outs = periods(file, &u.training_opt_outs)?;
            let deletion = u
                .deletion_requested_at
                .as_ref()
                .map(|d| timestamp(file, d))
                .transpose()?;
            let consent = UserConsent {
                training_opt_outs: opt_outs,
                deletion_requested_at: deletion,
            };
            data.users.insert(id, Arc::new(consent));
        }
        for (id, o) in raw.orgs {
            let consent = OrgConsent {
                api_training_opt_ins: periods(file, &o.api_training_opt_ins)?,
            };
            data.orgs.insert(id, Arc::new(consent));
        }
        Ok(data)
    }
}

fn timestamp(file: &Path, v: &Spanned<String>) -> Result<i64, ConfigError> {
    parse_rfc3339(&v.value).ok_or_else(|| {
        ConfigError::at(
            file,
            v,
            format!(
                "`{}` is not an RFC 3339 timestamp like 2026-03-01T00:00:00Z",
                v.value
            ),
        )
    })
}

fn periods(file: &Path, raw: &[RawPeriod]) -> Result<Vec<Period>, ConfigError> {
    raw.iter()
        .map(|p| {
            let from = timestamp(file, &p.from)?;
            let until = p.until.as_ref().map(|u| timestamp(file, u)).transpose()?;
            if let (Some(u), Some(spanned)) = (until, &p.until) {
                if u <= from {
                    return Err(ConfigError::at(
                        file,
                        spanned,
                        "until must be later than from",
                    ));
                }
            }
            Ok(Period { from, until })
        })
        .collect()
}

/// The file-backed `ConsentStore`: lookups are a hash-map read of the current
/// snapshot; `replace` swaps in a reloaded one.
pub struct FileConsent {
    data: ArcSwap<ConsentData>,
    default_user: Arc<UserConsent>,
    default_org: Arc<OrgConsent>,
}

impl FileConsent {
    pub fn new(data: ConsentData) -> Self {
        FileConsent {
            data: ArcSwap::from_pointee(data),
            default_user: Arc::new(UserConsent::default()),
            default_org: Arc::new(OrgConsent::default()),
        }
    }

    /// Atomically replaces the registry (after a successful reload).
    pub fn replace(&self, data: ConsentData) {
        self.data.store(Arc::new(data));
    }

    /// Synchronous lookup (the file backend never waits).
    pub fn user_now(&self, id: &str) -> Arc<UserConsent> {
        self.data
            .load()
            .users
            .get(id)
            .cloned()
            .unwrap_or_else(|| self.default_user.clone())
    }

    /// Synchronous lookup (the file backend never waits).
    pub fn org_now(&self, id: &str) -> Arc<OrgConsent> {
        self.data
            .load()
            .orgs
            .get(id)
            .cloned()
            .unwrap_or_else(|| self.default_org.clone())
    }
}

impl ConsentStore for FileConsent {
    fn user(&self, user_id: &str) -> ConsentFuture<'_, Arc<UserConsent>> {
        let found = self.user_now(user_id);
        Box::pin(std::future::ready(Ok(found)))
    }

    fn org(&self, org_id: &str) -> ConsentFuture<'_, Arc<OrgConsent>> {
        let found = self.org_now(org_id);
        Box::pin(std::future::ready(Ok(found)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONTRACT: &str = r#"
users:
  u2:
    training_opt_outs: [{from: "2026-03-01T00:00:00Z"}]
  u3:
    deletion_requested_at: "2026-10-01T00:00:00Z"
orgs:
  org-9:
    api_training_opt_ins: [{from: "2026-01-01T00:00:00Z", until: "2026-06-01T00:00:00Z"}]
"#;

    #[test]
    fn parses_the_contract_example() {
        let d = ConsentData::parse(Path::new("consent.yaml"), CONTRACT).unwrap();
        let march = parse_rfc3339("2026-03-01T00:00:00Z").unwrap();
        assert!(d.users["u2"].opted_out_at(march));
        assert!(!d.users["u2"].opted_out_at(march - 1));
        assert!(d.users["u3"].deleted_at(march * 2));
        assert!(d.orgs["org-9"].opted_in_at(march));
        assert!(!d.orgs["org-9"].opted_in_at(parse_rfc3339("2026-06-01T00:00:00Z").unwrap()));
    }

    #[test]
    fn bad_timestamps_point_at_their_line() {
        let bad = CONTRACT.replace("2026-10-01T00:00:00Z", "October");
        let e = ConsentData::parse(Path::new("consent.yaml"), &bad).unwrap_err();
        assert_eq!(e.line, Some(6), "{e}");
        assert!(
            e.to_string().starts_with("consent.yaml:6: `October`"),
            "{e}"
        );
    }

    #[test]
    fn unknown_users_get_the_default() {
        let store = FileConsent::new(ConsentData::parse(Path::new("c"), CONTRACT).unwrap());
        assert_eq!(*store.user_now("nobody"), UserConsent::default());
        assert!(store.user_now("u3").deletion_requested_at.is_some());
    }
}
