//! A working tree checked as an application: what `validate` and `render` share.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::args::LocalArgs;
use devpop::names::RepoId;
use devpop::packages::PackageStore;

/// A working tree checked as an application of a data dir: what `validate` and `render` share.
pub struct Local {
    pub dir: PathBuf,
    pub env: String,
    pub id: RepoId,
    pub commit: String,
    pub packages: PackageStore,
    /// Holds the built-in package store when no data dir was given.
    pub _builtin: Option<tempfile::TempDir>,
}

impl Local {
    /// `server`: a server's catalog is used instead (no note about the built-in packages).
    pub fn new(args: &LocalArgs, server: bool) -> Result<Local> {
        let dir = args.dir.canonicalize().with_context(|| format!("{}", args.dir.display()))?;
        let env = match &args.env {
            Some(env) => env.clone(),
            None => {
                current_branch(&dir).context("no --env given and the checked-out branch is unknown; pass --env NAME")?
            }
        };
        let id = match &args.app {
            Some(app) => {
                let parts: Vec<&str> = app.split('/').collect();
                let [account, application, repo] = parts[..] else {
                    anyhow::bail!("--app {app:?}: use account/application/repo")
                };
                RepoId::new(account, application, repo)?
            }
            None if let Some(id) = remote_app(&dir) => id,
            None => {
                let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or("app");
                let clean: String = name.chars().filter(|c| c.is_ascii_alphanumeric() || "-_.".contains(*c)).collect();
                RepoId::new("local", "local", clean.trim_start_matches(['-', '_', '.']))
                    .or_else(|_| RepoId::new("local", "local", "app"))?
            }
        };
        let commit = git2::Repository::discover(&dir)
            .ok()
            .and_then(|r| r.head().ok()?.target())
            .map_or_else(|| "worktree".to_owned(), |oid| oid.to_string());
        let (packages, builtin) = match &args.data {
            Some(data) if data.join("packages").is_dir() => (PackageStore::new(data), None),
            _ => {
                let tmp = tempfile::tempdir()?;
                let store = PackageStore::new(tmp.path());
                store.install_builtins()?;
                if !server {
                    eprintln!(
                        "note: using the built-in packages ({}); pass --server (or --data) to use a server's",
                        store.catalog().all().join(", ")
                    );
                }
                (store, Some(tmp))
            }
        };
        Ok(Local { dir, env, id, commit, packages, _builtin: builtin })
    }

    pub fn subject(&self) -> devpop::checks::Subject<'_> {
        devpop::checks::Subject { id: &self.id, environment: &self.env, commit: &self.commit }
    }
}

/// The application the work tree's devpop remote (`developer-pop`, else `origin`) points at,
/// from its URL (`.../account/<account>/application/<application>/<repo>.git`): the server
/// names the environment's namespace after it.
pub fn remote_app(dir: &Path) -> Option<RepoId> {
    let repo = git2::Repository::discover(dir).ok()?;
    ["developer-pop", "origin"].iter().find_map(|name| {
        let remote = repo.find_remote(name).ok()?;
        let path = remote.url().ok()?.split_once("/account/")?.1.trim_end_matches('/');
        let (account, rest) = path.split_once("/application/")?;
        let (application, repo_name) = rest.split_once('/')?;
        let repo_name = repo_name.strip_suffix(".git").unwrap_or(repo_name);
        RepoId::new(account, application, repo_name).ok()
    })
}

/// The branch checked out in the git work tree containing `dir`.
pub fn current_branch(dir: &Path) -> Option<String> {
    let repo = git2::Repository::discover(dir).ok()?;
    let head = repo.find_reference("HEAD").ok()?;
    let target = head.symbolic_target().ok()??;
    target.strip_prefix("refs/heads/").map(str::to_owned)
}
