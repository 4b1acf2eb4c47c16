//! The console: server-rendered pages (templates in `templates/console/`, HTML auto-escaped)
//! with a little JavaScript that calls the same REST API scripts use, and follows deployments
//! live over its Server-Sent Events. No separate build.
//!
//! An environment's pages (settings, files, modules, lifecycle, logs) are in [`environment`]
//! and [`confirm`]; their forms post to the console, whose handlers call the domain's actions
//! (`edits`, `environment_config`, `lifecycle`), as the API's do.

mod confirm;
mod environment;
pub mod view;

use std::collections::BTreeMap;

use axum::extract::{ConnectInfo, Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Extension, Form, Router};
use git2::Repository;
use minijinja::context;

use crate::auth::Principal;
use crate::auth::SESSION_COOKIE;
use crate::names::RepoId;
use crate::web::error::{internal, HttpError};
use crate::web::query::{application_id, blocking, branches, describe, environment_of, stack_of};
use crate::web::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/console") }))
        .route("/console", get(applications))
        .route("/console/accounts/{account}/applications/{application}", get(application))
        .route(
            "/console/accounts/{account}/applications/{application}/delete",
            get(confirm::delete_application_page).post(confirm::delete_application),
        )
        .route(
            "/console/accounts/{account}/applications/{application}/environments/{env}",
            get(environment::environment_page),
        )
        .route(
            "/console/accounts/{account}/applications/{application}/environments/{env}/settings/{form}",
            post(environment::save_setting),
        )
        .route(
            "/console/accounts/{account}/applications/{application}/environments/{env}/modules",
            post(environment::change_module),
        )
        .route(
            "/console/accounts/{account}/applications/{application}/environments/{env}/files",
            get(environment::files_page).post(environment::save_file),
        )
        .route(
            "/console/accounts/{account}/applications/{application}/environments/{env}/logs",
            get(environment::logs_page),
        )
        .route(
            "/console/accounts/{account}/applications/{application}/environments/{env}/logs/stream",
            get(environment::logs_stream),
        )
        .route(
            "/console/accounts/{account}/applications/{application}/environments/{env}/do/{action}",
            get(confirm::confirm_page).post(confirm::confirmed),
        )
        .route("/console/deployments/{id}", get(deployment))
        .route("/console/packages", get(packages))
        .route("/console/login", get(login_page).post(login))
        .route("/console/logout", axum::routing::post(logout))
        .layer(axum::middleware::map_response(framing_headers))
}

/// The policy of a console page: scripts and styles only those the page carries with its
/// `nonce` (a new one per page), requests only to this server, never framed by another site.
fn content_security_policy(nonce: &str) -> String {
    format!(
        "default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; connect-src 'self'; \
         img-src 'self' data:; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    )
}

/// Every console answer (pages, errors, redirects) refuses to be framed or sniffed; pages set
/// their own policy with their nonce, anything else gets the policy that allows nothing.
async fn framing_headers(mut r: Response) -> Response {
    use axum::http::{header, HeaderValue};
    let h = r.headers_mut();
    h.entry(header::CONTENT_SECURITY_POLICY)
        .or_insert(HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'; base-uri 'none'"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    r
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
            ("environment.html", include_str!("../../templates/console/environment.html")),
            ("files.html", include_str!("../../templates/console/files.html")),
            ("confirm.html", include_str!("../../templates/console/confirm.html")),
            ("logs.html", include_str!("../../templates/console/logs.html")),
            ("deployments.html", include_str!("../../templates/console/deployments.html")),
        ] {
            env.add_template(name, source).expect("templates/console are valid templates");
        }
        env.add_filter("time", |v: String| view::time_element(&v));
        env.add_filter("q", |v: String| view::query_value(&v));
        env
    })
}

