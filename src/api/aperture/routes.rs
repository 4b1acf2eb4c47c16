//! The router of Aperture's paths: every operation devpop serves, and every one it answers
//! with 501 and the reason (the list the README's API section has, checked against the
//! OpenAPI document by tests/api.rs).

use axum::routing::{get, post, MethodFilter};
use axum::Router;

use super::unsupported as u;
use super::{accounts, applications, changes};
use crate::server::AppState;

pub fn routes() -> Router<AppState> {
    use accounts as ac;
    use applications as ap;
    use changes as ch;
    Router::new()
        .route("/api/v1/account", get(ac::list))
        .route("/api/v1/account/graph", get(ac::graph))
        .route("/api/v1/account/{accountId}", get(ac::get))
        .route("/api/v1/user", get(ac::user).merge(u::answer(MethodFilter::POST, u::USERS)))
        .route("/api/v1/stack", get(ap::stacks))
        .route("/api/v1/proxytemplate", get(ap::proxy_templates))
        .route("/api/v1/account/{accountId}/application/", get(ap::list))
        .route("/api/v1/account/{accountId}/application", get(ap::list))
        .route("/api/v1/account/{accountId}/application/create", post(ap::create))
        .route("/api/v1/account/{accountId}/application/{applicationId}", get(ap::get).delete(ap::delete))
        .route("/api/v1/account/{accountId}/application/{applicationId}/environment", get(ap::environments))
        .route(
            "/api/v1/account/{accountId}/application/{applicationId}/environment/create",
            post(ap::create_environment),
        )
        .route(
            "/api/v1/account/{accountId}/application/{applicationId}/environment/{environmentName}",
            get(ap::environment),
        )
        .route(
            "/api/v1/account/{accountId}/application/{applicationId}/environment/{environmentName}/stack",
            get(ap::stack),
        )
        .route(
            "/api/v1/account/{accountId}/application/{applicationId}/environment/{environmentName}/configuration",
            get(ch::configuration).patch(ch::patch_configuration),
        )
        .route(
            "/api/v1/account/{accountId}/application/{applicationId}/environment/{environmentName}/update",
            axum::routing::patch(ch::update_file),
        )
        .route(
            "/api/v1/account/{accountId}/application/{applicationId}/environment/{environmentName}/egress",
            get(ch::read_setting::<ch::EgressSetting>).post(ch::write_setting::<ch::EgressSetting>),
        )
        .route(
            "/api/v1/account/{accountId}/application/{applicationId}/environment/{environmentName}/ipRestrictions",
            get(ch::read_setting::<ch::IpRestrictionSetting>).post(ch::write_setting::<ch::IpRestrictionSetting>),
        )
        .route(
            "/api/v1/account/{accountId}/application/{applicationId}/environment/{environmentName}/outagepage",
            get(ch::outage_pages).post(ch::engage_outage_page).delete(ch::disengage_outage_page),
        )
        .route(
            "/api/v1/account/{accountId}/application/{applicationId}/environment/{environmentName}/domain/{hostName}",
            post(ch::add_domain).delete(ch::remove_domain),
        )
        .route(
            "/api/v1/account/{accountId}/application/{applicationId}/environment/{environmentName}/logs",
            get(super::logs::logs),
        )
        .merge(unsupported())
}

