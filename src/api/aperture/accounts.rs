//! Accounts (`/account`, `/account/graph`, `/account/{accountId}`) and who the token is (`/user`).

use axum::extract::{Path, State};
use axum::response::Response;
use axum::Extension;
use serde::Serialize;

use super::{account_name, applications_with_ids, blocking, environment_id, ok, ApiError, Result, BASE};
use crate::auth::{Principal, ALL_ACCOUNTS};
use crate::names::RepoId;
use crate::web::query::branches;
use crate::web::state::AppState;

/// Aperture's Account.
#[derive(Debug, Serialize)]
pub struct Account {
    pub id: u64,
    pub href: String,
    pub account_name: String,
    /// May the caller change things in this account?
    pub is_admin: bool,
    pub requires_2fa: bool,
}

fn account(principal: &Principal, id: u64) -> Account {
    let name = id.to_string();
    Account {
        id,
        href: format!("{BASE}/account/{id}"),
        is_admin: principal.may_write(&name),
        account_name: name,
        requires_2fa: false,
    }
}

/// An account number and its applications (each with its id).
type AccountApps = (u64, Vec<(u64, RepoId)>);

/// The accounts the caller may read: those with applications, and the token's own.
fn visible_accounts(state: &AppState, principal: &Principal) -> Result<Vec<AccountApps>> {
    let mut out: Vec<AccountApps> = Vec::new();
    for (n, id) in applications_with_ids(state, None)? {
        let Ok(number) = id.account.parse::<u64>() else { continue };
        if number.to_string() != id.account || !principal.may_read(&id.account) {
            continue;
        }
        match out.iter_mut().find(|(a, _)| *a == number) {
            Some((_, apps)) => apps.push((n, id)),
            None => out.push((number, vec![(n, id)])),
        }
    }
    if let Principal::Token { account, .. } = principal {
        if let Ok(number) = account.parse::<u64>() {
            if account != ALL_ACCOUNTS && !out.iter().any(|(a, _)| *a == number) {
                out.push((number, Vec::new()));
            }
        }
    }
    out.sort_by_key(|(a, _)| *a);
    Ok(out)
}

pub async fn list(State(state): State<AppState>, Extension(principal): Extension<Principal>) -> Result<Response> {
    let p = principal.clone();
    let accounts = blocking(move || visible_accounts(&state, &p)).await?;
    Ok(ok(accounts.into_iter().map(|(a, _)| account(&principal, a)).collect::<Vec<_>>()))
}

pub async fn get(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(raw): Path<String>,
) -> Result<Response> {
    let name = account_name(&raw)?;
    let p = principal.clone();
    let accounts = blocking(move || visible_accounts(&state, &p)).await?;
    accounts
        .into_iter()
        .find(|(a, _)| a.to_string() == name)
        .map(|(a, _)| ok(account(&principal, a)))
        .ok_or_else(|| ApiError::not_found(format!("there is no account {name}")))
}

#[derive(Debug, Serialize)]
struct GraphEnvironment {
    id: u64,
    environment_name: String,
}

#[derive(Debug, Serialize)]
struct GraphApplication {
    #[serde(flatten)]
    application: super::applications::Application,
    environments: Vec<GraphEnvironment>,
}

#[derive(Debug, Serialize)]
struct GraphAccount {
    #[serde(flatten)]
    account: Account,
    applications: Vec<GraphApplication>,
}

/// Accounts, each with its applications, each with its environments.
pub async fn graph(State(state): State<AppState>, Extension(principal): Extension<Principal>) -> Result<Response> {
    let graph = blocking(move || {
        let mut out = Vec::new();
        for (a, apps) in visible_accounts(&state, &principal)? {
            let mut applications = Vec::new();
            for (n, id) in apps {
                let repo = git2::Repository::open_bare(state.repos.path(&id))?;
                let environments = branches(&repo)?
                    .into_iter()
                    .map(|(name, _)| GraphEnvironment { id: environment_id(&id, &name), environment_name: name })
                    .collect();
                applications.push(GraphApplication {
                    application: super::applications::application(&state, n, &id),
                    environments,
                });
            }
            out.push(GraphAccount { account: account(&principal, a), applications });
        }
        Ok(out)
    })
    .await?;
    Ok(ok(graph))
}

/// Aperture's User, for the token a request presents.
#[derive(Debug, Serialize)]
struct User {
    /// The token id's hex digits as a number (0 when authentication is off).
    id: u64,
    first_name: String,
    last_name: String,
    company_name: String,
    verified: bool,
    requires2fa: bool,
    enforce2fa: bool,
    /// devpop's own: the token id, the account it acts on (`*`: every account), read-only or not.
    token_id: Option<String>,
    account: String,
    read_only: bool,
}

pub async fn user(Extension(principal): Extension<Principal>) -> Response {
    let user = match &principal {
        Principal::Local => User {
            id: 0,
            first_name: "local".into(),
            last_name: "(authentication off)".into(),
            company_name: String::new(),
            verified: true,
            requires2fa: false,
            enforce2fa: false,
            token_id: None,
            account: ALL_ACCOUNTS.into(),
            read_only: false,
        },
        Principal::Token { id, account, read_only } => User {
            id: id.strip_prefix("tok_").and_then(|h| u64::from_str_radix(h, 16).ok()).unwrap_or(0),
            first_name: id.clone(),
            last_name: format!("(token for account {account})"),
            company_name: String::new(),
            verified: true,
            requires2fa: false,
            enforce2fa: false,
            token_id: Some(id.clone()),
            account: account.clone(),
            read_only: *read_only,
        },
    };
    ok(user)
}
