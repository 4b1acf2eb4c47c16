//! The server side of a push's checks: [`InServer`], the [`PushServer`] the pre-receive check
//! talks to. It adapts the deployer (reserving, holding environments, `-o wait` deployments)
//! and the API's URLs for the hook, which owns the trait and knows neither.

use std::sync::Arc;

use crate::applying::deployer::{DeployError, Deployer};
use crate::applying::{AnyTarget, DryRun};
use crate::hook::{PushServer, Queued};
use crate::records::{Deployment, NewDeployment};

/// The server a push came through, as its checks see it.
pub struct InServer {
    pub deployer: Arc<Deployer<AnyTarget>>,
    pub base_url: String,
    pub pusher: String,
    /// This push, as the server knows it (its deployments are reserved under it).
    pub push: String,
    pub runtime: tokio::runtime::Handle,
}

impl InServer {
    /// A deployment's links: its console page (what a push prints first) and its API resource.
    fn queued(&self, id: u64) -> Queued {
        Queued {
            id,
            url: super::deployment_page_url(&self.base_url, id),
            api_url: super::deployment_url(&self.base_url, id),
        }
    }
}

impl PushServer for InServer {
    fn pusher(&self) -> &str {
        &self.pusher
    }

    fn reserve(
        &self,
        request: NewDeployment,
        rendered: Option<crate::rendering::Rendered>,
    ) -> Result<Queued, DeployError> {
        let id = self.deployer.reserve(&self.push, request, rendered)?;
        Ok(self.queued(id))
    }

    fn hold(&self, request: &NewDeployment, on_wait: &mut dyn FnMut()) -> bool {
        let key =
            (request.account.clone(), request.application.clone(), request.repo.clone(), request.environment.clone());
        self.runtime.block_on(self.deployer.hold(&self.push, key, on_wait))
    }

    fn submit(&self, request: NewDeployment) -> Result<Queued, DeployError> {
        let d = self.runtime.block_on(self.deployer.submit_waited(&self.push, request))?;
        Ok(self.queued(d.id))
    }

    fn deployment(&self, id: u64) -> Option<Deployment> {
        self.deployer.records().get(id)
    }

    fn dry_run(&self, request: NewDeployment) -> Result<Option<DryRun>, String> {
        self.runtime.block_on(self.deployer.dry_run(request))
    }
}
