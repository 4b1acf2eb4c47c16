//! Starting git service processes with `posix_spawn`, a push's hook channel placed at fd 3.
//!
//! A push's `git receive-pack` must get the hook channel as fd 3 (`hook::channel`). With
//! `std::process::Command` that takes a `pre_exec` closure, and any closure makes std `fork` the
//! whole server: the kernel copies the page tables of every mapping, and the server then takes a
//! copy-on-write fault for each page it writes while the child is on its way to exec. Measured
//! on the 2-core reference machine: 3.2 ms of CPU for fork + exec from a process with 40 MB
//! resident, 0.5 ms for `posix_spawn` (glibc clones with `CLONE_VM | CLONE_VFORK`: the child
//! shares the server's memory until it execs). The file actions of `posix_spawn` put the
//! descriptors in place, so nothing of ours runs in the child.
//!
//! What the child gets, like `std::process::Command` gives: its own process group (so a
//! time-out stops git and its helpers together), an empty signal mask, SIGPIPE at its default,
//! exactly the environment given, fds 0-2 (and 3) and nothing else (every descriptor the server
//! opens is close-on-exec).
//!
//! This is the only module that starts processes through libc directly.
#![allow(unsafe_code)] // posix_spawn has no safe wrapper in a well-kept crate; each call has its SAFETY note.

use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::ExitStatus;

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::net::unix::pipe;

/// What to start.
pub struct Spec<'a> {
    /// An absolute path: `posix_spawn` does not search PATH.
    pub program: &'a Path,
    /// The arguments after the program name.
    pub args: Vec<OsString>,
    /// The child's whole environment.
    pub env: Vec<(OsString, OsString)>,
    /// A pipe for stdin (else /dev/null).
    pub stdin: bool,
    /// Given to the child as fd 3.
    pub fd3: Option<OwnedFd>,
}

/// A started process: its pipes, and its exit.
pub struct Child {
    pid: libc::pid_t,
    /// Readable once the process has ended (Linux 5.3+; without it a blocking thread waits).
    pidfd: Option<AsyncFd<OwnedFd>>,
    status: Option<ExitStatus>,
    pub stdin: Option<pipe::Sender>,
    pub stdout: Option<pipe::Receiver>,
    pub stderr: Option<pipe::Receiver>,
}

fn cstring(s: &OsStr) -> io::Result<CString> {
    CString::new(s.as_bytes()).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL byte in an argument"))
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(rc))
    }
}

/// A pipe, both ends close-on-exec: `(read, write)`.
fn pipe_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?)
}

/// `fd` moved above 3 (close-on-exec), so placing 0-3 in the child cannot overwrite a source
/// before it is used.
fn above_three(fd: OwnedFd) -> io::Result<OwnedFd> {
    if fd.as_raw_fd() > 3 {
        return Ok(fd);
    }
    Ok(rustix::io::fcntl_dupfd_cloexec(&fd, 10)?)
}

/// `posix_spawn_file_actions_t`, destroyed on drop.
struct FileActions(Box<libc::posix_spawn_file_actions_t>);

impl FileActions {
    fn new() -> io::Result<Self> {
        // SAFETY: zeroed storage that posix_spawn_file_actions_init then initialises.
        let mut a = FileActions(Box::new(unsafe { std::mem::zeroed() }));
        // SAFETY: a valid pointer to storage for the actions.
        check(unsafe { libc::posix_spawn_file_actions_init(&mut *a.0) })?;
        Ok(a)
    }

    fn dup2(&mut self, fd: &OwnedFd, to: libc::c_int) -> io::Result<()> {
        // SAFETY: initialised actions; `fd` stays open until posix_spawn has run.
        check(unsafe { libc::posix_spawn_file_actions_adddup2(&mut *self.0, fd.as_raw_fd(), to) })
    }

    fn dev_null(&mut self, to: libc::c_int) -> io::Result<()> {
        // SAFETY: initialised actions; the path is a static NUL-terminated string.
        check(unsafe {
            libc::posix_spawn_file_actions_addopen(&mut *self.0, to, c"/dev/null".as_ptr(), libc::O_RDONLY, 0)
        })
    }
}

impl Drop for FileActions {
    fn drop(&mut self) {
        // SAFETY: initialised in `new`, destroyed once.
        unsafe { libc::posix_spawn_file_actions_destroy(&mut *self.0) };
    }
}

/// `posix_spawnattr_t`, destroyed on drop: a new process group, an empty signal mask and
/// SIGPIPE at its default (the server ignores it; an ignored signal would stay ignored in git).
struct Attributes(Box<libc::posix_spawnattr_t>);

