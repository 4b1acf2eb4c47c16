//! Running a module's `validate.sh` in a bubblewrap sandbox, bounded in time, output and memory.
//!
//! The module contract: the pushed config is at `/opt/proxy_config` (read-only), there is no
//! network, exit 0 printing nothing means valid, anything else rejects the push with what it
//! printed. The sandbox sees a read-only `/usr` (for `sh`, `grep`, ...), a private `/tmp`, its
//! own pid/net/ipc/uts namespaces, no capabilities, a scrubbed environment; nothing else of
//! the host (no `/etc`, no data dir, no other tenant).

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// Where the pushed config appears inside the sandbox.
pub const CONFIG_MOUNT: &str = "/opt/proxy_config";
const SCRIPT_MOUNT: &str = "/opt/section/validate.sh";

#[derive(Debug, Clone)]
pub struct Limits {
    pub timeout: Duration,
    /// Bytes of output kept; a script printing more is stopped.
    pub max_output: usize,
    /// Address-space limit of the sandboxed processes.
    pub memory_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { timeout: Duration::from_secs(10), max_output: 64 * 1024, memory_bytes: 512 << 20 }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Exit 0; `output` is what it printed anyway (the contract says nothing).
    Passed {
        output: String,
    },
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

/// Runs `script` with `config_dir` mounted read-only at [`CONFIG_MOUNT`].
pub fn run_validate(bwrap: &Path, script: &Path, config_dir: &Path, limits: &Limits) -> Outcome {
    match Started::spawn(bwrap, script, config_dir, limits, false) {
        Ok(started) => started.finish(limits),
        Err(outcome) => outcome,
    }
}

/// The bwrap command line: the sandbox described at the top of this module, running
/// `inner` (an argv) inside it.
fn command(bwrap: &Path, script: &Path, config_dir: &Path, inner: &[&str]) -> Command {
    let mut cmd = Command::new(bwrap);
    cmd.args([
        "--unshare-all",
        "--uid",
        "65534",
        "--gid",
        "65534",
        "--die-with-parent",
        "--new-session",
        "--cap-drop",
        "ALL",
    ]);
    cmd.args(["--ro-bind", "/usr", "/usr"]);
    for top in ["/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"] {
        match std::fs::read_link(top) {
            Ok(target) => {
                cmd.arg("--symlink").arg(target).arg(top);
            }
            Err(_) if Path::new(top).is_dir() => {
                cmd.args(["--ro-bind", top, top]);
            }
            Err(_) => {}
        }
    }
    // Debian's alternatives (awk, ...) are symlinks into /etc/alternatives; nothing else of /etc.
    if Path::new("/etc/alternatives").is_dir() {
        cmd.args(["--ro-bind", "/etc/alternatives", "/etc/alternatives"]);
    }
    // A minimal /dev: the three devices scripts use and the usual fd links (a full `--dev` costs
    // about 1 ms more per sandbox, measured with hyperfine).
    cmd.args(["--proc", "/proc"]);
    for dev in ["/dev/null", "/dev/zero", "/dev/urandom"] {
        cmd.args(["--dev-bind", dev, dev]);
    }
    for (target, link) in [
        ("/proc/self/fd", "/dev/fd"),
        ("/proc/self/fd/0", "/dev/stdin"),
        ("/proc/self/fd/1", "/dev/stdout"),
        ("/proc/self/fd/2", "/dev/stderr"),
    ] {
        cmd.args(["--symlink", target, link]);
    }
    cmd.args(["--size", "16777216", "--tmpfs", "/tmp"]);
    cmd.arg("--ro-bind").arg(config_dir).arg(CONFIG_MOUNT);
    cmd.arg("--ro-bind").arg(script).arg(SCRIPT_MOUNT);
    cmd.args(["--chdir", CONFIG_MOUNT, "--clearenv"]);
    for (k, v) in [
        ("PATH", "/usr/local/bin:/usr/bin:/bin"),
        ("HOME", "/tmp"),
        ("TMPDIR", "/tmp"),
        ("LC_ALL", "C.UTF-8"),
        ("PROXY_CONFIG_DIR", CONFIG_MOUNT),
    ] {
        cmd.args(["--setenv", k, v]);
    }
    cmd.args(inner);
    cmd
}

/// What a sandbox started ahead of time runs: a shell that waits for the word `go` on stdin,
/// then runs validate.sh itself (with stdin at /dev/null, as if started then), so the run
/// costs no exec; the shell's exit status is the script's. Anything else, or the pipe
/// closing, ends it without running the script.
const WAIT_THEN_VALIDATE: &str =
    "read -r go && [ \"$go\" = go ] || exit 125; exec </dev/null; . /opt/section/validate.sh";

/// A started sandbox: its process, the pipe its output comes through and, for one started
/// ahead of time, the pipe that lets it go.
struct Started {
    child: std::process::Child,
    output: std::io::PipeReader,
    go: Option<std::io::PipeWriter>,
}

impl Started {
    /// Starts bwrap; with `wait`, the sandbox is set up but validate.sh runs only at [`Self::go`].
    fn spawn(bwrap: &Path, script: &Path, config_dir: &Path, limits: &Limits, wait: bool) -> Result<Self, Outcome> {
        let cannot = |what: &str, e: std::io::Error| Outcome::CannotRun(format!("{what}: {e}"));
        let inner: &[&str] = if wait { &["/bin/sh", "-c", WAIT_THEN_VALIDATE] } else { &["/bin/sh", SCRIPT_MOUNT] };
        let mut cmd = command(bwrap, script, config_dir, inner);
        let (output, writer) = std::io::pipe().map_err(|e| cannot("pipe", e))?;
        let writer2 = writer.try_clone().map_err(|e| cannot("pipe", e))?;
        let go = if wait {
            let (r, w) = std::io::pipe().map_err(|e| cannot("pipe", e))?;
            cmd.stdin(r);
            Some(w)
        } else {
            cmd.stdin(Stdio::null());
            None
        };
        cmd.stdout(writer).stderr(writer2);
        cmd.process_group(0);
        let memory = limits.memory_bytes;
        // SAFETY: only async-signal-safe calls (setrlimit) between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                let set = |res, n: u64| {
                    let lim = libc::rlimit { rlim_cur: n as libc::rlim_t, rlim_max: n as libc::rlim_t };
                    libc::setrlimit(res, &lim)
                };
                set(libc::RLIMIT_AS, memory);
                set(libc::RLIMIT_FSIZE, 16 << 20);
                set(libc::RLIMIT_CORE, 0);
                Ok(())
            });
        }
        let child =
            match cmd.spawn() {
                Ok(c) => c,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(Outcome::CannotRun(
                    "bubblewrap (bwrap) is not installed on the devpop server; install it (apt-get install bubblewrap)"
                        .into(),
                )),
                Err(e) => return Err(cannot("cannot start the sandbox", e)),
            };
        // `cmd` holds our copies of the pipes' child ends: they must go, or the reader never
        // sees EOF.
        drop(cmd);
        Ok(Started { child, output, go })
    }

    fn kill_group(pgid: libc::pid_t) {
        // SAFETY: kill(2) on the process group of a child we spawned and have not reaped.
        unsafe {
            libc::kill(-pgid, libc::SIGKILL);
        }
    }

    /// Lets a waiting sandbox run validate.sh, then collects it like [`Self::finish`].
    fn go(mut self, limits: &Limits) -> Outcome {
        use std::io::Write;
        let sent = self.go.take().map(|mut w| w.write_all(b"go\n"));
        match sent {
            Some(Err(e)) => {
                let outcome = self.finish(limits);
                Outcome::CannotRun(format!("the sandbox stopped before validate.sh ran ({e}): {outcome:?}"))
            }
            _ => self.finish(limits),
        }
    }

    /// Waits for the script, enforcing the time and output limits; stdout and stderr merged.
    fn finish(mut self, limits: &Limits) -> Outcome {
        let pgid = self.child.id() as libc::pid_t;
        let max = limits.max_output;
        let mut reader = self.output;
        let (tx, rx) = mpsc::channel();
        let reader_thread = std::thread::spawn(move || {
            let mut out = Vec::new();
            let mut buf = [0u8; 8192];
            let mut too_large = false;
            loop {
                match reader.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let room = max.saturating_sub(out.len());
                        out.extend_from_slice(&buf[..n.min(room)]);
                        if n > room {
                            too_large = true;
                            Self::kill_group(pgid);
                            break;
                        }
                    }
                }
            }
            let _ = tx.send(());
            (out, too_large)
        });
        let timed_out = rx.recv_timeout(limits.timeout).is_err();
        if timed_out {
            Self::kill_group(pgid);
        }
        let (out, too_large) = reader_thread.join().unwrap_or_default();
        let status = self.child.wait();
        let output = String::from_utf8_lossy(&out).into_owned();
        match status {
            _ if timed_out => Outcome::TimedOut { output },
            _ if too_large => Outcome::OutputTooLarge { output },
            Ok(s) if s.success() => Outcome::Passed { output },
            Ok(s) => {
                let status = match s.code() {
                    Some(code) => format!("exited {code}"),
                    None => format!("was killed ({s})"),
                };
                Outcome::Failed { status, output }
            }
            Err(e) => Outcome::CannotRun(format!("waiting for the sandbox: {e}")),
        }
    }
}

