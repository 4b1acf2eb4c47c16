//! What bounds a sandbox as a whole, beyond bubblewrap's namespaces: a cgroup per sandbox
//! (memory of all its processes and its `/tmp` together, and how many processes it may run at
//! once), rlimits set by the sandbox's own shell before validate.sh runs, and a seccomp filter
//! that bubblewrap installs just before it starts the script.
//!
//! What the host allows is probed once ([`host`]): cgroup v2 with `memory` and `pids`
//! delegated to devpop's cgroup, else cgroup v1 `memory` and `pids` hierarchies where devpop
//! may make child cgroups, else none (then RLIMIT_NPROC, counted in the sandbox's own user
//! namespace, bounds its processes, and RLIMIT_AS bounds each process's memory, not their sum);
//! and whether the kernel lets bubblewrap mount a fresh `/proc` (a container runtime that masks
//! parts of `/proc` makes it refuse). Each weaker choice is logged once, when probed.
//!
//! No code of ours runs between fork and exec: the limits are files of the cgroup (a small
//! shell wrapper moves itself into the cgroup, then execs bubblewrap with the seccomp programs
//! open as fds 3 and 4), and `ulimit` in the sandbox's shell.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use super::Limits;

/// bubblewrap's own processes in a sandbox's cgroup: the wrapper turned bubblewrap, and the
/// sandbox's pid 1. The script's shell and what it starts count against [`Limits::processes`].
const BWRAP_PROCESSES: u32 = 2;

/// What this host lets a sandbox have.
pub(super) struct Host {
    pub cgroups: Option<Cgroups>,
    /// Whether bubblewrap can mount a fresh `/proc` in the sandbox's pid namespace.
    pub fresh_proc: bool,
    /// The seccomp programs (the deny list; clone3 answered ENOSYS), written once into the
    /// scratch root, for bubblewrap's `--add-seccomp-fd`.
    pub seccomp: Option<[PathBuf; 2]>,
}

static HOST: OnceLock<Host> = OnceLock::new();

/// The host's abilities, probed the first time (the pool probes at start-up), and logged then.
pub(super) fn host(bwrap: &Path) -> &'static Host {
    HOST.get_or_init(|| Host::probe(bwrap))
}

impl Host {
    fn probe(bwrap: &Path) -> Self {
        let cgroups = Cgroups::probe();
        let fresh_proc = fresh_proc_works(bwrap);
        let seccomp = write_seccomp();
        let mut weaker = Vec::new();
        match &cgroups {
            Ok(c) => tracing::info!(
                cgroups = c.describe(),
                "validate.sh sandboxes: memory and processes bounded per sandbox by a cgroup"
            ),
            Err(why) => {
                let processes = if super::scratch::uid() == 0 {
                    "processes are not bounded (RLIMIT_NPROC is set, but the kernel exempts root, and devpop runs \
                     as root)"
                } else {
                    "processes are bounded by RLIMIT_NPROC, counted in each sandbox's own user namespace"
                };
                weaker.push(format!(
                    "no cgroup for the sandboxes ({why}): {processes}; memory is bounded by RLIMIT_AS per process \
                     only (not the processes' sum, nor /tmp)"
                ))
            }
        }
        if !fresh_proc {
            weaker.push(
                "the kernel refuses a fresh /proc (a container runtime masks parts of /proc): sandboxes run \
                 without /proc, so /dev/fd, /dev/stdin, /dev/stdout and /dev/stderr do not exist in them \
                 (no network, read-only config, nobody, no capabilities, the pid namespace and the limits stay)"
                    .to_owned(),
            );
        }
        if let Err(why) = &seccomp {
            weaker.push(format!("no seccomp filter ({why})"));
        }
        for w in &weaker {
            tracing::warn!("validate.sh sandboxes are weaker here: {w}");
        }
        Host { cgroups: cgroups.ok(), fresh_proc, seccomp: seccomp.ok() }
    }
}

