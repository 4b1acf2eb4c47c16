//! The validate.sh sandbox bounded as a whole, driving the real bubblewrap: its root is
//! read-only and only a size-limited /tmp is writable, a cgroup bounds its processes and their
//! memory together, a seccomp filter refuses the syscalls a validation never needs, and inside a
//! container that masks parts of /proc (a fresh procfs refused) it still runs.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use devpop::sandbox::{run_validate, Limits, Outcome, Pool};

/// A validate.sh with `body`, and a config folder with one file.
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

/// No server path (scratch folders, the data dir) in what a pusher sees.
fn assert_no_server_paths(output: &str, data: &Path) {
    let scratch_root =
        output.match_indices("devpop-").any(|(i, m)| output[i + m.len()..].starts_with(|c: char| c.is_ascii_digit()));
    assert!(!output.contains("/dev/shm") && !scratch_root, "a scratch path leaked:\n{output}");
    assert!(!output.contains(&*data.to_string_lossy()), "the data dir leaked:\n{output}");
}

#[test]
fn writing_beyond_the_tmp_size_or_anywhere_but_tmp_fails() {
    let limits = Limits { tmp_bytes: 4 << 20, ..Limits::default() };
    let out = run(
        "head -c 3000000 /dev/zero > /tmp/a && echo wrote-a; \
         head -c 3000000 /dev/zero > /tmp/b && echo wrote-b; \
         echo tmp-total=$(cat /tmp/a /tmp/b | wc -c); \
         echo x > /etc/passwd && echo wrote-etc; mkdir /etc/x && echo mkdir-etc; \
         echo x > /x && echo wrote-root; mkdir /opt/x && echo mkdir-opt; \
         echo x > /usr/x && echo wrote-usr; exit 0",
        &limits,
    );
    let Outcome::Passed { output } = out else { panic!("{out:?}") };
    assert!(output.contains("wrote-a"), "the first 3 MB fit in /tmp:\n{output}");
    assert!(!output.contains("wrote-b"), "/tmp holds no more than its size:\n{output}");
    let total: u64 = output.lines().find_map(|l| l.strip_prefix("tmp-total=")).unwrap().trim().parse().unwrap();
    assert!(total <= 4 << 20, "{total} bytes in a 4 MiB /tmp");
    for wrote in ["wrote-etc", "mkdir-etc", "wrote-root", "mkdir-opt", "wrote-usr"] {
        assert!(!output.contains(wrote), "{wrote}: the sandbox's root must be read-only:\n{output}");
    }
    assert!(output.contains("Read-only file system"), "{output}");
}

#[test]
fn a_fork_bomb_is_stopped_by_the_process_limit_and_the_push_is_rejected_saying_so() {
    let devpop = Devpop::start_with(&["--validate-processes", "20", "--validate-timeout", "60s"]);
    let repo = probe_case(&devpop, "echo starting >&2; while :; do sleep 1000 & done");
    let (ok, output) = push_tree(&devpop, "bomb", repo.path(), "Production");
    assert!(!ok, "{output}");
    assert!(
        output.contains(
            "remote: error: proxy probe: validate.sh hit the sandbox's limit of 20 processes at once (a fork was refused):"
        ),
        "{output}"
    );
    assert!(output.contains("remote:   starting"), "{output}");
    assert!(!output.contains("did not finish"), "stopped by the limit, not the time-out:\n{output}");
    assert_no_server_paths(&output, devpop.data.path());
}