/// A new folder for one run's config, under this process's [`scratch_root`]. Private to this
/// user (mode 0700).
fn scratch_dir() -> std::io::Result<tempfile::TempDir> {
    let root = scratch_root().as_ref().map_err(|e| std::io::Error::new(e.kind(), e.to_string()))?;
    tempfile::Builder::new().prefix("validate-").tempdir_in(root)
}

/// Where this process makes its scratch folders: `devpop-<uid>-<pid>` in memory-backed
/// `/dev/shm` when there is one (a module folder is small and bounded, and on a disk,
/// creating and deleting files is most of what preparing a run costs), else in the temp dir.
/// Made once, mode 0700; removed by [`remove_scratch_root`] (at shutdown) or, after a crash, by
/// the next server's [`sweep_scratch_roots`].
fn scratch_root() -> &'static std::io::Result<PathBuf> {
    SCRATCH_ROOT.get_or_init(|| {
        use std::os::unix::fs::DirBuilderExt;
        let name = format!("devpop-{}-{}", unsafe { libc::getuid() }, std::process::id());
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

/// Removes this process's scratch folders, if it made any (on the way out).
pub fn remove_scratch_root() {
    if let Some(Ok(root)) = SCRATCH_ROOT.get() {
        let _ = std::fs::remove_dir_all(root);
    }
}

/// Removes the scratch folders that crashed devpop processes of this user left behind.
pub fn sweep_scratch_roots() -> usize {
    use std::os::unix::fs::MetadataExt;
    let uid = unsafe { libc::getuid() };
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
            // SAFETY: kill(2) with signal 0 only checks that the process exists.
            let alive = unsafe { libc::kill(pid, 0) } == 0;
            if ours && !alive && std::fs::remove_dir_all(e.path()).is_ok() {
                swept += 1;
            }
        }
    }
    swept
}

