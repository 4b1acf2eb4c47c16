//! Starting one sandbox (the bubblewrap command line, its cgroup, its seccomp programs) and
//! collecting its verdict within the time and output limits.

use std::ffi::OsString;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;

use super::bounds::{self, Cgroup, Hit, Host};
use super::{Limits, Outcome, CONFIG_MOUNT, SCRIPT_MOUNT};

/// Adds the read-only system folders a script's tools need: `/usr`, and the top-level links or
/// folders into it (`/bin`, `/lib`, ...).
pub(super) fn system_binds(cmd: &mut Command) {
    let mut args = Vec::new();
    push_system_binds(&mut args);
    cmd.args(args);
}

fn push_system_binds(args: &mut Vec<OsString>) {
    let mut add = |parts: &[&std::ffi::OsStr]| args.extend(parts.iter().map(|p| p.to_os_string()));
    add(&["--ro-bind".as_ref(), "/usr".as_ref(), "/usr".as_ref()]);
    for top in ["/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"] {
        match std::fs::read_link(top) {
            Ok(target) => add(&["--symlink".as_ref(), target.as_os_str(), top.as_ref()]),
            Err(_) if Path::new(top).is_dir() => add(&["--ro-bind".as_ref(), top.as_ref(), top.as_ref()]),
            Err(_) => {}
        }
    }
}

/// bubblewrap's arguments: the sandbox described at the top of this module, running the shell
/// command `inner` in it.
fn bwrap_args(script: &Path, config_dir: &Path, inner: &str, limits: &Limits, host: &Host) -> Vec<OsString> {
    let mut args: Vec<OsString> = Vec::new();
    let mut add = |parts: &[&str]| args.extend(parts.iter().map(OsString::from));
    add(&["--unshare-all", "--uid", "65534", "--gid", "65534", "--die-with-parent", "--new-session"]);
    add(&["--cap-drop", "ALL"]);
    push_system_binds(&mut args);
    let mut add = |parts: &[&str]| args.extend(parts.iter().map(OsString::from));
    // Debian's alternatives (awk, ...) are symlinks into /etc/alternatives; nothing else of /etc.
    if Path::new("/etc/alternatives").is_dir() {
        add(&["--ro-bind", "/etc/alternatives", "/etc/alternatives"]);
    }
    // A minimal /dev: the three devices scripts use and, with a /proc, the usual fd links (a
    // full `--dev` costs about 1 ms more per sandbox, measured with hyperfine).
    for dev in ["/dev/null", "/dev/zero", "/dev/urandom"] {
        add(&["--dev-bind", dev, dev]);
    }
    if host.fresh_proc {
        add(&["--proc", "/proc"]);
        for (target, link) in [
            ("/proc/self/fd", "/dev/fd"),
            ("/proc/self/fd/0", "/dev/stdin"),
            ("/proc/self/fd/1", "/dev/stdout"),
            ("/proc/self/fd/2", "/dev/stderr"),
        ] {
            add(&["--symlink", target, link]);
        }
    }
    let tmp = limits.tmp_bytes.to_string();
    add(&["--size", &tmp, "--tmpfs", "/tmp"]);
    args.extend(["--ro-bind".into(), config_dir.into(), CONFIG_MOUNT.into()]);
    args.extend(["--ro-bind".into(), script.into(), SCRIPT_MOUNT.into()]);
    let mut add = |parts: &[&str]| args.extend(parts.iter().map(OsString::from));
    // Last of the mounts: the root (bubblewrap's tmpfs, holding the mount points) read-only.
    // Writable: /tmp only, bounded by its size and the cgroup's memory.
    add(&["--remount-ro", "/"]);
    add(&["--chdir", CONFIG_MOUNT, "--clearenv"]);
    for (k, v) in [
        ("PATH", "/usr/local/bin:/usr/bin:/bin"),
        ("HOME", "/tmp"),
        ("TMPDIR", "/tmp"),
        ("LC_ALL", "C.UTF-8"),
        ("PROXY_CONFIG_DIR", CONFIG_MOUNT),
    ] {
        add(&["--setenv", k, v]);
    }
    if host.seccomp.is_some() {
        add(&["--add-seccomp-fd", "3", "--add-seccomp-fd", "4"]);
    }
    let inner = format!("{}{inner}", bounds::ulimits(limits, host.cgroups.is_none()));
    add(&["/bin/sh", "-c", &inner]);
    args
}

