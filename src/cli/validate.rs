//! `devpop validate`: the push's checks, offline, on what would be pushed.
//!
//! By default it checks the committed tree at HEAD (what `git push` sends), not the files on
//! disk: an untracked module file cannot make it say "ready" while the push would fail. It says
//! which files it left out. `--staged` checks the index, `--worktree` the files as they are.
//!
//! With `--server` it uses the server's package catalog and namespace rule, read over the API:
//! a package the server does not have is refused as the push would refuse it, and the
//! namespace is named with the server's prefix.

use std::io::{self, Write};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;
use devpop::packages::PackageStore;
use devpop::source::{GitCommit, RepoSource, WorkDir};
use devpop::validation::diagnostic::Diagnostic;

use super::args::{CheckArgs, ClientArgs, LocalArgs};
use super::client::{environment_path, seg, Client};
use super::local::Local;

#[derive(Args)]
pub struct ValidateArgs {
    #[command(flatten)]
    pub local: LocalArgs,
    #[command(flatten)]
    pub check: CheckArgs,
    #[command(flatten)]
    pub client: ClientArgs,
    /// Check the index (what `git commit` would commit) instead of the last commit.
    #[arg(long, conflicts_with = "worktree")]
    pub staged: bool,
    /// Check the files in the working tree as they are, committed or not.
    #[arg(long)]
    pub worktree: bool,
    /// How to print the result: text, or one JSON object on stdout (for CI).
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
}

/// What `validate` takes from a server: its namespace prefix and its package catalog.
struct ServerRules {
    namespace_prefix: String,
    packages: Vec<String>,
}

impl ServerRules {
    /// Reads them over the API: the prefix from the namespace the server gives an environment
    /// of the application (`<prefix>-<app>-<env>-<hash>`), the catalog from `/api/v1/packages`.
    fn fetch(c: &Client, id: &devpop::names::RepoId, env: &str) -> Result<ServerRules> {
        let environments =
            format!("/api/v1/accounts/{}/applications/{}/environments", seg(&id.account), seg(&id.application));
        let namespace = match c.get(&environment_path(&id.account, &id.application, env)) {
            Ok(e) => e["namespace"].as_str().map(str::to_owned),
            // A new environment: any of the application's shows the rule.
            Err(_) => c.all(&environments)?.first().and_then(|e| e["namespace"].as_str().map(str::to_owned)),
        }
        .with_context(|| {
            format!("{} has no application {id} with an environment to read its namespace rule from", c.base())
        })?;
        let namespace_prefix = namespace.split('-').next().unwrap_or("section").to_owned();
        let packages =
            c.all("/api/v1/packages")?.iter().filter_map(|p| p["name"].as_str().map(str::to_owned)).collect();
        Ok(ServerRules { namespace_prefix, packages })
    }

    /// A package store with the server's packages that `local` has (the server's ones it lacks
    /// are named in the second value).
    fn store(&self, local: &PackageStore, into: &std::path::Path) -> Result<(PackageStore, Vec<String>)> {
        let store = PackageStore::new(into);
        let mut missing = Vec::new();
        for name in &self.packages {
            match local.get(name) {
                Ok(installed) => {
                    store.add(&installed.dir)?;
                }
                Err(_) => missing.push(name.clone()),
            }
        }
        Ok((store, missing))
    }
}

/// `devpop validate`.
pub fn command(args: ValidateArgs) -> Result<ExitCode> {
    let client = Client::new(&args.client)?;
    let mut local = Local::new(&args.local, client.is_some())?;
    let mut settings = args.check.check_settings();
    let server_store = tempfile::tempdir()?;
    if let Some(c) = &client {
        let rules = ServerRules::fetch(c, &local.id, &local.env)?;
        settings.render.namespace_prefix = rules.namespace_prefix.clone();
        let (store, missing) = rules.store(&local.packages, server_store.path())?;
        if !missing.is_empty() {
            eprintln!(
                "note: {} has {} that {} not available here: {} validate.sh is not run and an environment using {} cannot be rendered offline (pass --data with a copy of the server's packages, or check on the server with `git push -o dry-run`)",
                c.base(),
                missing.join(", "),
                if missing.len() == 1 { "is" } else { "are" },
                if missing.len() == 1 { "its" } else { "their" },
                if missing.len() == 1 { "it" } else { "them" },
            );
            // In the catalog, as on the server, so the name check agrees with the push.
            for name in &missing {
                if let Some((module, version)) = name.split_once(':') {
                    std::fs::create_dir_all(server_store.path().join("packages").join(module).join(version))?;
                }
            }
        }
        local.packages = store;
    }
    let namespace = devpop::rendering::naming::namespace(&settings.render.namespace_prefix, &local.id, &local.env);
    let what = match (args.staged, args.worktree) {
        (_, true) => What::Worktree,
        (true, _) => What::Staged,
        _ => What::Head,
    };
    run(Request {
        dir: &local.dir,
        env: &local.env,
        subject: local.subject(),
        namespace,
        packages: &local.packages,
        settings,
        what,
        format: args.format,
    })
}

/// What is checked.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum What {
    Head,
    Staged,
    Worktree,
}

/// How the result is printed.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
}

