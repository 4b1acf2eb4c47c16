//! Test harness: a real `devpop serve` on 127.0.0.1:0 with a temp data dir, driven with the
//! real `git` client and raw HTTP.
#![allow(dead_code)]

pub mod kubeapi;
pub mod rawgit;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const DEVPOP: &str = env!("CARGO_BIN_EXE_devpop");

/// The project's test fixtures (copied from the shared spec's fixtures).
pub fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(rel)
}

pub struct Devpop {
    child: Child,
    pub url: String,
    pub data: tempfile::TempDir,
}

impl Devpop {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    pub fn start_with(args: &[&str]) -> Self {
        let data = tempfile::tempdir().unwrap();
        Self::start_in(data, args)
    }

    /// Starts a server on an existing data dir (e.g. to restart one).
    pub fn start_in(data: tempfile::TempDir, args: &[&str]) -> Self {
        Self::start_under_env(&[], data, args, &[])
    }

    /// Starts a server on an existing data dir with extra environment variables.
    pub fn start_in_env(data: tempfile::TempDir, args: &[&str], env: &[(&str, &str)]) -> Self {
        Self::start_under_env(&[], data, args, env)
    }

    /// Starts a server through `wrapper` (a command that execs its arguments), e.g. in a
    /// changed mount namespace.
    pub fn start_under(wrapper: &[&str], data: tempfile::TempDir, args: &[&str]) -> Self {
        Self::start_under_env(wrapper, data, args, &[])
    }

