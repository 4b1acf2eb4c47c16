//! Deployment records: every accepted push is one deployment, with one id that the push output,
//! the API and the console all use, and a state machine:
//!
//! ```text
//! queued -> rendering -> applying -> progressing -> ready
//!    \           \            \            \-----> failed
//!     \-> superseded (a newer push of the same environment arrived while it waited)
//! ```
//!
//! Stored as an append-only JSON-lines log (`<data>/deployments.jsonl`), replayed at start-up:
//! simple, inspectable with `jq`, and a crash can at worst cut the last line (which replay
//! skips). Writes are flushed to the OS before a call returns, so a process crash or restart
//! loses nothing; an OS crash may lose the last writes (no fsync on the push path).

pub mod audit;

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

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

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("deployment log {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("no deployment {0}")]
    NotFound(u64),
    #[error("deployment {id} cannot go from {from} to {to}")]
    BadTransition { id: u64, from: &'static str, to: &'static str },
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "lowercase")]
enum Event {
    Created {
        deployment: Box<Deployment>,
    },
    Step {
        id: u64,
        step: Step,
        #[serde(default)]
        namespace: Option<String>,
    },
}

struct Inner {
    file: File,
    by_id: BTreeMap<u64, Deployment>,
    /// The highest id handed out by [`Records::reserve_id`] (it may not be recorded yet).
    reserved: u64,
}

/// The deployment records of a data dir. Thread-safe; blocking (call from `spawn_blocking`).
pub struct Records {
    path: PathBuf,
    inner: Mutex<Inner>,
}

impl Records {
    pub fn open(data_dir: &Path) -> Result<Records, RecordError> {
        let path = data_dir.join("deployments.jsonl");
        let io = |source| RecordError::Io { path: path.clone(), source };
        let mut by_id = BTreeMap::new();
        if let Ok(f) = File::open(&path) {
            for line in BufReader::new(f).lines() {
                let line = line.map_err(io)?;
                // A torn last line (crash mid-write) is skipped.
                let Ok(event) = serde_json::from_str::<Event>(&line) else { continue };
                apply(&mut by_id, event);
            }
        }
        let mut file = OpenOptions::new().create(true).append(true).read(true).open(&path).map_err(io)?;
        // After a torn last line, start the next event on a line of its own.
        let len = file.metadata().map_err(io)?.len();
        if len > 0 {
            use std::io::{Read, Seek, SeekFrom};
            let mut last = [0u8];
            file.seek(SeekFrom::Start(len - 1)).map_err(io)?;
            file.read_exact(&mut last).map_err(io)?;
            if last[0] != b'\n' {
                file.write_all(b"\n").map_err(io)?;
            }
        }
        Ok(Records { path, inner: Mutex::new(Inner { file, by_id, reserved: 0 }) })
    }

    fn write(&self, inner: &mut Inner, event: &Event) -> Result<(), RecordError> {
        let mut line = serde_json::to_vec(event).expect("events serialise");
        line.push(b'\n');
        inner.file.write_all(&line).map_err(|source| RecordError::Io { path: self.path.clone(), source })
    }

    /// Hands out the next id without recording anything (a push announces its deployment's id
    /// before the branch moves; the record is made only if it does).
    pub fn reserve_id(&self) -> u64 {
        let mut inner = self.inner.lock().expect("records lock");
        let id = next_id(&inner);
        inner.reserved = id;
        id
    }

    pub fn create(&self, request: NewDeployment) -> Result<Deployment, RecordError> {
        self.create_as(None, request)
    }

    /// Creates a deployment, with a reserved id or the next one.
    pub fn create_as(&self, reserved: Option<u64>, request: NewDeployment) -> Result<Deployment, RecordError> {
        let mut inner = self.inner.lock().expect("records lock");
        let id = reserved.filter(|id| !inner.by_id.contains_key(id)).unwrap_or_else(|| next_id(&inner));
        inner.reserved = inner.reserved.max(id);
        let now = Timestamp::now();
        let message = match request.action {
            Action::Deploy => {
                format!("queued: {} of {} by {}", short(&request.commit), request.environment, request.pusher)
            }
            Action::Delete => {
                format!("queued: removal of {} (branch deleted) by {}", request.environment, request.pusher)
            }
        };
        let deployment = Deployment {
            id,
            request,
            state: State::Queued,
            created_at: now,
            updated_at: now,
            steps: vec![Step { at: now, state: State::Queued, message }],
            namespace: None,
        };
        let event = Event::Created { deployment: Box::new(deployment.clone()) };
        self.write(&mut inner, &event)?;
        inner.by_id.insert(id, deployment.clone());
        Ok(deployment)
    }

    /// Moves a deployment to `state` (checked against the state machine), with a message.
    pub fn transition(&self, id: u64, state: State, message: impl Into<String>) -> Result<Deployment, RecordError> {
        self.step(id, Some(state), message.into(), None)
    }

    /// Adds a message without changing state.
    pub fn note(&self, id: u64, message: impl Into<String>) -> Result<Deployment, RecordError> {
        self.step(id, None, message.into(), None)
    }

