//! Section's Aperture API against a real server: requests and expected bodies written from
//! Aperture's published spec (Swagger 2.0, basePath /api/v1: paths, parameters, field names,
//! types, status codes), and the flow a console clone performs, with stock git in the middle.

mod common;

use std::process::Command;

use common::*;
use serde_json::{json, Value};

struct Reply {
    status: u16,
    head: String,
    body: Value,
}

impl Reply {
    /// The `{"message"}` of an Aperture error (ErrorModel).
    fn message(&self) -> &str {
        self.body["message"].as_str().unwrap_or_else(|| panic!("not an Aperture error: {} {}", self.status, self.body))
    }

    /// The deployment a change made (the `devpop-deployment` header).
    fn deployment(&self) -> u64 {
        self.head
            .lines()
            .find_map(|l| l.to_ascii_lowercase().strip_prefix("devpop-deployment:").map(|v| v.trim().to_owned()))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no devpop-deployment header in {}", self.head))
    }
}

fn call_with(devpop: &Devpop, method: &str, path: &str, headers: &[(&str, &str)], body: Option<Value>) -> Reply {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let mut all: Vec<(&str, &str)> = headers.to_vec();
    if !body.is_empty() {
        all.push(("Content-Type", "application/json"));
    }
    let r = http(&devpop.addr(), method, &format!("/api/v1{path}"), &all, body.as_bytes());
    Reply { status: r.status, head: r.head, body: serde_json::from_slice(&r.body).unwrap_or(Value::Null) }
}

fn call(devpop: &Devpop, method: &str, path: &str, body: Option<Value>) -> Reply {
    call_with(devpop, method, path, &[], body)
}

fn token(devpop: &Devpop, args: &[&str]) -> String {
    let mut cmd = Command::new(DEVPOP);
    cmd.args(["token", "create", "--data"]).arg(devpop.data.path()).args(args);
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "devpop token create: {}", stderr(&out));
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// A server that wants tokens, and a token of account 9999.
fn secured() -> (Devpop, String) {
    let devpop = Devpop::start_with(&["--auth", "tokens"]);
    let t = token(&devpop, &["--account", "9999"]);
    (devpop, t)
}

/// Puts the token in a clone URL as git's password (Section's convention).
fn with_token(t: &str) -> impl Fn(&str) -> String + '_ {
    move |url| url.replacen("http://", &format!("http://section-token:{t}@"), 1)
}

/// Waits until deployment `id` reaches a final state (asking with `headers`); returns its JSON.
fn settle(devpop: &Devpop, id: u64, headers: &[(&str, &str)]) -> Value {
    let mut last = Value::Null;
    let done = eventually(std::time::Duration::from_secs(30), || {
        let r = http(&devpop.addr(), "GET", &format!("/api/v1/deployments/{id}"), headers, b"");
        last = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
        matches!(last["state"].as_str(), Some("ready" | "failed" | "superseded"))
    });
    assert!(done, "deployment {id} did not finish: {last}");
    last
}

fn is_int(v: &Value) -> bool {
    v.as_u64().is_some()
}

