//! Rollback and redeploy over the API, with a push's rules: the environment is held for the
//! whole change (as a push holds it), the commit is checked exactly as a push of it would be,
//! the deployment is recorded and queued, and the action is audited with the token's id.
//! Both answer 202 with the deployment (a rollback's also says which one it `restores`); it
//! runs after the answer: follow it at `/api/v1/deployments/{id}`.
//!
//! - `POST .../environments/{environment}/rollback`, body `{"to": <deployment id>}` (optional;
//!   default: the newest earlier ready deployment with a different tree): a new commit on the
//!   branch restoring that deployment's tree.
//! - `POST .../environments/{environment}/redeploy`: the branch's commit, deployed again.
//!
//! Both are the domain's ([`crate::lifecycle`]); this module is their HTTP shape.

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};

use crate::auth::Principal;
use crate::names::RepoId;
use crate::records::Deployment;
use crate::validation::config::is_branch_name;
use crate::web::error::HttpError;
use crate::web::query::application_id;
use crate::web::state::AppState;

type Names = (String, String, String);

/// The body of a rollback (all optional).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RollbackBody {
    /// The deployment whose state to restore.
    #[serde(default)]
    pub to: Option<u64>,
}

/// The application and environment named in the path (400 for a bad name, 404 for none).
async fn environment_of(state: &AppState, (account, application, env): &Names) -> Result<RepoId, HttpError> {
    let id = application_id(state, account, application).await?;
    if !is_branch_name(env) {
        return Err(HttpError::bad_request("invalid_name", format!("{env:?} is not an environment name")));
    }
    Ok(id)
}

/// A rollback's answer: its deployment, and the deployment whose state it restores.
#[derive(Debug, Serialize)]
pub struct RolledBack {
    #[serde(flatten)]
    pub deployment: Deployment,
    pub restores: u64,
}

pub async fn rollback(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    Path(names): Path<Names>,
    body: Bytes,
) -> Result<(StatusCode, Json<RolledBack>), HttpError> {
    let body: RollbackBody = if body.iter().all(u8::is_ascii_whitespace) {
        RollbackBody::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            HttpError::bad_request("invalid_body", format!("{e}; send {{\"to\": <deployment id>}} or nothing"))
        })?
    };
    let id = environment_of(&state, &names).await?;
    let author = crate::web::author(&principal, peer);
    let (deployment, restores) = state.actions().rollback(&author, &id, &names.2, body.to).await?;
    Ok((StatusCode::ACCEPTED, Json(RolledBack { deployment, restores })))
}

pub async fn redeploy(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    Path(names): Path<Names>,
) -> Result<(StatusCode, Json<Deployment>), HttpError> {
    let id = environment_of(&state, &names).await?;
    let d = state.actions().redeploy(&crate::web::author(&principal, peer), &id, &names.2).await?;
    Ok((StatusCode::ACCEPTED, Json(d)))
}
