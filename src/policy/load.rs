//! Loading the policy directory: YAML files → validated, compiled `Policy`.
//! STUB: to be implemented (policy helper).

use std::path::Path;

use super::model::Policy;
use crate::config::ConfigError;

/// Loads every policy file in `dir` (see README for the format). `exclude`
/// lists files in the directory that are not policy (the consent file).
pub fn load_dir(dir: &Path, _exclude: &[&Path]) -> Result<Policy, ConfigError> {
    Err(ConfigError::new(dir, None, "not implemented"))
}
