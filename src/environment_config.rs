//! An environment's settings in section.config.json, changed: its origin, alternate origins, IP
//! block list, outage page and domains. The edits the Aperture API and the console both make
//! (each then a commit by [`crate::edits::Actions::commit_change`], checked like a push).
//!
//! Two fields of an environment are written here for features the checks and the renderers
//! know nothing of yet (they are accepted, with the warning every unknown key gets):
//! `outage_page`, the file in `outage_pages/` engaged for every request, and `domains`, the host
//! names the environment serves besides devpop's own.

use git2::{Oid, Repository};
use serde_json::{json, Map, Value};

use crate::edits::Edit;
use crate::source::{GitCommit, RepoSource};
use crate::validation::config;

/// The environment's custom host names (section.config.json, `environments.<env>.domains`).
pub const DOMAINS: &str = "domains";
/// The engaged outage page (section.config.json, `environments.<env>.outage_page`).
pub const OUTAGE_PAGE: &str = "outage_page";
const OUTAGE_DIR: &str = "outage_pages";

/// The most components and bytes a path inside the repo may have.
const MAX_PATH_COMPONENTS: usize = 32;
const MAX_PATH_BYTES: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum ConfigEditError {
    #[error("the environment's section.config.json is missing or not JSON; fix it with a push first")]
    NoConfig,
    #[error("section.config.json defines no environment {0}")]
    NoEnvironment(String),
    #[error("filepath {0:?}: use a relative path inside the repo (like cache/default.json), without ., .. or .git")]
    BadPath(String),
    #[error("{0:?} is not a host name")]
    BadHost(String),
    #[error("environment {env} does not serve {host}")]
    NotServed { env: String, host: String },
    #[error("outage_pages/ has no {page:?}; push the page first (it has {})", if .pages.is_empty() { "none".to_owned() } else { .pages.join(", ") })]
    NoOutagePage { page: String, pages: Vec<String> },
    #[error("line {0}: write one alternate origin per line as `name address` (like `images images.example.com`)")]
    AlternateLine(usize),
    #[error("git: {0}")]
    Git(#[from] git2::Error),
}

/// The environment's section.config.json at `head`, parsed (`None`: missing or not JSON).
pub fn read_config(repo: &Repository, head: Oid) -> Option<Value> {
    match (GitCommit { repo, commit: head }).snapshot().ok()?.config {
        crate::validation::ConfigFile::Present(text) => serde_json::from_slice(&text).ok(),
        _ => None,
    }
}

/// section.config.json as devpop writes it.
pub fn pretty(value: &Value) -> Vec<u8> {
    let mut text = serde_json::to_string_pretty(value).expect("JSON serialises");
    text.push('\n');
    text.into_bytes()
}

/// The edit of section.config.json at `head` that `f` makes (given the config), with
/// `message`; `None` when `f` leaves the config as it was (no commit).
pub fn config_edit<E: From<ConfigEditError>>(
    repo: &Repository,
    head: Oid,
    message: String,
    f: impl FnOnce(&mut Value) -> Result<(), E>,
) -> Result<Option<Edit>, E> {
    let before = read_config(repo, head).ok_or(ConfigEditError::NoConfig)?;
    let mut after = before.clone();
    f(&mut after)?;
    if after == before {
        return Ok(None);
    }
    Ok(Some(Edit::one(vec![config::FILE.to_owned()], pretty(&after), message)))
}

/// `environments.<env>` of `config`, as an object to change.
pub fn environment_mut<'a>(config: &'a mut Value, env: &str) -> Result<&'a mut Map<String, Value>, ConfigEditError> {
    config
        .get_mut("environments")
        .and_then(|e| e.get_mut(env))
        .and_then(Value::as_object_mut)
        .ok_or_else(|| ConfigEditError::NoEnvironment(env.to_owned()))
}

/// Sets `key` to `value`, or removes it when `value` is an empty array or object.
pub fn put_or_remove(env: &mut Map<String, Value>, key: &str, value: Value) {
    let empty = value.as_array().is_some_and(Vec::is_empty) || value.as_object().is_some_and(Map::is_empty);
    if empty {
        env.remove(key);
    } else {
        env.insert(key.to_owned(), value);
    }
}

