//! `devpop hook pre-receive`: git runs it (through the shim in `hooks/`) once per push, with the
//! pushed objects in quarantine and one `<old> <new> <ref>` line per ref update on stdin.
//!
//! It reads each pushed commit from the quarantine (`Repository::open_from_env` sees it) and
//! runs [`checks::run`] on it. Everything it
//! prints reaches the pusher as `remote:` lines as it happens (git relays hook output on the
//! side band), so each line is flushed. A non-zero exit rejects the whole push; git then
//! drops the quarantine, so nothing of a rejected push stays on the server.

use std::io::{self, BufRead, Write};

use git2::{Oid, Repository};

use crate::applying::RenderedRepos;
use crate::checks::{self, CheckSettings};
use crate::rendering::RenderSettings;
use crate::source::RepoSource;
use crate::names::RepoId;
use crate::packages::PackageStore;
use crate::source::GitCommit;

#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error("cannot open the pushed repo from git's environment: {0}")]
    Open(git2::Error),
    #[error("malformed ref update line from git: {0:?}")]
    BadInput(String),
    #[error(transparent)]
    Check(#[from] checks::CheckError),
    #[error("not a devpop repo (expected repos/<account>/<application>/<repo>.git): {0}")]
    NotADevpopRepo(String),
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// One ref update as git hands it to the hook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefUpdate {
    pub old: Oid,
    pub new: Oid,
    pub refname: String,
}

impl RefUpdate {
    pub fn parse(line: &str) -> Result<Self, HookError> {
        let bad = || HookError::BadInput(line.to_owned());
        let mut parts = line.split(' ');
        let (Some(old), Some(new), Some(refname), None) = (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        Ok(RefUpdate {
            old: Oid::from_str(old).map_err(|_| bad())?,
            new: Oid::from_str(new).map_err(|_| bad())?,
            refname: refname.to_owned(),
        })
    }

    pub fn branch(&self) -> Option<&str> {
        self.refname.strip_prefix("refs/heads/")
    }

    pub fn is_delete(&self) -> bool {
        self.new.is_zero()
    }
}

/// Runs the pre-receive checks; `Ok(true)` accepts the push.
pub fn pre_receive(
    input: impl BufRead,
    out: &mut impl Write,
    packages: &PackageStore,
    settings: &CheckSettings,
) -> Result<bool, HookError> {
    let updates = input
        .lines()
        .map(|line| RefUpdate::parse(line?.trim_end()))
        .collect::<Result<Vec<_>, _>>()?;
    let repo = Repository::open_from_env().map_err(HookError::Open)?;
    let id = repo_id(&repo)?;
    let mut accepted = true;
    for update in &updates {
        accepted &= check_update(&id, &repo, update, out, packages, settings)?;
    }
    Ok(accepted)
}

fn check_update(
    id: &RepoId,
    repo: &Repository,
    update: &RefUpdate,
    out: &mut impl Write,
    packages: &PackageStore,
    settings: &CheckSettings,
) -> Result<bool, HookError> {
    let Some(branch) = update.branch() else {
        say(
            out,
            &format!(
                "error: {}: devpop deploys branches, one per environment; push a branch (e.g. git push developer-pop HEAD:Production)",
                update.refname
            ),
        )?;
        return Ok(false);
    };
    if update.is_delete() {
        say(out, &format!("Environment {branch}: branch deleted"))?;
        return Ok(true);
    }
    let source = GitCommit { repo, commit: update.new };
    let commit = update.new.to_string();
    let subject = checks::Subject { id, environment: branch, commit: &commit };
    let verdict = checks::run(&source, subject, packages, settings, out)?;
    if verdict.accepted() {
        return Ok(true);
    }
    let n = verdict.errors;
    say(
        out,
        &format!(
            "error: push to {branch} rejected: {n} problem{} to fix (listed above); the branch is unchanged",
            if n == 1 { "" } else { "s" }
        ),
    )?;
    Ok(false)
}

/// After the refs moved: publishes each updated environment's manifests to the rendered repo
/// (and removes a deleted branch's). Nothing here can undo the push; problems are warnings.
pub fn post_receive(
    input: impl BufRead,
    out: &mut impl Write,
    packages: &PackageStore,
    settings: &RenderSettings,
    rendered_repos: &RenderedRepos,
    public_url: &str,
) -> Result<(), HookError> {
    let updates = input
        .lines()
        .map(|line| RefUpdate::parse(line?.trim_end()))
        .collect::<Result<Vec<_>, _>>()?;
    let repo = Repository::open_from_env().map_err(HookError::Open)?;
    let id = repo_id(&repo)?;
    let url = format!("{}/rendered{}", public_url.trim_end_matches('/'), id.url_path());
    for update in &updates {
        let Some(branch) = update.branch() else { continue };
        let published = if update.is_delete() {
            rendered_repos.publish(&id, branch, &update.old.to_string(), None).map_err(|e| e.to_string())
        } else {
            publish_commit(&repo, &id, branch, update.new, packages, settings, rendered_repos)
        };
        match published {
            Ok(_) => say(out, &format!("Manifests of {branch} published to {url}"))?,
            Err(e) => say(out, &format!("warning: manifests of {branch} not published: {e}"))?,
        }
    }
    Ok(())
}

fn publish_commit(
    repo: &Repository,
    id: &RepoId,
    branch: &str,
    commit: Oid,
    packages: &PackageStore,
    settings: &RenderSettings,
    rendered_repos: &RenderedRepos,
) -> Result<Option<Oid>, String> {
    let source = GitCommit { repo, commit };
    let snapshot = source.snapshot().map_err(|e| e.to_string())?;
    let report = crate::validation::check(&snapshot, branch, &packages.catalog());
    let ok = report.is_ok();
    let config = report.config.filter(|_| ok).ok_or("the commit no longer validates")?;
    let commit_hex = commit.to_string();
    let subject = checks::Subject { id, environment: branch, commit: &commit_hex };
    let rendered = checks::render(&source, subject, &config, packages, settings, &Default::default()).map_err(|e| e.to_string())?;
    rendered_repos.publish(id, branch, &commit_hex, Some(&rendered)).map_err(|e| e.to_string())
}

/// The application a repo belongs to, from its place in the data dir
/// (`repos/<account>/<application>/<repo>.git`).
pub fn repo_id(repo: &Repository) -> Result<RepoId, HookError> {
    let path = repo.path().canonicalize()?;
    let part = |n: usize| path.iter().rev().nth(n).and_then(|p| p.to_str()).unwrap_or("");
    RepoId::new(part(2), part(1), part(0)).map_err(|e| HookError::NotADevpopRepo(format!("{}: {e}", path.display())))
}

fn say(out: &mut impl Write, line: &str) -> io::Result<()> {
    writeln!(out, "{line}")?;
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_git_ref_update_lines() {
        let z = "0".repeat(40);
        let a = "a".repeat(40);
        let u = RefUpdate::parse(&format!("{a} {z} refs/heads/Staging")).unwrap();
        assert_eq!(u.branch(), Some("Staging"));
        assert!(u.is_delete());
        assert!(RefUpdate::parse("x y").is_err());
        assert!(RefUpdate::parse(&format!("{a} {a} refs/heads/x extra")).is_err());
    }
}
