//! `GET .../environment/{environmentName}/logs`: the environment's container logs (every
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
use crate::applying::logs::{LogQuery, LogsError};
use crate::server::AppState;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogsParams {
    #[serde(rename = "moduleName")]
    module_name: Option<String>,
    length: Option<usize>,
    #[serde(default)]
    follow: bool,
}

impl From<LogsError> for ApiError {
    fn from(e: LogsError) -> Self {
        let status = match e {
            LogsError::NotHere(_) => StatusCode::NOT_FOUND,
            LogsError::BadQuery(_) => StatusCode::BAD_REQUEST,
            LogsError::Unavailable(_) => StatusCode::BAD_GATEWAY,
        };
        ApiError::new(status, e.to_string())
    }
}

pub async fn logs(
    State(state): State<AppState>,
    Path(names): Path<(String, String, String)>,
    Query(params): Query<LogsParams>,
) -> Result<Response> {
    let query = LogQuery::new(params.module_name.as_deref(), params.length)?;
    let prefix = state.settings.hook.checks.render.namespace_prefix.clone();
    let namespace = with_environment(&state, names, move |_, _, id, _, env, _| {
        Ok(crate::rendering::naming::namespace(&prefix, id, env))
    })
    .await?;
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
