//! An environment's console pages: its settings (origin, alternate origins, IP restrictions,
//! outage page, domains), its files (Advanced config), its modules, its lifecycle (rollback,
//! redeploy, delete, each confirmed first) and where its logs are.
//!
//! Every change is a commit checked like a push, made by the domain's actions (the same the API
//! calls: `edits::Actions::commit_change` with `environment_config`'s edits, `lifecycle`); these
//! handlers only turn a form into their input and their answer into a page. A refused change
//! shows the checks' lines next to the form it came from, with what was typed kept.

use std::collections::BTreeMap;

use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use git2::{ObjectType, Repository};
use minijinja::context;
use serde_json::{json, Value};

use super::view::{self, Row, CONSOLE_TRAILER};
use super::{not_found, page, same_origin};
use crate::auth::Principal;
use crate::edits::{Change, Edit};
use crate::environment_config::{self as changes, environment_mut};
use crate::names::RepoId;
use crate::settings::TargetSettings;
use crate::web::error::internal;
use crate::web::error::HttpError;
use crate::web::query::blocking;
use crate::web::query::{application_id, describe, environment_head, environment_of, stack_of};
use crate::web::state::AppState;

/// The largest file the browser editor opens (bigger ones are edited with git).
const MAX_EDIT_BYTES: usize = 512 * 1024;
/// The most entries a folder listing shows.
const MAX_LISTING: usize = 500;
/// Deployments listed on an environment's page.
const DEPLOYMENTS_SHOWN: u64 = 20;

type Names = (String, String, String);
type Fields = BTreeMap<String, String>;

/// Where an environment's page is.
pub fn environment_path(id: &RepoId, env: &str) -> String {
    format!("/console/accounts/{}/applications/{}/environments/{env}", id.account, id.application)
}

/// The host an environment is served at (its Ingress host).
pub fn environment_host(state: &AppState, id: &RepoId, env: &str) -> String {
    let render = &state.settings.hook.checks.render;
    format!("{}.{}", crate::rendering::naming::namespace(&render.namespace_prefix, id, env), render.ingress_domain)
}

/// An API error (JSON) as a console error page (text).
fn as_page(e: HttpError) -> HttpError {
    HttpError::new(e.status, e.message)
}

/// A form's refusal: which form, the lines to show next to it, what was typed.
#[derive(Default)]
struct Refusal {
    form: String,
    lines: Vec<String>,
    fields: Fields,
    status: Option<StatusCode>,
}

/// The status and the lines of a refusal, as the page shows them (no server path).
fn lines_of(e: HttpError) -> (StatusCode, Vec<String>) {
    let lines = e.diagnostics.unwrap_or_else(|| e.message.lines().map(str::to_owned).collect());
    (e.status, lines.iter().map(|l| crate::web::error::scrub(l)).collect())
}

