//! Section's Aperture API, at Aperture's own paths under `/api/v1` (singular resources:
//! `/account/{accountId}/application/{applicationId}/environment/{environmentName}/...`),
//! with Aperture's field names, integer ids and `{"message": ...}` errors, so that Section's
//! tooling and console clones work against devpop unchanged.
//!
//! It is a view over devpop's own model, never a second copy of it: an application is a repo,
//! an environment is a branch, and every change made here (configuration, egress, IP
//! restrictions, outage page, domains) is a commit on the environment's branch, checked exactly
//! like a push of it and deployed when accepted (see [`changes`]).
//!
//! Ids: an account's id is its name, which must be a decimal number to be seen here. An
//! application whose name is a decimal number has that number as its id (applications created
//! here are named so); any other application gets a number from `aperture-ids.json` in the data
//! dir, allocated once, from 1,000,000,000 up. An environment's id is derived from its
//! account, application and name (the first 48 bits of their SHA-256), so it needs no storage.

mod accounts;
mod applications;
pub mod changes;
mod logs;
mod routes;
mod unsupported;

pub use logs::logs_by_name;
pub use routes::routes;

use std::collections::BTreeMap;
use std::sync::Mutex;

use axum::body::Bytes;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::auth::Principal;
use crate::names::RepoId;
use crate::web::error::HttpError;
use crate::web::state::AppState;

/// Where Aperture's paths start.
pub const BASE: &str = "/api/v1";

/// The ids at or above this are allocated to applications whose names are not numbers.
const ALLOCATED_FROM: u64 = 1_000_000_000;

/// An error of Aperture's surface: the one [`HttpError`], which answers `{"message": ...}`
/// (Aperture's ErrorModel, plus the checks' lines when a change was refused) on Aperture's
/// paths.
pub type ApiError = HttpError;

impl HttpError {
    fn bad(message: impl Into<String>) -> Self {
        HttpError::new(StatusCode::BAD_REQUEST, message)
    }
}

/// An error response in Aperture's shape.
pub fn error_response(status: StatusCode, message: impl Into<String>) -> Response {
    ApiError::new(status, message).into_response()
}

type Result<T> = std::result::Result<T, ApiError>;

/// Parses a JSON body; a malformed one is a 400 with serde's reason.
fn json_body<T: DeserializeOwned>(body: &Bytes) -> Result<T> {
    serde_json::from_slice(body).map_err(|e| ApiError::bad(format!("the request body is not valid here: {e}")))
}

/// Parses a JSON body whose fields, where present, have values: a `null` anywhere in it is
/// refused (Aperture's schemas have no nullable fields), naming the field.
fn strict_body<T: DeserializeOwned>(body: &Bytes) -> Result<T> {
    fn null_at(v: &serde_json::Value, path: &str) -> Option<String> {
        match v {
            serde_json::Value::Null => Some(path.to_owned()),
            serde_json::Value::Object(m) => m.iter().find_map(|(k, v)| null_at(v, &format!("{path}/{k}"))),
            serde_json::Value::Array(a) => a.iter().enumerate().find_map(|(i, v)| null_at(v, &format!("{path}/{i}"))),
            _ => None,
        }
    }
    let value: serde_json::Value = json_body(body)?;
    if let Some(at) = null_at(&value, "") {
        return Err(ApiError::bad(format!("{at}: null is not a value here; leave the field out")));
    }
    serde_json::from_value(value).map_err(|e| ApiError::bad(format!("the request body is not valid here: {e}")))
}

use crate::environment_config::is_domain;

/// A JSON response with status 200.
fn ok<T: Serialize>(value: T) -> Response {
    axum::Json(value).into_response()
}

/// The account named by `{accountId}`: a decimal number.
fn account_name(raw: &str) -> Result<String> {
    match raw.parse::<u64>() {
        Ok(n) => Ok(n.to_string()),
        Err(_) => Err(ApiError::bad(format!("accountId {raw:?} is not an account number"))),
    }
}

fn application_number(raw: &str) -> Result<u64> {
    raw.parse::<u64>().map_err(|_| ApiError::bad(format!("applicationId {raw:?} is not an application number")))
}

fn ids_lock() -> &'static Mutex<()> {
    static LOCK: Mutex<()> = Mutex::new(());
    &LOCK
}

/// `aperture-ids.json`: `"account/application"` -> id, for applications whose names are not numbers.
fn read_ids(state: &AppState) -> Result<BTreeMap<String, u64>> {
    let path = state.settings.data_dir.join("aperture-ids.json");
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("aperture-ids.json: {e}"))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
        Err(e) => Err(internal(e)),
    }
}

