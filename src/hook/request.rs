//! What a push asks of the hook: its ref updates, its push options (bounded and checked, so no
//! option can pass for another or carry a control character to a terminal) and where git keeps
//! its objects until the verdict. Pure data and parsers; the hook's checks are in `mod.rs`.

use std::io::BufRead;

use git2::Oid;

use super::HookError;

/// One ref update as git hands it to the hook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefUpdate {
    pub old: Oid,
    pub new: Oid,
    pub refname: String,
}

impl RefUpdate {
    pub fn parse(line: &str) -> Result<Self, HookError> {
        let bad = || HookError::BadRefUpdate(line.to_owned());
        let mut parts = line.split(' ');
        let (Some(old), Some(new), Some(refname), None) = (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        // The line's shape is checked here; libgit2 only converts a well-formed id, and its
        // failure is devpop's (a `Git` error), not a malformed line of git's.
        let hex = |s: &str| s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit());
        if !hex(old) || !hex(new) || refname.is_empty() {
            return Err(bad());
        }
        Ok(RefUpdate { old: Oid::from_str(old)?, new: Oid::from_str(new)?, refname: refname.to_owned() })
    }

    pub fn branch(&self) -> Option<&str> {
        self.refname.strip_prefix("refs/heads/")
    }

    pub fn is_delete(&self) -> bool {
        self.new.is_zero()
    }
}

/// The push options devpop understands (`git push -o dry-run`, `git push -o wait`), read from
/// `GIT_PUSH_OPTION_*` as git passes them to hooks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PushOptions {
    pub dry_run: bool,
    pub wait: bool,
    /// `-o json`: end with one `devpop-result: {...}` line for CI.
    pub json: bool,
    pub unknown: Vec<String>,
    /// Options refused outright: with control characters, or longer than [`MAX_OPTION_BYTES`].
    pub invalid: Vec<String>,
    /// More than [`MAX_OPTIONS`] options were sent (the rest are not looked at).
    pub too_many: bool,
}

/// Push options one push may send.
pub const MAX_OPTIONS: usize = 100;
/// The longest push option.
pub const MAX_OPTION_BYTES: usize = 256;

impl PushOptions {
    /// As git passes them to a hook process (`GIT_PUSH_OPTION_COUNT`, `GIT_PUSH_OPTION_<n>`).
    pub fn from_env() -> Self {
        let count: usize = std::env::var("GIT_PUSH_OPTION_COUNT").ok().and_then(|c| c.parse().ok()).unwrap_or(0);
        Self::parse((0..count).map(|i| std::env::var(format!("GIT_PUSH_OPTION_{i}")).unwrap_or_default()))
    }

    /// At most [`MAX_OPTIONS`] options are looked at. An option with a control character
    /// (git's own client refuses to send a newline, a raw client may) or longer than
    /// [`MAX_OPTION_BYTES`] is kept apart in `invalid`, so the push can be refused.
    pub fn parse(options: impl IntoIterator<Item = String>) -> Self {
        let mut o = PushOptions::default();
        for (n, option) in options.into_iter().enumerate() {
            if n >= MAX_OPTIONS {
                o.too_many = true;
                break;
            }
            if option.len() > MAX_OPTION_BYTES || option.chars().any(char::is_control) {
                o.invalid.push(option);
                continue;
            }
            match option.as_str() {
                "dry-run" => o.dry_run = true,
                "wait" => o.wait = true,
                "json" => o.json = true,
                _ => o.unknown.push(option),
            }
        }
        o
    }

    /// Why these options refuse the push, as `remote:` lines.
    pub fn problems(&self) -> Vec<String> {
        let mut problems: Vec<String> = self
            .invalid
            .iter()
            .map(|o| {
                let shown: String = o.chars().take(80).flat_map(char::escape_default).collect();
                format!(
                    "error: push option \"{shown}\" is refused: options are short words without control characters (devpop knows: dry-run, wait, json)"
                )
            })
            .collect();
        if self.too_many {
            problems.push(format!("error: more than {MAX_OPTIONS} push options; send fewer"));
        }
        problems
    }
}

/// One push as the hook sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PushRequest {
    pub updates: Vec<RefUpdate>,
    pub options: PushOptions,
    /// git's quarantine (`GIT_QUARANTINE_PATH`): where the pushed objects wait for the verdict.
    pub quarantine: Option<String>,
    /// A `-o dry-run` push whose refs git hands to the proc-receive hook, which keeps them
    /// where they are: accepting it moves nothing (set by the server that started git so).
    pub dry_run_answered: bool,
}

impl PushRequest {
    /// The push as git hands it to a hook process: ref updates on `input`, the rest in the
    /// environment.
    pub fn from_git(input: impl BufRead) -> Result<Self, HookError> {
        let updates = input.lines().map(|line| RefUpdate::parse(line?.trim_end())).collect::<Result<Vec<_>, _>>()?;
        Ok(PushRequest {
            updates,
            options: PushOptions::from_env(),
            quarantine: std::env::var("GIT_QUARANTINE_PATH").ok(),
            // A push to the repo on disk has no proc-receive step: a dry run is refused.
            dry_run_answered: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_options_are_bounded_in_number_length_and_characters() {
        let o = PushOptions::parse((0..101).map(|i| format!("o{i}")));
        assert!(o.too_many && o.unknown.len() == MAX_OPTIONS, "the 101st is not looked at");
        let o = PushOptions::parse(["wait".to_owned(), "x".repeat(MAX_OPTION_BYTES + 1), "a\tb".to_owned()]);
        assert!(o.wait && o.invalid.len() == 2, "{o:?}");
        assert_eq!(o.problems().len(), 2);
        let ok = PushOptions::parse(["dry-run".to_owned(), "json".to_owned(), "x".repeat(MAX_OPTION_BYTES)]);
        assert!(ok.dry_run && ok.json && ok.problems().is_empty(), "{ok:?}");
    }

    #[test]
    fn parses_git_ref_update_lines() {
        let z = "0".repeat(40);
        let a = "a".repeat(40);
        let u = RefUpdate::parse(&format!("{a} {z} refs/heads/Staging")).unwrap();
        assert_eq!(u.branch(), Some("Staging"));
        assert!(u.is_delete());
        assert!(matches!(RefUpdate::parse("x y"), Err(HookError::BadRefUpdate(_))));
        let short = format!("{} {a} refs/heads/x", &a[..39]);
        assert!(matches!(RefUpdate::parse(&short), Err(HookError::BadRefUpdate(_))), "a 39-digit id is malformed");
        assert!(RefUpdate::parse(&format!("{a} {a} refs/heads/x extra")).is_err());
    }
}
