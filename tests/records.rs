//! Deployment records against a real server and the real git client: pagination of every list
//! (numbers in the query string), reconciliation of branches that moved without a deployment
//! (at start and on demand), and the audit log's record of every push.

mod common;

use std::time::Duration;

use common::*;

fn get_json(devpop: &Devpop, path: &str) -> (u16, serde_json::Value) {
    let r = http(&devpop.addr(), "GET", path, &[], b"");
    (r.status, serde_json::from_slice(&r.body).unwrap_or(serde_json::Value::Null))
}

/// Commits a change in `work` and returns the commit id.
fn change(work: &std::path::Path, name: &str) -> String {
    std::fs::write(work.join(format!("{name}.txt")), format!("{name}\n")).unwrap();
    commit_all(work, name);
    git_ok(work, &["rev-parse", "HEAD"]).trim().to_owned()
}

fn push_ready(devpop: &Devpop, work: &std::path::Path, options: &[&str]) -> u64 {
    let mut args = vec!["push"];
    args.extend_from_slice(options);
    args.extend_from_slice(&["origin", "HEAD:Production"]);
    let out = git(work, &args);
    assert!(out.status.success(), "{}", stderr(&out));
    let id = queued_deployment(&stderr(&out), "Production");
    assert_eq!(wait_deployment(devpop, id)["state"], "ready");
    id
}

const ENV: &str = "/api/v1/accounts/1/applications/1/environments/Production";

#[test]
fn every_list_takes_offset_and_limit_as_numbers() {
    let (devpop, _dir, work) = cloned_site();
    let mut ids = Vec::new();
    for n in 0..3 {
        change(&work, &format!("c{n}"));
        ids.push(push_ready(&devpop, &work, &[]));
    }
    // The fault: these answered 400 text/plain ("invalid type: string \"20\", expected usize").
    let (status, page) = get_json(&devpop, "/api/v1/deployments?limit=20&offset=1");
    assert_eq!(status, 200, "{page}");
    assert_eq!((page["total"].as_u64(), page["limit"].as_u64(), page["offset"].as_u64()), (Some(3), Some(20), Some(1)));
    let got: Vec<u64> = page["items"].as_array().unwrap().iter().map(|d| d["id"].as_u64().unwrap()).collect();
    assert_eq!(got, [ids[1], ids[0]], "newest first, after the offset");
    let (_, page) = get_json(
        &devpop,
        "/api/v1/deployments?limit=1&offset=0&account=1&application=1&environment=Production&state=ready",
    );
    assert_eq!((page["total"].as_u64(), page["items"][0]["id"].as_u64()), (Some(3), Some(ids[2])));
    let (_, page) = get_json(&devpop, &format!("/api/v1/deployments?limit=5&before={}", ids[2]));
    let got: Vec<u64> = page["items"].as_array().unwrap().iter().map(|d| d["id"].as_u64().unwrap()).collect();
    assert_eq!((got, page["total"].as_u64()), (vec![ids[1], ids[0]], Some(3)), "a cursor: older than the id");
    let (_, page) = get_json(&devpop, "/api/v1/deployments?environment=Staging");
    assert_eq!(page["total"], 0);
    for path in [
        format!("{ENV}/deployments?limit=2&offset=1"),
        "/api/v1/audit?limit=2&offset=1".to_owned(),
        "/api/v1/accounts?limit=2&offset=0".to_owned(),
        "/api/v1/accounts/1/applications?limit=2&offset=0".to_owned(),
        "/api/v1/accounts/1/applications/1/environments?limit=2&offset=0".to_owned(),
        "/api/v1/packages?limit=2&offset=1".to_owned(),
        "/api/v1/tokens?limit=2&offset=0".to_owned(),
    ] {
        let (status, page) = get_json(&devpop, &path);
        assert_eq!(status, 200, "{path}: {page}");
        assert_eq!(page["limit"], 2, "{path}: {page}");
        assert!(page["items"].as_array().unwrap().len() <= 2, "{path}: {page}");
    }
    let (_, page) = get_json(&devpop, &format!("{ENV}/deployments?limit=2&offset=1"));
    assert_eq!(page["items"][0]["id"].as_u64(), Some(ids[1]));
    for bad in [
        "/api/v1/deployments?limit=twenty",
        "/api/v1/deployments?state=done",
        "/api/v1/deployments?before=x",
        "/api/v1/audit?offset=-1",
    ] {
        let r = http(&devpop.addr(), "GET", bad, &[], b"");
        assert_eq!(r.status, 400, "{bad}");
        let body: serde_json::Value = serde_json::from_slice(&r.body).expect("a JSON error");
        assert_eq!(body["error"]["code"], "invalid_query", "{bad}: {body}");
    }
}

