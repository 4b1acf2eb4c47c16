//! What the console's pages show of the records and the repos: when (times a browser turns
//! into local, relative ones), what (commit subjects) and why and by whom (a deployment's
//! action and actor). Pure but for [`subjects`], which reads commits.

use std::collections::BTreeMap;

use git2::{Oid, Repository};
use serde::Serialize;

use crate::records::{Action, Deployment};

/// The longest commit subject shown.
const SUBJECT_CHARS: usize = 100;

/// A `<time>` element for an RFC 3339 timestamp: the exact UTC time as its text and title (what
/// a page shows without JavaScript), and a machine-readable `datetime` that the page's script
/// turns into a local, relative time with the local exact time on hover.
pub fn time_element(value: &str) -> minijinja::Value {
    match value.parse::<jiff::Timestamp>() {
        Ok(t) => {
            let t = t.round(jiff::Unit::Millisecond).unwrap_or(t);
            let exact = t.strftime("%Y-%m-%d %H:%M:%S UTC").to_string();
            // Both come from a parsed timestamp: digits, dashes, colons, dots, letters.
            minijinja::Value::from_safe_string(format!(r#"<time datetime="{t}" title="{exact}">{exact}</time>"#))
        }
        Err(_) => minijinja::Value::from(value),
    }
}

/// `value` percent-encoded for a URL's query (everything but unreserved characters and `/`).
pub fn query_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Why a deployment happened and who made it happen, as its page and lists show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Cause {
    /// `push`, `rollback`, `redeploy`, `edit` (console or API), `create`, `removal`,
    /// `reconcile`, `restore` or `api`; `console edit` for a commit the console made.
    /// (Serialized as `cause`: a deployment's own `action` is deploy or delete.)
    #[serde(rename = "cause")]
    pub action: &'static str,
    /// The token's id (or `local`, `anonymous`, `devpop`).
    pub who: String,
}

/// The cause of a deployment, from what its record says (`pusher`, `action`) and its commit's
/// subject. Pushes record `who@address`; the server's own deployments `devpop (why)`; the
/// console's lifecycle actions `who (rollback to deployment N)` and `who (redeploy)`.
pub fn cause(pusher: &str, action: Action, commit: Option<&Commit>) -> Cause {
    let subject = commit.map(|c| c.subject.as_str());
    let (who, why) = match pusher.split_once(" (") {
        Some((who, why)) => (who, Some(why.trim_end_matches(')'))),
        None => (pusher, None),
    };
    let (who, pushed) = match who.rsplit_once('@') {
        Some((who, _address)) if why.is_none() => (who, true),
        _ => (who, false),
    };
    let subject = subject.unwrap_or("");
    let action = if action == Action::Delete {
        "removal"
    } else if why.is_some_and(|w| w.starts_with("reconciliation")) {
        "reconcile"
    } else if why.is_some_and(|w| w.starts_with("restoring")) {
        "restore"
    } else if why == Some("redeploy") {
        "redeploy"
    } else if why.is_some_and(|w| w.starts_with("rollback")) || subject.starts_with("Roll back ") {
        "rollback"
    } else if pushed {
        "push"
    } else if subject.starts_with("Create environment ") {
        "create"
    } else if commit.is_some_and(|c| c.from_console) {
        "console edit"
    } else if subject.ends_with(" through the API") || subject.ends_with(" through the console") {
        "edit"
    } else {
        "api"
    };
    Cause { action, who: who.to_owned() }
}

/// The trailer the console's commits carry (advanced config, modules).
pub const CONSOLE_TRAILER: &str = "Made-with: devpop console";

/// What the console shows of a commit.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Commit {
    /// Its subject, bounded in length.
    pub subject: String,
    /// The console made it (its message ends with [`CONSOLE_TRAILER`]).
    pub from_console: bool,
}

/// The commits `commits` (hex ids) found in `repo`. Blocking.
pub fn commits<'a>(repo: &Repository, commits: impl IntoIterator<Item = &'a str>) -> BTreeMap<String, Commit> {
    let mut out = BTreeMap::new();
    for hex in commits {
        if out.contains_key(hex) {
            continue;
        }
        let Some(commit) = Oid::from_str(hex).ok().and_then(|id| repo.find_commit(id).ok()) else { continue };
        let subject = String::from_utf8_lossy(commit.summary_bytes().unwrap_or_default());
        let mut subject: String = subject.chars().filter(|c| !c.is_control()).take(SUBJECT_CHARS + 1).collect();
        if subject.chars().count() > SUBJECT_CHARS {
            subject = subject.chars().take(SUBJECT_CHARS).collect::<String>() + "…";
        }
        let from_console = commit.message_bytes().trim_ascii_end().ends_with(CONSOLE_TRAILER.as_bytes());
        out.insert(hex.to_owned(), Commit { subject, from_console });
    }
    out
}

