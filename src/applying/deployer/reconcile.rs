//! Catching up after a restart or a push that bypassed the server: resuming unfinished
//! deployments, and reconciling each environment's branch with its newest deployment.

use super::*;

impl<T: Target> Deployer<T> {
    /// At start-up: settles the deployments of pushes the server stopped in the middle of, and
    /// queues again every deployment that had not finished.
    pub async fn resume(self: &Arc<Self>) -> Result<usize, DeployError> {
        let unfinished = self.query(|r| r.unfinished()).await?;
        for (d, landed) in &unfinished {
            let (id, state) = (d.id, d.state);
            if !landed {
                // Recorded by a push's checks; did git move the branch before the server stopped?
                self.settle(id, d.request.clone(), " before the server stopped").await?;
                continue;
            }
            if d.request.quarantine.is_some() {
                // A `-o wait` push ended with the server: its branch did not move.
                let message = "failed: the server stopped while its -o wait push waited; the branch did not move";
                let failed = self.record(move |r| r.not_landed(id, message)).await?;
                self.restore_after(&failed).await?;
                continue;
            }
            let d = if state == State::Queued {
                self.record(move |r| r.note(id, "resumed after a restart")).await?
            } else {
                self.record(move |r| {
                    r.transition(id, State::Queued, format!("resumed after a restart (was {})", state.as_str()))
                })
                .await?
            };
            self.enqueue(&d).await;
        }
        Ok(unfinished.len())
    }

    /// Queues a deployment for every environment whose branch is not at the commit it was last
    /// asked to run ("reconciled: branch at X, last deployment at Y"), and a removal for every
    /// deployed environment whose branch is gone. Environments never deployed are left alone.
    /// Returns the deployments it queued.
    pub async fn reconcile(self: &Arc<Self>) -> Result<Vec<Deployment>, DeployError> {
        let _one = self.reconciling.lock().await;
        let (repos, records) = (self.repos.clone(), self.records.clone());
        let wanted = tokio::task::spawn_blocking(move || drifted(&repos, &records)).await??;
        let mut queued = Vec::new();
        for (request, message) in wanted {
            let d = self.record(move |r| r.create_noted(request, message)).await?;
            self.enqueue(&d).await;
            queued.push(d);
        }
        Ok(queued)
    }
}

/// What reconciliation would queue: for every environment of every repo, a deployment of the
/// branch head when it is not among the commits the environment was last asked to run.
pub(super) fn drifted(repos: &RepoStore, records: &Records) -> Result<Vec<(NewDeployment, String)>, DeployError> {
    let mut wanted = Vec::new();
    for id in repos.list() {
        let Ok(repo) = git2::Repository::open_bare(repos.path(&id)) else { continue };
        let mut heads = BTreeMap::new();
        if let Ok(branches) = repo.branches(Some(git2::BranchType::Local)) {
            for (branch, _) in branches.flatten() {
                if let (Ok(Some(name)), Some(head)) = (branch.name(), branch.get().target()) {
                    heads.insert(name.to_owned(), head.to_string());
                }
            }
        }
        for environment in records.environments(&id.account, &id.application, &id.repo)? {
            let key = (id.account.clone(), id.application.clone(), id.repo.clone(), environment.clone());
            let seen = records.environment_record(&key)?;
            let Some(newest) = seen.newest else { continue };
            let head = heads.get(&environment);
            let (commit, action, branch_at) = match head {
                Some(head) if seen.commits_asked.contains(head) && newest.request.action == Action::Deploy => continue,
                Some(head) => (head.clone(), Action::Deploy, crate::records::short(head).to_owned()),
                None if newest.request.action == Action::Delete => continue,
                None => (newest.request.commit.clone(), Action::Delete, "deleted".to_owned()),
            };
            let message = format!(
                "reconciled: branch at {branch_at}, last deployment at {}",
                crate::records::short(&newest.request.commit)
            );
            tracing::info!(%id, environment, "{message}");
            wanted.push((
                NewDeployment {
                    account: id.account.clone(),
                    application: id.application.clone(),
                    repo: id.repo.clone(),
                    environment,
                    commit,
                    action,
                    pusher: "devpop (reconciliation)".to_owned(),
                    quarantine: None,
                    validation: Vec::new(),
                },
                message,
            ));
        }
    }
    Ok(wanted)
}

/// Is the deployment's branch where the push meant it to be (gone, for a deletion)?
pub(super) fn branch_is_at(repos: &RepoStore, request: &NewDeployment) -> bool {
    let Ok(id) = RepoId::new(&request.account, &request.application, &request.repo) else { return false };
    let Ok(repo) = git2::Repository::open_bare(repos.path(&id)) else { return false };
    let head = repo.find_reference(&format!("refs/heads/{}", request.environment)).ok().and_then(|r| r.target());
    match request.action {
        Action::Deploy => head.is_some_and(|h| h.to_string() == request.commit),
        Action::Delete => head.is_none(),
    }
}

/// The commit the deployment's branch is at now, if the branch exists.
pub(super) fn branch_head(repos: &RepoStore, request: &NewDeployment) -> Option<String> {
    let id = RepoId::new(&request.account, &request.application, &request.repo).ok()?;
    let repo = git2::Repository::open_bare(repos.path(&id)).ok()?;
    let head = repo.find_reference(&format!("refs/heads/{}", request.environment)).ok()?.target()?;
    Some(head.to_string())
}
