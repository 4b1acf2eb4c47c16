//! What a push adds, checked before anything else reads it: the size of every new object, and
//! the shape of every new commit's tree.
//!
//! The new objects are exactly those in git's quarantine, so every one of them is looked at,
//! not only those of the tip commit: a large file added in one commit and removed in the next is
//! still refused. Sizes come from object headers (nothing is loaded). Paths are found with a
//! bounded, iterative walk ([`crate::treewalk`]) of the new commits, so a tree thousands of
//! folders deep is refused instead of overflowing a stack.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use git2::{ObjectType, Oid, Repository};

use super::RefUpdate;
use crate::treewalk::{self, Flow, Outcome};

/// Folder levels an environment repo may have (module folders are bounded tighter when read).
pub const MAX_TREE_DEPTH: usize = 64;
/// Files and folders, over all new commits of one ref update, that are walked.
pub const MAX_ENTRIES: usize = 1_000_000;
/// New commits of one ref update that are walked.
pub const MAX_COMMITS: usize = 10_000;
/// Objects a push may add.
pub const MAX_OBJECTS: usize = 5_000_000;

/// Blobs larger than `limit` among the objects in the quarantine `dir`, with their sizes.
pub fn oversized_blobs(dir: &Path, limit: u64) -> Result<HashMap<Oid, u64>, git2::Error> {
    let odb = git2::Odb::new()?;
    odb.add_disk_alternate(&dir.to_string_lossy())?;
    let mut ids = Vec::new();
    odb.foreach(|id| {
        ids.push(*id);
        ids.len() <= MAX_OBJECTS
    })
    .or_else(|e| if e.code() == git2::ErrorCode::User { Ok(()) } else { Err(e) })?;
    if ids.len() > MAX_OBJECTS {
        return Err(git2::Error::from_str(&format!("the push adds more than {MAX_OBJECTS} objects")));
    }
    let mut found = HashMap::new();
    for id in ids {
        let (size, kind) = odb.read_header(id)?;
        if kind == ObjectType::Blob && size as u64 > limit {
            found.insert(id, size as u64);
        }
    }
    Ok(found)
}

/// The problems of one ref update's new commits (those no ref reaches yet): folders nested
/// deeper than [`MAX_TREE_DEPTH`], too many entries, and the paths of `oversized` blobs. Blobs
/// found are removed from `oversized`, so that what is left belongs to no pushed commit.
pub fn check_update(
    repo: &Repository,
    update: &RefUpdate,
    oversized: &mut HashMap<Oid, u64>,
    limit: u64,
) -> Result<Vec<String>, git2::Error> {
    let mut walk = repo.revwalk()?;
    walk.push(update.new)?;
    for r in repo.references()?.flatten() {
        if let Some(id) = r.target() {
            // A ref at a tag or tree is not a commit to hide; it hides nothing.
            let _ = walk.hide(id);
        }
    }
    let mut problems = Vec::new();
    let mut seen = HashSet::new();
    let limits = treewalk::Limits { max_depth: MAX_TREE_DEPTH, max_entries: MAX_ENTRIES };
    let mut entries_left = MAX_ENTRIES;
    for (n, commit) in walk.enumerate() {
        let commit = repo.find_commit(commit?)?;
        let short = &commit.id().to_string()[..12];
        if n >= MAX_COMMITS {
            problems.push(format!(
                "error: this push adds more than {MAX_COMMITS} commits to {}; push the history in parts",
                update.refname
            ));
            break;
        }
        let mut counted = 0;
        let outcome = treewalk::walk(
            repo,
            commit.tree_id(),
            "",
            treewalk::Limits { max_entries: entries_left, ..limits },
            Some(&mut seen),
            |e| {
                counted += 1;
                if let Some(size) = oversized.remove(&e.id) {
                    problems.push(format!(
                        "error: {} (commit {short}): {size} bytes; files larger than {limit} bytes are refused (DEVPOP_MAX_BLOB_BYTES): an environment repo holds configuration; remove the file from the history (git rebase -i, or git filter-repo) and push again",
                        e.path
                    ));
                }
                Flow::Continue
            },
        )?;
        entries_left = entries_left.saturating_sub(counted);
        match outcome {
            Outcome::Complete | Outcome::Stopped => {}
            Outcome::TooDeep { path } => {
                problems.push(format!(
                    "error: {path} (commit {short}): folders are nested deeper than {MAX_TREE_DEPTH} levels; an environment repo holds configuration: flatten the folders and push again"
                ));
                break;
            }
            Outcome::TooManyEntries => {
                problems.push(format!(
                    "error: commit {short}: the pushed commits hold more than {MAX_ENTRIES} files and folders; an environment repo holds configuration"
                ));
                break;
            }
        }
    }
    Ok(problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn commit(repo: &Repository, tree: Oid, parents: &[Oid]) -> Oid {
        let sig = git2::Signature::now("t", "t@x").unwrap();
        let tree = repo.find_tree(tree).unwrap();
        let parents: Vec<_> = parents.iter().map(|p| repo.find_commit(*p).unwrap()).collect();
        repo.commit(None, &sig, &sig, "m", &tree, &parents.iter().collect::<Vec<_>>()).unwrap()
    }

    fn tree_with(repo: &Repository, files: &[(&str, &[u8])]) -> Oid {
        let mut b = repo.treebuilder(None).unwrap();
        for (name, content) in files {
            b.insert(name, repo.blob(content).unwrap(), 0o100644).unwrap();
        }
        b.write().unwrap()
    }

    #[test]
    fn a_large_file_added_then_removed_is_named_with_its_commit() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::init_bare(dir.path()).unwrap();
        let big = vec![b'x'; 2048];
        let c1 = commit(&repo, tree_with(&repo, &[("big.bin", &big)]), &[]);
        let c2 = commit(&repo, tree_with(&repo, &[("small", b"s")]), &[c1]);
        let update = RefUpdate { old: Oid::ZERO_SHA1, new: c2, refname: "refs/heads/Production".into() };
        let mut oversized = HashMap::from([(repo.blob(&big).unwrap(), 2048u64)]);
        let problems = check_update(&repo, &update, &mut oversized, 1024).unwrap();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].starts_with(&format!("error: big.bin (commit {}): 2048 bytes", &c1.to_string()[..12])));
        assert!(oversized.is_empty());
    }

    #[test]
    fn a_tree_deeper_than_the_bound_is_refused_with_a_short_path() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::init_bare(dir.path()).unwrap();
        let mut id = tree_with(&repo, &[("f", b"x")]);
        for _ in 0..20_000 {
            let mut b = repo.treebuilder(None).unwrap();
            b.insert("d", id, 0o040000).unwrap();
            id = b.write().unwrap();
        }
        let c = commit(&repo, id, &[]);
        let update = RefUpdate { old: Oid::ZERO_SHA1, new: c, refname: "refs/heads/Production".into() };
        let problems = check_update(&repo, &update, &mut HashMap::new(), 1024).unwrap();
        assert_eq!(problems.len(), 1);
        assert!(problems[0].contains("nested deeper than 64 levels") && problems[0].len() < 400, "{}", problems[0]);
    }

    #[test]
    fn only_objects_in_the_quarantine_are_sized() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::init_bare(dir.path()).unwrap();
        let big = repo.blob(&[b'y'; 5000]).unwrap();
        repo.blob(b"small").unwrap();
        let found = oversized_blobs(&dir.path().join("objects"), 4096).unwrap();
        assert_eq!(found, HashMap::from([(big, 5000)]));
    }
}
