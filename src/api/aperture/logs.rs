//! `GET .../environment/{environmentName}/logs` (and devpop's own
//! `.../environments/{environment}/logs`): the environment's container logs (every
//! module's and devpop's own hops'), newest first, as Section's log entries (`timestamp`,
//! `instanceName`, `message`) plus the `module` and `container` they came from. With
//! `follow=true`, newline-delimited JSON, one entry per line as it is written. Query:
//! `moduleName` (one module), `length` (1 to 1000 lines, default 100).

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::Response;
use futures_util::StreamExt;
use serde::Deserialize;

use super::applications::with_environment;
use super::{ok, ApiError, Result};
use crate::applying::logs::LogQuery;
use crate::web::state::AppState;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogsParams {
    #[serde(rename = "moduleName")]
    module_name: Option<String>,
    length: Option<usize>,
    #[serde(default)]
    follow: bool,
}

/// At Aperture's path (`/account/{accountId}/application/{applicationId}/...`: ids).
pub async fn logs(
    State(state): State<AppState>,
    Path(names): Path<(String, String, String)>,
    Query(params): Query<LogsParams>,
) -> Result<Response> {
    let (id, env) = with_environment(&state, names, |_, _, id, _, env, _| Ok((id.clone(), env.to_owned()))).await?;
    answer(&state, &id, &env, params).await
}

/// At devpop's own path (`/accounts/{account}/applications/{application}/...`: names).
pub async fn logs_by_name(
    State(state): State<AppState>,
    Path((account, application, env)): Path<(String, String, String)>,
    Query(params): Query<LogsParams>,
) -> Result<Response> {
    let id = crate::web::query::application_id(&state, &account, &application).await?;
    let (st, rid, name) = (state.clone(), id.clone(), env.clone());
    crate::web::query::blocking(move || {
        let repo = git2::Repository::open_bare(st.repos.path(&rid)).map_err(crate::web::error::internal)?;
        st.edits(&repo, &rid).head(&name)?;
        Ok(())
    })
    .await?;
    answer(&state, &id, &env, params).await
}

async fn answer(state: &AppState, id: &crate::names::RepoId, env: &str, params: LogsParams) -> Result<Response> {
    let query = LogQuery::new(params.module_name.as_deref(), params.length)?;
    let namespace = crate::rendering::naming::namespace(&state.settings.hook.checks.render.namespace_prefix, id, env);
    let target = state.deployer.target();
    if !params.follow {
        return Ok(ok(target.logs(&namespace, &query).await?));
    }
    let entries = target.follow_logs(&namespace, &query).await?;
    let lines = entries.map(|entry| {
        let mut line = serde_json::to_vec(&entry).unwrap_or_default();
        line.push(b'\n');
        Ok::<_, std::convert::Infallible>(line)
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(lines))
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}
