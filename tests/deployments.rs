//! The deployment pipeline against the in-memory cluster (no Kubernetes API server runs here):
//! states, next-hop wiring, one-at-a-time queues, supersede, prune, health outcomes, restart
//! recovery; and, through a real server, push options, rollback and a kill mid-deployment.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use devpop::applying::deployer::Deployer;
use devpop::applying::memory::{Health, MemoryCluster};
use devpop::names::RepoId;
use devpop::packages::PackageStore;
use devpop::records::{Action, NewDeployment, Records, State};
use devpop::rendering::{Object, RenderSettings};
use devpop::repos::RepoStore;

struct World {
    data: tempfile::TempDir,
    repos: RepoStore,
    packages: PackageStore,
    work: tempfile::TempDir,
}

impl World {
    /// A data dir with the fixture packages and an application whose work tree is cloned.
    fn new() -> World {
        let data = tempfile::tempdir().unwrap();
        let repos = RepoStore::new(data.path(), Path::new(DEVPOP));
        let packages = PackageStore::new(data.path());
        for p in ["example-simple", "edge-cache"] {
            packages.add(&fixture(&format!("packages/{p}"))).unwrap();
        }
        let id = RepoId::new("1", "1", "site").unwrap();
        repos.create(&id, "origin.example.com").unwrap();
        let work = tempfile::tempdir().unwrap();
        git_ok(work.path(), &["clone", "-q", repos.path(&id).to_str().unwrap(), "w"]);
        World { data, repos, packages, work }
    }

    fn work(&self) -> std::path::PathBuf {
        self.work.path().join("w")
    }

    /// Commits `tree` (a fixture folder) and pushes it to `env` (the repo's hooks check it).
    fn push(&self, tree: &Path, env: &str) -> String {
        replace_tree(&self.work(), tree);
        // A new commit each time, even of the same tree.
        static PUSHES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = PUSHES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        std::fs::write(self.work().join("stamp"), format!("push {n}\n")).unwrap();
        commit_all(&self.work(), "change");
        let out = git(&self.work(), &["push", "origin", &format!("HEAD:{env}")]);
        assert!(out.status.success(), "{}", stderr(&out));
        git_ok(&self.work(), &["rev-parse", "HEAD"]).trim().to_owned()
    }

    fn deployer(&self, cluster: Arc<MemoryCluster>) -> Arc<Deployer<MemoryCluster>> {
        let records = Arc::new(Records::open(self.data.path()).unwrap());
        let mut d = Arc::new(Deployer::new(
            records,
            cluster,
            self.repos.clone(),
            self.packages.clone(),
            RenderSettings::default(),
            4,
        ));
        Arc::get_mut(&mut d).unwrap().rollout_deadline = Duration::from_millis(300);
        d
    }
}

fn request(env: &str, commit: &str) -> NewDeployment {
    NewDeployment {
        account: "1".into(),
        application: "1".into(),
        repo: "site".into(),
        environment: env.into(),
        commit: commit.into(),
        action: Action::Deploy,
        pusher: "test".into(),
        quarantine: None,
        validation: Vec::new(),
    }
}

