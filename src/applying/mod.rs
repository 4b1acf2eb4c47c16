//! Applying: where rendered environments go, and the deployment pipeline that takes them there.
//!
//! A [`Target`] is the edge: *render-only* (the embedded default: commit the manifests to the
//! application's rendered repo) or a cluster. The [`deployer`] runs each deployment through
//! its states (rendering, applying, progressing) against the target, one at a time per
//! environment. Only targets talk to a cluster.

pub mod deployer;
pub mod kube;
pub mod logs;
pub mod memory;
pub mod rendered_repo;

use std::future::Future;
use std::time::Duration;

pub use rendered_repo::{environment_files, RenderedRepos};

use crate::rendering::Rendered;

/// Why a target could not apply, roll out or remove an environment. Each message is what the
/// deployment's failed step says: no server path, no debug dump.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum TargetError {
    /// The deployment's account, application and repo do not make an application id.
    #[error("invalid application name")]
    InvalidName,
    /// No cluster to talk to: no kubeconfig found, or the one given does not read.
    #[error("cluster: {0}")]
    NoCluster(String),
    /// The cluster's API could not be reached, or answered an error status.
    #[error("cluster: {}{answer}", doing.as_ref().map(|d| format!("{d}: ")).unwrap_or_default())]
    Api {
        /// What devpop was doing, when it is more than the step says (`deleting ConfigMap/x`).
        doing: Option<String>,
        /// The API's answer as a sentence: its message, HTTP status and what to do.
        answer: String,
        /// The HTTP status, when the API answered at all (None: it could not be reached).
        status: Option<u16>,
    },
    /// The environment's namespace is still terminating (its branch was deleted just before).
    #[error(
        "cluster: namespace {0} is still being deleted (its branch was deleted): push again once `kubectl get namespace {0}` finds nothing"
    )]
    NamespaceTerminating(String),
    /// The application's rendered repo could not be written: which one, and git's or the file
    /// system's reason (the full error, with its path, is in the server's log).
    #[error("rendered repo of {repo}: {reason}")]
    RenderedRepo { repo: String, reason: String },
    /// The blocking task that writes the rendered repo stopped (a panic).
    #[error("rendered repo: the writer stopped unexpectedly; the server's log has the details")]
    WriterLost,
    /// The cluster refused an object.
    #[error("{object}: {message}")]
    Refused { object: String, message: String },
    /// A workload did not become ready: which one and why.
    #[error("{object}: {reason}")]
    Unhealthy { object: String, reason: String },
}

/// Who and what a target applies for (for records, commit messages and labels).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    pub account: String,
    pub application: String,
    pub repo: String,
    pub environment: String,
    pub commit: String,
    pub deployment: u64,
}

impl Subject {
    pub fn repo_id(&self) -> Option<crate::names::RepoId> {
        crate::names::RepoId::new(&self.account, &self.application, &self.repo).ok()
    }
}

/// What applying changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApplyReport {
    pub applied: usize,
    /// Objects of this environment that the new render no longer has, deleted.
    pub pruned: Vec<String>,
    pub summary: String,
}

/// Where rendered environments are applied.
pub trait Target: Send + Sync + 'static {
    /// A short name for messages (`render-only`, `cluster`, ...).
    fn name(&self) -> &'static str;

    /// Applies every object (server-side apply), then deletes the objects labelled as this
    /// environment's that `rendered` no longer contains.
    fn apply(
        &self,
        subject: &Subject,
        rendered: &Rendered,
    ) -> impl Future<Output = Result<ApplyReport, TargetError>> + Send;

    /// Follows the rollout of the environment's Deployments until all are ready; fails fast,
    /// naming the object and the reason, or at the deadline.
    fn rollout(
        &self,
        subject: &Subject,
        rendered: &Rendered,
        deadline: Duration,
    ) -> impl Future<Output = Result<String, TargetError>> + Send;

    /// Removes the environment (its namespace).
    fn remove(&self, subject: &Subject, namespace: &str) -> impl Future<Output = Result<String, TargetError>> + Send;

    /// Asks the target whether it would accept `rendered`, changing nothing (a server-side
    /// dry run on a cluster). `None` when the target has nothing to check.
    fn dry_run(
        &self,
        subject: &Subject,
        rendered: &Rendered,
    ) -> impl Future<Output = Result<Option<DryRun>, TargetError>> + Send;
}

/// A target's answer to a dry run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DryRun {
    /// One sentence: what the target checked and found.
    pub summary: String,
    /// What would change on the target, object by object, when the target can say (a cluster:
    /// each live object against the object as the API server would store it).
    pub changes: Option<crate::rendering::Diff>,
}

impl DryRun {
    pub fn summary(summary: impl Into<String>) -> Self {
        DryRun { summary: summary.into(), changes: None }
    }
}

/// The render-only target: the rendered repo is the output.
#[derive(Debug, Clone)]
pub struct RenderOnly {
    pub repos: RenderedRepos,
}