/// The environment's page (with a refused form's lines, when there is one).
async fn render(state: &AppState, id: RepoId, env: String, refusal: Refusal) -> Result<Response, HttpError> {
    let st = state.clone();
    let host = environment_host(state, &id, &env);
    let data = blocking(move || {
        let app = describe(&st, &id)?;
        let repo = Repository::open_bare(st.repos.path(&id)).map_err(internal)?;
        let head = environment_head(&repo, &id.account, &id.application, &env)?;
        let environment = environment_of(&st, &id, &env, head);
        let stack = stack_of(&st, &repo, head)?;
        let config = changes::read_config(&repo, head).unwrap_or(Value::Null);
        let settings = config["environments"][&env].clone();
        let engaged = settings[changes::OUTAGE_PAGE].as_str().map(str::to_owned);
        let outage_pages: Vec<Value> = changes::outage_page_names(&repo, head)
            .unwrap_or_default()
            .into_iter()
            .map(|name| json!({ "engaged": engaged.as_deref() == Some(&name), "name": name }))
            .collect();
        let alternates: Vec<String> = settings["alternate_origins"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(name, o)| format!("{name} {}", o["address"].as_str().unwrap_or("")))
            .collect();
        let ips: Vec<&str> =
            settings["ip_blacklist"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
        let key = (id.account.clone(), id.application.clone(), id.repo.clone(), env.clone());
        let (deployments, _) = st
            .deployer
            .records()
            .page(&crate::records::Filter::environment(&key), 0, DEPLOYMENTS_SHOWN)
            .map_err(internal)?;
        let head_hex = head.to_string();
        let commits =
            view::commits(&repo, deployments.iter().map(|d| d.request.commit.as_str()).chain([head_hex.as_str()]));
        let subject = commits.get(&head_hex).map(|c| c.subject.clone()).unwrap_or_default();
        let deployments: Vec<Row> = deployments.into_iter().map(|d| Row::new(d, &commits)).collect();
        let packages = st.packages.catalog().all();
        Ok(json!({
            "app": app,
            "e": environment,
            "subject": subject,
            "origin": settings["origin"],
            "alternates": alternates.join("\n"),
            "ips": ips.join("\n"),
            "outage_pages": outage_pages,
            "engaged": engaged,
            "domains": changes::domains_of(&config, &env),
            "stack": stack,
            "packages": packages,
            "deployments": deployments,
            "config_ok": !config.is_null(),
        }))
    })
    .await?;
    let render_only = state.settings.target == TargetSettings::RenderOnly;
    let ctx = context! {
        data => minijinja::Value::from_serialize(&data),
        host, render_only,
        failed => refusal.form, lines => refusal.lines, typed => refusal.fields,
    };
    let mut r = page(state, "environment.html", ctx)?;
    if let Some(status) = refusal.status {
        *r.status_mut() = status;
    }
    Ok(r)
}

pub async fn environment_page(
    State(state): State<AppState>,
    Path((account, application, env)): Path<Names>,
) -> Result<Response, HttpError> {
    let id = application_id(&state, &account, &application).await.map_err(|e| not_found(e.message))?;
    render(&state, id, env, Refusal::default()).await.map_err(as_page)
}

/// A form posted on an environment's pages: the application (404 when there is none), the
/// environment's name and who posts it. Refused (403) unless it comes from the console's own
/// pages.
pub struct EnvironmentPost {
    id: RepoId,
    env: String,
    author: crate::edits::Author,
}

#[derive(serde::Deserialize)]
struct EnvironmentParams {
    account: String,
    application: String,
    env: String,
}

impl axum::extract::FromRequestParts<AppState> for EnvironmentPost {
    type Rejection = HttpError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &AppState) -> Result<Self, HttpError> {
        same_origin(state, &parts.headers)?;
        let Path(p) =
            Path::<EnvironmentParams>::from_request_parts(parts, state).await.map_err(|e| not_found(e.body_text()))?;
        let principal = parts.extensions.get::<Principal>().cloned();
        let peer = parts.extensions.get::<ConnectInfo<std::net::SocketAddr>>().map(|c| c.0);
        let (Some(principal), Some(peer)) = (principal, peer) else {
            return Err(internal("the request carries no principal or peer address"));
        };
        let id = application_id(state, &p.account, &p.application).await.map_err(|e| not_found(e.message))?;
        Ok(EnvironmentPost { id, env: p.env, author: crate::web::author(&principal, peer) })
    }
}

/// Where a change leads: its deployment's page, or `back` when it changed nothing.
fn after_change(change: Option<Change>, back: &str) -> Response {
    match change {
        Some(c) => Redirect::to(&format!("/console/deployments/{}", c.deployment)).into_response(),
        None => Redirect::to(back).into_response(),
    }
}

fn bad(message: impl Into<String>) -> HttpError {
    HttpError::new(StatusCode::BAD_REQUEST, message)
}

fn field<'a>(f: &'a Fields, name: &str) -> &'a str {
    f.get(name).map_or("", |v| v.trim())
}

/// The audit log's name of a settings form's change (the Aperture API's for the same change).
fn setting_action(form: &str, fields: &Fields) -> Option<&'static str> {
    let op = fields.get("op").map(String::as_str);
    Some(match form {
        "origin" | "alternates" => "egress.set",
        "ip" => "ip_restrictions.set",
        "outage" if op == Some("disengage") => "outage_page.disengage",
        "outage" => "outage_page.engage",
        "domain" if op == Some("remove") => "domain.remove",
        "domain" => "domain.add",
        _ => return None,
    })
}

