//! The console's lifecycle actions on an environment: rollback to a chosen deployment and
//! redeploy. Each is one function here, so that pointing the console at another implementation
//! (a shared domain module) is a change in this file only. Deletes go through the API's own
//! functions (`api::applications`).

use git2::Repository;

use crate::api::applications::{check_and_move, environment_head, internal, request};
use crate::api::{actor, audit_action, blocking};
use crate::auth::Principal;
use crate::http_error::HttpError;
use crate::names::RepoId;
use crate::records::Action;
use crate::server::AppState;

/// What a lifecycle action can answer besides its deployment.
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
        LifecycleError::Http(e)
    }
}

/// Rolls `env` back to the state deployment `to` deployed: a new commit on top of the branch
/// with that deployment's tree (history stays linear), checked like a push, then deployed.
/// Returns the new deployment's id.
pub async fn rollback(
    state: &AppState,
    principal: &Principal,
    peer: std::net::SocketAddr,
    id: &RepoId,
    env: &str,
    to: u64,
) -> Result<u64, LifecycleError> {
    let records = state.deployer.records().clone();
    let target = blocking(move || Ok(records.get(to))).await?;
    let key = (id.account.clone(), id.application.clone(), id.repo.clone(), env.to_owned());
    let target = target
        .filter(|d| d.environment_key() == key)
        .ok_or_else(|| LifecycleError::Refused(format!("deployment {to} is not a deployment of {env}")))?;
    if target.request.action != Action::Deploy {
        return Err(LifecycleError::Refused(format!(
            "deployment {to} removed {env}; pick a deployment that deployed it"
        )));
    }
    let (st, rid, name) = (state.clone(), id.clone(), env.to_owned());
    let restore = target.request.commit.clone();
    let checked = blocking(move || {
        let path = st.repos.path(&rid);
        let repo = Repository::open_bare(&path).map_err(internal)?;
        let head = environment_head(&repo, &rid.account, &rid.application, &name)?;
        let message = format!(
            "Roll back {name} to deployment {to} (commit {})\n\nRestores the state deployed by deployment {to} ({restore}).\n",
            crate::records::short(&restore)
        );
        let commit = crate::repos::restore_commit(&path, &name, &restore, &message).map_err(internal)?;
        let log = format!("devpop: roll back to deployment {to}");
        let checked = check_and_move(&st, &repo, &rid, &name, commit, Some(head), &log)?;
        Ok((commit, checked))
    })
    .await?;
    let (commit, checked) = checked;
    if !checked.accepted {
        return Err(LifecycleError::Checks(checked.lines));
    }
    let who = format!("{} (rollback to deployment {to})", actor(principal));
    let mut new = request(id, env, commit.to_string(), Action::Deploy, &who);
    new.validation = checked.lines;
    let d = state.deployer.submit(new).await.map_err(HttpError::from)?;
    let target_name = format!("{}/{}/{env}", id.application, id.repo);
    let detail =
        format!("to deployment {to} (commit {}), deployment {}", crate::records::short(&target.request.commit), d.id);
    audit_action(state, principal, peer, "rollback", &id.account, &target_name, &detail);
    Ok(d.id)
}

/// Deploys `env`'s branch head again (the same commit, rendered and applied anew).
pub async fn redeploy(
    state: &AppState,
    principal: &Principal,
    peer: std::net::SocketAddr,
    id: &RepoId,
    env: &str,
) -> Result<u64, LifecycleError> {
    let (st, rid, name) = (state.clone(), id.clone(), env.to_owned());
    let head = blocking(move || {
        let repo = Repository::open_bare(st.repos.path(&rid)).map_err(internal)?;
        environment_head(&repo, &rid.account, &rid.application, &name)
    })
    .await?;
    let who = format!("{} (redeploy)", actor(principal));
    let d = state
        .deployer
        .submit(request(id, env, head.to_string(), Action::Deploy, &who))
        .await
        .map_err(HttpError::from)?;
    let target = format!("{}/{}/{env}", id.application, id.repo);
    audit_action(
        state,
        principal,
        peer,
        "redeploy",
        &id.account,
        &target,
        &format!("commit {}, deployment {}", crate::records::short(&head.to_string()), d.id),
    );
    Ok(d.id)
}
