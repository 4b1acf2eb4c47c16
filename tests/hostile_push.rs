//! Hostile pushes: what a pusher who does not use stock git (or uses it against devpop) can
//! send, and that none of it crashes the server or gets past the checks. The raw client
//! (`common::rawgit`) speaks the smart-HTTP push protocol itself, to send what git refuses to.

mod common;

use std::path::Path;

use common::rawgit::{self, RawPush};
use common::*;

const ZERO: &str = "0000000000000000000000000000000000000000";

/// A server with one application, and a clone of it opened with libgit2 (to build objects).
fn app() -> (Devpop, tempfile::TempDir, std::path::PathBuf) {
    let devpop = Devpop::start();
    let url = devpop.create_app("1", "app", "app");
    let (dir, work) = clone(&url);
    (devpop, dir, work)
}

fn head(work: &Path) -> git2::Oid {
    git2::Repository::open(work).unwrap().head().unwrap().target().unwrap()
}

fn healthy(devpop: &Devpop) -> bool {
    http(&devpop.addr(), "GET", "/healthz", &[], b"").status == 200
}

const APP_PATH: &str = "/account/1/application/app/app.git";

/// A push of `commit` (its `objects` packed) onto Production at `parent`.
fn to_production(repo: &git2::Repository, parent: git2::Oid, commit: git2::Oid, objects: &[git2::Oid]) -> RawPush {
    RawPush {
        updates: vec![(parent.to_string(), commit.to_string(), "refs/heads/Production".into())],
        pack: rawgit::pack_of(repo, objects),
        ..Default::default()
    }
}

#[test]
fn a_tree_20000_folders_deep_is_refused_and_the_server_keeps_serving() {
    let (devpop, _dir, work) = app();
    let repo = git2::Repository::open(&work).unwrap();
    let parent = head(&work);
    let (commit, objects) = rawgit::commit_with(&repo, Some(parent), &[], 20_000);
    let push = to_production(&repo, parent, commit, &objects);
    let result = rawgit::push(&devpop.addr(), APP_PATH, &push, None);
    assert!(!result.ok("refs/heads/Production"), "{result:?}");
    assert!(healthy(&devpop), "the server died: {result:?}");
    let server_repo = devpop.repo_path("1", "app", "app");
    assert_eq!(server_branch(&server_repo, "Production"), parent.to_string());
    assert!(quarantines(&server_repo).is_empty());
    // git's connectivity check gives up on the depth too, but still runs the hook (where
    // libgit2's recursive walk used to overflow the server's stack): devpop names the folder.
    assert!(result.remote.contains("nested deeper than 64 levels"), "{}", result.remote);
    // And the server still takes a good push.
    std::fs::write(work.join("README.md"), "still serving\n").unwrap();
    commit_all(&work, "after the deep tree");
    git_ok(&work, &["push", "-q", "origin", "Production"]);
}

#[test]
fn a_push_option_carrying_a_newline_is_refused_and_cannot_skip_the_checks() {
    let (devpop, _dir, work) = app();
    let repo = git2::Repository::open(&work).unwrap();
    let parent = head(&work);
    // Invalid JSON: any push of it must be refused by the checks.
    let (commit, objects) =
        rawgit::commit_with(&repo, Some(parent), &[("section.config.json", b"{ \"proxychain\": [,] }")], 0);
    let pack = rawgit::pack_of(&repo, &objects);
    let update = (parent.to_string(), commit.to_string(), "refs/heads/Production".to_owned());
    for option in [&b"x\nend"[..], b"wait\nend\n", b"\x1b[31mred", b"dry-run\rwait"] {
        let push = RawPush { updates: vec![update.clone()], options: vec![option.to_vec()], pack: pack.clone() };
        let result = rawgit::push(&devpop.addr(), APP_PATH, &push, None);
        assert!(!result.ok("refs/heads/Production"), "option {option:?} let the push through: {result:?}");
        assert!(result.remote.contains("error: push option \""), "option {option:?}: {}", result.remote);
        assert!(!result.remote.contains('\x1b'), "control characters are shown escaped: {:?}", result.remote);
        assert_eq!(server_branch(&devpop.repo_path("1", "app", "app"), "Production"), parent.to_string());
    }
    // The same commit without a hostile option is refused by the config check itself.
    let push = RawPush { updates: vec![update], options: vec![b"wait".to_vec()], pack };
    let result = rawgit::push(&devpop.addr(), APP_PATH, &push, None);
    assert!(!result.ok("refs/heads/Production"));
    assert!(result.remote.contains("section.config.json:1:"), "{}", result.remote);
    let audit = std::fs::read_to_string(devpop.data.path().join("audit.jsonl")).unwrap_or_default();
    assert!(!audit.contains(&commit.to_string()[..12]), "nothing of a refused push is recorded");
}

