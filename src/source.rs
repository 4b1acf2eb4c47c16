//! Where the files of an environment repo come from: a pushed commit (read from git's
//! quarantine with libgit2) or a working directory (`devpop validate`).
//!
//! Both give the validation [`Snapshot`] and can write one module's folder into a scratch dir
//! for its `validate.sh`. Writing is in-process and hostile-content safe: regular files and
//! folders only (a symlink is never followed and never created), names are single path
//! components, and the size, file count and depth are bounded.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use git2::{ObjectType, Oid, Repository};

use crate::rendering::Files;
use crate::treewalk::{self, plain_name};
use crate::validation::{self, ConfigFile, Snapshot};

/// Bounds on one module folder.
pub const MAX_FILES: usize = 10_000;
pub const MAX_BYTES: u64 = 64 << 20;
pub const MAX_DEPTH: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("reading commit {commit}: {source}")]
    Git { commit: String, source: git2::Error },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("opening the pushed repo {path}: {reason}")]
    Open { path: PathBuf, reason: String },
}

/// Opens an application's bare repo. During a push (`quarantine` is git's
/// `GIT_QUARANTINE_PATH`) the pushed objects are still in the quarantine, which must be inside
/// the repo's `objects/`: they are read from there too.
pub fn open_pushed(repo_path: &Path, quarantine: Option<&str>) -> Result<Repository, SourceError> {
    let err = |reason: String| SourceError::Open { path: repo_path.to_owned(), reason };
    let repo = Repository::open_bare(repo_path).map_err(|e| err(e.to_string()))?;
    if let Some(quarantine) = quarantine {
        let q = Path::new(quarantine).canonicalize().map_err(|e| err(format!("the pushed objects are gone: {e}")))?;
        let objects = repo_path.join("objects").canonicalize().map_err(|e| err(e.to_string()))?;
        if !q.starts_with(&objects) {
            return Err(err("the quarantine is not inside the repo".into()));
        }
        repo.odb().and_then(|odb| odb.add_disk_alternate(&q.to_string_lossy())).map_err(|e| err(e.to_string()))?;
    }
    Ok(repo)
}

/// What writing a module folder left out, for warnings.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Written {
    /// Paths (relative to the repo root) of symlinks and submodules that were not written.
    pub skipped: Vec<String>,
    /// Set when a bound was hit: what it was. The folder is incomplete.
    pub over_limit: Option<String>,
}

pub trait RepoSource {
    fn snapshot(&self) -> Result<Snapshot, SourceError>;
    /// Reads the repo's top-level folder `name` (regular files only, bounded); empty when there
    /// is no such folder.
    fn read_folder(&self, name: &str) -> Result<(Files, Written), SourceError>;
    /// Writes the repo's folder `name` into the empty dir `into`.
    fn write_folder(&self, name: &str, into: &Path) -> Result<Written, SourceError> {
        let (files, written) = self.read_folder(name)?;
        write_files(&files, into)?;
        Ok(written)
    }
    /// A content address of the folder `name` (git's tree id), when the source has one.
    fn folder_id(&self, _name: &str) -> Option<String> {
        None
    }
}

struct Budget {
    files: usize,
    bytes: u64,
    written: Written,
}

impl Budget {
    fn new() -> Self {
        Budget { files: 0, bytes: 0, written: Written::default() }
    }

    /// Accounts for one file; false (and the reason recorded) when over a bound.
    fn take(&mut self, size: u64) -> bool {
        self.files += 1;
        self.bytes += size;
        if self.files > MAX_FILES {
            self.written.over_limit = Some(format!("more than {MAX_FILES} files"));
        } else if self.bytes > MAX_BYTES {
            self.written.over_limit = Some(format!("more than {} MiB", MAX_BYTES >> 20));
        }
        self.written.over_limit.is_none()
    }
}

/// Writes files (relative paths) under the empty dir `into`: folders as needed, files with
/// `create_new` (an existing entry, link or not, is never followed or replaced). Paths come
/// from `read_folder`, so each component is a plain name. Files are not executable, as in the
/// ConfigMap the module's config is mounted from in the cluster.
pub fn write_files(files: &Files, into: &Path) -> Result<(), SourceError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    for (rel, content) in files {
        if !rel.split('/').all(plain_name) {
            continue;
        }
        let path = into.join(rel);
        let io_err = |source| SourceError::Io { path: path.clone(), source };
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(io_err)?;
        }
        let mut f = fs::OpenOptions::new().write(true).create_new(true).mode(0o644).open(&path).map_err(io_err)?;
        f.write_all(content).map_err(io_err)?;
    }
    Ok(())
}

/// A pushed commit.
pub struct GitCommit<'r> {
    pub repo: &'r Repository,
    pub commit: Oid,
}

