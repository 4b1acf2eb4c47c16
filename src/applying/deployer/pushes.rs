//! The push side of the pipeline: a push reserves its deployments and holds its environments
//! while git runs, then each deployment lands or is undone; a failed `-o wait` deployment puts
//! the environment back to its last ready state.

use super::*;

impl<T: Target> Deployer<T> {
    /// Records the deployment a push will make (called from its pre-receive check, on a
    /// blocking thread), before git moves the branch: the id the push prints exists from now
    /// on. It is queued once git has moved the branch ([`Deployer::push_finished`]), and fails
    /// ("not deployed: the branch did not move") when git does not move it. `rendered` is the
    /// checks' render of the commit, which the deployment then uses instead of rendering again.
    pub fn reserve(&self, push: &str, request: NewDeployment, rendered: Option<Rendered>) -> Result<u64, DeployError> {
        RepoId::new(&request.account, &request.application, &request.repo)?;
        self.in_progress(push)?;
        crash::point("before-reserve");
        let id = self.records.create_pending(request.clone())?.id;
        self.reservations
            .lock()
            .expect("reservations lock")
            .entry(push.to_owned())
            .or_default()
            .push((id, request, rendered));
        crash::point("before-ref-move");
        Ok(id)
    }

    /// Holds the environment `key` for the rest of the push `push` (until
    /// [`Deployer::push_finished`]), waiting while another push holds it; `on_wait` is called
    /// once before waiting. So pushes of one environment pass their verdict one at a time, each
    /// seeing the branch the previous one left (and `-o wait` ones deploy one at a time).
    ///
    /// `false` when the push has ended meanwhile (git died or timed out while it waited): the
    /// lock is then let go at once, so no push that has ended holds an environment.
    pub async fn hold(&self, push: &str, key: EnvKey, on_wait: impl FnOnce()) -> bool {
        match self.holds.lock().expect("holds lock").get(push) {
            None => return false,
            // Already held by this push: nothing to wait for (waiting would be for itself).
            Some(held) if held.iter().any(|(k, _)| *k == key) => return true,
            Some(_) => {}
        }
        let lock = self.env_locks.lock().expect("environment locks").entry(key.clone()).or_default().clone();
        let guard = match lock.clone().try_lock_owned() {
            Ok(guard) => guard,
            Err(_) => {
                on_wait();
                lock.lock_owned().await
            }
        };
        match self.holds.lock().expect("holds lock").get_mut(push) {
            Some(held) => {
                held.push((key, guard));
                true
            }
            None => false,
        }
    }

    /// A push began (the transport calls this before git starts): it may now hold
    /// environments and reserve deployments, until [`Deployer::push_finished`].
    pub fn push_started(&self, push: &str) {
        self.holds.lock().expect("holds lock").insert(push.to_owned(), Vec::new());
    }

    pub(super) fn in_progress(&self, push: &str) -> Result<(), DeployError> {
        if self.holds.lock().expect("holds lock").contains_key(push) {
            Ok(())
        } else {
            Err(DeployError::Internal(format!("{push} has ended")))
        }
    }

    /// `-o wait`: records and queues a deployment of a commit still in quarantine, made by the
    /// push `push`. If git then does not move the branch to it, [`Deployer::push_finished`] puts
    /// the environment back to what the branch says.
    pub async fn submit_waited(
        self: &Arc<Self>,
        push: &str,
        request: NewDeployment,
    ) -> Result<Deployment, DeployError> {
        self.in_progress(push)?;
        let d = self.submit(request.clone()).await?;
        self.waited.lock().expect("waited lock").entry(push.to_owned()).or_default().push((d.id, request));
        Ok(d)
    }

    /// The push ended: each deployment it recorded whose branch now is where the push put it
    /// lands (with the push's audit entry) and is queued; the others fail, "not deployed".
    /// A `-o wait` deployment that became ready while git then did not move its branch (git
    /// refused the ref, or died) is undone: the branch's commit is deployed again. Then the
    /// push's environment locks are released.
    pub async fn push_finished(self: &Arc<Self>, push: &str, git_succeeded: bool) {
        // Ended from now on (no new holds, reservations or waited deployments); the locks it
        // holds are let go once its waited deployments are dealt with.
        let held = self.holds.lock().expect("holds lock").remove(push);
        let waited = self.waited.lock().expect("waited lock").remove(push).unwrap_or_default();
        for (id, request) in waited {
            if let Err(e) = self.undo_if_refused(push, id, request).await {
                tracing::error!(deployment = id, error = %e, "cannot restore an environment after a refused push");
            }
        }
        drop(held);
        let reserved = self.reservations.lock().expect("reservations lock").remove(push).unwrap_or_default();
        if !reserved.is_empty() && git_succeeded {
            crash::point("after-ref-move");
        }
        for (id, request, rendered) in reserved {
            if let Some(rendered) = rendered {
                let mut prerendered = self.prerendered.lock().expect("prerendered lock");
                if prerendered.len() >= MAX_PRERENDERED {
                    prerendered.clear();
                }
                prerendered.insert(id, rendered);
            }
            if let Err(e) = self.settle(id, request, "").await {
                tracing::error!(deployment = id, error = %e, "cannot record a deployment");
            }
        }
    }