impl Attributes {
    fn new() -> io::Result<Self> {
        // SAFETY: zeroed storage that posix_spawnattr_init then initialises.
        let mut a = Attributes(Box::new(unsafe { std::mem::zeroed() }));
        // SAFETY: pointers to initialised attributes and to local signal sets.
        unsafe {
            check(libc::posix_spawnattr_init(&mut *a.0))?;
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            check(libc::posix_spawnattr_setsigmask(&mut *a.0, &set))?;
            libc::sigaddset(&mut set, libc::SIGPIPE);
            check(libc::posix_spawnattr_setsigdefault(&mut *a.0, &set))?;
            check(libc::posix_spawnattr_setpgroup(&mut *a.0, 0))?;
            let flags = libc::POSIX_SPAWN_SETPGROUP | libc::POSIX_SPAWN_SETSIGMASK | libc::POSIX_SPAWN_SETSIGDEF;
            check(libc::posix_spawnattr_setflags(&mut *a.0, flags as libc::c_short))?;
        }
        Ok(a)
    }
}

impl Drop for Attributes {
    fn drop(&mut self) {
        // SAFETY: initialised in `new`, destroyed once.
        unsafe { libc::posix_spawnattr_destroy(&mut *self.0) };
    }
}

/// Starts `spec`. Must run inside the tokio runtime (the pipes register with it).
pub fn spawn(spec: Spec<'_>) -> io::Result<Child> {
    let program = cstring(spec.program.as_os_str())?;
    let mut argv_owned = vec![program.clone()];
    for a in &spec.args {
        argv_owned.push(cstring(a)?);
    }
    let mut envp_owned = Vec::with_capacity(spec.env.len());
    for (k, v) in &spec.env {
        let mut entry = k.clone();
        entry.push("=");
        entry.push(v);
        envp_owned.push(cstring(&entry)?);
    }
    let argv: Vec<*mut libc::c_char> =
        argv_owned.iter().map(|c| c.as_ptr().cast_mut()).chain(std::iter::once(std::ptr::null_mut())).collect();
    let envp: Vec<*mut libc::c_char> =
        envp_owned.iter().map(|c| c.as_ptr().cast_mut()).chain(std::iter::once(std::ptr::null_mut())).collect();

    let mut actions = FileActions::new()?;
    let stdin = if spec.stdin { Some(pipe_pair()?) } else { None };
    let (out_r, out_w) = pipe_pair()?;
    let (err_r, err_w) = pipe_pair()?;
    let (in_r, in_w) = match stdin {
        Some((r, w)) => (Some(above_three(r)?), Some(w)),
        None => (None, None),
    };
    let (out_w, err_w) = (above_three(out_w)?, above_three(err_w)?);
    let fd3 = spec.fd3.map(above_three).transpose()?;
    match &in_r {
        Some(r) => actions.dup2(r, 0)?,
        None => actions.dev_null(0)?,
    }
    actions.dup2(&out_w, 1)?;
    actions.dup2(&err_w, 2)?;
    if let Some(fd) = &fd3 {
        actions.dup2(fd, 3)?;
    }
    let attributes = Attributes::new()?;
    // The server's ends, registered with the runtime before the child exists: nothing can fail
    // after it is started but before it is owned by a `Child`.
    let stdin = in_w.map(pipe::Sender::from_owned_fd).transpose()?;
    let stdout = Some(pipe::Receiver::from_owned_fd(out_r)?);
    let stderr = Some(pipe::Receiver::from_owned_fd(err_r)?);

    let mut pid: libc::pid_t = 0;
    // SAFETY: every pointer is valid for the call: the NUL-terminated argv/envp arrays point
    // into `argv_owned`/`envp_owned`, and the actions and attributes are initialised.
    check(unsafe {
        libc::posix_spawn(&mut pid, program.as_ptr(), &*actions.0, &*attributes.0, argv.as_ptr(), envp.as_ptr())
    })?;
    // The child's ends (in_r, out_w, err_w, fd3) close here, in the server.
    drop((in_r, out_w, err_w, fd3));
    Ok(Child { pid, pidfd: pidfd(pid), status: None, stdin, stdout, stderr })
}

/// A pidfd for `pid`, registered with the runtime; `None` where the kernel has none.
fn pidfd(pid: libc::pid_t) -> Option<AsyncFd<OwnedFd>> {
    let pid = rustix::process::Pid::from_raw(pid)?;
    let fd = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).ok()?;
    // SAFETY: an OwnedFd keeps its descriptor open and unchanged for as long as the AsyncFd
    // holds it, which is what registering it requires.
    unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE).ok() }
}

