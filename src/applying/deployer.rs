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

mod pushes;
mod reconcile;

use pushes::push_audit;
use reconcile::{branch_head, branch_is_at};

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
    /// A blocking task that panicked (its text is for the log, not for clients).
    #[error("a task of the server's failed")]
    Task(#[from] tokio::task::JoinError),
}

/// An environment's lock, held by a push in progress.
type EnvHold = (EnvKey, tokio::sync::OwnedMutexGuard<()>);

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
    /// The pushes in progress (from [`Deployer::push_started`] to [`Deployer::push_finished`])
    /// and the environment locks each holds, by push.
    holds: Mutex<HashMap<String, Vec<EnvHold>>>,
    /// Deployments a `-o wait` push in progress made before git moved its branch, by push.
    waited: Mutex<HashMap<String, Vec<(u64, NewDeployment)>>>,
    /// One reconciliation at a time.
    reconciling: tokio::sync::Mutex<()>,
    /// The actions on environments (`edits::held`) running as tasks of their own: the server
    /// waits for them at shutdown ([`Deployer::finish_changes`]).
    changes: tokio_util::task::TaskTracker,
}

/// A deployment a push announced: its id, what it asks, and the checks' render.
type Reserved = (u64, NewDeployment, Option<Rendered>);

/// Renders kept for deployments not yet run; more are dropped (they render again).
const MAX_PRERENDERED: usize = 256;

impl<T: Target> Deployer<T> {
    /// A deployer, not yet shared: a caller sets what it wants (`rollout_deadline`), then puts
    /// it in an `Arc` (the queue workers and the server share it).
    pub fn new(
        records: Arc<Records>,
        target: Arc<T>,
        repos: RepoStore,
        packages: PackageStore,
        render: RenderSettings,
        parallel: usize,
    ) -> Self {
        Deployer {
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
            changes: tokio_util::task::TaskTracker::new(),
        }
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

    /// Runs `change` (an action on an environment) as a task the server waits for at shutdown.
    pub fn spawn_change<R: Send + 'static>(
        &self,
        change: impl std::future::Future<Output = R> + Send + 'static,
    ) -> tokio::task::JoinHandle<R> {
        self.changes.spawn(change)
    }

    /// At shutdown: takes no more changes' tasks and waits for those running to end.
    pub async fn finish_changes(&self) {
        self.changes.close();
        self.changes.wait().await;
    }

    /// Runs a records query off the async runtime.
    async fn query<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Records) -> Result<R, RecordError> + Send + 'static,
    ) -> Result<R, DeployError> {
        let records = self.records.clone();
        Ok(tokio::task::spawn_blocking(move || f(&records)).await??)
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
            .ok_or(Failure::InvalidName)?;
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
            .map_err(|e| {
                tracing::error!(error = %e, "the render task stopped");
                Failure::RenderLost
            })?
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
                .map_err(|e| e.to_string())?;
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

/// Why a deployment failed: its message is the failed step's text (no server path, no debug
/// dump; the full error of a server-side fault is in the log).
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// The deployment's account, application and repo do not make an application id.
    #[error("invalid application name")]
    InvalidName,
    /// The recorded commit is not a git object id.
    #[error("commit {0:?}: not a commit id")]
    BadCommit(String),
    /// The application's repo, or the commit in it, could not be read.
    #[error("cannot read commit {0} from the application's repo; the server's log has the details")]
    Source(String),
    /// The commit does not pass validation any more (its packages changed since the push): the first error.
    #[error("the commit does not validate any more: {0}")]
    NoLongerValid(String),
    /// Rendering the commit failed.
    #[error("cannot render: {0}")]
    Render(#[source] checks::RenderFailure),
    /// The blocking task that renders stopped (a panic).
    #[error("rendering stopped unexpectedly; the server's log has the details")]
    RenderLost,
    /// The target could not apply, roll out or remove the environment.
    #[error(transparent)]
    Target(#[from] TargetError),
    /// The deployment's record could not be read or written.
    #[error(transparent)]
    Record(#[from] DeployError),
}

/// Reads the commit from the application's repo and renders the environment.
pub fn render_commit(
    repos: &RepoStore,
    packages: &PackageStore,
    settings: &RenderSettings,
    subject: &Subject,
    quarantine: Option<String>,
) -> Result<Rendered, Failure> {
    let id = subject.repo_id().ok_or(Failure::InvalidName)?;
    let unreadable = |e: crate::source::SourceError| {
        tracing::warn!(commit = %subject.commit, error = %e, "cannot read the pushed commit");
        Failure::Source(crate::records::short(&subject.commit).to_owned())
    };
    let repo = crate::source::open_pushed(&repos.path(&id), quarantine.as_deref()).map_err(unreadable)?;
    let commit = git2::Oid::from_str(&subject.commit).map_err(|_| Failure::BadCommit(subject.commit.clone()))?;
    let source = GitCommit { repo: &repo, commit };
    let snapshot = source.snapshot().map_err(unreadable)?;
    let report =
        crate::validation::check_with(&snapshot, &subject.environment, &packages.catalog(), &settings.origin_rules);
    let Some(config) = report.config.clone().filter(|_| report.is_ok()) else {
        let first = report.diagnostics.iter().find(|d| d.is_error()).map(ToString::to_string).unwrap_or_default();
        return Err(Failure::NoLongerValid(first));
    };
    let check_subject = checks::Subject { id: &id, environment: &subject.environment, commit: &subject.commit };
    checks::render(&source, check_subject, &config, packages, settings).map_err(Failure::Render)
}