/// (path, methods, why).
const UNSUPPORTED: &[(&str, &[&str], &str)] = &[
    ("/api/v1/account/create", &["post"], u::ACCOUNT_CREATE),
    ("/api/v1/account/{accountId}/domains", &["get"], u::DNS),
    ("/api/v1/account/{accountId}/user", &["get", "post"], u::USERS),
    ("/api/v1/account/{accountId}/user/{userId}", &["get", "post", "delete"], u::USERS),
    ("/api/v1/user/totp", &["post"], u::USERS),
    ("/api/v1/user/resendverification", &["post"], u::USERS),
    ("/api/v1/user/linkexternal", &["post"], u::USERS),
    ("/api/v1/user/{userId}/cache", &["post"], u::USERS),
    ("/api/v1/account/{accountId}/billingsummary", &["get"], u::BILLING),
    ("/api/v1/account/{accountId}/billinghistory", &["get"], u::BILLING),
    ("/api/v1/account/{accountId}/application/{applicationId}/split", &["post"], u::APPLICATION_COPY),
    ("/api/v1/account/{accountId}/application/{applicationId}/clone", &["post"], u::APPLICATION_COPY),
    ("/api/v1/account/{accountId}/application/{applicationId}/state", &["post"], u::PROXY),
    ("/api/v1/account/{accountId}/application/{applicationId}/verifyEngaged", &["get"], u::ENGAGED),
    (
        "/api/v1/account/{accountId}/application/{applicationId}/environment/{environmentName}/verifyEngaged",
        &["get"],
        u::ENGAGED,
    ),
    ("/api/v1/account/{accountId}/application/{applicationId}/environment/{environmentName}/engaged", &["get"], u::ENGAGED),
    (
        "/api/v1/account/{accountId}/application/{applicationId}/environment/{environmentName}/enableHostedDNS",
        &["post"],
        u::DNS,
    ),
    (
        "/api/v1/account/{accountId}/application/{applicationId}/environment/{environmentName}/dnsbypass",
        &["post", "delete"],
        u::DNS,
    ),
    (
        "/api/v1/account/{accountId}/application/{applicationId}/environment/{environmentName}/synthetics",
        &["get", "post"],
        u::SYNTHETICS,
    ),
    (
        "/api/v1/account/{accountId}/application/{applicationId}/environment/{environmentName}/synthetics/{testId}",
        &["delete"],
        u::SYNTHETICS,
    ),
    (
        "/api/v1/account/{accountId}/application/{applicationId}/environment/{environmentName}/proxy/{proxyName}/configuration",
        &["get", "post"],
        u::PROXY,
    ),
    (
        "/api/v1/account/{accountId}/application/{applicationId}/environment/{environmentName}/proxy/{proxyName}/state",
        &["post"],
        u::PROXY,
    ),
    (
        "/api/v1/account/{accountId}/application/{applicationId}/environment/{environmentName}/proxy/{proxyName}/{operationName}",
        &["post"],
        u::PROXY,
    ),
    ("/api/v1/proxytemplate/initialstate", &["get"], u::INITIAL_STATE),
    ("/api/v1/help/{helpId}", &["get"], u::HELP),
    ("/api/v1/account/{accountId}/zone", &["get"], u::DNS),
    ("/api/v1/account/{accountId}/zone/{zoneName}", &["get", "post"], u::DNS),
    ("/api/v1/account/{accountId}/zone/{zoneName}/{recordName}/{recordType}", &["delete"], u::DNS),
    ("/api/v1/account/{accountId}/domain/{hostName}/zone", &["get"], u::DNS),
    ("/api/v1/account/{accountId}/domain/{hostName}/renewCertificate", &["post"], u::CERTIFICATES),
    ("/api/v1/account/{accountId}/domain/{hostName}/https", &["get", "post"], u::CERTIFICATES),
    ("/api/v1/account/{accountId}/domain/{hostName}/verifyEngaged", &["get"], u::ENGAGED),
    ("/api/v1/origin", &["get"], u::ENGAGED),
];

fn filter(method: &str) -> MethodFilter {
    match method {
        "get" => MethodFilter::GET,
        "post" => MethodFilter::POST,
        "patch" => MethodFilter::PATCH,
        _ => MethodFilter::DELETE,
    }
}

fn unsupported() -> Router<AppState> {
    let mut router = Router::new();
    for (path, methods, why) in UNSUPPORTED {
        let mut methods = methods.iter();
        let first = methods.next().expect("an operation has a method");
        let mut route = u::answer(filter(first), why);
        for m in methods {
            route = route.on(filter(m), move || async move { u::not_offered(why) });
        }
        router = router.route(path, route);
    }
    router
}