impl GitCommit<'_> {
    /// The commit's tree (or the object itself, when `commit` names a tree: `devpop validate
    /// --staged` checks the index's tree).
    fn tree(&self) -> Result<git2::Tree<'_>, git2::Error> {
        self.repo.find_object(self.commit, None)?.peel_to_tree()
    }

    fn err(&self) -> impl FnOnce(git2::Error) -> SourceError + '_ {
        move |source| SourceError::Git { commit: self.commit.to_string(), source }
    }

    /// Reads the folder `tree` (found at `rel`) into `out`, keyed by paths below `rel`: an
    /// iterative walk ([`treewalk`]), bounded in depth, files and bytes.
    fn read_tree(&self, tree: Oid, rel: &str, out: &mut Files, budget: &mut Budget) -> Result<(), SourceError> {
        let odb = self.repo.odb().map_err(self.err())?;
        let limits = treewalk::Limits { max_depth: MAX_DEPTH, max_entries: 4 * MAX_FILES };
        let mut failed = None;
        let outcome = treewalk::walk(self.repo, tree, rel, limits, None, |entry| {
            let Some(name) = entry.name.filter(|n| plain_name(n)) else { return treewalk::Flow::Skip };
            let key = entry.path.split_once('/').map_or(name, |(_, k)| k);
            match (entry.kind, entry.filemode) {
                (Some(ObjectType::Tree), _) => return treewalk::Flow::Continue,
                (Some(ObjectType::Blob), 0o100644 | 0o100755) => {
                    // The size comes from the header, so an oversized blob is never loaded.
                    let read = odb.read_header(entry.id).and_then(|(size, _)| {
                        if !budget.take(size as u64) {
                            return Ok(None);
                        }
                        self.repo.find_blob(entry.id).map(|b| Some(b.content().to_vec()))
                    });
                    match read {
                        Ok(Some(content)) => {
                            out.insert(key.to_owned(), content);
                        }
                        Ok(None) => return treewalk::Flow::Stop,
                        Err(e) => {
                            failed = Some(e);
                            return treewalk::Flow::Stop;
                        }
                    }
                }
                // Symlinks (0o120000) and submodules (commits) are not written.
                _ => budget.written.skipped.push(entry.path.to_owned()),
            }
            treewalk::Flow::Continue
        })
        .map_err(self.err())?;
        if let Some(e) = failed {
            return Err(self.err()(e));
        }
        match outcome {
            treewalk::Outcome::TooDeep { .. } => {
                budget.written.over_limit = Some(format!("folders nested deeper than {MAX_DEPTH}"));
            }
            treewalk::Outcome::TooManyEntries => {
                budget.written.over_limit = Some(format!("more than {} entries", limits.max_entries));
            }
            treewalk::Outcome::Complete | treewalk::Outcome::Stopped => {}
        }
        Ok(())
    }
}

impl RepoSource for GitCommit<'_> {
    fn snapshot(&self) -> Result<Snapshot, SourceError> {
        let tree = self.tree().map_err(self.err())?;
        let mut snapshot = Snapshot::default();
        for entry in tree.iter() {
            let Ok(name) = entry.name() else { continue };
            if entry.kind() == Some(ObjectType::Tree) {
                snapshot.top_level_dirs.insert(name.to_owned());
            }
            if name == validation::config::FILE {
                snapshot.config = if entry.kind() != Some(ObjectType::Blob) || entry.filemode() == 0o120000 {
                    ConfigFile::NotAFile
                } else {
                    let (size, _) = self.repo.odb().and_then(|o| o.read_header(entry.id())).map_err(self.err())?;
                    if size > validation::config::MAX_BYTES {
                        ConfigFile::TooLarge(size as u64)
                    } else {
                        ConfigFile::Present(self.repo.find_blob(entry.id()).map_err(self.err())?.content().to_vec())
                    }
                };
            }
        }
        Ok(snapshot)
    }

    fn read_folder(&self, name: &str) -> Result<(Files, Written), SourceError> {
        let tree = self.tree().map_err(self.err())?;
        let mut budget = Budget::new();
        let mut files = Files::new();
        if let Some(entry) = tree.get_name(name).filter(|e| e.kind() == Some(ObjectType::Tree)) {
            self.read_tree(entry.id(), name, &mut files, &mut budget)?;
        }
        Ok((files, budget.written))
    }

    fn folder_id(&self, name: &str) -> Option<String> {
        let tree = self.tree().ok()?;
        let entry = tree.get_name(name).filter(|e| e.kind() == Some(ObjectType::Tree))?;
        Some(entry.id().to_string())
    }
}

/// A working directory (what `devpop validate` checks before a push).
pub struct WorkDir<'p> {
    pub root: &'p Path,
}

