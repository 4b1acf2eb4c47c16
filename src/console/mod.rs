//! The console: server-rendered pages (templates in `templates/console/`, HTML auto-escaped)
//! with a little JavaScript that calls the same REST API scripts use, and follows deployments
//! live over its Server-Sent Events. No separate build.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;
use git2::Repository;
use minijinja::context;

use crate::api::applications::{application_id, branches, describe, environment_of, internal, stack_of};
use crate::api::blocking;
use crate::http_error::HttpError;
use crate::server::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/console") }))
        .route("/console", get(applications))
        .route("/console/accounts/{account}/applications/{application}", get(application))
        .route("/console/deployments/{id}", get(deployment))
        .route("/console/packages", get(packages))
}

fn templates() -> &'static minijinja::Environment<'static> {
    static T: std::sync::OnceLock<minijinja::Environment<'static>> = std::sync::OnceLock::new();
    T.get_or_init(|| {
        let mut env = minijinja::Environment::new();
        for (name, source) in [
            ("base.html", include_str!("../../templates/console/base.html")),
            ("applications.html", include_str!("../../templates/console/applications.html")),
            ("application.html", include_str!("../../templates/console/application.html")),
            ("deployment.html", include_str!("../../templates/console/deployment.html")),
            ("packages.html", include_str!("../../templates/console/packages.html")),
        ] {
            env.add_template(name, source).expect("templates/console are valid templates");
        }
        env
    })
}

fn page(name: &str, ctx: minijinja::Value) -> Result<Response, HttpError> {
    let html = templates().get_template(name).and_then(|t| t.render(ctx)).map_err(internal)?;
    Ok(Html(html).into_response())
}

/// Console errors are pages too.
fn not_found(what: String) -> HttpError {
    HttpError::new(StatusCode::NOT_FOUND, what)
}

async fn applications(State(state): State<AppState>) -> Result<Response, HttpError> {
    let st = state.clone();
    let apps =
        blocking(move || st.repos.list().iter().map(|id| describe(&st, id)).collect::<Result<Vec<_>, _>>()).await?;
    page("applications.html", context! { apps })
}

async fn application(
    State(state): State<AppState>,
    Path((account, application)): Path<(String, String)>,
) -> Result<Response, HttpError> {
    let id = application_id(&state, &account, &application).map_err(|e| not_found(e.message))?;
    let st = state.clone();
    let (app, environments, stacks) = blocking(move || {
        let app = describe(&st, &id)?;
        let repo = Repository::open_bare(st.repos.path(&id)).map_err(internal)?;
        let mut environments = Vec::new();
        let mut stacks = BTreeMap::new();
        for (name, head) in branches(&repo).map_err(internal)? {
            stacks.insert(name.clone(), stack_of(&st, &repo, head)?);
            environments.push(environment_of(&st, &id, &name, head));
        }
        Ok((app, environments, stacks))
    })
    .await?;
    let key = (app.account.clone(), app.application.clone(), app.repo.clone());
    let mut deployments = state
        .deployer
        .records()
        .list(|d| (d.request.account.clone(), d.request.application.clone(), d.request.repo.clone()) == key);
    deployments.truncate(50);
    page("application.html", context! { app, environments, stacks, deployments })
}

async fn deployment(State(state): State<AppState>, Path(id): Path<String>) -> Result<Response, HttpError> {
    let d = id
        .parse::<u64>()
        .ok()
        .and_then(|id| state.deployer.records().get(id))
        .ok_or_else(|| not_found(format!("no deployment {id}")))?;
    page("deployment.html", context! { d })
}

async fn packages(State(state): State<AppState>) -> Result<Response, HttpError> {
    let store = crate::packages::PackageStore::new(&state.settings.data_dir);
    let packages = blocking(move || {
        Ok(store.catalog().all().iter().filter_map(|n| crate::api::packages::describe(&store, n)).collect::<Vec<_>>())
    })
    .await?;
    page("packages.html", context! { packages })
}
