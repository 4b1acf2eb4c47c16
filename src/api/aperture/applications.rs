//! Applications, environments and stacks: `/account/{accountId}/application/...`,
//! `.../environment/...`, `.../stack`, and the server-wide `/stack` and `/proxytemplate`.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use git2::Repository;
use serde::{Deserialize, Serialize};

use super::{
    account_name, application_number, applications_with_ids, blocking, environment_id, find_application, ids_lock,
    is_domain, ok, strict_body, ApiError, Caller, Result, BASE,
};
use crate::api::applications as own;
use crate::api::audit_action;
use crate::names::is_host;
use crate::names::RepoId;
use crate::web::state::AppState;

/// The one stack devpop offers: the application skeleton, an empty proxychain (modules are
/// added by pushing their folders and proxychain entries).
pub const EMPTY_STACK: &str = "empty";

/// Aperture's Application (and ApplicationSummary), with devpop's clone URL.
#[derive(Debug, Serialize)]
pub struct Application {
    pub id: u64,
    pub href: String,
    /// The repo's name (for applications created here: the hostname).
    pub application_name: String,
    pub path_prefix: String,
    pub path_prefixes: Vec<String>,
    /// devpop's own: `git clone` this.
    pub clone_url: String,
}

pub fn application(state: &AppState, n: u64, id: &RepoId) -> Application {
    let base = state.base_url.trim_end_matches('/');
    Application {
        id: n,
        href: format!("{BASE}/account/{}/application/{n}", id.account),
        application_name: id.repo.clone(),
        path_prefix: "/".into(),
        path_prefixes: vec!["/".into()],
        clone_url: format!("{base}{}", id.url_path()),
    }
}

/// The account and application a path names, the application looked up (blocking).
pub(super) fn resolve(state: &AppState, account: &str, application: &str) -> Result<(u64, RepoId)> {
    let account = account_name(account)?;
    let n = application_number(application)?;
    Ok((n, find_application(state, &account, n)?))
}

pub async fn list(State(state): State<AppState>, Path(account): Path<String>) -> Result<Response> {
    let account = account_name(&account)?;
    let apps = blocking(move || {
        Ok(applications_with_ids(&state, Some(&account))?
            .into_iter()
            .map(|(n, id)| application(&state, n, &id))
            .collect::<Vec<_>>())
    })
    .await?;
    Ok(ok(apps))
}

pub async fn get(State(state): State<AppState>, Path((a, b)): Path<(String, String)>) -> Result<Response> {
    Ok(ok(blocking(move || resolve(&state, &a, &b).map(|(n, id)| application(&state, n, &id))).await?))
}

/// Aperture's ApplicationCreateRequest.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateApplication {
    hostname: String,
    origin: Option<String>,
    #[serde(rename = "stackName")]
    stack_name: Option<String>,
}

/// Creates an application: the repo is named after `hostname`, its Production environment
/// forwards to `origin`; the application's id is the account's next free number.
pub async fn create(
    State(state): State<AppState>,
    Caller { principal, peer }: Caller,
    Path(account): Path<String>,
    body: Bytes,
) -> Result<Response> {
    let account = account_name(&account)?;
    let body: CreateApplication = strict_body(&body)?;
    if let Some(stack) = body.stack_name.as_deref().filter(|s| *s != EMPTY_STACK) {
        return Err(ApiError::bad(format!(
            "stackName {stack:?} is not offered here; use {EMPTY_STACK:?} (GET /stack)"
        )));
    }
    let origin = body.origin.ok_or_else(|| {
        ApiError::bad("origin is required: the host name or IP address devpop forwards the application's requests to")
    })?;
    if !is_host(&body.hostname) {
        return Err(ApiError::bad(format!("hostname {:?} is not a host name", body.hostname)));
    }
    let st = state.clone();
    let (n, id) = blocking(move || {
        let _guard = ids_lock().lock().expect("ids lock");
        let next = st
            .repos
            .list()
            .iter()
            .filter(|id| id.account == account)
            .filter_map(|id| id.application.parse::<u64>().ok())
            .filter(|n| *n < super::ALLOCATED_FROM)
            .max()
            .map_or(1, |m| m + 1);
        let id = RepoId::new(&account, &next.to_string(), &body.hostname).map_err(|e| ApiError::bad(e.to_string()))?;
        own::create_repo(&st, &id, &origin)?;
        Ok((next, id))
    })
    .await?;
    let target = format!("{}/{}", id.application, id.repo);
    audit_action(&state, &principal, peer, "application.create", &id.account, &target, "aperture").await;
    Ok(ok(application(&state, n, &id)))
}