/// Reaps `pid` if it has ended (`block`: waits for it).
fn reap(pid: libc::pid_t, block: bool) -> io::Result<Option<ExitStatus>> {
    use rustix::process::{Pid, WaitOptions};
    let pid = Pid::from_raw(pid).ok_or_else(|| io::Error::other("no such child"))?;
    let flags = if block { WaitOptions::empty() } else { WaitOptions::NOHANG };
    loop {
        match rustix::process::waitpid(Some(pid), flags) {
            Ok(None) => return Ok(None),
            Ok(Some((_, status))) => return Ok(Some(ExitStatus::from_raw(status.as_raw()))),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

impl Child {
    pub fn id(&self) -> u32 {
        self.pid as u32
    }

    /// Waits for the process to end (and reaps it).
    pub async fn wait(&mut self) -> io::Result<ExitStatus> {
        if let Some(status) = self.status {
            return Ok(status);
        }
        let pid = self.pid;
        let status = match &self.pidfd {
            Some(fd) => loop {
                let mut ready = fd.readable().await?;
                if let Some(status) = reap(pid, false)? {
                    break status;
                }
                ready.clear_ready();
            },
            None => tokio::task::spawn_blocking(move || reap(pid, true))
                .await
                .map_err(io::Error::other)??
                .ok_or_else(|| io::Error::other("waitpid returned no status"))?,
        };
        self.status = Some(status);
        Ok(status)
    }
}

impl Drop for Child {
    /// A child dropped before it was waited for is reaped in the background (no zombies).
    fn drop(&mut self) {
        if self.status.is_none() {
            let pid = self.pid;
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn_blocking(move || reap(pid, true));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn sh(script: &str, stdin: bool, fd3: Option<OwnedFd>) -> Child {
        spawn(Spec {
            program: Path::new("/bin/sh"),
            args: vec!["-c".into(), script.into()],
            env: vec![("GREETING".into(), "hello".into())],
            stdin,
            fd3,
        })
        .unwrap()
    }

    #[tokio::test]
    async fn the_child_gets_its_pipes_fd3_and_exactly_the_environment_given() {
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        let mut child = sh(
            "read -r line; echo \"$line $GREETING\"; echo oops >&2; echo via-fd3 >&3; env | wc -l; exit 7",
            true,
            Some(theirs.into()),
        );
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"well\n").await.unwrap();
        drop(stdin);
        let mut out = String::new();
        child.stdout.take().unwrap().read_to_string(&mut out).await.unwrap();
        let mut err = String::new();
        child.stderr.take().unwrap().read_to_string(&mut err).await.unwrap();
        let status = child.wait().await.unwrap();
        assert_eq!(status.code(), Some(7));
        // sh adds PWD (and may add SHLVL, _): the server's own environment is not there.
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "well hello");
        assert!(lines[1].trim().parse::<u32>().unwrap() <= 4, "{out}");
        assert_eq!(err, "oops\n");
        let mut fd3 = String::new();
        std::io::Read::read_to_string(&mut &ours, &mut fd3).unwrap();
        assert_eq!(fd3, "via-fd3\n", "fd 3 reaches the child, and only the child holds it");
    }

    #[tokio::test]
    async fn the_child_leads_its_own_process_group_with_sigpipe_at_default_and_stdin_null() {
        let mut child = sh(
            "read -r _ _ _ _ group _ </proc/$$/stat; echo $group; grep SigIgn /proc/$$/status; cat; echo end",
            false,
            None,
        );
        let mut out = String::new();
        child.stdout.take().unwrap().read_to_string(&mut out).await.unwrap();
        assert!(child.wait().await.unwrap().success());
        let mut lines = out.lines();
        assert_eq!(lines.next().unwrap().trim(), child.id().to_string(), "its own group");
        let ignored = u64::from_str_radix(lines.next().unwrap().split_whitespace().nth(1).unwrap(), 16).unwrap();
        assert_eq!(ignored & (1 << (libc::SIGPIPE - 1)), 0, "SIGPIPE is not ignored");
        assert_eq!(lines.next(), Some("end"), "stdin is /dev/null: cat ends at once");
    }

    #[tokio::test]
    async fn a_missing_program_is_an_error_not_a_child() {
        let e =
            spawn(Spec { program: Path::new("/nonexistent/git"), args: vec![], env: vec![], stdin: false, fd3: None });
        assert_eq!(e.err().unwrap().kind(), io::ErrorKind::NotFound);
    }
}
