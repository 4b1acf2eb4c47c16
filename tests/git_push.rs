//! The git transport end to end: a real `devpop serve`, the real `git` client.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::*;

#[test]
fn clone_of_a_new_app_gives_the_skeleton_on_production() {
    let devpop = Devpop::start();
    let url = devpop.create_app("9999", "9999", "sample-application");
    let (_dir, work) = clone(&url);
    assert_eq!(git_ok(&work, &["rev-parse", "--abbrev-ref", "HEAD"]).trim(), "Production");
    let config = std::fs::read_to_string(work.join("section.config.json")).unwrap();
    assert!(config.contains("\"proxychain\": []"), "{config}");
    assert!(config.contains("\"address\": \"origin.example.com\""), "{config}");
    assert!(work.join("README.md").is_file() && work.join(".gitignore").is_file());
}

#[test]
fn accepted_push_moves_the_branch() {
    let devpop = Devpop::start();
    let url = devpop.create_app("1", "1", "site");
    let (_dir, work) = clone(&url);
    std::fs::write(work.join("notes.txt"), "hello\n").unwrap();
    commit_all(&work, "add notes");
    let pushed = git_ok(&work, &["rev-parse", "HEAD"]);
    git_cmd(&work).args(["remote", "add", "developer-pop", &url]).status().unwrap();
    let out = git(&work, &["push", "developer-pop", "Production"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(server_branch(&devpop.repo_path("1", "1", "site"), "Production"), pushed.trim());
}

/// Pushes that bypass the server (to the repo's path on disk) are checked too: the hook then
/// runs `devpop hook pre-receive` itself, with the same messages, and deploys nothing.
#[test]
fn a_push_to_the_repo_on_disk_is_checked_by_the_hook_process_and_not_deployed() {
    let devpop = Devpop::start();
    let url = devpop.create_app("1", "1", "site");
    let repo = devpop.repo_path("1", "1", "site");
    let (_dir, work) = clone(&url);
    let disk = repo.to_str().unwrap();

    std::fs::write(work.join("section.config.json"), "{\n  \"proxychain\": [\n    { \"name\": \"cache\" },\n  ]\n")
        .unwrap();
    commit_all(&work, "break the config");
    let out = git(&work, &["push", disk, "HEAD:Production"]);
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("remote: error: section.config.json:4:3: invalid JSON"), "{err}");
    assert!(quarantines(&repo).is_empty());

    git_ok(&work, &["reset", "-q", "--hard", "HEAD~1"]);
    std::fs::write(work.join("notes.txt"), "hello\n").unwrap();
    commit_all(&work, "notes");
    let out = git(&work, &["push", disk, "HEAD:Production"]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("remote: warning: Production not deployed: this push did not come through a devpop server"),
        "{err}"
    );
    assert_eq!(server_branch(&repo, "Production"), git_ok(&work, &["rev-parse", "HEAD"]).trim());
}

#[test]
fn broken_config_push_is_rejected_with_its_line_and_leaves_nothing_behind() {
    let devpop = Devpop::start();
    let url = devpop.create_app("1", "1", "site");
    let repo = devpop.repo_path("1", "1", "site");
    let before = server_branch(&repo, "Production");
    let (_dir, work) = clone(&url);
    std::fs::write(work.join("section.config.json"), "{\n  \"proxychain\": [\n    { \"name\": \"cache\" },\n  ]\n")
        .unwrap();
    std::fs::write(work.join("big.bin"), vec![7u8; 300_000]).unwrap();
    commit_all(&work, "break the config");
    let bad_commit = git_ok(&work, &["rev-parse", "HEAD"]);

    let out = git(&work, &["push", "origin", "Production"]);
    let err = stderr(&out);
    assert!(!out.status.success());
    assert!(
        err.contains("remote: error: section.config.json:4:3: invalid JSON: expected a JSON value, found ']' (remove the trailing comma)"),
        "{err}"
    );
    assert!(err.contains("! [remote rejected] Production -> Production (pre-receive hook declined)"), "{err}");
    assert_eq!(server_branch(&repo, "Production"), before, "branch unchanged");
    assert!(quarantines(&repo).is_empty(), "quarantine left: {:?}", quarantines(&repo));
    let has = git(&repo, &["cat-file", "-e", bad_commit.trim()]);
    assert!(!has.status.success(), "the rejected commit must not be in the repo");
    git_ok(&repo, &["fsck", "--strict", "--no-dangling"]);
}

#[test]
fn fetch_speaks_protocol_v2() {
    let devpop = Devpop::start();
    let url = devpop.create_app("1", "1", "site");
    let dir = tempfile::tempdir().unwrap();
    let out = git_cmd(dir.path())
        .args(["-c", "protocol.version=2", "clone", &url, "work"])
        .env("GIT_TRACE_PACKET", "1")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let trace = stderr(&out);
    assert!(trace.contains("git< version 2"), "server did not answer in protocol v2:\n{trace}");
    assert!(trace.contains("> command=fetch"), "{trace}");
    // and a v0 client still works
    let v0 = git(dir.path(), &["-c", "protocol.version=0", "ls-remote", &url]);
    assert!(v0.status.success() && String::from_utf8_lossy(&v0.stdout).contains("refs/heads/Production"));
}

#[test]
fn push_of_a_50mb_file_is_accepted() {
    let devpop = Devpop::start();
    let url = devpop.create_app("1", "1", "big");
    let (_dir, work) = clone(&url);
    // Incompressible, so the pack really is ~50 MB and goes out as a chunked request.
    std::fs::write(work.join("blob.bin"), random_bytes(50 << 20)).unwrap();
    commit_all(&work, "50 MB");
    let out = git(&work, &["push", "origin", "Production"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let repo = devpop.repo_path("1", "1", "big");
    assert_eq!(server_branch(&repo, "Production"), git_ok(&work, &["rev-parse", "HEAD"]).trim());
    assert!(quarantines(&repo).is_empty());
}

#[test]
fn eight_concurrent_pushes_to_eight_apps_all_land() {
    let devpop = Devpop::start();
    let works: Vec<_> = (0..8)
        .map(|i| {
            let url = devpop.create_app("acme", &format!("app{i}"), &format!("site{i}"));
            let (dir, work) = clone(&url);
            std::fs::write(work.join("change.txt"), format!("{i}\n")).unwrap();
            commit_all(&work, "change");
            (dir, work)
        })
        .collect();
    std::thread::scope(|s| {
        for (_, work) in &works {
            s.spawn(move || {
                let out = git(work, &["push", "origin", "Production"]);
                assert!(out.status.success(), "{}", stderr(&out));
            });
        }
    });
    for (i, (_, work)) in works.iter().enumerate() {
        let repo = devpop.repo_path("acme", &format!("app{i}"), &format!("site{i}"));
        assert_eq!(server_branch(&repo, "Production"), git_ok(work, &["rev-parse", "HEAD"]).trim());
    }
}

#[test]
fn push_to_a_missing_repo_names_the_command_that_creates_it() {
    let devpop = Devpop::start();
    let url = format!("{}/account/7/application/7/nothing.git", devpop.url);
    let dir = tempfile::tempdir().unwrap();
    git_ok(dir.path(), &["init", "-q", "-b", "Production"]);
    git_ok(dir.path(), &["commit", "-q", "--allow-empty", "-m", "x"]);
    let out = git(dir.path(), &["push", &url, "Production"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("remote: devpop: no repository at /account/7/application/7/nothing.git; create it with: devpop app create 7 7 nothing"), "{err}");
}

#[test]
fn pushing_a_tag_or_an_undefined_environment_is_refused_with_the_reason() {
    let devpop = Devpop::start();
    let url = devpop.create_app("1", "1", "site");
    let (_dir, work) = clone(&url);
    git_ok(&work, &["tag", "v1"]);
    let out = git(&work, &["push", "origin", "v1"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("error: refs/tags/v1: devpop deploys branches, one per environment"),
        "{}",
        stderr(&out)
    );

    git_ok(&work, &["checkout", "-q", "-b", "Staging"]);
    let out = git(&work, &["push", "origin", "Staging"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("environments: branch \"Staging\" is not an environment (defined: Production)"),
        "{}",
        stderr(&out)
    );
    assert_eq!(server_branch(&devpop.repo_path("1", "1", "site"), "Staging"), "", "no Staging branch was created");
}

#[test]
fn bad_http_requests_get_clear_errors_and_the_server_keeps_serving() {
    let devpop = Devpop::start();
    devpop.create_app("1", "1", "site");
    let addr = devpop.addr();
    let base = "/account/1/application/1/site.git";

    let r = http(&addr, "GET", "/nowhere", &[], b"");
    assert_eq!(r.status, 404);
    assert!(
        r.text().contains("git repos live at /account/<account>/application/<application>/<repo>.git"),
        "{}",
        r.text()
    );

    let r = http(&addr, "GET", &format!("{base}/info/refs"), &[], b"");
    assert_eq!(r.status, 403, "dumb protocol is refused");
    assert!(r.text().contains("smart HTTP protocol only"));

    let r = http(&addr, "GET", "/account/1/application/1/..%2f..%2fetc/info/refs?service=git-upload-pack", &[], b"");
    assert_eq!(r.status, 400, "{}", r.text());

    let r = http(&addr, "POST", &format!("{base}/git-receive-pack"), &[("Content-Type", "text/plain")], b"0000");
    assert_eq!(r.status, 415);
    assert!(r.text().contains("expected Content-Type application/x-git-receive-pack-request"));

    let r = http(
        &addr,
        "POST",
        &format!("{base}/git-upload-pack"),
        &[("Content-Type", "application/x-git-upload-pack-request"), ("Content-Encoding", "br")],
        b"0000",
    );
    assert_eq!(r.status, 415);

    // Garbage instead of pkt-lines: git says no in-band, the repo is untouched.
    let repo = devpop.repo_path("1", "1", "site");
    let before = server_branch(&repo, "Production");
    let r = http(
        &addr,
        "POST",
        &format!("{base}/git-receive-pack"),
        &[("Content-Type", "application/x-git-receive-pack-request")],
        b"this is not a pack request at all",
    );
    assert!(r.status == 200 || r.status >= 400);
    // Corrupt gzip.
    let r = http(
        &addr,
        "POST",
        &format!("{base}/git-upload-pack"),
        &[("Content-Type", "application/x-git-upload-pack-request"), ("Content-Encoding", "gzip")],
        b"\x1f\x8b\x08\x00garbage-garbage",
    );
    assert_eq!(r.status, 400, "{}", r.text());

    assert_eq!(http(&addr, "GET", "/healthz", &[], b"").status, 200);
    assert_eq!(server_branch(&repo, "Production"), before);
    git_ok(&repo, &["fsck", "--strict", "--no-dangling"]);
}

#[test]
fn oversized_push_gets_413_and_leaves_nothing() {
    let devpop = Devpop::start_with(&["--max-request-bytes", "1M"]);
    let url = devpop.create_app("1", "1", "site");
    let repo = devpop.repo_path("1", "1", "site");
    let before = server_branch(&repo, "Production");
    let (_dir, work) = clone(&url);
    std::fs::write(work.join("big.bin"), random_bytes(3 << 20)).unwrap();
    commit_all(&work, "too big");
    let out = git(&work, &["push", "origin", "Production"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("413"), "{}", stderr(&out));
    assert_eq!(server_branch(&repo, "Production"), before);
    assert!(eventually(Duration::from_secs(5), || quarantines(&repo).is_empty()), "{:?}", quarantines(&repo));
    // a push within the limit still works
    git_ok(&work, &["reset", "-q", "--hard", "HEAD~1"]);
    std::fs::write(work.join("small.txt"), "ok\n").unwrap();
    commit_all(&work, "small");
    git_ok(&work, &["push", "-q", "origin", "Production"]);
}

#[test]
fn client_that_disconnects_mid_push_leaves_no_quarantine() {
    let devpop = Devpop::start();
    let url = devpop.create_app("1", "1", "site");
    let repo = devpop.repo_path("1", "1", "site");
    let before = server_branch(&repo, "Production");
    let _ = url;
    let mut s = TcpStream::connect(devpop.addr()).unwrap();
    let command = format!("{before} {} refs/heads/Production\0 report-status side-band-64k\n", "1".repeat(40));
    let pkt = format!("{:04x}{command}0000", command.len() + 4);
    let head = "POST /account/1/application/1/site.git/git-receive-pack HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-git-receive-pack-request\r\nContent-Length: 10000000\r\n\r\n".to_string();
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(pkt.as_bytes()).unwrap();
    // A pack header promising many objects, then a little data, then hang up.
    s.write_all(b"PACK\0\0\0\x02\0\0\x10\0").unwrap();
    s.write_all(&[0x55; 100_000]).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    drop(s);
    assert!(eventually(Duration::from_secs(10), || quarantines(&repo).is_empty()), "{:?}", quarantines(&repo));
    assert_eq!(server_branch(&repo, "Production"), before);
    assert_eq!(http(&devpop.addr(), "GET", "/healthz", &[], b"").status, 200);
    let mut probe = TcpStream::connect(devpop.addr()).unwrap();
    probe.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut text = String::new();
    probe.read_to_string(&mut text).unwrap();
    assert!(text.contains("devpop_git_requests_total{service=\"git-receive-pack\"} 1"), "{text}");
}

#[test]
fn second_server_on_the_same_data_dir_is_refused() {
    let devpop = Devpop::start();
    let out = std::process::Command::new(DEVPOP)
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(devpop.data.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("another devpop is already serving the data dir"));
}

#[test]
fn listening_beyond_loopback_without_auth_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(DEVPOP)
        .args(["serve", "--listen", "0.0.0.0:0", "--data"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("refusing to listen on 0.0.0.0:0"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn settings_come_from_a_config_file_below_env_and_flags() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("devpop.toml");
    std::fs::write(&config, "listen = \"0.0.0.0:0\"\nmax-request-bytes = \"1M\"\n").unwrap();
    let serve = |extra: &[&str], env: &[(&str, &str)]| {
        std::process::Command::new(DEVPOP)
            .args(["serve", "--config"])
            .arg(&config)
            .arg("--data")
            .arg(dir.path().join("data"))
            .args(extra)
            .envs(env.iter().copied())
            .stdout(std::process::Stdio::null())
            .output()
            .unwrap()
    };
    let out = serve(&[], &[]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("refusing to listen on 0.0.0.0:0"),
        "the file's listen is used"
    );
    // An environment variable beats the file (a bad value proves it is read, not ignored).
    let out = serve(&[], &[("DEVPOP_LISTEN", "not-an-address")]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not-an-address"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    std::fs::write(&config, "listen = \"127.0.0.1:0\"\nmax-request-bytes = \"1M\"\n").unwrap();
    let devpop = Devpop::start_with(&["--config", config.to_str().unwrap()]);
    let url = devpop.create_app("1", "1", "site");
    let (_d, work) = clone(&url);
    std::fs::write(work.join("big.bin"), random_bytes(3 << 20)).unwrap();
    commit_all(&work, "too big for the file's limit");
    let out = git(&work, &["push", "origin", "Production"]);
    assert!(stderr(&out).contains("413"), "max-request-bytes from the file applies: {}", stderr(&out));

    std::fs::write(&config, "lisen = \"127.0.0.1:0\"\n").unwrap();
    let out = serve(&[], &[]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown setting \"lisen\""));
}