/// An application created over Aperture with the sample application pushed to Production;
/// returns its id, the clone's temp dir and work tree.
fn sample(
    devpop: &Devpop,
    headers: &[(&str, &str)],
    auth_url: impl Fn(&str) -> String,
) -> (u64, tempfile::TempDir, std::path::PathBuf) {
    let created = call_with(
        devpop,
        "POST",
        "/account/9999/application/create",
        headers,
        Some(json!({"hostname": "www.example.com", "origin": "origin.example.com"})),
    );
    assert_eq!(created.status, 200, "{}", created.body);
    let id = created.body["id"].as_u64().unwrap();
    let (dir, work) = clone(&auth_url(created.body["clone_url"].as_str().unwrap()));
    replace_tree(&work, &fixture("repos/sample-application"));
    commit_all(&work, "sample");
    let out = git(&work, &["push", "origin", "HEAD:Production"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(settle(devpop, queued_deployment(&stderr(&out), "Production"), headers)["state"], "ready");
    (id, dir, work)
}

/// A server with the sample application (no authentication).
fn started() -> (Devpop, u64, tempfile::TempDir, std::path::PathBuf) {
    let devpop = Devpop::start();
    let (app, dir, work) = sample(&devpop, &[], str::to_owned);
    (devpop, app, dir, work)
}

fn env_path(app: u64, env: &str) -> String {
    format!("/account/9999/application/{app}/environment/{env}")
}

/// The section.config.json the server's branch holds.
fn server_config(devpop: &Devpop, app: u64, env: &str) -> Value {
    let repo = devpop.data.path().join("repos/9999").join(app.to_string()).join("www.example.com.git");
    let text = git_ok(&repo, &["show", &format!("refs/heads/{env}:section.config.json")]);
    serde_json::from_str(&text).unwrap()
}

#[test]
fn accounts_graph_and_user_follow_the_published_schema_and_every_aperture_auth_scheme() {
    let (devpop, t) = secured();
    devpop.create_app("9999", "9999", "sample-application");
    devpop.create_app("42", "7", "other");
    let basic = format!("Basic {}", base64(&format!("section-token:{t}")));

    // The three ways Aperture clients send a token, and none.
    for (path, headers) in [
        ("/account".to_owned(), vec![("section-token", t.as_str())]),
        ("/account".to_owned(), vec![("Authorization", basic.as_str())]),
        (format!("/account?access_token={t}"), vec![]),
    ] {
        let r = call_with(&devpop, "GET", &path, &headers, None);
        assert_eq!(r.status, 200, "{path} {headers:?}: {}", r.body);
        let accounts = r.body.as_array().unwrap();
        assert_eq!(accounts.len(), 1, "a token sees its own account only: {}", r.body);
        let a = &accounts[0];
        assert!(is_int(&a["id"]) && a["id"] == 9999, "{a}");
        assert_eq!((a["href"].as_str(), a["account_name"].as_str()), (Some("/api/v1/account/9999"), Some("9999")));
        assert_eq!(a["is_admin"], true);
    }
    let r = call(&devpop, "GET", "/account", None);
    assert_eq!(r.status, 401);
    assert!(r.message().contains("token"), "{}", r.message());
    let r = call_with(&devpop, "GET", "/account?access_token=dp_wrong", &[], None);
    assert_eq!(r.status, 401);

    let h = [("section-token", t.as_str())];
    let r = call_with(&devpop, "GET", "/account/9999", &h, None);
    assert_eq!((r.status, r.body["id"].as_u64()), (200, Some(9999)));
    let r = call_with(&devpop, "GET", "/account/42", &h, None);
    assert_eq!(r.status, 403);
    assert!(r.message().contains("42"), "{}", r.message());
    let r = call_with(&devpop, "GET", "/account/acme", &h, None);
    assert_eq!(r.status, 403, "a name that is no number is still another account: {}", r.body);

    let r = call_with(&devpop, "GET", "/account/graph", &h, None);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body.as_array().unwrap().len(), 1, "{}", r.body);
    let app = &r.body[0]["applications"][0];
    assert_eq!((app["id"].as_u64(), app["application_name"].as_str()), (Some(9999), Some("sample-application")));
    assert_eq!(app["href"], "/api/v1/account/9999/application/9999");
    assert!(app["path_prefixes"].is_array() && app["path_prefix"].is_string());
    let env = &app["environments"][0];
    assert!(is_int(&env["id"]), "{env}");
    assert_eq!(env["environment_name"], "Production");

    let r = call_with(&devpop, "GET", "/user", &h, None);
    assert_eq!(r.status, 200);
    assert!(is_int(&r.body["id"]) && r.body["id"].as_u64() != Some(0), "{}", r.body);
    assert_eq!((r.body["account"].as_str(), r.body["read_only"].as_bool()), (Some("9999"), Some(false)));
    assert!(r.body["token_id"].as_str().unwrap().starts_with("tok_"));
    assert!(r.body["first_name"].is_string() && r.body["verified"].is_boolean());
    let ro = token(&devpop, &["--account", "9999", "--read-only"]);
    let r = call_with(&devpop, "GET", "/user", &[("section-token", ro.as_str())], None);
    assert_eq!(r.body["read_only"], true);
    let r = call_with(
        &devpop,
        "POST",
        "/account/9999/application/create",
        &[("section-token", ro.as_str())],
        Some(json!({"hostname": "a.example.com", "origin": "o.example.com"})),
    );
    assert_eq!(r.status, 403);
    assert!(r.message().contains("read-only"), "{}", r.message());
}

fn base64(s: &str) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let b = s.as_bytes();
    let mut out = String::new();
    for chunk in b.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, c)| n | (u32::from(*c) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[test]
fn applications_get_integer_ids_and_are_created_listed_read_and_deleted() {
    let devpop = Devpop::start();
    let r = call(
        &devpop,
        "POST",
        "/account/9999/application/create",
        Some(json!({"hostname": "www.example.com", "origin": "origin.example.com", "stackName": "empty"})),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!((r.body["id"].as_u64(), r.body["application_name"].as_str()), (Some(1), Some("www.example.com")));
    assert_eq!(r.body["href"], "/api/v1/account/9999/application/1");
    let clone_url = r.body["clone_url"].as_str().unwrap().to_owned();
    assert_eq!(clone_url, format!("{}/account/9999/application/1/www.example.com.git", devpop.url));
    let (_d, work) = clone(&clone_url);
    assert!(work.join("section.config.json").is_file(), "the application clones with stock git");

    let r = call(
        &devpop,
        "POST",
        "/account/9999/application/create",
        Some(json!({"hostname": "shop.example.com", "origin": "shop-origin.example.com"})),
    );
    assert_eq!(r.body["id"], 2, "the next free number: {}", r.body);
    // An application made by devpop's own API (a name, not a number) gets a stable number too.
    devpop.create_app("9999", "blog", "blog");
    let first = call(&devpop, "GET", "/account/9999/application/", None);
    let again = call(&devpop, "GET", "/account/9999/application", None);
    assert_eq!(first.status, 200);
    assert_eq!(first.body, again.body, "ids are stable");
    let apps = first.body.as_array().unwrap();
    assert_eq!(apps.len(), 3);
    let blog = apps.iter().find(|a| a["application_name"] == "blog").unwrap();
    assert!(blog["id"].as_u64().unwrap() >= 1_000_000_000, "{blog}");
    let r = call(&devpop, "GET", &format!("/account/9999/application/{}", blog["id"]), None);
    assert_eq!((r.status, r.body["application_name"].as_str()), (200, Some("blog")));

    for (body, needle) in [
        (json!({"origin": "o.example.com"}), "hostname"),
        (json!({"hostname": "a.example.com"}), "origin"),
        (json!({"hostname": "a.example.com", "origin": "o.example.com", "colour": 1}), "colour"),
        (
            json!({"hostname": "a.example.com", "origin": "o.example.com", "stackName": "varnish-5.1-basic"}),
            "stackName",
        ),
        (json!({"hostname": "a b", "origin": "o.example.com"}), "hostname"),
        (json!({"hostname": "a.example.com", "origin": "http://o.example.com/"}), "origin"),
        (json!({"hostname": "a.example.com", "origin": "o.example.com", "stackName": null}), "stackName"),
    ] {
        let r = call(&devpop, "POST", "/account/9999/application/create", Some(body.clone()));
        assert_eq!(r.status, 400, "{body}: {}", r.body);
        assert!(r.message().contains(needle), "{body}: {}", r.message());
    }
    let r = call(&devpop, "GET", "/account/9999/application/77", None);
    assert_eq!(r.status, 404);
    assert!(r.message().contains("77"));
    let r = call(&devpop, "GET", "/account/abc/application/", None);
    assert_eq!(r.status, 400);
    assert!(r.message().contains("accountId"));
    let r = call(&devpop, "GET", "/account/9999/application/x1", None);
    assert_eq!(r.status, 400);

    let r = call(&devpop, "DELETE", "/account/9999/application/2", None);
    assert_eq!(r.status, 204);
    assert_eq!(call(&devpop, "GET", "/account/9999/application/2", None).status, 404);
    assert_eq!(call(&devpop, "GET", "/account/9999/application/1", None).status, 200);
}

#[test]
fn environments_are_listed_created_from_a_source_with_a_domain_and_read() {
    let (devpop, app, _d, work) = started();
    let base = format!("/account/9999/application/{app}/environment");
    let r = call(&devpop, "GET", &base, None);
    assert_eq!(r.status, 200);
    let envs = r.body.as_array().unwrap();
    assert_eq!(envs.len(), 1);
    assert_eq!(envs[0]["environment_name"], "Production");
    assert!(is_int(&envs[0]["id"]) && envs[0]["href"].is_string() && envs[0]["domains"].is_array());

    let r = call(
        &devpop,
        "POST",
        &format!("{base}/create"),
        Some(json!({"name": "Dev", "source_environment_name": "Production", "domain_name": "dev.example.com"})),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["environment_name"], "Dev");
    let domains: Vec<&str> =
        r.body["domains"].as_array().unwrap().iter().map(|d| d["name"].as_str().unwrap()).collect();
    assert!(domains.contains(&"dev.example.com"), "{domains:?}");
    assert_eq!(wait_deployment(&devpop, r.deployment())["state"], "ready");
    git_ok(&work, &["fetch", "-q", "origin"]);
    let config: Value = serde_json::from_str(&git_ok(&work, &["show", "origin/Dev:section.config.json"])).unwrap();
    assert_eq!(config["environments"]["Dev"]["origin"], config["environments"]["Production"]["origin"]);
    assert_eq!(config["environments"]["Dev"]["domains"], json!(["dev.example.com"]));

    let r = call(&devpop, "GET", &format!("{base}/Dev"), None);
    assert_eq!((r.status, r.body["environment_name"].as_str()), (200, Some("Dev")));
    assert_eq!(call(&devpop, "GET", &base, None).body.as_array().unwrap().len(), 2);
    for (body, status) in [
        (json!({"name": "Dev", "source_environment_name": "Production", "domain_name": "d.example.com"}), 409),
        (json!({"name": "Qa", "source_environment_name": "Nowhere", "domain_name": "q.example.com"}), 404),
        (json!({"name": "1qa", "source_environment_name": "Production", "domain_name": "q.example.com"}), 400),
        (json!({"name": "Qa", "source_environment_name": "Production"}), 400),
        (json!({"name": "Qa", "source_environment_name": "Production", "domain_name": "not a host"}), 400),
    ] {
        let r = call(&devpop, "POST", &format!("{base}/create"), Some(body.clone()));
        assert_eq!(r.status, status, "{body}: {}", r.body);
        assert!(!r.message().is_empty());
    }
    let r = call(&devpop, "GET", &format!("{base}/Nope"), None);
    assert_eq!(r.status, 404);
}

#[test]
fn a_proxy_templates_initial_state_is_its_packages_proxy_config_folder_as_a_tar_gz() {
    let devpop = Devpop::start();
    let path = "/api/v1/proxytemplate/initialstate?proxyTemplateName=edge-cache:6.5.0";
    let r = http(&devpop.addr(), "GET", path, &[], b"");
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.head.to_ascii_lowercase().contains("content-type: application/gzip"), "{}", r.head);
    // Unpacked by tar itself, it is the package's proxy_config/ folder.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("state.tar.gz"), &r.body).unwrap();
    let out = Command::new("tar").args(["xzf", "state.tar.gz"]).current_dir(dir.path()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let vcl = std::fs::read_to_string(dir.path().join("default.vcl")).unwrap();
    let package =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("templates/packages/edge-cache/proxy_config/default.vcl");
    assert_eq!(vcl, std::fs::read_to_string(package).unwrap());
    let unpacked: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(unpacked.len(), 2, "default.vcl and the archive: {unpacked:?}");

    let r = call(&devpop, "GET", "/proxytemplate/initialstate?proxyTemplateName=edge-cache:0.0.1", None);
    assert_eq!(r.status, 404);
    assert!(r.message().contains("GET /api/v1/proxytemplate"), "{}", r.message());
    let r = call(&devpop, "GET", "/proxytemplate/initialstate", None);
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.message().contains("proxyTemplateName"), "{}", r.message());
}

#[test]
fn stacks_proxy_templates_and_an_environments_stack_describe_packages_and_the_chain() {
    let devpop = Devpop::start();
    let r = call(&devpop, "GET", "/stack", None);
    assert_eq!(r.status, 200);
    assert_eq!(r.body[0]["name"], "empty");
    assert!(r.body[0]["label"].is_string() && r.body[0]["description"].is_string());
    let r = call(&devpop, "GET", "/proxytemplate", None);
    assert_eq!(r.status, 200);
    let names: Vec<&str> = r.body.as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert!(names.contains(&"edge-cache:6.5.0") && names.contains(&"example-simple:1.0.0"), "{names:?}");
    let cache = r.body.as_array().unwrap().iter().find(|t| t["name"] == "edge-cache:6.5.0").unwrap();
    assert_eq!(cache["image"], "registry.example.com/section/edge-cache:6.5.0-r3");

    let (app, _d, _w) = sample(&devpop, &[], str::to_owned);
    let r = call(&devpop, "GET", &format!("{}/stack", env_path(app, "Production")), None);
    assert_eq!(r.status, 200, "{}", r.body);
    let stack = r.body.as_array().unwrap();
    assert_eq!(stack.len(), 2);
    for p in stack {
        // Proxy's required fields.
        assert!(p["href"].is_string() && p["name"].is_string() && p["image"].is_string(), "{p}");
        assert!(p["proxyType"]["name"].is_string() && p["proxyType"]["prefix"].is_string(), "{p}");
    }
    assert_eq!(
        (stack[0]["name"].as_str(), stack[0]["proxyType"]["name"].as_str()),
        (Some("cache"), Some("edge-cache"))
    );
    assert_eq!(stack[1]["image"], "registry.example.com/section/example-simple:1.0.0-k1");
}

#[test]
fn configuration_patches_are_commits_checked_like_a_push_attributed_and_deployed() {
    let (devpop, t) = secured();
    let h = [("section-token", t.as_str())];
    let (app, _d, work) = sample(&devpop, &h, with_token(&t));
    let path = format!("{}/configuration", env_path(app, "Production"));

    let r = call_with(&devpop, "GET", &path, &h, None);
    assert_eq!(r.status, 200);
    assert_eq!(r.body["proxychain"][0]["name"], "cache");

    let patch = json!([
        {"op": "test", "path": "/environments/Production/origin/address", "value": "my-s3-bucket.s3-website.us-east-2.amazonaws.com"},
        {"op": "replace", "path": "/environments/Production/origin/address", "value": "new-origin.example.com"}
    ]);
    let r = call_with(&devpop, "PATCH", &path, &h, Some(patch));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["environments"]["Production"]["origin"]["address"], "new-origin.example.com");
    let d = settle(&devpop, r.deployment(), &h);
    assert_eq!(d["state"], "ready", "{d}");
    let user = call_with(&devpop, "GET", "/user", &h, None).body;
    assert_eq!(d["pusher"], user["token_id"], "the deployment is the token's: {d}");
    git_ok(&work, &["fetch", "-q", "origin"]);
    let author = git_ok(&work, &["log", "-1", "--format=%an", "origin/Production"]);
    assert_eq!(author.trim(), user["token_id"].as_str().unwrap(), "the commit is the token's");
    assert_eq!(
        server_config(&devpop, app, "Production")["environments"]["Production"]["origin"]["address"],
        "new-origin.example.com"
    );

    // Refused: the same change pushed with stock git and sent as a patch print the same error.
    let bad_patch = json!([{"op": "replace", "path": "/proxychain/0/name", "value": "ex-ample"}]);
    git_ok(&work, &["reset", "-q", "--hard", "origin/Production"]);
    let mut local: Value =
        serde_json::from_str(&std::fs::read_to_string(work.join("section.config.json")).unwrap()).unwrap();
    local["proxychain"][0]["name"] = "ex-ample".into();
    std::fs::write(work.join("section.config.json"), serde_json::to_string_pretty(&local).unwrap() + "\n").unwrap();
    commit_all(&work, "bad name");
    let pushed = git(&work, &["push", "origin", "HEAD:Production"]);
    assert!(!pushed.status.success());
    let push_errors: Vec<String> = stderr(&pushed)
        .lines()
        .filter_map(|l| l.strip_prefix("remote: "))
        .filter(|l| l.contains("ex-ample"))
        .map(|l| l.trim_end().to_owned())
        .collect();
    assert!(!push_errors.is_empty(), "{}", stderr(&pushed));
    let before = server_config(&devpop, app, "Production");
    let r = call_with(&devpop, "PATCH", &path, &h, Some(bad_patch));
    assert_eq!(r.status, 400, "{}", r.body);
    let lines: Vec<String> =
        r.body["diagnostics"].as_array().unwrap().iter().map(|l| l.as_str().unwrap().trim_end().to_owned()).collect();
    for e in &push_errors {
        assert!(lines.contains(e), "the push said {e:?}; the API said {lines:?}");
    }
    assert!(r.message().contains("ex-ample"), "{}", r.message());
    assert_eq!(server_config(&devpop, app, "Production"), before, "a refused change leaves the branch");

    for bad in [
        json!([{"op": "test", "path": "/proxychain/0/name", "value": "nope"}]),
        json!([{"op": "jump", "path": "/"}]),
        json!({"op": "add"}),
    ] {
        let r = call_with(&devpop, "PATCH", &path, &h, Some(bad.clone()));
        assert_eq!(r.status, 400, "{bad}: {}", r.body);
        assert!(!r.message().is_empty());
    }
    let r = call_with(&devpop, "PATCH", &format!("{}/configuration", env_path(app, "Nope")), &h, Some(json!([])));
    assert_eq!(r.status, 404);
}