fn write_ids(state: &AppState, ids: &BTreeMap<String, u64>) -> Result<()> {
    use std::io::Write;
    let dir = &state.settings.data_dir;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(&serde_json::to_vec_pretty(ids).expect("ids serialise"))?;
    tmp.persist(dir.join("aperture-ids.json")).map_err(|e| internal(e.error))?;
    Ok(())
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

/// Every application of `account` (all accounts when `None`) with its id, in id order within
/// each account. Blocking (reads the data dir).
fn applications_with_ids(state: &AppState, account: Option<&str>) -> Result<Vec<(u64, RepoId)>> {
    let _guard = ids_lock().lock().expect("ids lock");
    let repos: Vec<RepoId> =
        state.repos.list().into_iter().filter(|id| account.is_none_or(|a| id.account == a)).collect();
    let mut ids = read_ids(state)?;
    let mut changed = false;
    let mut out = Vec::new();
    for id in repos {
        if let Ok(n) = id.application.parse::<u64>() {
            if n.to_string() == id.application {
                out.push((n, id));
                continue;
            }
        }
        let key = format!("{}/{}", id.account, id.application);
        let n = match ids.get(&key) {
            Some(n) => *n,
            None => {
                let n = ids.values().copied().max().map_or(ALLOCATED_FROM, |m| m.max(ALLOCATED_FROM - 1) + 1);
                ids.insert(key, n);
                changed = true;
                n
            }
        };
        out.push((n, id));
    }
    if changed {
        write_ids(state, &ids)?;
    }
    out.sort_by(|a, b| (&a.1.account, a.0).cmp(&(&b.1.account, b.0)));
    Ok(out)
}

/// An application's Aperture id (`{applicationId}`). Blocking (may allocate one).
pub fn aperture_id(state: &AppState, id: &RepoId) -> std::result::Result<u64, ApiError> {
    applications_with_ids(state, Some(&id.account))?
        .into_iter()
        .find(|(_, i)| i == id)
        .map(|(n, _)| n)
        .ok_or_else(|| ApiError::not_found(format!("account {} has no application {}", id.account, id.application)))
}

/// The application `{applicationId}` of `account`, or 404.
fn find_application(state: &AppState, account: &str, number: u64) -> Result<RepoId> {
    applications_with_ids(state, Some(account))?
        .into_iter()
        .find(|(n, _)| *n == number)
        .map(|(_, id)| id)
        .ok_or_else(|| ApiError::not_found(format!("account {account} has no application {number}")))
}

/// An environment's id: the first 48 bits of SHA-256 of `account/application/repo/environment`.
fn environment_id(id: &RepoId, environment: &str) -> u64 {
    let digest = Sha256::digest(format!("{}/{}/{}/{environment}", id.account, id.application, id.repo));
    digest[..6].iter().fold(0u64, |n, b| (n << 8) | u64::from(*b))
}

/// Runs blocking work off the async runtime.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f).await?
}

/// Who is asking, and from where (for the audit log and the commits they make).
pub struct Caller {
    pub principal: Principal,
    pub peer: std::net::SocketAddr,
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, _: &S) -> Result<Self> {
        let principal = parts.extensions.get::<Principal>().cloned();
        let peer = parts.extensions.get::<axum::extract::ConnectInfo<std::net::SocketAddr>>().map(|c| c.0);
        match (principal, peer) {
            (Some(principal), Some(peer)) => Ok(Caller { principal, peer }),
            _ => Err(internal("the request carries no principal or peer address")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aperture_paths_are_told_apart_from_devpops_own() {
        use crate::web::error::is_aperture_path;
        assert!(is_aperture_path("/api/v1/account"));
        assert!(is_aperture_path("/api/v1/account/1/application/2/environment/Production/egress"));
        assert!(is_aperture_path("/api/v1/user"));
        assert!(!is_aperture_path("/api/v1/accounts/1/applications"));
        assert!(!is_aperture_path("/api/v1/deployments"));
        assert!(!is_aperture_path("/account/1/application/2/x.git/info/refs"));
    }

    #[test]
    fn account_ids_are_numbers_and_environment_ids_are_stable() {
        assert_eq!(account_name("9999").unwrap(), "9999");
        assert_eq!(account_name("0042").unwrap(), "42");
        assert_eq!(account_name("acme").unwrap_err().status, StatusCode::BAD_REQUEST);
        let id = RepoId::new("1", "2", "site").unwrap();
        assert_eq!(environment_id(&id, "Production"), environment_id(&id, "Production"));
        assert!(is_domain("www.example.com") && is_domain("a"));
        assert!(!is_domain("0.5") && !is_domain("192.0.2.1") && !is_domain("a b") && !is_domain("::1"));
        assert_ne!(environment_id(&id, "Production"), environment_id(&id, "Staging"));
        assert!(environment_id(&id, "Production") < 1 << 48);
    }
}