    pub fn set_namespace(&self, id: u64, namespace: &str) -> Result<Deployment, RecordError> {
        self.step(id, None, format!("namespace {namespace}"), Some(namespace.to_owned()))
    }

    fn step(
        &self,
        id: u64,
        state: Option<State>,
        message: String,
        namespace: Option<String>,
    ) -> Result<Deployment, RecordError> {
        let mut inner = self.inner.lock().expect("records lock");
        let current = inner.by_id.get(&id).ok_or(RecordError::NotFound(id))?.state;
        let state = state.unwrap_or(current);
        if state != current && !current.can_become(state) {
            return Err(RecordError::BadTransition { id, from: current.as_str(), to: state.as_str() });
        }
        let event = Event::Step { id, step: Step { at: Timestamp::now(), state, message }, namespace };
        self.write(&mut inner, &event)?;
        apply(&mut inner.by_id, event);
        Ok(inner.by_id[&id].clone())
    }

    pub fn get(&self, id: u64) -> Option<Deployment> {
        self.inner.lock().expect("records lock").by_id.get(&id).cloned()
    }

    /// Deployments matching `filter`, newest first.
    pub fn list(&self, filter: impl Fn(&Deployment) -> bool) -> Vec<Deployment> {
        let inner = self.inner.lock().expect("records lock");
        inner.by_id.values().rev().filter(|d| filter(d)).cloned().collect()
    }

    /// Deployments that had not finished (at a restart: to resume), oldest first.
    pub fn unfinished(&self) -> Vec<Deployment> {
        let mut v = self.list(|d| !d.state.is_terminal());
        v.reverse();
        v
    }

    /// The last deployment of an environment that reached `ready`.
    pub fn last_ready(&self, key: &(String, String, String, String)) -> Option<Deployment> {
        self.list(|d| d.state == State::Ready && &d.environment_key() == key).into_iter().next()
    }
}

fn next_id(inner: &Inner) -> u64 {
    inner.by_id.keys().next_back().copied().unwrap_or(0).max(inner.reserved) + 1
}

fn apply(by_id: &mut BTreeMap<u64, Deployment>, event: Event) {
    match event {
        Event::Created { deployment } => {
            by_id.insert(deployment.id, *deployment);
        }
        Event::Step { id, step, namespace } => {
            if let Some(d) = by_id.get_mut(&id) {
                d.state = step.state;
                d.updated_at = step.at;
                if namespace.is_some() {
                    d.namespace = namespace;
                }
                d.steps.push(step);
            }
        }
    }
}

pub fn short(commit: &str) -> &str {
    &commit[..commit.len().min(12)]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(env: &str) -> NewDeployment {
        NewDeployment {
            account: "1".into(),
            application: "2".into(),
            repo: "site".into(),
            environment: env.into(),
            commit: "a".repeat(40),
            action: Action::Deploy,
            pusher: "dev".into(),
            quarantine: None,
            validation: Vec::new(),
        }
    }

    #[test]
    fn ids_grow_and_records_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let r = Records::open(dir.path()).unwrap();
        let a = r.create(request("Production")).unwrap();
        let b = r.create(request("Staging")).unwrap();
        assert_eq!((a.id, b.id), (1, 2));
        r.transition(1, State::Rendering, "rendering").unwrap();
        r.set_namespace(1, "section-x").unwrap();
        drop(r);
        let r = Records::open(dir.path()).unwrap();
        let a = r.get(1).unwrap();
        assert_eq!(a.state, State::Rendering);
        assert_eq!(a.namespace.as_deref(), Some("section-x"));
        assert_eq!(a.steps.len(), 3);
        assert_eq!(r.unfinished().iter().map(|d| d.id).collect::<Vec<_>>(), [1, 2]);
        assert_eq!(r.create(request("Production")).unwrap().id, 3);
    }

    #[test]
    fn the_state_machine_refuses_skipping_and_leaving_terminal_states() {
        let dir = tempfile::tempdir().unwrap();
        let r = Records::open(dir.path()).unwrap();
        r.create(request("Production")).unwrap();
        assert!(matches!(r.transition(1, State::Ready, "x"), Err(RecordError::BadTransition { .. })));
        for s in [State::Rendering, State::Applying, State::Progressing, State::Ready] {
            r.transition(1, s, s.as_str()).unwrap();
        }
        assert!(r.transition(1, State::Failed, "late").is_err());
        assert!(r.get(1).unwrap().state.is_terminal());
    }

    #[test]
    fn a_torn_last_line_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let r = Records::open(dir.path()).unwrap();
        r.create(request("Production")).unwrap();
        drop(r);
        let mut f = OpenOptions::new().append(true).open(dir.path().join("deployments.jsonl")).unwrap();
        f.write_all(b"{\"event\":\"step\",\"id\":1,\"st").unwrap();
        let r = Records::open(dir.path()).unwrap();
        assert_eq!(r.get(1).unwrap().state, State::Queued);
        r.transition(1, State::Rendering, "after the tear").unwrap();
        drop(r);
        assert_eq!(Records::open(dir.path()).unwrap().get(1).unwrap().state, State::Rendering);
    }
}