#[test]
fn several_processes_together_cannot_exceed_the_sandbox_memory_limit() {
    // Four processes of 100 MB each, under a 256 MiB limit: each alone fits (and would under a
    // per-process limit), all four cannot.
    let limits = Limits { memory_bytes: 256 << 20, timeout: Duration::from_secs(60), ..Limits::default() };
    let out = run(
        r#"python3 - <<'EOF'
import os, queue, threading
events = queue.Queue()
ready_r, ready_w = os.pipe()
hold_r, hold_w = os.pipe()
for _ in range(4):
    if os.fork() == 0:
        block = bytearray(100 << 20)
        for i in range(0, len(block), 4096):
            block[i] = 1
        os.write(ready_w, b"x")
        os.read(hold_r, 1)
        os._exit(0)
os.close(ready_w)
def held():
    n = 0
    while n < 4 and os.read(ready_r, 1):
        n += 1
    events.put("held %d" % n)
def died():
    os.wait()
    events.put("a process died")
threading.Thread(target=held, daemon=True).start()
threading.Thread(target=died, daemon=True).start()
print(events.get(), flush=True)
EOF"#,
        &limits,
    );
    let Outcome::Failed { status, output } = &out else { panic!("all four held their memory: {out:?}") };
    assert!(!output.contains("held 4"), "{output}");
    assert_eq!(
        status,
        "hit the sandbox's memory limit (256 MiB for all its processes and /tmp together) and a process was killed",
        "{output}"
    );
}

#[test]
fn syscalls_the_filter_denies_fail_and_ordinary_ones_work() {
    let out = run(
        r#"unshare -U true 2>&1 && echo UNSHARE-WORKED
unshare -n true 2>&1 && echo NETNS-WORKED
python3 -c '
import ctypes, os, threading
libc = ctypes.CDLL(None, use_errno=True)
# syscall numbers of x86_64: clone 56, keyctl 250, bpf 321
print("ptrace", libc.ptrace(0, 0, 0, 0), os.strerror(ctypes.get_errno()))
# clone with CLONE_NEWUSER (0x10000000) | SIGCHLD
print("clone-newuser", libc.syscall(56, 0x10000000 | 17, 0, 0, 0, 0), os.strerror(ctypes.get_errno()))
print("keyctl", libc.syscall(250, 0, 0, 0, 0, 0), os.strerror(ctypes.get_errno()))
print("bpf", libc.syscall(321, 0, 0, 0), os.strerror(ctypes.get_errno()))
t = threading.Thread(target=print, args=("a thread works",)); t.start(); t.join()
if os.fork() == 0: os._exit(0)
print("fork works", os.wait()[1])
'"#,
        &Limits::default(),
    );
    let Outcome::Passed { output } = out else { panic!("{out:?}") };
    assert!(!output.contains("UNSHARE-WORKED") && !output.contains("NETNS-WORKED"), "{output}");
    assert!(output.contains("unshare failed: Operation not permitted"), "{output}");
    for line in ["ptrace -1 Operation not permitted", "clone-newuser -1 Operation not permitted"] {
        assert!(output.contains(line), "{line}:\n{output}");
    }
    assert!(output.contains("keyctl -1 Operation not permitted") && output.contains("bpf -1 Operation not permitted"));
    assert!(output.contains("a thread works") && output.contains("fork works 0"), "{output}");
}

#[test]
fn a_pusher_never_sees_the_servers_scratch_paths() {
    let devpop = Devpop::start();
    // The mount table names the scratch folder the module folder is bound from.
    let repo = probe_case(&devpop, "cat /proc/self/mountinfo >&2; exit 1");
    let (ok, output) = push_tree(&devpop, "paths", repo.path(), "Production");
    assert!(!ok);
    assert!(output.contains("/opt/proxy_config"), "{output}");
    assert_no_server_paths(&output, devpop.data.path());
}

/// Runs the server inside a new mount namespace where one bind mount covers `/proc/keys`, as
/// container runtimes mask parts of /proc: the kernel then refuses a fresh procfs in a new
/// user and pid namespace (`bwrap: Can't mount proc on /newroot/proc: Operation not permitted`).
const MASKED_PROC: [&str; 5] = ["unshare", "-m", "sh", "-c", "mount --bind /dev/null /proc/keys && exec \"$0\" \"$@\""];

