//! Access control with `--auth tokens`, against a real server, git and the API: missing, wrong,
//! revoked, expired and read-only tokens; one account's token against every route of another;
//! path traversal in path parameters; and no token in plain text on disk or in the logs.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

/// The clone URL with `section-token:<token>` as credentials.
fn with_token(url: &str, token: &str) -> String {
    url.replacen("http://", &format!("http://section-token:{token}@"), 1)
}

fn bearer(t: &str) -> String {
    format!("Bearer {t}")
}

struct World {
    devpop: Devpop,
    url_a: String,
    url_b: String,
    a: String,
    a_read: String,
    b: String,
    admin: String,
}

fn world() -> World {
    let devpop = Devpop::start_with(&["--auth", "tokens"]);
    let url_a = devpop.create_app("acme", "shop", "shop");
    let url_b = devpop.create_app("globex", "site", "site");
    let a = devpop.token(&["--account", "acme"]);
    let a_read = devpop.token(&["--account", "acme", "--read-only"]);
    let b = devpop.token(&["--account", "globex"]);
    let admin = devpop.token(&["--admin"]);
    World { devpop, url_a, url_b, a, a_read, b, admin }
}

#[test]
fn git_needs_a_valid_token_of_the_repos_account() {
    let w = world();
    let dir = tempfile::tempdir().unwrap();
    // No token: 401, so git asks for credentials (and fails without a terminal).
    let out = git(dir.path(), &["clone", &w.url_a, "none"]);
    assert!(!out.status.success());
    let r = http(
        &w.devpop.addr(),
        "GET",
        "/account/acme/application/shop/shop.git/info/refs?service=git-upload-pack",
        &[],
        b"",
    );
    assert_eq!(r.status, 401);
    assert!(
        r.head.contains("WWW-Authenticate: Basic realm=\"devpop\"")
            || r.head.to_ascii_lowercase().contains("www-authenticate: basic realm=\"devpop\""),
        "{}",
        r.head
    );
    // A wrong token.
    assert!(!git(dir.path(), &["clone", &with_token(&w.url_a, "dp_wrong"), "wrong"]).status.success());
    // The right one: clone and push.
    git_ok(dir.path(), &["clone", "-q", &with_token(&w.url_a, &w.a), "ok"]);
    let work = dir.path().join("ok");
    std::fs::write(work.join("x.txt"), "x\n").unwrap();
    commit_all(&work, "x");
    let out = git(&work, &["push", "origin", "Production"]);
    assert!(out.status.success(), "{}", stderr(&out));
    // A read-only token clones but cannot push.
    git_ok(dir.path(), &["clone", "-q", &with_token(&w.url_a, &w.a_read), "ro"]);
    let ro = dir.path().join("ro");
    std::fs::write(ro.join("y.txt"), "y\n").unwrap();
    commit_all(&ro, "y");
    let out = git(&ro, &["push", "origin", "Production"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("403"), "{}", stderr(&out));
    // Account A's token against account B's repo: 403 whether the repo exists or not.
    let exists = http(
        &w.devpop.addr(),
        "GET",
        "/account/globex/application/site/site.git/info/refs?service=git-upload-pack",
        &[("Authorization", &bearer(&w.a))],
        b"",
    );
    let missing = http(
        &w.devpop.addr(),
        "GET",
        "/account/globex/application/nope/nope.git/info/refs?service=git-upload-pack",
        &[("Authorization", &bearer(&w.a))],
        b"",
    );
    assert_eq!((exists.status, missing.status), (403, 403));
    assert_eq!(exists.text(), missing.text(), "a refusal does not reveal whether the repo exists");
    assert!(!git(dir.path(), &["clone", &with_token(&w.url_b, &w.a), "theirs"]).status.success());
    git_ok(dir.path(), &["clone", "-q", &with_token(&w.url_b, &w.admin), "admin"]);
}

#[test]
fn revoked_and_expired_tokens_stop_working() {
    let w = world();
    let dir = tempfile::tempdir().unwrap();
    let short = w.devpop.token(&["--account", "acme", "--expires", "1s"]);
    git_ok(dir.path(), &["clone", "-q", &with_token(&w.url_a, &short), "before"]);
    // Waits for the expiry (an event: the token stops working), bounded.
    let mut n = 0;
    let expired = eventually(Duration::from_secs(30), || {
        n += 1;
        !git(dir.path(), &["clone", "-q", &with_token(&w.url_a, &short), &format!("after{n}")]).status.success()
    });
    assert!(expired, "a token created with --expires 1s still worked 30 s later");

    let list = Command::new(DEVPOP).args(["token", "list", "--data"]).arg(w.devpop.data.path()).output().unwrap();
    let listing = String::from_utf8_lossy(&list.stdout).into_owned();
    let id = listing.lines().find(|l| l.contains("acme\tread-write")).unwrap().split('\t').next().unwrap().to_owned();
    let out = Command::new(DEVPOP).args(["token", "revoke", &id, "--data"]).arg(w.devpop.data.path()).output().unwrap();
    assert!(out.status.success());
    assert!(!git(dir.path(), &["clone", &with_token(&w.url_a, &w.a), "revoked"]).status.success(), "revoked");
    let r =
        http(&w.devpop.addr(), "GET", "/api/v1/accounts/acme/applications", &[("Authorization", &bearer(&w.a))], b"");
    assert_eq!(r.status, 401);
}

#[test]
fn the_api_scopes_every_route_to_the_tokens_account() {
    let w = world();
    let addr = w.devpop.addr();
    let get = |path: &str, auth: &[(&str, &str)]| http(&addr, "GET", path, auth, b"");
    assert_eq!(get("/api/v1/accounts/acme/applications", &[]).status, 401);
    assert_eq!(get("/api/v1/accounts/acme/applications", &[("Authorization", &bearer(&w.a))]).status, 200);
    assert_eq!(get("/api/v1/accounts/acme/applications", &[("section-token", &w.a)]).status, 200);
    assert_eq!(get("/healthz", &[]).status, 200, "health stays public");

    // Every account-scoped route of B, with A's token: 403 forbidden (JSON), for GET and writes.
    let b_routes = [
        ("GET", "/api/v1/accounts/globex/applications"),
        ("POST", "/api/v1/accounts/globex/applications"),
        ("GET", "/api/v1/accounts/globex/applications/site"),
        ("DELETE", "/api/v1/accounts/globex/applications/site"),
        ("GET", "/api/v1/accounts/globex/applications/site/environments"),
        ("POST", "/api/v1/accounts/globex/applications/site/environments"),
        ("GET", "/api/v1/accounts/globex/applications/site/environments/Production"),
        ("DELETE", "/api/v1/accounts/globex/applications/site/environments/Production"),
        ("GET", "/api/v1/accounts/globex/applications/site/environments/Production/stack"),
        ("GET", "/api/v1/accounts/globex/applications/site/environments/Production/config"),
        ("GET", "/api/v1/accounts/globex/applications/site/environments/Production/deployments"),
        ("GET", "/account/globex/application/site/site.git/info/refs?service=git-upload-pack"),
        ("POST", "/account/globex/application/site/site.git/git-upload-pack"),
        ("POST", "/account/globex/application/site/site.git/git-receive-pack"),
        ("GET", "/rendered/account/globex/application/site/site.git/info/refs?service=git-upload-pack"),
        ("GET", "/console/accounts/globex/applications/site"),
    ];
    for (method, path) in b_routes {
        let r =
            http(&addr, method, path, &[("Authorization", &bearer(&w.a)), ("Content-Type", "application/json")], b"{}");
        assert_eq!(r.status, 403, "{method} {path}: {}", r.text());
        assert!(
            r.text().contains("this token cannot access account \\\"globex\\\"")
                || r.text().contains("this token cannot access account \"globex\""),
            "{method} {path}: {}",
            r.text()
        );
    }
    // Read-only tokens cannot change anything; admin-only routes need the admin token.
    let r = http(
        &addr,
        "POST",
        "/api/v1/accounts/acme/applications",
        &[("Authorization", &bearer(&w.a_read)), ("Content-Type", "application/json")],
        br#"{"application":"x","origin":"x.com"}"#,
    );
    assert_eq!(r.status, 403);
    assert_eq!(get("/api/v1/accounts", &[("Authorization", &bearer(&w.a))]).status, 403);
    assert_eq!(get("/api/v1/accounts", &[("Authorization", &bearer(&w.admin))]).status, 200);
    // Deployments of other accounts are not listed, and look like they do not exist.
    let dir = tempfile::tempdir().unwrap();
    git_ok(dir.path(), &["clone", "-q", &with_token(&w.url_b, &w.b), "b"]);
    let work = dir.path().join("b");
    std::fs::write(work.join("x.txt"), "x\n").unwrap();
    commit_all(&work, "x");
    let out = git(&work, &["push", "origin", "Production"]);
    let id = queued_deployment(&stderr(&out), "Production");
    let mine = get(&format!("/api/v1/deployments/{id}"), &[("Authorization", &bearer(&w.b))]);
    assert_eq!(mine.status, 200);
    let theirs = get(&format!("/api/v1/deployments/{id}"), &[("Authorization", &bearer(&w.a))]);
    assert_eq!(theirs.status, 404);
    let list: serde_json::Value =
        serde_json::from_slice(&get("/api/v1/deployments", &[("Authorization", &bearer(&w.a))]).body).unwrap();
    assert_eq!(list["total"], 0);
}

#[test]
fn path_traversal_in_any_path_parameter_never_escapes() {
    let w = world();
    let addr = w.devpop.addr();
    let auth = [("Authorization", bearer(&w.admin))];
    let auth: Vec<(&str, &str)> = auth.iter().map(|(k, v)| (*k, v.as_str())).collect();
    for bad in ["..", "%2e%2e", "..%2f..%2fetc", "a%2fb", "a%00b", "%2F", ".git"] {
        for path in [
            format!("/account/{bad}/application/shop/shop.git/info/refs?service=git-upload-pack"),
            format!("/account/acme/application/{bad}/shop.git/info/refs?service=git-upload-pack"),
            format!("/account/acme/application/shop/{bad}/info/refs?service=git-upload-pack"),
            format!("/api/v1/accounts/{bad}/applications"),
            format!("/api/v1/accounts/acme/applications/{bad}"),
            format!("/api/v1/accounts/acme/applications/shop/environments/{bad}"),
            format!("/api/v1/deployments/{bad}"),
        ] {
            let r = http(&addr, "GET", &path, &auth, b"");
            assert!([400, 403, 404].contains(&r.status), "{path}: {} {}", r.status, r.text());
            assert!(!r.text().contains("root:"), "{path} leaked a host file");
        }
    }
}

#[test]
fn no_token_is_stored_or_logged_in_plain_text() {
    let data = tempfile::tempdir().unwrap();
    let log = data.path().join("server.log");
    let mut server = Command::new(DEVPOP)
        .args(["serve", "--listen", "127.0.0.1:0", "--auth", "tokens", "--data"])
        .arg(data.path().join("d"))
        .env("DEVPOP_LOG", "debug")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut first = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(server.stdout.take().unwrap()), &mut first).unwrap();
    let base = first.split_whitespace().nth(3).unwrap().to_owned();
    let addr = base.trim_start_matches("http://").to_owned();
    let dd = data.path().join("d");
    let out = Command::new(DEVPOP).args(["app", "create", "acme", "shop", "shop", "--data"]).arg(&dd).output().unwrap();
    assert!(out.status.success());
    let out = Command::new(DEVPOP).args(["token", "create", "--account", "acme", "--data"]).arg(&dd).output().unwrap();
    let t = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    // Use it every way: git, Bearer, header, console login.
    let dir = tempfile::tempdir().unwrap();
    git_ok(
        dir.path(),
        &["clone", "-q", &with_token(&format!("{base}/account/acme/application/shop/shop.git"), &t), "w"],
    );
    let work = dir.path().join("w");
    std::fs::write(work.join("x.txt"), "x\n").unwrap();
    commit_all(&work, "x");
    assert!(git(&work, &["push", "origin", "Production"]).status.success());
    http(&addr, "GET", "/api/v1/deployments", &[("Authorization", &bearer(&t))], b"");
    http(&addr, "GET", "/api/v1/deployments", &[("section-token", &t)], b"");
    let login = http(
        &addr,
        "POST",
        "/console/login",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        format!("token={t}").as_bytes(),
    );
    assert_eq!(login.status, 303, "{}", login.head);
    assert!(login.head.contains("HttpOnly") && login.head.contains("SameSite=Strict"), "{}", login.head);
    // Everything the push leads to is written: its deployment finished, then a graceful stop.
    let finished = eventually(Duration::from_secs(30), || {
        let r = http(&addr, "GET", "/api/v1/deployments/1", &[("Authorization", &bearer(&t))], b"");
        let d: serde_json::Value = serde_json::from_slice(&r.body).unwrap_or_default();
        matches!(d["state"].as_str(), Some("ready" | "failed"))
    });
    assert!(finished, "the push's deployment finished");
    let _ = Command::new("kill").args(["-TERM", &server.id().to_string()]).status();
    let _ = server.wait();

    let mut checked = 0;
    let mut stack = vec![data.path().to_path_buf()];
    while let Some(p) = stack.pop() {
        for e in std::fs::read_dir(&p).unwrap().flatten() {
            let path = e.path();
            if e.file_type().unwrap().is_dir() {
                stack.push(path);
            } else if let Ok(bytes) = std::fs::read(&path) {
                checked += 1;
                assert!(
                    !bytes.windows(t.len()).any(|w| w == t.as_bytes()),
                    "the token is in plain text in {}",
                    path.display()
                );
            }
        }
    }
    assert!(checked > 10, "the data dir and the log were read ({checked} files)");
}

