//! `devpop hook pre-receive`: git runs it (through the shim in `hooks/`) once per push, with the
//! pushed objects in quarantine and one `<old> <new> <ref>` line per ref update on stdin.
//!
//! It reads each pushed commit from the quarantine (`Repository::open_from_env` sees it), builds
//! the validation [`Snapshot`], runs the pure checks and prints what they found. Everything it
//! prints reaches the pusher as `remote:` lines as it happens (git relays hook output on the
//! side band), so each line is flushed. A non-zero exit rejects the whole push; git then
//! drops the quarantine, so nothing of a rejected push stays on the server.

use std::io::{self, BufRead, Write};

use git2::{ObjectType, Oid, Repository};

use crate::validation::{self, ConfigFile, Snapshot};

#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error("cannot open the pushed repo from git's environment: {0}")]
    Open(git2::Error),
    #[error("malformed ref update line from git: {0:?}")]
    BadInput(String),
    #[error("reading the pushed commit {commit}: {source}")]
    Read { commit: String, source: git2::Error },
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
pub fn pre_receive(input: impl BufRead, out: &mut impl Write) -> Result<bool, HookError> {
    let updates = input
        .lines()
        .map(|line| RefUpdate::parse(line?.trim_end()))
        .collect::<Result<Vec<_>, _>>()?;
    let repo = Repository::open_from_env().map_err(HookError::Open)?;
    let mut accepted = true;
    for update in &updates {
        accepted &= check_update(&repo, update, out)?;
    }
    Ok(accepted)
}

fn check_update(repo: &Repository, update: &RefUpdate, out: &mut impl Write) -> Result<bool, HookError> {
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
    let snapshot = snapshot_of(repo, update.new)?;
    let report = validation::check(&snapshot, branch);
    for d in &report.diagnostics {
        say(out, &d.to_string())?;
    }
    if report.is_ok() {
        return Ok(true);
    }
    let n = report.errors();
    say(
        out,
        &format!(
            "error: push to {branch} rejected: {n} problem{} to fix (listed above); the branch is unchanged",
            if n == 1 { "" } else { "s" }
        ),
    )?;
    Ok(false)
}

/// Reads what validation needs from a commit, without checking anything out.
pub fn snapshot_of(repo: &Repository, commit: Oid) -> Result<Snapshot, HookError> {
    let read = |source| HookError::Read { commit: commit.to_string(), source };
    let tree = repo.find_commit(commit).and_then(|c| c.tree()).map_err(read)?;
    let mut snapshot = Snapshot::default();
    for entry in tree.iter() {
        let Ok(name) = entry.name() else { continue };
        match entry.kind() {
            Some(ObjectType::Tree) => {
                snapshot.top_level_dirs.insert(name.to_owned());
            }
            _ => {}
        }
        if name == validation::config::FILE {
            snapshot.config = config_file(repo, &entry).map_err(read)?;
        }
    }
    Ok(snapshot)
}

fn config_file(repo: &Repository, entry: &git2::TreeEntry) -> Result<ConfigFile, git2::Error> {
    // A symlink is a blob too (mode 120000) whose content is a path: never followed.
    if entry.kind() != Some(ObjectType::Blob) || entry.filemode() == 0o120000 {
        return Ok(ConfigFile::NotAFile);
    }
    // The size comes from the object header, so an oversized blob is never loaded.
    let (size, _) = repo.odb()?.read_header(entry.id())?;
    if size > validation::config::MAX_BYTES {
        return Ok(ConfigFile::TooLarge(size as u64));
    }
    Ok(ConfigFile::Present(repo.find_blob(entry.id())?.content().to_vec()))
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