#[test]
fn under_a_masked_proc_bubblewrap_alone_fails_as_the_issue_says() {
    // The reproduction itself, so the next test cannot pass by not reproducing anything.
    let out = Command::new(MASKED_PROC[0])
        .args(&MASKED_PROC[1..])
        .args(["bwrap", "--unshare-all", "--ro-bind", "/usr", "/usr", "--proc", "/proc", "/usr/bin/true"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("bwrap: Can't mount proc on /newroot/proc: Operation not permitted"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn under_a_masked_proc_a_push_with_modules_passes_and_a_failing_validate_sh_still_fails() {
    let devpop = Devpop::start_under(&MASKED_PROC, tempfile::tempdir().unwrap(), &[]);
    let (ok, output) = push_tree(&devpop, "sample", &fixture("repos/sample-application"), "Production");
    assert!(ok, "{output}");
    assert!(output.contains("remote: Validating configuration for proxy example..."), "{output}");
    assert!(!output.contains("error"), "{output}");

    // Still no network, nobody, a read-only config and root, no /proc of the host.
    let repo = probe_case(
        &devpop,
        "python3 -c 'import socket; socket.create_connection((\"127.0.0.1\", 1), timeout=2)' 2>/dev/null && echo NETWORK; \
         id -u; touch /opt/proxy_config/x 2>/dev/null && echo WROTE-CONFIG; touch /x 2>/dev/null && echo WROTE-ROOT; \
         ls /proc 2>/dev/null | head -n 3; echo invalid >&2; exit 1",
    );
    let (ok, output) = push_tree(&devpop, "failing", repo.path(), "Production");
    assert!(!ok, "{output}");
    assert!(output.contains("remote: error: proxy probe: validate.sh exited 1:"), "{output}");
    let lines: Vec<&str> = output.lines().map(str::trim_end).collect();
    assert!(lines.windows(2).any(|w| w == ["remote:   65534", "remote:   invalid"]), "{output}");
    for bad in ["NETWORK", "WROTE-CONFIG", "WROTE-ROOT"] {
        assert!(!output.contains(bad), "{bad}:\n{output}");
    }
    assert_no_server_paths(&output, devpop.data.path());
}

#[test]
fn under_a_masked_proc_the_weaker_sandbox_is_logged_once() {
    let repo = tempfile::tempdir().unwrap();
    copy_tree(&fixture("repos/sample-application"), repo.path());
    let data = tempfile::tempdir().unwrap();
    let out = Command::new(MASKED_PROC[0])
        .args(&MASKED_PROC[1..])
        .args([DEVPOP, "validate", "--worktree", "--env", "Production", "--data"])
        .arg(data.path())
        .arg(repo.path())
        .env("DEVPOP_LOG", "warn")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}\n{}", String::from_utf8_lossy(&out.stdout));
    assert_eq!(stderr.matches("the kernel refuses a fresh /proc").count(), 1, "{stderr}");
}

#[test]
fn what_a_sandbox_writes_to_tmp_counts_against_its_memory_limit() {
    // /tmp may hold 64 MiB, the sandbox's memory 32 MiB: the memory limit stops the writer.
    let limits = Limits { memory_bytes: 32 << 20, tmp_bytes: 64 << 20, ..Limits::default() };
    let out = run("head -c 50000000 /dev/zero > /tmp/big && echo wrote-50mb; exit 0", &limits);
    let Outcome::Failed { status, output } = &out else { panic!("{out:?}") };
    assert!(!output.contains("wrote-50mb"), "{output}");
    assert_eq!(
        status,
        "hit the sandbox's memory limit (32 MiB for all its processes and /tmp together) and a process was killed"
    );
}

// The sandbox itself (one validate.sh run, and the pool of sandboxes started ahead).

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
    let (_d, s, _c) = script("cat server.conf >&2; test \"$PROXY_CONFIG_DIR\" = /opt/proxy_config || exit 9; exit 3");
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
fn memory_is_bounded() {
    let limits = Limits { memory_bytes: 64 << 20, ..Limits::default() };
    let out = run("python3 -c 'x = bytearray(200 * 1024 * 1024)' 2>&1", &limits);
    assert!(matches!(out, Outcome::Failed { .. }), "{out:?}");
}