#[test]
fn a_push_of_1000_refs_is_refused_whole() {
    let (devpop, _dir, work) = cloned_site();
    let mut refspecs = Vec::new();
    for i in 0..1000 {
        git_ok(&work, &["branch", &format!("env{i}")]);
        refspecs.push(format!("env{i}"));
    }
    let mut args = vec!["push", "origin"];
    args.extend(refspecs.iter().map(String::as_str));
    let out = git(&work, &args);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("remote: error: this push updates 1000 refs; at most 100 are accepted in one push"),
        "{}",
        &stderr(&out)[..500.min(stderr(&out).len())]
    );
    let refs = git_ok(&devpop.repo_path("1", "1", "site"), &["for-each-ref", "--format=%(refname)"]);
    assert_eq!(refs.trim(), "refs/heads/Production", "nothing of the push landed");
}

#[test]
fn a_burst_of_api_requests_past_the_limit_gets_429_with_retry_after() {
    let devpop = Devpop::start_with(&["--api-rate", "1", "--api-burst", "5"]);
    let mut statuses = Vec::new();
    let mut retry = None;
    for _ in 0..12 {
        let r = http(&devpop.addr(), "GET", "/api/v1/deployments", &[], b"");
        if r.status == 429 {
            retry =
                r.head.lines().find_map(|l| l.to_ascii_lowercase().strip_prefix("retry-after: ").map(str::to_owned));
            assert!(r.text().contains("\"code\":\"rate_limited\""), "{}", r.text());
        }
        statuses.push(r.status);
    }
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 5, "{statuses:?}");
    assert!(statuses[5..].iter().all(|s| *s == 429), "{statuses:?}");
    assert_eq!(retry.as_deref(), Some("1"));
    assert_eq!(http(&devpop.addr(), "GET", "/healthz", &[], b"").status, 200, "git and health are not API-limited");
}

