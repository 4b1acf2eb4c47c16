//! Accounts, applications and their environments (branches), each environment's stack and
//! config: what a team does from the console or a script instead of the CLI.

use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use axum::Json;
use git2::Repository;
use serde::{Deserialize, Serialize};

use super::{audit_action, page, ApiJson, Page, PageQuery};
use crate::auth::Principal;
use crate::names::is_branch_name;
use crate::names::RepoId;
use crate::records::Deployment;
use crate::source::{GitCommit, RepoSource};
use crate::web::error::HttpError;
use crate::web::query::{
    application_id, blocking, branches, describe, environment_of, stack_of, with_environment, Application, Environment,
    StackEntry,
};
use crate::web::state::AppState;

#[derive(Debug, Serialize)]
pub struct Account {
    pub account: String,
    pub applications: usize,
}

pub async fn list_accounts(
    State(state): State<AppState>,
    Query(q): Query<PageQuery>,
) -> Result<Json<Page<Account>>, HttpError> {
    let repos = state.repos.clone();
    let ids = blocking(move || Ok(repos.list())).await?;
    let mut accounts: Vec<Account> = Vec::new();
    for id in ids {
        match accounts.last_mut() {
            Some(a) if a.account == id.account => a.applications += 1,
            _ => accounts.push(Account { account: id.account, applications: 1 }),
        }
    }
    Ok(Json(page(accounts, &q)))
}

