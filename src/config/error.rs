//! The error every config, policy and consent loader returns: the file, the
//! 1-based line when known, and the message, shown as `file:line: message`.

use std::path::{Path, PathBuf};

use serde_saphyr::Spanned;

use super::yaml::line_of;

/// A configuration, policy or consent error pointing at its source.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    pub file: PathBuf,
    /// 1-based line, when known.
    pub line: Option<u32>,
    pub message: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{}: {}", self.file.display(), line, self.message),
            None => write!(f, "{}: {}", self.file.display(), self.message),
        }
    }
}

impl ConfigError {
    pub fn new(file: &Path, line: Option<u32>, message: impl Into<String>) -> Self {
        ConfigError {
            file: file.to_path_buf(),
            line,
            message: message.into(),
        }
    }

    /// An error at the location of a spanned YAML value.
    pub fn at<T>(file: &Path, spanned: &Spanned<T>, message: impl Into<String>) -> Self {
        Self::new(file, line_of(spanned), message)
    }
}