#[test]
fn pushes_in_progress_are_bounded_per_account() {
    use std::io::Write;
    let devpop = Devpop::start_with(&["--pushes-per-account", "1"]);
    let url = devpop.create_app("acme", "one", "one");
    devpop.create_app("globex", "two", "two");
    // A push that is still sending (its connection open, its body not all there).
    let head = server_branch(&devpop.repo_path("acme", "one", "one"), "Production");
    let command = format!("{head} {} refs/heads/Production\0 report-status\n", "1".repeat(40));
    let mut slow = std::net::TcpStream::connect(devpop.addr()).unwrap();
    slow.write_all(b"POST /account/acme/application/one/one.git/git-receive-pack HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-git-receive-pack-request\r\nContent-Length: 1000000\r\n\r\n").unwrap();
    slow.write_all(format!("{:04x}{command}0000PACK\0\0\0\x02\0\0\0\x05", command.len() + 4).as_bytes()).unwrap();
    // It holds the account's one push slot once git has started receiving its pack (git made
    // the push's quarantine).
    let repo = devpop.repo_path("acme", "one", "one");
    assert!(eventually(Duration::from_secs(30), || !quarantines(&repo).is_empty()), "the slow push started");
    let (_dir, work) = clone(&url);
    std::fs::write(work.join("x.txt"), "x\n").unwrap();
    commit_all(&work, "x");
    let out = git(&work, &["push", "origin", "Production"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(
            "remote: devpop: account acme has 1 pushes in progress already (the limit); push again in a moment"
        ),
        "the refusal is a remote: line: {}",
        stderr(&out)
    );
    let r = http(
        &devpop.addr(),
        "POST",
        "/account/acme/application/one/one.git/git-receive-pack",
        &[("Content-Type", "application/x-git-receive-pack-request")],
        b"0000",
    );
    assert!(r.text().contains("account acme has 1 pushes in progress already"), "{}", r.text());
    // Another account is not affected.
    let r = http(
        &devpop.addr(),
        "POST",
        "/account/globex/application/two/two.git/git-receive-pack",
        &[("Content-Type", "application/x-git-receive-pack-request")],
        b"0000",
    );
    assert_eq!(r.status, 200);
    drop(slow);
    assert!(
        eventually(Duration::from_secs(10), || git(&work, &["push", "origin", "Production"]).status.success()),
        "once the first push ends, the next goes through"
    );
}

#[test]
fn tokens_are_managed_over_the_api_and_every_action_is_audited() {
    let w = world();
    let addr = w.devpop.addr();
    let admin = bearer(&w.admin);
    // An admin creates a token for acme over the API, which then pushes.
    let r = http(
        &addr,
        "POST",
        "/api/v1/tokens",
        &[("Authorization", &admin), ("Content-Type", "application/json")],
        br#"{"account":"acme"}"#,
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let created: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    let t = created["token"].as_str().unwrap().to_owned();
    let r = http(
        &addr,
        "POST",
        "/api/v1/tokens",
        &[("Authorization", &bearer(&w.a)), ("Content-Type", "application/json")],
        br#"{"account":"acme"}"#,
    );
    assert_eq!(r.status, 403, "only an admin manages tokens");
    let dir = tempfile::tempdir().unwrap();
    git_ok(dir.path(), &["clone", "-q", &with_token(&w.url_a, &t), "w"]);
    let work = dir.path().join("w");
    std::fs::write(work.join("x.txt"), "x\n").unwrap();
    commit_all(&work, "x");
    let out = git(&work, &["push", "origin", "Production"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let r = http(
        &addr,
        "POST",
        "/api/v1/accounts/acme/applications/shop/environments",
        &[("Authorization", &bearer(&t)), ("Content-Type", "application/json")],
        br#"{"name":"Dev","source":"Production"}"#,
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let r = http(
        &addr,
        "DELETE",
        &format!("/api/v1/tokens/{}", created["id"].as_str().unwrap()),
        &[("Authorization", &admin)],
        b"",
    );
    assert_eq!(r.status, 200);
    assert_eq!(
        http(&addr, "GET", "/api/v1/deployments", &[("Authorization", &bearer(&t))], b"").status,
        401,
        "revoked over the API"
    );

    let audit = |who: &str| -> Vec<serde_json::Value> {
        let r = http(&addr, "GET", "/api/v1/audit?limit=500", &[("Authorization", &bearer(who))], b"");
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        v["items"].as_array().unwrap().clone()
    };
    let all = audit(&w.admin);
    let id = created["id"].as_str().unwrap();
    let find = |action: &str, who: &str| all.iter().find(|e| e["action"] == action && e["who"] == who).cloned();
    let push = find("push", id).expect("the push is audited with its token");
    assert_eq!(
        (push["account"].as_str(), push["target"].as_str(), push["from"].as_str()),
        (Some("acme"), Some("shop/shop/Production"), Some("127.0.0.1"))
    );
    assert!(find("environment.create", id).is_some());
    assert!(all.iter().any(|e| e["action"] == "token.create" && e["who"] == "cli"), "CLI actions are audited too");
    assert!(all.iter().any(|e| e["action"] == "application.create" && e["who"] == "cli"));
    assert!(all.iter().any(|e| e["action"] == "token.revoke" && e["target"] == id));
    // Account B sees none of A's entries.
    assert!(audit(&w.b).iter().all(|e| e["account"] == "globex"), "{:?}", audit(&w.b));
}

#[test]
fn a_file_over_the_blob_limit_is_refused_naming_it() {
    let devpop = Devpop::start_with(&["--max-blob-bytes", "1M"]);
    let url = devpop.create_app("1", "1", "site");
    let (_dir, work) = clone(&url);
    std::fs::create_dir(work.join("assets")).unwrap();
    std::fs::write(work.join("assets/video.bin"), random_bytes(2 << 20)).unwrap();
    commit_all(&work, "a big file");
    let repo = devpop.repo_path("1", "1", "site");
    let before = server_branch(&repo, "Production");
    let out = git(&work, &["push", "origin", "Production"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("remote: error: assets/video.bin (commit "), "{err}");
    assert!(err.contains("): 2097152 bytes; files larger than 1048576 bytes are refused"), "{err}");
    assert_eq!(server_branch(&repo, "Production"), before);
}

#[test]
fn the_console_logs_in_with_a_token_keeps_its_scope_and_logs_out() {
    let w = world();
    let addr = w.devpop.addr();
    let r = http(&addr, "GET", "/console", &[], b"");
    assert_eq!(
        (r.status, r.head.contains("location: /console/login") || r.head.contains("Location: /console/login")),
        (303, true),
        "{}",
        r.head
    );
    let bad = http(
        &addr,
        "POST",
        "/console/login",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        b"token=dp_wrong",
    );
    assert_eq!(bad.status, 401);
    assert!(bad.text().contains("That token is not valid"));
    let login = http(
        &addr,
        "POST",
        "/console/login",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        format!("token={}", w.a).as_bytes(),
    );
    let cookie = login
        .head
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: ").or_else(|| l.strip_prefix("Set-Cookie: ")))
        .and_then(|c| c.split(';').next())
        .unwrap()
        .to_owned();
    assert!(!cookie.contains(&w.a), "the cookie is a session id, not the token");
    let page = http(&addr, "GET", "/console", &[("Cookie", &cookie)], b"");
    assert_eq!(page.status, 200);
    assert!(page.text().contains("shop") && !page.text().contains("globex"), "only the token's account is listed");
    assert!(page.text().contains("Log out"));
    assert_eq!(
        http(&addr, "GET", "/console/accounts/globex/applications/site", &[("Cookie", &cookie)], b"").status,
        403
    );
    assert_eq!(http(&addr, "GET", "/console/accounts/acme/applications/shop", &[("Cookie", &cookie)], b"").status, 200);
    let out = http(&addr, "POST", "/console/logout", &[("Cookie", &cookie)], b"");
    assert!(out.head.contains("Max-Age=0"), "{}", out.head);
    assert_eq!(http(&addr, "GET", "/console", &[("Cookie", &cookie)], b"").status, 303, "the session is gone");
}
