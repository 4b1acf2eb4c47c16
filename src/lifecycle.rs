//! Environment lifecycle actions that are not a push: rollback (an earlier deployment's state
//! restored as a new commit on the branch) and redeploy (the branch's commit deployed again).
//!
//! Also deleting an environment (its branch goes, a deployment removes what it ran) or an
//! application (each environment so, then its repo).
//!
//! Which deployment a rollback restores, the commit that restores it (history stays linear: a
//! GitOps engine never re-applies the bad commit, and the next push builds on the rollback),
//! and their audit entries; and each action whole on a server's [`Actions`]: under the
//! environment's hold as a push, the commit checked like a push, the deployment recorded and
//! queued, audited. The API and the console both call these; the CLI's local mode plans a
//! rollback here and pushes its commit through the server.

use std::path::Path;

use git2::{Oid, Repository};

use crate::applying::deployer::DeployError;
use crate::applying::Target;
use crate::edits::{held, next_holder, request, Actions, Author, EditError};
use crate::names::RepoId;
use crate::records::audit::AuditLog;
use crate::records::{short, Action, Deployment, EnvKey, Filter, RecordError, Records, State};

#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    #[error("no deployment {0}")]
    NoDeployment(u64),
    #[error("deployment {id} is of {other}, not {wanted}: pick one of {wanted}'s deployments")]
    OtherEnvironment { id: u64, other: String, wanted: String },
    #[error("deployment {0} removed the environment; pick a deployment that deployed it")]
    NotADeploy(u64),
    #[error("deployment {id} is {state}, not ready: pick a deployment that became ready")]
    NotReady { id: u64, state: &'static str },
    #[error("the commit of deployment {0} is no longer in the repo; pick a later deployment")]
    CommitGone(u64),
    #[error("{0} has no earlier ready deployment with a different state to restore")]
    NothingToRestore(String),
    #[error("application {}/{} has no environment {env}", id.account, id.application)]
    NoEnvironment { id: RepoId, env: String },
    #[error(transparent)]
    Records(#[from] RecordError),
    #[error("the repo of {id}: {message}")]
    Repo { id: RepoId, message: String },
    #[error("{0:?} is not an environment name")]
    BadName(String),
    #[error("{0} is the application's default environment and cannot be deleted")]
    DefaultEnvironment(String),
    /// The commit was refused by the checks a push gets: their lines.
    #[error("refused by the same checks as a push (see diagnostics)")]
    Refused(Vec<String>),
    #[error(transparent)]
    Edit(#[from] EditError),
    #[error(transparent)]
    Deploy(#[from] DeployError),
    #[error("a task of the server's failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

impl LifecycleError {
    fn repo(id: &RepoId, e: impl std::fmt::Display) -> Self {
        LifecycleError::Repo { id: id.clone(), message: e.to_string() }
    }
}

/// How many deployments are read at a time while looking for the one to restore.
const PAGE: u64 = 100;

/// An environment: its application and branch name.
pub struct Environment<'a> {
    pub id: &'a RepoId,
    pub name: &'a str,
}

impl Environment<'_> {
    pub fn key(&self) -> EnvKey {
        (self.id.account.clone(), self.id.application.clone(), self.id.repo.clone(), self.name.to_owned())
    }

    fn describe(&self) -> String {
        format!("{} {}", self.id, self.name)
    }

    /// The commit the branch is at.
    pub fn head(&self, repo: &Repository) -> Result<Oid, LifecycleError> {
        repo.find_reference(&format!("refs/heads/{}", self.name))
            .ok()
            .and_then(|r| r.target())
            .ok_or_else(|| LifecycleError::NoEnvironment { id: self.id.clone(), env: self.name.to_owned() })
    }
}

/// A rollback, planned: the deployment whose state it restores and the commit that does (on
/// top of `head`, not yet on the branch).
#[derive(Debug)]
pub struct Rollback {
    pub target: Deployment,
    pub head: Oid,
    pub commit: Oid,
}

fn tree_of(repo: &Repository, commit: &str) -> Option<Oid> {
    Some(repo.find_commit(Oid::from_str(commit).ok()?).ok()?.tree_id())
}

/// The deployment a rollback of `env` restores: `to` when given (checked: of this environment,
/// a deploy that became ready, its commit still in the repo), else the newest ready deployment
/// whose state differs from the branch's.
pub fn rollback_target(
    records: &Records,
    repo: &Repository,
    env: &Environment,
    to: Option<u64>,
) -> Result<Deployment, LifecycleError> {
    let head_tree = repo
        .find_commit(env.head(repo)?)
        .map(|c| c.tree_id())
        .map_err(|e| LifecycleError::Repo { id: env.id.clone(), message: e.message().to_owned() })?;
    let key = env.key();
    if let Some(n) = to {
        let d = records.find(n)?.ok_or(LifecycleError::NoDeployment(n))?;
        if d.environment_key() != key {
            let r = &d.request;
            return Err(LifecycleError::OtherEnvironment {
                id: n,
                other: format!("{}/{}/{} {}", r.account, r.application, r.repo, r.environment),
                wanted: env.describe(),
            });
        }
        if d.request.action != Action::Deploy {
            return Err(LifecycleError::NotADeploy(n));
        }
        if d.state != State::Ready {
            return Err(LifecycleError::NotReady { id: n, state: d.state.as_str() });
        }
        if tree_of(repo, &d.request.commit).is_none() {
            return Err(LifecycleError::CommitGone(n));
        }
        return Ok(d);
    }
    // The environment's ready deployments, newest first, a page at a time.
    let filter = Filter { state: Some(State::Ready), ..Filter::environment(&key) };
    for offset in (0..).step_by(PAGE as usize) {
        let (page, _) = records.page(&filter, offset, PAGE)?;
        let n = page.len() as u64;
        if let Some(d) = page.into_iter().find(|d| {
            d.request.action == Action::Deploy && tree_of(repo, &d.request.commit).is_some_and(|t| t != head_tree)
        }) {
            return Ok(d);
        }
        if n < PAGE {
            break;
        }
    }
    Err(LifecycleError::NothingToRestore(env.describe()))
}

/// The restoring commit's message.
pub fn rollback_message(env: &str, target: &Deployment) -> String {
    let commit = &target.request.commit;
    format!(
        "Roll back {env} to deployment {} (commit {})\n\nRestores the state deployed by deployment {} ({commit}).\n",
        target.id,
        short(commit),
        target.id
    )
}

/// Plans a rollback of `env` in the bare repo at `repo_path`: picks the deployment
/// ([`rollback_target`]) and writes the commit restoring its tree on top of the branch (the
/// branch does not move).
pub fn plan_rollback(
    records: &Records,
    repo_path: &Path,
    env: &Environment,
    to: Option<u64>,
) -> Result<Rollback, LifecycleError> {
    let repo_err = |message: String| LifecycleError::Repo { id: env.id.clone(), message };
    let repo = Repository::open_bare(repo_path).map_err(|e| repo_err(e.message().to_owned()))?;
    let head = env.head(&repo)?;
    let target = rollback_target(records, &repo, env, to)?;
    let message = rollback_message(env.name, &target);
    let commit = crate::repos::restore_commit(repo_path, env.name, &target.request.commit, &message)
        .map_err(|e| repo_err(e.to_string()))?;
    Ok(Rollback { target, head, commit })
}

/// The audit entry of a rollback (`who`: a token id, `local` or `cli`).
pub fn audit_rollback(audit: &AuditLog, who: &str, from: Option<String>, env: &Environment, rollback: &Rollback) {
    let id = env.id;
    audit.record(
        who,
        from,
        "rollback",
        &id.account,
        &format!("{}/{}/{}", id.application, id.repo, env.name),
        &format!(
            "to deployment {} (commit {}) with commit {}",
            rollback.target.id,
            short(&rollback.target.request.commit),
            short(&rollback.commit.to_string())
        ),
    );
}

/// The audit entry of a redeploy of `commit` as deployment `deployment`.
pub fn audit_redeploy(
    audit: &AuditLog,
    who: &str,
    from: Option<String>,
    env: &Environment,
    commit: Oid,
    deployment: u64,
) {
    let id = env.id;
    audit.record(
        who,
        from,
        "redeploy",
        &id.account,
        &format!("{}/{}/{}", id.application, id.repo, env.name),
        &format!("commit {}, deployment {deployment}", short(&commit.to_string())),
    );
}

/// The branches of a repo (its environments) and their commits, by name.
pub fn branches(repo: &Repository) -> Result<Vec<(String, Oid)>, git2::Error> {
    let mut out = Vec::new();
    for b in repo.branches(Some(git2::BranchType::Local))? {
        let (b, _) = b?;
        if let (Ok(Some(name)), Some(target)) = (b.name(), b.get().target()) {
            out.push((name.to_owned(), target));
        }
    }
    out.sort();
    Ok(out)
}

fn environment_key(id: &RepoId, env: &str) -> Result<EnvKey, LifecycleError> {
    if !crate::names::is_branch_name(env) {
        return Err(LifecycleError::BadName(env.to_owned()));
    }
    Ok((id.account.clone(), id.application.clone(), id.repo.clone(), env.to_owned()))
}

impl<T: Target> Actions<T> {
    /// Rolls `env` back (to deployment `to`, or the newest earlier ready one with another
    /// tree): the restoring commit checked and the branch moved under the environment's hold,
    /// the deployment submitted, the action audited. Returns the deployment and the id of the
    /// one it restores. Its pusher reads `who (rollback to deployment N)`.
    pub async fn rollback(
        &self,
        author: &Author,
        id: &RepoId,
        env: &str,
        to: Option<u64>,
    ) -> Result<(Deployment, u64), LifecycleError> {
        let key = environment_key(id, env)?;
        let (me, author, id, env) = (self.clone(), author.clone(), id.clone(), env.to_owned());
        held(&self.deployer, &next_holder(), key, async move {
            let (blocking, rid, name) = (me.clone(), id.clone(), env.clone());
            let (plan, lines) = tokio::task::spawn_blocking(move || {
                let me = blocking;
                let environment = Environment { id: &rid, name: &name };
                let path = me.repos.path(&rid);
                let plan = plan_rollback(me.deployer.records(), &path, &environment, to)?;
                let repo = Repository::open_bare(&path).map_err(|e| LifecycleError::repo(&rid, e.message()))?;
                let log = format!("devpop: roll back {name} to deployment {}", plan.target.id);
                let checked = me.edits(&repo, &rid).check_and_move(&name, plan.commit, Some(plan.head), &log)?;
                if !checked.accepted {
                    return Err(LifecycleError::Refused(checked.lines));
                }
                Ok((plan, checked.lines))
            })
            .await??;
            let pusher = format!("{} (rollback to deployment {})", author.who, plan.target.id);
            let mut new = request(&id, &env, plan.commit.to_string(), Action::Deploy, &pusher);
            new.validation = lines;
            let d = me.deployer.submit(new).await?;
            let restores = plan.target.id;
            // The audit log is a database write: off the async threads.
            let audit = me.audit.clone();
            tokio::task::spawn_blocking(move || {
                audit_rollback(&audit, &author.who, author.from, &Environment { id: &id, name: &env }, &plan)
            })
            .await?;
            Ok((d, restores))
        })
        .await
    }

    /// Deploys `env`'s branch head again, checked again (a package may have changed), the
    /// branch unchanged; under the environment's hold, audited. Its pusher reads `who
    /// (redeploy)`.
    pub async fn redeploy(&self, author: &Author, id: &RepoId, env: &str) -> Result<Deployment, LifecycleError> {
        let key = environment_key(id, env)?;
        let (me, author, id, env) = (self.clone(), author.clone(), id.clone(), env.to_owned());
        held(&self.deployer, &next_holder(), key, async move {
            let (blocking, rid, name) = (me.clone(), id.clone(), env.clone());
            let (head, lines) = tokio::task::spawn_blocking(move || {
                let me = blocking;
                let environment = Environment { id: &rid, name: &name };
                let repo =
                    Repository::open_bare(me.repos.path(&rid)).map_err(|e| LifecycleError::repo(&rid, e.message()))?;
                let head = environment.head(&repo)?;
                let log = format!("devpop: redeploy {name}");
                let checked = me.edits(&repo, &rid).check_and_move(&name, head, Some(head), &log)?;
                if !checked.accepted {
                    return Err(LifecycleError::Refused(checked.lines));
                }
                Ok((head, checked.lines))
            })
            .await??;
            let mut new = request(&id, &env, head.to_string(), Action::Deploy, &format!("{} (redeploy)", author.who));
            new.validation = lines;
            let d = me.deployer.submit(new).await?;
            let (audit, deployment) = (me.audit.clone(), d.id);
            tokio::task::spawn_blocking(move || {
                let environment = Environment { id: &id, name: &env };
                audit_redeploy(&audit, &author.who, author.from, &environment, head, deployment)
            })
            .await?;
            Ok(d)
        })
        .await
    }

    /// Deletes environment `env`: its branch goes (not the application's default one), and a
    /// deployment removes what it ran; under the environment's hold (a push of it waits, then
    /// finds no branch to move from), audited. Returns that deployment.
    pub async fn delete_environment(
        &self,
        author: &Author,
        id: &RepoId,
        env: &str,
    ) -> Result<Deployment, LifecycleError> {
        let key = environment_key(id, env)?;
        let (me, author, id, env) = (self.clone(), author.clone(), id.clone(), env.to_owned());
        held(&self.deployer, &next_holder(), key, async move {
            let (blocking, rid, name) = (me.clone(), id.clone(), env.clone());
            let head = tokio::task::spawn_blocking(move || {
                let repo = Repository::open_bare(blocking.repos.path(&rid))
                    .map_err(|e| LifecycleError::repo(&rid, e.message()))?;
                let head = Environment { id: &rid, name: &name }.head(&repo)?;
                let branch = format!("refs/heads/{name}");
                let default = repo
                    .find_reference("HEAD")
                    .ok()
                    .and_then(|h| h.symbolic_target().ok().flatten().map(str::to_owned));
                if default.as_deref() == Some(branch.as_str()) {
                    return Err(LifecycleError::DefaultEnvironment(name));
                }
                repo.find_reference(&branch)
                    .and_then(|mut r| r.delete())
                    .map_err(|e| LifecycleError::repo(&rid, e.message()))?;
                Ok(head)
            })
            .await??;
            let d = me.deployer.submit(request(&id, &env, head.to_string(), Action::Delete, &author.who)).await?;
            let target = format!("{}/{}/{env}", id.application, id.repo);
            me.audit(&author, "environment.delete", &id, &target, &format!("deployment {}", d.id)).await;
            Ok(d)
        })
        .await
    }

    /// Deletes the application `id`: each environment is removed (a deployment each), then its
    /// repo; audited with `detail`.
    pub async fn delete_application(&self, author: &Author, id: &RepoId, detail: &str) -> Result<(), LifecycleError> {
        let (repos, rid) = (self.repos.clone(), id.clone());
        let envs = tokio::task::spawn_blocking(move || {
            let repo = Repository::open_bare(repos.path(&rid)).map_err(|e| LifecycleError::repo(&rid, e.message()))?;
            branches(&repo).map_err(|e| LifecycleError::repo(&rid, e.message()))
        })
        .await??;
        for (env, commit) in envs {
            self.deployer.submit(request(id, &env, commit.to_string(), Action::Delete, &author.who)).await?;
        }
        let (path, rid) = (self.repos.path(id), id.clone());
        tokio::task::spawn_blocking(move || std::fs::remove_dir_all(&path).map_err(|e| LifecycleError::repo(&rid, e)))
            .await??;
        let target = format!("{}/{}", id.application, id.repo);
        self.audit(author, "application.delete", id, &target, detail).await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::NewDeployment;

    struct World {
        _dir: tempfile::TempDir,
        repo_path: std::path::PathBuf,
        records: Records,
        id: RepoId,
    }

    impl World {
        fn new() -> World {
            let dir = tempfile::tempdir().unwrap();
            let repo_path = dir.path().join("site.git");
            Repository::init_bare(&repo_path).unwrap();
            let records = Records::open(dir.path()).unwrap();
            World { _dir: dir, repo_path, records, id: RepoId::new("acme", "shop", "site").unwrap() }
        }

        fn repo(&self) -> Repository {
            Repository::open_bare(&self.repo_path).unwrap()
        }

        /// A commit on Production with `content` in one file; the branch moves to it.
        fn commit(&self, content: &str) -> Oid {
            let repo = self.repo();
            let blob = repo.blob(content.as_bytes()).unwrap();
            let mut tb = repo.treebuilder(None).unwrap();
            tb.insert("file", blob, 0o100644).unwrap();
            let tree = repo.find_tree(tb.write().unwrap()).unwrap();
            let sig = git2::Signature::now("t", "t@example.com").unwrap();
            let parent = repo.find_reference("refs/heads/Production").ok().and_then(|r| r.peel_to_commit().ok());
            let parents: Vec<&git2::Commit> = parent.iter().collect();
            repo.commit(Some("refs/heads/Production"), &sig, &sig, content, &tree, &parents).unwrap()
        }

        /// A deployment of `commit` in `state`.
        fn deployment(&self, env: &str, commit: Oid, action: Action, state: State) -> u64 {
            let d = self
                .records
                .create(NewDeployment {
                    account: "acme".into(),
                    application: "shop".into(),
                    repo: "site".into(),
                    environment: env.into(),
                    commit: commit.to_string(),
                    action,
                    pusher: "test".into(),
                    quarantine: None,
                    validation: Vec::new(),
                })
                .unwrap();
            if state != State::Queued {
                let mut path = vec![State::Rendering, State::Applying, State::Progressing];
                if state == State::Ready {
                    path.push(State::Ready);
                } else {
                    path = vec![state];
                }
                for s in path {
                    self.records.transition(d.id, s, "").unwrap();
                }
            }
            d.id
        }

        fn env(&self) -> Environment<'_> {
            Environment { id: &self.id, name: "Production" }
        }
    }

    #[test]
    fn the_default_target_is_the_newest_ready_deployment_whose_state_differs_from_the_branch() {
        let w = World::new();
        let v1 = w.commit("v1");
        let d1 = w.deployment("Production", v1, Action::Deploy, State::Ready);
        let v2 = w.commit("v2");
        let d2 = w.deployment("Production", v2, Action::Deploy, State::Ready);
        let v3 = w.commit("v3");
        w.deployment("Production", v3, Action::Deploy, State::Failed);
        // The branch is at v3 (failed): the newest ready one with another tree is v2's.
        assert_eq!(rollback_target(&w.records, &w.repo(), &w.env(), None).unwrap().id, d2);
        // A commit restoring v2's tree, then at v2's state: the next one back is v1.
        let again = w.commit("v2");
        assert_ne!(again, v2);
        assert_eq!(rollback_target(&w.records, &w.repo(), &w.env(), None).unwrap().id, d1);
    }

    #[test]
    fn with_nothing_earlier_to_restore_a_rollback_says_so() {
        let w = World::new();
        let v1 = w.commit("v1");
        w.deployment("Production", v1, Action::Deploy, State::Ready);
        let e = rollback_target(&w.records, &w.repo(), &w.env(), None).unwrap_err();
        assert!(matches!(e, LifecycleError::NothingToRestore(_)), "{e}");
        assert_eq!(
            e.to_string(),
            "acme/shop/site Production has no earlier ready deployment with a different state to restore"
        );
    }

    #[test]
    fn a_chosen_target_must_be_a_ready_deploy_of_the_same_environment() {
        let w = World::new();
        let v1 = w.commit("v1");
        let other = w.deployment("Staging", v1, Action::Deploy, State::Ready);
        let failed = w.deployment("Production", v1, Action::Deploy, State::Failed);
        let delete = w.deployment("Production", v1, Action::Delete, State::Ready);
        let ok = w.deployment("Production", v1, Action::Deploy, State::Ready);
        let pick = |n| rollback_target(&w.records, &w.repo(), &w.env(), Some(n));
        assert!(matches!(pick(999), Err(LifecycleError::NoDeployment(999))));
        assert!(matches!(pick(other), Err(LifecycleError::OtherEnvironment { .. })));
        assert!(matches!(pick(failed), Err(LifecycleError::NotReady { .. })));
        assert!(matches!(pick(delete), Err(LifecycleError::NotADeploy(_))));
        assert_eq!(pick(ok).unwrap().id, ok);
    }

    #[test]
    fn a_planned_rollback_restores_the_targets_tree_on_top_of_the_branch_without_moving_it() {
        let w = World::new();
        let v1 = w.commit("v1");
        let d1 = w.deployment("Production", v1, Action::Deploy, State::Ready);
        let v2 = w.commit("v2");
        let plan = plan_rollback(&w.records, &w.repo_path, &w.env(), None).unwrap();
        assert_eq!(plan.target.id, d1);
        assert_eq!(plan.head, v2);
        let repo = w.repo();
        let commit = repo.find_commit(plan.commit).unwrap();
        assert_eq!(commit.parent_id(0).unwrap(), v2, "history stays linear");
        assert_eq!(commit.tree_id(), repo.find_commit(v1).unwrap().tree_id());
        assert!(commit.message().unwrap().starts_with(&format!("Roll back Production to deployment {d1}")));
        assert_eq!(w.env().head(&repo).unwrap(), v2, "the branch has not moved");
    }

    #[test]
    fn rollbacks_and_redeploys_are_audited_with_who_did_them() {
        let w = World::new();
        let v1 = w.commit("v1");
        w.deployment("Production", v1, Action::Deploy, State::Ready);
        w.commit("v2");
        let plan = plan_rollback(&w.records, &w.repo_path, &w.env(), None).unwrap();
        let audit = AuditLog::open(w._dir.path()).unwrap();
        audit_rollback(&audit, "tok_1", Some("127.0.0.1".into()), &w.env(), &plan);
        audit_redeploy(&audit, "tok_2", None, &w.env(), v1, 7);
        let (entries, _) = audit.page(&crate::records::audit::Visible::All, 0, 10).unwrap();
        let found: Vec<(&str, &str, &str)> =
            entries.iter().map(|e| (e.who.as_str(), e.action.as_str(), e.target.as_str())).collect();
        assert!(found.contains(&("tok_1", "rollback", "shop/site/Production")), "{found:?}");
        assert!(found.contains(&("tok_2", "redeploy", "shop/site/Production")), "{found:?}");
    }

    /// A deployment of `commit` to `env` of the application `1/2/site`, ready.
    fn ready_deployment(records: &Records, env: &str, commit: Oid) -> u64 {
        let d = records
            .create(crate::edits::request(
                &RepoId::new("1", "2", "site").unwrap(),
                env,
                commit.to_string(),
                Action::Deploy,
                "t",
            ))
            .unwrap();
        for s in [State::Rendering, State::Applying, State::Progressing, State::Ready] {
            records.transition(d.id, s, "").unwrap();
        }
        d.id
    }

    fn author() -> Author {
        Author { who: "tok_1".into(), from: None }
    }

    #[tokio::test]
    async fn a_rollback_to_a_deployment_of_another_environment_is_refused_and_moves_nothing() {
        let data = tempfile::tempdir().unwrap();
        let (actions, id) = crate::edits::test_actions(data.path());
        let repo = Repository::open_bare(actions.repos.path(&id)).unwrap();
        let env = Environment { id: &id, name: "Production" };
        let first = env.head(&repo).unwrap();
        let records = actions.deployer.records().clone();
        let ours = ready_deployment(&records, "Production", first);
        let theirs = ready_deployment(&records, "Staging", first);
        let parent = repo.find_commit(first).unwrap();
        let sig = git2::Signature::now("t", "t@example.com").unwrap();
        let second =
            crate::edits::commit_file(&repo, &parent, &["custom_errors", "503.html"], b"x", &sig, "x").unwrap();
        repo.reference("refs/heads/Production", second, true, "test").unwrap();

        let refused = actions.rollback(&author(), &id, "Production", Some(theirs)).await;
        assert!(matches!(refused, Err(LifecycleError::OtherEnvironment { .. })), "{refused:?}");
        assert_eq!(env.head(&repo).unwrap(), second, "the branch did not move");

        // To one of its own: a commit restoring that state, deployed.
        let (d, restores) = actions.rollback(&author(), &id, "Production", Some(ours)).await.unwrap();
        assert_eq!(restores, ours);
        let head = env.head(&repo).unwrap();
        assert_eq!(repo.find_commit(head).unwrap().tree_id(), parent.tree_id());
        assert_eq!(
            (d.request.commit, d.request.pusher),
            (head.to_string(), format!("tok_1 (rollback to deployment {ours})"))
        );
    }

    #[tokio::test]
    async fn deleting_an_environment_removes_its_branch_and_queues_its_removal_but_never_the_default_one() {
        let data = tempfile::tempdir().unwrap();
        let (actions, id) = crate::edits::test_actions(data.path());
        let repo = Repository::open_bare(actions.repos.path(&id)).unwrap();
        let sig = git2::Signature::now("t", "t@example.com").unwrap();
        let (staging, checked) =
            actions.edits(&repo, &id).new_environment("Production", "Staging", &|_| {}, &sig).unwrap();
        assert!(checked.accepted, "{:?}", checked.lines);

        let d = actions.delete_environment(&author(), &id, "Staging").await.unwrap();
        assert!(repo.find_reference("refs/heads/Staging").is_err(), "the branch is gone");
        assert_eq!((d.request.action, d.request.commit), (Action::Delete, staging.to_string()));

        let refused = actions.delete_environment(&author(), &id, "Production").await;
        assert!(matches!(refused, Err(LifecycleError::DefaultEnvironment(_))), "{refused:?}");
        assert!(repo.find_reference("refs/heads/Production").is_ok());
        let gone = actions.delete_environment(&author(), &id, "Staging").await;
        assert!(matches!(gone, Err(LifecycleError::NoEnvironment { .. })), "{gone:?}");
    }
}
