//! Aperture operations devpop does not offer, each answering 501 with `{"message"}` saying
//! why, at its own path, so a client learns the reason instead of meeting a router miss.

use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{on, MethodFilter, MethodRouter};
use axum::Router;

use super::error_response;
use crate::server::AppState;

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
pub const INITIAL_STATE: &str =
    "proxy template initial state is not implemented yet: copy the package's proxy_config/ folder into your repo";

/// (path, methods, why).
pub const OPERATIONS: &[(&str, &[&str], &str)] = &[
    ("/api/v1/account/create", &["post"], ACCOUNT_CREATE),
    ("/api/v1/account/{accountId}/domains", &["get"], DNS),
    ("/api/v1/account/{accountId}/user", &["get", "post"], USERS),
    ("/api/v1/account/{accountId}/user/{userId}", &["get", "post", "delete"], USERS),
    ("/api/v1/user/totp", &["post"], USERS),
    ("/api/v1/user/resendverification", &["post"], USERS),
    ("/api/v1/user/linkexternal", &["post"], USERS),
    ("/api/v1/user/{userId}/cache", &["post"], USERS),
    ("/api/v1/account/{accountId}/billingsummary", &["get"], BILLING),
    ("/api/v1/account/{accountId}/billinghistory", &["get"], BILLING),
    ("/api/v1/account/{accountId}/application/{applicationId}/split", &["post"], APPLICATION_COPY),
    ("/api/v1/account/{accountId}/application/{applicationId}/clone", &["post"], APPLICATION_COPY),
    ("/api/v1/account/{accountId}/application/{applicationId}/state", &["post"], PROXY),
    ("/api/v1/account/{accountId}/application/{applicationId}/verifyEngaged", &["get"], ENGAGED),
    (
        "/api/v1/account/{accountId}/application/{applicationId}/environment/{environmentName}/verifyEngaged",
        &["get"],
        ENGAGED,
    ),
    ("/api/v1/account/{accountId}/application/{applicationId}/environment/{environmentName}/engaged", &["get"], ENGAGED),
    (
        "/api/v1/account/{accountId}/application/{applicationId}/environment/{environmentName}/enableHostedDNS",
        &["post"],
        DNS,
    ),
    (
        "/api/v1/account/{accountId}/application/{applicationId}/environment/{environmentName}/dnsbypass",
        &["post", "delete"],
        DNS,
    ),
    (
        "/api/v1/account/{accountId}/application/{applicationId}/environment/{environmentName}/synthetics",
        &["get", "post"],
        SYNTHETICS,
    ),
    (
        "/api/v1/account/{accountId}/application/{applicationId}/environment/{environmentName}/synthetics/{testId}",
        &["delete"],
        SYNTHETICS,
    ),
    (
        "/api/v1/account/{accountId}/application/{applicationId}/environment/{environmentName}/proxy/{proxyName}/configuration",
        &["get", "post"],
        PROXY,
    ),
    (
        "/api/v1/account/{accountId}/application/{applicationId}/environment/{environmentName}/proxy/{proxyName}/state",
        &["post"],
        PROXY,
    ),
    (
        "/api/v1/account/{accountId}/application/{applicationId}/environment/{environmentName}/proxy/{proxyName}/{operationName}",
        &["post"],
        PROXY,
    ),
    ("/api/v1/proxytemplate/initialstate", &["get"], INITIAL_STATE),
    ("/api/v1/help/{helpId}", &["get"], HELP),
    ("/api/v1/account/{accountId}/zone", &["get"], DNS),
    ("/api/v1/account/{accountId}/zone/{zoneName}", &["get", "post"], DNS),
    ("/api/v1/account/{accountId}/zone/{zoneName}/{recordName}/{recordType}", &["delete"], DNS),
    ("/api/v1/account/{accountId}/domain/{hostName}/zone", &["get"], DNS),
    ("/api/v1/account/{accountId}/domain/{hostName}/renewCertificate", &["post"], CERTIFICATES),
    ("/api/v1/account/{accountId}/domain/{hostName}/https", &["get", "post"], CERTIFICATES),
    ("/api/v1/account/{accountId}/domain/{hostName}/verifyEngaged", &["get"], ENGAGED),
    ("/api/v1/origin", &["get"], ENGAGED),
];

/// A method router answering 501 with `why`.
pub fn answer(filter: MethodFilter, why: &'static str) -> MethodRouter<AppState> {
    on(filter, move || async move { not_offered(why) })
}

fn not_offered(why: &'static str) -> Response {
    error_response(StatusCode::NOT_IMPLEMENTED, why)
}

fn filter(method: &str) -> MethodFilter {
    match method {
        "get" => MethodFilter::GET,
        "post" => MethodFilter::POST,
        "patch" => MethodFilter::PATCH,
        _ => MethodFilter::DELETE,
    }
}

pub fn routes() -> Router<AppState> {
    let mut router = Router::new();
    for (path, methods, why) in OPERATIONS {
        let mut methods = methods.iter();
        let first = methods.next().expect("an operation has a method");
        let mut route = answer(filter(first), why);
        for m in methods {
            route = route.on(filter(m), move || async move { not_offered(why) });
        }
        router = router.route(path, route);
    }
    router
}
