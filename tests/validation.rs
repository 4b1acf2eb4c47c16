//! Pre-receive validation end to end: fixtures pushed with the real git client to a real server,
//! validate.sh in its sandbox, and `devpop validate` agreeing with the server.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use common::*;

/// The `remote:` lines of a push, as the hook printed them.
fn remote_lines(push_output: &str) -> Vec<String> {
    push_output.lines().filter_map(|l| l.strip_prefix("remote: ")).map(|l| l.trim_end().to_owned()).collect()
}

fn devpop_validate(dir: &Path, env: &str, data: &Path) -> (bool, Vec<String>) {
    let out = Command::new(DEVPOP)
        .args(["validate", "--worktree", "--env", env, "--data"])
        .arg(data)
        .arg(dir)
        .output()
        .unwrap();
    let lines = String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned).collect();
    (out.status.success(), lines)
}

/// Every folder of tests/fixtures/bad, with what its EXPECT file says a push of it must do:
/// the branch to push (`branch: NAME`) and the lines the rejection must contain (`remote: ...`,
/// in order). A folder without them fails the test, so no bad fixture is skipped.
fn bad_cases() -> Vec<(String, String, String)> {
    let mut cases: Vec<_> = std::fs::read_dir(fixture("bad"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_type().unwrap().is_dir())
        .map(|e| e.file_name().into_string().unwrap())
        .collect();
    cases.sort();
    assert!(!cases.is_empty());
    cases
        .into_iter()
        .map(|case| {
            let expect = std::fs::read_to_string(fixture(&format!("bad/{case}/EXPECT")))
                .unwrap_or_else(|e| panic!("bad/{case}/EXPECT: {e}"));
            let branch = expect.lines().find_map(|l| l.strip_prefix("branch: "));
            let remote: Vec<&str> = expect.lines().filter_map(|l| l.strip_prefix("remote: ")).collect();
            let branch = branch.unwrap_or_else(|| panic!("bad/{case}/EXPECT has no `branch:` line"));
            assert!(!remote.is_empty(), "bad/{case}/EXPECT has no `remote:` line");
            (case, branch.to_owned(), remote.join("\n"))
        })
        .collect()
}

#[test]
fn every_bad_fixture_is_rejected_with_what_to_fix_and_devpop_validate_agrees() {
    let devpop = Devpop::start();
    for (i, (case, branch, expected)) in bad_cases().iter().enumerate() {
        let dir = fixture(&format!("bad/{case}"));
        let app = format!("bad{i}");
        let (ok, output) = push_tree(&devpop, &app, &dir, branch);
        let expected = expected.as_str();
        assert!(!ok, "{case}: push must be rejected:\n{output}");
        let remote = remote_lines(&output).join("\n");
        assert!(remote.contains(expected), "{case}: expected\n{expected}\nin\n{remote}");
        assert!(
            output.contains(&format!("! [remote rejected] HEAD -> {branch} (pre-receive hook declined)")),
            "{output}"
        );
        let repo = devpop.repo_path("1", &app, &app);
        let expected_head = if *branch == "Production" {
            git_ok(&repo, &["rev-parse", "refs/heads/Production"])
        } else {
            String::new()
        };
        assert_eq!(server_branch(&repo, branch), expected_head.trim(), "{case}: branch unchanged");
        assert!(quarantines(&repo).is_empty(), "{case}: quarantine left");

        // devpop validate on the same tree says the same, line for line.
        let (valid, lines) = devpop_validate(&dir, branch, devpop.data.path());
        assert!(!valid, "{case}: devpop validate must fail");
        let pushed: Vec<String> =
            remote_lines(&output).into_iter().filter(|l| !l.starts_with("error: push to")).collect();
        let offline: Vec<String> =
            lines.into_iter().filter(|l| !l.contains("problem to fix") && !l.contains("problems to fix")).collect();
        assert_eq!(pushed, offline, "{case}: push and devpop validate disagree");
    }
}

#[test]
fn sample_application_is_accepted_with_each_module_validated() {
    let devpop = Devpop::start();
    let (ok, output) = push_tree(&devpop, "sample", &fixture("repos/sample-application"), "Production");
    assert!(ok, "{output}");
    let remote = remote_lines(&output);
    assert_eq!(remote.len(), 4, "{output}");
    assert_eq!(
        remote[..2],
        ["Validating configuration for proxy cache...", "Validating configuration for proxy example..."]
    );
    assert!(
        remote[2].starts_with("Rendering environment Production (namespace section-sample-production-"),
        "{output}"
    );
    assert_eq!(
        remote[3],
        format!(
            "Deployment 1 queued for Production: {0}/console/deployments/1 (API: {0}/api/v1/deployments/1)",
            devpop.url
        )
    );
    let (ok, output) = push_tree(&devpop, "sample2", &fixture("repos/sample-application"), "Staging");
    assert!(ok, "{output}");
    let (valid, _) = devpop_validate(&fixture("repos/sample-application"), "Production", devpop.data.path());
    assert!(valid);
}

#[test]
fn a_push_to_production_only_warns_about_a_broken_staging() {
    let devpop = Devpop::start();
    let (ok, output) = push_tree(&devpop, "noorigin", &fixture("bad/no-origin"), "Production");
    assert!(ok, "{output}");
    assert!(
        output.contains("remote: warning: section.config.json:31:16: environments.Staging: has no origin; add \"origin\": { \"address\": \"<your origin host>\" } (a push to Staging will be rejected until this is fixed)"),
        "{output}"
    );
}

#[test]
fn package_add_refuses_forbidden_pod_fields_and_list_shows_builtins() {
    let devpop = Devpop::start();
    let src = tempfile::tempdir().unwrap();
    copy_tree(&fixture("packages/example-simple"), src.path());
    let yaml = src.path().join(".section-proxy.yaml");
    let text = std::fs::read_to_string(&yaml).unwrap().replace("spec:\n", "spec:\n  hostNetwork: true\n");
    std::fs::write(&yaml, text).unwrap();
    let out = package_add(&devpop, src.path());
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("spec.hostNetwork: not allowed in a module package (modules share no host namespaces); remove it"),
        "{err}"
    );

    let out = Command::new(DEVPOP).args(["package", "list", "--data"]).arg(devpop.data.path()).output().unwrap();
    let list = String::from_utf8_lossy(&out.stdout);
    assert!(list.contains("edge-cache:6.5.0\tregistry.example.com/section/edge-cache:6.5.0-r3"), "{list}");
    assert!(list.contains("example-simple:1.0.0\t"), "{list}");
}