/// A sandbox that will never run (its script changed, or the pool is going away): stop it.
struct Unused(Started);

impl Drop for Unused {
    fn drop(&mut self) {
        self.0.go = None;
        Started::kill_group(self.0.child.id() as libc::pid_t);
        let _ = self.0.child.wait();
    }
}

/// What identifies a script file's content for the pool: a sandbox binds the file it saw, so one
/// started before the file changed must not be used after.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileId {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
}

impl FileId {
    fn of(path: &Path) -> Option<Self> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(path).ok()?;
        Some(FileId { dev: m.dev(), ino: m.ino(), size: m.size(), mtime: (m.mtime(), m.mtime_nsec()) })
    }
}

/// A sandbox set up ahead of time for one script: namespaces made, mounts in place, the config
/// folder bound at [`CONFIG_MOUNT`] still empty.
pub struct Waiting {
    scratch: tempfile::TempDir,
    script: FileId,
    started: Option<Started>,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        if let Some(s) = self.started.take() {
            drop(Unused(s));
        }
    }
}

/// One validate.sh run being prepared: write the module's folder into [`Self::config_dir`],
/// then [`Self::run`]. Comes from [`Pool::prepare`], with a sandbox already waiting when the pool
/// had one.
pub enum Prepared {
    /// A sandbox set up ahead of time, waiting for the word.
    Waiting(Waiting),
    /// A folder; the sandbox starts when the run does.
    Fresh { scratch: tempfile::TempDir, bwrap: PathBuf, script: PathBuf },
}

