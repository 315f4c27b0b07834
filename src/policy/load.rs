//! Loading the policy directory: YAML files → validated, compiled `Policy`.
//!
//! Every `*.yaml` / `*.yml` file directly in the directory (not recursive;
//! hidden files and the files in `exclude`, i.e. the consent file, skipped) is
//! read in file-name order and merged. Each file may hold any of four keys:
//!
//! ```yaml
//! prohibited_purposes: [marketing, advertising, sale]   # named and refused (rule 6)
//! purposes:                      # the lawful purposes and what each requires
//!   abuse:    {justification_claim: case_id,   subject_scoped: true}
//!   support:  {justification_claim: ticket_id, subject_scoped: true}
//!   legal:    {justification_claim: matter_id, subject_scoped: true, deletion_exempt: true}
//!   training: {deidentified_only: true, honour_opt_outs: true, api_content_requires_opt_in: true}
//! roles:                         # role → purposes it permits (rule 7)
//!   support: [support]
//! routes:                        # in precedence order (see `routes`)
//!   - {name: conversations, path: "/v1/users/{owner}/conversations/**", upstream: content}
//! ```
//!
//! Purpose keys (all optional, booleans default to false):
//! `justification_claim` (rule 9), `subject_scoped` (rule 10),
//! `deletion_exempt` (rule 11 legal hold), `deidentified_only` (rule 13),
//! `honour_opt_outs` (rule 14), `api_content_requires_opt_in` (rule 15).
//! Route keys: `path` (the template), `upstream` (a config `upstreams` key),
//! `name` (optional, defaults to the template; unique).
//!
//! Errors, all as `file:line: message`: unknown keys, a role naming an
//! undefined or prohibited purpose, a purpose both defined and prohibited, a
//! purpose, role or route name defined twice, a bad route template, a blank
//! or reserved justification claim, no policy file, no route. `check_upstreams`
//! later checks route upstreams against the config.
//!
//! `Policy::digest` is the SHA-256 (hex) over, per file in load order, its
//! file name, a NUL byte, its length (u64 little-endian) and its bytes.

use std::collections::{HashMap, HashSet};
use std::marker::PhantomData;
use std::path::{Path, PathBuf};

use serde::de::{Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_saphyr::Spanned;
use sha2::{Digest, Sha256};

use super::model::{Policy, PurposeRule, SourceLoc};
use super::routes::{parse_template, Route, RouteTable, Segment};
use crate::config::{line_of, parse_yaml, read_file, ConfigError};

/// Claims with a fixed meaning that cannot serve as a justification.
const RESERVED_CLAIMS: [&str; 11] = [
    "sub",
    "roles",
    "purpose",
    "subjects",
    "training_cert_exp",
    "iss",
    "aud",
    "exp",
    "iat",
    "nbf",
    "jti",
];

/// A YAML mapping kept in document order with each key's location (a
/// `HashMap` would lose both, and the line is what an error must show).
struct Entries<V>(Vec<(Spanned<String>, V)>);

impl<V> Default for Entries<V> {
    fn default() -> Self {
        Entries(Vec::new())
    }
}

impl<'de, V: Deserialize<'de>> Deserialize<'de> for Entries<V> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct EntriesVisitor<V>(PhantomData<V>);
        impl<'de, V: Deserialize<'de>> Visitor<'de> for EntriesVisitor<V> {
            type Value = Entries<V>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a mapping")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some(key) = map.next_key::<Spanned<String>>()? {
                    out.push((key, map.next_value()?));
                }
                Ok(Entries(out))
            }
        }
        d.deserialize_map(EntriesVisitor(PhantomData))
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    prohibited_purposes: Vec<Spanned<String>>,
    #[serde(default)]
    purposes: Entries<RawPurpose>,
    #[serde(default)]
    roles: Entries<Vec<Spanned<String>>>,
    #[serde(default)]
    routes: Vec<RawRoute>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPurpose {
    #[serde(default)]
    justification_claim: Option<Spanned<String>>,
    #[serde(default)]
    subject_scoped: bool,
    #[serde(default)]
    deletion_exempt: bool,
    #[serde(default)]
    deidentified_only: bool,
    #[serde(default)]
    honour_opt_outs: bool,
    #[serde(default)]
    api_content_requires_opt_in: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    #[serde(default)]
    name: Option<Spanned<String>>,
    path: Spanned<String>,
    upstream: Spanned<String>,
}

