//! The CLI's subcommands, one module each; `main.rs` parses, sets up logging and dispatches.
//!
//! A command that works on applications, packages, tokens or deployments talks to a server
//! when given one (`--server`, [`client`]) and otherwise works on an existing data dir; it
//! never creates a data dir (only `devpop serve` does).

pub mod app;
pub mod args;
pub mod client;
pub mod deployments;
pub mod hook;
pub mod lifecycle;
pub mod local;
pub mod logs;
pub mod module;
pub mod package;
pub mod render;
pub mod serve;
pub mod token;
pub mod validate;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// `path`, created when missing, made absolute (the server's data dir).
pub fn absolute(path: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(path).with_context(|| format!("creating the data dir {}", path.display()))?;
    path.canonicalize().with_context(|| format!("resolving {}", path.display()))
}

/// The audit log of an existing data dir.
pub fn audit(data: &Path) -> Result<devpop::records::audit::AuditLog> {
    Ok(devpop::records::audit::AuditLog::open(data)?)
}

/// The repos of an existing data dir.
pub fn repos(data: &Path) -> Result<devpop::repos::RepoStore> {
    let exe = std::env::current_exe().context("finding the devpop binary")?;
    Ok(devpop::repos::RepoStore::new(data, &exe))
}

/// `account/application/repo` as a repo id.
pub fn app_id(app: &str) -> Result<devpop::names::RepoId> {
    let parts: Vec<&str> = app.split('/').collect();
    let [account, application, repo] = parts[..] else {
        anyhow::bail!("{app:?}: name the application as account/application/repo")
    };
    Ok(devpop::names::RepoId::new(account, application, repo)?)
}
