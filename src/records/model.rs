//! What a deployment record is: its state machine, the request that made it, its steps.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Queued,
    Rendering,
    Applying,
    Progressing,
    Ready,
    Failed,
    Superseded,
}

impl State {
    pub fn is_terminal(self) -> bool {
        matches!(self, State::Ready | State::Failed | State::Superseded)
    }

    /// The transitions the state machine allows.
    pub fn can_become(self, next: State) -> bool {
        use State::*;
        match (self, next) {
            (Queued, Rendering | Superseded | Failed) => true,
            (Rendering, Applying | Failed) => true,
            (Applying, Progressing | Failed) => true,
            (Progressing, Ready | Failed) => true,
            // Resuming after a restart starts the pipeline again.
            (Rendering | Applying | Progressing, Queued) => true,
            _ => false,
        }
    }

    pub fn parse(s: &str) -> Option<State> {
        use State::*;
        [Queued, Rendering, Applying, Progressing, Ready, Failed, Superseded].into_iter().find(|st| st.as_str() == s)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            State::Queued => "queued",
            State::Rendering => "rendering",
            State::Applying => "applying",
            State::Progressing => "progressing",
            State::Ready => "ready",
            State::Failed => "failed",
            State::Superseded => "superseded",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Deploy the environment at `commit`.
    Deploy,
    /// The branch was deleted: remove the environment.
    Delete,
}

/// What a push asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewDeployment {
    pub account: String,
    pub application: String,
    pub repo: String,
    pub environment: String,
    pub commit: String,
    pub action: Action,
    pub pusher: String,
    /// Where git keeps the commit's objects while a `-o wait` push waits for its deployment
    /// (the commit is not in the repo proper until the deployment is ready).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quarantine: Option<String>,
    /// What the push's checks printed (validation, each module's validate.sh, rendering).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub validation: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    pub at: Timestamp,
    pub state: State,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deployment {
    pub id: u64,
    #[serde(flatten)]
    pub request: NewDeployment,
    pub state: State,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    /// Every state change and note, in order.
    pub steps: Vec<Step>,
    /// The namespace, once known.
    #[serde(default)]
    pub namespace: Option<String>,
}

impl Deployment {
    /// The queue key: deployments of one environment run one at a time.
    pub fn environment_key(&self) -> (String, String, String, String) {
        let r = &self.request;
        (r.account.clone(), r.application.clone(), r.repo.clone(), r.environment.clone())
    }
}

/// An environment: account, application, repo, environment (branch).
pub type EnvKey = (String, String, String, String);