/// A role's purpose list, kept with its file until every purpose is known.
struct RoleDef {
    name: String,
    file: PathBuf,
    purposes: Vec<Spanned<String>>,
}

/// The policy being assembled from the files, with where each thing came from.
#[derive(Default)]
struct Merger {
    purposes: HashMap<String, (PurposeRule, SourceLoc)>,
    prohibited: Vec<(String, SourceLoc)>,
    roles: Vec<RoleDef>,
    role_locs: HashMap<String, SourceLoc>,
    routes: Vec<(Route, Vec<Segment>, SourceLoc)>,
    route_names: HashMap<String, SourceLoc>,
}

/// Loads every policy file in `dir` (see the module doc for the format).
/// `exclude` lists files in the directory that are not policy (the consent file).
pub fn load_dir(dir: &Path, exclude: &[&Path]) -> Result<Policy, ConfigError> {
    let files = policy_files(dir, exclude)?;
    if files.is_empty() {
        return Err(ConfigError::new(
            dir,
            None,
            "no policy files (*.yaml or *.yml) in the policy directory",
        ));
    }
    let mut merger = Merger::default();
    let mut hasher = Sha256::new();
    for file in &files {
        let text = read_file(file)?;
        hash_file(&mut hasher, file, &text);
        if !is_blank_yaml(&text) && !is_consent_registry(&text) {
            let raw: RawFile = parse_yaml(file, &text)?;
            merger.add(file, raw)?;
        }
    }
    let mut policy = merger.finish(dir)?;
    policy.digest = hex::encode(hasher.finalize());
    policy.files = files;
    Ok(policy)
}

/// The top-level keys a file may have, to tell the two kinds apart.
#[derive(Deserialize)]
struct TopLevel {
    #[serde(default)]
    users: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    orgs: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    prohibited_purposes: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    purposes: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    roles: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    routes: Option<serde::de::IgnoredAny>,
}

/// Whether a YAML file of the policy folder is a consent registry (only
/// `users:`/`orgs:` at the top), e.g. the shipped example `consent.yaml`
/// left beside the policy while `consent_file` points elsewhere. A file that
/// mixes both kinds is parsed as policy, so its mistake is reported.
fn is_consent_registry(text: &str) -> bool {
    let Ok(top) = serde_saphyr::from_str::<TopLevel>(text) else {
        return false;
    };
    let consent = top.users.is_some() || top.orgs.is_some();
    let policy = top.prohibited_purposes.is_some()
        || top.purposes.is_some()
        || top.roles.is_some()
        || top.routes.is_some();
    consent && !policy
}

/// Errors at the first route whose upstream is not one of `known`.
pub fn check_upstreams(policy: &Policy, known: &[&str]) -> Result<(), ConfigError> {
    for (i, route) in policy.routes.routes().iter().enumerate() {
        if known.contains(&route.upstream.as_str()) {
            continue;
        }
        let loc = policy.route_sources.get(i).cloned().unwrap_or_default();
        return Err(ConfigError::new(
            &loc.file,
            loc.line,
            format!(
                "route `{}`: upstream `{}` is not defined in the config (known: {})",
                route.name,
                route.upstream,
                known.join(", ")
            ),
        ));
    }
    Ok(())
}

