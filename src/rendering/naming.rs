//! Names of rendered objects: the environment namespace and the labels every object carries.

use sha2::{Digest, Sha256};

use crate::names::RepoId;

/// The most characters a DNS-1123 label (a namespace name) may have.
pub const MAX_LABEL: usize = 63;

/// `<prefix>-<app>-<env>-<hash>`: `<app>` and `<env>` are the repo name and branch, lower-cased,
/// letters and digits only; `<hash>` is the first 13 hex digits of SHA-256 of
/// `<account>/<application>/<repo-name>/<environment>`. `<app>` and `<env>` are truncated
/// (the longer first) so the whole stays a valid DNS-1123 label; the hash keeps names distinct.
pub fn namespace(prefix: &str, id: &RepoId, environment: &str) -> String {
    let digest = Sha256::digest(format!("{}/{}/{}/{environment}", id.account, id.application, id.repo));
    let hash: String = digest.iter().map(|b| format!("{b:02x}")).collect::<String>()[..13].to_owned();
    let clean =
        |s: &str| -> String { s.chars().filter(char::is_ascii_alphanumeric).map(|c| c.to_ascii_lowercase()).collect() };
    let prefix = clean(prefix);
    let prefix = if prefix.is_empty() { "section".to_owned() } else { prefix };
    let (mut app, mut env) = (clean(&id.repo), clean(environment));
    if app.is_empty() {
        app.push('x');
    }
    if env.is_empty() {
        env.push('x');
    }
    // prefix-app-env-hash: three dashes.
    let room = MAX_LABEL.saturating_sub(prefix.len() + hash.len() + 3).max(2);
    while app.len() + env.len() > room {
        if app.len() >= env.len() {
            app.pop();
        } else {
            env.pop();
        }
    }
    let mut name = format!("{prefix}-{app}-{env}-{hash}");
    name.truncate(MAX_LABEL);
    name
}

/// A label value (at most 63 of `[A-Za-z0-9._-]`, alphanumeric at both ends).
pub fn label_value(s: &str) -> String {
    let mut v: String = s
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || "._-".contains(c) { c } else { '-' })
        .take(MAX_LABEL)
        .collect();
    while v.ends_with(|c: char| !c.is_ascii_alphanumeric()) {
        v.pop();
    }
    while v.starts_with(|c: char| !c.is_ascii_alphanumeric()) {
        v.remove(0);
    }
    v
}

pub fn is_dns_label(s: &str) -> bool {
    crate::names::is_dns_label(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(account: &str, app: &str, repo: &str) -> RepoId {
        RepoId::new(account, app, repo).unwrap()
    }

    #[test]
    fn follows_the_spec_shape() {
        let ns = namespace("section", &id("9999", "9999", "sample-application"), "Production");
        let digest = Sha256::digest("9999/9999/sample-application/Production");
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(ns, format!("section-sampleapplication-production-{}", &hex[..13]));
        assert!(is_dns_label(&ns));
    }

    #[test]
    fn long_and_odd_names_stay_valid_labels() {
        let long = "a".repeat(100);
        for (repo, env) in [
            (long.as_str(), "Production"),
            ("www.site.com", &*"E".repeat(100)),
            ("x", "x"),
            ("___", "..."),
            ("UPPER.case-Name_1", "Staging-2.0"),
        ] {
            let r = id(
                "acme",
                "app",
                if repo == "___" {
                    "x___"
                } else if repo == long {
                    "a"
                } else {
                    repo
                },
            );
            let ns = namespace("section", &r, env);
            assert!(is_dns_label(&ns), "{ns:?} for {repo}/{env}");
            assert!(ns.len() <= 63);
        }
        let r = RepoId { account: "a".into(), application: "b".into(), repo: "a".repeat(100) };
        let ns = namespace("section", &r, &"p".repeat(100));
        assert_eq!(ns.len(), 63);
        assert!(is_dns_label(&ns), "{ns}");
    }

    #[test]
    fn names_that_clean_to_the_same_text_stay_distinct() {
        let a = namespace("section", &id("1", "1", "my-site"), "Production");
        let b = namespace("section", &id("1", "1", "mysite"), "Production");
        let c = namespace("section", &id("1", "1", "my-site"), "production");
        let d = namespace("section", &id("2", "1", "my-site"), "Production");
        assert_eq!(a.rsplit_once('-').unwrap().0, b.rsplit_once('-').unwrap().0, "same readable part");
        let all = [&a, &b, &c, &d];
        for (i, x) in all.iter().enumerate() {
            for y in &all[i + 1..] {
                assert_ne!(x, y);
            }
        }
    }

    #[test]
    fn label_values_are_trimmed_to_valid() {
        assert_eq!(label_value("Production"), "Production");
        assert_eq!(label_value("-a b-"), "a-b");
        assert_eq!(label_value(&"x".repeat(80)).len(), 63);
    }
}
