//! The console's lifecycle actions on an environment: rollback to a chosen deployment and
//! redeploy, through the same functions as the API's (`api::lifecycle`), so that both follow one
//! set of rules (held, checked, recorded, audited). Deletes go through the API's own functions
//! (`api::applications`).

use crate::api::lifecycle::{redeploy_environment, rollback_environment};
use crate::auth::Principal;
use crate::names::RepoId;
use crate::web::error::HttpError;
use crate::web::state::AppState;

/// What a lifecycle action can answer besides its deployment, as the console shows it.
#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    /// The request cannot be done as asked (a deployment of another environment, ...).
    #[error("{0}")]
    Refused(String),
    /// The commit it made was refused by the checks a push gets: their lines.
    #[error("refused by the same checks as a push:\n{}", .0.join("\n"))]
    Checks(Vec<String>),
    #[error("{}", .0.message)]
    Http(HttpError),
}

impl From<HttpError> for LifecycleError {
    fn from(e: HttpError) -> Self {
        match (e.diagnostics.clone(), e.status.is_client_error()) {
            (Some(lines), _) => LifecycleError::Checks(lines),
            (None, true) => LifecycleError::Refused(e.message),
            (None, false) => LifecycleError::Http(e),
        }
    }
}

/// Rolls `env` back to the state deployment `to` deployed; the new deployment's id.
pub async fn rollback(
    state: &AppState,
    principal: &Principal,
    peer: std::net::SocketAddr,
    id: &RepoId,
    env: &str,
    to: u64,
) -> Result<u64, LifecycleError> {
    Ok(rollback_environment(state, principal, peer, id, env, Some(to)).await?.0.id)
}

/// Deploys `env`'s branch head again; the new deployment's id.
pub async fn redeploy(
    state: &AppState,
    principal: &Principal,
    peer: std::net::SocketAddr,
    id: &RepoId,
    env: &str,
) -> Result<u64, LifecycleError> {
    Ok(redeploy_environment(state, principal, peer, id, env).await?.id)
}