/// The command that starts the sandbox: bubblewrap, or the [`bounds::ENTER`] wrapper that
/// first puts itself into the sandbox's cgroup and opens the seccomp programs.
fn command(
    host: &Host,
    bwrap: &Path,
    script: &Path,
    config_dir: &Path,
    inner: &str,
    limits: &Limits,
) -> std::io::Result<(Command, Option<Cgroup>)> {
    let args = bwrap_args(script, config_dir, inner, limits, host);
    let cgroup = host.cgroups.as_ref().map(|c| c.create(limits)).transpose()?;
    if cgroup.is_none() && host.seccomp.is_none() {
        let mut cmd = Command::new(bwrap);
        cmd.args(args);
        return Ok((cmd, None));
    }
    let mut cmd = Command::new("/bin/sh");
    cmd.args(["-c", bounds::ENTER, "devpop-sandbox"]);
    cmd.args(cgroup.iter().flat_map(Cgroup::procs_files));
    cmd.arg("--");
    if let Some(files) = &host.seccomp {
        cmd.args(files);
    }
    cmd.arg("--").arg(bwrap).args(args);
    Ok((cmd, cgroup))
}

/// What a sandbox started ahead of time runs: a shell that waits for the word `go` on stdin,
/// then runs validate.sh itself (with stdin at /dev/null, as if started then), so the run
/// costs no exec; the shell's exit status is the script's. Anything else, or the pipe
/// closing, ends it without running the script.
const WAIT_THEN_VALIDATE: &str =
    "read -r go && [ \"$go\" = go ] || exit 125; exec </dev/null; . /opt/section/validate.sh";
/// What a sandbox started for a run at once runs.
const VALIDATE: &str = ". /opt/section/validate.sh";

/// A started sandbox: its process, the pipe its output comes through, its cgroup and, for one
/// started ahead of time, the pipe that lets it go.
pub(super) struct Started {
    child: std::process::Child,
    output: std::io::PipeReader,
    pub(super) go: Option<std::io::PipeWriter>,
    cgroup: Option<Cgroup>,
    /// Server paths a pusher must not see, and what replaces them in the output.
    hide: Vec<(String, &'static str)>,
}

impl Started {
    /// Starts bwrap on a host with the abilities `host` says (`bounds::host(bwrap)`: this one);
    /// with `wait`, the sandbox is set up but validate.sh runs only at [`Self::go`].
    pub(super) fn spawn(
        host: &Host,
        bwrap: &Path,
        script: &Path,
        config_dir: &Path,
        limits: &Limits,
        wait: bool,
    ) -> Result<Self, Outcome> {
        let cannot = |what: &str, e: std::io::Error| Outcome::CannotRun(format!("{what}: {e}"));
        let inner = if wait { WAIT_THEN_VALIDATE } else { VALIDATE };
        let (mut cmd, cgroup) = command(host, bwrap, script, config_dir, inner, limits)
            .map_err(|e| cannot("cannot make the sandbox's cgroup", e))?;
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
        // No pre_exec: std starts it with posix_spawn (no fork of the server).
        cmd.process_group(0);
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
        let hide = vec![
            (config_dir.to_string_lossy().into_owned(), CONFIG_MOUNT),
            (script.to_string_lossy().into_owned(), SCRIPT_MOUNT),
            (super::scratch::root_name(), "scratch"),
        ];
        Ok(Started { child, output, go, cgroup, hide })
    }

    pub(super) fn kill(&self) {
        kill_group(self.child.id() as libc::pid_t);
    }

    /// Waits for a sandbox that will never run (its `go` pipe closed).
    pub(super) fn reap(&mut self) {
        let _ = self.child.wait();
    }

    /// Lets a waiting sandbox run validate.sh, then collects it like [`Self::finish`].
    pub(super) fn go(mut self, limits: &Limits) -> Outcome {
        use std::io::Write;
        let sent = self.go.take().map(|mut w| w.write_all(b"go\n"));
        match sent {
            Some(Err(e)) => {
                let outcome = self.finish(limits);
                Outcome::CannotRun(format!("the sandbox stopped before validate.sh ran ({e}): {}", outcome.output()))
            }
            _ => self.finish(limits),
        }
    }