/// Whether bubblewrap can set up a sandbox with a fresh `/proc` here: inside a container whose
/// runtime masks parts of `/proc` (bind mounts over `/proc/keys`, ...), the kernel refuses to
/// mount a procfs in a new user and pid namespace, and bwrap says `Can't mount proc`.
fn fresh_proc_works(bwrap: &Path) -> bool {
    let mut cmd = std::process::Command::new(bwrap);
    cmd.args(["--unshare-all", "--die-with-parent", "--cap-drop", "ALL"]);
    super::run::system_binds(&mut cmd);
    cmd.args(["--proc", "/proc", "true"]);
    match cmd.stdin(std::process::Stdio::null()).output() {
        Ok(out) => out.status.success() || !String::from_utf8_lossy(&out.stderr).contains("Can't mount proc"),
        // No bubblewrap: every run fails closed with its own message.
        Err(_) => true,
    }
}

/// Where devpop's cgroups are: its own cgroup in each hierarchy that has the controllers.
#[derive(Default)]
struct Located {
    /// devpop's cgroup in the unified (v2) hierarchy.
    v2: Option<PathBuf>,
    /// devpop's cgroup in the v1 hierarchies with the memory and the pids controller.
    memory: Option<PathBuf>,
    pids: Option<PathBuf>,
}

impl Located {
    fn find() -> Self {
        let mut found = Located::default();
        let (Ok(cgroup), Ok(mountinfo)) =
            (std::fs::read_to_string("/proc/self/cgroup"), std::fs::read_to_string("/proc/self/mountinfo"))
        else {
            return found;
        };
        // mountinfo: `id parent maj:min root mountpoint opts [optional...] - fstype source superopts`
        let mounts: Vec<(&str, &str, &str, Vec<&str>)> = mountinfo
            .lines()
            .filter_map(|l| {
                let (left, right) = l.split_once(" - ")?;
                let left: Vec<&str> = left.split(' ').collect();
                let mut right = right.split(' ');
                let fstype = right.next()?;
                let superopts = right.nth(1).unwrap_or("").split(',').collect();
                Some((fstype, *left.get(3)?, *left.get(4)?, superopts))
            })
            .filter(|(_, root, point, _)| !root.contains('\\') && !point.contains('\\'))
            .collect();
        let dir = |root: &str, point: &str, path: &str| -> Option<PathBuf> {
            let rel = if root == "/" { path } else { path.strip_prefix(root)? };
            Some(Path::new(point).join(rel.trim_start_matches('/')))
        };
        // /proc/self/cgroup: `hierarchy-id:controllers:path`; v2 is `0::path`.
        for line in cgroup.lines() {
            let mut parts = line.splitn(3, ':');
            let (Some(_), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next()) else { continue };
            if controllers.is_empty() {
                found.v2 = mounts.iter().find(|m| m.0 == "cgroup2").and_then(|m| dir(m.1, m.2, path));
                continue;
            }
            for (name, slot) in [("memory", &mut found.memory), ("pids", &mut found.pids)] {
                if controllers.split(',').any(|c| c == name) {
                    *slot = mounts
                        .iter()
                        .find(|m| m.0 == "cgroup" && m.3.contains(&name))
                        .and_then(|m| dir(m.1, m.2, path));
                }
            }
        }
        found
    }
}

/// This process's parent cgroups for its sandboxes.
pub(super) enum Cgroups {
    /// `<devpop's cgroup>/devpop-<uid>-<pid>`, with memory and pids enabled for its children.
    V2 { base: PathBuf },
    /// The same folder in the v1 memory and pids hierarchies.
    V1 { memory: PathBuf, pids: PathBuf },
}

static NEXT: AtomicU64 = AtomicU64::new(0);

