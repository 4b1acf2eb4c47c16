//! The query layer: what the API and the console both read (applications, environments,
//! stacks, deployments, packages), as the views they show. Handlers call these; neither
//! calls the other's handlers.

use git2::{Oid, Repository};
use serde::Serialize;

use super::error::HttpError;
use super::state::AppState;
use crate::auth::Principal;
use crate::names::{is_branch_name, RepoId};
use crate::packages::PackageStore;
use crate::records::Deployment;
use crate::source::{GitCommit, RepoSource};
use crate::validation::config;

#[derive(Debug, Serialize)]
pub struct Application {
    pub account: String,
    pub application: String,
    pub repo: String,
    /// `git clone` / `git remote add developer-pop` this.
    pub clone_url: String,
    /// The rendered manifests (read-only git).
    pub rendered_url: String,
    pub environments: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct Environment {
    pub name: String,
    /// The commit the branch is at.
    pub commit: String,
    pub namespace: String,
    /// The newest deployment of the environment, if any.
    pub last_deployment: Option<Deployment>,
    /// The commit of the environment's last ready deployment (what it runs), if any.
    pub deployed_commit: Option<String>,
    /// The branch is not at the deployed commit (a deployment under way, a failed one, or a
    /// branch moved without one: `POST /api/v1/reconcile` deploys it).
    pub branch_differs: bool,
}

#[derive(Debug, Serialize)]
pub struct StackEntry {
    /// `proxychain[].name`.
    pub name: String,
    /// The package (`module:version`).
    pub package: String,
    /// The container image the package runs; `None` when the package is not installed.
    pub image: Option<String>,
}

/// The application `account/application` (its repo found in the data dir), or 400 for a bad
/// name, 404 for none. Reads a folder: off the async threads.
pub async fn application_id(state: &AppState, account: &str, application: &str) -> Result<RepoId, HttpError> {
    let (st, account, application) = (state.clone(), account.to_owned(), application.to_owned());
    blocking(move || find_application(&st, &account, &application)).await
}

/// [`application_id`] for a caller already on a blocking thread.
pub fn find_application(state: &AppState, account: &str, application: &str) -> Result<RepoId, HttpError> {
    // Validate the names first: they become paths.
    RepoId::new(account, application, "x").map_err(HttpError::from)?;
    let repo = state
        .repos
        .application_repo(account, application)
        .ok_or_else(|| HttpError::not_found(format!("no application {application} in account {account}")))?;
    RepoId::new(account, application, &repo).map_err(HttpError::from)
}

pub use crate::lifecycle::branches;

pub fn describe(state: &AppState, id: &RepoId) -> Result<Application, HttpError> {
    let repo = Repository::open_bare(state.repos.path(id))?;
    let base = state.base_url.trim_end_matches('/');
    Ok(Application {
        account: id.account.clone(),
        application: id.application.clone(),
        repo: id.repo.clone(),
        clone_url: format!("{base}{}", id.url_path()),
        rendered_url: format!("{base}/rendered{}", id.url_path()),
        environments: branches(&repo)?.into_iter().map(|(n, _)| n).collect(),
    })
}

/// An environment as the API and the console show it. Blocking (records queries): call from `blocking`.
pub fn environment_of(state: &AppState, id: &RepoId, name: &str, head: Oid) -> Environment {
    let key = (id.account.clone(), id.application.clone(), id.repo.clone(), name.to_owned());
    let records = state.deployer.records();
    let last_deployment = records.newest(&key).unwrap_or_else(|e| {
        tracing::error!(error = %e, "cannot read deployments");
        None
    });
    let deployed_commit = records.last_ready(&key).ok().flatten().map(|d| d.request.commit);
    Environment {
        name: name.to_owned(),
        commit: head.to_string(),
        namespace: crate::rendering::naming::namespace(&state.settings.hook.checks.render.namespace_prefix, id, name),
        last_deployment,
        branch_differs: deployed_commit.as_deref() != Some(&head.to_string()),
        deployed_commit,
    }
}

/// The branch an environment is, or 404.
pub fn environment_head(repo: &Repository, account: &str, application: &str, env: &str) -> Result<Oid, HttpError> {
    if !is_branch_name(env) {
        return Err(HttpError::bad_request("invalid_name", format!("{env:?} is not an environment name")));
    }
    repo.find_reference(&format!("refs/heads/{env}"))
        .ok()
        .and_then(|r| r.target())
        .ok_or_else(|| HttpError::not_found(format!("application {account}/{application} has no environment {env}")))
}

/// Runs `f` on an environment's branch (its repo and head commit), off the async runtime;
/// 404 for an unknown application or environment.
pub async fn with_environment<T: Send + 'static>(
    state: &AppState,
    (account, application, env): (String, String, String),
    f: impl FnOnce(&AppState, &RepoId, &Repository, &str, Oid) -> Result<T, HttpError> + Send + 'static,
) -> Result<T, HttpError> {
    let st = state.clone();
    blocking(move || {
        let id = find_application(&st, &account, &application)?;
        let repo = Repository::open_bare(st.repos.path(&id))?;
        let head = environment_head(&repo, &account, &application, &env)?;
        f(&st, &id, &repo, &env, head)
    })
    .await
}

/// The proxychain of the commit `head`, with each module's package and image.
pub fn stack_of(state: &AppState, repo: &Repository, head: Oid) -> Result<Vec<StackEntry>, HttpError> {
    let snapshot = GitCommit { repo, commit: head }.snapshot()?;
    let crate::validation::ConfigFile::Present(text) = snapshot.config else {
        return Ok(Vec::new());
    };
    let (cfg, _) = config::parse(&text);
    let packages = crate::packages::PackageStore::new(&state.settings.data_dir);
    Ok(cfg
        .map(|c| c.proxychain)
        .unwrap_or_default()
        .into_iter()
        .map(|e| StackEntry {
            image: packages.get(&e.image).ok().map(|p| p.descriptor.metadata.image),
            name: e.name,
            package: e.image,
        })
        .collect())
}

/// Runs blocking work (libgit2, the filesystem) off the async runtime.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, HttpError> + Send + 'static,
) -> Result<T, HttpError> {
    tokio::task::spawn_blocking(f).await.map_err(HttpError::from)?
}

/// The deployment, if it exists and the principal may see it (404 otherwise: another
/// account's deployments are not revealed).
pub async fn find(state: &AppState, principal: &Principal, id: u64) -> Result<Deployment, HttpError> {
    let records = state.deployer.records().clone();
    blocking(move || records.find(id).map_err(HttpError::from))
        .await?
        .filter(|d| principal.may_read(&d.request.account))
        .ok_or_else(|| HttpError::not_found(format!("no deployment {id}")))
}

#[derive(Debug, Serialize)]
pub struct Package {
    /// `module:version`, what proxychain[].image names.
    pub name: String,
    pub module: String,
    pub version: String,
    /// The container image it runs.
    pub image: String,
}

pub fn package(store: &PackageStore, name: &str) -> Option<Package> {
    let p = store.get(name).ok()?;
    Some(Package {
        name: name.to_owned(),
        module: p.descriptor.module().to_owned(),
        version: p.descriptor.version().to_owned(),
        image: p.descriptor.metadata.image.clone(),
    })
}