/// A deployment as the console lists it: the record, its commit's subject and its cause.
#[derive(Debug, Serialize)]
pub struct Row {
    #[serde(flatten)]
    pub d: Deployment,
    pub subject: String,
    #[serde(flatten)]
    pub cause: Cause,
}

impl Row {
    pub fn new(d: Deployment, commits: &BTreeMap<String, Commit>) -> Row {
        let commit = commits.get(&d.request.commit);
        let cause = cause(&d.request.pusher, d.request.action, commit);
        Row { subject: commit.map(|c| c.subject.clone()).unwrap_or_default(), d, cause }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deployment_says_what_caused_it_and_who() {
        let c = |p, a, s: Option<&str>| {
            let commit = s.map(|s| Commit { subject: s.to_owned(), from_console: false });
            let c = cause(p, a, commit.as_ref());
            (c.action, c.who)
        };
        assert_eq!(c("tok_ab12@127.0.0.1", Action::Deploy, Some("fix")), ("push", "tok_ab12".into()));
        assert_eq!(c("anonymous@::1", Action::Deploy, None), ("push", "anonymous".into()));
        assert_eq!(c("devpop (reconciliation)", Action::Deploy, Some("x")), ("reconcile", "devpop".into()));
        assert_eq!(
            c("devpop (restoring after deployment 3 failed)", Action::Deploy, None),
            ("restore", "devpop".into())
        );
        assert_eq!(c("tok_x (rollback to deployment 3)", Action::Deploy, None), ("rollback", "tok_x".into()));
        assert_eq!(c("dev@10.0.0.1", Action::Deploy, Some("Roll back Production to deployment 2")).0, "rollback");
        assert_eq!(c("local (redeploy)", Action::Deploy, None), ("redeploy", "local".into()));
        // A redeploy of a rollback's commit is a redeploy.
        assert_eq!(c("local (redeploy)", Action::Deploy, Some("Roll back Production to deployment 2")).0, "redeploy");
        assert_eq!(c("tok_x", Action::Deploy, Some("egress.set on Production through the API")).0, "edit");
        assert_eq!(c("tok_x", Action::Deploy, Some("egress.set on Production through the console")).0, "edit");
        let console = Commit { subject: "Tune the cache".into(), from_console: true };
        assert_eq!(cause("tok_x", Action::Deploy, Some(&console)).action, "console edit");
        assert_eq!(c("tok_x", Action::Deploy, Some("Create environment Staging from Production")).0, "create");
        assert_eq!(c("tok_x", Action::Delete, None), ("removal", "tok_x".into()));
        assert_eq!(c("tok_x", Action::Deploy, Some("something else")), ("api", "tok_x".into()));
    }

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(query_value("cache/default.vcl"), "cache/default.vcl");
        assert_eq!(query_value("a b&c#d?é"), "a%20b%26c%23d%3F%C3%A9");
    }

    #[test]
    fn times_are_exact_utc_in_the_page_and_machine_readable_for_the_script() {
        let html = time_element("2026-11-30T06:35:34.123456789Z").to_string();
        assert_eq!(
            html,
            r#"<time datetime="2026-11-30T06:35:34.123Z" title="2026-11-30 06:35:34 UTC">2026-11-30 06:35:34 UTC</time>"#
        );
        // Not a timestamp: shown as text (and escaped by the template).
        assert_eq!(time_element("<b>").to_string(), "<b>");
        assert!(!time_element("<b>").is_safe());
    }
}