fn sample() -> std::path::PathBuf {
    fixture("repos/sample-application")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_goes_through_every_state_and_applies_the_render_as_published() {
    let w = World::new();
    let commit = w.push(&sample(), "Production");
    let cluster = Arc::new(MemoryCluster::new());
    let deployer = w.deployer(cluster.clone());
    let d = deployer.submit(request("Production", &commit)).await.unwrap();
    let d = deployer.wait(d.id).await.unwrap();
    assert_eq!(d.state, State::Ready, "{:#?}", d.steps);
    let states: Vec<State> = d.steps.iter().map(|s| s.state).collect();
    for s in [State::Queued, State::Rendering, State::Applying, State::Progressing, State::Ready] {
        assert!(states.contains(&s), "{states:?}");
    }
    let ns = d.namespace.unwrap();
    let objects = cluster.objects(&ns);
    assert!(objects.contains_key("Service/m2-example"));
    let Object::Deployment(cache) = &objects["Deployment/m1-cache"] else { unreachable!() };
    // The cluster gets what the rendered repo holds: next-hop is resolved inside the pod.
    let pod = cache.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    assert!(pod.host_aliases.is_none());
    assert_eq!(pod.init_containers.as_ref().unwrap()[0].name, "next-hop");
    assert!(objects.keys().any(|k| k.starts_with("ConfigMap/devpop-next-hop-")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployments_of_one_environment_run_one_at_a_time_and_newer_supersede_queued() {
    let w = World::new();
    let c1 = w.push(&sample(), "Production");
    let c2 = w.push(&sample(), "Production");
    let c3 = w.push(&sample(), "Production");
    let staging = w.push(&sample(), "Staging");
    let cluster = Arc::new(MemoryCluster::new());
    cluster.close_gate();
    let deployer = w.deployer(cluster.clone());
    let within = |what: &'static str| move |_| panic!("{what}: not within 30 s");
    let d1 = deployer.submit(request("Production", &c1)).await.unwrap();
    tokio::time::timeout(Duration::from_secs(30), cluster.applies_waiting(1))
        .await
        .unwrap_or_else(within("d1 applying"));
    // d1 is held mid-apply: d2 and d3 queue behind it, Staging has its own queue.
    let d2 = deployer.submit(request("Production", &c2)).await.unwrap();
    let d3 = deployer.submit(request("Production", &c3)).await.unwrap();
    let ds = deployer.submit(request("Staging", &staging)).await.unwrap();
    tokio::time::timeout(Duration::from_secs(30), cluster.applies_waiting(2))
        .await
        .unwrap_or_else(within("Staging applying beside Production's d1"));
    assert_eq!(deployer.records().get(d3.id).unwrap().state, State::Queued, "Production runs one at a time");
    cluster.open_gate();
    assert_eq!(deployer.wait(ds.id).await.unwrap().state, State::Ready);
    assert_eq!(deployer.wait(d1.id).await.unwrap().state, State::Ready);
    let d2 = deployer.wait(d2.id).await.unwrap();
    assert_eq!(d2.state, State::Superseded);
    assert_eq!(d2.steps.last().unwrap().message, format!("superseded by deployment {}", d3.id));
    assert_eq!(deployer.wait(d3.id).await.unwrap().state, State::Ready);
    let applies = cluster.calls().iter().filter(|c| c.0 == "apply").count();
    assert_eq!(applies, 3, "d1, Staging and d3 were applied; d2 never was");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_the_new_render_no_longer_has_are_pruned() {
    let w = World::new();
    let two = w.push(&sample(), "Production");
    let one_dir = tempfile::tempdir().unwrap();
    copy_tree(&sample(), one_dir.path());
    let config = std::fs::read_to_string(one_dir.path().join("section.config.json")).unwrap();
    std::fs::write(
        one_dir.path().join("section.config.json"),
        config.replace(",\n    { \"name\": \"example\", \"image\": \"example-simple:1.0.0\" }", ""),
    )
    .unwrap();
    let one = w.push(one_dir.path(), "Production");
    let cluster = Arc::new(MemoryCluster::new());
    let deployer = w.deployer(cluster.clone());
    let d = deployer.submit(request("Production", &two)).await.unwrap();
    deployer.wait(d.id).await.unwrap();
    let d = deployer.submit(request("Production", &one)).await.unwrap();
    let d = deployer.wait(d.id).await.unwrap();
    assert_eq!(d.state, State::Ready, "{:#?}", d.steps);
    let pruned: Vec<String> = cluster.calls().into_iter().filter(|c| c.0 == "prune").map(|c| c.2).collect();
    for key in [
        "Deployment/m2-example",
        "Service/m2-example",
        "ConfigMap/m2-example-config-",
        "NetworkPolicy/allow-m2-example",
    ] {
        assert!(pruned.iter().any(|p| p.starts_with(key)), "{key} not pruned: {pruned:?}");
    }
    assert!(d.steps.iter().any(|s| s.message.starts_with("pruned: ")), "the record says what was pruned");
    assert!(!cluster.objects(d.namespace.as_ref().unwrap()).contains_key("Deployment/m2-example"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unhealthy_rollout_fails_naming_the_object_and_the_reason() {
    let w = World::new();
    let commit = w.push(&sample(), "Production");
    let cluster = Arc::new(MemoryCluster::new());
    cluster.set_health(
        "m2-example",
        Health::Fails("ImagePullBackOff: registry.example.com/section/example-simple:1.0.0-k1 not found".into()),
    );
    let deployer = w.deployer(cluster.clone());
    let d = deployer.wait(deployer.submit(request("Production", &commit)).await.unwrap().id).await.unwrap();
    assert_eq!(d.state, State::Failed);
    assert_eq!(
        d.steps.last().unwrap().message,
        "Deployment/m2-example: ImagePullBackOff: registry.example.com/section/example-simple:1.0.0-k1 not found"
    );

    cluster.set_health("m2-example", Health::Hangs);
    let d = deployer.wait(deployer.submit(request("Production", &commit)).await.unwrap().id).await.unwrap();
    assert_eq!(d.state, State::Failed);
    assert!(d.steps.last().unwrap().message.contains("not ready within"), "{:?}", d.steps.last());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unfinished_deployments_resume_after_a_restart() {
    let w = World::new();
    let commit = w.push(&sample(), "Production");
    // A deployment that was mid-way (applying) when the server stopped.
    {
        let records = Records::open(w.data.path()).unwrap();
        let d = records.create(request("Production", &commit)).unwrap();
        records.transition(d.id, State::Rendering, "rendering").unwrap();
        records.transition(d.id, State::Applying, "applying").unwrap();
    }
    let cluster = Arc::new(MemoryCluster::new());
    let deployer = w.deployer(cluster.clone());
    assert_eq!(deployer.resume().await.unwrap(), 1);
    let d = deployer.wait(1).await.unwrap();
    assert_eq!(d.state, State::Ready, "{:#?}", d.steps);
    assert!(d.steps.iter().any(|s| s.message == "resumed after a restart (was applying)"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_branch_removes_the_environment_namespace() {
    let w = World::new();
    let commit = w.push(&sample(), "Staging");
    let cluster = Arc::new(MemoryCluster::new());
    let deployer = w.deployer(cluster.clone());
    let d = deployer.wait(deployer.submit(request("Staging", &commit)).await.unwrap().id).await.unwrap();
    let ns = d.namespace.unwrap();
    assert!(cluster.namespaces().contains(&ns));
    let del = NewDeployment { action: Action::Delete, ..request("Staging", &commit) };
    let d = deployer.wait(deployer.submit(del).await.unwrap().id).await.unwrap();
    assert_eq!(d.state, State::Ready, "{:#?}", d.steps);
    assert!(!cluster.namespaces().contains(&ns));
}

#[test]
fn push_option_dry_run_shows_what_would_change_and_changes_nothing() {
    let devpop = Devpop::start();
    let url = devpop.create_app("1", "1", "site");
    let (_dir, work) = clone(&url);
    replace_tree(&work, &sample());
    commit_all(&work, "sample");
    let repo = devpop.repo_path("1", "1", "site");
    let before = server_branch(&repo, "Production");

    let tracking = git_ok(&work, &["rev-parse", "origin/Production"]);
    let out = git(&work, &["push", "-o", "dry-run", "origin", "HEAD:Production"]);
    let err = stderr(&out);
    // A dry run that passes is a success for git (and CI), and moves nothing.
    assert!(out.status.success(), "{err}");
    assert!(err.contains("remote: Dry run: Production has not been deployed yet; this push would create"), "{err}");
    assert!(
        err.contains("remote: Dry run passed: this push would be accepted and deployed; nothing was changed"),
        "{err}"
    );
    assert_eq!(server_branch(&repo, "Production"), before, "the branch did not move");
    assert_eq!(git_ok(&work, &["rev-parse", "origin/Production"]), tracking, "the remote-tracking ref did not move");
    assert!(!err.contains("Deployment "), "nothing was queued: {err}");
    let list = http(&devpop.addr(), "GET", "/api/v1/deployments", &[], b"");
    assert!(!list.text().contains("\"id\""), "no deployment was recorded: {}", list.text());

    let out = git(&work, &["push", "origin", "HEAD:Production"]);
    wait_deployment(&devpop, queued_deployment(&stderr(&out), "Production"));
    // Change one module's config and drop the other module.
    let config = std::fs::read_to_string(work.join("section.config.json")).unwrap();
    std::fs::write(
        work.join("section.config.json"),
        config.replace(",\n    { \"name\": \"example\", \"image\": \"example-simple:1.0.0\" }", ""),
    )
    .unwrap();
    std::fs::write(
        work.join("cache/default.vcl"),
        std::fs::read_to_string(work.join("cache/default.vcl")).unwrap() + "# tuned\n",
    )
    .unwrap();
    commit_all(&work, "one module");
    let out = git(&work, &["push", "-o", "dry-run", "origin", "HEAD:Production"]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("remote: Dry run: changes to Production (namespace section-site-production-"), "{err}");
    assert!(err.contains("remote:   ~ ConfigMap/m1-cache-config"), "{err}");
    assert!(err.contains("remote:   - Deployment/m2-example"), "{err}");
    assert!(!err.contains("~ Namespace/"), "the commit label alone is not a change: {err}");

    // A dry run that fails a check exits non-zero, with the same diagnostics as a push.
    std::fs::write(work.join("section.config.json"), "{ \"proxychain\": [,] }").unwrap();
    commit_all(&work, "broken");
    let dry = git(&work, &["push", "-o", "dry-run", "origin", "HEAD:Production"]);
    let push = git(&work, &["push", "origin", "HEAD:Production"]);
    assert!(!dry.status.success() && !push.status.success());
    let diagnostics = |out: &std::process::Output| -> Vec<String> {
        stderr(out).lines().filter(|l| l.starts_with("remote: error:")).map(str::to_owned).collect()
    };
    assert_eq!(diagnostics(&dry), diagnostics(&push));
    assert!(diagnostics(&dry)[0].contains("section.config.json:1:"), "{}", stderr(&dry));
}

#[test]
fn push_option_wait_streams_the_deployment_and_the_exit_status_tells_the_outcome() {
    let devpop = Devpop::start();
    let url = devpop.create_app("1", "1", "site");
    let (_dir, work) = clone(&url);
    replace_tree(&work, &sample());
    commit_all(&work, "sample");
    let out = git(&work, &["push", "-o", "wait", "origin", "HEAD:Production"]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("remote: Deployment 1 queued for Production:"), "{err}");
    assert!(err.contains("remote:   [applying] applying"), "{err}");
    assert!(err.contains("remote: Deployment 1 of Production is ready"), "{err}");
    assert!(!err.contains("Deployment 2"), "the deployment is not announced a second time: {err}");
    let repo = devpop.repo_path("1", "1", "site");
    assert_eq!(server_branch(&repo, "Production"), git_ok(&work, &["rev-parse", "HEAD"]).trim());

    // A deployment that fails: the push fails and the branch stays where it was.
    let rendered = devpop.data.path().join("rendered/1/1/site.git");
    std::fs::remove_dir_all(&rendered).unwrap();
    std::fs::write(&rendered, "not a repo").unwrap();
    std::fs::write(work.join("README.md"), "changed\n").unwrap();
    commit_all(&work, "will not deploy");
    let before = server_branch(&repo, "Production");
    let out = git(&work, &["push", "-o", "wait", "origin", "HEAD:Production"]);
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("remote: error: deployment 2 of Production failed; the branch is unchanged"), "{err}");
    assert_eq!(server_branch(&repo, "Production"), before);
    assert!(quarantines(&repo).is_empty());
}

#[test]
fn rollback_pushes_a_new_commit_restoring_an_earlier_deployment_and_deploys_it() {
    let devpop = Devpop::start();
    let url = devpop.create_app("1", "1", "site");
    let (_dir, work) = clone(&url);
    replace_tree(&work, &sample());
    commit_all(&work, "v1");
    let push = |work: &Path| {
        let out = git(work, &["push", "origin", "HEAD:Production"]);
        assert!(out.status.success(), "{}", stderr(&out));
        wait_deployment(&devpop, queued_deployment(&stderr(&out), "Production"))
    };
    let v1 = push(&work);
    std::fs::write(
        work.join("cache/default.vcl"),
        "vcl 4.1;\nbackend default { .host = \"next-hop\"; .port = \"80\"; }\n",
    )
    .unwrap();
    commit_all(&work, "v2");
    push(&work);
    let repo = devpop.repo_path("1", "1", "site");
    let v2_head = server_branch(&repo, "Production");

    let rollback = |extra: &[&str]| {
        std::process::Command::new(DEVPOP)
            .args(["rollback", "1/1/site", "Production", "--public-url", &devpop.url, "--data"])
            .arg(devpop.data.path())
            .args(extra)
            .output()
            .unwrap()
    };
    let out = rollback(&[]);
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{text}");
    assert!(text.contains(&format!("Rolling Production of 1/1/site back to deployment {}", v1["id"])), "{text}");
    let id = queued_deployment(&text, "Production");
    assert_eq!(wait_deployment(&devpop, id)["state"], "ready");

    let head = server_branch(&repo, "Production");
    assert_eq!(git_ok(&repo, &["rev-parse", &format!("{head}^")]).trim(), v2_head, "history stays linear");
    let v1_commit = v1["commit"].as_str().unwrap();
    assert_eq!(
        git_ok(&repo, &["rev-parse", &format!("{head}^{{tree}}")]),
        git_ok(&repo, &["rev-parse", &format!("{v1_commit}^{{tree}}")])
    );
    assert!(git_ok(&repo, &["log", "-1", "--format=%s", &head])
        .starts_with(&format!("Roll back Production to deployment {}", v1["id"])));

    // --to a deployment of another environment, or one that does not exist: a clear refusal.
    let out = rollback(&["--to", "999"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no deployment 999"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_wait_deployment_puts_the_environment_back_to_its_last_ready_state() {
    let w = World::new();
    let good = w.push(&sample(), "Production");
    let bad = w.push(&sample(), "Production");
    let cluster = Arc::new(MemoryCluster::new());
    let deployer = w.deployer(cluster.clone());
    let first = deployer.wait(deployer.submit(request("Production", &good)).await.unwrap().id).await.unwrap();
    assert_eq!(first.state, State::Ready);

    cluster.set_health("m1-cache", Health::FailsOnce("CrashLoopBackOff: back-off restarting".into()));
    let objects = w.repos.path(&RepoId::new("1", "1", "site").unwrap()).join("objects");
    let waiting =
        NewDeployment { quarantine: Some(objects.to_string_lossy().into_owned()), ..request("Production", &bad) };
    let mut events = deployer.subscribe();
    let failed = deployer.wait(deployer.submit(waiting).await.unwrap().id).await.unwrap();
    assert_eq!(failed.state, State::Failed);
    // The restore is recorded after the failure: wait for its first event.
    let restore_id = failed.id + 1;
    let recorded = async {
        while deployer.records().get(restore_id).is_none() {
            match events.recv().await {
                Ok(d) if d.id == restore_id => break,
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(e) => panic!("{e}"),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), recorded).await.expect("a restoring deployment was recorded");
    let restored = deployer.wait(restore_id).await.expect("a restoring deployment was queued");
    assert_eq!(restored.state, State::Ready, "{:#?}", restored.steps);
    assert_eq!(restored.request.commit, good, "the last ready state is applied again");
    assert_eq!(restored.request.pusher, format!("devpop (restoring after deployment {} failed)", failed.id));
    let failed = deployer.records().get(failed.id).unwrap();
    assert!(failed
        .steps
        .iter()
        .any(|s| s.message == format!("restoring deployment {} as deployment {restore_id}", first.id)));
}

#[test]
fn a_server_killed_mid_deployment_resumes_it_after_a_restart() {
    let devpop = Devpop::start();
    let url = devpop.create_app("1", "1", "site");
    let (_dir, work) = clone(&url);
    replace_tree(&work, &sample());
    commit_all(&work, "sample");
    // Hold the rendered repo's writer lock, so the deployment stops mid-way (applying).
    let rendered_dir = devpop.data.path().join("rendered/1/1");
    std::fs::create_dir_all(&rendered_dir).unwrap();
    let lock = std::fs::File::create(rendered_dir.join("site.git.lock")).unwrap();
    lock.lock().unwrap();
    let out = git(&work, &["push", "origin", "HEAD:Production"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let id = queued_deployment(&stderr(&out), "Production");
    assert!(
        eventually(Duration::from_secs(10), || {
            let r = http(&devpop.addr(), "GET", &format!("/api/v1/deployments/{id}"), &[], b"");
            serde_json::from_slice::<serde_json::Value>(&r.body).unwrap()["state"] == "applying"
        }),
        "the deployment reached applying"
    );
    let data = devpop.stop(); // SIGKILL, mid-deployment
    drop(lock);
    let devpop = Devpop::start_in(data, &[]);
    let d = wait_deployment(&devpop, id);
    assert_eq!(d["state"], "ready", "{d}");
    let messages: Vec<&str> = d["steps"].as_array().unwrap().iter().map(|s| s["message"].as_str().unwrap()).collect();
    assert!(messages.contains(&"resumed after a restart (was applying)"), "{messages:?}");
}

#[test]
fn a_push_whose_branch_does_not_move_leaves_its_announced_deployment_failed_not_deployed() {
    let devpop = Devpop::start();
    let url = devpop.create_app("1", "1", "site");
    let (_dir, work) = clone(&url);
    std::fs::write(work.join("notes.txt"), "x\n").unwrap();
    commit_all(&work, "change");
    // The checks pass, then git cannot move the branch (someone holds its lock).
    let repo = devpop.repo_path("1", "1", "site");
    std::fs::write(repo.join("refs/heads/Production.lock"), "").unwrap();
    let out = git(&work, &["push", "origin", "Production"]);
    assert!(!out.status.success(), "{}", stderr(&out));
    let announced = queued_deployment(&stderr(&out), "Production");
    // The id the push printed exists (no 404 behind its link), and says it was not deployed.
    let d = wait_deployment(&devpop, announced);
    assert_eq!(d["state"], "failed", "{d}");
    let last = d["steps"].as_array().unwrap().last().unwrap()["message"].as_str().unwrap().to_owned();
    assert!(last.starts_with("not deployed: git did not move refs/heads/Production to this commit"), "{last}");
    assert_eq!(d["steps"].as_array().unwrap().len(), 2, "never rendered nor applied: {d}");

    std::fs::remove_file(repo.join("refs/heads/Production.lock")).unwrap();
    let out = git(&work, &["push", "origin", "Production"]);
    let next = queued_deployment(&stderr(&out), "Production");
    assert!(next > announced);
    assert_eq!(wait_deployment(&devpop, next)["state"], "ready");
}