impl Prepared {
    /// A run that starts its sandbox when it runs.
    pub fn fresh(bwrap: &Path, script: &Path) -> std::io::Result<Self> {
        Ok(Prepared::Fresh { scratch: scratch_dir()?, bwrap: bwrap.to_owned(), script: script.to_owned() })
    }

    /// The empty folder that appears read-only at [`CONFIG_MOUNT`].
    pub fn config_dir(&self) -> &Path {
        match self {
            Prepared::Waiting(w) => w.scratch.path(),
            Prepared::Fresh { scratch, .. } => scratch.path(),
        }
    }

    /// Whether a sandbox was already waiting (for the tests and the logs).
    pub fn was_ready(&self) -> bool {
        matches!(self, Prepared::Waiting(_))
    }

    pub fn run(self, limits: &Limits) -> Outcome {
        match self {
            Prepared::Waiting(mut w) => {
                let started = w.started.take().expect("a waiting sandbox is started");
                let outcome = started.go(limits);
                drop(w); // its folder stays until the script is done
                outcome
            }
            Prepared::Fresh { scratch, bwrap, script } => run_validate(&bwrap, &script, scratch.path(), limits),
        }
    }
}

/// Sandboxes started ahead of time, a few per `validate.sh`, so a push does not wait for
/// bubblewrap to build namespaces and mounts (about 3 ms of a sandboxed run). Each sandbox
/// runs one script once and is never reused; [`Pool::replace`] has a background thread start
/// the next one. With `--die-with-parent`, bwrap dies when the thread that started
/// it ends, so that one long-lived thread starts them all. A pool without a sandbox ready just
/// starts one on demand.
#[derive(Clone)]
pub struct Pool {
    inner: std::sync::Arc<PoolInner>,
}

struct PoolInner {
    bwrap: PathBuf,
    limits: Limits,
    per_script: usize,
    idle: std::sync::Mutex<std::collections::HashMap<PathBuf, Vec<Waiting>>>,
    refill: std::sync::Mutex<mpsc::Sender<(PathBuf, bool)>>,
    /// Pushes in progress ([`Pool::busy`]), and when the last one ended.
    busy: std::sync::Mutex<(usize, std::time::Instant)>,
}

/// A used sandbox is replaced once no push has run for this long (starting one takes a few
/// milliseconds of CPU, and slows the machine's other processes meanwhile: not while a push's
/// client is still finishing)...
const QUIET: Duration = Duration::from_millis(30);
/// ... or after this long, if pushes keep coming.
const MAX_QUIET_WAIT: Duration = Duration::from_secs(2);

/// Marks the server busy with a push while it lives (see [`Pool::busy`]).
pub struct Busy(std::sync::Arc<PoolInner>);

impl Drop for Busy {
    fn drop(&mut self) {
        let mut busy = self.0.busy.lock().expect("pool lock");
        busy.0 -= 1;
        busy.1 = std::time::Instant::now();
    }
}

/// At most this many scripts have sandboxes waiting (each is two small processes).
const POOL_MAX_SCRIPTS: usize = 16;

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool").field("bwrap", &self.inner.bwrap).field("per_script", &self.inner.per_script).finish()
    }
}