#[test]
fn update_patches_the_json_file_the_filepath_header_names() {
    let (devpop, app, _d, work) = started();
    std::fs::create_dir_all(work.join("extra")).unwrap();
    std::fs::write(work.join("extra/settings.json"), "{\"ttl\": 60}\n").unwrap();
    commit_all(&work, "settings");
    let out = git(&work, &["push", "origin", "HEAD:Production"]);
    wait_deployment(&devpop, queued_deployment(&stderr(&out), "Production"));
    let path = format!("{}/update", env_path(app, "Production"));

    let r = call_with(
        &devpop,
        "PATCH",
        &path,
        &[("filepath", "extra/settings.json")],
        Some(json!([{"op": "replace", "path": "/ttl", "value": 120}])),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.is_object());
    assert_eq!(wait_deployment(&devpop, r.deployment())["state"], "ready");
    git_ok(&work, &["pull", "-q", "origin", "Production"]);
    let v: Value = serde_json::from_str(&std::fs::read_to_string(work.join("extra/settings.json")).unwrap()).unwrap();
    assert_eq!(v, json!({"ttl": 120}));

    for (headers, needle, status) in [
        (vec![], "filepath", 400),
        (vec![("filepath", "../etc/passwd")], "filepath", 400),
        (vec![("filepath", ".git/config")], "filepath", 400),
        (vec![("filepath", "extra//settings.json")], "filepath", 400),
        (vec![("filepath", "cache/default.vcl")], "not JSON", 400),
        (vec![("filepath", "extra")], "folder", 400),
        (vec![("filepath", "extra/missing.json")], "no file", 404),
    ] {
        let r = call_with(&devpop, "PATCH", &path, &headers, Some(json!([{"op": "add", "path": "/x", "value": 1}])));
        assert_eq!(r.status, status, "{headers:?}: {}", r.body);
        assert!(r.message().contains(needle), "{headers:?}: {}", r.message());
    }
    // section.config.json through update is checked like any change.
    let r = call_with(
        &devpop,
        "PATCH",
        &path,
        &[("filepath", "section.config.json")],
        Some(json!([{"op": "remove", "path": "/environments/Production/origin"}])),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.message().contains("no origin"), "{}", r.message());
}

