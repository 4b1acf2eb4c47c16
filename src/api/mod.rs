//! The REST API (JSON under `/api/v1`) and the hooks' internal endpoint.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;

use crate::http_error::HttpError;
use crate::records::{Deployment, NewDeployment};
use crate::server::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/deployments", get(list_deployments))
        .route("/api/v1/deployments/{id}", get(get_deployment))
        .route("/internal/v1/deployments", post(create_deployment))
        .route("/internal/v1/dry-run", post(dry_run))
        .route("/internal/v1/reservations", post(reserve_deployment))
}

/// The link a push prints for a deployment.
pub fn deployment_url(base: &str, id: u64) -> String {
    format!("{}/api/v1/deployments/{id}", base.trim_end_matches('/'))
}

async fn get_deployment(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<Deployment>, HttpError> {
    let id: u64 = id.parse().map_err(|_| {
        HttpError::api(StatusCode::BAD_REQUEST, "invalid_id", format!("{id:?} is not a deployment id (a number)"))
    })?;
    state
        .deployer
        .records()
        .get(id)
        .map(Json)
        .ok_or_else(|| HttpError::api(StatusCode::NOT_FOUND, "not_found", format!("no deployment {id}")))
}

#[derive(Deserialize)]
struct ListQuery {
    account: Option<String>,
    application: Option<String>,
    environment: Option<String>,
    #[serde(default = "default_limit")]
    limit: usize,
}

fn default_limit() -> usize {
    50
}

async fn list_deployments(State(state): State<AppState>, Query(q): Query<ListQuery>) -> Json<Vec<Deployment>> {
    let matches = |want: &Option<String>, have: &str| want.as_deref().is_none_or(|w| w == have);
    let mut list = state.deployer.records().list(|d| {
        matches(&q.account, &d.request.account)
            && matches(&q.application, &d.request.application)
            && matches(&q.environment, &d.request.environment)
    });
    list.truncate(q.limit.min(500));
    Json(list)
}

#[derive(serde::Serialize)]
struct Queued {
    id: u64,
    url: String,
}

/// Called by the post-receive hook; proves itself with the per-start hook token.
async fn create_deployment(
    State(state): State<AppState>,
    headers: HeaderMap,
    Json(request): Json<NewDeployment>,
) -> Result<Json<Queued>, HttpError> {
    check_hook_token(&state, &headers)?;
    let d = state.deployer.submit(request).await?;
    Ok(Json(Queued { id: d.id, url: deployment_url(&state.base_url, d.id) }))
}

#[derive(Deserialize)]
struct Reservation {
    push: String,
    deployment: NewDeployment,
}

/// Called by the pre-receive hook once a push passed its checks: the id its deployment will
/// have (recorded when the branch moves; see `Deployer::push_finished`).
async fn reserve_deployment(
    State(state): State<AppState>,
    headers: HeaderMap,
    Json(r): Json<Reservation>,
) -> Result<Json<Queued>, HttpError> {
    check_hook_token(&state, &headers)?;
    let id = state.deployer.reserve(&r.push, r.deployment)?;
    Ok(Json(Queued { id, url: deployment_url(&state.base_url, id) }))
}

#[derive(serde::Serialize)]
struct DryRun {
    /// What the target said, when it had something to check.
    message: Option<String>,
    error: Option<String>,
}

/// Called by the pre-receive hook for `-o dry-run`: the target's own check of the render.
async fn dry_run(
    State(state): State<AppState>,
    headers: HeaderMap,
    Json(request): Json<NewDeployment>,
) -> Result<Json<DryRun>, HttpError> {
    check_hook_token(&state, &headers)?;
    Ok(Json(match state.deployer.dry_run(request).await {
        Ok(message) => DryRun { message, error: None },
        Err(e) => DryRun { message: None, error: Some(e) },
    }))
}

fn check_hook_token(state: &AppState, headers: &HeaderMap) -> Result<(), HttpError> {
    let token = headers.get("x-devpop-hook-token").and_then(|v| v.to_str().ok()).unwrap_or("");
    if constant_time_eq(token.as_bytes(), state.hook_token.as_bytes()) {
        Ok(())
    } else {
        Err(HttpError::api(StatusCode::FORBIDDEN, "forbidden", "only devpop's own hooks may call the internal API"))
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
