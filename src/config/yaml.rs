//! Reading and parsing YAML files into raw serde structs, with parser
//! errors turned into `ConfigError`s that name the file and line.

use std::path::Path;

use serde::Deserialize;
use serde_saphyr::Spanned;

use super::ConfigError;

/// The 1-based line of a spanned value, when the parser recorded one.
pub fn line_of<T>(spanned: &Spanned<T>) -> Option<u32> {
    let line = spanned.referenced.line();
    (line > 0).then_some(u32::try_from(line).unwrap_or(u32::MAX))
}

/// Reads a file, mapping I/O errors to a `ConfigError` naming it.
pub fn read_file(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path)
        .map_err(|e| ConfigError::new(path, None, format!("cannot read: {e}")))
}

/// Parses YAML text into `T`, turning parser errors into `file:line: message`.
/// Unknown keys are errors wherever the target struct says `deny_unknown_fields`.
pub fn parse_yaml<T: for<'de> Deserialize<'de>>(file: &Path, text: &str) -> Result<T, ConfigError> {
    serde_saphyr::from_str::<T>(text).map_err(|e| {
        let line = e
            .location()
            .map(|l| u32::try_from(l.line()).unwrap_or(u32::MAX))
            .filter(|l| *l > 0);
        ConfigError::new(file, line, yaml_message(&e))
    })
}

/// The parser's message without its rendered source snippet: the first line
/// that is not location decoration.
fn yaml_message(e: &serde_saphyr::Error) -> String {
    let rendered = e.to_string();
    rendered
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with("-->") && !l.starts_with('|'))
        .map(|l| l.trim_start_matches("error: ").to_string())
        .unwrap_or(rendered)
}