#[test]
fn egress_and_ip_restrictions_are_read_from_and_written_to_section_config() {
    let (devpop, app, _d, _w) = started();
    let egress = format!("{}/egress", env_path(app, "Production"));
    let r = call(&devpop, "GET", &egress, None);
    assert_eq!(r.status, 200);
    assert_eq!(
        r.body,
        json!({
            "enable_sni": false,
            "verify_certificate": false,
            "origins": {
                "default": {"address": "my-s3-bucket.s3-website.us-east-2.amazonaws.com", "host_header": "my-s3-bucket.s3-website.us-east-2.amazonaws.com"},
                "images": {"address": "images.example.com", "host_header": "images.example.com"}
            }
        })
    );
    let new = json!({
        "enable_sni": true,
        "verify_certificate": true,
        "remove_request_headers": ["X-Debug"],
        "origins": {"default": {"address": "origin2.example.com", "https_port": 8443}}
    });
    let r = call(&devpop, "POST", &egress, Some(new.clone()));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body, new);
    assert_eq!(wait_deployment(&devpop, r.deployment())["state"], "ready");
    let env = &server_config(&devpop, app, "Production")["environments"]["Production"];
    assert_eq!(
        env["origin"],
        json!({"address": "origin2.example.com", "https_port": 8443, "remove_request_headers": ["X-Debug"], "enable_sni": true, "verify_certificate": true})
    );
    assert!(env.get("alternate_origins").is_none());
    assert_eq!(call(&devpop, "GET", &egress, None).body, new);
    for (body, needle) in [
        (json!({"origins": {"images": {"address": "i.example.com"}}}), "default"),
        (json!({"origins": {"default": {"address": "o.example.com", "tls_name": "o.example.com"}}}), "tls_name"),
        (
            json!({"origins": {"default": {"address": "o.example.com"}}, "upstream_response_timeout_seconds": 5}),
            "upstream_response_timeout_seconds",
        ),
        (json!({"origins": {"default": {"address": "http://o.example.com/"}}}), "address"),
        (json!({"origin": {}}), "origin"),
        (
            json!({"origins": {"default": {"address": "o.example.com"}}, "remove_request_headers": []}),
            "remove_request_headers",
        ),
        (json!({"origins": {"default": {"address": "o.example.com", "disable_keepalive": null}}}), "disable_keepalive"),
    ] {
        let r = call(&devpop, "POST", &egress, Some(body.clone()));
        assert_eq!(r.status, 400, "{body}: {}", r.body);
        assert!(r.message().contains(needle), "{body}: {}", r.message());
    }

    let ips = format!("{}/ipRestrictions", env_path(app, "Production"));
    let r = call(&devpop, "GET", &ips, None);
    assert_eq!((r.status, &r.body), (200, &json!({"ip_blacklist": ["203.0.113.7", "198.51.100.0/24"]})));
    let r = call(&devpop, "POST", &ips, Some(json!({"ip_blacklist": ["192.0.2.0/24"]})));
    assert_eq!((r.status, &r.body), (200, &json!({"ip_blacklist": ["192.0.2.0/24"]})));
    assert_eq!(
        server_config(&devpop, app, "Production")["environments"]["Production"]["ip_blacklist"],
        json!(["192.0.2.0/24"])
    );
    let r = call(&devpop, "POST", &ips, Some(json!({"ip_blacklist": ["1.2.3.4/33"]})));
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(
        r.body["diagnostics"].as_array().unwrap().iter().any(|l| l.as_str().unwrap().contains("1.2.3.4/33")),
        "{}",
        r.body
    );
    let r = call(&devpop, "POST", &ips, Some(json!({"ip_whitelist": []})));
    assert_eq!(r.status, 400);
    let r = call(&devpop, "POST", &ips, Some(json!({"ip_blacklist": []})));
    assert_eq!((r.status, &r.body), (200, &json!({"ip_blacklist": []})));
}