impl Cgroups {
    pub(super) fn probe() -> Result<Self, String> {
        let located = Located::find();
        let name = super::scratch::root_name();
        let mut why = Vec::new();
        if let Some(ours) = &located.v2 {
            match Self::probe_v2(ours, &name) {
                Ok(c) => return Ok(c),
                Err(e) => why.push(format!("cgroup v2: {e}")),
            }
        }
        match (&located.memory, &located.pids) {
            (Some(memory), Some(pids)) => {
                let made = (|| -> std::io::Result<Self> {
                    let c = Cgroups::V1 { memory: make_dir(&memory.join(&name))?, pids: make_dir(&pids.join(&name))? };
                    drop(c.create(&Limits::default())?);
                    Ok(c)
                })();
                match made {
                    Ok(c) => return Ok(c),
                    Err(e) => why.push(format!("cgroup v1: cannot make child cgroups: {e}")),
                }
            }
            _ if located.v2.is_none() => why.push("no memory and pids cgroup hierarchy".into()),
            _ => {}
        }
        Err(why.join("; "))
    }

    fn probe_v2(ours: &Path, name: &str) -> std::io::Result<Self> {
        let enabled = |dir: &Path| {
            std::fs::read_to_string(dir.join("cgroup.subtree_control"))
                .is_ok_and(|s| ["memory", "pids"].iter().all(|c| s.split_whitespace().any(|w| w == *c)))
        };
        if !enabled(ours) {
            // Possible when devpop's cgroup holds no process (else the kernel says EBUSY).
            std::fs::write(ours.join("cgroup.subtree_control"), "+memory +pids").map_err(|e| {
                std::io::Error::new(e.kind(), format!("memory and pids are not delegated to devpop's cgroup ({e})"))
            })?;
        }
        let base = make_dir(&ours.join(name))?;
        std::fs::write(base.join("cgroup.subtree_control"), "+memory +pids")?;
        let c = Cgroups::V2 { base };
        drop(c.create(&Limits::default())?);
        Ok(c)
    }

    fn describe(&self) -> &'static str {
        match self {
            Cgroups::V2 { .. } => "v2",
            Cgroups::V1 { .. } => "v1",
        }
    }

    fn bases(&self) -> Vec<&Path> {
        match self {
            Cgroups::V2 { base } => vec![base],
            Cgroups::V1 { memory, pids } => vec![memory, pids],
        }
    }

    /// A new cgroup for one sandbox, its limits written.
    pub(super) fn create(&self, limits: &Limits) -> std::io::Result<Cgroup> {
        remove_finished();
        let n = NEXT.fetch_add(1, Ordering::Relaxed).to_string();
        let pids_max = (limits.processes + BWRAP_PROCESSES).to_string();
        let memory = limits.memory_bytes.to_string();
        let mut cgroup = Cgroup { dirs: Vec::new(), v2: matches!(self, Cgroups::V2 { .. }) };
        for base in self.bases() {
            let dir = base.join(&n);
            std::fs::create_dir(&dir)?;
            cgroup.dirs.push(dir);
        }
        match self {
            Cgroups::V2 { .. } => {
                let dir = &cgroup.dirs[0];
                std::fs::write(dir.join("memory.max"), &memory)?;
                let _ = std::fs::write(dir.join("memory.swap.max"), "0"); // absent without swap accounting
                std::fs::write(dir.join("pids.max"), &pids_max)?;
            }
            Cgroups::V1 { .. } => {
                std::fs::write(cgroup.dirs[0].join("memory.limit_in_bytes"), &memory)?;
                let _ = std::fs::write(cgroup.dirs[0].join("memory.memsw.limit_in_bytes"), &memory);
                std::fs::write(cgroup.dirs[1].join("pids.max"), &pids_max)?;
            }
        }
        Ok(cgroup)
    }
}

fn make_dir(dir: &Path) -> std::io::Result<PathBuf> {
    match std::fs::create_dir(dir) {
        Ok(()) => Ok(dir.to_owned()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(dir.to_owned()),
        Err(e) => Err(e),
    }
}

/// Which limit stopped a sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Hit {
    Memory,
    Processes,
}

/// One sandbox's cgroup (one folder per hierarchy), removed on drop: by then its processes are
/// gone (bubblewrap's monitor, reaped, outlives the sandbox's pid namespace).
pub(super) struct Cgroup {
    dirs: Vec<PathBuf>,
    v2: bool,
}