/// The policy files of `dir`, sorted by name.
fn policy_files(dir: &Path, exclude: &[&Path]) -> Result<Vec<PathBuf>, ConfigError> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| ConfigError::new(dir, None, format!("cannot read policy directory: {e}")))?;
    let excluded: HashSet<PathBuf> = exclude.iter().map(|p| canonical(p)).collect();
    let mut files = Vec::new();
    for entry in entries {
        let path = entry
            .map_err(|e| ConfigError::new(dir, None, format!("cannot read policy directory: {e}")))?
            .path();
        if is_policy_file(&path) && !excluded.contains(&canonical(&path)) {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Resolves symlinks and `..` so that `exclude` matches however it is spelt.
fn canonical(p: &Path) -> PathBuf {
    p.canonicalize().unwrap_or_else(|_| p.to_path_buf())
}

/// A visible regular `*.yaml`/`*.yml` file (editors leave hidden temp files).
fn is_policy_file(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let yaml = name.ends_with(".yaml") || name.ends_with(".yml");
    yaml && !name.starts_with('.') && path.is_file()
}

/// Only comments and blank lines: a valid, empty contribution.
fn is_blank_yaml(text: &str) -> bool {
    text.lines()
        .map(str::trim)
        .all(|l| l.is_empty() || l.starts_with('#') || l == "---")
}

fn hash_file(hasher: &mut Sha256, file: &Path, text: &str) {
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    hasher.update(name.as_bytes());
    hasher.update([0u8]);
    hasher.update((text.len() as u64).to_le_bytes());
    hasher.update(text.as_bytes());
}

fn loc<T>(file: &Path, spanned: &Spanned<T>) -> SourceLoc {
    SourceLoc {
        file: file.to_path_buf(),
        line: line_of(spanned),
    }
}

fn render(loc: &SourceLoc) -> String {
    match loc.line {
        Some(l) => format!("{}:{l}", loc.file.display()),
        None => loc.file.display().to_string(),
    }
}

fn non_blank(file: &Path, v: &Spanned<String>, what: &str) -> Result<(), ConfigError> {
    if v.value.trim().is_empty() {
        return Err(ConfigError::at(
            file,
            v,
            format!("{what} must not be blank"),
        ));
    }
    Ok(())
}

impl Merger {
    fn add(&mut self, file: &Path, raw: RawFile) -> Result<(), ConfigError> {
        for p in raw.prohibited_purposes {
            non_blank(file, &p, "a prohibited purpose")?;
            self.prohibited.push((p.value.clone(), loc(file, &p)));
        }
        for (name, purpose) in raw.purposes.0 {
            self.add_purpose(file, name, purpose)?;
        }
        for (name, purposes) in raw.roles.0 {
            self.add_role(file, name, purposes)?;
        }
        for route in raw.routes {
            self.add_route(file, route)?;
        }
        Ok(())
    }

    fn add_purpose(
        &mut self,
        file: &Path,
        name: Spanned<String>,
        raw: RawPurpose,
    ) -> Result<(), ConfigError> {
        non_blank(file, &name, "a purpose name")?;
        if let Some((_, first)) = self.purposes.get(&name.value) {
            let msg = format!(
                "purpose `{}` is already defined at {}",
                name.value,
                render(first)
            );
            return Err(ConfigError::at(file, &name, msg));
        }
        let justification = raw
            .justification_claim
            .map(|j| justification_claim(file, &name.value, j))
            .transpose()?;
        let rule = PurposeRule {
            name: name.value.clone(),
            justification_claim: justification,
            subject_scoped: raw.subject_scoped,
            deletion_exempt: raw.deletion_exempt,
            deidentified_only: raw.deidentified_only,
            honour_opt_outs: raw.honour_opt_outs,
            api_content_requires_opt_in: raw.api_content_requires_opt_in,
        };
        self.purposes
            .insert(name.value.clone(), (rule, loc(file, &name)));
        Ok(())
    }

    fn add_role(
        &mut self,
        file: &Path,
        name: Spanned<String>,
        purposes: Vec<Spanned<String>>,
    ) -> Result<(), ConfigError> {
        non_blank(file, &name, "a role name")?;
        if let Some(first) = self.role_locs.get(&name.value) {
            let msg = format!(
                "role `{}` is already defined at {}",
                name.value,
                render(first)
            );
            return Err(ConfigError::at(file, &name, msg));
        }
        self.role_locs.insert(name.value.clone(), loc(file, &name));
        self.roles.push(RoleDef {
            name: name.value,
            file: file.to_path_buf(),
            purposes,
        });
        Ok(())
    }

    fn add_route(&mut self, file: &Path, raw: RawRoute) -> Result<(), ConfigError> {
        let segments =
            parse_template(&raw.path.value).map_err(|e| ConfigError::at(file, &raw.path, e))?;
        non_blank(file, &raw.upstream, "a route's upstream")?;
        let name = match &raw.name {
            Some(n) => {
                non_blank(file, n, "a route name")?;
                n.value.clone()
            }
            None => raw.path.value.clone(),
        };
        let name_loc = raw
            .name
            .as_ref()
            .map_or_else(|| loc(file, &raw.path), |n| loc(file, n));
        if let Some(first) = self.route_names.get(&name) {
            let msg = format!("route name `{name}` is already used at {}", render(first));
            return Err(ConfigError::new(file, name_loc.line, msg));
        }
        self.route_names.insert(name.clone(), name_loc);
        let route = Route {
            name,
            template: raw.path.value,
            upstream: raw.upstream.value.clone(),
        };
        self.routes
            .push((route, segments, loc(file, &raw.upstream)));
        Ok(())
    }

    /// Cross-file checks, then the compiled policy.
    fn finish(self, dir: &Path) -> Result<Policy, ConfigError> {
        self.check_prohibited()?;
        let roles = self.resolve_roles()?;
        if self.routes.is_empty() {
            return Err(ConfigError::new(
                dir,
                None,
                "the policy defines no routes (add a `routes:` list to a policy file)",
            ));
        }
        let mut parsed = Vec::with_capacity(self.routes.len());
        let mut route_sources = Vec::with_capacity(self.routes.len());
        for (route, segs, source) in self.routes {
            parsed.push((route, segs));
            route_sources.push(source);
        }
        Ok(Policy {
            purposes: self
                .purposes
                .into_iter()
                .map(|(k, (r, _))| (k, r))
                .collect(),
            prohibited: self.prohibited.into_iter().map(|(p, _)| p).collect(),
            roles,
            routes: RouteTable::from_parsed(parsed),
            digest: String::new(),
            files: Vec::new(),
            route_sources,
        })
    }

    fn check_prohibited(&self) -> Result<(), ConfigError> {
        for (name, at) in &self.prohibited {
            if let Some((_, defined)) = self.purposes.get(name) {
                return Err(ConfigError::new(
                    &at.file,
                    at.line,
                    format!(
                        "purpose `{name}` is prohibited but defined at {}",
                        render(defined)
                    ),
                ));
            }
        }
        Ok(())
    }

    fn resolve_roles(&self) -> Result<HashMap<String, Vec<String>>, ConfigError> {
        let prohibited: HashSet<&str> = self.prohibited.iter().map(|(p, _)| p.as_str()).collect();
        let mut roles = HashMap::new();
        for role in &self.roles {
            for p in &role.purposes {
                let why = if prohibited.contains(p.value.as_str()) {
                    "a prohibited purpose"
                } else if !self.purposes.contains_key(&p.value) {
                    "an undefined purpose"
                } else {
                    continue;
                };
                let msg = format!("role `{}` permits `{}`, {why}", role.name, p.value);
                return Err(ConfigError::at(&role.file, p, msg));
            }
            let names = role.purposes.iter().map(|p| p.value.clone()).collect();
            roles.insert(role.name.clone(), names);
        }
        Ok(roles)
    }
}

fn justification_claim(
    file: &Path,
    purpose: &str,
    claim: Spanned<String>,
) -> Result<String, ConfigError> {
    non_blank(file, &claim, "justification_claim")?;
    if RESERVED_CLAIMS.contains(&claim.value.as_str()) {
        let msg = format!(
            "purpose `{purpose}`: `{}` is a standard claim and cannot be a justification",
            claim.value
        );
        return Err(ConfigError::at(file, &claim, msg));
    }
    Ok(claim.value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shipped_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("policies")
    }

    fn shipped_text() -> String {
        std::fs::read_to_string(shipped_dir().join("policy.yaml")).unwrap()
    }

    /// The 1-based line of the first line containing `needle`.
    fn line_with(text: &str, needle: &str) -> u32 {
        let i = text.lines().position(|l| l.contains(needle)).unwrap();
        u32::try_from(i + 1).unwrap()
    }

    /// Loads a temporary directory holding `files`; errors name files by name.
    fn load(files: &[(&str, &str)]) -> Result<Policy, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        load_dir(dir.path(), &[]).map_err(|mut e| {
            e.file = PathBuf::from(e.file.file_name().unwrap());
            e
        })
    }

    fn broken(from: &str, to: &str) -> (ConfigError, u32) {
        let text = shipped_text();
        assert!(text.contains(from), "{from}");
        let line = line_with(&text, from);
        (
            load(&[("policy.yaml", &text.replacen(from, to, 1))]).unwrap_err(),
            line,
        )
    }

    #[test]
    fn loads_the_shipped_policy() {
        let dir = shipped_dir();
        let consent = dir.join("consent.yaml");
        let p = load_dir(&dir, &[consent.as_path()]).unwrap();
        assert_eq!(p.purposes.len(), 4);
        assert!(p.purposes["legal"].deletion_exempt);
        assert_eq!(
            p.purposes["support"].justification_claim.as_deref(),
            Some("ticket_id")
        );
        assert!(p.purposes["training"].api_content_requires_opt_in);
        assert_eq!(p.prohibited.len(), 3);
        assert_eq!(p.roles["security"], vec!["abuse".to_string()]);
        assert_eq!(p.routes.routes().len(), 2);
        assert_eq!(p.digest.len(), 64);
        assert_eq!(p.files, vec![dir.join("policy.yaml")]);
        let m = p.routes.lookup("/v1/users/u1/files/f").unwrap();
        assert_eq!((m.route.name.as_str(), m.owner), ("files", "u1"));
        check_upstreams(&p, &["content"]).unwrap();
    }

    #[test]
    fn a_consent_registry_in_the_policy_folder_is_left_alone() {
        let dir = shipped_dir();
        // Not excluded: consent_file points elsewhere, the example stays.
        let p = load_dir(&dir, &[]).unwrap();
        assert_eq!(p.purposes.len(), 4);
        assert_eq!(p.files.len(), 2, "both files are watched and hashed");
        // A file mixing both kinds is policy, and its mistake is reported.
        let e = load(&[("p.yaml", &format!("{}\nusers: {{}}\n", shipped_text()))]).unwrap_err();
        assert!(e.message.contains("users"), "{e}");
    }

    #[test]
    fn unknown_keys_point_at_their_line() {
        let (e, line) = broken(
            "subject_scoped: true, deletion",
            "subject_scope: true, deletion",
        );
        assert_eq!(e.line, Some(line), "{e}");
        assert!(
            e.to_string().starts_with(&format!("policy.yaml:{line}:")),
            "{e}"
        );
        assert!(e.message.contains("subject_scope"), "{e}");
    }

    #[test]
    fn roles_must_name_defined_purposes() {
        let (e, line) = broken("support: [support]", "support: [suport]");
        assert_eq!(e.line, Some(line), "{e}");
        assert!(e.message.contains("`suport`, an undefined purpose"), "{e}");
        let (e, line) = broken("research: [training]", "research: [training, sale]");
        assert_eq!(e.line, Some(line), "{e}");
        assert!(e.message.contains("prohibited"), "{e}");
    }

    #[test]
    fn bad_templates_point_at_the_route() {
        let (e, line) = broken("/v1/users/{owner}/files/**", "/v1/users/{owner}/**/files");
        assert_eq!(e.line, Some(line), "{e}");
        assert!(e.message.contains("`**`"), "{e}");
    }

    #[test]
    fn definitions_must_be_unique_across_files() {
        let text = shipped_text();
        let abuse = line_with(&text, "abuse: {justification_claim");
        let e = load(&[
            ("a.yaml", &text),
            ("b.yaml", "# more\npurposes:\n  abuse: {}\n"),
        ])
        .unwrap_err();
        assert_eq!((e.file.to_str(), e.line), (Some("b.yaml"), Some(3)), "{e}");
        assert!(e.message.contains(&format!("a.yaml:{abuse}")), "{e}");

        let e = load(&[("a.yaml", &text), ("b.yaml", "roles:\n  legal: [abuse]\n")]).unwrap_err();
        assert_eq!((e.file.to_str(), e.line), (Some("b.yaml"), Some(2)), "{e}");

        let e = load(&[
            ("a.yaml", &text),
            ("b.yaml", "prohibited_purposes: [training]\n"),
        ])
        .unwrap_err();
        assert_eq!((e.file.to_str(), e.line), (Some("b.yaml"), Some(1)), "{e}");
        assert!(e.message.contains("prohibited but defined"), "{e}");

        let route = "routes:\n  - {name: files, path: \"/x/{owner}\", upstream: content}\n";
        let e = load(&[("a.yaml", &text), ("b.yaml", route)]).unwrap_err();
        assert_eq!((e.file.to_str(), e.line), (Some("b.yaml"), Some(2)), "{e}");
    }

    #[test]
    fn files_merge_in_name_order_and_skip_excluded_and_hidden_ones() {
        let dir = tempfile::tempdir().unwrap();
        let routes = "routes:\n  - {path: \"/a/{owner}/**\", upstream: up}\n";
        std::fs::write(dir.path().join("b.yml"), routes).unwrap();
        std::fs::write(
            dir.path().join("a.yaml"),
            "purposes: {p: {}}\nroles: {r: [p]}\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("consent.yaml"), "users: {}\n").unwrap();
        std::fs::write(dir.path().join(".#a.yaml"), "junk: 1\n").unwrap();
        std::fs::write(dir.path().join("empty.yaml"), "# nothing yet\n").unwrap();
        std::fs::create_dir(dir.path().join("tests")).unwrap();
        std::fs::write(dir.path().join("tests/x.yaml"), "cases: []\n").unwrap();
        let consent = dir.path().join("consent.yaml");
        let p = load_dir(dir.path(), &[consent.as_path()]).unwrap();
        assert_eq!(p.files.len(), 3);
        assert_eq!(p.routes.routes()[0].name, "/a/{owner}/**");
        let e = check_upstreams(&p, &["content"]).unwrap_err();
        assert_eq!(e.file, dir.path().join("b.yml"));
        assert_eq!(e.line, Some(2), "{e}");
        assert!(e.message.contains("upstream `up`"), "{e}");
    }

    #[test]
    fn empty_policies_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let e = load_dir(dir.path(), &[]).unwrap_err();
        assert!(e.message.contains("no policy files"), "{e}");
        let e = load(&[("a.yaml", "purposes: {p: {}}\n")]).unwrap_err();
        assert!(e.message.contains("no routes"), "{e}");
    }

    #[test]
    fn justification_claims_must_be_usable() {
        let (e, line) = broken("justification_claim: ticket_id", "justification_claim: sub");
        assert_eq!(e.line, Some(line), "{e}");
        let (e, _) = broken(
            "justification_claim: ticket_id",
            "justification_claim: \"\"",
        );
        assert!(e.message.contains("blank"), "{e}");
    }

    #[test]
    fn the_digest_follows_the_content() {
        let text = shipped_text();
        let a = load(&[("a.yaml", &text)]).unwrap().digest;
        let b = load(&[(
            "a.yaml",
            &text.replace("security: [abuse]", "security: [abuse, legal]"),
        )])
        .unwrap()
        .digest;
        let c = load(&[("b.yaml", &text)]).unwrap().digest;
        assert_ne!(a, b);
        assert_ne!(a, c);
        assert_eq!(a, load(&[("a.yaml", &text)]).unwrap().digest);
    }
}