/// Saves one settings form: its change of section.config.json, as a commit checked like a push.
pub async fn save_setting(
    State(state): State<AppState>,
    EnvironmentPost { id, env, author }: EnvironmentPost,
    Path((_, _, _, form)): Path<(String, String, String, String)>,
    Form(fields): Form<Fields>,
) -> Result<Response, HttpError> {
    let back = environment_path(&id, &env);
    let action = setting_action(&form, &fields).ok_or_else(|| not_found(format!("no settings form {form}")))?;
    let (f, which) = (fields.clone(), form.clone());
    let made = state
        .actions()
        .commit_change(&author, &id, &env, action, move |repo, head, env| {
            let pages = if which == "outage" { changes::outage_page_names(repo, head)? } else { Vec::new() };
            let message = format!("{action} on {env} through the console\n");
            changes::config_edit(repo, head, message, |config| {
                let page = field(&f, "page").to_owned();
                match which.as_str() {
                    "outage" if action == "outage_page.engage" => {
                        changes::set_outage_page(config, env, Some(page), &pages)
                    }
                    "outage" => changes::set_outage_page(config, env, None, &pages),
                    "domain" => changes::change_domain(config, env, field(&f, "host"), action == "domain.add"),
                    "ip" => {
                        let list: Vec<String> = field(&f, "ips")
                            .lines()
                            .map(str::trim)
                            .filter(|l| !l.is_empty())
                            .map(str::to_owned)
                            .collect();
                        changes::set_ip_blacklist(environment_mut(config, env)?, &list);
                        Ok(())
                    }
                    "origin" => {
                        let host = Some(field(&f, "host_header")).filter(|h| !h.is_empty());
                        changes::set_origin(environment_mut(config, env)?, field(&f, "address"), host);
                        Ok(())
                    }
                    _ => changes::set_alternates(environment_mut(config, env)?, field(&f, "alternates")),
                }
                .map_err(HttpError::from)
            })
        })
        .await;
    match made {
        Ok(change) => Ok(after_change(change, &back)),
        Err(e) => {
            let (status, lines) = lines_of(e);
            render(&state, id, env, Refusal { form, lines, fields, status: Some(status) }).await
        }
    }
}

// ---- modules ----

/// Adds, removes or moves a module of the environment's proxychain: one commit (the
/// proxychain entry and the module's folder together), checked like a push.
pub async fn change_module(
    State(state): State<AppState>,
    EnvironmentPost { id, env, author }: EnvironmentPost,
    Form(fields): Form<Fields>,
) -> Result<Response, HttpError> {
    let back = environment_path(&id, &env);
    let op = field(&fields, "op").to_owned();
    let name = field(&fields, "name").to_owned();
    let package = field(&fields, "package").to_owned();
    let packages = state.packages.clone();
    let made = state
        .actions()
        .commit_change(&author, &id, &env, "module.change", move |repo, head, env| {
            let mut config = changes::read_config(repo, head)
                .ok_or_else(|| bad("section.config.json is missing or not JSON: fix it in Advanced config first"))?;
            let chain = config["proxychain"]
                .as_array_mut()
                .ok_or_else(|| bad("section.config.json has no proxychain list: fix it in Advanced config first"))?;
            let at = chain.iter().position(|m| m["name"].as_str() == Some(&name));
            let folder = changes::repo_path(&name)?;
            if folder.len() != 1 {
                return Err(bad(format!("{name:?}: a module name is one folder name (like cache)")));
            }
            let mut files = Vec::new();
            let subject = match (op.as_str(), at) {
                ("add", Some(_)) => return Err(bad(format!("the proxychain already has a module named {name}"))),
                ("add", None) => {
                    let tree = repo.find_commit(head).and_then(|c| c.tree()).map_err(|e| bad(e.to_string()))?;
                    if tree.get_name(&name).is_some() {
                        return Err(bad(format!(
                            "the repo already has {name}/: pick another name, or remove it first"
                        )));
                    }
                    let starter = packages.starter_files(&package).map_err(|e| match e {
                        crate::packages::PackageError::NotInstalled(p) => {
                            bad(format!("package {p} is not installed: pick one from the list"))
                        }
                        _ => bad(format!("cannot read package {package}'s default config folder")),
                    })?;
                    if starter.is_empty() {
                        return Err(bad(format!(
                        "package {package} has no default config (its proxy_config/ is empty): start {name}/ with git"
                    )));
                    }
                    for (rel, content) in starter {
                        let mut path = folder.clone();
                        path.extend(rel.split('/').map(str::to_owned));
                        files.push((path, Some(content)));
                    }
                    chain.push(json!({ "name": name, "image": package }));
                    format!("Add module {name} ({package}) to {env}")
                }
                (_, None) => return Err(bad(format!("the proxychain has no module named {name}"))),
                ("remove", Some(i)) => {
                    chain.remove(i);
                    files.push((folder, None));
                    format!("Remove module {name} from {env}")
                }
                ("up", Some(i)) if i > 0 => {
                    chain.swap(i, i - 1);
                    format!("Move module {name} up in {env}'s proxychain")
                }
                ("down", Some(i)) if i + 1 < chain.len() => {
                    chain.swap(i, i + 1);
                    format!("Move module {name} down in {env}'s proxychain")
                }
                ("up" | "down", Some(_)) => return Ok(None),
                _ => return Err(bad(format!("unknown module operation {op:?}"))),
            };
            files.push((vec![crate::validation::config::FILE.to_owned()], Some(changes::pretty(&config))));
            Ok(Some(Edit { files, message: format!("{subject}\n\n{CONSOLE_TRAILER}\n") }))
        })
        .await;
    match made {
        Ok(change) => Ok(after_change(change, &back)),
        Err(e) => {
            let (status, lines) = lines_of(e);
            render(&state, id, env, Refusal { form: "modules".into(), lines, fields, status: Some(status) }).await
        }
    }
}

