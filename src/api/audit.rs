//! The audit log and tokens over the API.

use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};

use super::{audit_action, blocking, page, ApiJson, ApiQuery, Page, PageQuery};
use crate::auth::{Principal, TokenRecord, ALL_ACCOUNTS};
use crate::records::audit::AuditEntry;
use crate::web::error::HttpError;
use crate::web::state::AppState;

/// The audit log, newest first: every account's for an admin, one's own otherwise.
pub async fn list(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Result<Json<Page<AuditEntry>>, HttpError> {
    use crate::records::audit::Visible;
    // Paged by the records store: an admin sees everything, others their account's entries.
    let visible = match &principal {
        _ if principal.is_admin() => Visible::All,
        Principal::Token { account, .. } if account != ALL_ACCOUNTS => Visible::Account(account.clone()),
        _ => Visible::Accounts,
    };
    let (audit, offset, limit) = (state.audit.clone(), q.offset, q.limit());
    let (items, total) =
        blocking(move || audit.page(&visible, offset as u64, limit as u64).map_err(HttpError::from)).await?;
    Ok(Json(Page { items, total: total as usize, offset, limit }))
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
    let st = state.clone();
    let all = blocking(move || Ok(st.tokens.list()?)).await?;
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
        crate::names::RepoId::new(&body.account, "x", "x").map_err(HttpError::from)?;
    }
    let expires_at = body.expires_in.map(|s| crate::auth::expiry(jiff::Timestamp::now(), s)).transpose()?;
    let st = state.clone();
    let (record, token) = blocking(move || Ok(st.tokens.create(&body.account, body.read_only, expires_at)?)).await?;
    audit_action(
        &state,
        &principal,
        peer,
        "token.create",
        &record.account,
        &record.id,
        if record.read_only { "read-only" } else { "read-write" },
    )
    .await;
    Ok((StatusCode::CREATED, Json(CreatedToken { record: record.into(), token })))
}

pub async fn revoke_token(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    Path(id): Path<String>,
) -> Result<Json<TokenView>, HttpError> {
    let st = state.clone();
    let record = blocking(move || Ok(st.tokens.revoke(&id)?)).await?;
    audit_action(&state, &principal, peer, "token.revoke", &record.account, &record.id, "").await;
    Ok(Json(record.into()))
}
