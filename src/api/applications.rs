//! Accounts, applications and their environments (branches), each environment's stack and
//! config: what a team does from the console or a script instead of the CLI.

use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use axum::Json;
use git2::{Oid, Repository};
use serde::{Deserialize, Serialize};

use super::{api_err, audit_action, blocking, page, ApiJson, Page, PageQuery};
use crate::auth::Principal;
use crate::http_error::HttpError;
use crate::names::RepoId;
use crate::records::{Action, Deployment, NewDeployment};
use crate::server::AppState;
use crate::source::{GitCommit, RepoSource};
use crate::validation::config::{self, is_branch_name};

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

pub(crate) fn application_id(state: &AppState, account: &str, application: &str) -> Result<RepoId, HttpError> {
    // Validate the names first: they become paths.
    RepoId::new(account, application, "x")
        .map_err(|e| api_err(StatusCode::BAD_REQUEST, "invalid_name", e.to_string()))?;
    let repo = state.repos.application_repo(account, application).ok_or_else(|| {
        api_err(StatusCode::NOT_FOUND, "not_found", format!("no application {application} in account {account}"))
    })?;
    RepoId::new(account, application, &repo)
        .map_err(|e| api_err(StatusCode::BAD_REQUEST, "invalid_name", e.to_string()))
}

pub(crate) fn branches(repo: &Repository) -> Result<Vec<(String, Oid)>, git2::Error> {
    let mut out = Vec::new();
    for b in repo.branches(Some(git2::BranchType::Local))? {
        let (b, _) = b?;
        if let (Ok(Some(name)), Some(target)) = (b.name(), b.get().target()) {
            out.push((name.to_owned(), target));
        }
    }
    out.sort();
    Ok(out)
}

pub(crate) fn describe(state: &AppState, id: &RepoId) -> Result<Application, HttpError> {
    let repo = Repository::open_bare(state.repos.path(id)).map_err(internal)?;
    let base = state.base_url.trim_end_matches('/');
    Ok(Application {
        account: id.account.clone(),
        application: id.application.clone(),
        repo: id.repo.clone(),
        clone_url: format!("{base}{}", id.url_path()),
        rendered_url: format!("{base}/rendered{}", id.url_path()),
        environments: branches(&repo).map_err(internal)?.into_iter().map(|(n, _)| n).collect(),
    })
}

pub(crate) fn internal(e: impl std::fmt::Display) -> HttpError {
    api_err(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
}

pub async fn list_applications(
    State(state): State<AppState>,
    Path(account): Path<String>,
    Query(q): Query<PageQuery>,
) -> Result<Json<Page<Application>>, HttpError> {
    RepoId::new(&account, "x", "x").map_err(|e| api_err(StatusCode::BAD_REQUEST, "invalid_name", e.to_string()))?;
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
    let id = RepoId::new(&account, &body.application, &repo)
        .map_err(|e| api_err(StatusCode::BAD_REQUEST, "invalid_name", e.to_string()))?;
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
    );
    Ok((StatusCode::CREATED, Json(app)))
}

/// Creates an application's repo (its first environment, `Production`, with `origin`) and
/// prepares its rendered repo.
pub(crate) fn create_repo(st: &AppState, id: &RepoId, origin: &str) -> Result<(), HttpError> {
    st.repos.create(id, origin).map_err(|e| match e {
        crate::repos::RepoError::Exists(_) | crate::repos::RepoError::ApplicationHasRepo { .. } => {
            api_err(StatusCode::CONFLICT, "exists", e.to_string())
        }
        crate::repos::RepoError::BadOrigin(_) => api_err(StatusCode::BAD_REQUEST, "invalid_origin", e.to_string()),
        e => internal(e),
    })?;
    st.rendered.prepare(id).map_err(internal)
}

pub async fn get_application(
    State(state): State<AppState>,
    Path((account, application)): Path<(String, String)>,
) -> Result<Json<Application>, HttpError> {
    let id = application_id(&state, &account, &application)?;
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
    let id = application_id(&state, &account, &application)?;
    remove_application(&state, &id, &super::actor(&principal)).await?;
    audit_action(
        &state,
        &principal,
        peer,
        "application.delete",
        &id.account,
        &format!("{}/{}", id.application, id.repo),
        "",
    );
    Ok(StatusCode::NO_CONTENT)
}

