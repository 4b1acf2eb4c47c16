//! What a CI pipeline relies on: `devpop validate` checks what would be pushed (and says what it
//! leaves out), machine-readable results, and a dry run whose exit status is the verdict.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::*;

fn validate(work: &Path, args: &[&str]) -> Output {
    Command::new(DEVPOP).arg("validate").args(args).arg(work).output().unwrap()
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// A clone of a new application holding the sample application (two modules), committed.
fn sample_clone(devpop: &Devpop) -> (tempfile::TempDir, std::path::PathBuf) {
    let url = devpop.create_app("1", "site", "site");
    let (dir, work) = clone(&url);
    replace_tree(&work, &fixture("repos/sample-application"));
    commit_all(&work, "sample");
    (dir, work)
}

#[test]
fn validate_checks_the_commit_not_untracked_files_and_says_what_it_left_out() {
    let devpop = Devpop::start();
    let (_dir, work) = sample_clone(&devpop);
    // A module folder that exists only on disk: the push would not carry it.
    let config = std::fs::read_to_string(work.join("section.config.json")).unwrap();
    std::fs::write(
        work.join("section.config.json"),
        config.replacen(
            "\"proxychain\": [",
            "\"proxychain\": [\n    { \"name\": \"extra\", \"image\": \"example-simple:1.0.0\" },",
            1,
        ),
    )
    .unwrap();
    commit_all(&work, "add a module whose folder is not committed");
    std::fs::create_dir(work.join("extra")).unwrap();
    std::fs::copy(work.join("example/server.conf"), work.join("extra/server.conf")).unwrap();

    let checked = validate(&work, &["--env", "Production"]);
    let said = text(&checked);
    assert!(!checked.status.success(), "{said}");
    assert!(said.contains("proxychain entry \"extra\" has no folder 'extra/'"), "{said}");
    assert!(said.contains("extra/server.conf") && said.contains("not part of it"), "says what it left out: {said}");
    // The push agrees.
    let push = git(&work, &["push", "origin", "HEAD:Production"]);
    assert!(!push.status.success());
    assert!(stderr(&push).contains("proxychain entry \"extra\" has no folder 'extra/'"), "{}", stderr(&push));
    // The files as they are would pass.
    let worktree = validate(&work, &["--env", "Production", "--worktree"]);
    assert!(worktree.status.success(), "{}", text(&worktree));
    // Staged, then committed: both pass.
    git_ok(&work, &["add", "extra"]);
    assert!(validate(&work, &["--env", "Production", "--staged"]).status.success());
    commit_all(&work, "the folder");
    let committed = validate(&work, &["--env", "Production"]);
    assert!(committed.status.success(), "{}", text(&committed));
}

#[test]
fn validate_json_names_each_problem_and_the_namespace_the_server_would_use() {
    let devpop = Devpop::start();
    let (_dir, work) = sample_clone(&devpop);
    std::fs::write(work.join("section.config.json"), "{\n  \"proxychain\": [,]\n}\n").unwrap();
    commit_all(&work, "broken");
    let out = validate(&work, &["--env", "Production", "--format", "json"]);
    assert!(!out.status.success());
    let report: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)));
    assert_eq!(report["accepted"], false);
    assert_eq!(report["environment"], "Production");
    let problem = &report["problems"][0];
    assert_eq!((problem["severity"].as_str(), problem["file"].as_str()), (Some("error"), Some("section.config.json")));
    assert_eq!((problem["line"].as_u64(), problem["column"].as_u64()), (Some(2), Some(18)), "{report}");
    assert!(problem["message"].as_str().unwrap().contains("invalid JSON"), "{report}");
    // Without --app, the namespace comes from the remote's URL, as the server names it.
    git_ok(&work, &["checkout", "-q", "HEAD~1"]);
    let out = validate(&work, &["--env", "Production", "--format", "json"]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["accepted"], true, "{}", text(&out));
    let push = git(&work, &["push", "origin", "HEAD:Production"]);
    assert!(push.status.success(), "{}", stderr(&push));
    let ns = stderr(&push).split("(namespace ").nth(1).and_then(|r| r.split(')').next()).unwrap().to_owned();
    assert_eq!(report["namespace"], ns);
}

