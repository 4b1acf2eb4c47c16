//! Names users give things (accounts, applications, repos) and the rules they follow.
//!
//! Pure: every name that reaches the disk or a URL passes through here first, so path traversal
//! (`..`, `/`, NUL, encoded slashes) is impossible by construction: a name is a short run of
//! ASCII letters, digits and a few separators, never starting with one.

use std::fmt;
use std::net::IpAddr;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NameError {
    #[error("{what} {value:?} is not valid: {rule}")]
    Invalid { what: &'static str, value: String, rule: &'static str },
}

/// One application's repo: `/account/<account>/application/<application>/<repo>.git`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepoId {
    pub account: String,
    pub application: String,
    /// The repo name without the `.git` suffix.
    pub repo: String,
}

const ID_RULE: &str = "use 1-64 letters, digits, '-' or '_', starting with a letter or digit";
const REPO_RULE: &str =
    "use 1-100 letters, digits, '-', '_' or '.', starting with a letter or digit, not ending in '.' or '.lock'";

fn check(what: &'static str, value: &str, max: usize, extra: &[u8], rule: &'static str) -> Result<(), NameError> {
    let bytes = value.as_bytes();
    let ok = !bytes.is_empty()
        && bytes.len() <= max
        && bytes[0].is_ascii_alphanumeric()
        && bytes.iter().all(|b| b.is_ascii_alphanumeric() || extra.contains(b));
    if ok {
        Ok(())
    } else {
        Err(NameError::Invalid { what, value: value.to_owned(), rule })
    }
}

impl RepoId {
    /// Builds a repo id from its three URL segments; `repo` may carry the `.git` suffix.
    pub fn new(account: &str, application: &str, repo: &str) -> Result<Self, NameError> {
        check("account", account, 64, b"-_", ID_RULE)?;
        check("application", application, 64, b"-_", ID_RULE)?;
        let repo = repo.strip_suffix(".git").unwrap_or(repo);
        check("repo name", repo, 100, b"-_.", REPO_RULE)?;
        if repo.ends_with('.') || repo.ends_with(".lock") || repo.contains("..") {
            return Err(NameError::Invalid { what: "repo name", value: repo.to_owned(), rule: REPO_RULE });
        }
        Ok(RepoId { account: account.to_owned(), application: application.to_owned(), repo: repo.to_owned() })
    }

    /// The URL path of the repo, e.g. `/account/9999/application/9999/sample-application.git`.
    pub fn url_path(&self) -> String {
        format!("/account/{}/application/{}/{}.git", self.account, self.application, self.repo)
    }

    /// The command that creates this repo, for messages.
    pub fn create_command(&self) -> String {
        format!("devpop app create {} {} {}", self.account, self.application, self.repo)
    }
}

impl fmt::Display for RepoId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.account, self.application, self.repo)
    }
}

// Names in an environment's config and in packages (the validation, the packages and the
// renderer all check them here, so none of them imports another for a name rule).

/// `proxychain[].name`: letters and digits only, 1-32 characters.
pub fn is_module_name(s: &str) -> bool {
    (1..=32).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// `module:version`.
pub fn is_package_ref(s: &str) -> bool {
    let Some((module, version)) = s.split_once(':') else { return false };
    let part = |p: &str, max: usize| {
        (1..=max).contains(&p.len())
            && p.as_bytes()[0].is_ascii_alphanumeric()
            && p.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    };
    part(module, 63) && part(version, 64)
}

/// An environment name is a branch name; devpop keeps to a portable subset.
pub fn is_branch_name(s: &str) -> bool {
    (1..=100).contains(&s.len())
        && s.as_bytes()[0].is_ascii_alphanumeric()
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        && !s.ends_with(".lock")
        && !s.ends_with('.')
        && !s.contains("..")
}

/// An alternate origin's name: letters, digits and `_`, 1-50 characters.
pub fn is_alternate_origin_name(s: &str) -> bool {
    (1..=50).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// A DNS host name (RFC 1123 labels) or an IP address.
pub fn is_host(s: &str) -> bool {
    if s.parse::<IpAddr>().is_ok() {
        return true;
    }
    let name = s.strip_suffix('.').unwrap_or(s);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// An RFC 1123 label: what Kubernetes accepts as a container or volume name.
pub fn is_dns_label(s: &str) -> bool {
    (1..=63).contains(&s.len())
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_section_style_ids_and_strips_dot_git() {
        let id = RepoId::new("9999", "9999", "sample-application.git").unwrap();
        assert_eq!(id.repo, "sample-application");
        assert_eq!(id.url_path(), "/account/9999/application/9999/sample-application.git");
        assert_eq!(RepoId::new("acme", "www_site", "www.site.com").unwrap().repo, "www.site.com");
    }

    #[test]
    fn rejects_traversal_and_odd_bytes() {
        for (a, b, r) in [
            ("..", "1", "x"),
            ("1", "1", ".."),
            ("1", "1", "a..b"),
            ("1", "1", ".hidden"),
            ("1", "1", "a/b"),
            ("1", "1", "a%2fb"),
            ("1", "1", "a\0b"),
            ("1", "1", ""),
            ("1", "1", ".git"),
            ("1", "1", "x.lock"),
            ("1", "1", "x."),
            ("", "1", "x"),
            ("-x", "1", "x"),
            ("1", "a b", "x"),
            ("1", "é", "x"),
        ] {
            assert!(RepoId::new(a, b, r).is_err(), "{a}/{b}/{r} must be refused");
        }
        assert!(RepoId::new(&"a".repeat(65), "1", "x").is_err());
        assert!(RepoId::new("1", "1", &"a".repeat(101)).is_err());
    }
}
