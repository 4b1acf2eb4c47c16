//! Fault injection: the server is killed with SIGKILL at each step of a push and of a
//! deployment (the test-only `DEVPOP_TEST_CRASH_AT`, see src/records/crash.rs), then started
//! again on the same data dir. After the restart: `git fsck` is clean, the branch is at its old
//! or its new commit, the environment ends up deployed at the branch's commit by exactly one
//! deployment, and nothing that was in the audit log is lost.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;

fn json(devpop: &Devpop, path: &str) -> serde_json::Value {
    let r = http(&devpop.addr(), "GET", path, &[], b"");
    assert_eq!(r.status, 200, "{path}: {}", r.text());
    serde_json::from_slice(&r.body).unwrap()
}

fn change(work: &std::path::Path, name: &str) -> String {
    std::fs::write(work.join(format!("{name}.txt")), format!("{name}\n")).unwrap();
    commit_all(work, name);
    git_ok(work, &["rev-parse", "HEAD"]).trim().to_owned()
}

fn audit(devpop: &Devpop) -> BTreeSet<String> {
    let log = json(devpop, "/api/v1/audit?limit=500");
    log["items"].as_array().unwrap().iter().map(|e| e.to_string()).collect()
}

/// What the crash left, after the restart.
struct After {
    head: String,
    deployments: Vec<serde_json::Value>,
}

/// Pushes commit `a` (deployed), then pushes `b` to a server that dies at `point`; restarts
/// and checks the invariants. Returns where the branch ended and the deployments.
fn crash_at(point: &str) -> After {
    let devpop = Devpop::start();
    let url = devpop.create_app("1", "1", "site");
    let (_dir, work) = clone(&url);
    let a = change(&work, "a");
    let out = git(&work, &["push", "origin", "HEAD:Production"]);
    assert_eq!(wait_deployment(&devpop, queued_deployment(&stderr(&out), "Production"))["state"], "ready");
    let before = audit(&devpop);
    let data = devpop.stop();

    let devpop = Devpop::start_in_env(data, &[], &[("DEVPOP_TEST_CRASH_AT", point)]);
    let b = change(&work, "b");
    git_ok(&work, &["remote", "set-url", "origin", &format!("{}/account/1/application/1/site.git", devpop.url)]);
    let out = git(&work, &["push", "origin", "HEAD:Production"]);
    let (data, status) = devpop.wait_exit(Duration::from_secs(30));
    let status = status.unwrap_or_else(|| panic!("the server did not stop at {point}: {}", stderr(&out)));
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(libc_sigkill()), "killed at {point}");

    let devpop = Devpop::start_in(data, &[]);
    let repo = devpop.repo_path("1", "1", "site");
    let fsck = git(&repo, &["fsck", "--full", "--no-progress"]);
    assert!(fsck.status.success(), "git fsck after a crash at {point}: {}", stderr(&fsck));
    let head = server_branch(&repo, "Production");
    assert!(head == a || head == b, "the branch is at its old or its new commit, not {head}");
    // Every deployment settles; the environment runs the branch's commit.
    let settled = eventually(Duration::from_secs(30), || {
        let page = json(&devpop, "/api/v1/deployments?limit=500");
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|d| matches!(d["state"].as_str(), Some("ready" | "failed" | "superseded")))
    });
    assert!(settled, "deployments settle after a crash at {point}");
    let env = json(&devpop, "/api/v1/accounts/1/applications/1/environments/Production");
    assert_eq!(env["deployed_commit"].as_str(), Some(head.as_str()), "deployed at the branch: {env}");
    assert_eq!(env["branch_differs"], false);
    let deployments = json(&devpop, "/api/v1/deployments?limit=500")["items"].as_array().unwrap().clone();
    for commit in [&a, &b] {
        let ready = deployments.iter().filter(|d| d["commit"] == commit.as_str() && d["state"] == "ready").count();
        assert!(ready <= 1, "no duplicate deployment of {commit} after a crash at {point}: {deployments:#?}");
    }
    let after = audit(&devpop);
    assert!(before.is_subset(&after), "nothing lost from the audit log at {point}");
    if head == b {
        let b12 = &b[..12];
        assert!(
            after.iter().any(|e| e.contains("\"action\":\"push\"") && e.contains(&format!("commit {b12}"))),
            "the push that moved the branch is in the audit log: {after:#?}"
        );
    }
    // Nothing more to reconcile: the crash left no environment behind its branch.
    let r = http(&devpop.addr(), "POST", "/api/v1/reconcile", &[], b"");
    assert_eq!(r.text().trim(), "[]");
    After { head, deployments }
}

fn libc_sigkill() -> i32 {
    9
}

fn messages(d: &serde_json::Value) -> Vec<String> {
    d["steps"].as_array().unwrap().iter().map(|s| s["message"].as_str().unwrap().to_owned()).collect()
}

#[test]
fn a_crash_before_the_push_is_recorded_leaves_branch_and_records_as_they_were() {
    let after = crash_at("before-reserve");
    assert_eq!(after.deployments.len(), 1, "only the first push's deployment: {:#?}", after.deployments);
}

#[test]
fn a_crash_after_the_record_before_the_ref_moves_fails_that_deployment_as_not_deployed() {
    let after = crash_at("before-ref-move");
    assert_eq!(after.deployments.len(), 2, "{:#?}", after.deployments);
    let b = &after.deployments[0];
    assert_ne!(b["commit"].as_str(), Some(after.head.as_str()), "the branch did not move");
    assert_eq!(b["state"], "failed");
    assert!(
        messages(b)
            .last()
            .unwrap()
            .contains("not deployed: git did not move refs/heads/Production to this commit before the server stopped"),
        "{b}"
    );
}

#[test]
fn a_crash_after_the_ref_moves_before_the_record_lands_deploys_the_branch_once_after_restart() {
    let after = crash_at("after-ref-move");
    assert_eq!(after.deployments.len(), 2, "{:#?}", after.deployments);
    let b = &after.deployments[0];
    assert_eq!(b["commit"].as_str(), Some(after.head.as_str()), "the branch moved");
    assert_eq!(b["state"], "ready", "{b}");
}

#[test]
fn a_crash_mid_apply_resumes_the_deployment_once_after_restart() {
    let after = crash_at("mid-apply");
    assert_eq!(after.deployments.len(), 2, "{:#?}", after.deployments);
    let b = &after.deployments[0];
    assert_eq!((b["commit"].as_str(), b["state"].as_str()), (Some(after.head.as_str()), Some("ready")));
    assert!(messages(b).contains(&"resumed after a restart (was applying)".to_owned()), "{b}");
}

#[test]
fn a_crash_mid_rollout_resumes_the_deployment_once_after_restart() {
    let after = crash_at("mid-rollout");
    assert_eq!(after.deployments.len(), 2, "{:#?}", after.deployments);
    let b = &after.deployments[0];
    assert_eq!((b["commit"].as_str(), b["state"].as_str()), (Some(after.head.as_str()), Some("ready")));
    assert!(messages(b).contains(&"resumed after a restart (was progressing)".to_owned()), "{b}");
}
