//! The compiled policy: lookup structures built once at load, so that a
//! decision is a handful of hash lookups.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

use super::routes::RouteTable;

/// What a purpose requires (docs/reference.md §6 rules 9-16).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PurposeRule {
    pub name: String,
    /// Rule 9: this claim must be present and non-empty (e.g. `case_id`).
    pub justification_claim: Option<String>,
    /// Rule 10: the path owner must be in `subjects`.
    pub subject_scoped: bool,
    /// Rule 11 exemption (legal hold): deleted accounts stay readable.
    pub deletion_exempt: bool,
    /// Rule 13: `x-content-deidentified: true` required.
    pub deidentified_only: bool,
    /// Rule 14: content created inside an owner's opt-out period is refused.
    pub honour_opt_outs: bool,
    /// Rule 15: `x-content-source: api` content needs an org opt-in.
    pub api_content_requires_opt_in: bool,
}

/// A compiled policy. Immutable; a reload builds a new one.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    pub purposes: HashMap<String, PurposeRule>,
    pub prohibited: HashSet<String>,
    /// role → purposes it permits.
    pub roles: HashMap<String, Vec<String>>,
    pub routes: RouteTable,
    /// SHA-256 (hex) over the source files, to tell versions apart.
    pub digest: String,
    /// The files it was loaded from.
    pub files: Vec<PathBuf>,
    /// Where each route (same index as `routes.routes()`) was declared, so
    /// that checks made after loading (unknown upstreams) can point at it.
    pub route_sources: Vec<SourceLoc>,
}

/// A place in a policy file.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SourceLoc {
    pub file: PathBuf,
    /// 1-based line, when known.
    pub line: Option<u32>,
}

impl Policy {
    /// The rule of a purpose the policy defines.
    pub fn purpose(&self, name: &str) -> Option<&PurposeRule> {
        self.purposes.get(name)
    }

    /// The first of `roles` that permits `purpose`, if any.
    pub fn permitting_role<'r>(&self, roles: &'r [String], purpose: &str) -> Option<&'r str> {
        roles
            .iter()
            .find(|r| {
                self.roles
                    .get(r.as_str())
                    .is_some_and(|ps| ps.iter().any(|p| p == purpose))
            })
            .map(String::as_str)
    }
}