    /// Waits for the script, enforcing the time and output limits; stdout and stderr merged.
    pub(super) fn finish(mut self, limits: &Limits) -> Outcome {
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
                            kill_group(pgid);
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
            kill_group(pgid);
        }
        let (out, too_large) = reader_thread.join().unwrap_or_default();
        let status = self.child.wait();
        let hit = self.cgroup.as_ref().and_then(Cgroup::hit);
        let mut output = String::from_utf8_lossy(&out).into_owned();
        for (path, shown) in &self.hide {
            if !path.is_empty() && output.contains(path.as_str()) {
                output = output.replace(path.as_str(), shown);
            }
        }
        match status {
            _ if hit == Some(Hit::Memory) => Outcome::Failed {
                status: format!(
                    "hit the sandbox's memory limit ({} MiB for all its processes and /tmp together) and a process was killed",
                    limits.memory_bytes >> 20
                ),
                output,
            },
            _ if hit == Some(Hit::Processes) => Outcome::Failed {
                status: format!(
                    "hit the sandbox's limit of {} processes at once (a fork was refused)",
                    limits.processes
                ),
                output,
            },
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

/// Stops bubblewrap's process group; the sandbox (its own session) follows through
/// `--die-with-parent`, and everything in its pid namespace with its pid 1.
fn kill_group(pgid: libc::pid_t) {
    // The group of a child we spawned and have not reaped: its id is not reused meanwhile.
    if let Some(pgid) = rustix::process::Pid::from_raw(pgid) {
        let _ = rustix::process::kill_process_group(pgid, rustix::process::Signal::KILL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The wrapper starts bubblewrap with or without a cgroup and with or without the seccomp
    /// programs (a host may lack either).
    #[test]
    fn a_sandbox_starts_with_or_without_a_cgroup_and_seccomp() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("validate.sh");
        std::fs::write(&script, "unshare -U true 2>/dev/null && echo unshared; exit 3").unwrap();
        let limits = Limits::default();
        for (cgroups, seccomp) in [(true, true), (true, false), (false, true), (false, false)] {
            let host = Host {
                cgroups: if cgroups { Some(bounds::Cgroups::probe().expect("a cgroup here")) } else { None },
                fresh_proc: true,
                seccomp: if seccomp { Some(bounds::write_seccomp().unwrap()) } else { None },
            };
            let out =
                Started::spawn(&host, Path::new("bwrap"), &script, dir.path(), &limits, false).unwrap().finish(&limits);
            let output = if seccomp { "" } else { "unshared\n" };
            assert_eq!(
                out,
                Outcome::Failed { status: "exited 3".into(), output: output.into() },
                "cgroup {cgroups}, seccomp {seccomp}"
            );
        }
    }

    /// Where the host has no usable cgroup, RLIMIT_NPROC (set by the sandbox's shell, counted in
    /// its own user namespace) still stops a fork loop, and RLIMIT_AS a large allocation. The
    /// kernel exempts root from RLIMIT_NPROC, and the sandbox's user is devpop's user outside
    /// it: this holds for a devpop that does not run as root (as the install manifest runs it),
    /// so bubblewrap runs here as nobody.
    #[test]
    fn without_a_cgroup_rlimits_bound_processes_and_memory_for_a_non_root_devpop() {
        use std::os::unix::fs::PermissionsExt;
        let host = Host { cgroups: None, fresh_proc: true, seccomp: None };
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let bwrap = dir.path().join("bwrap-as-nobody");
        std::fs::write(&bwrap, "#!/bin/sh\nexec setpriv --reuid=65534 --regid=65534 --clear-groups bwrap \"$@\"\n")
            .unwrap();
        std::fs::set_permissions(&bwrap, std::fs::Permissions::from_mode(0o755)).unwrap();
        let script = dir.path().join("validate.sh");
        let limits = Limits { processes: 10, memory_bytes: 64 << 20, ..Limits::default() };
        let run = |body: &str| {
            std::fs::write(&script, body).unwrap();
            std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o644)).unwrap();
            Started::spawn(&host, &bwrap, &script, dir.path(), &limits, false).unwrap().finish(&limits)
        };
        let out = run("n=0; while [ $n -lt 100 ]; do sleep 1000 & n=$((n+1)); done; echo all-started");
        let Outcome::Failed { status, output } = &out else { panic!("{out:?}") };
        assert_eq!(status, "exited 2", "{output}");
        assert!(output.contains("Cannot fork") && !output.contains("all-started"), "{output}");
        let out = run("python3 -c 'x = bytearray(200 << 20)' 2>&1");
        assert!(matches!(&out, Outcome::Failed { output, .. } if output.contains("MemoryError")), "{out:?}");
    }
}