fn walk_dir(from: &Path, rel: &str, out: &mut Files, depth: usize, budget: &mut Budget) -> Result<(), SourceError> {
    let io_err = |path: &Path| {
        let path = path.to_owned();
        move |source| SourceError::Io { path, source }
    };
    let mut entries: Vec<_> = fs::read_dir(from).map_err(io_err(from))?.flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        if budget.written.over_limit.is_some() {
            return Ok(());
        }
        let Some(name) = e.file_name().to_str().filter(|n| plain_name(n)).map(str::to_owned) else { continue };
        let here = format!("{rel}/{name}");
        // symlink_metadata: the entry itself, never what a link points at.
        let meta = fs::symlink_metadata(e.path()).map_err(io_err(&e.path()))?;
        if meta.is_dir() {
            if depth >= MAX_DEPTH {
                budget.written.over_limit = Some(format!("folders nested deeper than {MAX_DEPTH}"));
                return Ok(());
            }
            walk_dir(&e.path(), &here, out, depth + 1, budget)?;
        } else if meta.is_file() {
            if !budget.take(meta.len()) {
                return Ok(());
            }
            let content = fs::read(e.path()).map_err(io_err(&e.path()))?;
            let key = here.split_once('/').map_or(name.as_str(), |(_, k)| k).to_owned();
            out.insert(key, content);
        } else {
            budget.written.skipped.push(here);
        }
    }
    Ok(())
}

impl RepoSource for WorkDir<'_> {
    fn snapshot(&self) -> Result<Snapshot, SourceError> {
        let mut snapshot = Snapshot::default();
        let entries =
            fs::read_dir(self.root).map_err(|source| SourceError::Io { path: self.root.to_owned(), source })?;
        for e in entries.flatten() {
            let Ok(name) = e.file_name().into_string() else { continue };
            let Ok(meta) = fs::symlink_metadata(e.path()) else { continue };
            if meta.is_dir() && name != ".git" {
                snapshot.top_level_dirs.insert(name.clone());
            }
            if name == validation::config::FILE {
                snapshot.config = if !meta.is_file() {
                    ConfigFile::NotAFile
                } else if meta.len() > validation::config::MAX_BYTES as u64 {
                    ConfigFile::TooLarge(meta.len())
                } else {
                    let path = e.path();
                    ConfigFile::Present(fs::read(&path).map_err(|source| SourceError::Io { path, source })?)
                };
            }
        }
        Ok(snapshot)
    }

    fn read_folder(&self, name: &str) -> Result<(Files, Written), SourceError> {
        let mut budget = Budget::new();
        let mut files = Files::new();
        let from = self.root.join(name);
        if plain_name(name) && fs::symlink_metadata(&from).is_ok_and(|m| m.is_dir()) {
            walk_dir(&from, name, &mut files, 1, &mut budget)?;
        }
        Ok((files, budget.written))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn work_dir() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let m = dir.path().join("example");
        fs::create_dir_all(m.join("sub")).unwrap();
        fs::write(m.join("server.conf"), "x\n").unwrap();
        fs::write(m.join("sub/a.conf"), "y\n").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", m.join("passwd")).unwrap();
        fs::write(dir.path().join("section.config.json"), "{}").unwrap();
        dir
    }

    #[test]
    fn work_dir_folders_are_copied_without_their_symlinks() {
        let dir = work_dir();
        let src = WorkDir { root: dir.path() };
        let snap = src.snapshot().unwrap();
        assert!(snap.top_level_dirs.contains("example"));
        assert_eq!(snap.config, ConfigFile::Present(b"{}".to_vec()));
        let out = tempfile::tempdir().unwrap();
        let w = src.write_folder("example", out.path()).unwrap();
        assert_eq!(w.skipped, ["example/passwd"]);
        assert_eq!(fs::read_to_string(out.path().join("sub/a.conf")).unwrap(), "y\n");
        assert!(fs::symlink_metadata(out.path().join("passwd")).is_err(), "the link is not created");
    }

    #[test]
    fn git_commit_folders_match_the_work_dir_and_skip_symlinks() {
        let dir = work_dir();
        let repo = Repository::init(dir.path()).unwrap();
        let mut index = repo.index().unwrap();
        index.add_all(["*"], git2::IndexAddOption::DEFAULT, None).unwrap();
        let tree = repo.find_tree(index.write_tree().unwrap()).unwrap();
        let sig = git2::Signature::now("t", "t@x").unwrap();
        let commit = repo.commit(None, &sig, &sig, "m", &tree, &[]).unwrap();
        let src = GitCommit { repo: &repo, commit };
        assert!(src.snapshot().unwrap().top_level_dirs.contains("example"));
        let out = tempfile::tempdir().unwrap();
        let w = src.write_folder("example", out.path()).unwrap();
        assert_eq!(w.skipped, ["example/passwd"]);
        assert_eq!(fs::read_to_string(out.path().join("server.conf")).unwrap(), "x\n");
        assert!(fs::symlink_metadata(out.path().join("passwd")).is_err());
    }

    #[test]
    fn budgets_stop_huge_folders() {
        let mut b = Budget::new();
        assert!(b.take(MAX_BYTES));
        assert!(!b.take(1));
        assert_eq!(b.written.over_limit.as_deref(), Some("more than 64 MiB"));
    }
}