#[test]
fn a_large_file_added_in_one_commit_and_removed_in_the_next_is_refused() {
    let devpop = Devpop::start_with(&["--max-blob-bytes", "64K"]);
    let url = devpop.create_app("1", "app", "app");
    let (_dir, work) = clone(&url);
    let before = head(&work).to_string();
    std::fs::write(work.join("big.bin"), random_bytes(200 << 10)).unwrap();
    commit_all(&work, "add a large file");
    std::fs::remove_file(work.join("big.bin")).unwrap();
    commit_all(&work, "remove it again");
    let out = git(&work, &["push", "origin", "Production"]);
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("remote: error: big.bin (commit "), "{err}");
    assert!(err.contains("204800 bytes; files larger than 65536 bytes are refused"), "{err}");
    assert_eq!(server_branch(&devpop.repo_path("1", "app", "app"), "Production"), before);
}

#[test]
fn a_large_object_in_the_pack_but_in_no_commit_is_refused() {
    let devpop = Devpop::start_with(&["--max-blob-bytes", "64K"]);
    devpop.create_app("1", "app", "app");
    let (_dir, work) = clone(&format!("{}{APP_PATH}", devpop.url));
    let repo = git2::Repository::open(&work).unwrap();
    let parent = head(&work);
    let (commit, mut objects) = rawgit::commit_with(&repo, Some(parent), &[("README.md", b"hello\n")], 0);
    objects.push(repo.blob(&random_bytes(100 << 10)).unwrap());
    let push = to_production(&repo, parent, commit, &objects);
    let result = rawgit::push(&devpop.addr(), APP_PATH, &push, None);
    assert!(!result.ok("refs/heads/Production"), "{result:?}");
    assert!(
        result.remote.contains("102400-byte object") && result.remote.contains("no pushed branch holds"),
        "{}",
        result.remote
    );
}

#[test]
fn a_push_with_no_ref_updates_but_a_pack_changes_nothing() {
    let (devpop, _dir, work) = app();
    let repo = git2::Repository::open(&work).unwrap();
    let parent = head(&work);
    let (_, objects) = rawgit::commit_with(&repo, Some(parent), &[("x", b"y")], 0);
    let push =
        RawPush { pack: rawgit::pack_of(&repo, &objects), options: vec![b"x\nend".to_vec()], ..Default::default() };
    let result = rawgit::push(&devpop.addr(), APP_PATH, &push, None);
    assert!(result.report.iter().all(|l| !l.starts_with("ok ")), "{result:?}");
    assert!(healthy(&devpop));
    assert_eq!(server_branch(&devpop.repo_path("1", "app", "app"), "Production"), parent.to_string());
}

/// Two commits on the work tree's HEAD, pushed to Production at once (each with `options`):
/// each commit with its push's output.
fn race(work: &Path, label: &str, options: &[&str]) -> Vec<(String, std::process::Output)> {
    let base = git_ok(work, &["rev-parse", "HEAD"]).trim().to_owned();
    let mut commits = Vec::new();
    for side in ["a", "b"] {
        git_ok(work, &["checkout", "-q", "-B", &format!("side-{side}"), &base]);
        std::fs::write(work.join("README.md"), format!("{label} side {side}\n")).unwrap();
        commit_all(work, &format!("{label} {side}"));
        commits.push(git_ok(work, &["rev-parse", "HEAD"]).trim().to_owned());
    }
    let pushes: Vec<_> = commits
        .into_iter()
        .map(|c| {
            let work = work.to_owned();
            let mut args: Vec<String> = vec!["push".into()];
            args.extend(options.iter().map(|o| o.to_string()));
            args.extend(["origin".into(), format!("{c}:refs/heads/Production")]);
            std::thread::spawn(move || {
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                (c, git(&work, &args))
            })
        })
        .collect();
    pushes.into_iter().map(|p| p.join().unwrap()).collect()
}

