//! Deployments: one, a page of them, and one's live events (Server-Sent Events).

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::Extension;
use axum::Json;
use futures_util::Stream;
use serde::Deserialize;

use super::{api_err, page, Page, PageQuery};
use crate::auth::Principal;
use crate::http_error::HttpError;
use crate::records::Deployment;
use crate::server::AppState;

/// The link a push prints for a deployment.
pub fn deployment_url(base: &str, id: u64) -> String {
    format!("{}/api/v1/deployments/{id}", base.trim_end_matches('/'))
}

fn parse_id(id: &str) -> Result<u64, HttpError> {
    id.parse().map_err(|_| {
        api_err(StatusCode::BAD_REQUEST, "invalid_id", format!("{id:?} is not a deployment id (a number)"))
    })
}

/// The deployment, if it exists and the principal may see it (404 otherwise: another
/// account's deployments are not revealed).
pub(crate) fn find(state: &AppState, principal: &Principal, id: u64) -> Result<Deployment, HttpError> {
    state
        .deployer
        .records()
        .get(id)
        .filter(|d| principal.may_read(&d.request.account))
        .ok_or_else(|| api_err(StatusCode::NOT_FOUND, "not_found", format!("no deployment {id}")))
}

pub async fn get(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<Deployment>, HttpError> {
    Ok(Json(find(&state, &principal, parse_id(&id)?)?))
}

#[derive(Deserialize)]
pub struct ListQuery {
    account: Option<String>,
    application: Option<String>,
    environment: Option<String>,
    #[serde(flatten)]
    page: PageQuery,
}

pub async fn list(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Query(q): Query<ListQuery>,
) -> Json<Page<Deployment>> {
    let matches = |want: &Option<String>, have: &str| want.as_deref().is_none_or(|w| w == have);
    let list = state.deployer.records().list(|d| {
        principal.may_read(&d.request.account)
            && matches(&q.account, &d.request.account)
            && matches(&q.application, &d.request.application)
            && matches(&q.environment, &d.request.environment)
    });
    Json(page(list, &q.page))
}

/// The deployment now and at every change, as `event: deployment` with its JSON, until it
/// reaches a final state (then the stream ends).
pub async fn events(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, HttpError> {
    use tokio::sync::broadcast::error::RecvError;
    let id = parse_id(&id)?;
    // Subscribe before reading the current state, so no change falls in between.
    let rx = state.deployer.subscribe();
    let first = find(&state, &principal, id)?;
    let records = state.deployer.records().clone();
    let stream = futures_util::stream::unfold(Some((Some(first), rx)), move |st| {
        let records = records.clone();
        async move {
            let (pending, mut rx) = st?;
            let d = match pending {
                Some(d) => d,
                None => loop {
                    match rx.recv().await {
                        Ok(d) if d.id == id => break d,
                        Ok(_) => {}
                        // Missed some: the record has the latest state.
                        Err(RecvError::Lagged(_)) => match records.get(id) {
                            Some(d) if d.state.is_terminal() => break d,
                            _ => {}
                        },
                        Err(RecvError::Closed) => return None,
                    }
                },
            };
            let event = Event::default().event("deployment").json_data(&d).expect("deployments serialise");
            let next = (!d.state.is_terminal()).then_some((None, rx));
            Some((Ok(event), next))
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}