/// Removes an application: each environment (a deployment each, by `pusher`), then the repo.
pub(crate) async fn remove_application(state: &AppState, id: &RepoId, pusher: &str) -> Result<(), HttpError> {
    let st = state.clone();
    let rid = id.clone();
    let envs = blocking(move || {
        let repo = Repository::open_bare(st.repos.path(&rid)).map_err(internal)?;
        branches(&repo).map_err(internal)
    })
    .await?;
    for (env, commit) in envs {
        state.deployer.submit(request(id, &env, commit.to_string(), Action::Delete, pusher)).await?;
    }
    let path = state.repos.path(id);
    blocking(move || std::fs::remove_dir_all(&path).map_err(internal)).await
}

pub(crate) fn request(id: &RepoId, env: &str, commit: String, action: Action, pusher: &str) -> NewDeployment {
    NewDeployment {
        account: id.account.clone(),
        application: id.application.clone(),
        repo: id.repo.clone(),
        environment: env.to_owned(),
        commit,
        action,
        pusher: pusher.to_owned(),
        quarantine: None,
        validation: Vec::new(),
    }
}

/// An environment as the API shows it. Blocking (records queries): call from `blocking`.
pub(crate) fn environment_of(state: &AppState, id: &RepoId, name: &str, head: Oid) -> Environment {
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

pub async fn list_environments(
    State(state): State<AppState>,
    Path((account, application)): Path<(String, String)>,
    Query(q): Query<PageQuery>,
) -> Result<Json<Page<Environment>>, HttpError> {
    let id = application_id(&state, &account, &application)?;
    let st = state.clone();
    let envs = blocking(move || {
        let repo = Repository::open_bare(st.repos.path(&id)).map_err(internal)?;
        Ok(branches(&repo).map_err(internal)?.into_iter().map(|(n, h)| environment_of(&st, &id, &n, h)).collect())
    })
    .await?;
    Ok(Json(page(envs, &q)))
}

/// The branch an environment is, or 404.
pub(crate) fn environment_head(
    repo: &Repository,
    account: &str,
    application: &str,
    env: &str,
) -> Result<Oid, HttpError> {
    if !is_branch_name(env) {
        return Err(api_err(StatusCode::BAD_REQUEST, "invalid_name", format!("{env:?} is not an environment name")));
    }
    repo.find_reference(&format!("refs/heads/{env}")).ok().and_then(|r| r.target()).ok_or_else(|| {
        api_err(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("application {account}/{application} has no environment {env}"),
        )
    })
}

/// Runs `f` on an environment's branch (its repo and head commit), off the async runtime;
/// 404 for an unknown application or environment.
pub(crate) async fn with_environment<T: Send + 'static>(
    state: &AppState,
    (account, application, env): (String, String, String),
    f: impl FnOnce(&AppState, &RepoId, &Repository, &str, Oid) -> Result<T, HttpError> + Send + 'static,
) -> Result<T, HttpError> {
    let id = application_id(state, &account, &application)?;
    let st = state.clone();
    blocking(move || {
        let repo = Repository::open_bare(st.repos.path(&id)).map_err(internal)?;
        let head = environment_head(&repo, &account, &application, &env)?;
        f(&st, &id, &repo, &env, head)
    })
    .await
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
    let id = application_id(&state, &account, &application)?;
    if !is_branch_name(&body.name) {
        return Err(api_err(
            StatusCode::BAD_REQUEST,
            "invalid_name",
            format!("{:?} is not a usable environment (branch) name", body.name),
        ));
    }
    let st = state.clone();
    let rid = id.clone();
    let name = body.name.clone();
    let commit = blocking(move || {
        let repo = Repository::open_bare(st.repos.path(&rid)).map_err(internal)?;
        let sig = git2::Signature::now("devpop", "devpop@localhost").map_err(internal)?;
        let names = (account.as_str(), application.as_str());
        let (commit, checked) = new_environment(&st, &repo, &rid, names, &body.source, &body.name, &|_| {}, &sig)?;
        if !checked.accepted {
            let text = checked.lines.join("\n");
            return Err(api_err(StatusCode::UNPROCESSABLE_ENTITY, "invalid_environment", text));
        }
        Ok(commit)
    })
    .await?;
    let d = state
        .deployer
        .submit(request(&id, &name, commit.to_string(), Action::Deploy, &super::actor(&principal)))
        .await?;
    let (st, rid) = (state.clone(), id.clone());
    let environment = blocking(move || Ok(environment_of(&st, &rid, &name, commit))).await?;
    let name = &environment.name;
    audit_action(
        &state,
        &principal,
        peer,
        "environment.create",
        &id.account,
        &format!("{}/{}/{name}", id.application, id.repo),
        &format!("deployment {}", d.id),
    );
    Ok((StatusCode::CREATED, Json(CreatedEnvironment { environment, deployment: d.id })))
}