#[test]
fn reconciliation_deploys_a_branch_that_moved_without_the_server_at_start_and_on_demand() {
    let (devpop, _dir, work) = cloned_site();
    let a = change(&work, "a");
    push_ready(&devpop, &work, &[]);
    let (_, env) = get_json(&devpop, ENV);
    assert_eq!((env["branch_differs"].as_bool(), env["deployed_commit"].as_str()), (Some(false), Some(a.as_str())));

    // A push straight to the repo on disk: checked by `devpop hook pre-receive`, deployed by nobody.
    let repo = devpop.repo_path("1", "1", "site");
    let b = change(&work, "b");
    let out = git(&work, &["push", repo.to_str().unwrap(), "HEAD:Production"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let (_, env) = get_json(&devpop, ENV);
    assert_eq!(env["commit"].as_str(), Some(b.as_str()));
    assert_eq!((env["branch_differs"].as_bool(), env["deployed_commit"].as_str()), (Some(true), Some(a.as_str())));
    let html = http(&devpop.addr(), "GET", "/console/accounts/1/applications/1", &[], b"").text();
    assert!(html.contains(&format!("branch at <span class=\"mono\">{}</span>", &b[..12])), "the console shows it");

    let r = http(&devpop.addr(), "POST", "/api/v1/reconcile", &[], b"");
    assert_eq!(r.status, 200, "{}", r.text());
    let queued: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    let queued = queued.as_array().unwrap();
    assert_eq!(queued.len(), 1, "{queued:?}");
    assert_eq!(queued[0]["commit"].as_str(), Some(b.as_str()));
    let expected = format!("reconciled: branch at {}, last deployment at {}", &b[..12], &a[..12]);
    assert!(queued[0]["steps"].as_array().unwrap().iter().any(|s| s["message"] == expected.as_str()), "{queued:?}");
    assert_eq!(wait_deployment(&devpop, queued[0]["id"].as_u64().unwrap())["state"], "ready");
    let (_, env) = get_json(&devpop, ENV);
    assert_eq!(env["branch_differs"], false, "{env}");
    let r = http(&devpop.addr(), "POST", "/api/v1/reconcile", &[], b"");
    assert_eq!(r.text().trim(), "[]", "nothing left to reconcile: no duplicate");

    // The same while the server is down: reconciled at start.
    let data = devpop.stop();
    let c = change(&work, "c");
    let out = git(&work, &["push", repo.to_str().unwrap(), "HEAD:Production"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let devpop = Devpop::start_in(data, &[]);
    git_ok(&work, &["remote", "set-url", "origin", &format!("{}/account/1/application/1/site.git", devpop.url)]);
    let mut page = serde_json::Value::Null;
    let reconciled = eventually(Duration::from_secs(30), || {
        page = get_json(&devpop, "/api/v1/deployments?limit=1").1;
        page["items"][0]["commit"].as_str() == Some(c.as_str())
    });
    assert!(reconciled, "reconciled at start: {page}");
    let newest = &page["items"][0];
    let expected = format!("reconciled: branch at {}, last deployment at {}", &c[..12], &b[..12]);
    assert!(newest["steps"].as_array().unwrap().iter().any(|s| s["message"] == expected.as_str()), "{newest}");
    assert_eq!(wait_deployment(&devpop, newest["id"].as_u64().unwrap())["state"], "ready");
    assert_eq!(get_json(&devpop, "/api/v1/deployments").1["total"], 3, "a, b and c: one deployment each");
}

#[test]
fn every_push_reaches_the_audit_log_wait_and_dry_run_included() {
    let (devpop, _dir, work) = cloned_site();
    let a = change(&work, "a");
    let plain = push_ready(&devpop, &work, &[]);
    let b = change(&work, "b");
    let out = git(&work, &["push", "-o", "wait", "origin", "HEAD:Production"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let waited = queued_deployment(&stderr(&out), "Production");
    let c = change(&work, "c");
    let out = git(&work, &["push", "-o", "dry-run", "origin", "HEAD:Production"]);
    assert!(stderr(&out).contains("Dry run"), "{}", stderr(&out));
    assert_eq!(server_branch(&devpop.repo_path("1", "1", "site"), "Production"), b, "a dry run changes nothing");
    let (_, log) = get_json(&devpop, "/api/v1/audit?limit=10");
    let entries: Vec<(String, String)> = log["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["action"].as_str().unwrap().to_owned(), e["detail"].as_str().unwrap().to_owned()))
        .collect();
    let has = |action: &str, detail: String| entries.iter().any(|e| e.0 == action && e.1 == detail);
    assert!(has("push", format!("commit {} (deployment {plain})", &a[..12])), "{entries:?}");
    assert!(has("push", format!("commit {} (-o wait)", &b[..12])), "{entries:?}");
    assert!(has("push.dry-run", format!("commit {} (-o dry-run)", &c[..12])), "{entries:?}");
    assert_eq!(wait_deployment(&devpop, waited)["state"], "ready");
    assert!(eventually(Duration::from_secs(5), || get_json(&devpop, "/api/v1/audit").1["total"].as_u64() >= Some(3)));
}

#[test]
fn only_an_admin_token_may_reconcile_and_lists_keep_to_the_tokens_account() {
    let devpop = Devpop::start_with(&["--auth", "tokens"]);
    devpop.create_app("acme", "shop", "shop");
    let token = |args: &[&str]| format!("Bearer {}", devpop.token(args));
    let (acme, admin) = (token(&["--account", "acme"]), token(&["--admin"]));
    let post = |auth: &str| http(&devpop.addr(), "POST", "/api/v1/reconcile", &[("Authorization", auth)], b"");
    assert_eq!(post(&acme).status, 403);
    assert_eq!(post(&admin).status, 200);
    let audit = |auth: &str| -> serde_json::Value {
        serde_json::from_slice(
            &http(&devpop.addr(), "GET", "/api/v1/audit?limit=50", &[("Authorization", auth)], b"").body,
        )
        .unwrap()
    };
    let all = audit(&admin);
    assert!(all["items"].as_array().unwrap().iter().any(|e| e["action"] == "reconcile"), "{all}");
    // The account's token sees its account's entries only (application.create, its token's
    // creation), not the server-wide ones (the admin token's creation, reconcile), and its total
    // counts only those.
    let own = audit(&acme);
    assert!(own["items"].as_array().unwrap().iter().all(|e| e["account"] == "acme"), "{own}");
    assert_eq!(own["total"], 2, "{own}");
    let other = http(&devpop.addr(), "GET", "/api/v1/deployments?account=globex", &[("Authorization", &acme)], b"");
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&other.body).unwrap()["total"], 0);
}