impl Cgroup {
    /// The files the wrapper writes itself into.
    pub(super) fn procs_files(&self) -> impl Iterator<Item = PathBuf> + '_ {
        self.dirs.iter().map(|d| d.join("cgroup.procs"))
    }

    /// Whether a limit was hit: the kernel killed a process for memory, or refused a fork.
    pub(super) fn hit(&self) -> Option<Hit> {
        let count = |file: PathBuf, key: &str| {
            std::fs::read_to_string(file).ok().and_then(|s| {
                s.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.trim().parse::<u64>().ok())
            })
        };
        let (memory, pids) = if self.v2 {
            (self.dirs[0].join("memory.events"), self.dirs[0].join("pids.events"))
        } else {
            (self.dirs[0].join("memory.oom_control"), self.dirs[1].join("pids.events"))
        };
        if count(memory, "oom_kill").unwrap_or(0) > 0 {
            Some(Hit::Memory)
        } else if count(pids, "max").unwrap_or(0) > 0 {
            Some(Hit::Processes)
        } else {
            None
        }
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        for dir in self.dirs.drain(..) {
            if let Err(e) = std::fs::remove_dir(&dir) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    let mut finished = FINISHED.lock().unwrap_or_else(|e| e.into_inner());
                    if finished.len() < MAX_FINISHED {
                        finished.push(dir);
                    }
                }
            }
        }
    }
}

/// Cgroups of finished sandboxes that were not empty yet: bubblewrap's monitor exits once it
/// has the sandbox's status, and the sandbox's pid 1 (a zombie by then, everything else in its
/// pid namespace gone) is reaped by the host's init a few milliseconds later. Removed before
/// the next sandbox's cgroup is made, and at shutdown.
static FINISHED: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());
/// Past this many (a host whose init does not reap), they are left to the shutdown.
const MAX_FINISHED: usize = 1024;

fn remove_finished() {
    let mut finished = FINISHED.lock().unwrap_or_else(|e| e.into_inner());
    finished.retain(|dir| std::fs::remove_dir(dir).is_err_and(|e| e.kind() != std::io::ErrorKind::NotFound));
}

/// Removes this process's sandbox cgroups (at shutdown).
pub(super) fn remove_cgroups() {
    remove_finished();
    if let Some(Host { cgroups: Some(c), .. }) = HOST.get() {
        for base in c.bases() {
            remove_cgroup_tree(base);
        }
    }
}

/// Removes the sandbox cgroups of devpop processes of this user that are gone.
pub(super) fn sweep_cgroups(alive: fn(i32) -> bool) {
    let located = Located::find();
    let prefix = format!("devpop-{}-", super::scratch::uid());
    for parent in [located.v2, located.memory, located.pids].into_iter().flatten() {
        let Ok(entries) = std::fs::read_dir(&parent) else { continue };
        for e in entries.flatten() {
            let name = e.file_name();
            let pid = name.to_str().and_then(|n| n.strip_prefix(&prefix)).and_then(|p| p.parse::<i32>().ok());
            if pid.is_some_and(|pid| !alive(pid)) {
                remove_cgroup_tree(&e.path());
            }
        }
    }
}

/// A cgroup folder holds only the kernel's files: its child cgroups go first, then itself.
fn remove_cgroup_tree(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                let _ = std::fs::remove_dir(e.path());
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}

/// The shell that starts bubblewrap when a sandbox has a cgroup or seccomp programs: it writes
/// itself into each `cgroup.procs` given before the first `--`, opens the seccomp programs
/// given between the two `--` as fds 3 and 4, and execs the rest (bubblewrap). Its errors name
/// no path.
pub(super) const ENTER: &str = r#"while [ "$1" != -- ]; do echo 0 2>/dev/null >"$1" || { echo "devpop: the sandbox cannot enter its cgroup" >&2; exit 126; }; shift; done; shift
if [ "$1" = -- ]; then shift; exec "$@"; fi
f=$1 g=$2; shift 3
{ [ -r "$f" ] && [ -r "$g" ]; } || { echo "devpop: the sandbox's seccomp filter is missing" >&2; exit 126; }
exec "$@" 3<"$f" 4<"$g""#;

