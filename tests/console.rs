//! The console in a real browser: headless Chromium driven over WebDriver (chromedriver, from
//! Debian's packages; tests/run installs them) through what a team does: create an application,
//! push to it with real git, watch its deployment finish in the page, read a failed one's error.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A minimal W3C WebDriver client (the handful of commands these tests use).
struct Browser {
    driver: Child,
    addr: String,
    session: String,
}

impl Browser {
    fn start() -> Browser {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (Debian package chromium-driver; tests/run installs it)");
        let addr = format!("127.0.0.1:{port}");
        assert!(
            eventually(Duration::from_secs(20), || std::net::TcpStream::connect(&addr).is_ok()),
            "chromedriver did not start"
        );
        let profile = tempfile::tempdir().unwrap().keep();
        let caps = json!({"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": {
            "binary": "/usr/bin/chromium",
            "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                     "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     "--window-size=1280,1000", format!("--user-data-dir={}", profile.display())]
        }}}});
        let mut b = Browser { driver, addr, session: String::new() };
        let v = b.send("POST", "/session", caps);
        b.session = v["sessionId"].as_str().unwrap_or_else(|| panic!("no session: {v}")).to_owned();
        b
    }

    fn send(&self, method: &str, path: &str, body: Value) -> Value {
        let body = if method == "GET" || method == "DELETE" { String::new() } else { body.to_string() };
        let r = http(&self.addr, method, path, &[("Content-Type", "application/json")], body.as_bytes());
        let v: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
        assert!(r.status < 400, "WebDriver {method} {path}: {} {v}", r.status);
        v["value"].clone()
    }

    fn cmd(&self, method: &str, path: &str, body: Value) -> Value {
        self.send(method, &format!("/session/{}{path}", self.session), body)
    }

    fn goto(&self, url: &str) {
        self.cmd("POST", "/url", json!({ "url": url }));
    }

    fn url(&self) -> String {
        self.cmd("GET", "/url", Value::Null).as_str().unwrap().to_owned()
    }

    fn find(&self, css: &str) -> String {
        let v = self.cmd("POST", "/element", json!({"using": "css selector", "value": css}));
        v[ELEMENT].as_str().unwrap_or_else(|| panic!("no element {css}: {v}")).to_owned()
    }

    fn text(&self, css: &str) -> String {
        let e = self.find(css);
        self.cmd("GET", &format!("/element/{e}/text"), Value::Null).as_str().unwrap_or("").to_owned()
    }

    fn type_into(&self, css: &str, text: &str) {
        let e = self.find(css);
        self.cmd("POST", &format!("/element/{e}/value"), json!({ "text": text }));
    }

    /// Waits until `css`'s text satisfies `f`; returns it.
    fn wait_text(&self, css: &str, f: impl Fn(&str) -> bool) -> String {
        let mut last = String::new();
        let ok = eventually(Duration::from_secs(20), || {
            last = self.text(css);
            f(&last)
        });
        assert!(ok, "{css} never matched; last text {last:?}");
        last
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = http(&self.addr, "DELETE", &format!("/session/{}", self.session), &[], b"");
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

#[test]
fn a_team_creates_an_application_pushes_and_watches_the_deployment_in_the_browser() {
    let devpop = Devpop::start();
    let b = Browser::start();
    b.goto(&format!("{}/console", devpop.url));
    assert!(b.text("main").contains("No applications yet"));

    // Create an application with the keyboard only: type, and Enter submits.
    b.type_into("input[name=application]", "shop");
    b.type_into("input[name=origin]", "origin.example.com\u{E007}");
    assert!(
        eventually(Duration::from_secs(10), || b.url().ends_with("/console/accounts/9999/applications/shop")),
        "landed on {}",
        b.url()
    );
    let clone_url = b.text("#clone-url");
    assert_eq!(clone_url, format!("{}/account/9999/application/shop/shop.git", devpop.url));

    // Push the sample application to it with real git.
    let (_dir, work) = clone(&clone_url);
    replace_tree(&work, &fixture("repos/sample-application"));
    commit_all(&work, "sample");
    // Hold the rendered repo's writer lock so the deployment stops mid-way (applying).
    let rendered = devpop.data.path().join("rendered/9999/shop");
    std::fs::create_dir_all(&rendered).unwrap();
    let lock = std::fs::File::create(rendered.join("shop.git.lock")).unwrap();
    lock.lock().unwrap();
    let out = git(&work, &["push", "origin", "HEAD:Production"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let id = queued_deployment(&stderr(&out), "Production");

    // The deployment page shows it under way, then, live (no reload), reaching its final state.
    b.goto(&format!("{}/console/deployments/{id}", devpop.url));
    b.wait_text("#state", |s| s == "applying");
    drop(lock);
    b.wait_text("#state", |s| s == "ready");
    let steps = b.text("#steps");
    for want in ["queued", "rendering", "applying", "render-only target: manifests published"] {
        assert!(steps.contains(want), "{want:?} not in {steps}");
    }
    let output = b.text("#validation");
    assert!(output.contains("Validating configuration for proxy cache..."), "the push output is shown: {output}");

    // The application page lists the environment with its stack and the deployment.
    b.goto(&format!("{}/console/accounts/9999/applications/shop", devpop.url));
    let main = b.text("main");
    assert!(
        main.contains("Production") && main.contains("edge-cache:6.5.0") && main.contains("example-simple:1.0.0"),
        "{main}"
    );
    let history = b.text("table");
    assert!(history.contains(&format!("{id} Production ready")), "the deployment is in the history: {history}");
}

#[test]
fn a_failed_deployment_shows_its_error_in_the_browser() {
    let devpop = Devpop::start();
    let url = devpop.create_app("9999", "site", "site");
    // Make the render-only target fail: its rendered repo cannot be written.
    let rendered = devpop.data.path().join("rendered/9999/site/site.git");
    std::fs::remove_dir_all(&rendered).unwrap(); // made with the application
    std::fs::write(&rendered, "not a repo").unwrap();
    let (_dir, work) = clone(&url);
    std::fs::write(work.join("notes.txt"), "x\n").unwrap();
    commit_all(&work, "x");
    let out = git(&work, &["push", "origin", "Production"]);
    let id = queued_deployment(&stderr(&out), "Production");
    wait_deployment(&devpop, id);

    let b = Browser::start();
    b.goto(&format!("{}/console/deployments/{id}", devpop.url));
    assert_eq!(b.text("#state"), "failed");
    let steps = b.text("#steps");
    assert!(steps.contains("failed") && steps.contains("rendered repo"), "the error is readable: {steps}");
    // And the application page links to it from the environment's badge.
    b.goto(&format!("{}/console/accounts/9999/applications/site", devpop.url));
    assert_eq!(b.text("a.badge.failed"), "failed");
}