/// `devpop package add <dir>` into the server's data dir.
fn package_add(devpop: &Devpop, dir: &std::path::Path) -> std::process::Output {
    Command::new(DEVPOP).args(["package", "add"]).arg(dir).arg("--data").arg(devpop.data.path()).output().unwrap()
}

#[test]
fn a_symlink_to_etc_passwd_never_reaches_validate_sh_or_the_pusher() {
    let devpop = Devpop::start();
    let repo = probe_case(&devpop, "cat /opt/proxy_config/passwd >&2; ls -la /opt/proxy_config >&2; exit 1");
    std::os::unix::fs::symlink("/etc/passwd", repo.path().join("probe/passwd")).unwrap();
    let (ok, output) = push_tree(&devpop, "symlink", repo.path(), "Production");
    assert!(!ok);
    assert!(!output.contains("root:"), "the host's /etc/passwd leaked:\n{output}");
    assert!(
        output.contains("remote: warning: probe/passwd: symlink or submodule not passed to validate.sh"),
        "{output}"
    );
    assert!(output.contains("No such file or directory"), "{output}");
}

#[test]
fn a_validate_sh_that_sleeps_forever_is_stopped_at_the_time_limit() {
    let devpop = Devpop::start_with(&["--validate-timeout", "1s"]);
    // An argument no other test uses, so the process can be looked for afterwards.
    let repo = probe_case(&devpop, "echo checking >&2; sleep 99999.25");
    let (ok, output) = push_tree(&devpop, "sleepy", repo.path(), "Production");
    assert!(!ok);
    assert!(
        output.contains("remote: error: proxy probe: validate.sh did not finish within 1s and was stopped:"),
        "{output}"
    );
    assert!(output.contains("remote:   checking"), "{output}");
    let left = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .any(|e| std::fs::read(e.path().join("cmdline")).is_ok_and(|c| c == b"sleep\x0099999.25\x00"));
    assert!(!left, "the stopped validate.sh left its sleep running");
}

#[test]
fn a_validate_sh_that_writes_100mb_to_stderr_is_cut_off() {
    let devpop = Devpop::start();
    let repo = probe_case(&devpop, "head -c 100000000 /dev/zero | tr '\\0' 'x' | fold -w 100 >&2; exit 1");
    let (ok, output) = push_tree(&devpop, "noisy", repo.path(), "Production");
    assert!(!ok);
    assert!(
        output.contains(
            "remote: error: proxy probe: validate.sh printed more than 64 KiB and was stopped; it began with:"
        ),
        "{output}"
    );
    assert!(output.contains("more lines)"), "{output}");
    assert!(output.len() < 100_000, "the pusher gets a bounded excerpt, not {} bytes", output.len());
}

