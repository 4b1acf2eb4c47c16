//! The hooks' endpoints: announce a push's deployments, queue a `-o wait` deployment, dry-run
//! a render on the target. Only this server's hooks may call them (the per-start token).

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use serde::Deserialize;

use super::deployment_url;
use crate::http_error::HttpError;
use crate::records::NewDeployment;
use crate::server::AppState;

#[derive(serde::Serialize)]
pub(super) struct Queued {
    id: u64,
    url: String,
}

/// Called by the pre-receive hook of a `-o wait` push; proves itself with the per-start token.
pub(super) async fn create_deployment(
    State(state): State<AppState>,
    headers: HeaderMap,
    Json(request): Json<NewDeployment>,
) -> Result<Json<Queued>, HttpError> {
    check_hook_token(&state, &headers)?;
    let d = state.deployer.submit(request).await?;
    Ok(Json(Queued { id: d.id, url: deployment_url(&state.base_url, d.id) }))
}

#[derive(Deserialize)]
pub(super) struct Reservation {
    push: String,
    deployment: NewDeployment,
}

/// Called by the pre-receive hook once a push passed its checks: the id its deployment will
/// have (recorded when the branch moves; see `Deployer::push_finished`).
pub(super) async fn reserve_deployment(
    State(state): State<AppState>,
    headers: HeaderMap,
    Json(r): Json<Reservation>,
) -> Result<Json<Queued>, HttpError> {
    check_hook_token(&state, &headers)?;
    let id = state.deployer.reserve(&r.push, r.deployment)?;
    Ok(Json(Queued { id, url: deployment_url(&state.base_url, id) }))
}

#[derive(serde::Serialize)]
pub(super) struct DryRun {
    /// What the target said, when it had something to check.
    message: Option<String>,
    error: Option<String>,
}

/// Called by the pre-receive hook for `-o dry-run`: the target's own check of the render.
pub(super) async fn dry_run(
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