/// Whether the rendered repo's egress config for the deployment's environment answers every
/// request with 503 (an engaged outage page).
fn egress_answers_503(devpop: &Devpop, d: &Value) -> bool {
    let (account, application, repo, env) = (
        d["account"].as_str().unwrap(),
        d["application"].as_str().unwrap(),
        d["repo"].as_str().unwrap(),
        d["environment"].as_str().unwrap(),
    );
    let rendered = devpop.data.path().join(format!("rendered/{account}/{application}/{repo}.git"));
    let out = git(&rendered, &["grep", "-l", "return 503;", "main", "--", &format!("{env}/")]);
    String::from_utf8_lossy(&out.stdout).contains("egress-nginx")
}

#[test]
fn an_outage_page_is_engaged_and_disengaged_as_a_checked_change() {
    let (devpop, app, _d, _w) = started();
    let path = format!("{}/outagepage", env_path(app, "Production"));
    let r = call(&devpop, "GET", &path, None);
    assert_eq!((r.status, &r.body), (200, &json!([{"name": "maintenance.html", "engaged": false}])));

    let r = call(&devpop, "POST", &format!("{path}?pageName=maintenance.html"), None);
    assert_eq!(r.status, 204, "{}", r.body);
    let d = wait_deployment(&devpop, r.deployment());
    assert_eq!(d["state"], "ready");
    // A key the config knows (no warning), rendered: egress answers every request with the page.
    let warned = d["validation"].as_array().into_iter().flatten().any(|l| l.as_str().unwrap().contains("unknown key"));
    assert!(!warned, "{d}");
    assert!(egress_answers_503(&devpop, &d), "the rendered egress serves the engaged page");
    assert_eq!(call(&devpop, "GET", &path, None).body, json!([{"name": "maintenance.html", "engaged": true}]));
    assert_eq!(
        server_config(&devpop, app, "Production")["environments"]["Production"]["outage_page"],
        "maintenance.html"
    );

    let r = call(&devpop, "POST", &format!("{path}?pageName=nope.html"), None);
    assert_eq!(r.status, 404);
    assert!(r.message().contains("maintenance.html"), "{}", r.message());
    let r = call(&devpop, "POST", &path, None);
    assert_eq!(r.status, 400);
    assert!(r.message().contains("pageName"));

    let r = call(&devpop, "DELETE", &path, None);
    assert_eq!(r.status, 204);
    let d = wait_deployment(&devpop, r.deployment());
    assert_eq!(d["state"], "ready");
    assert!(!egress_answers_503(&devpop, &d), "disengaged: requests reach the origin again");
    assert_eq!(call(&devpop, "GET", &path, None).body, json!([{"name": "maintenance.html", "engaged": false}]));
    assert!(server_config(&devpop, app, "Production")["environments"]["Production"].get("outage_page").is_none());
}

