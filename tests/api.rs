//! The REST API against a real server: every endpoint, its errors (status and code), pages,
//! Server-Sent Events, and an OpenAPI document that matches the routes.

mod common;

use std::collections::BTreeSet;
use std::process::Command;

use common::*;
use serde_json::{json, Value};

fn call(devpop: &Devpop, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let headers: &[(&str, &str)] = if body.is_empty() { &[] } else { &[("Content-Type", "application/json")] };
    let r = http(&devpop.addr(), method, path, headers, body.as_bytes());
    (r.status, serde_json::from_slice(&r.body).unwrap_or(Value::Null))
}

fn error_code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or_else(|| panic!("not an API error: {v}"))
}

#[test]
fn applications_can_be_created_listed_read_and_deleted() {
    let devpop = Devpop::start();
    let (s, app) = call(
        &devpop,
        "POST",
        "/api/v1/accounts/9999/applications",
        Some(json!({"application": "9999", "repo": "www-site", "origin": "origin.example.com"})),
    );
    assert_eq!(s, 201, "{app}");
    assert_eq!(app["clone_url"], format!("{}/account/9999/application/9999/www-site.git", devpop.url));
    assert_eq!(app["environments"], json!(["Production"]));
    let (_d, work) = clone(app["clone_url"].as_str().unwrap());
    assert!(work.join("section.config.json").is_file(), "the API-created application clones");

    for (body, status, code) in [
        (json!({"application": "9999", "origin": "origin.example.com"}), 409, "exists"),
        (json!({"application": "a b", "origin": "x.com"}), 400, "invalid_name"),
        (json!({"application": "other", "origin": "http://x.com/"}), 400, "invalid_origin"),
        (json!({"application": "other"}), 400, "invalid_body"),
        (json!({"application": 5, "origin": "x.com"}), 400, "invalid_body"),
        (json!({"application": "other", "origin": "x.com", "colour": "red"}), 400, "invalid_body"),
    ] {
        let (s, v) = call(&devpop, "POST", "/api/v1/accounts/9999/applications", Some(body.clone()));
        assert_eq!((s, error_code(&v)), (status, code), "{body}: {v}");
    }
    let r = http(&devpop.addr(), "POST", "/api/v1/accounts/9999/applications", &[("Content-Type", "text/plain")], b"x");
    assert_eq!(r.status, 415);

    call(
        &devpop,
        "POST",
        "/api/v1/accounts/9999/applications",
        Some(json!({"application": "second", "origin": "b.example.com"})),
    );
    let (s, list) = call(&devpop, "GET", "/api/v1/accounts/9999/applications?limit=1&offset=1", None);
    assert_eq!(s, 200);
    assert_eq!((list["total"].as_u64(), list["items"].as_array().unwrap().len()), (Some(2), 1));
    assert_eq!(list["items"][0]["application"], "second");
    let (_, accounts) = call(&devpop, "GET", "/api/v1/accounts", None);
    assert_eq!(accounts["items"], json!([{"account": "9999", "applications": 2}]));

    let (s, got) = call(&devpop, "GET", "/api/v1/accounts/9999/applications/9999", None);
    assert_eq!((s, got["repo"].as_str()), (200, Some("www-site")));
    for (path, status, code) in [
        ("/api/v1/accounts/9999/applications/nope", 404, "not_found"),
        ("/api/v1/accounts/9999/applications/..", 400, "invalid_name"),
        ("/api/v1/accounts/bad%20name/applications", 400, "invalid_name"),
    ] {
        let (s, v) = call(&devpop, "GET", path, None);
        assert_eq!((s, error_code(&v)), (status, code), "{path}: {v}");
    }

    let (s, _) = call(&devpop, "DELETE", "/api/v1/accounts/9999/applications/second", None);
    assert_eq!(s, 204);
    let (s, v) = call(&devpop, "GET", "/api/v1/accounts/9999/applications/second", None);
    assert_eq!((s, error_code(&v)), (404, "not_found"));
}

