//! What validation reports: each problem with its file, position and the fix.

use std::fmt;

use super::json::Pos;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Error,
    Warning,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub severity: Severity,
    /// The file in the environment repo, e.g. `section.config.json` or `example/`.
    pub file: String,
    pub pos: Option<Pos>,
    /// What is wrong and what to do, starting with the JSON path when there is one.
    pub message: String,
    /// The environment the problem belongs to, when it concerns one environment only: a push
    /// to another environment reports it as a warning.
    pub environment: Option<String>,
}

impl Diagnostic {
    pub fn error(file: impl Into<String>, pos: Option<Pos>, message: impl Into<String>) -> Self {
        Diagnostic { severity: Severity::Error, file: file.into(), pos, message: message.into(), environment: None }
    }

    pub fn warning(file: impl Into<String>, pos: Option<Pos>, message: impl Into<String>) -> Self {
        Diagnostic { severity: Severity::Warning, ..Self::error(file, pos, message) }
    }

    pub fn in_environment(mut self, env: &str) -> Self {
        self.environment = Some(env.to_owned());
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    /// As CI reads it: severity, file, line, column and the message (which says the fix).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "severity": match self.severity { Severity::Error => "error", Severity::Warning => "warning" },
            "file": self.file,
            "line": self.pos.map(|p| p.line),
            "column": self.pos.map(|p| p.col),
            "message": self.message,
        })
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let level = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, "{level}: {}", self.file)?;
        if let Some(pos) = self.pos {
            write!(f, ":{pos}")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Orders diagnostics for display: by file, then position, errors before warnings at one place.
pub fn sort(diags: &mut [Diagnostic]) {
    diags.sort_by(|a, b| (&a.file, a.pos, a.severity).cmp(&(&b.file, b.pos, b.severity)));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_like_a_compiler_message() {
        let d = Diagnostic::error(
            "section.config.json",
            Some(Pos { line: 3, col: 15 }),
            "proxychain[0].name \"ex-ample\": use letters and digits only",
        );
        assert_eq!(
            d.to_string(),
            "error: section.config.json:3:15: proxychain[0].name \"ex-ample\": use letters and digits only"
        );
        assert_eq!(Diagnostic::warning("x/", None, "m").to_string(), "warning: x/: m");
    }
}