#[test]
fn a_validate_sh_has_no_network() {
    let devpop = Devpop::start();
    // Something to connect to, on this machine: the devpop server itself.
    let port = devpop.addr().rsplit(':').next().unwrap().to_owned();
    let script = format!(
        "python3 -c 'import socket; socket.create_connection((\"127.0.0.1\", {port}), timeout=3)' 2>/dev/null && {{ echo reached the network >&2; exit 1; }}; echo offline >&2; exit 1"
    );
    let repo = probe_case(&devpop, &script);
    let (ok, output) = push_tree(&devpop, "net", repo.path(), "Production");
    assert!(!ok);
    assert!(output.contains("remote:   offline"), "{output}");
    assert!(!output.contains("reached the network"), "{output}");
}

#[test]
fn hostile_configs_are_refused_quickly() {
    let devpop = Devpop::start();
    let repo = tempfile::tempdir().unwrap();
    let entries = vec![r#"{"name":"a","image":"example-simple:1.0.0"}"#; 10_000].join(",");
    std::fs::write(
        repo.path().join("section.config.json"),
        format!(r#"{{"proxychain":[{entries}],"environments":{{"Production":{{"origin":{{"address":"x.com"}}}}}}}}"#),
    )
    .unwrap();
    let (ok, output) = push_tree(&devpop, "huge", repo.path(), "Production");
    assert!(!ok);
    assert!(
        output
            .contains("remote: error: section.config.json:1:15: proxychain: has 10000 modules; at most 64 are allowed"),
        "{output}"
    );

    std::fs::write(repo.path().join("section.config.json"), "[".repeat(100_000) + &"]".repeat(100_000)).unwrap();
    let (ok, output) = push_tree(&devpop, "deep", repo.path(), "Production");
    assert!(!ok);
    assert!(
        output.contains("remote: error: section.config.json:1:65: invalid JSON: nested deeper than 64 levels"),
        "{output}"
    );
}

#[test]
fn validation_lines_reach_the_pusher_while_the_push_runs() {
    let devpop = Devpop::start();
    // validate.sh runs `sleep` with an argument no other test uses, so its process can be found.
    let repo = probe_case(&devpop, "sleep 3.217; exit 0");
    let url = devpop.create_app("1", "stream", "stream");
    let (_dir, work) = clone(&url);
    replace_tree(&work, repo.path());
    commit_all(&work, "slow module");
    let validate_sh_running = || {
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .any(|e| std::fs::read(e.path().join("cmdline")).is_ok_and(|c| c == b"sleep\x003.217\x00"))
    };
    let mut child = git_cmd(&work)
        .args(["push", "--progress", "origin", "HEAD:Production"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut running_when_seen = None;
    for line in BufReader::new(child.stderr.take().unwrap()).split(b'\n') {
        let line = String::from_utf8_lossy(&line.unwrap()).into_owned();
        if line.contains("Validating configuration for proxy probe...") && running_when_seen.is_none() {
            // Streamed: validate.sh is still to be seen running after the line arrived (had the
            // output been held back until the checks ended, its sleep would be over).
            running_when_seen = Some(eventually(std::time::Duration::from_secs(10), validate_sh_running));
        }
    }
    assert!(child.wait().unwrap().success());
    let running = running_when_seen.expect("the Validating line was printed");
    assert!(running, "validate.sh was not seen running after the line reached the pusher: not streamed");
    assert!(!validate_sh_running(), "validate.sh ended with the push");
}

#[test]
fn an_unchanged_module_folder_is_not_validated_twice_but_a_changed_one_is() {
    // The server's debug log says each time it runs validate.sh ("validate.sh sandbox").
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("server.log");
    let redirect = format!("DEVPOP_LOG=debug exec \"$@\" 2>>'{}'", log.display());
    let devpop = Devpop::start_under(&["sh", "-c", &redirect, "sh"], tempfile::tempdir().unwrap(), &[]);
    let repo = probe_case(&devpop, "exit 0");
    let url = devpop.create_app("1", "memo", "memo");
    let (_dir, work) = clone(&url);
    replace_tree(&work, repo.path());
    let runs = || std::fs::read_to_string(&log).unwrap().matches("validate.sh sandbox").count();
    let mut n = 0;
    let mut push = |change: &str| {
        n += 1;
        std::fs::write(work.join(change), format!("change {n}\n")).unwrap();
        commit_all(&work, change);
        let before = runs();
        let out = git(&work, &["push", "origin", "HEAD:Production"]);
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(stderr(&out).contains("Validating configuration for proxy probe..."));
        runs() - before
    };
    assert_eq!(push("README.md"), 1, "first validation runs validate.sh");
    assert_eq!(push("README.md"), 0, "same module folder: remembered");
    assert_eq!(push("probe/extra.conf"), 1, "changed module folder: validated again");
}
