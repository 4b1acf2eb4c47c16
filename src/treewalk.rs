//! Bounded, iterative walks of git trees.
//!
//! Pushed trees are hostile. libgit2's `Tree::walk` recurses once per folder level with no
//! depth bound, so a commit holding a path thousands of folders deep overflows the stack of the
//! thread that walks it (and a stack overflow aborts the whole server). Every walk of a pushed
//! tree goes through [`walk`] instead: the folders still to visit wait on a heap stack, and both
//! the depth and the number of entries are bounded.

use std::collections::HashSet;

use git2::{ObjectType, Oid, Repository};

/// Bounds on one walk.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Folder levels below the root that may be entered (the root's own entries are at depth 1).
    pub max_depth: usize,
    /// Entries (files, folders, links, submodules) that may be visited.
    pub max_entries: usize,
}

/// One entry of a walked tree.
#[derive(Debug)]
pub struct Entry<'a> {
    /// The entry's path from the walk's root, `/`-separated, starting with the walk's prefix.
    pub path: &'a str,
    /// The entry's own name (`None` when it is not UTF-8).
    pub name: Option<&'a str>,
    pub id: Oid,
    pub kind: Option<ObjectType>,
    pub filemode: i32,
    /// 1 for the root's own entries.
    pub depth: usize,
}

/// What the visitor wants next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    /// Do not enter this folder (ignored for other entries).
    Skip,
    /// End the walk now.
    Stop,
}

/// How a walk ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Every entry was visited.
    Complete,
    /// The visitor asked to stop.
    Stopped,
    /// A folder deeper than `max_depth` was found (its path, shortened for messages).
    TooDeep { path: String },
    /// More than `max_entries` entries.
    TooManyEntries,
}

/// Walks the tree `root` depth-first in tree order, calling `visit` for every entry; folders are
/// entered after `visit` returns [`Flow::Continue`] for them. Folders whose id is already in
/// `seen` are not entered again (pass the same set to walk several commits once); `None` visits
/// every folder. Entry names that are not single path components (`.`, `..`, containing `/`)
/// are visited but never entered.
pub fn walk(
    repo: &Repository,
    root: Oid,
    prefix: &str,
    limits: Limits,
    mut seen: Option<&mut HashSet<Oid>>,
    mut visit: impl FnMut(&Entry) -> Flow,
) -> Result<Outcome, git2::Error> {
    // The folders being walked, innermost last: the tree, its path, its depth, its next entry.
    let mut stack: Vec<(git2::Tree<'_>, String, usize, usize)> = Vec::new();
    stack.push((repo.find_tree(root)?, prefix.trim_end_matches('/').to_owned(), 1, 0));
    let mut entries = 0usize;
    while let Some((tree, path, depth, next)) = stack.last_mut() {
        let depth = *depth;
        let Some(entry) = tree.get(*next) else {
            stack.pop();
            continue;
        };
        *next += 1;
        entries += 1;
        if entries > limits.max_entries {
            return Ok(Outcome::TooManyEntries);
        }
        let name = entry.name().ok();
        let here = match (path.is_empty(), name) {
            (true, Some(n)) => n.to_owned(),
            (false, Some(n)) => format!("{path}/{n}"),
            (_, None) => format!("{path}/{}", String::from_utf8_lossy(entry.name_bytes())),
        };
        let (id, kind) = (entry.id(), entry.kind());
        let e = Entry { path: &here, name, id, kind, filemode: entry.filemode(), depth };
        match visit(&e) {
            Flow::Stop => return Ok(Outcome::Stopped),
            Flow::Skip => continue,
            Flow::Continue => {}
        }
        let enter = kind == Some(ObjectType::Tree) && name.is_some_and(plain_name);
        // The entry borrows the tree on the stack: let go of it before the stack grows.
        drop(entry);
        if !enter {
            continue;
        }
        if depth >= limits.max_depth {
            return Ok(Outcome::TooDeep { path: shorten(&here) });
        }
        if seen.as_deref_mut().is_some_and(|seen| !seen.insert(id)) {
            continue;
        }
        stack.push((repo.find_tree(id)?, here, depth + 1, 0));
    }
    Ok(Outcome::Complete)
}

/// A name that is safe as one path component.
pub fn plain_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains('/') && !name.contains('\0')
}

/// A path short enough for a message: its start and its end.
fn shorten(path: &str) -> String {
    const KEEP: usize = 60;
    if path.len() <= 2 * KEEP + 5 {
        return path.to_owned();
    }
    let mut head = KEEP;
    while !path.is_char_boundary(head) {
        head -= 1;
    }
    let mut tail = path.len() - KEEP;
    while !path.is_char_boundary(tail) {
        tail += 1;
    }
    format!("{}/.../{}", path[..head].trim_end_matches('/'), path[tail..].trim_start_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A repo with a file `depth` folders deep, built in-process (no recursion anywhere).
    pub(crate) fn deep_tree(repo: &Repository, depth: usize) -> Oid {
        let blob = repo.blob(b"x\n").unwrap();
        let mut b = repo.treebuilder(None).unwrap();
        b.insert("f", blob, 0o100644).unwrap();
        let mut id = b.write().unwrap();
        for _ in 0..depth {
            let mut b = repo.treebuilder(None).unwrap();
            b.insert("d", id, 0o040000).unwrap();
            id = b.write().unwrap();
        }
        id
    }

    fn repo() -> (tempfile::TempDir, Repository) {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::init_bare(dir.path()).unwrap();
        (dir, repo)
    }

    const WIDE: Limits = Limits { max_depth: 64, max_entries: 100_000 };

    #[test]
    fn a_tree_deeper_than_any_stack_is_refused_without_recursion() {
        let (_d, repo) = repo();
        let root = deep_tree(&repo, 20_000);
        let out = walk(&repo, root, "", WIDE, None, |_| Flow::Continue).unwrap();
        let Outcome::TooDeep { path } = out else { panic!("{out:?}") };
        assert!(path.starts_with("d/d/d") && path.contains("/.../") && path.len() < 200, "{path}");
    }

    #[test]
    fn visits_every_entry_with_its_path_and_depth() {
        let (_d, repo) = repo();
        let root = deep_tree(&repo, 3);
        let mut seen = Vec::new();
        let out = walk(&repo, root, "top", WIDE, None, |e| {
            seen.push((e.path.to_owned(), e.depth));
            Flow::Continue
        })
        .unwrap();
        assert_eq!(out, Outcome::Complete);
        assert_eq!(
            seen,
            [("top/d".into(), 1), ("top/d/d".into(), 2), ("top/d/d/d".into(), 3), ("top/d/d/d/f".into(), 4)]
        );
    }

    #[test]
    fn entries_are_bounded_and_shared_folders_are_entered_once() {
        let (_d, repo) = repo();
        let leaf = deep_tree(&repo, 0);
        let mut b = repo.treebuilder(None).unwrap();
        for i in 0..50 {
            b.insert(format!("d{i}"), leaf, 0o040000).unwrap();
        }
        let root = b.write().unwrap();
        let small = Limits { max_depth: 8, max_entries: 60 };
        assert_eq!(walk(&repo, root, "", small, None, |_| Flow::Continue).unwrap(), Outcome::TooManyEntries);
        let mut seen = HashSet::new();
        let mut n = 0;
        let out = walk(&repo, root, "", small, Some(&mut seen), |_| {
            n += 1;
            Flow::Continue
        })
        .unwrap();
        assert_eq!((out, n), (Outcome::Complete, 51), "50 folders, one file: the shared folder once");
    }
}