// ---- files (Advanced config) ----

#[derive(serde::Deserialize)]
pub struct FileQuery {
    #[serde(default)]
    path: String,
}

/// What the files page shows.
#[derive(Default)]
struct FilesView {
    /// The folder or file shown ("" for the top).
    path: String,
    /// A folder's entries: (name, path, is a folder).
    entries: Option<Vec<(String, String, bool)>>,
    /// A file's text, when it can be edited here.
    content: Option<String>,
    /// Why a file cannot be edited here.
    not_editable: Option<String>,
    message: String,
    diff: Option<Vec<String>>,
    lines: Vec<String>,
    head: String,
}

async fn render_files(
    state: &AppState,
    id: &RepoId,
    env: &str,
    mut v: FilesView,
    status: StatusCode,
) -> Result<Response, HttpError> {
    let (st, rid, name, path) = (state.clone(), id.clone(), env.to_owned(), v.path.clone());
    let (head, listing, file) = blocking(move || {
        let repo = Repository::open_bare(st.repos.path(&rid)).map_err(internal)?;
        let head = environment_head(&repo, &rid.account, &rid.application, &name)?;
        let tree = repo.find_commit(head).and_then(|c| c.tree()).map_err(internal)?;
        let entry = if path.is_empty() {
            None
        } else {
            match tree.get_path(std::path::Path::new(&path)) {
                Ok(e) => Some(e),
                // A new file: an empty editor (the commit makes its folders).
                Err(_) => return Ok((head.to_string(), None, Some(Ok(String::new())))),
            }
        };
        let folder = match &entry {
            None => Some(tree.clone()),
            Some(e) if e.kind() == Some(ObjectType::Tree) => Some(repo.find_tree(e.id()).map_err(internal)?),
            Some(_) => None,
        };
        if let Some(folder) = folder {
            let mut entries: Vec<(String, String, bool)> = folder
                .iter()
                .take(MAX_LISTING)
                .filter_map(|e| {
                    let n = e.name().ok()?.to_owned();
                    let full = if path.is_empty() { n.clone() } else { format!("{path}/{n}") };
                    Some((n, full, e.kind() == Some(ObjectType::Tree)))
                })
                .collect();
            entries.sort_by(|a, b| (!a.2, &a.0).cmp(&(!b.2, &b.0)));
            return Ok((head.to_string(), Some(entries), None));
        }
        let blob = repo.find_blob(entry.expect("a file").id()).map_err(internal)?;
        let file = if blob.size() > MAX_EDIT_BYTES {
            Err(format!("{path} is larger than {} KiB: edit it with git", MAX_EDIT_BYTES / 1024))
        } else {
            String::from_utf8(blob.content().to_vec()).map_err(|_| format!("{path} is not text: edit it with git"))
        };
        Ok((head.to_string(), None, Some(file)))
    })
    .await?;
    if v.head.is_empty() {
        v.head = head.clone();
    }
    v.entries = listing;
    match file {
        Some(Ok(text)) if v.content.is_none() => v.content = Some(text),
        Some(Err(why)) => v.not_editable = Some(why),
        _ => {}
    }
    let parts: Vec<(String, String)> = {
        let mut acc = String::new();
        v.path
            .split('/')
            .filter(|p| !p.is_empty())
            .map(|p| {
                if !acc.is_empty() {
                    acc.push('/');
                }
                acc.push_str(p);
                (p.to_owned(), acc.clone())
            })
            .collect()
    };
    let app = context! { account => id.account, application => id.application, repo => id.repo };
    let ctx = context! {
        app, env, base => environment_path(id, env), path => v.path, crumbs => parts,
        entries => v.entries, content => v.content, not_editable => v.not_editable,
        message => v.message, diff => v.diff, lines => v.lines, head => v.head,
        stale => v.head != head,
    };
    let mut r = page(state, "files.html", ctx)?;
    *r.status_mut() = status;
    Ok(r)
}