    fn start_under_env(wrapper: &[&str], data: tempfile::TempDir, args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut cmd = match wrapper.split_first() {
            Some((program, rest)) => {
                let mut cmd = Command::new(program);
                cmd.args(rest).arg(DEVPOP);
                cmd
            }
            None => Command::new(DEVPOP),
        };
        let mut child = cmd
            .args(["serve", "--listen", "127.0.0.1:0", "--data"])
            .arg(data.path())
            .args(args)
            .env("DEVPOP_LOG", "warn")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start devpop serve");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let url = line
            .strip_prefix("devpop serving on ")
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("unexpected first line from devpop serve: {line:?}"))
            .to_owned();
        Devpop { child, url, data }
    }

    /// `devpop token create ARGS` on the data dir; returns the token.
    pub fn token(&self, args: &[&str]) -> String {
        let out = Command::new(DEVPOP)
            .args(["token", "create"])
            .args(args)
            .arg("--data")
            .arg(self.data.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    /// `devpop app create`; returns the clone URL.
    pub fn create_app(&self, account: &str, app: &str, repo: &str) -> String {
        let out = Command::new(DEVPOP)
            .args([
                "app",
                "create",
                account,
                app,
                repo,
                "--origin",
                "origin.example.com",
                "--public-url",
                &self.url,
                "--data",
            ])
            .arg(self.data.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "app create failed: {}", String::from_utf8_lossy(&out.stderr));
        format!("{}/account/{account}/application/{app}/{repo}.git", self.url)
    }

    pub fn repo_path(&self, account: &str, app: &str, repo: &str) -> PathBuf {
        self.data.path().join("repos").join(account).join(app).join(format!("{repo}.git"))
    }

    pub fn addr(&self) -> String {
        self.url.trim_start_matches("http://").to_owned()
    }

    /// Stops the server and hands back its data dir.
    pub fn stop(mut self) -> tempfile::TempDir {
        self.kill();

        std::mem::replace(&mut self.data, tempfile::tempdir().unwrap())
    }

    /// Waits (up to `limit`) for the server to exit by itself, e.g. at a test crash point;
    /// hands back its data dir and how it ended.
    pub fn wait_exit(mut self, limit: Duration) -> (tempfile::TempDir, Option<std::process::ExitStatus>) {
        let mut status = None;
        eventually(limit, || {
            status = self.child.try_wait().unwrap();
            status.is_some()
        });
        (std::mem::replace(&mut self.data, tempfile::tempdir().unwrap()), status)
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Devpop {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A git client with an isolated configuration.
pub fn git_cmd(dir: &Path) -> Command {
    let mut cmd = Command::new("git");
    cmd.current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_AUTHOR_NAME", "Dev Eloper")
        .env("GIT_AUTHOR_EMAIL", "dev@example.com")
        .env("GIT_COMMITTER_NAME", "Dev Eloper")
        .env("GIT_COMMITTER_EMAIL", "dev@example.com")
        .env("LC_ALL", "C");
    cmd
}

/// Runs git and returns its output, whatever the exit status.
pub fn git(dir: &Path, args: &[&str]) -> Output {
    git_cmd(dir).args(args).output().unwrap()
}

/// Runs git, panicking (with its stderr) when it fails; returns stdout.
pub fn git_ok(dir: &Path, args: &[&str]) -> String {
    let out = git(dir, args);
    assert!(
        out.status.success(),
        "git {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Clones `url` into a fresh temp dir; returns the dir and the work tree path.
pub fn clone(url: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    git_ok(dir.path(), &["clone", "-q", url, "work"]);
    let work = dir.path().join("work");
    (dir, work)
}

/// A fresh server with one application, 1/1/site, cloned: the server, the clone's temp dir
/// (kept for the test's length) and its work tree.
pub fn cloned_site() -> (Devpop, tempfile::TempDir, PathBuf) {
    let devpop = Devpop::start();
    let url = devpop.create_app("1", "1", "site");
    let (dir, work) = clone(&url);
    (devpop, dir, work)
}

/// Commits everything in the work tree.
pub fn commit_all(work: &Path, message: &str) {
    git_ok(work, &["add", "-A"]);
    git_ok(work, &["commit", "-q", "-m", message]);
}

/// The commit a branch points at in a bare repo on the server's disk ("" when there is none).
pub fn server_branch(repo: &Path, branch: &str) -> String {
    let out = git(repo, &["rev-parse", "-q", "--verify", &format!("refs/heads/{branch}")]);
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Quarantine folders git left in the repo's objects/ (none after any push, good or bad).
pub fn quarantines(repo: &Path) -> Vec<String> {
    std::fs::read_dir(repo.join("objects"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("tmp_objdir") || n.starts_with("incoming-"))
        .collect()
}

/// Waits until `f` holds, up to `limit`.
pub fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    f()
}

/// Incompressible bytes (xorshift), so a file of n bytes makes a pack of about n bytes.
pub fn random_bytes(n: usize) -> Vec<u8> {
    let mut data = vec![0u8; n];
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for chunk in data.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    data
}

/// Copies a directory tree; symlinks are copied as symlinks (never followed).
pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(e.file_name());
        let kind = e.file_type().unwrap();
        if kind.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(e.path()).unwrap(), &target).unwrap();
        } else if kind.is_dir() {
            copy_tree(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).unwrap();
        }
    }
}

/// Replaces everything in a work tree (but .git) with the contents of `from`.
pub fn replace_tree(work: &Path, from: &Path) {
    for e in std::fs::read_dir(work).unwrap().flatten() {
        if e.file_name() == ".git" {
            continue;
        }
        if e.file_type().unwrap().is_dir() {
            std::fs::remove_dir_all(e.path()).unwrap();
        } else {
            std::fs::remove_file(e.path()).unwrap();
        }
    }
    copy_tree(from, work);
}

pub struct HttpResponse {
    pub status: u16,
    pub head: String,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Installs package `probe:1.0.0` whose validate.sh is `body`; returns an environment repo whose
/// one module `probe` uses it.
pub fn probe_case(devpop: &Devpop, body: &str) -> tempfile::TempDir {
    let src = tempfile::tempdir().unwrap();
    copy_tree(&fixture("packages/example-simple"), src.path());
    let yaml = src.path().join(".section-proxy.yaml");
    let text = std::fs::read_to_string(&yaml).unwrap().replace("name: example-simple:1.0.0", "name: probe:1.0.0");
    std::fs::write(&yaml, text).unwrap();
    std::fs::write(src.path().join("validate.sh"), format!("#!/bin/sh\n{body}\n")).unwrap();
    let out = Command::new(DEVPOP)
        .args(["package", "add"])
        .arg(src.path())
        .arg("--data")
        .arg(devpop.data.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let repo = tempfile::tempdir().unwrap();
    std::fs::create_dir(repo.path().join("probe")).unwrap();
    std::fs::write(repo.path().join("probe/server.conf"), "# ok\n").unwrap();
    std::fs::write(
        repo.path().join("section.config.json"),
        r#"{"proxychain": [{"name": "probe", "image": "probe:1.0.0"}],
"environments": {"Production": {"origin": {"address": "origin.example.com"}}}}"#,
    )
    .unwrap();
    repo
}

/// The sample application pushed to each of `envs` of a new app `account/app/repo`, every
/// deployment waited for and ready; the clone it was pushed from.
pub fn deploy_sample(
    devpop: &Devpop,
    (account, app, repo): (&str, &str, &str),
    envs: &[&str],
) -> (tempfile::TempDir, PathBuf) {
    let url = devpop.create_app(account, app, repo);
    let (dir, work) = clone(&url);
    replace_tree(&work, &fixture("repos/sample-application"));
    commit_all(&work, "the sample application");
    for env in envs {
        let out = git(&work, &["push", "origin", &format!("HEAD:{env}")]);
        assert!(out.status.success(), "{}", stderr(&out));
        let d = wait_deployment(devpop, queued_deployment(&stderr(&out), env));
        assert_eq!(d["state"], "ready", "{d}");
    }
    (dir, work)
}

/// The sample application deployed to Production and Staging of a new app `9999/9999/site`.
pub fn push_sample_everywhere(devpop: &Devpop) -> (tempfile::TempDir, PathBuf) {
    deploy_sample(devpop, ("9999", "9999", "site"), &["Production", "Staging"])
}

/// Pushes the contents of `tree` as one commit to `branch` of a new app `app` (account 1);
/// whether the push succeeded, and git's output.
pub fn push_tree(devpop: &Devpop, app: &str, tree: &Path, branch: &str) -> (bool, String) {
    let url = devpop.create_app("1", app, app);
    let (dir, work) = clone(&url);
    replace_tree(&work, tree);
    commit_all(&work, "environment repo");
    let out = git(&work, &["push", "origin", &format!("HEAD:{branch}")]);
    drop(dir);
    (out.status.success(), stderr(&out))
}

/// A minimal HTTP/1.1 request over a fresh connection (`Connection: close`). The body is read
/// by its Content-Length or chunks (some servers keep the connection open regardless).
pub fn http(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> HttpResponse {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() || method == "POST" {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut raw = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        let n = match s.read(&mut buf) {
            // A read may be interrupted (a socket with a time-out returns EINTR where others
            // restart); the Read contract is to try again.
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            r => r.unwrap(),
        };
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&buf[..n]);
        if let Some(split) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
            let body = &raw[split + 4..];
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok());
            if length.is_some_and(|len| body.len() >= len)
                || (head.contains("transfer-encoding: chunked") && body.ends_with(b"0\r\n\r\n"))
            {
                break;
            }
        }
    }
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("HTTP response head");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let mut body = raw[split + 4..].to_vec();
    if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        body = dechunk(&body);
    }
    HttpResponse { status, head, body }
}

fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = raw.windows(2).position(|w| w == b"\r\n").unwrap();
        let size = usize::from_str_radix(std::str::from_utf8(&raw[..line_end]).unwrap().trim(), 16).unwrap();
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&raw[line_end + 2..line_end + 2 + size]);
        raw = &raw[line_end + 2 + size + 2..];
    }
}

/// The deployment id in a push's `Deployment N queued for ENV: URL` line.
pub fn queued_deployment(push_output: &str, env: &str) -> u64 {
    let marker = "remote: Deployment ";
    push_output
        .lines()
        .filter_map(|l| l.strip_prefix(marker))
        .find(|l| l.contains(&format!(" queued for {env}:")))
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no deployment queued for {env} in:\n{push_output}"))
}

/// Waits until deployment `id` reaches a final state; returns its JSON.
pub fn wait_deployment(devpop: &Devpop, id: u64) -> serde_json::Value {
    let mut last = serde_json::Value::Null;
    let done = eventually(Duration::from_secs(30), || {
        let r = http(&devpop.addr(), "GET", &format!("/api/v1/deployments/{id}"), &[], b"");
        last = serde_json::from_slice(&r.body).unwrap_or(serde_json::Value::Null);
        matches!(last["state"].as_str(), Some("ready" | "failed" | "superseded"))
    });
    assert!(done, "deployment {id} did not finish: {last}");
    last
}
