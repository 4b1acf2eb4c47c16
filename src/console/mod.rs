//! The console: server-rendered pages (templates in `templates/console/`, HTML auto-escaped)
//! with a little JavaScript that calls the same REST API scripts use, and follows deployments
//! live over its Server-Sent Events. No separate build.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::{Extension, Form, Router};
use git2::Repository;
use minijinja::context;

use crate::api::applications::{application_id, branches, describe, environment_of, internal, stack_of};
use crate::api::blocking;
use crate::auth::enforce::SESSION_COOKIE;
use crate::auth::Principal;
use crate::http_error::HttpError;
use crate::server::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/console") }))
        .route("/console", get(applications))
        .route("/console/accounts/{account}/applications/{application}", get(application))
        .route("/console/deployments/{id}", get(deployment))
        .route("/console/packages", get(packages))
        .route("/console/login", get(login_page).post(login))
        .route("/console/logout", axum::routing::post(logout))
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
            ("login.html", include_str!("../../templates/console/login.html")),
        ] {
            env.add_template(name, source).expect("templates/console are valid templates");
        }
        env
    })
}

fn page(state: &AppState, name: &str, ctx: minijinja::Value) -> Result<Response, HttpError> {
    let ctx = context! { auth => state.auth_enabled, ..ctx };
    let html = templates().get_template(name).and_then(|t| t.render(ctx)).map_err(internal)?;
    Ok(Html(html).into_response())
}

/// Console errors are pages too.
fn not_found(what: String) -> HttpError {
    HttpError::new(StatusCode::NOT_FOUND, what)
}

async fn applications(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
) -> Result<Response, HttpError> {
    let st = state.clone();
    let apps = blocking(move || {
        let visible = st.repos.list().into_iter().filter(|id| principal.may_read(&id.account));
        visible.map(|id| describe(&st, &id)).collect::<Result<Vec<_>, _>>()
    })
    .await?;
    page(&state, "applications.html", context! { apps })
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
    let filter = crate::records::Filter {
        account: Some(app.account.clone()),
        application: Some(app.application.clone()),
        repo: Some(app.repo.clone()),
        ..Default::default()
    };
    let records = state.deployer.records().clone();
    let (deployments, _) = blocking(move || records.page(&filter, 0, 50).map_err(internal)).await?;
    page(&state, "application.html", context! { app, environments, stacks, deployments })
}

async fn deployment(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Response, HttpError> {
    let found = match id.parse::<u64>() {
        Ok(n) => crate::api::deployments::find(&state, &principal, n).await.ok(),
        Err(_) => None,
    };
    let d = found.ok_or_else(|| not_found(format!("no deployment {id}")))?;
    page(&state, "deployment.html", context! { d })
}

async fn packages(State(state): State<AppState>) -> Result<Response, HttpError> {
    let store = crate::packages::PackageStore::new(&state.settings.data_dir);
    let packages = blocking(move || {
        Ok(store.catalog().all().iter().filter_map(|n| crate::api::packages::describe(&store, n)).collect::<Vec<_>>())
    })
    .await?;
    page(&state, "packages.html", context! { packages })
}

async fn login_page(State(state): State<AppState>) -> Result<Response, HttpError> {
    page(&state, "login.html", context! { login_page => true, error => "" })
}

#[derive(serde::Deserialize)]
struct LoginForm {
    token: String,
}

/// Logs the console in with an API token: an opaque session id in an HttpOnly, SameSite=Strict
/// cookie (the console's actions are JSON API calls, which other sites cannot forge).
async fn login(State(state): State<AppState>, Form(form): Form<LoginForm>) -> Result<Response, HttpError> {
    if state.tokens.verify(form.token.trim()).is_none() {
        let mut r = page(
            &state,
            "login.html",
            context! { login_page => true, error => "That token is not valid (wrong, revoked or expired)." },
        )?;
        *r.status_mut() = StatusCode::UNAUTHORIZED;
        return Ok(r);
    }
    let session = state.sessions.open(form.token.trim()).map_err(internal)?;
    let cookie = format!("{SESSION_COOKIE}={session}; Path=/; HttpOnly; SameSite=Strict");
    Ok(([(axum::http::header::SET_COOKIE, cookie)], Redirect::to("/console")).into_response())
}

async fn logout(State(state): State<AppState>, headers: axum::http::HeaderMap) -> Response {
    if let Some(session) = headers.get(axum::http::header::COOKIE).and_then(|c| c.to_str().ok()).and_then(|c| {
        c.split(';').find_map(|c| c.trim().strip_prefix(SESSION_COOKIE)?.strip_prefix('=').map(str::to_owned))
    }) {
        state.sessions.close(&session);
    }
    let cookie = format!("{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0");
    ([(axum::http::header::SET_COOKIE, cookie)], Redirect::to("/console/login")).into_response()
}