#[test]
fn domains_are_added_to_and_removed_from_an_environment() {
    let (devpop, app, _d, _w) = started();
    let path = format!("{}/domain/www.example.com", env_path(app, "Production"));
    let r = call(&devpop, "POST", &path, None);
    assert_eq!(r.status, 200, "{}", r.body);
    let names: Vec<&str> = r.body["domains"].as_array().unwrap().iter().map(|d| d["name"].as_str().unwrap()).collect();
    assert!(names.contains(&"www.example.com"), "{names:?}");
    assert_eq!(r.body["environment_name"], "Production");
    assert_eq!(
        server_config(&devpop, app, "Production")["environments"]["Production"]["domains"],
        json!(["www.example.com"])
    );
    let r = call(&devpop, "POST", &path, Some(json!({"public_certificates": "x", "private_key": "y"})));
    assert_eq!(r.status, 400);
    assert!(r.message().contains("certificates"));
    let r = call(&devpop, "POST", &path, Some(json!({"colour": 1})));
    assert_eq!(r.status, 400);
    assert!(r.message().contains("colour"), "{}", r.message());
    for host in ["1.2.3.4", "0.5", "a_b.example.com"] {
        let r = call(&devpop, "POST", &format!("{}/domain/{host}", env_path(app, "Production")), None);
        assert_eq!(r.status, 400, "{host}: {}", r.body);
    }

    let r = call(&devpop, "DELETE", &path, None);
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body["domains"].as_array().unwrap().iter().all(|d| d["name"] != "www.example.com"));
    assert!(server_config(&devpop, app, "Production")["environments"]["Production"].get("domains").is_none());
    assert_eq!(call(&devpop, "DELETE", &path, None).status, 404);
}

