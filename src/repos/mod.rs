//! The repo store: where applications' bare repos live in the data dir, how one is created
//! (with its skeleton commit and hooks), and the start-up chores (refresh hooks, sweep what a
//! crash left behind).
//!
//! Blocking (filesystem and libgit2): async callers use `spawn_blocking`.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use git2::{Repository, RepositoryInitOptions, Signature};

use crate::names::RepoId;

/// The branch every new application starts with.
pub const FIRST_ENVIRONMENT: &str = "Production";

/// The hook shims every repo gets: (hook name, script with @DEVPOP@ and @DATA@ to fill in).
const HOOKS: &[(&str, &str)] = &[
    ("pre-receive", include_str!("../../hooks/pre-receive")),
    ("proc-receive", include_str!("../../hooks/proc-receive")),
];
/// Hooks earlier devpop versions installed, removed when hooks are refreshed.
const RETIRED_HOOKS: &[&str] = &["post-receive"];
const SKELETON_CONFIG: &str = include_str!("../../templates/app/section.config.json");
const SKELETON_README: &str = include_str!("../../templates/app/README.md");
const SKELETON_GITIGNORE: &str = include_str!("../../templates/app/gitignore");

#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    #[error("application {0} already exists")]
    Exists(RepoId),
    #[error("application {account}/{application} already has the repo {existing:?}; one application is one repo")]
    ApplicationHasRepo { account: String, application: String, existing: String },
    #[error("origin {0:?} is not a host name or IP address (no scheme, port or path)")]
    BadOrigin(String),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("git: {0}")]
    Git(#[from] git2::Error),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> RepoError + '_ {
    move |source| RepoError::Io { path: path.to_owned(), source }
}

/// The repos under one data dir.
#[derive(Debug, Clone)]
pub struct RepoStore {
    root: PathBuf,
    data_dir: PathBuf,
    devpop_exe: PathBuf,
}

impl RepoStore {
    /// `data_dir` must be absolute (hooks refer to it); `devpop_exe` is the binary hooks run.
    pub fn new(data_dir: &Path, devpop_exe: &Path) -> Self {
        RepoStore { root: data_dir.join("repos"), data_dir: data_dir.to_owned(), devpop_exe: devpop_exe.to_owned() }
    }

    pub fn path(&self, id: &RepoId) -> PathBuf {
        self.root.join(&id.account).join(&id.application).join(format!("{}.git", id.repo))
    }

    pub fn exists(&self, id: &RepoId) -> bool {
        self.path(id).join("HEAD").is_file()
    }

    /// The repo another name of this application uses, if any (one application is one repo).
    pub fn application_repo(&self, account: &str, application: &str) -> Option<String> {
        let dir = self.root.join(account).join(application);
        fs::read_dir(dir).ok()?.flatten().find_map(|e| {
            let name = e.file_name().into_string().ok()?;
            name.strip_suffix(".git").map(str::to_owned)
        })
    }

    /// Every repo in the store.
    pub fn list(&self) -> Vec<RepoId> {
        let mut out = Vec::new();
        let dirs = |p: &Path| -> Vec<String> {
            fs::read_dir(p)
                .map(|rd| rd.flatten().filter_map(|e| e.file_name().into_string().ok()).collect())
                .unwrap_or_default()
        };
        for account in dirs(&self.root) {
            for app in dirs(&self.root.join(&account)) {
                for repo in dirs(&self.root.join(&account).join(&app)) {
                    if let Ok(id) = RepoId::new(&account, &app, &repo) {
                        if repo.ends_with(".git") {
                            out.push(id);
                        }
                    }
                }
            }
        }
        out.sort();
        out
    }

    /// Creates an application's repo: a bare repo whose `Production` branch holds the skeleton
    /// from `templates/app` with `origin` as Production's origin. Atomic: the repo is built in a
    /// scratch folder and renamed into place, so nobody ever sees half a repo.
    pub fn create(&self, id: &RepoId, origin: &str) -> Result<PathBuf, RepoError> {
        if !crate::names::is_host(origin) {
            return Err(RepoError::BadOrigin(origin.to_owned()));
        }
        if let Some(existing) = self.application_repo(&id.account, &id.application) {
            return Err(if existing == id.repo {
                RepoError::Exists(id.clone())
            } else {
                RepoError::ApplicationHasRepo {
                    account: id.account.clone(),
                    application: id.application.clone(),
                    existing,
                }
            });
        }
        let final_path = self.path(id);
        let parent = final_path.parent().expect("repo path has a parent");
        fs::create_dir_all(parent).map_err(io_err(parent))?;
        let scratch = tempfile::Builder::new().prefix(".creating-").tempdir_in(parent).map_err(io_err(parent))?;
        let repo_path = scratch.path().join("repo.git");

        let repo = init_bare(&repo_path)?;
        commit_skeleton(&repo, id, origin)?;
        self.install_hooks(&repo_path)?;
        drop(repo);

        fs::rename(&repo_path, &final_path).map_err(|e| match e.kind() {
            io::ErrorKind::AlreadyExists | io::ErrorKind::DirectoryNotEmpty => RepoError::Exists(id.clone()),
            _ => RepoError::Io { path: final_path.clone(), source: e },
        })?;
        Ok(final_path)
    }