pub async fn files_page(
    State(state): State<AppState>,
    Path((account, application, env)): Path<Names>,
    Query(q): Query<FileQuery>,
) -> Result<Response, HttpError> {
    let id = application_id(&state, &account, &application).await.map_err(|e| not_found(e.message))?;
    let path = q.path.trim_matches('/').to_owned();
    if !path.is_empty() {
        changes::repo_path(&path).map_err(HttpError::from)?;
    }
    render_files(&state, &id, &env, FilesView { path, ..FilesView::default() }, StatusCode::OK).await.map_err(as_page)
}

/// Reviews (the diff) or commits an edited file.
pub async fn save_file(
    State(state): State<AppState>,
    EnvironmentPost { id, env, author }: EnvironmentPost,
    Form(fields): Form<Fields>,
) -> Result<Response, HttpError> {
    let path = field(&fields, "path").trim_matches('/').to_owned();
    // Browsers send a textarea's line breaks as CRLF.
    let content = fields.get("content").cloned().unwrap_or_default().replace("\r\n", "\n");
    let message = field(&fields, "message").to_owned();
    let base = field(&fields, "head").to_owned();
    let mut v = FilesView {
        path: path.clone(),
        content: Some(content.clone()),
        message: message.clone(),
        head: base.clone(),
        ..FilesView::default()
    };
    let components = match changes::repo_path(&path) {
        Ok(c) => c,
        Err(e) => {
            v.lines = lines_of(e.into()).1;
            return render_files(&state, &id, &env, v, StatusCode::BAD_REQUEST).await;
        }
    };
    if field(&fields, "step") == "edit" {
        return render_files(&state, &id, &env, v, StatusCode::OK).await;
    }
    if field(&fields, "step") != "commit" {
        // Review: the diff against the file at the head the editor was opened on.
        let (st, rid, name, p, b) = (state.clone(), id.clone(), env.clone(), path.clone(), base.clone());
        let before = blocking(move || {
            let repo = Repository::open_bare(st.repos.path(&rid)).map_err(internal)?;
            let head = environment_head(&repo, &rid.account, &rid.application, &name)?;
            let at = git2::Oid::from_str(&b).unwrap_or(head);
            let tree = repo.find_commit(at).and_then(|c| c.tree()).map_err(internal)?;
            let text = tree
                .get_path(std::path::Path::new(&p))
                .ok()
                .and_then(|e| repo.find_blob(e.id()).ok())
                .map(|b| String::from_utf8_lossy(b.content()).into_owned());
            Ok(text.unwrap_or_default())
        })
        .await?;
        v.diff = Some(crate::rendering::changes::unified(&before, &content));
        return render_files(&state, &id, &env, v, StatusCode::OK).await;
    }
    let subject = if message.is_empty() { format!("Edit {path} on {env}") } else { message.clone() };
    let made = state
        .actions()
        .commit_change(&author, &id, &env, "file.put", move |repo, head, _| {
            if head.to_string() != base {
                return Err(HttpError::new(
                    StatusCode::CONFLICT,
                    format!(
                        "the environment changed since you opened {path} (now at {}); review the file again",
                        crate::records::short(&head.to_string())
                    ),
                ));
            }
            let tree = repo.find_commit(head).and_then(|c| c.tree()).map_err(|e| bad(e.to_string()))?;
            let entry = tree.get_path(std::path::Path::new(&path)).ok();
            if entry.as_ref().is_some_and(|e| e.kind() != Some(ObjectType::Blob)) {
                return Err(bad(format!("{path} is a folder: name a file inside it (like {path}/new-file.conf)")));
            }
            let before = entry.and_then(|e| repo.find_blob(e.id()).ok());
            if before.is_some_and(|b| b.content() == content.as_bytes()) {
                return Ok(None);
            }
            Ok(Some(Edit {
                files: vec![(components, Some(content.into_bytes()))],
                message: format!("{subject}\n\n{CONSOLE_TRAILER}\n"),
            }))
        })
        .await;
    match made {
        Ok(change) => {
            let back = format!("{}/files?path={}", environment_path(&id, &env), view::query_value(&v.path));
            Ok(after_change(change, &back))
        }
        Err(e) => {
            let (status, lines) = lines_of(e);
            v.lines = lines;
            render_files(&state, &id, &env, v, status).await
        }
    }
}

