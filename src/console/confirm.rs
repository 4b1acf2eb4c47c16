//! Actions that cannot be taken back, each behind a confirmation page (GET shows what will
//! happen, the page's form POSTs it): rollback to a deployment, redeploy, delete an
//! environment, delete an application. Deletes ask for the name to be typed.

use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use minijinja::context;

use super::environment::environment_path;
use super::{not_found, page, same_origin};
use crate::auth::Principal;
use crate::names::RepoId;
use crate::web::error::HttpError;
use crate::web::query::application_id;
use crate::web::state::AppState;

#[derive(Debug, Default, serde::Deserialize)]
pub struct ConfirmFields {
    /// The deployment to roll back to.
    #[serde(default)]
    to: Option<String>,
    /// The name typed to confirm a delete.
    #[serde(default)]
    name: Option<String>,
}

type EnvPath = (String, String, String, String);

/// What a confirmation page asks.
struct Ask {
    title: String,
    question: String,
    button: &'static str,
    /// The name to type (deletes).
    type_name: Option<String>,
    to: Option<u64>,
    cancel: String,
}

fn ask(state: &AppState, a: Ask, lines: Vec<String>, status: StatusCode) -> Result<Response, HttpError> {
    let ctx = context! {
        title => a.title, question => a.question, button => a.button, type_name => a.type_name,
        to => a.to, cancel => a.cancel, lines,
    };
    let mut r = page(state, "confirm.html", ctx)?;
    *r.status_mut() = status;
    Ok(r)
}

fn ask_for(id: &RepoId, env: &str, action: &str, to: Option<u64>) -> Result<Ask, HttpError> {
    let cancel = environment_path(id, env);
    Ok(match action {
        "rollback" => {
            let to = to.ok_or_else(|| HttpError::new(StatusCode::BAD_REQUEST, "name the deployment: ?to=N"))?;
            Ask {
                title: format!("Roll back {env}"),
                question: format!(
                    "Roll {env} back to the state deployment {to} deployed? A new commit on {env} restores it, \
                     checked like a push, then deployed; history is kept."
                ),
                button: "Roll back",
                type_name: None,
                to: Some(to),
                cancel,
            }
        }
        "redeploy" => Ask {
            title: format!("Redeploy {env}"),
            question: format!("Deploy {env}'s current commit again (rendered and applied anew)?"),
            button: "Redeploy",
            type_name: None,
            to: None,
            cancel,
        },
        "delete" => Ask {
            title: format!("Delete {env}"),
            question: format!(
                "Delete environment {env} of {}: its branch goes, and a deployment removes what it runs. \
                 Type its name to confirm.",
                id.application
            ),
            button: "Delete environment",
            type_name: Some(env.to_owned()),
            to: None,
            cancel,
        },
        _ => return Err(not_found(format!("no action {action}"))),
    })
}

fn deployment_number(raw: Option<&str>) -> Result<Option<u64>, HttpError> {
    raw.filter(|s| !s.is_empty())
        .map(|s| s.trim().parse::<u64>())
        .transpose()
        .map_err(|_| HttpError::new(StatusCode::BAD_REQUEST, "the deployment to roll back to is a number"))
}

pub async fn confirm_page(
    State(state): State<AppState>,
    Path((account, application, env, action)): Path<EnvPath>,
    Query(q): Query<ConfirmFields>,
) -> Result<Response, HttpError> {
    let id = application_id(&state, &account, &application).await.map_err(|e| not_found(e.message))?;
    let a = ask_for(&id, &env, &action, deployment_number(q.to.as_deref())?)?;
    ask(&state, a, Vec::new(), StatusCode::OK)
}

pub async fn confirmed(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    Path((account, application, env, action)): Path<EnvPath>,
    Form(f): Form<ConfirmFields>,
) -> Result<Response, HttpError> {
    same_origin(&state, &headers)?;
    let id = application_id(&state, &account, &application).await.map_err(|e| not_found(e.message))?;
    let to = deployment_number(f.to.as_deref())?;
    let a = ask_for(&id, &env, &action, to)?;
    if let Some(name) = &a.type_name {
        if f.name.as_deref().map(str::trim) != Some(name.as_str()) {
            let lines = vec![format!("type {name} to confirm")];
            return ask(&state, a, lines, StatusCode::BAD_REQUEST);
        }
    }
    let (actions, author) = (state.actions(), crate::web::author(&principal, peer));
    let done = match action.as_str() {
        "rollback" => actions.rollback(&author, &id, &env, Some(to.unwrap_or_default())).await.map(|(d, _)| d),
        "redeploy" => actions.redeploy(&author, &id, &env).await,
        _ => actions.delete_environment(&author, &id, &env).await,
    };
    match done.map_err(HttpError::from) {
        Ok(d) => Ok(Redirect::to(&format!("/console/deployments/{}", d.id)).into_response()),
        Err(e) => refused(&state, a, e),
    }
}

/// The confirmation page again, with why the action was not done (a refusal's check lines).
fn refused(state: &AppState, a: Ask, e: HttpError) -> Result<Response, HttpError> {
    let lines = e.diagnostics.unwrap_or_else(|| vec![e.message]);
    ask(state, a, lines.iter().map(|l| crate::web::error::scrub(l)).collect(), e.status)
}

fn ask_application(id: &RepoId) -> Ask {
    Ask {
        title: format!("Delete {}", id.application),
        question: format!(
            "Delete application {} of account {}: every environment is removed (a deployment each), then its repo. \
             Type its name to confirm.",
            id.application, id.account
        ),
        button: "Delete application",
        type_name: Some(id.application.clone()),
        to: None,
        cancel: format!("/console/accounts/{}/applications/{}", id.account, id.application),
    }
}

pub async fn delete_application_page(
    State(state): State<AppState>,
    Path((account, application)): Path<(String, String)>,
) -> Result<Response, HttpError> {
    let id = application_id(&state, &account, &application).await.map_err(|e| not_found(e.message))?;
    ask(&state, ask_application(&id), Vec::new(), StatusCode::OK)
}

pub async fn delete_application(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    Path((account, application)): Path<(String, String)>,
    Form(f): Form<ConfirmFields>,
) -> Result<Response, HttpError> {
    same_origin(&state, &headers)?;
    let id = application_id(&state, &account, &application).await.map_err(|e| not_found(e.message))?;
    let a = ask_application(&id);
    if f.name.as_deref().map(str::trim) != Some(id.application.as_str()) {
        return ask(&state, a, vec![format!("type {} to confirm", id.application)], StatusCode::BAD_REQUEST);
    }
    let author = crate::web::author(&principal, peer);
    match state.actions().delete_application(&author, &id, "").await {
        Ok(()) => Ok(Redirect::to("/console").into_response()),
        Err(e) => refused(&state, a, e.into()),
    }
}
