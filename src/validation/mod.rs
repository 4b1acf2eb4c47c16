//! Validation: is this commit of an environment repo deployable to this environment?
//!
//! Pure: it takes a [`Snapshot`] (what the commit holds, read by the caller from a git tree or a
//! directory) and returns diagnostics. The git hook and `devpop validate` share it, so they
//! always agree.

pub mod config;
pub mod diagnostic;
pub mod json;

use std::collections::BTreeSet;

pub use config::SectionConfig;
pub use diagnostic::{Diagnostic, Severity};

/// What validation needs to know about one commit of an environment repo.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub config: ConfigFile,
    /// Names of the folders at the repo root.
    pub top_level_dirs: BTreeSet<String>,
}

/// `section.config.json` as found at the repo root.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ConfigFile {
    #[default]
    Missing,
    /// A symlink (never followed) or a folder.
    NotAFile,
    /// Larger than [`config::MAX_BYTES`]; not read.
    TooLarge(u64),
    Present(Vec<u8>),
}

/// The outcome of checking one commit for one environment.
#[derive(Debug, Clone)]
pub struct Report {
    pub config: Option<SectionConfig>,
    /// Sorted by file and position.
    pub diagnostics: Vec<Diagnostic>,
}

impl Report {
    pub fn is_ok(&self) -> bool {
        !self.diagnostics.iter().any(Diagnostic::is_error)
    }

    pub fn errors(&self) -> usize {
        self.diagnostics.iter().filter(|d| d.is_error()).count()
    }
}

/// Checks a commit for deployment to `environment` (the pushed branch).
pub fn check(snapshot: &Snapshot, environment: &str) -> Report {
    let refuse = |message: String| Report {
        config: None,
        diagnostics: vec![Diagnostic::error(config::FILE, None, message)],
    };
    let text = match &snapshot.config {
        ConfigFile::Present(text) => text,
        ConfigFile::Missing => {
            return refuse(
                "missing at the repo root; every environment repo needs one: add it with a \"proxychain\" and \"environments\"".into(),
            )
        }
        ConfigFile::NotAFile => return refuse("must be a regular file (not a symlink or a folder)".into()),
        ConfigFile::TooLarge(size) => return refuse(config::too_large(*size)),
    };
    let (config, mut diagnostics) = config::parse(text);
    config::scope_to_branch(config.as_ref(), &mut diagnostics, environment);
    if let Some(config) = &config {
        for entry in &config.proxychain {
            if !snapshot.top_level_dirs.contains(&entry.name) {
                diagnostics.push(Diagnostic::error(
                    config::FILE,
                    Some(entry.name_pos),
                    format!(
                        "proxychain entry {:?} has no folder '{}/' at the repo root: add the module's proxy_config there",
                        entry.name, entry.name
                    ),
                ));
            }
        }
    }
    diagnostic::sort(&mut diagnostics);
    Report { config, diagnostics }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(config: &str, dirs: &[&str]) -> Snapshot {
        Snapshot {
            config: ConfigFile::Present(config.as_bytes().to_vec()),
            top_level_dirs: dirs.iter().map(|d| d.to_string()).collect(),
        }
    }

    const TWO_MODULES: &str = r#"{"proxychain": [{"name": "cache", "image": "edge-cache:6.5.0"}, {"name": "example", "image": "example-simple:1.0.0"}],
"environments": {"Production": {"origin": {"address": "example.com"}}}}"#;

    #[test]
    fn missing_config_is_an_error_that_says_what_to_add() {
        let r = check(&Snapshot::default(), "Production");
        assert!(!r.is_ok());
        assert!(r.diagnostics[0].to_string().starts_with("error: section.config.json: missing at the repo root"));
    }

    #[test]
    fn every_module_needs_its_folder() {
        let r = check(&snapshot(TWO_MODULES, &["cache", "outage_pages"]), "Production");
        assert_eq!(r.errors(), 1);
        assert!(r.diagnostics[0]
            .to_string()
            .contains("1:74: proxychain entry \"example\" has no folder 'example/' at the repo root"));
        assert!(check(&snapshot(TWO_MODULES, &["cache", "example"]), "Production").is_ok());
    }
}
