//! The web layer: what the HTTP handlers share and sit on, above the domain.
//!
//! Layers, from the top (ARCHITECTURE.md, "Layers"; `tests/architecture.rs` enforces them):
//! `server` (the composition root: router, binding, accept loop) -> the handlers (`api`,
//! `console`) -> this module ([`state`], the one error mapping in [`error`], the [`enforce`]
//! middleware, the [`git`] routes and the [`push_server`] adapter) -> the domain (transport
//! processes, hook, checks, validation, rendering, applying, records, packages, repos, ...).
//! Nothing here imports a handler, and no domain module imports this.

pub mod enforce;
pub mod error;
pub mod git;
pub mod push_server;
pub mod query;
pub mod state;

/// A deployment's REST API resource (a push prints it after the console page).
pub fn deployment_url(base: &str, id: u64) -> String {
    format!("{}/api/v1/deployments/{id}", base.trim_end_matches('/'))
}

/// A deployment's page in the console (the link a push prints first).
pub fn deployment_page_url(base: &str, id: u64) -> String {
    format!("{}/console/deployments/{id}", base.trim_end_matches('/'))
}

/// Who makes a change through a request, for the domain's actions: the principal's name in
/// records (a token's id, `local`) and the peer's address.
pub fn author(principal: &crate::auth::Principal, peer: std::net::SocketAddr) -> crate::edits::Author {
    let who = match principal {
        crate::auth::Principal::Local => "local".to_owned(),
        crate::auth::Principal::Token { id, .. } => id.clone(),
    };
    crate::edits::Author { who, from: Some(peer.ip().to_string()) }
}
