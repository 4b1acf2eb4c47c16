//! Rollback and redeploy over the API, with a push's rules: the environment is held for the
//! whole change (as a push holds it), the commit is checked exactly as a push of it would be,
//! the deployment is recorded and queued, and the action is audited with the token's id.
//! Both answer 202 with the deployment (a rollback's also says which one it `restores`); it
//! runs after the answer: follow it at `/api/v1/deployments/{id}`.
//!
//! - `POST .../environments/{environment}/rollback`, body `{"to": <deployment id>}` (optional;
//!   default: the newest earlier ready deployment with a different tree): a new commit on the
//!   branch restoring that deployment's tree ([`crate::lifecycle`]).
//! - `POST .../environments/{environment}/redeploy`: the branch's commit, deployed again.

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use git2::Repository;
use serde::{Deserialize, Serialize};

use super::applications::request;
use crate::auth::Principal;
use crate::lifecycle::{self, Environment};
use crate::names::RepoId;
use crate::records::{Action, Deployment};
use crate::validation::config::is_branch_name;
use crate::web::error::{internal, HttpError};
use crate::web::query::{application_id, blocking};
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
fn environment_of(state: &AppState, (account, application, env): &Names) -> Result<RepoId, HttpError> {
    let id = application_id(state, account, application)?;
    if !is_branch_name(env) {
        return Err(HttpError::bad_request("invalid_name", format!("{env:?} is not an environment name")));
    }
    Ok(id)
}

/// A refused commit: 422 with the lines a push of it would have printed.
fn refused(lines: Vec<String>) -> HttpError {
    HttpError::unprocessable("refused", "refused by the same checks as a push (see diagnostics)")
        .with_diagnostics(lines)
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
    let id = environment_of(&state, &names)?;
    let (deployment, restores) = rollback_environment(&state, &principal, peer, &id, &names.2, body.to).await?;
    Ok((StatusCode::ACCEPTED, Json(RolledBack { deployment, restores })))
}

pub async fn redeploy(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    Path(names): Path<Names>,
) -> Result<(StatusCode, Json<Deployment>), HttpError> {
    let id = environment_of(&state, &names)?;
    let d = redeploy_environment(&state, &principal, peer, &id, &names.2).await?;
    Ok((StatusCode::ACCEPTED, Json(d)))
}

/// Rolls `env` back (to deployment `to`, or the newest earlier ready one with another tree):
/// the restoring commit checked and the branch moved under the environment's hold, the
/// deployment submitted, the action audited. The API's and the console's rollback. Returns the
/// deployment and the id of the one it restores. Its pusher reads `who (rollback to
/// deployment N)`, which the console shows as the deployment's cause.
pub async fn rollback_environment(
    state: &AppState,
    principal: &Principal,
    peer: std::net::SocketAddr,
    id: &RepoId,
    env: &str,
    to: Option<u64>,
) -> Result<(Deployment, u64), HttpError> {
    let key = (id.account.clone(), id.application.clone(), id.repo.clone(), env.to_owned());
    let (st, rid, name) = (state.clone(), id.clone(), env.to_owned());
    let holder = state.next_push_id();
    let who = super::actor(principal);
    let (plan, d) = crate::edits::held(&state.deployer, &holder, key, async move {
        let (st2, rid2, name2) = (st.clone(), rid.clone(), name.clone());
        let (plan, lines) = blocking(move || {
            let environment = Environment { id: &rid2, name: &name2 };
            let path = st2.repos.path(&rid2);
            let plan = lifecycle::plan_rollback(st2.deployer.records(), &path, &environment, to)?;
            let repo = Repository::open_bare(&path).map_err(internal)?;
            let log = format!("devpop: roll back {name2} to deployment {}", plan.target.id);
            let checked = st2.edits(&repo, &rid2).check_and_move(&name2, plan.commit, Some(plan.head), &log)?;
            if !checked.accepted {
                return Err(refused(checked.lines));
            }
            Ok((plan, checked.lines))
        })
        .await?;
        let pusher = format!("{who} (rollback to deployment {})", plan.target.id);
        let mut new = request(&rid, &name, plan.commit.to_string(), Action::Deploy, &pusher);
        new.validation = lines;
        let d = st.deployer.submit(new).await?;
        Ok::<_, HttpError>((plan, d))
    })
    .await?;
    let (audit, restores, rid, name, principal) =
        (state.audit.clone(), plan.target.id, id.clone(), env.to_owned(), principal.clone());
    // The audit log is a database write: off the async threads.
    blocking(move || {
        let environment = Environment { id: &rid, name: &name };
        lifecycle::audit_rollback(&audit, &super::actor(&principal), Some(peer.ip().to_string()), &environment, &plan);
        Ok(())
    })
    .await?;
    Ok((d, restores))
}

/// Deploys `env`'s branch head again, checked again (a package may have changed), the branch
/// unchanged; under the environment's hold, audited. The API's and the console's redeploy. Its
/// pusher reads `who (redeploy)`.
pub async fn redeploy_environment(
    state: &AppState,
    principal: &Principal,
    peer: std::net::SocketAddr,
    id: &RepoId,
    env: &str,
) -> Result<Deployment, HttpError> {
    let key = (id.account.clone(), id.application.clone(), id.repo.clone(), env.to_owned());
    let (st, rid, name) = (state.clone(), id.clone(), env.to_owned());
    let holder = state.next_push_id();
    let pusher = format!("{} (redeploy)", super::actor(principal));
    let (head, d) = crate::edits::held(&state.deployer, &holder, key, async move {
        let (st2, rid2, name2) = (st.clone(), rid.clone(), name.clone());
        let (head, lines) = blocking(move || {
            let environment = Environment { id: &rid2, name: &name2 };
            let repo = Repository::open_bare(st2.repos.path(&rid2)).map_err(internal)?;
            let head = environment.head(&repo)?;
            let log = format!("devpop: redeploy {name2}");
            let checked = st2.edits(&repo, &rid2).check_and_move(&name2, head, Some(head), &log)?;
            if !checked.accepted {
                return Err(refused(checked.lines));
            }
            Ok((head, checked.lines))
        })
        .await?;
        let mut new = request(&rid, &name, head.to_string(), Action::Deploy, &pusher);
        new.validation = lines;
        let d = st.deployer.submit(new).await?;
        Ok::<_, HttpError>((head, d))
    })
    .await?;
    let (audit, deployment, rid, name, principal) =
        (state.audit.clone(), d.id, id.clone(), env.to_owned(), principal.clone());
    blocking(move || {
        let environment = Environment { id: &rid, name: &name };
        lifecycle::audit_redeploy(
            &audit,
            &super::actor(&principal),
            Some(peer.ip().to_string()),
            &environment,
            head,
            deployment,
        );
        Ok(())
    })
    .await?;
    Ok(d)
}