pub async fn delete(
    State(state): State<AppState>,
    Caller { principal, peer }: Caller,
    Path((a, b)): Path<(String, String)>,
) -> Result<Response> {
    let st = state.clone();
    let (_, id) = blocking(move || resolve(&st, &a, &b)).await?;
    state.actions().delete_application(&crate::web::author(&principal, peer), &id, "aperture").await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Aperture's DomainSummary.
#[derive(Debug, Serialize)]
pub struct Domain {
    pub name: String,
    /// `devpop` for the host devpop gives every environment, `custom` for the ones added.
    pub mode: String,
}

/// Aperture's EnvironmentSummary.
#[derive(Debug, Serialize)]
pub struct EnvironmentSummary {
    pub id: u64,
    pub href: String,
    pub environment_name: String,
    pub domains: Vec<Domain>,
    pub is_hosted: bool,
    /// devpop's own: the commit the environment is at.
    pub commit: String,
}

/// The environment `env` of `id` at `head`, with the domains its section.config.json names.
pub fn summary(
    state: &AppState,
    n: u64,
    id: &RepoId,
    repo: &Repository,
    env: &str,
    head: git2::Oid,
) -> EnvironmentSummary {
    let ns = crate::rendering::naming::namespace(&state.settings.hook.checks.render.namespace_prefix, id, env);
    let mut domains = vec![Domain {
        name: format!("{ns}.{}", state.settings.hook.checks.render.ingress_domain),
        mode: "devpop".into(),
    }];
    let config = crate::environment_config::read_config(repo, head).unwrap_or_default();
    for d in crate::environment_config::domains_of(&config, env) {
        domains.push(Domain { name: d, mode: "custom".into() });
    }
    EnvironmentSummary {
        id: environment_id(id, env),
        href: format!("{BASE}/account/{}/application/{n}/environment/{env}", id.account),
        environment_name: env.to_owned(),
        domains,
        is_hosted: false,
        commit: head.to_string(),
    }
}

pub async fn environments(State(state): State<AppState>, Path((a, b)): Path<(String, String)>) -> Result<Response> {
    let envs = blocking(move || {
        let (n, id) = resolve(&state, &a, &b)?;
        let repo = Repository::open_bare(state.repos.path(&id))?;
        let branches = crate::web::query::branches(&repo)?;
        Ok(branches.into_iter().map(|(env, head)| summary(&state, n, &id, &repo, &env, head)).collect::<Vec<_>>())
    })
    .await?;
    Ok(ok(envs))
}

/// Runs `f` on the environment a path names (404 for an unknown application or environment).
pub(super) async fn with_environment<T: Send + 'static>(
    state: &AppState,
    (a, b, env): (String, String, String),
    f: impl FnOnce(&AppState, u64, &RepoId, &Repository, &str, git2::Oid) -> Result<T> + Send + 'static,
) -> Result<T> {
    let st = state.clone();
    blocking(move || {
        let (n, id) = resolve(&st, &a, &b)?;
        let repo = Repository::open_bare(st.repos.path(&id))?;
        let head = crate::web::query::environment_head(&repo, &id.account, &id.application, &env)?;
        f(&st, n, &id, &repo, &env, head)
    })
    .await
}

pub async fn environment(
    State(state): State<AppState>,
    Path(names): Path<(String, String, String)>,
) -> Result<Response> {
    let s =
        with_environment(&state, names, |st, n, id, repo, env, head| Ok(summary(st, n, id, repo, env, head))).await?;
    Ok(ok(s))
}

/// Aperture's EnvironmentCreateRequest.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateEnvironment {
    name: String,
    source_environment_name: String,
    domain_name: String,
}