/// What the sandbox's shell runs before validate.sh: no core files, the file size, each
/// process's address space and, without a cgroup, the number of processes (RLIMIT_NPROC counts
/// the sandbox user's processes in its own user namespace: bubblewrap's pid 1, the shell, and
/// what the script starts). `ulimit` sets both soft and hard limits, and the sandbox has no
/// capability to raise them again.
pub(super) fn ulimits(limits: &Limits, with_nproc: bool) -> String {
    let nproc = if with_nproc { format!("; ulimit -p {}", limits.processes + 1) } else { String::new() };
    format!(
        "{{ ulimit -c 0; ulimit -f {}; ulimit -v {}{nproc}; }} 2>/dev/null; ",
        (limits.tmp_bytes / 512).max(1),
        (limits.memory_bytes / 1024).max(1)
    )
}

/// The syscalls a validation script never needs, answered EPERM: tracing and reading other
/// processes, mounting, namespaces, kernel keyrings, BPF, perf, kernel modules and kexec,
/// io_uring (a second syscall surface), and changing the machine (clock, swap, reboot).
fn denied() -> Vec<i64> {
    #[allow(unused_mut)]
    let mut list = vec![
        libc::SYS_ptrace,
        libc::SYS_process_vm_readv,
        libc::SYS_process_vm_writev,
        libc::SYS_pidfd_getfd,
        libc::SYS_kcmp,
        libc::SYS_mount,
        libc::SYS_umount2,
        libc::SYS_pivot_root,
        libc::SYS_chroot,
        libc::SYS_open_tree,
        libc::SYS_move_mount,
        libc::SYS_fsopen,
        libc::SYS_fsconfig,
        libc::SYS_fsmount,
        libc::SYS_fspick,
        libc::SYS_mount_setattr,
        libc::SYS_unshare,
        libc::SYS_setns,
        libc::SYS_keyctl,
        libc::SYS_add_key,
        libc::SYS_request_key,
        libc::SYS_bpf,
        libc::SYS_perf_event_open,
        libc::SYS_userfaultfd,
        libc::SYS_kexec_load,
        libc::SYS_kexec_file_load,
        libc::SYS_init_module,
        libc::SYS_finit_module,
        libc::SYS_delete_module,
        libc::SYS_io_uring_setup,
        libc::SYS_io_uring_enter,
        libc::SYS_io_uring_register,
        libc::SYS_open_by_handle_at,
        libc::SYS_name_to_handle_at,
        libc::SYS_fanotify_init,
        libc::SYS_quotactl,
        libc::SYS_syslog,
        libc::SYS_acct,
        libc::SYS_swapon,
        libc::SYS_swapoff,
        libc::SYS_reboot,
        libc::SYS_settimeofday,
        libc::SYS_clock_settime,
        libc::SYS_clock_adjtime,
        libc::SYS_adjtimex,
        libc::SYS_sethostname,
        libc::SYS_setdomainname,
    ];
    #[cfg(target_arch = "x86_64")]
    list.extend([libc::SYS_iopl, libc::SYS_ioperm, libc::SYS_uselib]);
    list
}

/// clone(2) flags that make a namespace: a clone with any of them is answered EPERM.
const NAMESPACE_FLAGS: [u64; 8] = [
    libc::CLONE_NEWNS as u64,
    libc::CLONE_NEWCGROUP as u64,
    libc::CLONE_NEWUTS as u64,
    libc::CLONE_NEWIPC as u64,
    libc::CLONE_NEWUSER as u64,
    libc::CLONE_NEWPID as u64,
    libc::CLONE_NEWNET as u64,
    0x80, // CLONE_NEWTIME
];

