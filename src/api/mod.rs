//! The REST API (JSON under `/api/v1`, shaped after Section's Aperture API).
//!
//! Errors are `{"error": {"code", "message"}}` with the matching status (see `http_error`);
//! lists are pages: `{"items", "total", "offset", "limit"}` with `?offset=&limit=`. The
//! OpenAPI document is at `/api/v1/openapi.json`.

pub mod aperture;
pub mod applications;
pub mod audit;
pub mod deployments;
pub mod lifecycle;
pub mod packages;

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::web::error::HttpError;
pub(crate) use crate::web::query::blocking;
use crate::web::state::AppState;

pub fn routes() -> Router<AppState> {
    use applications as a;
    Router::new()
        .route("/api/v1/openapi.json", get(openapi))
        .route("/api/v1/accounts", get(a::list_accounts))
        .route("/api/v1/accounts/{account}/applications", get(a::list_applications).post(a::create_application))
        .route(
            "/api/v1/accounts/{account}/applications/{application}",
            get(a::get_application).delete(a::delete_application),
        )
        .route(
            "/api/v1/accounts/{account}/applications/{application}/environments",
            get(a::list_environments).post(a::create_environment),
        )
        .route(
            "/api/v1/accounts/{account}/applications/{application}/environments/{environment}",
            get(a::get_environment).delete(a::delete_environment),
        )
        .route(
            "/api/v1/accounts/{account}/applications/{application}/environments/{environment}/stack",
            get(a::get_stack),
        )
        .route(
            "/api/v1/accounts/{account}/applications/{application}/environments/{environment}/config",
            get(a::get_config),
        )
        .route(
            "/api/v1/accounts/{account}/applications/{application}/environments/{environment}/deployments",
            get(a::environment_deployments),
        )
        .route(
            "/api/v1/accounts/{account}/applications/{application}/environments/{environment}/rollback",
            axum::routing::post(lifecycle::rollback),
        )
        .route(
            "/api/v1/accounts/{account}/applications/{application}/environments/{environment}/redeploy",
            axum::routing::post(lifecycle::redeploy),
        )
        .route(
            "/api/v1/accounts/{account}/applications/{application}/environments/{environment}/logs",
            get(aperture::logs_by_name),
        )
        .route("/api/v1/deployments", get(deployments::list))
        .route("/api/v1/deployments/{id}", get(deployments::get))
        .route("/api/v1/deployments/{id}/events", get(deployments::events))
        .route("/api/v1/reconcile", axum::routing::post(deployments::reconcile))
        .route("/api/v1/packages", get(packages::list).post(packages::install))
        .route("/api/v1/audit", get(audit::list))
        .route("/api/v1/tokens", get(audit::list_tokens).post(audit::create_token))
        .route("/api/v1/tokens/{id}", axum::routing::delete(audit::revoke_token))
        // Section's Aperture API at its own paths (src/api/aperture/).
        .merge(aperture::routes())
}

const OPENAPI: &str = include_str!("openapi.json");

async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI)
}

/// Records an action in the audit log, as the principal and from the peer address (a SQLite
/// write: off the async threads).
pub(crate) async fn audit_action(
    state: &AppState,
    principal: &crate::auth::Principal,
    peer: std::net::SocketAddr,
    action: &str,
    account: &str,
    target: &str,
    detail: &str,
) {
    let author = crate::web::author(principal, peer);
    let audit = state.audit.clone();
    let (action, account, target, detail) =
        (action.to_owned(), account.to_owned(), target.to_owned(), detail.to_owned());
    let written = tokio::task::spawn_blocking(move || {
        audit.record(&author.who, author.from, &action, &account, &target, &detail)
    });
    if let Err(e) = written.await {
        tracing::error!(error = %e, "cannot write the audit log");
    }
}

#[derive(Debug, Deserialize)]
pub struct PageQuery {
    #[serde(default, deserialize_with = "number")]
    pub offset: usize,
    #[serde(default = "default_limit", deserialize_with = "number")]
    pub limit: usize,
}

impl PageQuery {
    /// The limit as applied (1 to 500).
    pub fn limit(&self) -> usize {
        self.limit.clamp(1, 500)
    }
}

/// A number from a query string. Query values are strings; inside a `#[serde(flatten)]` struct
/// serde hands them over as strings, which a plain `usize` field refuses.
fn number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Number {
        N(usize),
        S(String),
    }
    match Number::deserialize(d)? {
        Number::N(n) => Ok(n),
        Number::S(s) => s
            .trim()
            .parse()
            .map_err(|_| serde::de::Error::custom(format!("{s:?} is not a number (offset and limit are counts)"))),
    }
}

/// `Query<T>` whose rejections are API errors (`invalid_query`, with the reason).
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> axum::extract::FromRequestParts<S> for ApiQuery<T> {
    type Rejection = HttpError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self, HttpError> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(ApiQuery(v)),
            Err(e) => Err(HttpError::bad_request("invalid_query", e.body_text())),
        }
    }
}

fn default_limit() -> usize {
    50
}

#[derive(Debug, Serialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub total: usize,
    pub offset: usize,
    pub limit: usize,
}

/// One page of a list held whole (`limit` is capped at 500); lists of records are paged by
/// the records store instead.
pub fn page<T>(all: Vec<T>, q: &PageQuery) -> Page<T> {
    let limit = q.limit();
    let total = all.len();
    let items = all.into_iter().skip(q.offset).take(limit).collect();
    Page { items, total, offset: q.offset, limit }
}

/// `Json<T>` whose rejections are API errors (`invalid_body`, with serde's reason).
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = HttpError;

    async fn from_request(req: Request, state: &S) -> Result<Self, HttpError> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(ApiJson(v)),
            Err(JsonRejection::MissingJsonContentType(_)) => Err(HttpError::api(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the body as Content-Type: application/json",
            )),
            Err(e) => Err(HttpError::bad_request("invalid_body", e.body_text())),
        }
    }
}