    /// A push's recorded deployment: queued when its branch moved, failed when it did not.
    pub(super) async fn settle(
        self: &Arc<Self>,
        id: u64,
        request: NewDeployment,
        note: &str,
    ) -> Result<(), DeployError> {
        let repos = self.repos.clone();
        let r = request.clone();
        let landed = tokio::task::spawn_blocking(move || branch_is_at(&repos, &r)).await.unwrap_or(false);
        if !landed {
            self.prerendered.lock().expect("prerendered lock").remove(&id);
            tracing::info!(deployment = id, environment = %request.environment, "the push did not move the branch; not deployed");
            let message = format!(
                "not deployed: git did not move refs/heads/{} to this commit{note} (the push failed or another push moved the branch first)",
                request.environment
            );
            self.record(move |r| r.not_landed(id, message)).await?;
            return Ok(());
        }
        let action = if request.action == Action::Delete { "branch.delete" } else { "push" };
        let audit = push_audit(&request, action, &format!("deployment {id}"));
        let d = self.record(move |r| r.land(id, Some(audit))).await?;
        self.enqueue(&d).await;
        Ok(())
    }

    /// The `-o wait` deployment `id` of `push` is ready, but git did not move its branch: deploys
    /// what the branch says (its commit, or removal when the branch does not exist).
    pub(super) async fn undo_if_refused(
        self: &Arc<Self>,
        push: &str,
        id: u64,
        request: NewDeployment,
    ) -> Result<(), DeployError> {
        let repos = self.repos.clone();
        let r = request.clone();
        let (landed, head) =
            tokio::task::spawn_blocking(move || (branch_is_at(&repos, &r), branch_head(&repos, &r))).await?;
        let state = self.get(id).await?.map(|d| d.state);
        if landed || matches!(state, Some(State::Failed | State::Superseded) | None) {
            // Landed: nothing to undo. Failed: it has already been followed by a restore.
            // Superseded: a newer deployment of the environment runs instead.
            return Ok(());
        }
        // Ready, or still running when git ended (a timeout, a client gone): the restore
        // queued now runs after it.
        let (commit, action) = match head {
            Some(head) => (head, Action::Deploy),
            None => (request.commit.clone(), Action::Delete),
        };
        let restore = NewDeployment {
            commit,
            action,
            pusher: format!(
                "devpop (restoring: git did not move {} after deployment {id}, {push})",
                request.environment
            ),
            quarantine: None,
            validation: Vec::new(),
            ..request
        };
        let d = self.submit(restore).await?;
        let restore_id = d.id;
        self.record(move |r| {
            r.note(
                id,
                format!(
                    "git did not move the branch to this commit; deployment {restore_id} restores the branch's state"
                ),
            )
        })
        .await?;
        Ok(())
    }

    /// A `-o wait` deployment failed, so its push is refused and its branch does not move: put
    /// the environment back to what its branch says, the last deployment that became ready.
    pub(super) async fn restore_after(&self, failed: &Deployment) -> Result<(), DeployError> {
        let key = failed.environment_key();
        let Some(last) = self.query(move |r| r.last_ready(&key)).await? else { return Ok(()) };
        let request = NewDeployment {
            pusher: format!("devpop (restoring after deployment {} failed)", failed.id),
            quarantine: None,
            ..last.request.clone()
        };
        let restore = self.record(move |r| r.create(request)).await?;
        let (failed_id, restore_id, last_id) = (failed.id, restore.id, last.id);
        self.record(move |r| r.note(failed_id, format!("restoring deployment {last_id} as deployment {restore_id}")))
            .await?;
        // Queued behind nothing else of this environment: this worker runs it next.
        let queued = {
            let mut queues = self.queues.lock().expect("queue lock");
            let q = queues.entry(restore.environment_key()).or_default();
            q.pending.get_or_insert(restore.id) == &restore.id
        };
        if !queued {
            // A newer push is already waiting: it supersedes the restore.
            self.record(move |r| r.transition(restore_id, State::Superseded, "a newer deployment was already queued"))
                .await?;
        }
        Ok(())
    }
}

/// A push's audit entry: who (and from where) as the transport saw them.
pub(super) fn push_audit(request: &NewDeployment, action: &str, what: &str) -> AuditEntry {
    let (who, from) = match request.pusher.rsplit_once('@') {
        Some((who, from)) => (who.to_owned(), Some(from.to_owned())),
        None => (request.pusher.clone(), None),
    };
    let target = format!("{}/{}/{}", request.application, request.repo, request.environment);
    let detail = format!("commit {} ({what})", crate::records::short(&request.commit));
    AuditEntry::now(&who, from, action, &request.account, &target, &detail)
}