#[test]
fn out_of_scope_operations_answer_501_with_the_reason() {
    let devpop = Devpop::start();
    for (method, path, needle) in [
        ("GET", "/account/9999/billingsummary", "billing"),
        ("GET", "/account/9999/zone", "DNS"),
        ("POST", "/account/9999/domain/www.example.com/renewCertificate", "certificates"),
        ("GET", "/account/9999/application/1/environment/Production/synthetics", "synthetic"),
        ("GET", "/help/getting-started", "help"),
        ("POST", "/user/totp", "tokens"),
        ("POST", "/user", "tokens"),
        ("POST", "/account/create", "account"),
        ("POST", "/account/9999/application/1/environment/Production/proxy/cache/state", "bans"),
    ] {
        let r = call(&devpop, method, path, None);
        assert_eq!(r.status, 501, "{method} {path}: {}", r.body);
        assert!(r.message().contains(needle), "{method} {path}: {}", r.message());
    }
}

#[test]
fn a_console_clone_lists_creates_pushes_and_changes_an_environment() {
    let (devpop, t) = secured();
    let h = [("section-token", t.as_str())];

    let r = call_with(&devpop, "GET", "/account", &h, None);
    assert_eq!(r.body[0]["id"], 9999, "{}", r.body);
    let r = call_with(&devpop, "GET", "/account/graph", &h, None);
    assert_eq!(r.body[0]["applications"], json!([]));

    let (app, _d, _w) = sample(&devpop, &h, with_token(&t));
    let graph = call_with(&devpop, "GET", "/account/graph", &h, None).body;
    assert_eq!(graph[0]["applications"][0]["id"].as_u64(), Some(app));

    let r = call_with(
        &devpop,
        "POST",
        &format!("/account/9999/application/{app}/environment/create"),
        &h,
        Some(json!({"name": "Staging", "source_environment_name": "Production", "domain_name": "staging.example.com"})),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(settle(&devpop, r.deployment(), &h)["state"], "ready");
    let env = env_path(app, "Staging");
    let stack = call_with(&devpop, "GET", &format!("{env}/stack"), &h, None);
    assert_eq!(stack.body.as_array().map(Vec::len), Some(2), "{}", stack.body);

    let ok_patch =
        json!([{"op": "add", "path": "/environments/Staging/maintain_upstream_content_encoding", "value": true}]);
    let r = call_with(&devpop, "PATCH", &format!("{env}/configuration"), &h, Some(ok_patch));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(settle(&devpop, r.deployment(), &h)["state"], "ready");
    let bad_patch = json!([{"op": "replace", "path": "/proxychain/1/image", "value": "missing-module:9.9.9"}]);
    let r = call_with(&devpop, "PATCH", &format!("{env}/configuration"), &h, Some(bad_patch));
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.message().contains("missing-module:9.9.9"), "{}", r.message());
    assert!(!r.body["diagnostics"].as_array().unwrap().is_empty());

    let egress = json!({"origins": {"default": {"address": "staging-origin.example.com"}}});
    let r = call_with(&devpop, "POST", &format!("{env}/egress"), &h, Some(egress.clone()));
    assert_eq!((r.status, &r.body), (200, &egress));
    assert_eq!(settle(&devpop, r.deployment(), &h)["state"], "ready");
    let r = call_with(
        &devpop,
        "POST",
        &format!("{env}/ipRestrictions"),
        &h,
        Some(json!({"ip_blacklist": ["203.0.113.0/24"]})),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(settle(&devpop, r.deployment(), &h)["state"], "ready");
    let r = call_with(&devpop, "POST", &format!("{env}/outagepage?pageName=maintenance.html"), &h, None);
    assert_eq!(r.status, 204, "{}", r.body);
    assert_eq!(settle(&devpop, r.deployment(), &h)["state"], "ready");
    assert_eq!(call_with(&devpop, "GET", &format!("{env}/outagepage"), &h, None).body[0]["engaged"], true);
    let r = call_with(&devpop, "DELETE", &format!("{env}/outagepage"), &h, None);
    assert_eq!(r.status, 204);
    assert_eq!(settle(&devpop, r.deployment(), &h)["state"], "ready");
    assert_eq!(call_with(&devpop, "GET", &format!("{env}/outagepage"), &h, None).body[0]["engaged"], false);
    let config = server_config(&devpop, app, "Staging");
    assert_eq!(config["environments"]["Staging"]["origin"]["address"], "staging-origin.example.com");
    assert_eq!(config["environments"]["Staging"]["ip_blacklist"], json!(["203.0.113.0/24"]));
}
