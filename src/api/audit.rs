//! The audit log and tokens over the API.

use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};

use super::{api_err, audit_action, page, ApiJson, Page, PageQuery};
use crate::auth::{Principal, TokenRecord, ALL_ACCOUNTS};
use crate::http_error::HttpError;
use crate::records::audit::AuditEntry;
use crate::server::AppState;

/// The audit log, newest first: every account's for an admin, one's own otherwise.
pub async fn list(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Query(q): Query<PageQuery>,
) -> Json<Page<AuditEntry>> {
    let entries =
        state
            .audit
            .read(|e| if e.account == ALL_ACCOUNTS { principal.is_admin() } else { principal.may_read(&e.account) });
    Json(page(entries, &q))
}

/// A token as the API shows it: never the token itself.
#[derive(Serialize)]
pub struct TokenView {
    id: String,
    account: String,
    read_only: bool,
    created_at: jiff::Timestamp,
    expires_at: Option<jiff::Timestamp>,
    revoked: bool,
}

impl From<TokenRecord> for TokenView {
    fn from(t: TokenRecord) -> Self {
        TokenView {
            id: t.id,
            account: t.account,
            read_only: t.read_only,
            created_at: t.created_at,
            expires_at: t.expires_at,
            revoked: t.revoked,
        }
    }
}

pub async fn list_tokens(
    State(state): State<AppState>,
    Query(q): Query<PageQuery>,
) -> Result<Json<Page<TokenView>>, HttpError> {
    let all = state.tokens.list().map_err(HttpError::from)?;
    Ok(Json(page(all.into_iter().map(TokenView::from).collect(), &q)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    /// The account, or `*` for an admin token.
    account: String,
    #[serde(default)]
    read_only: bool,
    /// Lifetime in seconds (none: no expiry).
    #[serde(default)]
    expires_in: Option<u64>,
}

#[derive(Serialize)]
pub struct CreatedToken {
    #[serde(flatten)]
    record: TokenView,
    /// The token: shown this once, only its hash is kept.
    token: String,
}

pub async fn create_token(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    ApiJson(body): ApiJson<CreateToken>,
) -> Result<(StatusCode, Json<CreatedToken>), HttpError> {
    if body.account != ALL_ACCOUNTS {
        crate::names::RepoId::new(&body.account, "x", "x")
            .map_err(|e| api_err(StatusCode::BAD_REQUEST, "invalid_name", e.to_string()))?;
    }
    let expires_at = body.expires_in.map(|s| jiff::Timestamp::now() + jiff::SignedDuration::from_secs(s as i64));
    let (record, token) = state.tokens.create(&body.account, body.read_only, expires_at).map_err(HttpError::from)?;
    audit_action(
        &state,
        &principal,
        peer,
        "token.create",
        &record.account,
        &record.id,
        if record.read_only { "read-only" } else { "read-write" },
    );
    Ok((StatusCode::CREATED, Json(CreatedToken { record: record.into(), token })))
}

pub async fn revoke_token(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    Path(id): Path<String>,
) -> Result<Json<TokenView>, HttpError> {
    let record = state.tokens.revoke(&id).map_err(HttpError::from)?;
    audit_action(&state, &principal, peer, "token.revoke", &record.account, &record.id, "");
    Ok(Json(record.into()))
}
