//! The server's log as a log collector reads it (`--log-format json`), from a real server.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;

/// A server whose stderr (its log) goes to a file.
struct Logged {
    child: Child,
    url: String,
    data: tempfile::TempDir,
    log: tempfile::NamedTempFile,
}

impl Logged {
    fn start() -> Self {
        let data = tempfile::tempdir().unwrap();
        let log = tempfile::NamedTempFile::new().unwrap();
        let mut child = Command::new(DEVPOP)
            .args(["serve", "--listen", "127.0.0.1:0", "--data"])
            .arg(data.path())
            .env("DEVPOP_LOG", "info")
            .env("DEVPOP_LOG_FORMAT", "json")
            .stdout(Stdio::piped())
            .stderr(log.reopen().unwrap())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let url = line.strip_prefix("devpop serving on ").and_then(|r| r.split_whitespace().next()).unwrap().to_owned();
        Logged { child, url, data, log }
    }

    fn lines(&self) -> Vec<String> {
        std::fs::read_to_string(self.log.path()).unwrap().lines().map(str::to_owned).collect()
    }
}

impl Drop for Logged {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_failed_deployments_json_log_line_has_one_message_key_and_the_reason_apart() {
    let server = Logged::start();
    let out = Command::new(DEVPOP)
        .args(["app", "create", "acme", "shop", "shop", "--origin", "origin.example.com", "--public-url", &server.url])
        .arg("--data")
        .arg(server.data.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // The render-only target cannot publish where a file stands in for the rendered repo.
    let rendered = server.data.path().join("rendered/acme/shop/shop.git");
    std::fs::remove_dir_all(&rendered).unwrap();
    std::fs::write(&rendered, "not a repo").unwrap();

    let (_dir, work) = clone(&format!("{}/account/acme/application/shop/shop.git", server.url));
    replace_tree(&work, &fixture("repos/sample-application"));
    commit_all(&work, "sample");
    let out = git(&work, &["push", "origin", "HEAD:Production"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let id = queued_deployment(&stderr(&out), "Production");

    let mut failed = None;
    let logged = eventually(Duration::from_secs(60), || {
        failed = server.lines().into_iter().find(|l| l.contains("deployment failed"));
        failed.is_some()
    });
    assert!(logged, "no 'deployment failed' line in:\n{}", server.lines().join("\n"));
    let line = failed.unwrap();
    assert_eq!(line.matches("\"message\":").count(), 1, "{line}");
    let json: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(json["fields"]["message"], "deployment failed", "{line}");
    assert_eq!(json["fields"]["deployment"], id, "{line}");
    assert!(json["fields"]["reason"].as_str().is_some_and(|r| !r.is_empty()), "{line}");
}
