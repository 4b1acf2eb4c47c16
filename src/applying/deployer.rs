//! The deployment pipeline: a queue per environment and a worker that takes each deployment
//! through rendering -> applying -> progressing -> ready | failed against the [`Target`].
//!
//! - Deployments of one environment run one at a time, in push order; a newer push supersedes
//!   one still waiting. Different environments run in parallel, bounded by a semaphore.
//! - Every step is recorded ([`Records`]) before it is acted on, so a restart resumes what was
//!   queued or under way ([`Deployer::resume`]); applying is idempotent (server-side apply),
//!   so starting a deployment's pipeline again is safe.
//! - A push's deployment is recorded before git moves the branch ([`Deployer::reserve`]) and
//!   queued once it has moved ([`Deployer::push_finished`]; at a restart, by `resume`).
//! - Reconciliation ([`Deployer::reconcile`], at start and on demand) queues a deployment for
//!   every environment whose branch is not at the commit it was last asked to run (a push
//!   straight to the repo on disk, a crash between a ref update and its record).
//! - Retention: each environment keeps its newest deployments (and its last ready one).
//! - Watchers get every change of every deployment on a broadcast channel.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{broadcast, Semaphore};

use super::{Subject, Target, TargetError};
use crate::checks;
use crate::names::RepoId;
use crate::packages::PackageStore;
use crate::records::audit::AuditEntry;
use crate::records::{crash, Action, Deployment, NewDeployment, RecordError, Records, State};
use crate::rendering::{self, RenderSettings, Rendered};
use crate::repos::RepoStore;
use crate::source::{GitCommit, RepoSource};

/// An environment: account, application, repo, environment.
pub type EnvKey = crate::records::EnvKey;

