//! Sandboxes started ahead of time ([`Pool`]), and the run a push prepares ([`Prepared`]).

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use super::bounds;
use super::run::Started;
use super::scratch::scratch_dir;
use super::{run_validate, Limits, Outcome};

/// A sandbox that will never run (its script changed, or the pool is going away): stop it.
struct Unused(Started);

impl Drop for Unused {
    fn drop(&mut self) {
        self.0.go = None;
        self.0.kill();
        self.0.reap();
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
        // Probe (and log) what the host allows now, on the caller's thread, not in a thread that
        // runs the script: a caller may hold stderr meanwhile (`devpop validate` does).
        super::bounds::host(bwrap);
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
        let bwrap = bwrap.to_owned();
        std::thread::Builder::new()
            .name("sandbox-pool".into())
            .spawn(move || {
                // What the host allows, probed (and logged) once, at start-up.
                super::bounds::host(&bwrap);
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
            let started = match Started::spawn(
                bounds::host(&self.bwrap),
                &self.bwrap,
                script,
                scratch.path(),
                &self.limits,
                true,
            ) {
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