fn page(state: &AppState, name: &str, ctx: minijinja::Value) -> Result<Response, HttpError> {
    let nonce = crate::auth::random_hex(16).map_err(internal)?;
    let ctx = context! { auth => state.auth_enabled, nonce => nonce, ..ctx };
    let html = templates().get_template(name).and_then(|t| t.render(ctx)).map_err(internal)?;
    let csp = axum::http::HeaderValue::from_str(&content_security_policy(&nonce)).map_err(internal)?;
    Ok(([(axum::http::header::CONTENT_SECURITY_POLICY, csp)], Html(html)).into_response())
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
        visible
            .map(|id| {
                let app = describe(&st, &id)?;
                let repo = Repository::open_bare(st.repos.path(&id)).map_err(internal)?;
                let environments: Vec<_> = branches(&repo)
                    .map_err(internal)?
                    .into_iter()
                    .map(|(name, head)| environment_of(&st, &id, &name, head))
                    .collect();
                Ok(context! { app, environments })
            })
            .collect::<Result<Vec<_>, HttpError>>()
    })
    .await?;
    page(&state, "applications.html", context! { apps })
}

async fn application(
    State(state): State<AppState>,
    Path((account, application)): Path<(String, String)>,
) -> Result<Response, HttpError> {
    let id = application_id(&state, &account, &application).await.map_err(|e| not_found(e.message))?;
    let st = state.clone();
    let (app, environments, stacks) = blocking(move || {
        let app = describe(&st, &id)?;
        let repo = Repository::open_bare(st.repos.path(&id)).map_err(internal)?;
        let mut environments = Vec::new();
        let mut stacks = BTreeMap::new();
        for (name, head) in branches(&repo).map_err(internal)? {
            stacks.insert(name.clone(), stack_of(&st, &repo, head)?);
            let host = environment::environment_host(&st, &id, &name);
            let e = environment_of(&st, &id, &name, head);
            let commit = view::commits(&repo, [e.commit.as_str()]).remove(&e.commit).unwrap_or_default();
            environments.push(context! { host, subject => commit.subject, ..minijinja::Value::from_serialize(&e) });
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
    let st = state.clone();
    let id = application_id(&state, &app.account, &app.application).await.map_err(|e| not_found(e.message))?;
    let deployments = blocking(move || {
        let (deployments, _) = st.deployer.records().page(&filter, 0, 50).map_err(internal)?;
        let repo = Repository::open_bare(st.repos.path(&id)).map_err(internal)?;
        let commits = view::commits(&repo, deployments.iter().map(|d| d.request.commit.as_str()));
        Ok(deployments.into_iter().map(|d| view::Row::new(d, &commits)).collect::<Vec<_>>())
    })
    .await?;
    page(&state, "application.html", context! { app, environments, stacks, deployments })
}

async fn deployment(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Response, HttpError> {
    let found = match id.parse::<u64>() {
        Ok(n) => crate::web::query::find(&state, &principal, n).await.ok(),
        Err(_) => None,
    };
    let d = found.ok_or_else(|| not_found(format!("no deployment {id}")))?;
    let st = state.clone();
    let d = blocking(move || {
        let r = &d.request;
        let repo = RepoId::new(&r.account, &r.application, &r.repo)
            .ok()
            .and_then(|rid| Repository::open_bare(st.repos.path(&rid)).ok());
        let commits = repo.map(|repo| view::commits(&repo, [r.commit.as_str()])).unwrap_or_default();
        Ok(view::Row::new(d, &commits))
    })
    .await?;
    let api_url = crate::web::deployment_url("", d.d.id);
    page(&state, "deployment.html", context! { d, api_url })
}

async fn packages(State(state): State<AppState>) -> Result<Response, HttpError> {
    let store = crate::packages::PackageStore::new(&state.settings.data_dir);
    let packages = blocking(move || {
        Ok(store.catalog().all().iter().filter_map(|n| crate::web::query::package(&store, n)).collect::<Vec<_>>())
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

/// A console form posted from another site (login CSRF: being logged in as the attacker) is
/// refused. Browsers say where a form comes from in `Sec-Fetch-Site` and `Origin`; a request
/// with neither (curl, a script) is not a browser being tricked.
fn same_origin(state: &AppState, headers: &HeaderMap) -> Result<(), HttpError> {
    let refuse =
        || HttpError::new(StatusCode::FORBIDDEN, "cross-site form refused: log in from the devpop console's own page");
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        if !matches!(site, "same-origin" | "none") {
            return Err(refuse());
        }
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("null").trim_end_matches('/');
        let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("");
        let authority = origin.split_once("://").map_or("", |(_, a)| a);
        let base = state.base_url.trim_end_matches('/');
        if origin != base && (host.is_empty() || !authority.eq_ignore_ascii_case(host)) {
            return Err(refuse());
        }
    }
    Ok(())
}

/// Is the browser talking HTTPS to us? The public URL says so, or a trusted reverse proxy does
/// (`X-Forwarded-Proto` from anyone else is ignored).
fn over_https(state: &AppState, peer: std::net::SocketAddr, headers: &HeaderMap) -> bool {
    state.base_url.starts_with("https://")
        || (state.settings.trusted_proxies.contains(&peer.ip())
            && headers
                .get("x-forwarded-proto")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|p| p.trim().eq_ignore_ascii_case("https")))
}

fn session_cookie(value: &str, max_age: u64, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{SESSION_COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}")
}

/// Logs the console in with an API token: an opaque session id in an HttpOnly, SameSite=Strict
/// cookie (the console's actions are JSON API calls, which other sites cannot forge), `Secure`
/// over HTTPS, with the session's lifetime as its Max-Age (the server ends it then, or sooner
/// when it sits unused).
async fn login(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Result<Response, HttpError> {
    same_origin(&state, &headers)?;
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
    let cookie = session_cookie(&session, state.sessions.lifetime().as_secs(), over_https(&state, peer, &headers));
    Ok(([(header::SET_COOKIE, cookie)], Redirect::to("/console")).into_response())
}

async fn logout(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
) -> Result<Response, HttpError> {
    same_origin(&state, &headers)?;
    if let Some(session) = crate::auth::cookie(&headers, SESSION_COOKIE) {
        state.sessions.close(&session);
    }
    let cookie = session_cookie("", 0, over_https(&state, peer, &headers));
    Ok(([(header::SET_COOKIE, cookie)], Redirect::to("/console/login")).into_response())
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_console_template_parses() {
        let t = super::templates();
        for name in [
            "applications.html",
            "application.html",
            "environment.html",
            "files.html",
            "confirm.html",
            "logs.html",
            "deployments.html",
        ] {
            assert!(t.get_template(name).is_ok(), "{name}");
        }
    }

    #[test]
    fn the_deployments_table_lists_an_environment_with_an_application_and_a_rollback_link_with_an_environment() {
        let t = super::templates();
        let d = minijinja::context! { id => 7, environment => "Staging", state => "ready", commit => "0123456789abcdef",
        subject => "s", cause => "push", who => "anonymous", created_at => "2026-01-01T00:00:00Z", action => "deploy" };
        let of_app =
            t.render_str("{% include 'deployments.html' %}", minijinja::context! { deployments => vec![d.clone()] });
        let of_app = of_app.unwrap();
        assert!(of_app.contains("<td>Staging</td>") && !of_app.contains("/do/rollback"), "{of_app}");
        let of_env = t
            .render_str(
                "{% with deployments = ds, rollback = '/e', table_id = 'env-deployments' %}{% include 'deployments.html' %}{% endwith %}",
                minijinja::context! { ds => vec![d] },
            )
            .unwrap();
        assert!(of_env.contains("id=\"env-deployments\"") && of_env.contains("e/do/rollback?to=7\""), "{of_env}");
        assert!(!of_env.contains("<td>Staging</td>"), "{of_env}");
    }
}