    /// Writes the hook shims into one repo (atomically, so a push never runs half a hook).
    pub fn install_hooks(&self, repo_path: &Path) -> Result<(), RepoError> {
        let hooks = repo_path.join("hooks");
        fs::create_dir_all(&hooks).map_err(io_err(&hooks))?;
        for (name, shim) in HOOKS {
            let script = shim
                .replace("@DEVPOP@", &shell_quote(&self.devpop_exe.to_string_lossy()))
                .replace("@DATA@", &shell_quote(&self.data_dir.to_string_lossy()));
            // Already in place (every start refreshes every repo: reading is cheaper than writing).
            if fs::read(hooks.join(name)).is_ok_and(|old| old == script.as_bytes()) && is_executable(&hooks.join(name))
            {
                continue;
            }
            let mut tmp = tempfile::NamedTempFile::new_in(&hooks).map_err(io_err(&hooks))?;
            io::Write::write_all(&mut tmp, script.as_bytes()).map_err(io_err(&hooks))?;
            set_executable(tmp.path()).map_err(io_err(tmp.path()))?;
            let target = hooks.join(name);
            tmp.persist(&target).map_err(|e| RepoError::Io { path: target, source: e.error })?;
        }
        for name in RETIRED_HOOKS {
            let path = hooks.join(name);
            if fs::read_to_string(&path).is_ok_and(|s| s.contains("devpop hook")) {
                fs::remove_file(&path).map_err(io_err(&path))?;
            }
        }
        Ok(())
    }

    /// Start-up chores for every repo: refresh the hooks (the binary may have moved) and the
    /// server-side config, and remove quarantine folders that a crash left (no push runs
    /// before the server starts serving).
    pub fn prepare_all(&self) -> Result<usize, RepoError> {
        let repos = self.list();
        for id in &repos {
            let path = self.path(id);
            self.install_hooks(&path)?;
            configure(&Repository::open_bare(&path)?)?;
            sweep_quarantine(&path.join("objects"));
        }
        Ok(repos.len())
    }
}

/// Creates an empty bare repo with the server-side settings every devpop repo carries.
pub fn init_bare(path: &Path) -> Result<Repository, git2::Error> {
    let mut opts = RepositoryInitOptions::new();
    opts.bare(true).no_reinit(true).external_template(false).initial_head(FIRST_ENVIRONMENT);
    let repo = Repository::init_opts(path, &opts)?;
    configure(&repo)?;
    Ok(repo)
}

/// Makes (without moving any branch) a commit on top of `branch` whose content is that of
/// `restore`: a rollback that keeps history linear, so a GitOps engine never re-applies the
/// bad commit and the next push builds on the rollback.
pub fn restore_commit(repo_path: &Path, branch: &str, restore: &str, message: &str) -> Result<git2::Oid, RepoError> {
    let repo = Repository::open_bare(repo_path)?;
    let head = repo.find_reference(&format!("refs/heads/{branch}"))?.peel_to_commit()?;
    let old = repo.find_commit(git2::Oid::from_str(restore)?)?;
    let sig = Signature::now("devpop", "devpop@localhost")?;
    let tree = old.tree()?;
    let commit = repo.commit(None, &sig, &sig, message, &tree, &[&head])?;
    Ok(commit)
}

/// Server-side settings every devpop repo carries (written only when they differ: each write
/// rewrites the repo's config file, and every start configures every repo).
fn configure(repo: &Repository) -> Result<(), git2::Error> {
    let mut cfg = repo.config()?;
    fn set_bool(cfg: &mut git2::Config, key: &str, value: bool) -> Result<(), git2::Error> {
        if cfg.get_bool(key).ok() != Some(value) {
            cfg.set_bool(key, value)?;
        }
        Ok(())
    }
    // Housekeeping runs after the push has been answered (transport::process), not inside it.
    set_bool(&mut cfg, "receive.autogc", false)?;
    // Pushed content is hostile: check every object it brings.
    set_bool(&mut cfg, "receive.fsckObjects", true)?;
    // `git push -o dry-run` / `-o wait` reach the hook as GIT_PUSH_OPTION_*.
    set_bool(&mut cfg, "receive.advertisePushOptions", true)?;
    // Reflogs record every branch move: what was deployed when.
    set_bool(&mut cfg, "core.logAllRefUpdates", true)?;
    // A push's connectivity check (`rev-list ... --all --alternate-refs`) starts a `git
    // for-each-ref` in each alternate object dir. A devpop repo has none of its own: the only
    // alternate is the repo itself, behind git's quarantine, whose refs `--all` already lists.
    // `true` prints no refs, so that process is skipped (one git start per push).
    if cfg.get_string("core.alternateRefsCommand").ok().as_deref() != Some("true") {
        cfg.set_str("core.alternateRefsCommand", "true")?;
    }
    Ok(())
}