impl Pool {
    /// A pool keeping `per_script` sandboxes waiting for each script it has been asked for.
    pub fn new(bwrap: &Path, limits: Limits, per_script: usize) -> Self {
        let (tx, rx) = mpsc::channel::<(PathBuf, bool)>();
        let inner = std::sync::Arc::new(PoolInner {
            bwrap: bwrap.to_owned(),
            limits,
            per_script,
            idle: Default::default(),
            refill: std::sync::Mutex::new(tx),
            busy: std::sync::Mutex::new((0, std::time::Instant::now())),
        });
        let weak = std::sync::Arc::downgrade(&inner);
        std::thread::Builder::new()
            .name("sandbox-pool".into())
            .spawn(move || {
                // Scripts whose used sandboxes wait to be replaced, since when.
                let mut deferred: Vec<PathBuf> = Vec::new();
                let mut since = std::time::Instant::now();
                loop {
                    let message = if deferred.is_empty() {
                        rx.recv().map_err(|_| mpsc::RecvTimeoutError::Disconnected)
                    } else {
                        rx.recv_timeout(Duration::from_millis(50))
                    };
                    let Some(inner) = weak.upgrade() else { break };
                    match message {
                        Ok((script, true)) => inner.top_up(&script),
                        Ok((script, false)) => {
                            if deferred.is_empty() {
                                since = std::time::Instant::now();
                            }
                            if !deferred.contains(&script) {
                                deferred.push(script);
                            }
                        }
                        Err(mpsc::RecvTimeoutError::Timeout) => {}
                        Err(mpsc::RecvTimeoutError::Disconnected) => break,
                    }
                    if !deferred.is_empty() && (inner.quiet() || since.elapsed() > MAX_QUIET_WAIT) {
                        for script in std::mem::take(&mut deferred) {
                            inner.top_up(&script);
                        }
                    }
                }
            })
            .expect("starting the sandbox pool thread");
        Pool { inner }
    }

    /// Where a run of `script` writes its config, with a waiting sandbox when one is ready.
    /// Call [`Self::replace`] once the runs are over.
    pub fn prepare(&self, script: &Path) -> std::io::Result<Prepared> {
        let id = FileId::of(script);
        let waiting = {
            let mut idle = self.inner.idle.lock().expect("pool lock");
            let list = idle.entry(script.to_owned()).or_default();
            // A sandbox started for an older version of the script is stopped (on drop).
            let stale: Vec<Waiting> = list.extract_if(.., |w| Some(&w.script) != id.as_ref()).collect();
            drop(stale);
            list.pop()
        };
        match waiting {
            Some(w) => Ok(Prepared::Waiting(w)),
            None => Prepared::fresh(&self.inner.bwrap, script),
        }
    }

    /// Has sandboxes for `script` started now (in the background) until `per_script` wait (at
    /// start-up).
    pub fn warm(&self, script: &Path) {
        let _ = self.inner.refill.lock().expect("pool lock").send((script.to_owned(), true));
    }

    /// Has the sandboxes used for `script` replaced once the server is quiet.
    pub fn replace(&self, script: &Path) {
        let _ = self.inner.refill.lock().expect("pool lock").send((script.to_owned(), false));
    }

    /// Marks a push in progress until the guard drops: used sandboxes are replaced between
    /// pushes, not during one (see [`QUIET`]).
    pub fn busy(&self) -> Busy {
        self.inner.busy.lock().expect("pool lock").0 += 1;
        Busy(self.inner.clone())
    }

    /// How many sandboxes are waiting for `script`.
    pub fn ready(&self, script: &Path) -> usize {
        self.inner.idle.lock().expect("pool lock").get(script).map_or(0, Vec::len)
    }
}

impl PoolInner {
    /// No push in progress, and none for [`QUIET`].
    fn quiet(&self) -> bool {
        let busy = self.busy.lock().expect("pool lock");
        busy.0 == 0 && busy.1.elapsed() >= QUIET
    }

    fn top_up(&self, script: &Path) {
        loop {
            {
                let idle = self.idle.lock().expect("pool lock");
                let have = idle.get(script).map_or(0, Vec::len);
                if have >= self.per_script
                    || (have == 0 && idle.values().filter(|v| !v.is_empty()).count() >= POOL_MAX_SCRIPTS)
                {
                    return;
                }
            }
            let Some(id) = FileId::of(script) else { return };
            let Ok(scratch) = scratch_dir() else { return };
            let started = match Started::spawn(&self.bwrap, script, scratch.path(), &self.limits, true) {
                Ok(s) => s,
                Err(outcome) => {
                    tracing::warn!(script = %script.display(), ?outcome, "cannot start a sandbox ahead of time");
                    return;
                }
            };
            let waiting = Waiting { scratch, script: id, started: Some(started) };
            self.idle.lock().expect("pool lock").entry(script.to_owned()).or_default().push(waiting);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let uid = unsafe { libc::getuid() };
        let parent = scratch_root().as_ref().unwrap().parent().unwrap().to_owned();
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