#[test]
fn environments_stack_config_and_their_deployments() {
    let devpop = Devpop::start();
    let (_dir, work) = deploy_sample(&devpop, ("1", "shop", "shop"), &["Production"]);
    let base = "/api/v1/accounts/1/applications/shop/environments";

    let (s, created) = call(&devpop, "POST", base, Some(json!({"name": "Dev", "source": "Production"})));
    assert_eq!(s, 201, "{created}");
    assert!(created["namespace"].as_str().unwrap().starts_with("section-shop-dev-"));
    let d = wait_deployment(&devpop, created["deployment"].as_u64().unwrap());
    assert_eq!(d["state"], "ready", "{d}");
    git_ok(&work, &["fetch", "-q", "origin"]);
    let config = git_ok(&work, &["show", "origin/Dev:section.config.json"]);
    assert!(config.contains("\"Dev\""), "Dev's settings were copied from Production: {config}");

    for (body, status, code) in [
        (json!({"name": "Dev", "source": "Production"}), 409, "exists"),
        (json!({"name": "Qa", "source": "Nowhere"}), 404, "not_found"),
        (json!({"name": "bad name", "source": "Production"}), 400, "invalid_name"),
        (json!({"name": "Qa"}), 400, "invalid_body"),
    ] {
        let (s, v) = call(&devpop, "POST", base, Some(body.clone()));
        assert_eq!((s, error_code(&v)), (status, code), "{body}: {v}");
    }

    let (_, envs) = call(&devpop, "GET", base, None);
    let names: BTreeSet<&str> = envs["items"].as_array().unwrap().iter().map(|e| e["name"].as_str().unwrap()).collect();
    assert_eq!(names, BTreeSet::from(["Dev", "Production"]));
    let (s, prod) = call(&devpop, "GET", &format!("{base}/Production"), None);
    assert_eq!((s, prod["last_deployment"]["state"].as_str()), (200, Some("ready")));

    let (s, stack) = call(&devpop, "GET", &format!("{base}/Production/stack"), None);
    assert_eq!(s, 200);
    assert_eq!(
        stack,
        json!([
            {"name": "cache", "package": "edge-cache:6.5.0", "image": "registry.example.com/section/edge-cache:6.5.0-r3"},
            {"name": "example", "package": "example-simple:1.0.0", "image": "registry.example.com/section/example-simple:1.0.0-k1"}
        ])
    );
    let (s, config) = call(&devpop, "GET", &format!("{base}/Production/config"), None);
    assert_eq!((s, config["proxychain"][0]["name"].as_str()), (200, Some("cache")));
    let (s, deps) = call(&devpop, "GET", &format!("{base}/Production/deployments"), None);
    assert_eq!((s, deps["total"].as_u64()), (200, Some(1)));

    let (s, v) = call(&devpop, "GET", &format!("{base}/Nope/stack"), None);
    assert_eq!((s, error_code(&v)), (404, "not_found"));
    let (s, v) = call(&devpop, "DELETE", &format!("{base}/Production"), None);
    assert_eq!((s, error_code(&v)), (409, "default_environment"));
    let (s, removal) = call(&devpop, "DELETE", &format!("{base}/Dev"), None);
    assert_eq!(s, 202);
    assert_eq!(wait_deployment(&devpop, removal["deployment"].as_u64().unwrap())["state"], "ready");
    let (s, _) = call(&devpop, "GET", &format!("{base}/Dev"), None);
    assert_eq!(s, 404);
}

#[test]
fn deployments_are_listed_read_and_followed_live() {
    let devpop = Devpop::start();
    let url = devpop.create_app("1", "site", "site");
    let (_dir, work) = clone(&url);
    std::fs::write(work.join("a.txt"), "a\n").unwrap();
    commit_all(&work, "a");
    let out = git(&work, &["push", "origin", "Production"]);
    let id = queued_deployment(&stderr(&out), "Production");
    wait_deployment(&devpop, id);

    let (s, list) = call(&devpop, "GET", "/api/v1/deployments?application=site&environment=Production", None);
    assert_eq!((s, list["items"][0]["id"].as_u64()), (200, Some(id)));
    let lines: Vec<&str> =
        list["items"][0]["validation"].as_array().unwrap().iter().map(|l| l.as_str().unwrap()).collect();
    assert!(
        lines.iter().any(|l| l.starts_with("Rendering environment Production (namespace ")),
        "the push's check output is kept: {lines:?}"
    );
    let (_, none) = call(&devpop, "GET", "/api/v1/deployments?environment=Staging", None);
    assert_eq!(none["total"], 0);
    for (path, status, code) in
        [("/api/v1/deployments/abc", 400, "invalid_id"), ("/api/v1/deployments/999", 404, "not_found")]
    {
        let (s, v) = call(&devpop, "GET", path, None);
        assert_eq!((s, error_code(&v)), (status, code));
    }

    // Server-Sent Events: the current state; the stream ends at a final state.
    let r = http(&devpop.addr(), "GET", &format!("/api/v1/deployments/{id}/events"), &[], b"");
    assert_eq!(r.status, 200);
    assert!(r.head.to_ascii_lowercase().contains("content-type: text/event-stream"), "{}", r.head);
    let text = r.text();
    assert!(text.contains("event: deployment"), "{text}");
    let last = text.lines().filter_map(|l| l.strip_prefix("data: ")).next_back().unwrap();
    assert_eq!(serde_json::from_str::<Value>(last).unwrap()["state"], "ready");
}