/// What the checks of a commit the API made said.
pub(crate) struct Checked {
    pub accepted: bool,
    /// The lines a push of the commit would have printed (validation, validate.sh, rendering).
    pub lines: Vec<String>,
}

/// Checks a commit the API made for `env` exactly as a push of it would be checked (the same
/// checks, printing the same lines); when accepted, moves the branch to it, but only from
/// `expected` (`None`: the branch must not exist yet), so a push in between is never lost.
pub(crate) fn check_and_move(
    st: &AppState,
    repo: &Repository,
    id: &RepoId,
    env: &str,
    commit: Oid,
    expected: Option<Oid>,
    log: &str,
) -> Result<Checked, HttpError> {
    let mut output = Vec::new();
    let packages = crate::packages::PackageStore::new(&st.settings.data_dir);
    let settings = st.settings.hook.checks.clone();
    let commit_hex = commit.to_string();
    let subject = crate::checks::Subject { id, environment: env, commit: &commit_hex };
    let verdict = crate::checks::run(&GitCommit { repo, commit }, subject, &packages, &settings, &mut output)
        .map_err(internal)?;
    let lines = String::from_utf8_lossy(&output).lines().map(str::to_owned).collect();
    if !verdict.accepted() {
        return Ok(Checked { accepted: false, lines });
    }
    let name = format!("refs/heads/{env}");
    match expected {
        None => repo
            .reference(&name, commit, false, log)
            .map_err(|_| api_err(StatusCode::CONFLICT, "exists", format!("environment {env} already exists"))),
        Some(old) => repo.reference_matching(&name, commit, true, old, log).map_err(|_| {
            api_err(
                StatusCode::CONFLICT,
                "moved",
                format!("environment {env} changed while this change was checked; read it again and retry"),
            )
        }),
    }?;
    Ok(Checked { accepted: true, lines })
}

/// Creates environment `name` from `source_env` of the application `names` (account,
/// application): a commit whose section.config.json also defines `name` as a copy of the
/// source's settings (then changed by `edit`), checked like a push to `name`; the branch exists
/// only when the checks accept it.
#[allow(clippy::too_many_arguments)]
pub(crate) fn new_environment(
    st: &AppState,
    repo: &Repository,
    id: &RepoId,
    names: (&str, &str),
    source_env: &str,
    name: &str,
    edit: &dyn Fn(&mut serde_json::Value),
    sig: &git2::Signature,
) -> Result<(Oid, Checked), HttpError> {
    let source = environment_head(repo, names.0, names.1, source_env)?;
    if repo.find_reference(&format!("refs/heads/{name}")).is_ok() {
        return Err(api_err(StatusCode::CONFLICT, "exists", format!("environment {name} already exists")));
    }
    let commit = environment_commit(repo, source, source_env, name, edit, sig).map_err(internal)?;
    let log = format!("devpop: create environment {name} from {source_env}");
    let checked = check_and_move(st, repo, id, name, commit, None, &log)?;
    Ok((commit, checked))
}

/// A commit on top of `source` whose section.config.json also defines `name`, as a copy of
/// `source_env`'s settings changed by `edit` (no new commit when that changes nothing).
fn environment_commit(
    repo: &Repository,
    source: Oid,
    source_env: &str,
    name: &str,
    edit: &dyn Fn(&mut serde_json::Value),
    sig: &git2::Signature,
) -> Result<Oid, git2::Error> {
    let parent = repo.find_commit(source)?;
    let tree = parent.tree()?;
    let entry = tree.get_name(config::FILE).ok_or_else(|| git2::Error::from_str("section.config.json is missing"))?;
    let blob = repo.find_blob(entry.id())?;
    let mut json: serde_json::Value =
        serde_json::from_slice(blob.content()).map_err(|e| git2::Error::from_str(&e.to_string()))?;
    let before = json.clone();
    let envs =
        json["environments"].as_object_mut().ok_or_else(|| git2::Error::from_str("environments is not an object"))?;
    if !envs.contains_key(name) {
        let copy = envs
            .get(source_env)
            .cloned()
            .ok_or_else(|| git2::Error::from_str("the source environment is not in section.config.json"))?;
        envs.insert(name.to_owned(), copy);
    }
    edit(&mut envs[name]);
    if json == before {
        return Ok(source);
    }
    let mut text = serde_json::to_string_pretty(&json).expect("JSON serialises");
    text.push('\n');
    let message = format!("Create environment {name} from {source_env}\n");
    commit_file(repo, &parent, &[config::FILE], text.as_bytes(), sig, &message)
}

