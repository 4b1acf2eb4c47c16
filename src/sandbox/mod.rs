//! Running a module's `validate.sh` in a bubblewrap sandbox, bounded as a whole: time, output,
//! memory, processes, `/tmp`, and the syscalls it may make.
//!
//! The module contract: the pushed config is at `/opt/proxy_config` (read-only), there is no
//! network, exit 0 printing nothing means valid, anything else rejects the push with what it
//! printed. The sandbox sees a read-only root with a read-only `/usr` (for `sh`, `grep`, ...),
//! writable only in a size-limited `/tmp`; its own user/pid/net/ipc/uts namespaces, uid nobody,
//! no capabilities, a scrubbed environment, a seccomp filter ([`bounds`]); nothing else of the
//! host (no `/etc`, no data dir, no other tenant). A cgroup per sandbox bounds the memory of
//! all its processes and `/tmp` together and how many processes it runs at once (where the host
//! has no usable cgroup, rlimits do, more weakly: [`bounds`] says how, and logs it once).
//!
//! - [`run`]: one sandbox's command line, start and verdict;
//! - [`pool`]: sandboxes started ahead of time, and the run a push prepares;
//! - [`scratch`]: the folders module files are written to before a sandbox binds them;
//! - [`bounds`]: cgroups, rlimits, the seccomp filter, and what the host allows.

use std::path::Path;
use std::time::Duration;

mod bounds;
mod pool;
mod run;
mod scratch;

pub use pool::{Busy, Pool, Prepared, Waiting};
pub use scratch::{remove_scratch_root, sweep_scratch_roots};

use run::Started;

/// Where the pushed config appears inside the sandbox.
pub const CONFIG_MOUNT: &str = "/opt/proxy_config";
const SCRIPT_MOUNT: &str = "/opt/section/validate.sh";

#[derive(Debug, Clone)]
pub struct Limits {
    pub timeout: Duration,
    /// Bytes of output kept; a script printing more is stopped.
    pub max_output: usize,
    /// Memory of one sandbox: all its processes and its `/tmp` together (a cgroup), and each
    /// process's address space (RLIMIT_AS).
    pub memory_bytes: u64,
    /// Processes one sandbox may run at once, its shell included.
    pub processes: u32,
    /// Size of the sandbox's `/tmp`, the one place it can write (and the largest file).
    pub tmp_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            timeout: Duration::from_secs(10),
            max_output: 64 * 1024,
            memory_bytes: 512 << 20,
            processes: 64,
            tmp_bytes: 16 << 20,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Exit 0; `output` is what it printed anyway (the contract says nothing).
    Passed {
        output: String,
    },
    /// A non-zero exit, or a sandbox limit hit (`status` says which, as a phrase after
    /// "validate.sh").
    Failed {
        status: String,
        output: String,
    },
    TimedOut {
        output: String,
    },
    OutputTooLarge {
        output: String,
    },
    /// The sandbox itself could not run (bwrap missing, ...): the push fails closed.
    CannotRun(String),
}

impl Outcome {
    /// What the script printed (for [`Outcome::CannotRun`], why it could not run).
    pub fn output(&self) -> &str {
        match self {
            Outcome::Passed { output }
            | Outcome::Failed { output, .. }
            | Outcome::TimedOut { output }
            | Outcome::OutputTooLarge { output } => output,
            Outcome::CannotRun(why) => why,
        }
    }
}

/// Probes what the host allows the sandboxes (cgroups, a fresh `/proc`, seccomp) now rather
/// than at the first run, logging what is weaker than the full sandbox once.
pub fn probe(bwrap: &Path) {
    bounds::host(bwrap);
}

/// Runs `script` with `config_dir` mounted read-only at [`CONFIG_MOUNT`].
pub fn run_validate(bwrap: &Path, script: &Path, config_dir: &Path, limits: &Limits) -> Outcome {
    match Started::spawn(bounds::host(bwrap), bwrap, script, config_dir, limits, false) {
        Ok(started) => started.finish(limits),
        Err(outcome) => outcome,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scratch_folders_of_dead_processes_are_swept_and_live_ones_kept() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let uid = scratch::uid();
        let parent = scratch::scratch_root().as_ref().unwrap().parent().unwrap().to_owned();
        let stale = parent.join(format!("devpop-{uid}-{dead}"));
        std::fs::create_dir_all(stale.join("validate-x")).unwrap();
        let prepared = Prepared::fresh(Path::new("bwrap"), Path::new("/nonexistent")).unwrap();
        sweep_scratch_roots();
        assert!(!stale.exists(), "a dead process's folder is removed");
        assert!(prepared.config_dir().is_dir(), "this process's folders stay");
    }
}
