//! The middleware: who is asking (tokens, sessions), the rate limit, and whether they may,
//! for every request before any handler.
//!
//! It runs before any handler, so a token of account A asking for a repo of account B gets the
//! same 403 whether that repo exists or not. Handlers that list across accounts filter by the
//! [`Principal`] this puts in the request's extensions.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};

use super::error::{is_aperture_path, HttpError};
use super::state::AppState;
use crate::auth::limits::Client;
use crate::auth::{cookie, presented_token, query_token, Principal, SESSION_COOKIE};

/// Who a request is: the principal of the token it presents, or of its console session; `None`
/// when neither is valid. The rate limiter works this out first and leaves it in the request's
/// extensions for [`enforce`].
#[derive(Debug, Clone)]
pub struct Identified(pub Option<Principal>);

pub async fn identify(state: &AppState, headers: &axum::http::HeaderMap, uri: &axum::http::Uri) -> Identified {
    let token = presented_token(headers)
        // Aperture clients may send it in the query (`access_token`); nothing else may, so a
        // token never needs to sit in a URL (or a log line) anywhere else.
        .or_else(|| is_aperture_path(uri.path()).then(|| query_token(uri)).flatten())
        .or_else(|| cookie(headers, SESSION_COOKIE).and_then(|s| state.sessions.token(&s)));
    let Some(token) = token else { return Identified(None) };
    // The token store checks its file (and re-reads it when the CLI changed it): file IO,
    // off the async threads.
    let st = state.clone();
    Identified(tokio::task::spawn_blocking(move || st.tokens.verify(&token)).await.ok().flatten())
}

/// Requests the limit applies to: the API, and console log-ins.
fn limited(req: &Request) -> bool {
    let path = req.uri().path();
    path.starts_with("/api/") || (path == "/console/login" && req.method() == Method::POST)
}

pub async fn rate_limit(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    if !limited(&req) {
        return next.run(req).await;
    }
    let address = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
    let address = Client::address(address.unwrap_or(IpAddr::from([0, 0, 0, 0])));
    let client = if state.auth_enabled {
        let identified = identify(&state, req.headers(), req.uri()).await;
        let client = match &identified.0 {
            Some(Principal::Token { id, .. }) => Client::Token(id.clone()),
            _ => address,
        };
        req.extensions_mut().insert(identified);
        client
    } else {
        address
    };
    match state.rate.take(&client) {
        Ok(()) => next.run(req).await,
        Err(wait) => {
            let message = format!("too many requests from this client; retry in {wait:.1}s");
            let mut r = HttpError::new(StatusCode::TOO_MANY_REQUESTS, message).into_response();
            let secs = wait.ceil().max(1.0) as u64;
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_str(&secs.to_string()).expect("digits"));
            r
        }
    }
}

/// Paths anyone may reach: health, metrics, the API description and the console's login.
fn public(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz" | "/metrics" | "/api/v1/openapi.json" | "/console/login")
}

/// The account a path belongs to, if it is account-scoped.
fn account_of(path: &str) -> Option<&str> {
    let rest = path
        .strip_prefix("/account/")
        .or_else(|| path.strip_prefix("/rendered/account/"))
        .or_else(|| path.strip_prefix("/api/v1/accounts/"))
        // Aperture's singular paths; `/account/graph` and `/account/create` name no account.
        .or_else(|| {
            path.strip_prefix("/api/v1/account/").filter(|r| !matches!(r.split('/').next(), Some("graph" | "create")))
        })
        .or_else(|| path.strip_prefix("/console/accounts/"))?;
    Some(rest.split('/').next().unwrap_or(""))
}

/// Does the request change anything? (A push, or an API/console call other than a read.)
fn is_write(req: &Request) -> bool {
    let path = req.uri().path();
    let query = req.uri().query().unwrap_or("");
    // Logging out changes nothing but the caller's own session: a read-only session may.
    if path == "/console/logout" {
        return false;
    }
    path.ends_with("/git-receive-pack")
        || query.contains("service=git-receive-pack")
        || !matches!(*req.method(), Method::GET | Method::HEAD) && !path.ends_with("/git-upload-pack")
}

/// Server-wide things only an admin token may do.
fn admin_only(req: &Request) -> bool {
    let path = req.uri().path();
    path == "/api/v1/accounts"
        || path.starts_with("/api/v1/tokens")
        || (path == "/api/v1/packages" && req.method() == Method::POST)
}

pub async fn enforce(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let path = req.uri().path().to_owned();
    if !state.auth_enabled || public(&path) {
        req.extensions_mut().insert(Principal::Local);
        return next.run(req).await;
    }
    let identified = match req.extensions_mut().remove::<Identified>() {
        Some(known) => known,
        None => identify(&state, req.headers(), req.uri()).await,
    };
    let Some(principal) = identified.0 else {
        if path == "/" || path.starts_with("/console") {
            return Redirect::to("/console/login").into_response();
        }
        let message = if is_aperture_path(&path) {
            "authentication required: send a devpop API token (section-token header, Basic password or access_token)"
        } else {
            "authentication required: use a devpop API token (for git: any username, the token as password)"
        };
        let mut r = HttpError::new(StatusCode::UNAUTHORIZED, message).into_response();
        r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"devpop\""));
        return r;
    };
    let refusal = if let Some(account) = account_of(&path) {
        if !principal.may_read(account) {
            Some(format!("this token cannot access account {account:?}"))
        } else if is_write(&req) && !principal.may_write(account) {
            Some("this token is read-only: it can clone, fetch and read, not push or change".to_owned())
        } else {
            None
        }
    } else if admin_only(&req) && !principal.is_admin() {
        Some("only an admin token (devpop token create --admin) may do this".to_owned())
    } else if is_write(&req) && matches!(principal, Principal::Token { read_only: true, .. }) {
        Some("this token is read-only: it can clone, fetch and read, not push or change".to_owned())
    } else {
        None
    };
    if let Some(message) = refusal {
        return HttpError::new(StatusCode::FORBIDDEN, message).into_response();
    }
    tracing::debug!(principal = %principal.name(), %path, "authorised");
    req.extensions_mut().insert(principal);
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_scoped_paths() {
        assert_eq!(account_of("/account/9999/application/1/x.git/info/refs"), Some("9999"));
        assert_eq!(account_of("/rendered/account/7/application/1/x.git/git-upload-pack"), Some("7"));
        assert_eq!(account_of("/api/v1/accounts/5/applications"), Some("5"));
        assert_eq!(account_of("/api/v1/deployments/3"), None);
        assert_eq!(account_of("/api/v1/account/42/application/7/environment/Production"), Some("42"));
        assert_eq!(account_of("/api/v1/account/graph"), None);
    }
}