/// Two `-o wait` pushes of one environment from the same commit, at once: one lands, the
/// other is refused, and the environment ends on the commit its branch points at (before,
/// both deployed and the loser's deployment was applied last).
#[test]
fn racing_wait_pushes_leave_the_environment_on_the_branch_commit() {
    let (devpop, _dir, work) = app();
    let server_repo = devpop.repo_path("1", "app", "app");
    for round in 0..3 {
        let outs = race(&work, &format!("wait round {round}"), &["-o", "wait"]);
        let landed = outs.iter().filter(|(_, o)| o.status.success()).count();
        assert_eq!(landed, 1, "exactly one push lands: {:?}", outs.iter().map(|(_, o)| stderr(o)).collect::<Vec<_>>());
        let branch = server_branch(&server_repo, "Production");
        assert!(outs.iter().any(|(c, _)| *c == branch));
        // The environment's newest finished deployment is of the branch's commit.
        let env = http(&devpop.addr(), "GET", "/api/v1/accounts/1/applications/app/environments/Production", &[], b"");
        let env: serde_json::Value = serde_json::from_slice(&env.body).unwrap();
        let last = env["last_deployment"]["id"].as_u64().unwrap_or_else(|| panic!("{env}"));
        let d = wait_deployment(&devpop, last);
        assert_eq!(d["commit"], branch, "round {round}: the environment runs another commit than its branch: {d}");
        assert_eq!(d["state"], "ready");
        git_ok(&work, &["fetch", "-q", "origin"]);
        git_ok(&work, &["checkout", "-q", "-B", "main-line", "origin/Production"]);
    }
}

/// Two plain pushes of one environment from the same commit, at once: the loser is refused
/// with the reason and prints no deployment id (before, it printed an id that never existed).
#[test]
fn a_push_that_loses_a_race_prints_no_deployment_id() {
    let (devpop, _dir, work) = app();
    for round in 0..3 {
        let outs = race(&work, &format!("plain round {round}"), &[]);
        for (_, out) in outs {
            let err = stderr(&out);
            let printed: Vec<u64> = err
                .lines()
                .filter_map(|l| l.strip_prefix("remote: Deployment "))
                .filter_map(|l| l.split_whitespace().next()?.parse().ok())
                .collect();
            if out.status.success() {
                assert_eq!(printed.len(), 1, "{err}");
            } else {
                assert!(printed.is_empty(), "a refused push printed a deployment id: {err}");
            }
            for id in printed {
                let r = http(&devpop.addr(), "GET", &format!("/api/v1/deployments/{id}"), &[], b"");
                assert_eq!(r.status, 200, "deployment {id} was printed but does not exist");
            }
        }
        git_ok(&work, &["fetch", "-q", "origin"]);
        git_ok(&work, &["checkout", "-q", "-B", "main-line", "origin/Production"]);
    }
}

#[test]
fn ref_names_with_markup_or_control_characters_never_land() {
    let (devpop, _dir, work) = app();
    let repo = git2::Repository::open(&work).unwrap();
    let parent = head(&work);
    let (commit, objects) = rawgit::commit_with(&repo, Some(parent), &[("README.md", b"x\n")], 0);
    let pack = rawgit::pack_of(&repo, &objects);
    for refname in ["refs/heads/<b>Prod</b>", "refs/heads/Prod\u{1}uction", "refs/heads/Prod\u{1b}[31m", "refs/tags/v1"]
    {
        let push = RawPush {
            updates: vec![(ZERO.to_owned(), commit.to_string(), refname.to_owned())],
            pack: pack.clone(),
            ..Default::default()
        };
        let result = rawgit::push(&devpop.addr(), APP_PATH, &push, None);
        assert!(!result.ok(refname), "{refname:?} landed: {result:?}");
        assert!(!result.remote.contains('\u{1b}'), "a control character reached the pusher's terminal: {result:?}");
        assert!(healthy(&devpop));
    }
    let refs = git_ok(&devpop.repo_path("1", "app", "app"), &["for-each-ref", "--format=%(refname)"]);
    assert_eq!(refs.trim(), "refs/heads/Production", "{refs}");
}

/// A raw client naming one ref twice: git hands both lines to the hook. Refused, and the
/// environment is not left locked (before, the push waited on its own lock and the lock
/// outlived it, so every later push to the environment hung).
#[test]
fn a_push_naming_one_ref_twice_is_refused_and_leaves_the_environment_free() {
    let (devpop, _dir, work) = app();
    let repo = git2::Repository::open(&work).unwrap();
    let parent = head(&work);
    let (commit, objects) = rawgit::commit_with(&repo, Some(parent), &[("README.md", b"twice\n")], 0);
    let update = (parent.to_string(), commit.to_string(), "refs/heads/Production".to_owned());
    let push =
        RawPush { updates: vec![update.clone(), update], pack: rawgit::pack_of(&repo, &objects), ..Default::default() };
    let result = rawgit::push(&devpop.addr(), APP_PATH, &push, None);
    assert!(!result.ok("refs/heads/Production"), "{result:?}");
    assert!(result.remote.contains("names refs/heads/Production twice"), "{}", result.remote);
    // The next push to the environment is checked and lands.
    std::fs::write(work.join("README.md"), "after\n").unwrap();
    commit_all(&work, "after the double push");
    let out = git(&work, &["push", "origin", "Production"]);
    assert!(out.status.success(), "{}", stderr(&out));
}
