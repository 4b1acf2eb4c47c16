//! Rollback and redeploy over the API (`POST .../environments/{env}/rollback` and
//! `.../redeploy`) against a real server: the answers, the errors as the API's JSON error, and
//! access control under `--auth tokens`.

mod common;

use std::process::Command;

use common::*;
use serde_json::Value;

const ENV: &str = "/api/v1/accounts/1/applications/1/environments/Production";

fn post(devpop: &Devpop, path: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, Value) {
    let r = http(&devpop.addr(), "POST", path, headers, body);
    let v = serde_json::from_slice(&r.body).unwrap_or_else(|_| panic!("not JSON ({}): {}", r.status, r.text()));
    (r.status, v)
}

fn push(devpop: &Devpop, work: &std::path::Path, branch: &str) -> Value {
    let out = git(work, &["push", "origin", &format!("HEAD:{branch}")]);
    assert!(out.status.success(), "{}", stderr(&out));
    let d = wait_deployment(devpop, queued_deployment(&stderr(&out), branch));
    assert_eq!(d["state"], "ready", "{d}");
    d
}

#[test]
fn rollback_and_redeploy_answer_202_with_the_deployment_and_refuse_bad_targets_as_json_errors() {
    let devpop = Devpop::start();
    let url = devpop.create_app("1", "1", "site");
    let (_dir, work) = clone(&url);
    replace_tree(&work, &fixture("repos/sample-application"));
    commit_all(&work, "v1");
    let v1 = push(&devpop, &work, "Production");
    let staging = push(&devpop, &work, "Staging");

    // Nothing earlier with another state: 409.
    let (status, e) = post(&devpop, &format!("{ENV}/rollback"), &[], b"");
    assert_eq!(status, 409, "{e}");
    assert_eq!(e["error"]["code"], "nothing_to_restore");

    std::fs::write(
        work.join("cache/default.vcl"),
        "vcl 4.1;\nbackend default { .host = \"next-hop\"; .port = \"80\"; }\n",
    )
    .unwrap();
    commit_all(&work, "v2");
    let v2 = push(&devpop, &work, "Production");

    let json = [("Content-Type", "application/json")];
    for (body, status, code) in [
        (r#"{"to": 999}"#, 404, "not_found"),
        (&*format!(r#"{{"to": {}}}"#, staging["id"]), 422, "invalid_target"),
        (r#"{"to": "x"}"#, 400, "invalid_body"),
        (r#"{"onto": 1}"#, 400, "invalid_body"),
    ] {
        let (s, e) = post(&devpop, &format!("{ENV}/rollback"), &json, body.as_bytes());
        assert_eq!((s, e["error"]["code"].as_str()), (status, Some(code)), "{body}: {e}");
    }
    let (s, e) = post(&devpop, "/api/v1/accounts/1/applications/1/environments/Nope/rollback", &[], b"");
    assert_eq!((s, e["error"]["code"].as_str()), (404, Some("not_found")), "{e}");
    let repo = devpop.repo_path("1", "1", "site");
    assert_eq!(server_branch(&repo, "Production"), v2["commit"].as_str().unwrap(), "refusals change nothing");

    let (s, d) = post(&devpop, &format!("{ENV}/rollback"), &json, format!(r#"{{"to": {}}}"#, v1["id"]).as_bytes());
    assert_eq!(s, 202, "{d}");
    assert_eq!(d["restores"], v1["id"]);
    assert_eq!(d["environment"], "Production");
    let head = server_branch(&repo, "Production");
    assert_eq!(d["commit"], head.as_str());
    assert!(
        d["validation"].to_string().contains("Validating configuration for proxy cache"),
        "checked like a push: {d}"
    );
    let done = wait_deployment(&devpop, d["id"].as_u64().unwrap());
    assert_eq!(done["state"], "ready");
    assert_eq!(
        git_ok(&repo, &["rev-parse", &format!("{head}^{{tree}}")]),
        git_ok(&repo, &["rev-parse", &format!("{}^{{tree}}", v1["commit"].as_str().unwrap())])
    );

    let (s, d) = post(&devpop, &format!("{ENV}/redeploy"), &[], b"");
    assert_eq!(s, 202, "{d}");
    assert_eq!(d["commit"], head.as_str());
    assert_eq!(wait_deployment(&devpop, d["id"].as_u64().unwrap())["state"], "ready");
    assert_eq!(server_branch(&repo, "Production"), head);
    let (s, e) = post(&devpop, "/api/v1/accounts/1/applications/1/environments/Nope/redeploy", &[], b"");
    assert_eq!((s, e["error"]["code"].as_str()), (404, Some("not_found")), "{e}");
}

#[test]
fn rollback_and_redeploy_need_a_token_that_may_write_the_account() {
    let devpop = Devpop::start_with(&["--auth", "tokens"]);
    devpop.create_app("1", "1", "site");
    let token = |args: &[&str]| {
        let out =
            Command::new(DEVPOP).args(["token", "create"]).args(args).arg("--data").arg(devpop.data.path()).output();
        format!("Bearer {}", String::from_utf8(out.unwrap().stdout).unwrap().trim())
    };
    let (read_only, other) = (token(&["--account", "1", "--read-only"]), token(&["--account", "2"]));
    for action in ["rollback", "redeploy"] {
        let path = format!("{ENV}/{action}");
        let (s, e) = post(&devpop, &path, &[], b"");
        assert_eq!((s, e["error"]["code"].as_str()), (401, Some("unauthorized")), "{e}");
        let (s, e) = post(&devpop, &path, &[("Authorization", &read_only)], b"");
        assert_eq!((s, e["error"]["code"].as_str()), (403, Some("forbidden")), "{e}");
        let (s, e) = post(&devpop, &path, &[("Authorization", &other)], b"");
        assert_eq!((s, e["error"]["code"].as_str()), (403, Some("forbidden")), "{e}");
    }
    let writer = token(&["--account", "1"]);
    let (s, d) = post(&devpop, &format!("{ENV}/redeploy"), &[("Authorization", &writer)], b"");
    assert_eq!(s, 202, "{d}");
    assert!(d["pusher"].as_str().unwrap().starts_with("tok_"), "{d}");
}