fn commit_skeleton(repo: &Repository, id: &RepoId, origin: &str) -> Result<git2::Oid, RepoError> {
    let mut config: serde_json::Value =
        serde_json::from_str(SKELETON_CONFIG).expect("templates/app/section.config.json is valid JSON");
    config["environments"][FIRST_ENVIRONMENT]["origin"]["address"] = origin.into();
    config["environments"][FIRST_ENVIRONMENT]["origin"]["host_header"] = origin.into();
    let mut config_text = serde_json::to_string_pretty(&config).expect("JSON serialises");
    config_text.push('\n');
    let readme = SKELETON_README.replace("{{repo}}", &id.repo);

    let mut tree = repo.treebuilder(None)?;
    for (name, content) in [
        (".gitignore", SKELETON_GITIGNORE.as_bytes()),
        ("README.md", readme.as_bytes()),
        ("section.config.json", config_text.as_bytes()),
    ] {
        let blob = repo.blob(content)?;
        tree.insert(name, blob, 0o100644)?;
    }
    let tree = repo.find_tree(tree.write()?)?;
    let sig = Signature::now("devpop", "devpop@localhost")?;
    let message = format!("Create application {id}\n\nEnvironment {FIRST_ENVIRONMENT}, origin {origin}.\n");
    let head = format!("refs/heads/{FIRST_ENVIRONMENT}");
    Ok(repo.commit(Some(&head), &sig, &sig, &message, &tree, &[])?)
}

/// Removes `tmp_objdir-*` / `incoming-*` quarantine folders under `objects/`.
pub fn sweep_quarantine(objects: &Path) -> usize {
    let Ok(entries) = fs::read_dir(objects) else { return 0 };
    let mut removed = 0;
    for e in entries.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        if (name.starts_with("tmp_objdir-") || name.starts_with("incoming-")) && fs::remove_dir_all(e.path()).is_ok() {
            tracing::info!(path = %e.path().display(), "removed a quarantine left by an interrupted push");
            removed += 1;
        }
    }
    removed
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o777 == 0o755)
}

fn set_executable(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(0o755))
}

/// Quotes a string for POSIX sh: `'...'`, with embedded quotes as `'\''`.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, RepoStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = RepoStore::new(dir.path(), Path::new("/usr/local/bin/devpop"));
        (dir, store)
    }

    #[test]
    fn created_repo_has_skeleton_on_production_and_hooks() {
        let (_dir, store) = store();
        let id = RepoId::new("9999", "9999", "sample-application").unwrap();
        let path = store.create(&id, "origin.example.com").unwrap();
        let repo = Repository::open_bare(&path).unwrap();
        assert_eq!(repo.head().unwrap().name().unwrap(), "refs/heads/Production");
        let tree = repo.head().unwrap().peel_to_tree().unwrap();
        let config = tree.get_name("section.config.json").unwrap().to_object(&repo).unwrap();
        let text = std::str::from_utf8(config.as_blob().unwrap().content()).unwrap();
        let snapshot = crate::validation::Snapshot {
            config: crate::validation::ConfigFile::Present(text.into()),
            ..Default::default()
        };
        let report = crate::validation::check(&snapshot, "Production", &Default::default());
        assert!(report.diagnostics.is_empty(), "skeleton must validate clean: {:?}", report.diagnostics);
        assert!(text.contains("\"address\": \"origin.example.com\""), "{text}");
        let hook = fs::read_to_string(path.join("hooks/pre-receive")).unwrap();
        assert!(hook.contains("'/usr/local/bin/devpop' hook pre-receive"), "{hook}");
        assert_eq!(store.list(), [id]);
    }

    #[test]
    fn second_create_and_second_repo_name_are_refused() {
        let (_dir, store) = store();
        let id = RepoId::new("a", "b", "one").unwrap();
        store.create(&id, "example.com").unwrap();
        assert!(matches!(store.create(&id, "example.com"), Err(RepoError::Exists(_))));
        let other = RepoId::new("a", "b", "two").unwrap();
        assert!(matches!(store.create(&other, "example.com"), Err(RepoError::ApplicationHasRepo { .. })));
        let bad = RepoId::new("a", "c", "x").unwrap();
        assert!(matches!(store.create(&bad, "http://example.com/"), Err(RepoError::BadOrigin(_))));
        assert!(!store.path(&bad).exists(), "a refused create leaves nothing");
    }

    #[test]
    fn shell_quote_survives_quotes() {
        assert_eq!(shell_quote("/a b/it's"), r"'/a b/it'\''s'");
    }

    #[test]
    fn sweep_removes_only_quarantines() {
        let dir = tempfile::tempdir().unwrap();
        for d in ["tmp_objdir-incoming-x", "incoming-y", "pack", "ab"] {
            fs::create_dir(dir.path().join(d)).unwrap();
        }
        assert_eq!(sweep_quarantine(dir.path()), 2);
        assert!(dir.path().join("pack").exists() && dir.path().join("ab").exists());
    }
}