/// The two seccomp programs, as bubblewrap reads them (an array of `struct sock_filter`): the
/// deny list (and clone with a namespace flag) answered EPERM; clone3, whose flags sit in
/// memory a filter cannot read, answered ENOSYS so that libc falls back to clone.
/// seccompiler (rust-vmm's, Firecracker's) builds them: the architecture check (another
/// architecture's syscalls kill the process) and the jump tables.
pub(super) fn seccomp_programs() -> Result<[Vec<u8>; 2], String> {
    use seccompiler::{SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule};
    let arch: seccompiler::TargetArch = std::env::consts::ARCH.try_into().map_err(|e| format!("{e}"))?;
    let err = |e: seccompiler::BackendError| e.to_string();
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = denied().into_iter().map(|nr| (nr, Vec::new())).collect();
    let clone_rules = NAMESPACE_FLAGS
        .iter()
        .map(|&flag| {
            SeccompRule::new(vec![SeccompCondition::new(
                0,
                SeccompCmpArgLen::Qword,
                SeccompCmpOp::MaskedEq(flag),
                flag,
            )
            .map_err(err)?])
            .map_err(err)
        })
        .collect::<Result<Vec<_>, _>>()?;
    rules.insert(libc::SYS_clone, clone_rules);
    let deny =
        SeccompFilter::new(rules, SeccompAction::Allow, SeccompAction::Errno(libc::EPERM as u32), arch).map_err(err)?;
    let clone3 = SeccompFilter::new(
        BTreeMap::from([(libc::SYS_clone3, Vec::new())]),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        arch,
    )
    .map_err(err)?;
    let mut deny: seccompiler::BpfProgram = deny.try_into().map_err(err)?;
    let clone3: seccompiler::BpfProgram = clone3.try_into().map_err(err)?;
    // x86_64's x32 syscalls carry bit 30 in their number, with the x86_64 architecture value:
    // a deny list must refuse them all (a kernel built with x32 would otherwise run them).
    #[cfg(target_arch = "x86_64")]
    {
        use seccompiler::sock_filter;
        const X32_BIT: u32 = 0x4000_0000;
        let prefix = [
            sock_filter { code: (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16, jt: 0, jf: 0, k: 0 },
            sock_filter { code: (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16, jt: 0, jf: 1, k: X32_BIT },
            sock_filter {
                code: (libc::BPF_RET | libc::BPF_K) as u16,
                jt: 0,
                jf: 0,
                k: libc::SECCOMP_RET_ERRNO | libc::EPERM as u32,
            },
        ];
        deny.splice(0..0, prefix);
    }
    let bytes = |program: &[seccompiler::sock_filter]| {
        program.iter().flat_map(|f| [&f.code.to_ne_bytes()[..], &[f.jt, f.jf], &f.k.to_ne_bytes()].concat()).collect()
    };
    Ok([bytes(&deny), bytes(&clone3)])
}

/// Writes the seccomp programs into the scratch root (once per process).
pub(super) fn write_seccomp() -> Result<[PathBuf; 2], String> {
    let [deny, clone3] = seccomp_programs()?;
    let root = super::scratch::scratch_root().as_ref().map_err(|e| format!("no scratch folder: {e}"))?;
    let files = [root.join("seccomp-deny.bpf"), root.join("seccomp-clone3.bpf")];
    for (file, program) in files.iter().zip([deny, clone3]) {
        std::fs::write(file, program).map_err(|e| format!("cannot write the filter: {e}"))?;
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sandbox_cgroups_of_dead_processes_are_swept() {
        let located = Located::find();
        let parent = [located.v2, located.memory, located.pids]
            .into_iter()
            .flatten()
            .next()
            .expect("this machine has a cgroup hierarchy devpop can use");
        let stale = parent.join(format!("devpop-{}-{}", super::super::scratch::uid(), i32::MAX));
        std::fs::create_dir_all(stale.join("7")).unwrap();
        sweep_cgroups(|_| false);
        assert!(!stale.exists(), "a dead process's sandbox cgroups are removed");
    }

    #[test]
    fn the_seccomp_programs_are_whole_bpf_instructions() {
        let [deny, clone3] = seccomp_programs().unwrap();
        assert!(deny.len() % 8 == 0 && clone3.len() % 8 == 0);
        // At least a test and a return per denied syscall, far fewer for clone3 alone.
        assert!(deny.len() / 8 > 2 * denied().len(), "{}", deny.len() / 8);
        assert!(clone3.len() < deny.len() / 4, "{} {}", clone3.len(), deny.len());
    }
}
