//! Scratch folders: where a run's module folder is written before its sandbox binds it.

use std::path::{Path, PathBuf};

/// A new folder for one run's config, under this process's [`scratch_root`]. Private to this
/// user (mode 0700).
pub(super) fn scratch_dir() -> std::io::Result<tempfile::TempDir> {
    let root = scratch_root().as_ref().map_err(|e| std::io::Error::new(e.kind(), e.to_string()))?;
    tempfile::Builder::new().prefix("validate-").tempdir_in(root)
}

/// This process's real user id.
pub(super) fn uid() -> u32 {
    rustix::process::getuid().as_raw()
}

/// The name of this process's scratch root (`devpop-<uid>-<pid>`): also what a sandbox's
/// output is scrubbed of, so no server path reaches a pusher.
pub(super) fn root_name() -> String {
    format!("devpop-{}-{}", uid(), std::process::id())
}

/// Where this process makes its scratch folders: `devpop-<uid>-<pid>` in memory-backed
/// `/dev/shm` when there is one (a module folder is small and bounded, and on a disk,
/// creating and deleting files is most of what preparing a run costs), else in the temp dir.
/// Made once, mode 0700; removed by [`remove_scratch_root`] (at shutdown) or, after a crash, by
/// the next server's [`sweep_scratch_roots`].
pub(super) fn scratch_root() -> &'static std::io::Result<PathBuf> {
    SCRATCH_ROOT.get_or_init(|| {
        use std::os::unix::fs::DirBuilderExt;
        let name = root_name();
        let mut last = None;
        for parent in [Path::new("/dev/shm").to_owned(), std::env::temp_dir()] {
            let root = parent.join(&name);
            let _ = std::fs::remove_dir_all(&root); // a dead process's, with our pid
            match std::fs::DirBuilder::new().mode(0o700).create(&root) {
                Ok(()) => return Ok(root),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| std::io::Error::other("no scratch dir")))
    })
}

static SCRATCH_ROOT: std::sync::OnceLock<std::io::Result<PathBuf>> = std::sync::OnceLock::new();

/// Removes this process's scratch folders and sandbox cgroups, if it made any (on the way out).
pub fn remove_scratch_root() {
    if let Some(Ok(root)) = SCRATCH_ROOT.get() {
        let _ = std::fs::remove_dir_all(root);
    }
    super::bounds::remove_cgroups();
}

/// Removes the scratch folders (and sandbox cgroups) that crashed devpop processes of this
/// user left behind.
pub fn sweep_scratch_roots() -> usize {
    use std::os::unix::fs::MetadataExt;
    let uid = uid();
    let prefix = format!("devpop-{uid}-");
    let mut swept = 0;
    for parent in [Path::new("/dev/shm").to_owned(), std::env::temp_dir()] {
        let Ok(entries) = std::fs::read_dir(&parent) else { continue };
        for e in entries.flatten() {
            let name = e.file_name();
            let Some(pid) = name.to_str().and_then(|n| n.strip_prefix(&prefix)).and_then(|p| p.parse::<i32>().ok())
            else {
                continue;
            };
            // Ours (not a symlink, owned by this user) and its process gone.
            let ours = std::fs::symlink_metadata(e.path()).is_ok_and(|m| m.is_dir() && m.uid() == uid);
            if ours && !alive(pid) && std::fs::remove_dir_all(e.path()).is_ok() {
                swept += 1;
            }
        }
    }
    super::bounds::sweep_cgroups(alive);
    swept
}

/// Whether process `pid` exists.
pub(super) fn alive(pid: i32) -> bool {
    // kill(2) with signal 0: EPERM means it exists, as another user's.
    rustix::process::Pid::from_raw(pid)
        .is_some_and(|pid| matches!(rustix::process::test_kill_process(pid), Ok(()) | Err(rustix::io::Errno::PERM)))
}