/// A commit on top of `parent` with `content` at `path` (its components, each checked by the
/// caller); every other file stays as it is.
pub(crate) fn commit_file(
    repo: &Repository,
    parent: &git2::Commit,
    path: &[&str],
    content: &[u8],
    sig: &git2::Signature,
    message: &str,
) -> Result<Oid, git2::Error> {
    fn put(repo: &Repository, tree: Option<&git2::Tree>, path: &[&str], blob: Oid) -> Result<Oid, git2::Error> {
        let mut builder = repo.treebuilder(tree)?;
        match path {
            [file] => {
                builder.insert(file, blob, 0o100644)?;
            }
            [dir, rest @ ..] => {
                let sub = match tree.and_then(|t| t.get_name(dir)) {
                    Some(e) if e.kind() == Some(git2::ObjectType::Tree) => Some(repo.find_tree(e.id())?),
                    Some(_) => return Err(git2::Error::from_str(&format!("{dir} is a file, not a folder"))),
                    None => None,
                };
                let id = put(repo, sub.as_ref(), rest, blob)?;
                builder.insert(dir, id, 0o040000)?;
            }
            [] => return Err(git2::Error::from_str("empty path")),
        }
        builder.write()
    }
    let tree = put(repo, Some(&parent.tree()?), path, repo.blob(content)?)?;
    repo.commit(None, sig, sig, message, &repo.find_tree(tree)?, &[parent])
}

/// Deletes an environment: its branch, and (a deployment) its namespace.
pub async fn delete_environment(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    Path((account, application, env)): Path<(String, String, String)>,
) -> Result<(StatusCode, Json<serde_json::Value>), HttpError> {
    let id = application_id(&state, &account, &application)?;
    let st = state.clone();
    let rid = id.clone();
    let name = env.clone();
    let head = blocking(move || {
        let repo = Repository::open_bare(st.repos.path(&rid)).map_err(internal)?;
        let head = environment_head(&repo, &account, &application, &env)?;
        let default =
            repo.find_reference("HEAD").ok().and_then(|h| h.symbolic_target().ok().flatten().map(str::to_owned));
        if default.as_deref() == Some(&format!("refs/heads/{env}")) {
            return Err(api_err(
                StatusCode::CONFLICT,
                "default_environment",
                format!("{env} is the application's default environment and cannot be deleted"),
            ));
        }
        repo.find_reference(&format!("refs/heads/{env}")).and_then(|mut r| r.delete()).map_err(internal)?;
        Ok(head)
    })
    .await?;
    let d =
        state.deployer.submit(request(&id, &name, head.to_string(), Action::Delete, &super::actor(&principal))).await?;
    audit_action(
        &state,
        &principal,
        peer,
        "environment.delete",
        &id.account,
        &format!("{}/{}/{name}", id.application, id.repo),
        &format!("deployment {}", d.id),
    );
    Ok((StatusCode::ACCEPTED, Json(serde_json::json!({ "deployment": d.id }))))
}

/// The environment's proxychain with each module's package and image.
pub async fn get_stack(
    State(state): State<AppState>,
    Path(names): Path<(String, String, String)>,
) -> Result<Json<Vec<StackEntry>>, HttpError> {
    Ok(Json(with_environment(&state, names, |st, _, repo, _, head| stack_of(st, repo, head)).await?))
}

/// The proxychain of the commit `head`, with each module's package and image.
pub(crate) fn stack_of(state: &AppState, repo: &Repository, head: Oid) -> Result<Vec<StackEntry>, HttpError> {
    let snapshot = GitCommit { repo, commit: head }.snapshot().map_err(internal)?;
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

/// The environment's current section.config.json, as committed.
pub async fn get_config(
    State(state): State<AppState>,
    Path(names): Path<(String, String, String)>,
) -> Result<Response, HttpError> {
    let text = with_environment(&state, names, |_, _, repo, _, head| {
        match (GitCommit { repo, commit: head }).snapshot().map_err(internal)?.config {
            crate::validation::ConfigFile::Present(text) => Ok(text),
            _ => {
                Err(api_err(StatusCode::NOT_FOUND, "not_found", "the environment's commit has no section.config.json"))
            }
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
    let id = application_id(&state, &account, &application)?;
    let filter = crate::records::Filter::environment(&(id.account, id.application, id.repo, env));
    Ok(Json(super::deployments::page_of(&state, &principal, filter, &q).await?))
}