pub async fn list_applications(
    State(state): State<AppState>,
    Path(account): Path<String>,
    Query(q): Query<PageQuery>,
) -> Result<Json<Page<Application>>, HttpError> {
    RepoId::new(&account, "x", "x").map_err(HttpError::from)?;
    let st = state.clone();
    let apps = blocking(move || {
        st.repos.list().into_iter().filter(|id| id.account == account).map(|id| describe(&st, &id)).collect()
    })
    .await?;
    Ok(Json(page(apps, &q)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateApplication {
    pub application: String,
    /// The repo name (defaults to the application id).
    #[serde(default)]
    pub repo: Option<String>,
    /// Production's origin host.
    pub origin: String,
}

pub async fn create_application(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    Path(account): Path<String>,
    ApiJson(body): ApiJson<CreateApplication>,
) -> Result<(StatusCode, Json<Application>), HttpError> {
    let repo = body.repo.clone().unwrap_or_else(|| body.application.clone());
    let id = RepoId::new(&account, &body.application, &repo).map_err(HttpError::from)?;
    let st = state.clone();
    let app = blocking(move || {
        create_repo(&st, &id, &body.origin)?;
        describe(&st, &id)
    })
    .await?;
    audit_action(
        &state,
        &principal,
        peer,
        "application.create",
        &app.account,
        &format!("{}/{}", app.application, app.repo),
        "",
    )
    .await;
    Ok((StatusCode::CREATED, Json(app)))
}

/// Creates an application's repo (its first environment, `Production`, with `origin`) and
/// prepares its rendered repo.
pub(crate) fn create_repo(st: &AppState, id: &RepoId, origin: &str) -> Result<(), HttpError> {
    st.repos.create(id, origin)?;
    Ok(st.rendered.prepare(id)?)
}

pub async fn get_application(
    State(state): State<AppState>,
    Path((account, application)): Path<(String, String)>,
) -> Result<Json<Application>, HttpError> {
    let id = application_id(&state, &account, &application).await?;
    let st = state.clone();
    Ok(Json(blocking(move || describe(&st, &id)).await?))
}

/// Deletes the application: each environment is removed (a deployment per environment), then
/// the repo.
pub async fn delete_application(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    Path((account, application)): Path<(String, String)>,
) -> Result<StatusCode, HttpError> {
    let id = application_id(&state, &account, &application).await?;
    state.actions().delete_application(&crate::web::author(&principal, peer), &id, "").await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn list_environments(
    State(state): State<AppState>,
    Path((account, application)): Path<(String, String)>,
    Query(q): Query<PageQuery>,
) -> Result<Json<Page<Environment>>, HttpError> {
    let id = application_id(&state, &account, &application).await?;
    let st = state.clone();
    let envs = blocking(move || {
        let repo = Repository::open_bare(st.repos.path(&id))?;
        Ok(branches(&repo)?.into_iter().map(|(n, h)| environment_of(&st, &id, &n, h)).collect())
    })
    .await?;
    Ok(Json(page(envs, &q)))
}

pub async fn get_environment(
    State(state): State<AppState>,
    Path(names): Path<(String, String, String)>,
) -> Result<Json<Environment>, HttpError> {
    Ok(Json(with_environment(&state, names, |st, id, _, env, head| Ok(environment_of(st, id, env, head))).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateEnvironment {
    pub name: String,
    /// The environment to copy (its branch and its settings in section.config.json).
    pub source: String,
}

#[derive(Debug, Serialize)]
pub struct CreatedEnvironment {
    #[serde(flatten)]
    pub environment: Environment,
    /// The deployment that creates it.
    pub deployment: u64,
}

/// Creates an environment from a source one: a branch whose first commit copies the source's
/// settings under the new name in section.config.json. Checked like a push before it exists.
pub async fn create_environment(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    Path((account, application)): Path<(String, String)>,
    ApiJson(body): ApiJson<CreateEnvironment>,
) -> Result<(StatusCode, Json<CreatedEnvironment>), HttpError> {
    let id = application_id(&state, &account, &application).await?;
    if !is_branch_name(&body.name) {
        return Err(HttpError::bad_request(
            "invalid_name",
            format!("{:?} is not a usable environment (branch) name", body.name),
        ));
    }
    let author = crate::web::author(&principal, peer);
    let created = state.actions().create_environment(&author, &id, &body.source, &body.name, |_| {}).await;
    let (commit, d) = created.map_err(|e| match e {
        // This API's answer for a new environment the checks refuse (Aperture's is a 400).
        crate::edits::EditError::Refused(lines) => HttpError::unprocessable("invalid_environment", lines.join("\n")),
        e => e.into(),
    })?;
    let name = body.name;
    let (st, rid) = (state.clone(), id.clone());
    let environment = blocking(move || Ok(environment_of(&st, &rid, &name, commit))).await?;
    Ok((StatusCode::CREATED, Json(CreatedEnvironment { environment, deployment: d.id })))
}

/// Deletes an environment: its branch, and (a deployment) its namespace.
pub async fn delete_environment(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    Path((account, application, env)): Path<(String, String, String)>,
) -> Result<(StatusCode, Json<serde_json::Value>), HttpError> {
    let id = application_id(&state, &account, &application).await?;
    let d = state.actions().delete_environment(&crate::web::author(&principal, peer), &id, &env).await?;
    Ok((StatusCode::ACCEPTED, Json(serde_json::json!({ "deployment": d.id }))))
}

/// The environment's proxychain with each module's package and image.
pub async fn get_stack(
    State(state): State<AppState>,
    Path(names): Path<(String, String, String)>,
) -> Result<Json<Vec<StackEntry>>, HttpError> {
    Ok(Json(with_environment(&state, names, |st, _, repo, _, head| stack_of(st, repo, head)).await?))
}

/// The environment's current section.config.json, as committed.
pub async fn get_config(
    State(state): State<AppState>,
    Path(names): Path<(String, String, String)>,
) -> Result<Response, HttpError> {
    let text = with_environment(&state, names, |_, _, repo, _, head| {
        match (GitCommit { repo, commit: head }).snapshot()?.config {
            crate::validation::ConfigFile::Present(text) => Ok(text),
            _ => Err(HttpError::not_found("the environment's commit has no section.config.json")),
        }
    })
    .await?;
    Ok(([(header::CONTENT_TYPE, "application/json")], text).into_response())
}

pub async fn environment_deployments(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path((account, application, env)): Path<(String, String, String)>,
    super::ApiQuery(q): super::ApiQuery<PageQuery>,
) -> Result<Json<Page<Deployment>>, HttpError> {
    let id = application_id(&state, &account, &application).await?;
    let filter = crate::records::Filter::environment(&(id.account, id.application, id.repo, env));
    Ok(Json(super::deployments::page_of(&state, &principal, filter, &q).await?))
}