impl RenderOnly {
    async fn publish(&self, subject: &Subject, rendered: Option<Rendered>) -> Result<String, TargetError> {
        let repos = self.repos.clone();
        let subject = subject.clone();
        tokio::task::spawn_blocking(move || {
            let id = subject.repo_id().ok_or(TargetError::InvalidName)?;
            repos
                .publish(&id, &subject.environment, &subject.commit, rendered.as_ref())
                .map(|c| match c {
                    Some(c) => format!("rendered repo: commit {}", &c.to_string()[..12]),
                    None => "rendered repo: unchanged".to_owned(),
                })
                .map_err(|e| {
                    tracing::warn!(error = %e, "cannot write the rendered repo");
                    TargetError::RenderedRepo { repo: id.to_string(), reason: e.reason() }
                })
        })
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "the rendered repo's writer stopped");
            TargetError::WriterLost
        })?
    }
}

impl Target for RenderOnly {
    fn name(&self) -> &'static str {
        "render-only"
    }

    async fn apply(&self, subject: &Subject, rendered: &Rendered) -> Result<ApplyReport, TargetError> {
        let summary = self.publish(subject, Some(rendered.clone())).await?;
        Ok(ApplyReport { applied: rendered.objects.len(), pruned: Vec::new(), summary })
    }

    async fn rollout(&self, _: &Subject, _: &Rendered, _: Duration) -> Result<String, TargetError> {
        Ok("render-only target: manifests published, nothing to roll out".to_owned())
    }

    async fn remove(&self, subject: &Subject, _namespace: &str) -> Result<String, TargetError> {
        self.publish(subject, None).await
    }

    async fn dry_run(&self, _: &Subject, _: &Rendered) -> Result<Option<DryRun>, TargetError> {
        Ok(None)
    }
}

/// The targets `devpop serve` can deploy to (`--target`). With a cluster, what was applied is
/// also committed to the rendered repo: the record of what runs, and what `-o dry-run` diffs
/// against.
pub enum AnyTarget {
    RenderOnly(RenderOnly),
    Cluster(kube::KubeCluster, RenderOnly),
}

impl AnyTarget {
    /// The environment's container logs, newest first ([`logs`]).
    pub async fn logs(&self, namespace: &str, query: &logs::LogQuery) -> Result<Vec<logs::LogEntry>, logs::LogsError> {
        match self {
            AnyTarget::Cluster(cluster, _) => cluster.logs(namespace, query).await,
            AnyTarget::RenderOnly(_) => Err(no_logs_here()),
        }
    }

    /// The environment's container logs as they are written ([`logs`]).
    pub async fn follow_logs(
        &self,
        namespace: &str,
        query: &logs::LogQuery,
    ) -> Result<logs::LogStream, logs::LogsError> {
        match self {
            AnyTarget::Cluster(cluster, _) => cluster.follow(namespace, query).await,
            AnyTarget::RenderOnly(_) => Err(no_logs_here()),
        }
    }
}

fn no_logs_here() -> logs::LogsError {
    logs::LogsError::NotHere(
        "the render-only target keeps no logs: they live where the rendered manifests are applied \
         (`kubectl logs -n NAMESPACE -l app.kubernetes.io/managed-by=devpop`), or run devpop with --target cluster"
            .into(),
    )
}

impl Target for AnyTarget {
    fn name(&self) -> &'static str {
        match self {
            AnyTarget::RenderOnly(t) => t.name(),
            AnyTarget::Cluster(t, _) => t.name(),
        }
    }

    async fn apply(&self, subject: &Subject, rendered: &Rendered) -> Result<ApplyReport, TargetError> {
        match self {
            AnyTarget::RenderOnly(t) => t.apply(subject, rendered).await,
            AnyTarget::Cluster(t, published) => {
                let mut report = t.apply(subject, rendered).await?;
                let record = published.apply(subject, rendered).await?;
                report.summary = format!("{}; {}", report.summary, record.summary);
                Ok(report)
            }
        }
    }

    async fn rollout(&self, subject: &Subject, rendered: &Rendered, deadline: Duration) -> Result<String, TargetError> {
        match self {
            AnyTarget::RenderOnly(t) => t.rollout(subject, rendered, deadline).await,
            AnyTarget::Cluster(t, _) => t.rollout(subject, rendered, deadline).await,
        }
    }

    async fn remove(&self, subject: &Subject, namespace: &str) -> Result<String, TargetError> {
        match self {
            AnyTarget::RenderOnly(t) => t.remove(subject, namespace).await,
            AnyTarget::Cluster(t, published) => {
                let message = t.remove(subject, namespace).await?;
                published.remove(subject, namespace).await?;
                Ok(message)
            }
        }
    }

    async fn dry_run(&self, subject: &Subject, rendered: &Rendered) -> Result<Option<DryRun>, TargetError> {
        match self {
            AnyTarget::RenderOnly(t) => t.dry_run(subject, rendered).await,
            AnyTarget::Cluster(t, _) => t.dry_run(subject, rendered).await,
        }
    }
}