/// Creates an environment as a copy of `source_environment_name` serving `domain_name`:
/// a commit checked like a push, then deployed.
pub async fn create_environment(
    State(state): State<AppState>,
    Caller { principal, peer }: Caller,
    Path((a, b)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response> {
    let body: CreateEnvironment = strict_body(&body)?;
    if !body.name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        || !body.name.chars().all(|c| c.is_ascii_alphanumeric())
    {
        return Err(ApiError::bad(format!("name {:?}: use a letter, then letters and digits", body.name)));
    }
    if !is_domain(&body.domain_name) {
        return Err(ApiError::bad(format!("domain_name {:?} is not a host name", body.domain_name)));
    }
    let st = state.clone();
    let (n, id) = blocking(move || resolve(&st, &a, &b)).await?;
    let domain = body.domain_name;
    let edit = move |env: &mut serde_json::Value| {
        if let Some(o) = env.as_object_mut() {
            o.insert(crate::environment_config::DOMAINS.into(), serde_json::json!([domain]));
        }
    };
    let author = crate::web::author(&principal, peer);
    let name = body.name;
    let (commit, d) =
        state.actions().create_environment(&author, &id, &body.source_environment_name, &name, edit).await?;
    let st = state.clone();
    let s = blocking(move || {
        let repo = Repository::open_bare(st.repos.path(&id))?;
        Ok(summary(&st, n, &id, &repo, &name, commit))
    })
    .await?;
    let mut r = ok(s);
    r.headers_mut().insert(super::changes::DEPLOYMENT_HEADER, d.id.into());
    Ok(r)
}

/// Aperture's Proxy (one proxychain entry) and its ProxyType.
#[derive(Debug, Serialize)]
struct Proxy {
    href: String,
    name: String,
    /// The container image the module runs (the package reference when it is not installed).
    image: String,
    #[serde(rename = "proxyType")]
    proxy_type: ProxyType,
    /// devpop's own: the package (`module:version`).
    package: String,
}

#[derive(Debug, Serialize)]
struct ProxyType {
    name: String,
    prefix: String,
}

pub async fn stack(State(state): State<AppState>, Path(names): Path<(String, String, String)>) -> Result<Response> {
    let proxies = with_environment(&state, names, |st, n, id, repo, env, head| {
        let entries = crate::web::query::stack_of(st, repo, head)?;
        Ok(entries
            .into_iter()
            .map(|e| {
                let module = e.package.split(':').next().unwrap_or("").to_owned();
                Proxy {
                    href: format!("{BASE}/account/{}/application/{n}/environment/{env}/proxy/{}", id.account, e.name),
                    image: e.image.unwrap_or_else(|| e.package.clone()),
                    proxy_type: ProxyType { prefix: e.name.clone(), name: module },
                    name: e.name,
                    package: e.package,
                }
            })
            .collect::<Vec<_>>())
    })
    .await?;
    Ok(ok(proxies))
}

/// Aperture's Stack.
#[derive(Debug, Serialize)]
struct Stack {
    name: &'static str,
    label: &'static str,
    description: &'static str,
}

pub async fn stacks() -> Response {
    ok([Stack {
        name: EMPTY_STACK,
        label: "Empty proxychain",
        description: "A Production environment forwarding straight to the origin; add modules by pushing them",
    }])
}

/// Aperture's ProxyTemplate: one installed package.
#[derive(Debug, Serialize)]
struct ProxyTemplate {
    /// What a proxychain entry's `image` names (`module:version`).
    name: String,
    label: String,
    description: String,
    /// The container image the package runs.
    image: String,
}

pub async fn proxy_templates(State(state): State<AppState>) -> Result<Response> {
    let templates = blocking(move || {
        let mut out = Vec::new();
        for package in state.packages.catalog().all() {
            let Ok(installed) = state.packages.get(&package) else { continue };
            let module = package.split(':').next().unwrap_or("").to_owned();
            out.push(ProxyTemplate {
                label: module,
                description: format!("devpop package {package}"),
                image: installed.descriptor.metadata.image,
                name: package,
            });
        }
        Ok(out)
    })
    .await?;
    Ok(ok(templates))
}

/// `?proxyTemplateName=module:version`.
#[derive(Debug, Deserialize)]
pub struct InitialStateQuery {
    #[serde(rename = "proxyTemplateName")]
    proxy_template_name: String,
}

/// A proxy template's initial state: the package's default `proxy_config/` folder as a
/// `.tar.gz`, the starter folder for a module of that package.
pub async fn initial_state(State(state): State<AppState>, Query(q): Query<InitialStateQuery>) -> Result<Response> {
    let name = q.proxy_template_name;
    let archive = blocking(move || {
        state.packages.get(&name).map_err(|_| {
            ApiError::not_found(format!("no proxy template {name:?}; GET /api/v1/proxytemplate lists them"))
        })?;
        let files = state.packages.starter_files(&name)?;
        crate::packages::starter_archive(&files).map_err(crate::web::error::internal)
    })
    .await?;
    let headers = [
        (axum::http::header::CONTENT_TYPE, "application/gzip"),
        (axum::http::header::CONTENT_DISPOSITION, "attachment; filename=\"proxy_config.tar.gz\""),
    ];
    Ok((headers, archive).into_response())
}