pub struct Request<'a> {
    pub dir: &'a std::path::Path,
    pub env: &'a str,
    pub subject: devpop::checks::Subject<'a>,
    pub namespace: String,
    pub packages: &'a devpop::packages::PackageStore,
    pub settings: devpop::checks::CheckSettings,
    pub what: What,
    pub format: Format,
}

/// Files in the work tree that what is checked does not have (untracked, or changed since).
fn left_out(repo: &git2::Repository, what: What) -> Vec<String> {
    let mut options = git2::StatusOptions::new();
    options.include_untracked(true).recurse_untracked_dirs(true).include_ignored(false);
    let Ok(statuses) = repo.statuses(Some(&mut options)) else { return Vec::new() };
    let index_changes = git2::Status::INDEX_NEW
        | git2::Status::INDEX_MODIFIED
        | git2::Status::INDEX_DELETED
        | git2::Status::INDEX_RENAMED
        | git2::Status::INDEX_TYPECHANGE;
    let worktree_changes = git2::Status::WT_NEW
        | git2::Status::WT_MODIFIED
        | git2::Status::WT_DELETED
        | git2::Status::WT_RENAMED
        | git2::Status::WT_TYPECHANGE;
    let counted = match what {
        What::Head => index_changes | worktree_changes,
        What::Staged => worktree_changes,
        What::Worktree => git2::Status::empty(),
    };
    statuses
        .iter()
        .filter(|s| s.status().intersects(counted))
        .filter_map(|s| s.path().ok().map(str::to_owned))
        .collect()
}

pub fn run(req: Request) -> Result<ExitCode> {
    let repo = match req.what {
        What::Worktree => None,
        _ => Some(git2::Repository::discover(req.dir).with_context(|| {
            format!("{} is not in a git repository; pass --worktree to check the files as they are", req.dir.display())
        })?),
    };
    if let Some(root) = repo.as_ref().and_then(|r| r.workdir()) {
        let (root, dir) = (root.canonicalize()?, req.dir.canonicalize()?);
        anyhow::ensure!(
            root == dir,
            "{} is inside the git repository at {} but is not its root: pass the environment repo's root, or --worktree to check these files as they are",
            dir.display(),
            root.display()
        );
    }
    let (checked, object) = match (&repo, req.what) {
        (Some(repo), What::Head) => {
            let head = repo
                .head()
                .ok()
                .and_then(|h| h.target())
                .context("nothing is committed yet: commit first, or pass --staged or --worktree")?;
            (format!("commit {}", &head.to_string()[..12]), Some(head))
        }
        (Some(repo), What::Staged) => {
            // As `git write-tree` does: the index's tree is written to the object store.
            let tree = repo.index().and_then(|mut i| i.write_tree()).context("reading the index")?;
            ("the index".to_owned(), Some(tree))
        }
        _ => ("the working tree".to_owned(), None),
    };
    let left_out = repo.as_ref().map(|r| left_out(r, req.what)).unwrap_or_default();
    let source: Box<dyn RepoSource + '_> = match (&repo, object) {
        (Some(repo), Some(commit)) => Box::new(GitCommit { repo, commit }),
        _ => Box::new(WorkDir { root: req.dir }),
    };
    // People read the checks' lines as they come; CI reads one JSON object on stdout.
    let mut stdout = io::stdout().lock();
    let mut stderr = io::stderr().lock();
    let out: &mut dyn Write = if req.format == Format::Json { &mut stderr } else { &mut stdout };
    if !left_out.is_empty() && req.format == Format::Text {
        let hint = if req.what == What::Head { "commit them" } else { "stage them" };
        writeln!(
            out,
            "note: checking {checked}; {} file{} in the working tree {} not part of it ({}): {hint}, or pass --worktree to check the files as they are",
            left_out.len(),
            if left_out.len() == 1 { "" } else { "s" },
            if left_out.len() == 1 { "is" } else { "are" },
            shown(&left_out),
        )?;
    }
    let verdict = devpop::checks::run(source.as_ref(), req.subject, req.packages, &req.settings, out)?;
    let env = req.env;
    if req.format == Format::Json {
        let report = serde_json::json!({
            "environment": env,
            "namespace": req.namespace,
            "checked": checked,
            "accepted": verdict.accepted(),
            "errors": verdict.errors,
            "warnings": verdict.warnings,
            "problems": verdict.problems.iter().map(Diagnostic::to_json).collect::<Vec<_>>(),
            "left_out": left_out,
        });
        writeln!(stdout, "{report}")?;
    } else if verdict.accepted() {
        writeln!(
            out,
            "{}: {checked} is ready to push to {env} ({} warning{})",
            req.dir.display(),
            verdict.warnings,
            if verdict.warnings == 1 { "" } else { "s" }
        )?;
    } else {
        writeln!(
            out,
            "{}: {} problem{} to fix in {checked} before pushing to {env}",
            req.dir.display(),
            verdict.errors,
            if verdict.errors == 1 { "" } else { "s" }
        )?;
    }
    Ok(if verdict.accepted() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// The first few paths, for a one-line note.
fn shown(paths: &[String]) -> String {
    let mut s = paths.iter().take(5).cloned().collect::<Vec<_>>().join(", ");
    if paths.len() > 5 {
        s.push_str(&format!(", and {} more", paths.len() - 5));
    }
    s
}
