//! The console in a real browser: headless Chromium driven over WebDriver (chromedriver, from
//! Debian's packages; tests/run installs them) through what a team does: create an application,
//! push to it with real git, watch its deployment finish in the page, read a failed one's error;
//! manage an environment (settings, Advanced config, modules, rollback, redeploy, delete), each
//! change a commit checked like a push and deployed.
//!
//! With `DEVPOP_SCREENSHOTS=<dir>`, the tests save the README's screenshots there, each page at
//! 1280 px and 390 px wide (`docs/screenshots/` is refreshed with
//! `DEVPOP_SCREENSHOTS=$PWD/docs/screenshots cargo test --test console`).

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

    fn click(&self, css: &str) {
        let e = self.find(css);
        self.cmd("POST", &format!("/element/{e}/click"), json!({}));
    }

    fn clear(&self, css: &str) {
        let e = self.find(css);
        self.cmd("POST", &format!("/element/{e}/clear"), json!({}));
    }

    /// An element's DOM property (`value` is what a field holds now).
    fn property(&self, css: &str, name: &str) -> String {
        let e = self.find(css);
        let v = self.cmd("GET", &format!("/element/{e}/property/{name}"), Value::Null);
        v.as_str().unwrap_or("").to_owned()
    }

    fn exists(&self, css: &str) -> bool {
        let v = self.cmd("POST", "/elements", json!({"using": "css selector", "value": css}));
        v.as_array().is_some_and(|a| !a.is_empty())
    }

    /// Waits until the page's URL satisfies `f`.
    fn wait_url(&self, f: impl Fn(&str) -> bool) -> String {
        let mut last = String::new();
        let ok = eventually(Duration::from_secs(20), || {
            last = self.url();
            f(&last)
        });
        assert!(ok, "the page never got there; at {last}");
        last
    }

    /// At a phone's width (390 px), the page needs no sideways scrolling.
    fn assert_fits_a_phone(&self) {
        self.cmd("POST", "/window/rect", json!({"width": 390, "height": 844}));
        let widths = self.cmd(
            "POST",
            "/execute/sync",
            json!({"script": "return [document.documentElement.scrollWidth, window.innerWidth]", "args": []}),
        );
        self.cmd("POST", "/window/rect", json!({"width": 1280, "height": 1000}));
        let (page, window) = (widths[0].as_u64().unwrap(), widths[1].as_u64().unwrap());
        assert!(window <= 400, "the window became phone-sized: {window}");
        assert!(page <= window, "{}: {page} px wide in a {window} px window", self.url());
    }

    /// With `DEVPOP_SCREENSHOTS` set, saves the page as `<name>.png` at 1280 px and
    /// `<name>-phone.png` at 390 px wide (whole page height), then restores the window.
    fn screenshots(&self, name: &str) {
        let Ok(dir) = std::env::var("DEVPOP_SCREENSHOTS") else { return };
        use base64::Engine;
        for (width, suffix) in [(1280, ""), (390, "-phone")] {
            self.cmd("POST", "/window/rect", json!({"width": width, "height": 900}));
            let height = self.cmd(
                "POST",
                "/execute/sync",
                json!({"script": "return document.documentElement.scrollHeight", "args": []}),
            );
            let height = height.as_u64().unwrap_or(900).clamp(600, 2400);
            self.cmd("POST", "/window/rect", json!({"width": width, "height": height}));
            let png = self.cmd("GET", "/screenshot", Value::Null);
            let png = base64::engine::general_purpose::STANDARD.decode(png.as_str().unwrap()).unwrap();
            std::fs::write(std::path::Path::new(&dir).join(format!("{name}{suffix}.png")), png).unwrap();
        }
        self.cmd("POST", "/window/rect", json!({"width": 1280, "height": 1000}));
    }

    /// The text of the first element `css` selects, if the page has one now: `None` while the
    /// page is still loading it, or when a navigation took it away between two commands.
    fn try_text(&self, css: &str) -> Option<String> {
        let ask = |method: &str, path: &str, body: &[u8]| -> Option<Value> {
            let path = format!("/session/{}{path}", self.session);
            let r = http(&self.addr, method, &path, &[("Content-Type", "application/json")], body);
            (r.status < 400).then(|| serde_json::from_slice::<Value>(&r.body).ok()).flatten()
        };
        let query = json!({"using": "css selector", "value": css}).to_string();
        let e = ask("POST", "/element", query.as_bytes())?["value"][ELEMENT].as_str()?.to_owned();
        Some(ask("GET", &format!("/element/{e}/text"), b"")?["value"].as_str().unwrap_or("").to_owned())
    }

    /// Waits until `css`'s text satisfies `f`; returns it.
    fn wait_text(&self, css: &str, f: impl Fn(&str) -> bool) -> String {
        let mut last = String::new();
        let ok = eventually(Duration::from_secs(20), || match self.try_text(css) {
            Some(text) => {
                last = text;
                f(&last)
            }
            None => false,
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

/// The deployment page the browser is on (after a console change redirects there): its id.
fn on_deployment_page(b: &Browser) -> u64 {
    let url = b.wait_url(|u| u.contains("/console/deployments/"));
    url.rsplit('/').next().unwrap().parse().unwrap()
}

fn environment_page(devpop: &Devpop, app: &str, env: &str) -> String {
    format!("{}/console/accounts/9999/applications/{app}/environments/{env}", devpop.url)
}

/// Whether the rendered repo's `env/` folder has a file containing `text`.
fn rendered_has(devpop: &Devpop, app: &str, env: &str, text: &str) -> bool {
    let rendered = devpop.data.path().join(format!("rendered/9999/{app}/{app}.git"));
    let out = git(&rendered, &["grep", "-l", "-F", text, "main", "--", &format!("{env}/")]);
    !out.stdout.is_empty()
}

#[test]
fn pages_show_local_relative_times_commit_subjects_environment_states_and_urls_and_the_push_links_the_console() {
    let devpop = Devpop::start();
    let url = devpop.create_app("9999", "shop", "shop");
    devpop.create_app("9999", "idle", "idle");
    let (_dir, work) = clone(&url);
    replace_tree(&work, &fixture("repos/sample-application"));
    commit_all(&work, "Serve the sample site");
    let out = git(&work, &["push", "origin", "HEAD:Production"]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    let id = queued_deployment(&err, "Production");
    // The push's link is the console's page, and the API's link is still there.
    let page = format!("{}/console/deployments/{id}", devpop.url);
    let api = format!("{}/api/v1/deployments/{id}", devpop.url);
    assert!(err.contains(&format!("queued for Production: {page} (API: {api})")), "{err}");
    wait_deployment(&devpop, id);

    let b = Browser::start();
    b.goto(&page);
    assert_eq!(b.text("#state"), "ready");
    assert_eq!(b.text("#subject"), "Serve the sample site");
    assert_eq!(b.text("#cause"), "push by anonymous");
    assert_eq!(b.property("#api-link", "href"), api);
    // Times are local and relative, with the exact local time on hover.
    let when = b.text("#main .card time");
    assert!(when == "just now" || when.ends_with(" ago"), "relative: {when:?}");
    let exact = b.property("#main .card time", "title");
    let year = b.property("#main .card time", "dateTime")[..4].to_owned();
    assert!(exact.contains(&year) && exact.contains(':'), "the exact time on hover: {exact:?}");
    b.assert_fits_a_phone();
    b.screenshots("deployment");

    // The list: each environment's state and last deployment; a never-deployed one looks different.
    b.goto(&format!("{}/console", devpop.url));
    let shop = b.text("tr[data-app=shop] li[data-env=Production]");
    assert!(shop.contains("ready") && shop.contains(&format!("deployment {id}")), "{shop}");
    assert_eq!(b.text("tr[data-app=idle] li[data-env=Production] .badge"), "never deployed");
    assert!(b.exists("tr[data-app=idle] .badge.never") && !b.exists("tr[data-app=shop] .badge.never"));
    b.assert_fits_a_phone();
    b.screenshots("applications");

    // The application: the environment's URL (its Ingress host), commit subjects by hashes.
    b.goto(&format!("{}/console/accounts/9999/applications/shop", devpop.url));
    let env_url = b.text(".env-url");
    assert!(env_url.starts_with("http://section-shop-") && env_url.ends_with(".devpop.localhost/"), "{env_url}");
    let history = b.text("table");
    assert!(history.contains("Serve the sample site") && history.contains("push anonymous"), "{history}");
    b.assert_fits_a_phone();
    b.screenshots("application");
    b.goto(&format!("{}/console/packages", devpop.url));
    b.screenshots("packages");
}

#[test]
fn settings_forms_deploy_a_new_origin_alternates_ip_restrictions_and_domains_and_a_refused_edit_shows_its_diagnostic_next_to_the_field(
) {
    let devpop = Devpop::start();
    devpop.create_app("9999", "shop", "shop");
    let b = Browser::start();
    b.goto(&environment_page(&devpop, "shop", "Production"));
    assert_eq!(b.property("#origin-form input[name=address]", "value"), "origin.example.com");
    b.assert_fits_a_phone();

    // Keyboard only: clear the field, type, Enter.
    b.clear("#origin-form input[name=address]");
    b.clear("#origin-form input[name=host_header]");
    b.type_into("#origin-form input[name=address]", "new-origin.example.com\u{E007}");
    let id = on_deployment_page(&b);
    b.wait_text("#state", |s| s == "ready");
    assert_eq!(b.text("#cause"), "edit by local");
    assert!(b.text("#subject").starts_with("egress.set on Production"), "{}", b.text("#subject"));
    let d = wait_deployment(&devpop, id);
    assert_eq!(d["state"], "ready", "{d}");
    assert!(
        rendered_has(&devpop, "shop", "Production", "new-origin.example.com"),
        "the rendered egress has the new origin"
    );
    assert!(!rendered_has(&devpop, "shop", "Production", "origin.example.com;"), "and not the old one");

    // A refused edit: nothing changes, the checks' diagnostic is next to the field, what was
    // typed stays.
    let before = server_branch(&devpop.repo_path("9999", "shop", "shop"), "Production");
    b.goto(&environment_page(&devpop, "shop", "Production"));
    b.clear("#origin-form input[name=address]");
    b.type_into("#origin-form input[name=address]", "http://bad.example.com/\u{E007}");
    let error = b.wait_text("#origin-error", |t| !t.is_empty());
    assert!(error.contains("environments.Production.origin.address"), "{error}");
    assert_eq!(b.property("#origin-form input[name=address]", "value"), "http://bad.example.com/");
    assert_eq!(server_branch(&devpop.repo_path("9999", "shop", "shop"), "Production"), before, "nothing committed");
    b.assert_fits_a_phone();
    b.screenshots("environment-refused");

    // A form posted from another site is refused, and changes nothing.
    let form = [("Content-Type", "application/x-www-form-urlencoded"), ("Origin", "http://evil.example")];
    let path = "/console/accounts/9999/applications/shop/environments/Production/settings/origin";
    let r = http(&devpop.addr(), "POST", path, &form, b"address=evil.example.com");
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(server_branch(&devpop.repo_path("9999", "shop", "shop"), "Production"), before);

    // IP restrictions and domains through their forms too.
    b.goto(&environment_page(&devpop, "shop", "Production"));
    b.type_into("#ip-form textarea", "203.0.113.9");
    b.click("#ip-form button[type=submit]");
    let id = on_deployment_page(&b);
    assert_eq!(wait_deployment(&devpop, id)["state"], "ready");
    assert!(rendered_has(&devpop, "shop", "Production", "203.0.113.9"), "the rendered config denies the address");
    b.goto(&environment_page(&devpop, "shop", "Production"));
    b.type_into("#domains input[name=host]", "www.shop.example\u{E007}");
    on_deployment_page(&b);
    b.goto(&environment_page(&devpop, "shop", "Production"));
    assert!(b.text("#domains").contains("www.shop.example"), "{}", b.text("#domains"));
    b.click("button[aria-label='Remove www.shop.example']");
    on_deployment_page(&b);
    b.goto(&environment_page(&devpop, "shop", "Production"));
    assert!(!b.text("#domains").contains("www.shop.example"), "{}", b.text("#domains"));

    // Alternate origins, one per line.
    b.type_into("#alternates-form textarea", "images images.shop.example");
    b.click("#alternates-form button[type=submit]");
    let id = on_deployment_page(&b);
    assert_eq!(wait_deployment(&devpop, id)["state"], "ready");
    assert!(
        rendered_has(&devpop, "shop", "Production", "images.shop.example"),
        "the rendered egress has the alternate"
    );
    b.goto(&environment_page(&devpop, "shop", "Production"));
    assert_eq!(b.property("#alternates-form textarea", "value"), "images images.shop.example");
    b.clear("#alternates-form textarea");
    b.type_into("#alternates-form textarea", "just-one-word");
    b.click("#alternates-form button[type=submit]");
    let error = b.wait_text("#alternates-error", |t| !t.is_empty());
    assert!(error.contains("line 1: write one alternate origin per line as `name address`"), "{error}");
}

#[test]
fn an_advanced_config_edit_shows_its_diff_then_commits_a_new_outage_page_is_engaged_and_a_refused_edit_shows_diagnostics_inline(
) {
    let devpop = Devpop::start();
    devpop.create_app("9999", "shop", "shop");
    let b = Browser::start();
    b.goto(&format!("{}/files", environment_page(&devpop, "shop", "Production")));
    b.click("#entries a[href$='path=section.config.json']");
    let text = b.property("textarea[name=content]", "value");
    assert!(text.contains("\"origin.example.com\""), "{text}");
    let edited = text.replace("\"host_header\": \"origin.example.com\"", "\"host_header\": \"edited.example.com\"");
    assert_ne!(edited, text);
    b.clear("textarea[name=content]");
    b.type_into("textarea[name=content]", &edited);
    b.click("button[value=review]");
    let diff = b.wait_text("#diff", |t| !t.is_empty());
    assert!(diff.contains("-        \"host_header\": \"origin.example.com\""), "{diff}");
    assert!(diff.contains("+        \"host_header\": \"edited.example.com\""), "{diff}");
    b.assert_fits_a_phone();
    b.screenshots("files");
    b.type_into("input[name=message]", "Send the edited Host header");
    b.click("button[value=commit]");
    let id = on_deployment_page(&b);
    b.wait_text("#state", |s| s == "ready");
    assert_eq!(b.text("#subject"), "Send the edited Host header");
    assert_eq!(b.text("#cause"), "console edit by local");
    assert_eq!(wait_deployment(&devpop, id)["state"], "ready");
    assert!(rendered_has(&devpop, "shop", "Production", "edited.example.com"));

    // A new file in a new folder (an outage page), then engaged from the settings: the rendered
    // egress answers every request with it.
    b.goto(&format!("{}/files", environment_page(&devpop, "shop", "Production")));
    b.type_into("input[name=path]", "outage_pages/maintenance.html\u{E007}");
    b.type_into("textarea[name=content]", "<h1>Back soon</h1>\n");
    b.click("button[value=review]");
    assert!(b.wait_text("#diff", |t| !t.is_empty()).contains("+<h1>Back soon</h1>"));
    b.click("button[value=commit]");
    let id = on_deployment_page(&b);
    assert_eq!(wait_deployment(&devpop, id)["state"], "ready");
    b.goto(&environment_page(&devpop, "shop", "Production"));
    b.click("#outage button[type=submit]");
    let id = on_deployment_page(&b);
    assert_eq!(wait_deployment(&devpop, id)["state"], "ready");
    assert!(rendered_has(&devpop, "shop", "Production", "return 503;"), "the engaged page is served");
    b.goto(&environment_page(&devpop, "shop", "Production"));
    assert_eq!(b.text("#outage-engaged"), "maintenance.html");
    b.click("#outage button[type=submit]");
    let id = on_deployment_page(&b);
    assert_eq!(wait_deployment(&devpop, id)["state"], "ready");
    assert!(!rendered_has(&devpop, "shop", "Production", "return 503;"), "disengaged");

    // The branch moved (a push) while a file was open: its commit is refused, nothing is lost.
    b.goto(&format!("{}/files?path=README.md", environment_page(&devpop, "shop", "Production")));
    let (_dir, work) = clone(&format!("{}/account/9999/application/shop/shop.git", devpop.url));
    std::fs::write(work.join("notes.txt"), "pushed meanwhile\n").unwrap();
    commit_all(&work, "Pushed meanwhile");
    assert!(git(&work, &["push", "origin", "Production"]).status.success());
    b.type_into("textarea[name=content]", "edited in the browser\n");
    b.click("button[value=review]");
    b.wait_text("#diff", |t| !t.is_empty());
    b.click("button[value=commit]");
    let error = b.wait_text("#file-error", |t| !t.is_empty());
    assert!(error.contains("changed since you opened README.md"), "{error}");

    // Broken JSON: refused by the push's checks, shown in the editor, nothing committed.
    let before = server_branch(&devpop.repo_path("9999", "shop", "shop"), "Production");
    b.goto(&format!("{}/files?path=section.config.json", environment_page(&devpop, "shop", "Production")));
    b.type_into("textarea[name=content]", "{");
    b.click("button[value=review]");
    b.wait_text("#diff", |t| !t.is_empty());
    b.click("button[value=commit]");
    let error = b.wait_text("#file-error", |t| !t.is_empty());
    assert!(error.contains("section.config.json"), "{error}");
    assert_eq!(server_branch(&devpop.repo_path("9999", "shop", "shop"), "Production"), before);
}

#[test]
fn adding_example_simple_from_the_console_commits_its_default_config_and_the_deployment_validates_it() {
    let devpop = Devpop::start();
    devpop.create_app("9999", "shop", "shop");
    let b = Browser::start();
    b.goto(&environment_page(&devpop, "shop", "Production"));
    b.click("#add-module option[value='example-simple:1.0.0']");
    b.type_into("#add-module input[name=name]", "example\u{E007}");
    let id = on_deployment_page(&b);
    b.wait_text("#state", |s| s == "ready");
    let output = b.text("#validation");
    assert!(output.contains("Validating configuration for proxy example..."), "{output}");
    assert_eq!(b.text("#cause"), "console edit by local");
    assert_eq!(wait_deployment(&devpop, id)["state"], "ready");
    // The package's default proxy_config/ is the module's folder.
    let (_dir, work) = clone(&format!("{}/account/9999/application/shop/shop.git", devpop.url));
    let starter = std::fs::read_to_string(work.join("example/server.conf")).unwrap();
    assert_eq!(starter, include_str!("../templates/packages/example-simple/proxy_config/server.conf"));

    // A second module, moved to the front, then the first removed.
    b.goto(&environment_page(&devpop, "shop", "Production"));
    b.click("#add-module option[value='edge-cache:6.5.0']");
    b.type_into("#add-module input[name=name]", "cache\u{E007}");
    on_deployment_page(&b);
    b.goto(&environment_page(&devpop, "shop", "Production"));
    b.click("button[aria-label='Move cache up']");
    on_deployment_page(&b);
    b.goto(&environment_page(&devpop, "shop", "Production"));
    let stack = b.text("#stack");
    assert!(stack.find("cache").unwrap() < stack.find("example").unwrap(), "{stack}");
    b.screenshots("environment");
    b.click("button[aria-label='Remove example']");
    on_deployment_page(&b);
    b.goto(&environment_page(&devpop, "shop", "Production"));
    let stack = b.text("#stack");
    assert!(stack.contains("cache") && !stack.contains("example"), "{stack}");
    git_ok(&work, &["pull", "-q", "origin", "Production"]);
    assert!(!work.join("example").exists(), "the module's folder went with it");

    // A name the checks refuse: their diagnostic, next to the form.
    b.click("#add-module option[value='example-simple:1.0.0']");
    b.type_into("#add-module input[name=name]", "ex-ample\u{E007}");
    let error = b.wait_text("#modules-error", |t| !t.is_empty());
    assert!(error.contains("ex-ample"), "{error}");
}

#[test]
fn rollback_redeploy_and_deletes_run_from_the_console_after_a_confirmation_attributed_to_the_token() {
    let devpop = Devpop::start_with(&["--auth", "tokens"]);
    let token = {
        let out = Command::new(DEVPOP)
            .args(["token", "create", "--account", "9999", "--data"])
            .arg(devpop.data.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    devpop.create_app("9999", "shop", "shop");
    let url = format!("{}/account/9999/application/shop/shop.git", devpop.url).replacen(
        "http://",
        &format!("http://section-token:{token}@"),
        1,
    );
    let (_dir, work) = clone(&url);
    std::fs::write(work.join("notes.txt"), "one\n").unwrap();
    commit_all(&work, "First notes");
    let first = queued_deployment(&stderr(&git(&work, &["push", "origin", "Production"])), "Production");
    wait_deployment_as(&devpop, first, &token);
    std::fs::write(work.join("notes.txt"), "two\n").unwrap();
    commit_all(&work, "Second notes");
    let second = queued_deployment(&stderr(&git(&work, &["push", "origin", "Production"])), "Production");
    wait_deployment_as(&devpop, second, &token);

    let b = Browser::start();
    b.goto(&format!("{}/console/login", devpop.url));
    b.type_into("input[name=token]", &format!("{token}\u{E007}"));
    b.wait_url(|u| u.ends_with("/console"));

    // Rollback to the first deployment: confirm, then a new commit restoring its state.
    b.goto(&environment_page(&devpop, "shop", "Production"));
    b.click(&format!("a[aria-label='Roll back to deployment {first}']"));
    assert!(b.text("#confirm").contains(&format!("deployment {first}")));
    b.assert_fits_a_phone();
    b.screenshots("confirm");
    b.click("#confirm button[type=submit]");
    let rollback = on_deployment_page(&b);
    b.wait_text("#state", |s| s == "ready");
    let cause = b.text("#cause");
    assert!(cause.starts_with("rollback by tok_"), "the token's name, not api: {cause}");
    assert!(b.text("#subject").starts_with(&format!("Roll back Production to deployment {first}")));
    git_ok(&work, &["pull", "-q", "origin", "Production"]);
    assert_eq!(std::fs::read_to_string(work.join("notes.txt")).unwrap(), "one\n");

    // Redeploy.
    b.goto(&environment_page(&devpop, "shop", "Production"));
    b.click("a[href$='/do/redeploy']");
    b.click("#confirm button[type=submit]");
    let redeploy = on_deployment_page(&b);
    assert!(redeploy > rollback);
    assert!(b.text("#cause").starts_with("redeploy by tok_"), "{}", b.text("#cause"));
    b.wait_text("#state", |s| s == "ready");

    // Deleting an environment needs its name typed.
    let r = http(
        &devpop.addr(),
        "POST",
        "/api/v1/accounts/9999/applications/shop/environments",
        &[("Content-Type", "application/json"), ("Authorization", &format!("Bearer {token}"))],
        br#"{"name": "Staging", "source": "Production"}"#,
    );
    assert_eq!(r.status, 201, "{}", r.text());
    b.goto(&environment_page(&devpop, "shop", "Staging"));
    b.click("a[href$='/do/delete']");
    b.type_into("#confirm input[name=name]", "Production\u{E007}");
    assert!(b.wait_text("#confirm-error", |t| !t.is_empty()).contains("type Staging"));
    b.clear("#confirm input[name=name]");
    b.type_into("#confirm input[name=name]", "Staging\u{E007}");
    on_deployment_page(&b);
    assert!(b.text("#cause").starts_with("removal by tok_"), "{}", b.text("#cause"));
    assert!(!server_branch_exists(&devpop.repo_path("9999", "shop", "shop"), "Staging"));

    // And the application.
    b.goto(&format!("{}/console/accounts/9999/applications/shop", devpop.url));
    b.click("a[href$='/shop/delete']");
    b.type_into("#confirm input[name=name]", "shop\u{E007}");
    b.wait_url(|u| u.ends_with("/console"));
    assert!(b.text("main").contains("No applications yet"));
}

fn wait_deployment_as(devpop: &Devpop, id: u64, token: &str) {
    let auth = format!("Bearer {token}");
    let done = eventually(Duration::from_secs(30), || {
        let r = http(&devpop.addr(), "GET", &format!("/api/v1/deployments/{id}"), &[("Authorization", &auth)], b"");
        let v: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
        v["state"] == "ready"
    });
    assert!(done, "deployment {id} did not become ready");
}

fn server_branch_exists(repo: &std::path::Path, branch: &str) -> bool {
    git2::Repository::open_bare(repo).unwrap().find_reference(&format!("refs/heads/{branch}")).is_ok()
}

#[test]
fn settings_of_an_account_that_is_not_a_number_are_saved_the_console_needs_no_aperture_id() {
    let devpop = Devpop::start();
    devpop.create_app("acme", "shop", "shop");
    let before = server_branch(&devpop.repo_path("acme", "shop", "shop"), "Production");
    let form = [("Content-Type", "application/x-www-form-urlencoded")];
    let path = "/console/accounts/acme/applications/shop/environments/Production/settings/origin";
    let r = http(&devpop.addr(), "POST", path, &form, b"address=new.example.com");
    assert_eq!(r.status, 303, "{}", r.text());
    assert!(r.head.to_ascii_lowercase().contains("location: /console/deployments/"), "{}", r.head);
    let repo = devpop.repo_path("acme", "shop", "shop");
    assert_ne!(server_branch(&repo, "Production"), before, "committed");
    let data = repo.ancestors().nth(4).unwrap();
    assert!(!data.join("aperture-ids.json").exists(), "no Aperture id was allocated");
}

#[test]
fn the_logs_page_of_the_render_only_target_says_logs_live_where_the_manifests_are_applied() {
    let devpop = Devpop::start();
    devpop.create_app("9999", "shop", "shop");
    let b = Browser::start();
    b.goto(&environment_page(&devpop, "shop", "Production"));
    b.click("a[href$='/logs']");
    let logs = b.wait_text("#logs", |t| !t.is_empty());
    assert!(
        logs.contains("render-only target") && logs.contains("Logs live where the manifests are applied"),
        "{logs}"
    );
    assert!(logs.contains("kubectl logs -n section-shop-"), "{logs}");
    // An environment that does not exist is a console error page, not the API's JSON.
    for page in ["", "/files", "/logs"] {
        let path = format!("/console/accounts/9999/applications/shop/environments/Nope{page}");
        let r = http(&devpop.addr(), "GET", &path, &[], b"");
        assert_eq!(r.status, 404, "{path}");
        assert!(r.text().contains("has no environment Nope") && !r.text().starts_with('{'), "{path}: {}", r.text());
    }
}

#[test]
fn stand_in_api_logs_are_followed_live_in_the_console_newest_first_and_filtered_by_module() {
    let kube = common::kubeapi::KubeApi::start();
    kube.add_pod("example-7d9f", "example", &["example"]);
    kube.add_pod("egress-5c6b", "egress", &["egress"]);
    kube.log("example-7d9f", "example", "2026-11-30T06:00:00Z", "example starting");
    kube.log("egress-5c6b", "egress", "2026-11-30T06:00:01Z", "egress starting");
    let kubeconfig = kube.kubeconfig();
    let devpop = Devpop::start_with(&["--target", "cluster", "--kubeconfig", kubeconfig.to_str().unwrap()]);
    devpop.create_app("9999", "shop", "shop");
    let b = Browser::start();
    b.goto(&format!("{}/logs", environment_page(&devpop, "shop", "Production")));
    b.wait_text("#log-status", |s| s == "following");
    let lines = b.wait_text("#log-lines", |t| t.contains("example starting") && t.contains("egress starting"));
    assert!(lines.contains("example/example") && lines.contains("egress/egress"), "{lines}");

    // A line written now shows up, at the top, without a reload.
    kube.log("egress-5c6b", "egress", "2026-11-30T06:00:02Z", "GET / 200 live");
    b.wait_text("#log-lines li:first-child", |t| t.contains("GET / 200 live"));
    kube.log("example-7d9f", "example", "2026-11-30T06:00:03Z", "example: cache hit");
    b.wait_text("#log-lines li:first-child", |t| t.contains("example: cache hit"));
    b.screenshots("logs");

    // Filtered by module: only that module's lines stay visible.
    b.click("#log-filter option[value='example']");
    let shown = b.wait_text("#log-lines", |t| !t.contains("egress"));
    assert!(shown.contains("example: cache hit") && shown.contains("example starting"), "{shown}");
    kube.log("egress-5c6b", "egress", "2026-11-30T06:00:04Z", "GET /hidden 200");
    kube.log("example-7d9f", "example", "2026-11-30T06:00:05Z", "example: after the filter");
    let shown = b.wait_text("#log-lines", |t| t.contains("example: after the filter"));
    assert!(!shown.contains("GET /hidden 200"), "{shown}");
}

#[test]
fn an_environment_whose_branch_moved_without_the_server_shows_both_commits_until_reconciled() {
    let devpop = Devpop::start();
    let (_dir, work) = deploy_sample(&devpop, ("9999", "shop", "shop"), &["Production"]);
    let deployed = git_ok(&work, &["rev-parse", "HEAD"]);

    let b = Browser::start();
    let app_page = format!("{}/console/accounts/9999/applications/shop", devpop.url);
    b.goto(&app_page);
    b.wait_text("section.card h3", |t| t.contains("ready"));
    assert!(!b.exists("[data-drift]"), "no drift while the branch is what was deployed");

    // A push straight to the repo on disk: checked by the hook, deployed by nobody.
    std::fs::write(work.join("moved.txt"), "moved\n").unwrap();
    commit_all(&work, "Pushed around the server");
    let moved = git_ok(&work, &["rev-parse", "HEAD"]);
    let repo = devpop.repo_path("9999", "shop", "shop");
    let out = git(&work, &["push", repo.to_str().unwrap(), "HEAD:Production"]);
    assert!(out.status.success(), "{}", stderr(&out));

    b.goto(&app_page);
    let drift = b.wait_text("[data-drift]", |t| t.contains("branch at"));
    assert_eq!(drift, format!("branch at {}, deployed: {}", &moved[..12], &deployed[..12]));
    b.goto(&environment_page(&devpop, "shop", "Production"));
    let header = b.text("#main .card");
    assert!(header.contains(&format!("branch at {}", &moved[..12])), "{header}");
    assert!(header.contains(&format!("deployed: {}", &deployed[..12])), "{header}");

    // Reconciliation deploys the branch; the marks go.
    let r = http(&devpop.addr(), "POST", "/api/v1/reconcile", &[], b"");
    assert_eq!(r.status, 200, "{}", r.text());
    let queued: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(wait_deployment(&devpop, queued[0]["id"].as_u64().unwrap())["state"], "ready");
    b.goto(&app_page);
    b.wait_text("section.card h3", |t| t.contains("ready"));
    assert!(!b.exists("[data-drift]"), "no drift once the branch's commit is deployed");
    b.goto(&environment_page(&devpop, "shop", "Production"));
    assert!(!b.text("#main .card").contains("deployed: "), "the environment page drops the mark too");
}