// ---- logs ----

pub async fn logs_page(
    State(state): State<AppState>,
    Path((account, application, env)): Path<Names>,
) -> Result<Response, HttpError> {
    let id = application_id(&state, &account, &application).await.map_err(|e| not_found(e.message))?;
    let (st, rid, name) = (state.clone(), id.clone(), env.clone());
    let app = blocking(move || {
        let repo = Repository::open_bare(st.repos.path(&rid)).map_err(internal)?;
        environment_head(&repo, &rid.account, &rid.application, &name)?;
        describe(&st, &rid)
    })
    .await
    .map_err(as_page)?;
    let render = &state.settings.hook.checks.render;
    let namespace = crate::rendering::naming::namespace(&render.namespace_prefix, &id, &env);
    let render_only = state.settings.target == TargetSettings::RenderOnly;
    page(&state, "logs.html", context! { app, env, namespace, render_only, base => environment_path(&id, &env) })
}

// ---- logs followed live (cluster target) ----

/// Log followers at once, server-wide (each holds a stream per container to the API server).
const MAX_FOLLOWERS: usize = 16;

#[derive(serde::Deserialize)]
pub struct LogsQuery {
    /// Only this module's pods (its hop name).
    #[serde(default)]
    module: Option<String>,
}

/// The environment's container logs as Server-Sent Events (`event: log`, a `LogEntry` as
/// JSON), from the target's own log follower (`applying::logs`): the last lines of each
/// container first, then as they are written.
pub async fn logs_stream(
    State(state): State<AppState>,
    Path((account, application, env)): Path<Names>,
    Query(q): Query<LogsQuery>,
) -> Result<Response, HttpError> {
    use futures_util::StreamExt;
    static FOLLOWERS: std::sync::OnceLock<std::sync::Arc<tokio::sync::Semaphore>> = std::sync::OnceLock::new();
    let id = application_id(&state, &account, &application).await.map_err(|e| not_found(e.message))?;
    let (st, rid, name) = (state.clone(), id.clone(), env.clone());
    blocking(move || {
        let repo = Repository::open_bare(st.repos.path(&rid)).map_err(internal)?;
        environment_head(&repo, &rid.account, &rid.application, &name)
    })
    .await
    .map_err(as_page)?;
    let logs_error = |e: crate::applying::logs::LogsError| as_page(HttpError::from(e));
    let query = crate::applying::logs::LogQuery::new(q.module.as_deref(), None).map_err(logs_error)?;
    let permit = FOLLOWERS
        .get_or_init(|| std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_FOLLOWERS)))
        .clone()
        .try_acquire_owned()
        .map_err(|_| HttpError::new(StatusCode::SERVICE_UNAVAILABLE, "too many log followers right now; retry soon"))?;
    let render = &state.settings.hook.checks.render;
    let namespace = crate::rendering::naming::namespace(&render.namespace_prefix, &id, &env);
    let entries = state.deployer.target().follow_logs(&namespace, &query).await.map_err(logs_error)?;
    let events = entries.map(move |entry| {
        let _held = &permit;
        let event = axum::response::sse::Event::default().event("log");
        Ok::<_, std::convert::Infallible>(
            event.json_data(&entry).unwrap_or_else(|_| axum::response::sse::Event::default()),
        )
    });
    Ok(axum::response::sse::Sse::new(events).keep_alive(axum::response::sse::KeepAlive::default()).into_response())
}