#[test]
fn a_dry_run_shows_the_changed_origin_line_and_exits_0_leaving_the_records_alone() {
    let devpop = Devpop::start();
    let (_dir, work) = sample_clone(&devpop);
    let out = git(&work, &["push", "origin", "HEAD:Production"]);
    wait_deployment(&devpop, queued_deployment(&stderr(&out), "Production"));
    let config = std::fs::read_to_string(work.join("section.config.json")).unwrap();
    std::fs::write(
        work.join("section.config.json"),
        config.replacen("my-s3-bucket.s3-website.us-east-2.amazonaws.com", "new-origin.example.com", 1),
    )
    .unwrap();
    commit_all(&work, "move the origin");
    let before = http(&devpop.addr(), "GET", "/api/v1/deployments", &[], b"").text();
    let dry = git(&work, &["push", "-o", "dry-run", "origin", "HEAD:Production"]);
    let err = stderr(&dry);
    assert!(dry.status.success(), "{err}");
    let changed: Vec<&str> = err.lines().filter(|l| l.starts_with("remote:       ")).collect();
    assert!(
        changed.iter().any(|l| l.contains('-') && l.contains("my-s3-bucket.s3-website.us-east-2.amazonaws.com")),
        "{err}"
    );
    assert!(changed.iter().any(|l| l.contains('+') && l.contains("new-origin.example.com")), "{err}");
    assert_eq!(http(&devpop.addr(), "GET", "/api/v1/deployments", &[], b"").text(), before, "records unchanged");
    // The same diff offline, as JSON, against the server's last deployment.
    let render = Command::new(DEVPOP)
        .args(["render", "--diff", "--format", "json", "--env", "Production", "--data"])
        .arg(devpop.data.path())
        .arg(&work)
        .output()
        .unwrap();
    assert!(render.status.success(), "{}", text(&render));
    let report: serde_json::Value = serde_json::from_slice(&render.stdout).unwrap();
    let changed = report["changed"].as_object().unwrap_or_else(|| panic!("{report}"));
    let lines: Vec<&str> = changed.values().flat_map(|v| v.as_array().unwrap()).filter_map(|l| l.as_str()).collect();
    assert!(lines.iter().any(|l| l.starts_with('+') && l.contains("new-origin.example.com")), "{report}");
    assert!(report["added"].as_array().unwrap().is_empty() && report["removed"].as_array().unwrap().is_empty());
    assert_ne!(
        server_branch(&devpop.repo_path("1", "site", "site"), "Production"),
        git_ok(&work, &["rev-parse", "HEAD"]).trim()
    );
}

/// The `remote: devpop-result: {...}` line a push with `-o json` ends with.
fn push_result(out: &Output) -> serde_json::Value {
    let err = stderr(out);
    let line = err
        .lines()
        .filter_map(|l| l.strip_prefix("remote: devpop-result: "))
        .next_back()
        .unwrap_or_else(|| panic!("no devpop-result line in:\n{err}"));
    serde_json::from_str(line.trim_end()).unwrap_or_else(|e| panic!("{e}: {line}"))
}