#[test]
fn packages_are_listed_and_installed_from_an_uploaded_archive() {
    let devpop = Devpop::start();
    let (s, list) = call(&devpop, "GET", "/api/v1/packages", None);
    assert_eq!(s, 200);
    let names: Vec<&str> = list["items"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["edge-cache:6.5.0", "example-simple:1.0.0"]);

    let src = tempfile::tempdir().unwrap();
    let pkg = src.path().join("example-simple");
    copy_tree(&fixture("packages/example-simple"), &pkg);
    let yaml = pkg.join(".section-proxy.yaml");
    std::fs::write(
        &yaml,
        std::fs::read_to_string(&yaml).unwrap().replace("example-simple:1.0.0", "example-simple:2.0.0"),
    )
    .unwrap();
    let archive = |dir: &std::path::Path| -> Vec<u8> {
        let out = Command::new("tar").args(["czf", "-", "-C"]).arg(dir).arg(".").output().unwrap();
        assert!(out.status.success());
        out.stdout
    };
    let upload =
        |bytes: &[u8], ct: &str| http(&devpop.addr(), "POST", "/api/v1/packages", &[("Content-Type", ct)], bytes);
    let r = upload(&archive(src.path()), "application/gzip");
    assert_eq!(r.status, 201, "{}", r.text());
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!((v["name"].as_str(), v["version"].as_str()), (Some("example-simple:2.0.0"), Some("2.0.0")));
    let r = upload(&archive(src.path()), "application/gzip");
    assert_eq!(r.status, 409, "{}", r.text());
    assert_eq!(upload(b"x", "text/plain").status, 415);
    assert_eq!(upload(b"not a gzip", "application/gzip").status, 400);

    std::os::unix::fs::symlink("/etc/passwd", pkg.join("proxy_config/passwd")).unwrap();
    let r = upload(&archive(src.path()), "application/gzip");
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("only regular files and folders are allowed"), "{}", r.text());
    std::fs::remove_file(pkg.join("proxy_config/passwd")).unwrap();

    std::fs::write(
        &yaml,
        std::fs::read_to_string(&yaml)
            .unwrap()
            .replace("2.0.0", "3.0.0")
            .replace("spec:\n", "spec:\n  hostNetwork: true\n"),
    )
    .unwrap();
    let r = upload(&archive(src.path()), "application/gzip");
    assert_eq!(r.status, 422, "{}", r.text());
    assert!(r.text().contains("hostNetwork"), "{}", r.text());
}

#[test]
fn the_openapi_document_matches_the_routes() {
    let devpop = Devpop::start();
    let (s, doc) = call(&devpop, "GET", "/api/v1/openapi.json", None);
    assert_eq!(s, 200);
    assert_eq!(doc["openapi"], "3.1.0");
    let documented: BTreeSet<String> = doc["paths"].as_object().unwrap().keys().cloned().collect();
    // Every /api route the router has (read from its source) is documented, and vice versa.
    let source: String = ["src/api/mod.rs", "src/api/aperture/routes.rs"]
        .map(|f| std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(f)).unwrap())
        .concat();
    let routed: BTreeSet<String> = source.split('"').filter(|s| s.starts_with("/api/v1")).map(str::to_owned).collect();
    assert_eq!(routed, documented);
    // Every documented operation answers (no router miss), with or without data behind it.
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            let concrete = path
                .replace("{account}", "1")
                .replace("{application}", "1")
                .replace("{environment}", "Production")
                .replace("{id}", "1");
            let body = if method == "post" { Some(json!({})) } else { None };
            let r = http(
                &devpop.addr(),
                &method.to_ascii_uppercase(),
                &concrete,
                &[("Content-Type", "application/json")],
                body.map(|b| b.to_string()).unwrap_or_default().as_bytes(),
            );
            assert!(!r.text().contains("no API resource at"), "{method} {path} is not routed");
            assert!(r.status != 405, "{method} {path}: method not allowed");
        }
    }
}
