//! What every handler can reach: [`AppState`]. It imports no handler (the handlers, the
//! middleware and the router import it), so the web layer depends one way.

use std::sync::Arc;

use crate::applying::deployer::Deployer;
use crate::applying::AnyTarget;
use crate::metrics::Metrics;
use crate::repos::RepoStore;
use crate::settings::Settings;

/// What every handler can reach. Cheap to clone.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    pub fn new(shared: Shared) -> Self {
        AppState(Arc::new(shared))
    }
}

pub struct Shared {
    pub settings: Settings,
    pub repos: RepoStore,
    pub rendered: crate::applying::RenderedRepos,
    pub metrics: Metrics,
    pub advertiser: crate::transport::advertise::ReceivePackAdvertiser,
    pub deployer: Arc<Deployer<AnyTarget>>,
    pub packages: crate::packages::PackageStore,
    pub base_url: String,
    /// Requests need a token (`--auth tokens`); off in local mode.
    pub auth_enabled: bool,
    pub tokens: crate::auth::TokenStore,
    pub push_slots: crate::transport::PushSlots,
    pub audit: Arc<crate::records::audit::AuditLog>,
    pub rate: crate::auth::limits::RateLimiter,
    pub sessions: crate::auth::Sessions,
}

impl Shared {
    /// Changes to the application `id`'s repo, checked with the server's packages and settings.
    pub fn edits<'a>(&'a self, repo: &'a git2::Repository, id: &'a crate::names::RepoId) -> crate::edits::Edits<'a> {
        crate::edits::Edits { repo, id, packages: &self.packages, checks: &self.settings.hook.checks }
    }

    /// What the domain's environment actions (changes, rollback, redeploy, deletes) reach.
    pub fn actions(&self) -> crate::edits::Actions<AnyTarget> {
        crate::edits::Actions {
            repos: self.repos.clone(),
            packages: self.packages.clone(),
            checks: self.settings.hook.checks.clone(),
            deployer: self.deployer.clone(),
            audit: self.audit.clone(),
        }
    }

    /// A name for one push, unique among pushes and changes while this server runs.
    pub fn next_push_id(&self) -> String {
        crate::edits::next_holder()
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}
