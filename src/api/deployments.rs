//! Deployments: one, a page of them (paged and filtered by the records store), one's live
//! events (Server-Sent Events), and reconciliation on demand.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{ConnectInfo, Path, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::Extension;
use axum::Json;
use futures_util::Stream;
use serde::Deserialize;

use super::{audit_action, blocking, ApiQuery, Page, PageQuery};
use crate::auth::{Principal, ALL_ACCOUNTS};
use crate::records::{Deployment, Filter, State as DeploymentState};
use crate::web::error::HttpError;
use crate::web::query::find;
use crate::web::state::AppState;

fn parse_id(id: &str) -> Result<u64, HttpError> {
    id.parse().map_err(|_| HttpError::bad_request("invalid_id", format!("{id:?} is not a deployment id (a number)")))
}

pub async fn get(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<Deployment>, HttpError> {
    Ok(Json(find(&state, &principal, parse_id(&id)?).await?))
}

#[derive(Deserialize)]
pub struct ListQuery {
    account: Option<String>,
    application: Option<String>,
    repo: Option<String>,
    environment: Option<String>,
    state: Option<String>,
    /// A cursor: deployments older than this id (the last id of the previous page).
    before: Option<String>,
    #[serde(flatten)]
    page: PageQuery,
}

/// A page of the deployments `filter` selects that the principal may see, newest first.
pub(crate) async fn page_of(
    state: &AppState,
    principal: &Principal,
    mut filter: Filter,
    q: &PageQuery,
) -> Result<Page<Deployment>, HttpError> {
    let (offset, limit) = (q.offset, q.limit());
    // An account-scoped token sees its own account's deployments only.
    if let Principal::Token { account, .. } = principal {
        if account != ALL_ACCOUNTS {
            if filter.account.as_ref().is_some_and(|a| a != account) {
                return Ok(Page { items: Vec::new(), total: 0, offset, limit });
            }
            filter.account = Some(account.clone());
        }
    }
    let records = state.deployer.records().clone();
    let (items, total) =
        blocking(move || records.page(&filter, offset as u64, limit as u64).map_err(HttpError::from)).await?;
    Ok(Page { items, total: total as usize, offset, limit })
}

pub async fn list(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<Page<Deployment>>, HttpError> {
    let deployment_state = match q.state.as_deref() {
        None => None,
        Some(s) => Some(DeploymentState::parse(s).ok_or_else(|| {
            HttpError::bad_request("invalid_query",
                format!("{s:?} is not a deployment state (queued, rendering, applying, progressing, ready, failed, superseded)"),
            )
        })?),
    };
    let before = match q.before.as_deref() {
        None => None,
        Some(b) => Some(b.parse::<u64>().map_err(|_| {
            HttpError::bad_request("invalid_query", format!("before={b:?}: a deployment id (a number)"))
        })?),
    };
    let filter = Filter {
        account: q.account,
        application: q.application,
        repo: q.repo,
        environment: q.environment,
        state: deployment_state,
        before,
    };
    Ok(Json(page_of(&state, &principal, filter, &q.page).await?))
}

/// Reconciliation on demand (admin): queues a deployment for every environment whose branch
/// is not at the commit it was last asked to run; answers the deployments queued.
pub async fn reconcile(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
) -> Result<Json<Vec<Deployment>>, HttpError> {
    if !principal.is_admin() {
        return Err(HttpError::api(
            StatusCode::FORBIDDEN,
            "forbidden",
            "only an admin token (devpop token create --admin) may reconcile",
        ));
    }
    let queued = state.deployer.reconcile().await.map_err(HttpError::from)?;
    let ids: Vec<String> = queued.iter().map(|d| d.id.to_string()).collect();
    audit_action(&state, &principal, peer, "reconcile", ALL_ACCOUNTS, "*", &format!("queued: [{}]", ids.join(", ")))
        .await;
    Ok(Json(queued))
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
    let first = find(&state, &principal, id).await?;
    let deployer = state.deployer.clone();
    let stream = futures_util::stream::unfold(Some((Some(first), rx)), move |st| {
        let deployer = deployer.clone();
        async move {
            let (pending, mut rx) = st?;
            let d = match pending {
                Some(d) => d,
                None => loop {
                    match rx.recv().await {
                        Ok(d) if d.id == id => break d,
                        Ok(_) => {}
                        // Missed some: the record has the latest state.
                        Err(RecvError::Lagged(_)) => match deployer.get(id).await {
                            Ok(Some(d)) if d.state.is_terminal() => break d,
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
