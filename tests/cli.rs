//! The CLI as a person or a script uses it: pipes, terminals, logs; and as a client of a real
//! `devpop serve --auth tokens` (`--server`, `--token`, git's credential helper) for every
//! command that works on a server, its JSON output parsed.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::*;
use serde_json::Value;

/// A `devpop serve --auth tokens` and an admin token made in its data dir.
struct Server {
    devpop: Devpop,
    admin: String,
}

impl Server {
    fn start(extra: &[&str]) -> Server {
        let mut args = vec!["--auth", "tokens"];
        args.extend_from_slice(extra);
        let devpop = Devpop::start_with(&args);
        let out = Command::new(DEVPOP)
            .args(["token", "create", "--admin", "--data"])
            .arg(devpop.data.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        let admin = String::from_utf8(out.stdout).unwrap().trim().to_owned();
        Server { devpop, admin }
    }

    /// The clone URL of an application with a token as git's password.
    fn authed(&self, url: &str, token: &str) -> String {
        url.replacen("http://", &format!("http://section-token:{token}@"), 1)
    }

    /// Waits until deployment `id` is final (read with `devpop deployments show --format json`).
    fn wait(&self, id: u64) -> Value {
        let mut last = Value::Null;
        let done = eventually(Duration::from_secs(60), || {
            let out =
                client(&self.devpop, Some(&self.admin), &["deployments", "show", &id.to_string(), "--format", "json"]);
            last = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
            matches!(last["state"].as_str(), Some("ready" | "failed" | "superseded"))
        });
        assert!(done, "deployment {id} did not finish: {last}");
        last
    }
}

/// `devpop ARGS` as a client of `devpop`'s server (DEVPOP_SERVER, and DEVPOP_TOKEN when
/// given), run in an empty folder with no data dir and no git configuration.
fn client(devpop: &Devpop, token: Option<&str>, args: &[&str]) -> Output {
    let cwd = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(DEVPOP);
    cmd.args(args)
        .current_dir(cwd.path())
        .env_remove("DEVPOP_DATA")
        .env_remove("DEVPOP_TOKEN")
        .env("DEVPOP_SERVER", &devpop.url)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null");
    if let Some(t) = token {
        cmd.env("DEVPOP_TOKEN", t);
    }
    let out = cmd.output().unwrap();
    assert!(!cwd.path().join("devpop-data").exists(), "a client command created ./devpop-data");
    out
}

fn ok(out: &Output) -> String {
    assert!(out.status.success(), "failed:\n{}{}", String::from_utf8_lossy(&out.stdout), stderr(out));
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// An application with the sample repo pushed to Production (deployed); its clone URL.
fn pushed_app(s: &Server, token: &str) -> (String, tempfile::TempDir, std::path::PathBuf) {
    let out = ok(&client(&s.devpop, Some(token), &["app", "create", "1", "1", "site", "--origin", "example.com"]));
    let url = out.lines().find_map(|l| l.trim().strip_prefix("git clone ")).unwrap().to_owned();
    let (dir, work) = clone(&s.authed(&url, token));
    replace_tree(&work, &fixture("repos/sample-application"));
    commit_all(&work, "v1");
    push_and_wait(s, &work);
    (url, dir, work)
}

fn push_and_wait(s: &Server, work: &Path) -> Value {
    let out = git(work, &["push", "origin", "HEAD:Production"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let d = s.wait(queued_deployment(&stderr(&out), "Production"));
    assert_eq!(d["state"], "ready", "{d}");
    d
}

#[test]
fn output_into_a_closed_pipe_ends_the_command_quietly() {
    let data = tempfile::tempdir().unwrap();
    let create = Command::new(DEVPOP)
        .args(["app", "create", "1", "app", "app", "--origin", "example.com", "--data"])
        .arg(data.path())
        .output()
        .unwrap();
    assert!(create.status.success(), "{}", String::from_utf8_lossy(&create.stderr));
    // `devpop app list | head -0`: the reader is gone before the first line is written.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = Command::new(DEVPOP).args(["app", "list", "--data"]).arg(data.path()).stdout(writer).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert!(out.status.success(), "{err}");
}

#[test]
fn logs_carry_no_colour_codes_when_stderr_is_not_a_terminal() {
    let data = tempfile::tempdir().unwrap();
    let mut child = Command::new(DEVPOP)
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(data.path())
        .env("DEVPOP_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    assert!(line.starts_with("devpop serving on "), "{line}");
    // A graceful stop: every log line is written by the time the process has exited.
    let term = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(term.success());
    child.wait().unwrap();
    let mut log = String::new();
    child.stderr.take().unwrap().read_to_string(&mut log).unwrap();
    assert!(log.contains("serving"), "{log}");
    assert!(!log.contains('\x1b'), "colour codes in a piped log: {log:?}");
}

#[test]
fn apps_are_created_listed_and_deleted_through_the_server_with_its_clone_urls() {
    let s = Server::start(&[]);
    let out =
        ok(&client(&s.devpop, Some(&s.admin), &["app", "create", "acme", "shop", "site", "--origin", "example.com"]));
    let url = format!("{}/account/acme/application/shop/site.git", s.devpop.url);
    assert!(out.contains(&format!("git clone {url}")), "{out}");
    // The server has it: it clones.
    let (_dir, work) = clone(&s.authed(&url, &s.admin));
    assert!(work.join("section.config.json").is_file());
    let list = ok(&client(&s.devpop, Some(&s.admin), &["app", "list"]));
    assert_eq!(list.trim(), format!("acme/shop/site\t{url}"));
    // An account's token lists its account's applications (it may not list accounts).
    let t = ok(&client(&s.devpop, Some(&s.admin), &["token", "create", "--account", "acme"]));
    let list = ok(&client(&s.devpop, Some(t.trim()), &["app", "list", "--account", "acme"]));
    assert_eq!(list.trim(), format!("acme/shop/site\t{url}"));
    ok(&client(&s.devpop, Some(&s.admin), &["app", "delete", "acme", "shop"]));
    assert_eq!(ok(&client(&s.devpop, Some(&s.admin), &["app", "list"])).trim(), "");
    assert!(!s.devpop.repo_path("acme", "shop", "site").exists());
}

#[test]
fn a_command_given_neither_a_server_nor_an_existing_data_dir_says_so_and_creates_none() {
    for args in [
        &["app", "list"][..],
        &["app", "create", "1", "app", "app"],
        &["token", "create", "--account", "1"],
        &["package", "list"],
        &["deployments", "list"],
        &["rollback", "1/app/app", "Production"],
    ] {
        let cwd = tempfile::tempdir().unwrap();
        let out = Command::new(DEVPOP)
            .args(args)
            .current_dir(cwd.path())
            .env_remove("DEVPOP_DATA")
            .env_remove("DEVPOP_SERVER")
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?} succeeded");
        let err = stderr(&out);
        assert!(err.contains("no data dir at ./devpop-data: pass --server URL"), "{args:?}: {err}");
        assert!(!cwd.path().join("devpop-data").exists(), "{args:?} created ./devpop-data");
    }
}

#[test]
fn packages_are_added_and_listed_through_the_server() {
    let s = Server::start(&[]);
    let src = tempfile::tempdir().unwrap();
    copy_tree(&fixture("packages/example-simple"), src.path());
    let yaml = src.path().join(".section-proxy.yaml");
    let text = std::fs::read_to_string(&yaml).unwrap().replace("name: example-simple:1.0.0", "name: probe:2.0.0");
    std::fs::write(&yaml, text).unwrap();
    let out = ok(&client(&s.devpop, Some(&s.admin), &["package", "add", src.path().to_str().unwrap()]));
    assert!(out.starts_with("Installed probe:2.0.0 (image "), "{out}");
    assert!(s.devpop.data.path().join("packages/probe/2.0.0/.section-proxy.yaml").is_file());
    let list = ok(&client(&s.devpop, Some(&s.admin), &["package", "list"]));
    let names: Vec<&str> = list.lines().filter_map(|l| l.split('\t').next()).collect();
    assert_eq!(names, ["edge-cache:6.5.0", "example-simple:1.0.0", "probe:2.0.0"], "{list}");
    // Installing is an admin's: an account's token is refused with the server's reason.
    let t = ok(&client(&s.devpop, Some(&s.admin), &["token", "create", "--account", "1"]));
    let out = client(&s.devpop, Some(t.trim()), &["package", "add", src.path().to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("answered 403"), "{}", stderr(&out));
    assert!(stderr(&out).contains("only an admin token"), "{}", stderr(&out));
}

#[test]
fn tokens_are_created_listed_and_revoked_through_the_server() {
    let s = Server::start(&[]);
    let out =
        client(&s.devpop, Some(&s.admin), &["token", "create", "--account", "acme", "--read-only", "--expires", "1d"]);
    let token = ok(&out).trim().to_owned();
    let id = stderr(&out).split_whitespace().nth(1).unwrap().to_owned();
    assert!(id.starts_with("tok_"), "{}", stderr(&out));
    let bearer = format!("Bearer {token}");
    let r = http(&s.devpop.addr(), "GET", "/api/v1/accounts/acme/applications", &[("Authorization", &bearer)], b"");
    assert_eq!(r.status, 200, "{}", r.text());
    let list = ok(&client(&s.devpop, Some(&s.admin), &["token", "list"]));
    let row = list.lines().find(|l| l.starts_with(&id)).unwrap_or_else(|| panic!("{list}"));
    assert!(row.contains("\tacme\tread-only\tactive\texpires 20"), "{row}");
    let out = ok(&client(&s.devpop, Some(&s.admin), &["token", "revoke", &id]));
    assert_eq!(out.trim(), format!("Revoked {id} (account acme)."));
    let r = http(&s.devpop.addr(), "GET", "/api/v1/accounts/acme/applications", &[("Authorization", &bearer)], b"");
    assert_eq!(r.status, 401);
    let list = ok(&client(&s.devpop, Some(&s.admin), &["token", "list"]));
    assert!(list.lines().any(|l| l.starts_with(&id) && l.contains("\trevoked\t")), "{list}");
}

#[test]
fn rollback_and_redeploy_work_through_the_server_under_token_auth_and_are_audited() {
    let s = Server::start(&[]);
    let token = ok(&client(&s.devpop, Some(&s.admin), &["token", "create", "--account", "1"])).trim().to_owned();
    let token_id = {
        let list = ok(&client(&s.devpop, Some(&s.admin), &["token", "list"]));
        list.lines().find(|l| l.contains("\t1\t")).unwrap().split('\t').next().unwrap().to_owned()
    };
    let (_url, _dir, work) = pushed_app(&s, &token);
    let v1 = {
        let out = ok(&client(&s.devpop, Some(&token), &["deployments", "list", "--account", "1", "--format", "json"]));
        let page: Value = serde_json::from_str(&out).unwrap();
        page["items"][0].clone()
    };
    std::fs::write(
        work.join("cache/default.vcl"),
        "vcl 4.1;\nbackend default { .host = \"next-hop\"; .port = \"80\"; }\n",
    )
    .unwrap();
    commit_all(&work, "v2");
    push_and_wait(&s, &work);
    let repo = s.devpop.repo_path("1", "1", "site");
    let v2_head = server_branch(&repo, "Production");

    let out = ok(&client(&s.devpop, Some(&token), &["rollback", "1/1/site", "Production"]));
    assert!(
        out.starts_with(&format!("Rolling Production of 1/1/site back to deployment {} with commit ", v1["id"])),
        "{out}"
    );
    let id: u64 = out
        .lines()
        .find_map(|l| l.strip_prefix("Deployment "))
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("{out}"));
    let d = s.wait(id);
    assert_eq!(d["state"], "ready", "{d}");
    // The token's, with the cause the console shows.
    assert_eq!(d["pusher"], format!("{token_id} (rollback to deployment {})", v1["id"]).as_str());
    let head = server_branch(&repo, "Production");
    assert_eq!(d["commit"], head.as_str());
    assert_eq!(git_ok(&repo, &["rev-parse", &format!("{head}^")]).trim(), v2_head, "history stays linear");
    assert_eq!(
        git_ok(&repo, &["rev-parse", &format!("{head}^{{tree}}")]),
        git_ok(&repo, &["rev-parse", &format!("{}^{{tree}}", v1["commit"].as_str().unwrap())])
    );

    let out = ok(&client(&s.devpop, Some(&token), &["redeploy", "1/1/site", "Production"]));
    let again: u64 = out
        .lines()
        .find_map(|l| l.strip_prefix("Deployment "))
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("{out}"));
    let d = s.wait(again);
    assert_eq!((d["state"].as_str(), d["commit"].as_str()), (Some("ready"), Some(head.as_str())));
    assert_eq!(server_branch(&repo, "Production"), head, "a redeploy leaves the branch alone");

    // Both are in the audit log under the token's id.
    let r = http(&s.devpop.addr(), "GET", "/api/v1/audit", &[("Authorization", &format!("Bearer {}", s.admin))], b"");
    let audit: Value = serde_json::from_slice(&r.body).unwrap();
    let entries: Vec<(&str, &str)> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["who"].as_str().unwrap(), e["action"].as_str().unwrap()))
        .collect();
    assert!(entries.contains(&(token_id.as_str(), "rollback")), "{entries:?}");
    assert!(entries.contains(&(token_id.as_str(), "redeploy")), "{entries:?}");

    // The deployments command: filters and JSON.
    let out = ok(&client(
        &s.devpop,
        Some(&token),
        &["deployments", "list", "--env", "Production", "--state", "ready", "--limit", "2", "--format", "json"],
    ));
    let page: Value = serde_json::from_str(&out).unwrap();
    let ids: Vec<u64> = page["items"].as_array().unwrap().iter().map(|d| d["id"].as_u64().unwrap()).collect();
    assert_eq!(ids, [again, id]);
    assert_eq!(page["total"], 4);
    let text = ok(&client(&s.devpop, Some(&token), &["deployments", "list", "--limit", "1"]));
    assert!(text.starts_with(&format!("{again}\tready\t1/1/site\tProduction\t{}\t", &head[..12])), "{text}");
    let text = ok(&client(&s.devpop, Some(&token), &["deployments", "show", &id.to_string()]));
    assert!(
        text.starts_with(&format!("deployment {id} (ready)")) && text.contains(&format!("commit       {head}")),
        "{text}"
    );

    // Without --server, on the server's data dir: the commit is made there and pushed through
    // the server with --token as the push's credentials (the server requires one).
    let out = Command::new(DEVPOP)
        .args(["rollback", "1/1/site", "Production", "--public-url", &s.devpop.url, "--token", &token, "--data"])
        .arg(s.devpop.data.path())
        .env_remove("DEVPOP_SERVER")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
    assert!(out.status.success(), "{text}");
    assert!(text.contains("Rolling Production of 1/1/site back to deployment "), "{text}");
    let d = s.wait(queued_deployment(&text, "Production"));
    assert_eq!(d["state"], "ready", "{d}");
    assert!(d["pusher"].as_str().unwrap().starts_with(&format!("{token_id}@")), "the push was the token's: {d}");
}

#[test]
fn the_token_comes_from_gits_credential_helper_when_none_is_given() {
    let s = Server::start(&[]);
    ok(&client(&s.devpop, Some(&s.admin), &["app", "create", "1", "1", "site"]));
    // No token and no helper: the command says how to give one.
    let out = client(&s.devpop, None, &["app", "list"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out)
            .contains("wants an API token: pass --token, set DEVPOP_TOKEN, or store it in git's credential helper"),
        "{}",
        stderr(&out)
    );
    // A wrong token is said to be refused.
    let out = client(&s.devpop, Some("dp_not_a_token"), &["app", "list"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("refused the token given (--token or DEVPOP_TOKEN)"), "{}", stderr(&out));
    // git's store helper has the token for the server's URL: the command uses it.
    let home = tempfile::tempdir().unwrap();
    let store = home.path().join("credentials");
    std::fs::write(&store, format!("{}\n", s.authed(&s.devpop.url, &s.admin))).unwrap();
    let config = home.path().join("gitconfig");
    std::fs::write(&config, format!("[credential]\n\thelper = store --file {}\n", store.display())).unwrap();
    let out = Command::new(DEVPOP)
        .args(["app", "list", "--server", &s.devpop.url])
        .env_remove("DEVPOP_TOKEN")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", &config)
        .output()
        .unwrap();
    assert_eq!(ok(&out).trim(), format!("1/1/site\t{}/account/1/application/1/site.git", s.devpop.url));
}

#[test]
fn validate_with_a_server_uses_its_namespace_rule_and_package_catalog() {
    let s = Server::start(&["--namespace-prefix", "acme"]);
    let token = ok(&client(&s.devpop, Some(&s.admin), &["token", "create", "--account", "1"])).trim().to_owned();
    let (url, _dir, work) = pushed_app(&s, &token);
    git_ok(&work, &["remote", "set-url", "origin", &url]);
    let out = client(&s.devpop, Some(&token), &["validate", work.to_str().unwrap(), "--format", "json"]);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{}", stderr(&out)));
    assert_eq!(report["accepted"], true, "{report}");
    let namespace = report["namespace"].as_str().unwrap();
    assert!(namespace.starts_with("acme-site-production-"), "{namespace}");
    // The same as the server's own name for it.
    let env = http(
        &s.devpop.addr(),
        "GET",
        "/api/v1/accounts/1/applications/1/environments/Production",
        &[("Authorization", &format!("Bearer {token}"))],
        b"",
    );
    let env: Value = serde_json::from_slice(&env.body).unwrap();
    assert_eq!(env["namespace"], namespace);

    // A package only the server has: known to the check (as the push knows it), and said to
    // be unavailable offline; without the server, it is an unknown package.
    let src = tempfile::tempdir().unwrap();
    copy_tree(&fixture("packages/example-simple"), src.path());
    let yaml = src.path().join(".section-proxy.yaml");
    let text = std::fs::read_to_string(&yaml).unwrap().replace("name: example-simple:1.0.0", "name: probe:2.0.0");
    std::fs::write(&yaml, text).unwrap();
    ok(&client(&s.devpop, Some(&s.admin), &["package", "add", src.path().to_str().unwrap()]));
    let config = work.join("section.config.json");
    let text = std::fs::read_to_string(&config).unwrap().replace("example-simple:1.0.0", "probe:2.0.0");
    std::fs::write(&config, text).unwrap();
    commit_all(&work, "probe");
    let out = client(&s.devpop, Some(&token), &["validate", work.to_str().unwrap(), "--format", "json"]);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let problems = report["problems"].to_string();
    assert!(!problems.contains("is not an installed package"), "{problems}");
    assert!(stderr(&out).contains("has probe:2.0.0 that is not available here"), "{}", stderr(&out));
    let offline = Command::new(DEVPOP)
        .args(["validate", work.to_str().unwrap(), "--format", "json"])
        .env_remove("DEVPOP_SERVER")
        .env_remove("DEVPOP_DATA")
        .output()
        .unwrap();
    let report: Value = serde_json::from_slice(&offline.stdout).unwrap();
    assert_eq!(report["accepted"], false);
    assert!(
        report["problems"].to_string().contains(r#"image \"probe:2.0.0\" is not an installed package"#),
        "{report}"
    );

    // A package this machine has (in --data) that the server lacks: refused, as the push is.
    let local = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(&yaml).unwrap().replace("name: probe:2.0.0", "name: mine:1.0.0");
    std::fs::write(&yaml, text).unwrap();
    for package in [src.path().to_owned(), fixture("packages/edge-cache"), fixture("packages/example-simple")] {
        let out = Command::new(DEVPOP).args(["package", "add"]).arg(package).arg("--data").arg(local.path()).output();
        ok(&out.unwrap());
    }
    let text = std::fs::read_to_string(&config).unwrap().replace("probe:2.0.0", "mine:1.0.0");
    std::fs::write(&config, text).unwrap();
    commit_all(&work, "mine");
    let with_data = ["validate", work.to_str().unwrap(), "--format", "json", "--data", local.path().to_str().unwrap()];
    let out = Command::new(DEVPOP).args(with_data).env_remove("DEVPOP_SERVER").output().unwrap();
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["accepted"], true, "this machine alone has it: {report}");
    let out = client(&s.devpop, Some(&token), &with_data);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["accepted"], false, "{report}");
    assert!(report["problems"].to_string().contains(r#"image \"mine:1.0.0\" is not an installed package"#), "{report}");
}

#[test]
fn a_failed_bind_says_why_once_and_leaves_no_data_dir() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = Command::new(DEVPOP).args(["serve", "--listen", &addr, "--data"]).arg(&data).output().unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains(&format!("error: cannot listen on {addr}: ")), "{err}");
    assert_eq!(err.matches("in use").count(), 1, "the cause once: {err}");
    assert!(!data.exists(), "a server that could not listen created its data dir");
}

#[test]
fn a_client_of_an_http_server_needs_no_ca_certificates_and_an_https_one_says_it_does() {
    let s = Server::start(&[]);
    let no_certs = |args: &[&str]| {
        Command::new(DEVPOP)
            .args(args)
            .env("SSL_CERT_FILE", "/nonexistent/ca.pem")
            .env("SSL_CERT_DIR", "/nonexistent")
            .env("DEVPOP_TOKEN", &s.admin)
            .output()
            .unwrap()
    };
    ok(&no_certs(&["app", "list", "--server", &s.devpop.url]));
    let https = s.devpop.url.replacen("http://", "https://", 1);
    let out = no_certs(&["app", "list", "--server", &https]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("certificate: this machine's CA certificates"), "{}", stderr(&out));
}

#[test]
fn module_init_writes_the_packages_starter_folder_and_its_proxychain_entry_and_the_push_validates_it() {
    let s = Server::start(&[]);
    let (_url, _dir, work) = pushed_app(&s, &s.admin);
    // From the server (Aperture's proxytemplate/initialstate).
    let out = ok(&client(
        &s.devpop,
        Some(&s.admin),
        &["module", "init", "example-simple:1.0.0", "example2", "--dir", work.to_str().unwrap()],
    ));
    assert!(out.contains("Module example2 (example-simple:1.0.0) started: 1 file(s) in example2/"), "{out}");
    let starter = std::fs::read(fixture("packages/example-simple/proxy_config/server.conf")).unwrap();
    assert_eq!(std::fs::read(work.join("example2/server.conf")).unwrap(), starter);
    let config: Value = serde_json::from_slice(&std::fs::read(work.join("section.config.json")).unwrap()).unwrap();
    let last = config["proxychain"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last, serde_json::json!({"name": "example2", "image": "example-simple:1.0.0"}));
    // The same name twice is refused, and nothing is written.
    let again = client(
        &s.devpop,
        Some(&s.admin),
        &["module", "init", "example-simple:1.0.0", "example2", "--dir", work.to_str().unwrap()],
    );
    assert!(!again.status.success() && stderr(&again).contains("already has a module named example2"), "{again:?}");
    // Committed and pushed, the server validates the new module's folder.
    commit_all(&work, "Add example2");
    let pushed = git(&work, &["push", "origin", "HEAD:Production"]);
    assert!(pushed.status.success(), "{}", stderr(&pushed));
    assert!(stderr(&pushed).contains("Validating configuration for proxy example2"), "{}", stderr(&pushed));

    // From a data dir's installed packages: the same folder.
    let tree = tempfile::tempdir().unwrap();
    std::fs::write(tree.path().join("section.config.json"), "{\"proxychain\": [], \"environments\": {}}\n").unwrap();
    let out = Command::new(DEVPOP)
        .args(["module", "init", "example-simple:1.0.0", "example", "--dir"])
        .arg(tree.path())
        .arg("--data")
        .arg(s.devpop.data.path())
        .env_remove("DEVPOP_SERVER")
        .output()
        .unwrap();
    ok(&out);
    assert_eq!(std::fs::read(tree.path().join("example/server.conf")).unwrap(), starter);
}
