//! Environment lifecycle actions that are not a push: rollback (an earlier deployment's state
//! restored as a new commit on the branch) and redeploy (the branch's commit deployed again).
//!
//! The domain half of both: which deployment a rollback restores, the commit that restores it
//! (history stays linear: a GitOps engine never re-applies the bad commit, and the next push
//! builds on the rollback), and their audit entries. Checking the commit, moving the branch and
//! queueing the deployment are the caller's (`api::lifecycle` through the server, like a push;
//! the CLI's local mode by pushing the commit through the server).

use std::path::Path;

use git2::{Oid, Repository};

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
    #[error("{id} has no environment {env}")]
    NoEnvironment { id: RepoId, env: String },
    #[error(transparent)]
    Records(#[from] RecordError),
    #[error("the repo of {id}: {message}")]
    Repo { id: RepoId, message: String },
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
}
