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
    match Started::spawn(bwrap, script, config_dir, limits, false) {
        Ok(started) => started.finish(limits),
        Err(outcome) => outcome,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn script(body: &str) -> (tempfile::TempDir, PathBuf, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let s = dir.path().join("validate.sh");
        std::fs::write(&s, format!("#!/bin/sh\n{body}\n")).unwrap();
        let config = dir.path().join("config");
        std::fs::create_dir(&config).unwrap();
        std::fs::write(config.join("server.conf"), "listen 80;\n").unwrap();
        (dir, s, config)
    }

    fn run(body: &str, limits: &Limits) -> Outcome {
        let (_d, s, c) = script(body);
        run_validate(Path::new("bwrap"), &s, &c, limits)
    }

    #[test]
    fn the_usual_devices_work() {
        let out = run(
            "echo to-null > /dev/null; head -c 4 /dev/zero | wc -c; head -c 4 /dev/urandom | wc -c; echo via-stderr > /dev/stderr; echo via-fd >&2",
            &Limits::default(),
        );
        assert_eq!(out, Outcome::Passed { output: "4\n4\nvia-stderr\nvia-fd\n".into() });
    }

    #[test]
    fn passing_and_failing_scripts() {
        assert_eq!(run("exit 0", &Limits::default()), Outcome::Passed { output: String::new() });
        let out = run("grep -n listen \"$PROXY_CONFIG_DIR/server.conf\" >&2; exit 3", &Limits::default());
        assert_eq!(out, Outcome::Failed { status: "exited 3".into(), output: "1:listen 80;\n".into() });
    }

    #[test]
    fn config_is_read_only_and_host_files_are_invisible() {
        let out = run(
            "touch /opt/proxy_config/x 2>/dev/null && echo wrote; test -e /etc/passwd && echo passwd; \
             test -e /root && echo root; pwd; id -u",
            &Limits::default(),
        );
        let Outcome::Passed { output } = out else { panic!("{out:?}") };
        assert!(!output.contains("wrote") && !output.contains("passwd") && !output.contains("root\n"), "{output}");
        assert_eq!(output, "/opt/proxy_config\n65534\n", "runs in the config dir as nobody");
    }

    #[test]
    fn a_script_that_sleeps_forever_is_stopped() {
        let limits = Limits { timeout: Duration::from_millis(300), ..Limits::default() };
        let start = std::time::Instant::now();
        let out = run("echo started; sleep 1000 & sleep 1000", &limits);
        assert_eq!(out, Outcome::TimedOut { output: "started\n".into() });
        assert!(start.elapsed() < Duration::from_secs(3));
    }

    #[test]
    fn a_flood_of_output_is_cut_at_the_limit() {
        let out = run("yes 0123456789012345678901234567890123456789 >&2", &Limits::default());
        let Outcome::OutputTooLarge { output } = out else { panic!("{out:?}") };
        assert_eq!(output.len(), 64 * 1024);
    }

    #[test]
    fn there_is_no_network() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let out = run(
            &format!(
                "python3 -c 'import socket; socket.create_connection((\"127.0.0.1\", {port}), timeout=2)' 2>&1 && echo CONNECTED; \
                 python3 -c 'import socket; socket.getaddrinfo(\"pypi.org\", 443)' 2>&1 || echo NO-DNS"
            ),
            &Limits::default(),
        );
        let Outcome::Passed { output } = out else { panic!("{out:?}") };
        assert!(!output.contains("CONNECTED") && output.contains("NO-DNS"), "{output}");
    }

    fn wait_ready(pool: &Pool, script: &Path) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while pool.ready(script) == 0 {
            assert!(std::time::Instant::now() < deadline, "no sandbox became ready");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn a_sandbox_started_ahead_sees_the_config_written_after_and_reports_like_a_fresh_one() {
        let (_d, s, _c) =
            script("cat server.conf >&2; test \"$PROXY_CONFIG_DIR\" = /opt/proxy_config || exit 9; exit 3");
        let pool = Pool::new(Path::new("bwrap"), Limits::default(), 1);
        pool.warm(&s);
        wait_ready(&pool, &s);
        let prepared = pool.prepare(&s).unwrap();
        assert!(prepared.was_ready());
        assert_eq!(pool.ready(&s), 0, "each sandbox runs once");
        std::fs::write(prepared.config_dir().join("server.conf"), "listen 81;\n").unwrap();
        let out = prepared.run(&Limits::default());
        assert_eq!(out, Outcome::Failed { status: "exited 3".into(), output: "listen 81;\n".into() });
        // A script that ends without `exit` passes with its last command's status.
        let (_d2, s2, _c2) = script("true");
        pool.warm(&s2);
        wait_ready(&pool, &s2);
        assert_eq!(pool.prepare(&s2).unwrap().run(&Limits::default()), Outcome::Passed { output: String::new() });
    }

    #[test]
    fn a_sandbox_started_for_an_older_script_is_never_used() {
        let (_d, s, _c) = script("echo old >&2; exit 1");
        let pool = Pool::new(Path::new("bwrap"), Limits::default(), 1);
        pool.warm(&s);
        wait_ready(&pool, &s);
        // Replaced the way `package add` does: a new file under the same name.
        let new = s.with_extension("new");
        std::fs::write(&new, "#!/bin/sh\nexit 0\n").unwrap();
        std::fs::rename(&new, &s).unwrap();
        let prepared = pool.prepare(&s).unwrap();
        assert!(!prepared.was_ready());
        assert_eq!(prepared.run(&Limits::default()), Outcome::Passed { output: String::new() });
    }

    #[test]
    fn a_waiting_sandbox_is_held_to_the_time_limit_from_when_it_runs() {
        let (_d, s, _c) = script("sleep 1000");
        let pool = Pool::new(Path::new("bwrap"), Limits::default(), 1);
        pool.warm(&s);
        wait_ready(&pool, &s);
        std::thread::sleep(Duration::from_millis(400)); // waiting does not count
        let limits = Limits { timeout: Duration::from_millis(300), ..Limits::default() };
        let start = std::time::Instant::now();
        assert_eq!(pool.prepare(&s).unwrap().run(&limits), Outcome::TimedOut { output: String::new() });
        assert!(start.elapsed() >= Duration::from_millis(300) && start.elapsed() < Duration::from_secs(3));
    }

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

    #[test]
    fn memory_is_bounded() {
        let limits = Limits { memory_bytes: 64 << 20, ..Limits::default() };
        let out = run("python3 -c 'x = bytearray(200 * 1024 * 1024)' 2>&1", &limits);
        assert!(matches!(out, Outcome::Failed { .. }), "{out:?}");
    }
}