/// The components of a path inside the repo (relative, no `.`, `..` or `.git` component,
/// bounded).
pub fn repo_path(raw: &str) -> Result<Vec<String>, ConfigEditError> {
    let parts: Vec<&str> = raw.split('/').collect();
    let bad = raw.len() > MAX_PATH_BYTES
        || parts.len() > MAX_PATH_COMPONENTS
        || parts.iter().any(|p| {
            p.is_empty() || *p == "." || *p == ".." || p.eq_ignore_ascii_case(".git") || p.contains(['\\', '\0'])
        });
    if bad {
        return Err(ConfigEditError::BadPath(raw.to_owned()));
    }
    Ok(parts.into_iter().map(str::to_owned).collect())
}

/// A host name a client may ask an environment to serve: a DNS name whose last label starts
/// with a letter (so never an IP address).
pub fn is_domain(host: &str) -> bool {
    crate::names::is_host(host)
        && host
            .trim_end_matches('.')
            .rsplit('.')
            .next()
            .is_some_and(|l| l.starts_with(|c: char| c.is_ascii_alphabetic()))
}

/// The custom domains `config` gives `env`.
pub fn domains_of(config: &Value, env: &str) -> Vec<String> {
    config["environments"][env][DOMAINS]
        .as_array()
        .map(|a| a.iter().filter_map(|d| d.as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}

/// Adds `host` to the domains `env` serves (`add`), or removes it (an error when it is not
/// served). Adding one already served changes nothing.
pub fn change_domain(config: &mut Value, env: &str, host: &str, add: bool) -> Result<(), ConfigEditError> {
    if !is_domain(host) {
        return Err(ConfigEditError::BadHost(host.to_owned()));
    }
    let mut domains = domains_of(config, env);
    let present = domains.iter().any(|d| d.eq_ignore_ascii_case(host));
    match (add, present) {
        (true, false) => domains.push(host.to_ascii_lowercase()),
        (false, true) => domains.retain(|d| !d.eq_ignore_ascii_case(host)),
        (false, false) => return Err(ConfigEditError::NotServed { env: env.to_owned(), host: host.to_owned() }),
        (true, true) => {}
    }
    put_or_remove(environment_mut(config, env)?, DOMAINS, json!(domains));
    Ok(())
}

/// The `.html` files at the top of `outage_pages/` in the commit `head`.
pub fn outage_page_names(repo: &Repository, head: Oid) -> Result<Vec<String>, git2::Error> {
    let tree = repo.find_commit(head).and_then(|c| c.tree())?;
    let Some(entry) = tree.get_name(OUTAGE_DIR) else { return Ok(Vec::new()) };
    let Ok(dir) = repo.find_tree(entry.id()) else { return Ok(Vec::new()) };
    Ok(dir
        .iter()
        .filter(|e| e.kind() == Some(git2::ObjectType::Blob))
        .filter_map(|e| e.name().ok().map(str::to_owned))
        .filter(|n| n.ends_with(".html"))
        .collect())
}

/// Engages `page` (one of `pages`, the files in `outage_pages/`) for `env`, or disengages the
/// engaged one (`None`).
pub fn set_outage_page(
    config: &mut Value,
    env: &str,
    page: Option<String>,
    pages: &[String],
) -> Result<(), ConfigEditError> {
    match page {
        Some(page) if !pages.contains(&page) => Err(ConfigEditError::NoOutagePage { page, pages: pages.to_vec() }),
        Some(page) => {
            environment_mut(config, env)?.insert(OUTAGE_PAGE.into(), Value::String(page));
            Ok(())
        }
        None => {
            environment_mut(config, env)?.remove(OUTAGE_PAGE);
            Ok(())
        }
    }
}

/// Sets the IP block list of an environment's settings (an empty list removes it).
pub fn set_ip_blacklist(env: &mut Map<String, Value>, list: &[String]) {
    put_or_remove(env, "ip_blacklist", json!(list));
}

/// Sets the default origin's address and host header (`None`: the origin's own host) of an
/// environment's settings; its other fields stay.
pub fn set_origin(env: &mut Map<String, Value>, address: &str, host_header: Option<&str>) {
    let origin = env.entry("origin").or_insert_with(|| json!({}));
    if !origin.is_object() {
        *origin = json!({});
    }
    origin["address"] = address.into();
    match host_header {
        None => {
            origin.as_object_mut().map(|o| o.remove("host_header"));
        }
        Some(h) => origin["host_header"] = h.into(),
    }
}

/// The origin settings Aperture treats as the whole egress's (one value for every origin);
/// section.config.json has them per origin.
pub const EGRESS_FIELDS: [&str; 4] =
    ["remove_request_headers", "enable_sni", "verify_certificate", "proxy_acme_challenge"];

/// Sets the alternate origins of an environment's settings from lines of `name address`
/// (blank lines skipped): an alternate named before keeps its other fields, a new one starts
/// with the default origin's egress-wide settings, one not named goes.
pub fn set_alternates(env: &mut Map<String, Value>, lines: &str) -> Result<(), ConfigEditError> {
    let old = env.get("alternate_origins").and_then(Value::as_object).cloned().unwrap_or_default();
    // A new alternate starts with the default origin's egress-wide settings (Aperture shows
    // them as the whole egress's), so adding one never turns certificate checks back on.
    let mut seed = Map::new();
    if let Some(origin) = env.get("origin").and_then(Value::as_object) {
        for f in EGRESS_FIELDS {
            if let Some(v) = origin.get(f) {
                seed.insert(f.to_owned(), v.clone());
            }
        }
    }
    let mut alternates = Map::new();
    for (n, line) in lines.lines().enumerate() {
        match line.split_whitespace().collect::<Vec<_>>()[..] {
            [] => continue,
            [name, address] if name != "default" => {
                let mut o =
                    old.get(name).cloned().filter(Value::is_object).unwrap_or_else(|| Value::Object(seed.clone()));
                o["address"] = address.into();
                alternates.insert(name.to_owned(), o);
            }
            _ => return Err(ConfigEditError::AlternateLine(n + 1)),
        }
    }
    put_or_remove(env, "alternate_origins", Value::Object(alternates));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::edits::{test_actions, Author, EditError};

    fn author() -> Author {
        Author { who: "tok_1".into(), from: Some("192.0.2.7".into()) }
    }

    /// What a change's maker in these tests can fail with (read through `Debug`).
    #[derive(Debug)]
    #[allow(dead_code)]
    enum Failed {
        Edit(EditError),
        Config(ConfigEditError),
    }

    impl From<EditError> for Failed {
        fn from(e: EditError) -> Self {
            Failed::Edit(e)
        }
    }

    impl From<ConfigEditError> for Failed {
        fn from(e: ConfigEditError) -> Self {
            Failed::Config(e)
        }
    }

    /// Sets the origin's address in section.config.json.
    fn set_address(address: &'static str) -> impl FnOnce(&Repository, Oid, &str) -> Result<Option<Edit>, Failed> {
        move |repo, head, env| {
            config_edit(repo, head, format!("address on {env}\n"), |config| {
                config["environments"][env]["origin"]["address"] = address.into();
                Ok::<_, Failed>(())
            })
        }
    }

    /// A server's actions on `data`, the application's repo and Production's commit.
    fn production(
        data: &std::path::Path,
    ) -> (crate::edits::Actions<crate::applying::memory::MemoryCluster>, crate::names::RepoId, Repository, Oid) {
        let (actions, id) = test_actions(data);
        let repo = Repository::open_bare(actions.repos.path(&id)).unwrap();
        let head = actions.edits(&repo, &id).head("Production").unwrap();
        (actions, id, repo, head)
    }

    #[tokio::test]
    async fn an_edit_that_changes_nothing_makes_no_commit_and_no_deployment() {
        let data = tempfile::tempdir().unwrap();
        let (actions, id, repo, head) = production(data.path());
        let key = ("1".into(), "2".into(), "site".into(), "Production".into());
        let records = actions.deployer.records().clone();
        let who = author();

        let same = actions.commit_change(&who, &id, "Production", "egress.set", set_address("origin.example.com"));
        assert!(same.await.unwrap().is_none(), "no change");
        assert_eq!(actions.edits(&repo, &id).head("Production").unwrap(), head, "the branch did not move");
        assert!(records.newest(&key).unwrap().is_none(), "no deployment");

        // The same edit with another address is a commit on the branch, deployed and audited.
        let other = actions.commit_change(&who, &id, "Production", "egress.set", set_address("new.example.com"));
        let change = other.await.unwrap().expect("a change");
        assert_eq!(actions.edits(&repo, &id).head("Production").unwrap(), change.commit);
        assert_eq!(repo.find_commit(change.commit).unwrap().parent_id(0).unwrap(), head);
        let d = records.newest(&key).unwrap().expect("a deployment");
        assert_eq!((d.id, d.request.pusher.as_str()), (change.deployment, "tok_1"));
        let (entries, _) = actions.audit.page(&crate::records::audit::Visible::All, 0, 10).unwrap();
        assert!(entries.iter().any(|e| e.who == "tok_1" && e.action == "egress.set"), "audited");
    }

    #[tokio::test]
    async fn an_edit_the_checks_refuse_is_refused_with_their_lines_and_moves_nothing() {
        let data = tempfile::tempdir().unwrap();
        let (actions, id, repo, head) = production(data.path());
        let who = author();
        let refused = actions.commit_change(&who, &id, "Production", "egress.set", set_address("http://not a host"));
        match refused.await {
            Err(Failed::Edit(EditError::Refused(lines))) => {
                assert!(lines.iter().any(|l| l.contains("origin.address")), "{lines:?}")
            }
            other => panic!("{:?}", other.map(|c| c.map(|c| c.commit))),
        }
        assert_eq!(actions.edits(&repo, &id).head("Production").unwrap(), head);
        let bad = actions.commit_change(&who, &id, "../x", "egress.set", set_address("a.example.com"));
        assert!(matches!(bad.await, Err(Failed::Edit(EditError::BadName(_)))));
    }

    #[test]
    fn paths_inside_the_repo_are_relative_and_never_reach_git_or_a_parent() {
        assert_eq!(repo_path("cache/default.json").unwrap(), ["cache", "default.json"]);
        for bad in ["../etc/passwd", ".git/config", "a//b", "/abs", "a/./b", "a\\b", ""] {
            assert!(matches!(repo_path(bad), Err(ConfigEditError::BadPath(_))), "{bad}");
        }
    }

    #[test]
    fn a_domain_is_added_once_and_removing_one_not_served_is_refused() {
        let mut config = json!({ "environments": { "Production": {} } });
        change_domain(&mut config, "Production", "WWW.example.com", true).unwrap();
        change_domain(&mut config, "Production", "www.example.com", true).unwrap();
        assert_eq!(domains_of(&config, "Production"), ["www.example.com"]);
        assert!(matches!(
            change_domain(&mut config, "Production", "other.example.com", false),
            Err(ConfigEditError::NotServed { .. })
        ));
        assert!(matches!(
            change_domain(&mut config, "Production", "192.0.2.1", true),
            Err(ConfigEditError::BadHost(_))
        ));
        change_domain(&mut config, "Production", "www.example.com", false).unwrap();
        assert!(config["environments"]["Production"].get(DOMAINS).is_none(), "an empty list goes");
    }

    #[test]
    fn alternates_keep_their_other_fields_and_a_bad_line_is_named() {
        let mut config = json!({ "environments": { "Production": {
            "origin": { "address": "a.example.com", "enable_sni": true },
            "alternate_origins": { "images": { "address": "old.example.com", "http_port": 8080 }, "gone": { "address": "g" } },
        } } });
        let env = environment_mut(&mut config, "Production").unwrap();
        set_alternates(env, "images img.example.com\n\nstatic s.example.com\n").unwrap();
        assert_eq!(env["alternate_origins"]["images"], json!({ "address": "img.example.com", "http_port": 8080 }));
        assert_eq!(
            env["alternate_origins"]["static"],
            json!({ "address": "s.example.com", "enable_sni": true }),
            "a new alternate takes the default origin's egress-wide settings"
        );
        assert!(env["alternate_origins"].get("gone").is_none());
        assert!(matches!(set_alternates(env, "ok o.example.com\nnot-a-pair"), Err(ConfigEditError::AlternateLine(2))));
        set_origin(env, "b.example.com", Some("www.example.com"));
        assert_eq!(
            env["origin"],
            json!({ "address": "b.example.com", "enable_sni": true, "host_header": "www.example.com" })
        );
        set_origin(env, "b.example.com", None);
        assert!(env["origin"].get("host_header").is_none());
    }

    #[test]
    fn only_a_page_in_outage_pages_can_be_engaged() {
        let mut config = json!({ "environments": { "Production": {} } });
        let pages = vec!["down.html".to_owned()];
        let e = set_outage_page(&mut config, "Production", Some("nope.html".into()), &pages).unwrap_err();
        assert_eq!(e.to_string(), "outage_pages/ has no \"nope.html\"; push the page first (it has down.html)");
        set_outage_page(&mut config, "Production", Some("down.html".into()), &pages).unwrap();
        assert_eq!(config["environments"]["Production"][OUTAGE_PAGE], "down.html");
        set_outage_page(&mut config, "Production", None, &pages).unwrap();
        assert!(config["environments"]["Production"].get(OUTAGE_PAGE).is_none());
    }
}