#[derive(Default)]
struct EnvQueue {
    running: bool,
    /// The deployment waiting its turn (a newer one supersedes it).
    pending: Option<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error(transparent)]
    Record(#[from] RecordError),
    #[error("invalid application: {0}")]
    BadName(#[from] crate::names::NameError),
    #[error("internal: {0}")]
    Internal(String),
}

pub struct Deployer<T: Target> {
    records: Arc<Records>,
    target: Arc<T>,
    repos: RepoStore,
    packages: PackageStore,
    render: RenderSettings,
    /// How long a rollout may take before the deployment fails.
    pub rollout_deadline: Duration,
    queues: Mutex<HashMap<EnvKey, EnvQueue>>,
    permits: Arc<Semaphore>,
    events: broadcast::Sender<Deployment>,
    /// Deployments announced by a push still in progress, by push: recorded and queued only
    /// once git has moved their branch.
    reservations: Mutex<HashMap<String, Vec<Reserved>>>,
    /// What a push's checks rendered, by deployment: its first render is not done again.
    prerendered: Mutex<HashMap<u64, Rendered>>,
    /// One lock per environment, held by a push from its verdict until git is done.
    env_locks: Mutex<HashMap<EnvKey, Arc<tokio::sync::Mutex<()>>>>,
    /// The environment locks a push in progress holds, by push.
    /// The pushes in progress (from [`Deployer::push_started`] to [`Deployer::push_finished`])
    /// and the environment locks each holds.
    holds: Mutex<HashMap<String, Vec<(EnvKey, tokio::sync::OwnedMutexGuard<()>)>>>,
    /// Deployments a `-o wait` push in progress made before git moved its branch, by push.
    waited: Mutex<HashMap<String, Vec<(u64, NewDeployment)>>>,
    /// One reconciliation at a time.
    reconciling: tokio::sync::Mutex<()>,
}

/// A deployment a push announced: its id, what it asks, and the checks' render.
type Reserved = (u64, NewDeployment, Option<Rendered>);

/// Renders kept for deployments not yet run; more are dropped (they render again).
const MAX_PRERENDERED: usize = 256;

impl<T: Target> Deployer<T> {
    pub fn new(
        records: Arc<Records>,
        target: Arc<T>,
        repos: RepoStore,
        packages: PackageStore,
        render: RenderSettings,
        parallel: usize,
    ) -> Arc<Self> {
        Arc::new(Deployer {
            records,
            target,
            repos,
            packages,
            render,
            rollout_deadline: Duration::from_secs(300),
            queues: Mutex::new(HashMap::new()),
            permits: Arc::new(Semaphore::new(parallel.max(1))),
            events: broadcast::channel(1024).0,
            reservations: Mutex::new(HashMap::new()),
            prerendered: Mutex::new(HashMap::new()),
            env_locks: Mutex::new(HashMap::new()),
            holds: Mutex::new(HashMap::new()),
            waited: Mutex::new(HashMap::new()),
            reconciling: tokio::sync::Mutex::new(()),
        })
    }

    pub fn records(&self) -> &Arc<Records> {
        &self.records
    }

    pub fn target(&self) -> &Arc<T> {
        &self.target
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Deployment> {
        self.events.subscribe()
    }

    /// Runs a records operation off the async runtime and announces the result.
    async fn record<F>(&self, f: F) -> Result<Deployment, DeployError>
    where
        F: FnOnce(&Records) -> Result<Deployment, RecordError> + Send + 'static,
    {
        let d = self.query(f).await?;
        let _ = self.events.send(d.clone());
        Ok(d)
    }

    /// Runs a records query off the async runtime.
    async fn query<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Records) -> Result<R, RecordError> + Send + 'static,
    ) -> Result<R, DeployError> {
        let records = self.records.clone();
        Ok(tokio::task::spawn_blocking(move || f(&records))
            .await
            .map_err(|e| DeployError::Internal(e.to_string()))??)
    }

    /// A deployment as recorded (off the async runtime).
    pub async fn get(&self, id: u64) -> Result<Option<Deployment>, DeployError> {
        self.query(move |r| r.find(id)).await
    }

    /// Records a new deployment and queues it. A `-o wait` push's deployment (its commit still
    /// in quarantine) is the push's audit entry too.
    pub async fn submit(self: &Arc<Self>, request: NewDeployment) -> Result<Deployment, DeployError> {
        RepoId::new(&request.account, &request.application, &request.repo)?;
        let audit = request.quarantine.is_some().then(|| push_audit(&request, "push", "-o wait"));
        let d = self.record(move |r| r.create_with(request, true, audit)).await?;
        self.enqueue(&d).await;
        Ok(d)
    }

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

    fn in_progress(&self, push: &str) -> Result<(), DeployError> {
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
    async fn settle(self: &Arc<Self>, id: u64, request: NewDeployment, note: &str) -> Result<(), DeployError> {
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
    async fn undo_if_refused(self: &Arc<Self>, push: &str, id: u64, request: NewDeployment) -> Result<(), DeployError> {
        let repos = self.repos.clone();
        let r = request.clone();
        let (landed, head) = tokio::task::spawn_blocking(move || (branch_is_at(&repos, &r), branch_head(&repos, &r)))
            .await
            .map_err(|e| DeployError::Internal(e.to_string()))?;
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
        let wanted = tokio::task::spawn_blocking(move || drifted(&repos, &records))
            .await
            .map_err(|e| DeployError::Internal(e.to_string()))??;
        let mut queued = Vec::new();
        for (request, message) in wanted {
            let d = self.record(move |r| r.create(request)).await?;
            let id = d.id;
            let d = self.record(move |r| r.note(id, message)).await?;
            self.enqueue(&d).await;
            queued.push(d);
        }
        Ok(queued)
    }

    async fn enqueue(self: &Arc<Self>, d: &Deployment) {
        let key = d.environment_key();
        let (superseded, start) = {
            let mut queues = self.queues.lock().expect("queue lock");
            let q = queues.entry(key.clone()).or_default();
            let superseded = q.pending.replace(d.id);
            let start = !q.running;
            q.running = true;
            (superseded, start)
        };
        if let Some(old) = superseded {
            let new = d.id;
            self.prerendered.lock().expect("prerendered lock").remove(&old);
            let _ = self
                .record(move |r| r.transition(old, State::Superseded, format!("superseded by deployment {new}")))
                .await;
        }
        if start {
            let this = self.clone();
            tokio::spawn(async move { this.work(key).await });
        }
    }

    /// Runs an environment's deployments one after another until its queue is empty.
    async fn work(self: Arc<Self>, key: EnvKey) {
        loop {
            let next = {
                let mut queues = self.queues.lock().expect("queue lock");
                let q = queues.get_mut(&key).expect("queue exists while its worker runs");
                match q.pending.take() {
                    Some(id) => id,
                    None => {
                        q.running = false;
                        return;
                    }
                }
            };
            let _permit = self.permits.clone().acquire_owned().await.expect("semaphore never closed");
            if let Err(e) = self.run(next).await {
                tracing::error!(deployment = next, error = %e, "deployment pipeline error");
            }
        }
    }

    /// Takes one deployment through the pipeline; failures end in `failed` with the reason.
    async fn run(&self, id: u64) -> Result<(), DeployError> {
        let d = self.get(id).await?.ok_or(RecordError::NotFound(id))?;
        let req = d.request.clone();
        let subject = Subject {
            account: req.account.clone(),
            application: req.application.clone(),
            repo: req.repo.clone(),
            environment: req.environment.clone(),
            commit: req.commit.clone(),
            deployment: id,
        };
        let outcome = match req.action {
            Action::Deploy => self.deploy(id, &subject).await,
            Action::Delete => self.remove(id, &subject).await,
        };
        match outcome {
            Ok(message) => self.record(move |r| r.transition(id, State::Ready, message)).await?,
            Err(e) => {
                let message = e.to_string();
                tracing::info!(deployment = id, reason = %message, "deployment failed");
                let failed = if req.quarantine.is_some() {
                    // A `-o wait` deployment that failed: its push is refused, the branch stays.
                    self.record(move |r| r.not_landed(id, message)).await?
                } else {
                    self.record(move |r| r.transition(id, State::Failed, message)).await?
                };
                if failed.request.quarantine.is_some() {
                    self.restore_after(&failed).await?;
                }
                failed
            }
        };
        let key = d.environment_key();
        if let Err(e) = self.query(move |r| r.prune(&key)).await {
            tracing::warn!(error = %e, "retention: cannot prune old deployments");
        }
        Ok(())
    }

    /// A `-o wait` deployment failed, so its push is refused and its branch does not move: put
    /// the environment back to what its branch says, the last deployment that became ready.
    async fn restore_after(&self, failed: &Deployment) -> Result<(), DeployError> {
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

    async fn deploy(&self, id: u64, subject: &Subject) -> Result<String, Failure> {
        self.record(move |r| r.transition(id, State::Rendering, "rendering")).await?;
        let prerendered = self.prerendered.lock().expect("prerendered lock").remove(&id);
        let rendered = match prerendered {
            Some(rendered) => rendered,
            None => self.render(subject).await?,
        };
        let ns = rendered.namespace.clone();
        self.record(move |r| r.set_namespace(id, &ns)).await?;
        let message = format!("applying {} objects ({})", rendered.objects.len(), self.target.name());
        self.record(move |r| r.transition(id, State::Applying, message)).await?;
        crash::point("mid-apply");
        let report = self.target.apply(subject, &rendered).await?;
        let summary = report.summary.clone();
        self.record(move |r| r.note(id, summary)).await?;
        if !report.pruned.is_empty() {
            let pruned = format!("pruned: {}", report.pruned.join(", "));
            self.record(move |r| r.note(id, pruned)).await?;
        }
        self.record(move |r| r.transition(id, State::Progressing, "waiting for the rollout")).await?;
        crash::point("mid-rollout");
        Ok(self.target.rollout(subject, &rendered, self.rollout_deadline).await?)
    }

    async fn remove(&self, id: u64, subject: &Subject) -> Result<String, Failure> {
        let ns = subject
            .repo_id()
            .map(|rid| rendering::naming::namespace(&self.render.namespace_prefix, &rid, &subject.environment))
            .ok_or_else(|| Failure("invalid application name".into()))?;
        let ns2 = ns.clone();
        self.record(move |r| r.transition(id, State::Rendering, format!("branch deleted: removing namespace {ns2}")))
            .await?;
        self.record(move |r| r.transition(id, State::Applying, "removing")).await?;
        let message = self.target.remove(subject, &ns).await?;
        self.record(move |r| r.transition(id, State::Progressing, message)).await?;
        Ok(format!("environment {} removed", subject.environment))
    }

    /// Renders the deployment's commit from the application's repo (blocking work off the runtime).
    async fn render(&self, subject: &Subject) -> Result<Rendered, Failure> {
        let (repos, packages, settings, subject) =
            (self.repos.clone(), self.packages.clone(), self.render.clone(), subject.clone());
        let quarantine = self.get(subject.deployment).await?.and_then(|d| d.request.quarantine);
        tokio::task::spawn_blocking(move || render_commit(&repos, &packages, &settings, &subject, quarantine))
            .await
            .map_err(|e| Failure(e.to_string()))?
    }

    /// Renders a commit (from the quarantine, for a push still in progress) and asks the target
    /// whether it would accept it; records nothing.
    pub async fn dry_run(&self, request: NewDeployment) -> Result<Option<super::DryRun>, String> {
        // A dry-run push changes nothing, but it is a push: the audit log has it.
        let audit = push_audit(&request, "push.dry-run", "-o dry-run");
        let db = self.records.db().clone();
        let written =
            tokio::task::spawn_blocking(move || crate::records::audit::AuditLog::with_db(db).append(audit)).await;
        if !matches!(written, Ok(Ok(()))) {
            tracing::error!("cannot write the audit log");
        }
        let subject = Subject {
            account: request.account.clone(),
            application: request.application.clone(),
            repo: request.repo.clone(),
            environment: request.environment.clone(),
            commit: request.commit.clone(),
            deployment: 0,
        };
        let (repos, packages, settings, s) =
            (self.repos.clone(), self.packages.clone(), self.render.clone(), subject.clone());
        let rendered =
            tokio::task::spawn_blocking(move || render_commit(&repos, &packages, &settings, &s, request.quarantine))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.0)?;
        self.target.dry_run(&subject, &rendered).await.map_err(|e| e.to_string())
    }

    /// Waits until deployment `id` reaches a final state.
    pub async fn wait(&self, id: u64) -> Option<Deployment> {
        let mut rx = self.subscribe();
        loop {
            let d = self.get(id).await.ok()??;
            if d.state.is_terminal() {
                return Some(d);
            }
            match rx.recv().await {
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return self.get(id).await.ok()?,
            }
        }
    }
}

/// Why a deployment failed (its message).
#[derive(Debug)]
pub struct Failure(pub String);

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<TargetError> for Failure {
    fn from(e: TargetError) -> Self {
        Failure(e.to_string())
    }
}

impl From<DeployError> for Failure {
    fn from(e: DeployError) -> Self {
        Failure(e.to_string())
    }
}

/// A push's audit entry: who (and from where) as the transport saw them.
fn push_audit(request: &NewDeployment, action: &str, what: &str) -> AuditEntry {
    let (who, from) = match request.pusher.rsplit_once('@') {
        Some((who, from)) => (who.to_owned(), Some(from.to_owned())),
        None => (request.pusher.clone(), None),
    };
    let target = format!("{}/{}/{}", request.application, request.repo, request.environment);
    let detail = format!("commit {} ({what})", crate::records::short(&request.commit));
    AuditEntry::now(&who, from, action, &request.account, &target, &detail)
}

/// What reconciliation would queue: for every environment of every repo, a deployment of the
/// branch head when it is not among the commits the environment was last asked to run.
fn drifted(repos: &RepoStore, records: &Records) -> Result<Vec<(NewDeployment, String)>, DeployError> {
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
fn branch_is_at(repos: &RepoStore, request: &NewDeployment) -> bool {
    let Ok(id) = RepoId::new(&request.account, &request.application, &request.repo) else { return false };
    let Ok(repo) = git2::Repository::open_bare(repos.path(&id)) else { return false };
    let head = repo.find_reference(&format!("refs/heads/{}", request.environment)).ok().and_then(|r| r.target());
    match request.action {
        Action::Deploy => head.is_some_and(|h| h.to_string() == request.commit),
        Action::Delete => head.is_none(),
    }
}

/// The commit the deployment's branch is at now, if the branch exists.
fn branch_head(repos: &RepoStore, request: &NewDeployment) -> Option<String> {
    let id = RepoId::new(&request.account, &request.application, &request.repo).ok()?;
    let repo = git2::Repository::open_bare(repos.path(&id)).ok()?;
    let head = repo.find_reference(&format!("refs/heads/{}", request.environment)).ok()?.target()?;
    Some(head.to_string())
}

/// Reads the commit from the application's repo and renders the environment.
pub fn render_commit(
    repos: &RepoStore,
    packages: &PackageStore,
    settings: &RenderSettings,
    subject: &Subject,
    quarantine: Option<String>,
) -> Result<Rendered, Failure> {
    let id = subject.repo_id().ok_or_else(|| Failure("invalid application name".into()))?;
    let repo =
        crate::source::open_pushed(&repos.path(&id), quarantine.as_deref()).map_err(|e| Failure(e.to_string()))?;
    let commit =
        git2::Oid::from_str(&subject.commit).map_err(|e| Failure(format!("commit {}: {e}", subject.commit)))?;
    let source = GitCommit { repo: &repo, commit };
    let snapshot = source.snapshot().map_err(|e| Failure(e.to_string()))?;
    let report =
        crate::validation::check_with(&snapshot, &subject.environment, &packages.catalog(), &settings.origin_rules);
    let Some(config) = report.config.clone().filter(|_| report.is_ok()) else {
        let first = report.diagnostics.iter().find(|d| d.is_error()).map(ToString::to_string).unwrap_or_default();
        return Err(Failure(format!("the commit does not validate any more: {first}")));
    };
    let check_subject = checks::Subject { id: &id, environment: &subject.environment, commit: &subject.commit };
    checks::render(&source, check_subject, &config, packages, settings)
        .map_err(|e| Failure(format!("cannot render: {e}")))
}
