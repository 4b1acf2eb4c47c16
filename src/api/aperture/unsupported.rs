//! Aperture operations devpop does not offer, each answering 501 with `{"message"}` saying
//! why, at its own path, so a client learns the reason instead of meeting a router miss.

use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{on, MethodFilter, MethodRouter};

use super::error_response;
use crate::web::state::AppState;

pub const ACCOUNT_CREATE: &str = "creating accounts is out of scope: an account exists once it has an application (POST /account/{accountId}/application/create)";
pub const USERS: &str =
    "users, invitations and 2FA are out of scope: devpop has API tokens (devpop token create), not user accounts";
pub const BILLING: &str = "billing is out of scope: devpop runs on your own cluster and meters nothing";
pub const APPLICATION_COPY: &str =
    "splitting and cloning applications are out of scope: create an application and push the other's commits to it";
pub const ENGAGED: &str =
    "engagement checks are out of scope: devpop does not resolve DNS to see whether traffic reaches it";
pub const DNS: &str = "DNS zones, hosted DNS and DNS bypass are out of scope: devpop serves environments behind your cluster's Ingress and manages no DNS";
pub const CERTIFICATES: &str = "certificates are out of scope: TLS is terminated in front of the cluster's Ingress";
pub const SYNTHETICS: &str = "synthetic monitoring is out of scope";
pub const HELP: &str = "contextual help is out of scope: see devpop's README";
pub const PROXY: &str = "per-proxy configuration, cache bans and operations are out of scope: change a module's files with a push or PATCH .../environment/{environmentName}/update";

/// A method router answering 501 with `why`.
pub fn answer(filter: MethodFilter, why: &'static str) -> MethodRouter<AppState> {
    on(filter, move || async move { not_offered(why) })
}

pub fn not_offered(why: &'static str) -> Response {
    error_response(StatusCode::NOT_IMPLEMENTED, why)
}
