//! The deployment pipeline: a queue per environment and a worker that takes each deployment
//! through rendering -> applying -> progressing -> ready | failed against the [`Target`].
//!
//! - Deployments of one environment run one at a time, in push order; a newer push supersedes
//!   one still waiting. Different environments run in parallel, bounded by a semaphore.
//! - Every step is recorded ([`Records`]) before it is acted on, so a restart resumes what was
//!   queued or under way ([`Deployer::resume`]); applying is idempotent (server-side apply),
//!   so starting a deployment's pipeline again is safe.
//! - Watchers get every change of every deployment on a broadcast channel.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{broadcast, Semaphore};

use super::{Subject, Target, TargetError};
use crate::checks;
use crate::names::RepoId;
use crate::packages::PackageStore;
use crate::records::{Action, Deployment, NewDeployment, RecordError, Records, State};
use crate::rendering::{self, RenderSettings, Rendered};
use crate::repos::RepoStore;
use crate::source::{GitCommit, RepoSource};

/// An environment: account, application, repo, environment.
pub type EnvKey = (String, String, String, String);

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
    /// Where landed pushes are recorded for the audit log.
    pub audit: Option<Arc<crate::records::audit::AuditLog>>,
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
    holds: Mutex<HashMap<String, Vec<tokio::sync::OwnedMutexGuard<()>>>>,
    /// Deployments a `-o wait` push in progress made before git moved its branch, by push.
    waited: Mutex<HashMap<String, Vec<(u64, NewDeployment)>>>,
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
            audit: None,
            queues: Mutex::new(HashMap::new()),
            permits: Arc::new(Semaphore::new(parallel.max(1))),
            events: broadcast::channel(1024).0,
            reservations: Mutex::new(HashMap::new()),
            prerendered: Mutex::new(HashMap::new()),
            env_locks: Mutex::new(HashMap::new()),
            holds: Mutex::new(HashMap::new()),
            waited: Mutex::new(HashMap::new()),
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
        let records = self.records.clone();
        let d = tokio::task::spawn_blocking(move || f(&records))
            .await
            .map_err(|e| DeployError::Internal(e.to_string()))??;
        let _ = self.events.send(d.clone());
        Ok(d)
    }

    /// Records a new deployment and queues it.
    pub async fn submit(self: &Arc<Self>, request: NewDeployment) -> Result<Deployment, DeployError> {
        RepoId::new(&request.account, &request.application, &request.repo)?;
        let d = self.record(move |r| r.create(request)).await?;
        self.enqueue(&d).await;
        Ok(d)
    }

    /// Announces the deployment a push will make (called from its pre-receive check): an id,
    /// nothing recorded yet. `rendered` is the checks' render of the commit, which the
    /// deployment then uses instead of rendering it again.
    pub fn reserve(&self, push: &str, request: NewDeployment, rendered: Option<Rendered>) -> Result<u64, DeployError> {
        RepoId::new(&request.account, &request.application, &request.repo)?;
        let id = self.records.reserve_id();
        self.reservations
            .lock()
            .expect("reservations lock")
            .entry(push.to_owned())
            .or_default()
            .push((id, request, rendered));
        Ok(id)
    }

    /// Holds the environment `key` for the rest of the push `push` (until
    /// [`Deployer::push_finished`]), waiting while another push holds it; `on_wait` is called
    /// once before waiting. So pushes of one environment pass their verdict one at a time, each
    /// seeing the branch the previous one left (and `-o wait` ones deploy one at a time).
    pub async fn hold(&self, push: &str, key: EnvKey, on_wait: impl FnOnce()) {
        let lock = self.env_locks.lock().expect("environment locks").entry(key).or_default().clone();
        let guard = match lock.clone().try_lock_owned() {
            Ok(guard) => guard,
            Err(_) => {
                on_wait();
                lock.lock_owned().await
            }
        };
        self.holds.lock().expect("holds lock").entry(push.to_owned()).or_default().push(guard);
    }

    /// `-o wait`: records and queues a deployment of a commit still in quarantine, made by the
    /// push `push`. If git then does not move the branch to it, [`Deployer::push_finished`] puts
    /// the environment back to what the branch says.
    pub async fn submit_waited(
        self: &Arc<Self>,
        push: &str,
        request: NewDeployment,
    ) -> Result<Deployment, DeployError> {
        let d = self.submit(request.clone()).await?;
        self.waited.lock().expect("waited lock").entry(push.to_owned()).or_default().push((d.id, request));
        Ok(d)
    }

    /// The push ended. If git succeeded, records and queues each announced deployment whose
    /// branch now is where the push put it (the rest never happened: nothing is recorded).
    /// A `-o wait` deployment that became ready while git then did not move its branch (git
    /// refused the ref, or died) is undone: the branch's commit is deployed again. Then the
    /// push's environment locks are released.
    pub async fn push_finished(self: &Arc<Self>, push: &str, git_succeeded: bool) {
        let waited = self.waited.lock().expect("waited lock").remove(push).unwrap_or_default();
        for (id, request) in waited {
            if let Err(e) = self.undo_if_refused(push, id, request).await {
                tracing::error!(deployment = id, error = %e, "cannot restore an environment after a refused push");
            }
        }
        drop(self.holds.lock().expect("holds lock").remove(push));
        let reserved = self.reservations.lock().expect("reservations lock").remove(push).unwrap_or_default();
        if !git_succeeded {
            return;
        }
        for (id, request, rendered) in reserved {
            let repos = self.repos.clone();
            let r = request.clone();
            let landed = tokio::task::spawn_blocking(move || branch_is_at(&repos, &r)).await.unwrap_or(false);
            if !landed {
                tracing::info!(deployment = id, environment = %request.environment, "the push did not move the branch; no deployment");
                continue;
            }
            if let Some(audit) = &self.audit {
                let (who, from) = match request.pusher.rsplit_once('@') {
                    Some((who, from)) => (who.to_owned(), Some(from.to_owned())),
                    None => (request.pusher.clone(), None),
                };
                let action = if request.action == Action::Delete { "branch.delete" } else { "push" };
                let target = format!("{}/{}/{}", request.application, request.repo, request.environment);
                audit.record(
                    &who,
                    from,
                    action,
                    &request.account,
                    &target,
                    &format!("commit {} (deployment {id})", crate::records::short(&request.commit)),
                );
            }
            if let Some(rendered) = rendered {
                let mut prerendered = self.prerendered.lock().expect("prerendered lock");
                if prerendered.len() >= MAX_PRERENDERED {
                    prerendered.clear();
                }
                prerendered.insert(id, rendered);
            }
            match self.record(move |r| r.create_as(Some(id), request)).await {
                Ok(d) => self.enqueue(&d).await,
                Err(e) => tracing::error!(deployment = id, error = %e, "cannot record a deployment"),
            }
        }
    }

    /// The `-o wait` deployment `id` of `push` is ready, but git did not move its branch: deploys
    /// what the branch says (its commit, or removal when the branch does not exist).
    async fn undo_if_refused(self: &Arc<Self>, push: &str, id: u64, request: NewDeployment) -> Result<(), DeployError> {
        let repos = self.repos.clone();
        let r = request.clone();
        let (landed, head) = tokio::task::spawn_blocking(move || (branch_is_at(&repos, &r), branch_head(&repos, &r)))
            .await
            .map_err(|e| DeployError::Internal(e.to_string()))?;
        let ready = self.records.get(id).is_some_and(|d| d.state == State::Ready);
        if landed || !ready {
            // Landed: nothing to undo. Not ready: the push was refused and a failed deployment
            // has already been followed by a restore.
            return Ok(());
        }
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

    /// At start-up: queues again every deployment that had not finished.
    pub async fn resume(self: &Arc<Self>) -> Result<usize, DeployError> {
        let records = self.records.clone();
        let unfinished = tokio::task::spawn_blocking(move || records.unfinished())
            .await
            .map_err(|e| DeployError::Internal(e.to_string()))?;
        for d in &unfinished {
            let (id, state) = (d.id, d.state);
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
        let d = self.records.get(id).ok_or(RecordError::NotFound(id))?;
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
                let failed = self.record(move |r| r.transition(id, State::Failed, message)).await?;
                if failed.request.quarantine.is_some() {
                    self.restore_after(&failed).await?;
                }
                failed
            }
        };
        Ok(())
    }

    /// A `-o wait` deployment failed, so its push is refused and its branch does not move: put
    /// the environment back to what its branch says, the last deployment that became ready.
    async fn restore_after(&self, failed: &Deployment) -> Result<(), DeployError> {
        let key = failed.environment_key();
        let records = self.records.clone();
        let last = tokio::task::spawn_blocking(move || records.last_ready(&key))
            .await
            .map_err(|e| DeployError::Internal(e.to_string()))?;
        let Some(last) = last else { return Ok(()) };
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
            None => self.render(subject, BTreeMap::new()).await?,
        };
        let ns = rendered.namespace.clone();
        self.record(move |r| r.set_namespace(id, &ns)).await?;
        let message = format!("applying {} objects ({})", rendered.objects.len(), self.target.name());
        self.record(move |r| r.transition(id, State::Applying, message)).await?;
        let ips = self.target.prepare(subject, &rendered).await?;
        // With the Services' ClusterIPs known, render again so each next-hop is wired.
        let rendered = if ips.is_empty() { rendered } else { self.render(subject, ips).await? };
        let report = self.target.apply(subject, &rendered).await?;
        let summary = report.summary.clone();
        self.record(move |r| r.note(id, summary)).await?;
        if !report.pruned.is_empty() {
            let pruned = format!("pruned: {}", report.pruned.join(", "));
            self.record(move |r| r.note(id, pruned)).await?;
        }
        self.record(move |r| r.transition(id, State::Progressing, "waiting for the rollout")).await?;
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
    async fn render(&self, subject: &Subject, hop_ips: BTreeMap<String, String>) -> Result<Rendered, Failure> {
        let (repos, packages, settings, subject) =
            (self.repos.clone(), self.packages.clone(), self.render.clone(), subject.clone());
        let quarantine = self.records.get(subject.deployment).and_then(|d| d.request.quarantine);
        tokio::task::spawn_blocking(move || render_commit(&repos, &packages, &settings, &subject, &hop_ips, quarantine))
            .await
            .map_err(|e| Failure(e.to_string()))?
    }

    /// Renders a commit (from the quarantine, for a push still in progress) and asks the target
    /// whether it would accept it; records nothing.
    pub async fn dry_run(&self, request: NewDeployment) -> Result<Option<String>, String> {
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
        let rendered = tokio::task::spawn_blocking(move || {
            render_commit(&repos, &packages, &settings, &s, &BTreeMap::new(), request.quarantine)
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.0)?;
        self.target.dry_run(&subject, &rendered).await.map_err(|e| e.to_string())
    }

    /// Waits until deployment `id` reaches a final state.
    pub async fn wait(&self, id: u64) -> Option<Deployment> {
        let mut rx = self.subscribe();
        loop {
            let d = self.records.get(id)?;
            if d.state.is_terminal() {
                return Some(d);
            }
            match rx.recv().await {
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return self.records.get(id),
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
    hop_ips: &BTreeMap<String, String>,
    quarantine: Option<String>,
) -> Result<Rendered, Failure> {
    let id = subject.repo_id().ok_or_else(|| Failure("invalid application name".into()))?;
    let repo =
        crate::source::open_pushed(&repos.path(&id), quarantine.as_deref()).map_err(|e| Failure(e.to_string()))?;
    let commit =
        git2::Oid::from_str(&subject.commit).map_err(|e| Failure(format!("commit {}: {e}", subject.commit)))?;
    let source = GitCommit { repo: &repo, commit };
    let snapshot = source.snapshot().map_err(|e| Failure(e.to_string()))?;
    let report = crate::validation::check(&snapshot, &subject.environment, &packages.catalog());
    let Some(config) = report.config.clone().filter(|_| report.is_ok()) else {
        let first = report.diagnostics.iter().find(|d| d.is_error()).map(ToString::to_string).unwrap_or_default();
        return Err(Failure(format!("the commit does not validate any more: {first}")));
    };
    let check_subject = checks::Subject { id: &id, environment: &subject.environment, commit: &subject.commit };
    checks::render(&source, check_subject, &config, packages, settings, hop_ips)
        .map_err(|e| Failure(format!("cannot render: {e}")))
}