#[test]
fn a_push_with_o_json_ends_with_a_machine_readable_result() {
    let devpop = Devpop::start();
    let (_dir, work) = sample_clone(&devpop);
    let out = git(&work, &["push", "-o", "json", "origin", "HEAD:Production"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let result = push_result(&out);
    assert_eq!(result["accepted"], true, "{result}");
    let env = &result["environments"][0];
    assert_eq!((env["environment"].as_str(), env["state"].as_str()), (Some("Production"), Some("queued")), "{result}");
    let id = env["deployment"].as_u64().unwrap();
    assert_eq!(id, queued_deployment(&stderr(&out), "Production"));
    assert!(env["namespace"].as_str().unwrap().starts_with("section-site-production-"), "{result}");
    wait_deployment(&devpop, id);

    std::fs::write(work.join("README.md"), "waited\n").unwrap();
    commit_all(&work, "wait for it");
    let out = git(&work, &["push", "-o", "json", "-o", "wait", "origin", "HEAD:Production"]);
    let result = push_result(&out);
    assert_eq!(result["environments"][0]["state"], "ready", "{result}");

    std::fs::write(work.join("section.config.json"), "{\n  \"proxychain\": [,]\n}\n").unwrap();
    commit_all(&work, "broken");
    let out = git(&work, &["push", "-o", "json", "origin", "HEAD:Production"]);
    assert!(!out.status.success());
    let result = push_result(&out);
    assert_eq!(result["accepted"], false);
    assert_eq!(result["environments"][0]["state"], "refused", "{result}");
    let problem = &result["problems"][0];
    assert_eq!(problem["file"], "section.config.json", "{result}");
    assert_eq!((problem["line"].as_u64(), problem["column"].as_u64()), (Some(2), Some(18)), "{result}");
}

/// The `run:` (GitHub Actions) and `script:` (GitLab CI) commands of each job in docs/ci.md's
/// YAML blocks, by job name, in file order.
fn recipes() -> Vec<(String, Vec<String>)> {
    let doc = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/ci.md")).unwrap();
    let mut jobs = Vec::new();
    for block in doc.split("```yaml\n").skip(1) {
        let yaml = block.split("```").next().unwrap();
        let value: serde_yaml_ng::Value = serde_yaml_ng::from_str(yaml).unwrap_or_else(|e| panic!("{e}:\n{yaml}"));
        let (mapping, github) = match value.get("jobs") {
            Some(jobs) => (jobs.as_mapping().unwrap().clone(), true),
            None => (value.as_mapping().unwrap().clone(), false),
        };
        for (name, job) in mapping {
            let commands: Vec<String> = if github {
                job["steps"]
                    .as_sequence()
                    .unwrap()
                    .iter()
                    .filter_map(|s| s["run"].as_str().map(str::to_owned))
                    .collect()
            } else {
                match job.get("script") {
                    Some(script) => {
                        script.as_sequence().unwrap().iter().map(|c| c.as_str().unwrap().to_owned()).collect()
                    }
                    None => continue,
                }
            };
            jobs.push((name.as_str().unwrap().to_owned(), commands));
        }
    }
    jobs
}

#[test]
fn the_ci_recipes_in_docs_run_as_written() {
    let recipes = recipes();
    let names: Vec<&str> = recipes.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["check", "deploy", "devpop-check", "devpop-deploy"]);
    let devpop = Devpop::start_with(&["--auth", "tokens"]);
    let remote = format!("{}/account/9999/application/9999/site.git", devpop.url);
    devpop.create_app("9999", "9999", "site");
    let token = Command::new(DEVPOP)
        .args(["token", "create", "--account", "9999", "--data"])
        .arg(devpop.data.path())
        .output()
        .unwrap();
    let token = String::from_utf8(token.stdout).unwrap().trim().to_owned();
    let authed = remote.replacen("http://", &format!("http://section-token:{token}@"), 1);
    let (_dir, work) = clone(&authed);
    // The CI checkout: no credentials in the clone's config.
    git_ok(&work, &["remote", "set-url", "origin", &remote]);
    let bin_dir = Path::new(DEVPOP).parent().unwrap().to_owned();
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap());
    let runner = tempfile::tempdir().unwrap();
    let summary = runner.path().join("step-summary.md");
    for (round, (job, commands)) in recipes.iter().enumerate() {
        // Each job runs on a new commit of the sample application (a fresh module config).
        replace_tree(&work, &fixture("repos/sample-application"));
        std::fs::write(work.join("README.md"), format!("round {round}\n")).unwrap();
        commit_all(&work, &format!("change for {job}"));
        for command in commands {
            let out = Command::new("sh")
                .arg("-ec")
                .arg(command)
                .current_dir(&work)
                .env("PATH", &path)
                .env("GIT_CONFIG_NOSYSTEM", "1")
                .env("GIT_CONFIG_GLOBAL", "/dev/null")
                .env("GIT_TERMINAL_PROMPT", "0")
                .env("DEVPOP_REMOTE", &remote)
                .env("DEVPOP_ENV", "Production")
                .env("DEVPOP_TOKEN", &token)
                .env("GITHUB_STEP_SUMMARY", &summary)
                .output()
                .unwrap();
            assert!(out.status.success(), "{job}: {command}\n{}", text(&out));
        }
        let validate = work.join("validate.json");
        if job.ends_with("check") {
            let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&validate).unwrap()).unwrap();
            assert_eq!(report["accepted"], true, "{report}");
            let dry = std::fs::read_to_string(work.join("dry-run.txt")).unwrap();
            assert!(dry.contains("Dry run passed"), "{dry}");
            assert!(!dry.contains(&token), "the token never reaches the output");
        } else {
            let result: serde_json::Value =
                serde_json::from_slice(&std::fs::read(work.join("result.json")).unwrap()).unwrap();
            assert_eq!(result["environments"][0]["state"], "ready", "{result}");
        }
        for f in ["validate.json", "dry-run.txt", "push.txt", "result.json"] {
            let _ = std::fs::remove_file(work.join(f));
        }
    }
    let summary = std::fs::read_to_string(&summary).unwrap();
    assert!(summary.contains("Dry run"), "the dry run reached the job summary: {summary}");
}

#[test]
fn an_invalid_dry_run_exits_non_zero_with_the_diagnostics_a_push_gets_and_changes_nothing() {
    let devpop = Devpop::start();
    let (_dir, work) = sample_clone(&devpop);
    let out = git(&work, &["push", "origin", "HEAD:Production"]);
    wait_deployment(&devpop, queued_deployment(&stderr(&out), "Production"));
    let head = server_branch(&devpop.repo_path("1", "site", "site"), "Production");
    let config = std::fs::read_to_string(work.join("section.config.json")).unwrap();
    std::fs::write(work.join("section.config.json"), config.replacen("\"proxychain\"", "\"proxychian\"", 1)).unwrap();
    commit_all(&work, "a typo");
    let before = http(&devpop.addr(), "GET", "/api/v1/deployments", &[], b"").text();
    // The problems a push prints, without the lines that name the push itself.
    let problems = |out: &Output| -> Vec<String> {
        stderr(out)
            .lines()
            .filter(|l| l.starts_with("remote: error:") || l.starts_with("remote: warning:"))
            .map(str::to_owned)
            .collect()
    };
    let dry = git(&work, &["push", "-o", "dry-run", "origin", "HEAD:Production"]);
    assert!(!dry.status.success(), "an invalid dry run fails: {}", stderr(&dry));
    let real = git(&work, &["push", "origin", "HEAD:Production"]);
    assert!(!real.status.success(), "{}", stderr(&real));
    assert!(!problems(&dry).is_empty(), "{}", stderr(&dry));
    assert_eq!(problems(&dry), problems(&real), "the dry run says what the push says");
    assert_eq!(server_branch(&devpop.repo_path("1", "site", "site"), "Production"), head);
    assert_eq!(http(&devpop.addr(), "GET", "/api/v1/deployments", &[], b"").text(), before);
}
