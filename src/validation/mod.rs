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

use crate::packages::Catalog;
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

/// Checks a commit for deployment to `environment` (the pushed branch), given the installed
/// packages, with the default [`config::Rules`].
pub fn check(snapshot: &Snapshot, environment: &str, catalog: &Catalog) -> Report {
    check_with(snapshot, environment, catalog, &config::Rules::default())
}

/// [`check`] with the operator's [`config::Rules`] (server settings, passed in as data).
pub fn check_with(snapshot: &Snapshot, environment: &str, catalog: &Catalog, rules: &config::Rules) -> Report {
    let refuse =
        |message: String| Report { config: None, diagnostics: vec![Diagnostic::error(config::FILE, None, message)] };
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
    let (config, mut diagnostics) = config::parse_with(text, rules);
    config::scope_to_branch(config.as_ref(), &mut diagnostics, environment);
    if let Some(config) = &config {
        for entry in &config.proxychain {
            if !catalog.contains(&entry.image) {
                diagnostics.push(Diagnostic::error(
                    config::FILE,
                    Some(entry.image_pos),
                    unknown_package(&entry.image, catalog),
                ));
            }
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

fn unknown_package(image: &str, catalog: &Catalog) -> String {
    let module = image.split_once(':').map_or(image, |(m, _)| m);
    let versions = catalog.versions(module);
    let installed = if versions.is_empty() {
        let all = catalog.all();
        format!(
            "no version of {module} is installed (installed packages: {})",
            if all.is_empty() { "none".to_owned() } else { all.join(", ") }
        )
    } else {
        format!("installed versions of {module}: {}", versions.join(", "))
    };
    format!("image {image:?} is not an installed package; {installed}. Use one of those, or install it with devpop package add")
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
        let r = check(&Snapshot::default(), "Production", &catalog());
        assert!(!r.is_ok());
        assert!(r.diagnostics[0].to_string().starts_with("error: section.config.json: missing at the repo root"));
    }

    #[test]
    fn every_module_needs_its_folder() {
        let r = check(&snapshot(TWO_MODULES, &["cache", "outage_pages"]), "Production", &catalog());
        assert_eq!(r.errors(), 1);
        assert!(r.diagnostics[0]
            .to_string()
            .contains("1:74: proxychain entry \"example\" has no folder 'example/' at the repo root"));
        assert!(check(&snapshot(TWO_MODULES, &["cache", "example"]), "Production", &catalog()).is_ok());
    }

    fn catalog() -> Catalog {
        Catalog(
            [("edge-cache", vec!["6.5.0"]), ("example-simple", vec!["1.0.0", "1.1.0"])]
                .into_iter()
                .map(|(m, v)| (m.to_owned(), v.into_iter().map(str::to_owned).collect()))
                .collect(),
        )
    }

    #[test]
    fn unknown_package_lists_the_installed_versions_of_its_module() {
        let text = TWO_MODULES
            .replace("example-simple:1.0.0", "example-simple:9.9.9")
            .replace("edge-cache:6.5.0", "varnish:1");
        let r = check(&snapshot(&text, &["cache", "example"]), "Production", &catalog());
        let m: Vec<String> = r.diagnostics.iter().map(ToString::to_string).collect();
        assert_eq!(m.len(), 2, "{m:#?}");
        assert!(m[0].contains("image \"varnish:1\" is not an installed package; no version of varnish is installed (installed packages: edge-cache:6.5.0, example-simple:1.0.0, example-simple:1.1.0)"), "{m:#?}");
        assert!(m[1].contains("1:87: image \"example-simple:9.9.9\" is not an installed package; installed versions of example-simple: 1.0.0, 1.1.0"), "{m:#?}");
    }
}
