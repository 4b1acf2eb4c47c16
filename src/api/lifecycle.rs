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

use super::applications::{application_id, check_and_move, internal, request};
use super::{api_err, blocking};
use crate::auth::Principal;
use crate::http_error::HttpError;
use crate::lifecycle::{self, Environment, LifecycleError};
use crate::names::RepoId;
use crate::records::{Action, Deployment};
use crate::server::AppState;
use crate::validation::config::is_branch_name;

type Names = (String, String, String);

/// The body of a rollback (all optional).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RollbackBody {
    /// The deployment whose state to restore.
    #[serde(default)]
    pub to: Option<u64>,
}

fn lifecycle_err(e: LifecycleError) -> HttpError {
    use LifecycleError as E;
    let status = match &e {
        E::NoDeployment(_) | E::NoEnvironment { .. } => (StatusCode::NOT_FOUND, "not_found"),
        E::OtherEnvironment { .. } | E::NotADeploy(_) | E::NotReady { .. } | E::CommitGone(_) => {
            (StatusCode::UNPROCESSABLE_ENTITY, "invalid_target")
        }
        E::NothingToRestore(_) => (StatusCode::CONFLICT, "nothing_to_restore"),
        E::Records(_) | E::Repo { .. } => return internal(e),
    };
    api_err(status.0, status.1, e.to_string())
}

fn who(principal: &Principal) -> String {
    match principal {
        Principal::Local => "local".to_owned(),
        Principal::Token { id, .. } => id.clone(),
    }
}

/// The environment held as a push holds it, from now until dropped (also when the request is
/// dropped half-way: the hold is let go on a task).
struct Held {
    state: AppState,
    push: String,
}

impl Held {
    async fn take(state: &AppState, id: &RepoId, env: &str) -> Held {
        let push = format!("api-{}", state.next_push_id());
        state.deployer.push_started(&push);
        let key = (id.account.clone(), id.application.clone(), id.repo.clone(), env.to_owned());
        // `false` only when the push ended meanwhile, which nothing here does.
        state.deployer.hold(&push, key, || {}).await;
        Held { state: state.clone(), push }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let (deployer, push) = (self.state.deployer.clone(), std::mem::take(&mut self.push));
        tokio::spawn(async move { deployer.push_finished(&push, true).await });
    }
}

/// The application and environment named in the path (400 for a bad name, 404 for none).
fn environment_of(state: &AppState, (account, application, env): &Names) -> Result<RepoId, HttpError> {
    let id = application_id(state, account, application)?;
    if !is_branch_name(env) {
        return Err(api_err(StatusCode::BAD_REQUEST, "invalid_name", format!("{env:?} is not an environment name")));
    }
    Ok(id)
}

/// A refused commit: 422 with the lines a push of it would have printed.
fn refused(lines: &[String]) -> HttpError {
    api_err(
        StatusCode::UNPROCESSABLE_ENTITY,
        "refused",
        format!("refused by the same checks as a push:\n{}", lines.join("\n")),
    )
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
            api_err(
                StatusCode::BAD_REQUEST,
                "invalid_body",
                format!("{e}; send {{\"to\": <deployment id>}} or nothing"),
            )
        })?
    };
    let id = environment_of(&state, &names)?;
    let env = names.2;
    let held = Held::take(&state, &id, &env).await;
    let (st, rid, name) = (state.clone(), id.clone(), env.clone());
    let (plan, lines) = blocking(move || {
        let environment = Environment { id: &rid, name: &name };
        let path = st.repos.path(&rid);
        let plan =
            lifecycle::plan_rollback(st.deployer.records(), &path, &environment, body.to).map_err(lifecycle_err)?;
        let repo = Repository::open_bare(&path).map_err(internal)?;
        let log = format!("devpop: roll back {name} to deployment {}", plan.target.id);
        let checked = check_and_move(&st, &repo, &rid, &name, plan.commit, Some(plan.head), &log)?;
        if !checked.accepted {
            return Err(refused(&checked.lines));
        }
        Ok((plan, checked.lines))
    })
    .await?;
    let mut new = request(&id, &env, plan.commit.to_string(), Action::Deploy, &who(&principal));
    new.validation = lines;
    let d = state.deployer.submit(new).await?;
    drop(held);
    let (audit, restores) = (state.audit.clone(), plan.target.id);
    // The audit log is a database write: off the async threads.
    blocking(move || {
        let environment = Environment { id: &id, name: &env };
        lifecycle::audit_rollback(&audit, &who(&principal), Some(peer.ip().to_string()), &environment, &plan);
        Ok(())
    })
    .await?;
    Ok((StatusCode::ACCEPTED, Json(RolledBack { deployment: d, restores })))
}

pub async fn redeploy(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    Path(names): Path<Names>,
) -> Result<(StatusCode, Json<Deployment>), HttpError> {
    let id = environment_of(&state, &names)?;
    let env = names.2;
    let held = Held::take(&state, &id, &env).await;
    let (st, rid, name) = (state.clone(), id.clone(), env.clone());
    let (head, lines) = blocking(move || {
        let environment = Environment { id: &rid, name: &name };
        let repo = Repository::open_bare(st.repos.path(&rid)).map_err(internal)?;
        let head = environment.head(&repo).map_err(lifecycle_err)?;
        // The branch stays where it is; the checks run again (a package may have changed).
        let log = format!("devpop: redeploy {name}");
        let checked = check_and_move(&st, &repo, &rid, &name, head, Some(head), &log)?;
        if !checked.accepted {
            return Err(refused(&checked.lines));
        }
        Ok((head, checked.lines))
    })
    .await?;
    let mut new = request(&id, &env, head.to_string(), Action::Deploy, &who(&principal));
    new.validation = lines;
    let d = state.deployer.submit(new).await?;
    drop(held);
    let (audit, deployment) = (state.audit.clone(), d.id);
    // The audit log is a database write: off the async threads.
    blocking(move || {
        let environment = Environment { id: &id, name: &env };
        lifecycle::audit_redeploy(
            &audit,
            &who(&principal),
            Some(peer.ip().to_string()),
            &environment,
            head,
            deployment,
        );
        Ok(())
    })
    .await?;
    Ok((StatusCode::ACCEPTED, Json(d)))
}
