//! Deployment records: every accepted push is one deployment, with one id that the push output,
//! the API and the console all use, and a state machine:
//!
//! ```text
//! queued -> rendering -> applying -> progressing -> ready
//!    \           \            \            \-----> failed
//!     \-> superseded (a newer push of the same environment arrived while it waited)
//! ```
//!
//! Stored in the records database ([`db`], SQLite): queries are indexed and paginated by the
//! store, memory does not grow with the number of records, and a committed write survives a
//! crash of the process. A push records its deployment before git moves the branch
//! ([`Records::create_pending`]), and marks it landed once the branch has moved (or failed when
//! it did not), so no moved branch is left without a record.

pub mod audit;
pub mod crash;
pub mod db;
mod migrate;

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use jiff::Timestamp;
use rusqlite::{params, OptionalExtension, Row, Transaction};
use serde::{Deserialize, Serialize};

pub use db::{Db, DbError};

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

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("no deployment {0}")]
    NotFound(u64),
    #[error("deployment {id} cannot go from {from} to {to}")]
    BadTransition { id: u64, from: &'static str, to: &'static str },
}

/// Which deployments a list shows (every field that is set must match).
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub account: Option<String>,
    pub application: Option<String>,
    pub repo: Option<String>,
    pub environment: Option<String>,
    pub state: Option<State>,
    /// A cursor: only deployments older than this id (the last id of the previous page). The
    /// `total` of a page does not depend on it.
    pub before: Option<u64>,
}

impl Filter {
    /// One environment's deployments.
    pub fn environment(key: &EnvKey) -> Filter {
        Filter {
            account: Some(key.0.clone()),
            application: Some(key.1.clone()),
            repo: Some(key.2.clone()),
            environment: Some(key.3.clone()),
            state: None,
            before: None,
        }
    }

    fn sql(&self) -> (String, Vec<String>) {
        let mut conds = Vec::new();
        let mut args = Vec::new();
        for (column, value) in [
            ("account", &self.account),
            ("application", &self.application),
            ("repo", &self.repo),
            ("environment", &self.environment),
        ] {
            if let Some(v) = value {
                conds.push(format!("{column} = ?"));
                args.push(v.clone());
            }
        }
        if let Some(st) = self.state {
            conds.push("state = ?".to_owned());
            args.push(st.as_str().to_owned());
        }
        let clause = if conds.is_empty() { String::new() } else { format!("WHERE {}", conds.join(" AND ")) };
        (clause, args)
    }
}

/// What reconciliation needs to know of an environment.
#[derive(Debug, Clone, Default)]
pub struct EnvironmentRecord {
    /// The newest deployment whose branch moved to its commit.
    pub newest: Option<Deployment>,
    /// The commits of that one and of every newer deployment still under way.
    pub commits_asked: Vec<String>,
}

/// Deployments kept per environment by default (besides each environment's last ready one).
pub const DEFAULT_KEEP_PER_ENVIRONMENT: usize = 1000;

/// The deployment records of a data dir. Thread-safe; blocking (call from `spawn_blocking`).
pub struct Records {
    db: Arc<Db>,
    keep: AtomicUsize,
}

const COLUMNS: &str = "id, account, application, repo, environment, commit_id, action, pusher, quarantine, \
                       validation, state, created_at, updated_at, namespace";

const UNFINISHED: &str = "('queued', 'rendering', 'applying', 'progressing')";

impl Records {
    /// Opens the data dir's records database (migrating the JSON-lines logs once).
    pub fn open(data_dir: &Path) -> Result<Records, RecordError> {
        Ok(Records::with_db(Arc::new(Db::open(data_dir)?)))
    }

    pub fn with_db(db: Arc<Db>) -> Records {
        Records { db, keep: AtomicUsize::new(DEFAULT_KEEP_PER_ENVIRONMENT) }
    }

    pub fn db(&self) -> &Arc<Db> {
        &self.db
    }

    /// Retention: how many deployments to keep per environment (at least 1).
    pub fn set_keep_per_environment(&self, keep: usize) {
        self.keep.store(keep.max(1), Ordering::Relaxed);
    }

    /// Records a new deployment (queued).
    pub fn create(&self, request: NewDeployment) -> Result<Deployment, RecordError> {
        self.create_with(request, true, None)
    }

    /// Records the deployment a push asks for, before git moves its branch: it becomes real
    /// with [`Records::land`] once the branch moved, or fails with [`Records::not_landed`].
    pub fn create_pending(&self, request: NewDeployment) -> Result<Deployment, RecordError> {
        self.create_with(request, false, None)
    }

    /// Records a new deployment and, in the same transaction, an audit entry.
    pub fn create_with(
        &self,
        request: NewDeployment,
        landed: bool,
        audit: Option<audit::AuditEntry>,
    ) -> Result<Deployment, RecordError> {
        let now = Timestamp::now();
        let message = match request.action {
            Action::Deploy => {
                format!("queued: {} of {} by {}", short(&request.commit), request.environment, request.pusher)
            }
            Action::Delete => {
                format!("queued: removal of {} (branch deleted) by {}", request.environment, request.pusher)
            }
        };
        let step = Step { at: now, state: State::Queued, message };
        let id = self.db.write(|tx| {
            let id = insert_deployment(tx, None, &request, State::Queued, landed, now, now, None)?;
            insert_step(tx, id, 0, &step)?;
            if let Some(entry) = &audit {
                audit::insert(tx, entry)?;
            }
            Ok(id)
        })?;
        Ok(Deployment {
            id,
            request,
            state: State::Queued,
            created_at: now,
            updated_at: now,
            steps: vec![step],
            namespace: None,
        })
    }

    /// Writes whole deployments as given (ids, states, steps), in one transaction: bulk
    /// imports (the records benchmark builds its data with it). An id already present is an error.
    pub fn import(&self, deployments: &[Deployment]) -> Result<(), RecordError> {
        Ok(self.db.write(|tx| {
            for d in deployments {
                insert_whole(tx, d)?;
            }
            Ok(())
        })?)
    }

    /// The branch of a pending deployment moved: it is a deployment like any other now (with
    /// its audit entry, in the same transaction).
    pub fn land(&self, id: u64, audit: Option<audit::AuditEntry>) -> Result<Deployment, RecordError> {
        self.db.write(|tx| {
            tx.execute("UPDATE deployments SET landed = 1 WHERE id = ?", [id as i64])?;
            if let Some(entry) = &audit {
                audit::insert(tx, entry)?;
            }
            Ok(())
        })?;
        self.find(id)?.ok_or(RecordError::NotFound(id))
    }

    /// The deployment's branch did not move to its commit: it fails, and reconciliation does not
    /// count it as what the environment was asked to run.
    pub fn not_landed(&self, id: u64, message: impl Into<String>) -> Result<Deployment, RecordError> {
        self.step_with(id, Some(State::Failed), message.into(), None, Some(false))
    }

    /// Whether the deployment's branch moved to it (false while a push is still under way).
    pub fn landed(&self, id: u64) -> Result<bool, RecordError> {
        let landed = self.db.read(|c| {
            c.prepare_cached("SELECT landed FROM deployments WHERE id = ?")?
                .query_row([id as i64], |r| r.get::<_, bool>(0))
                .optional()
        })?;
        landed.ok_or(RecordError::NotFound(id))
    }

    /// Moves a deployment to `state` (checked against the state machine), with a message.
    pub fn transition(&self, id: u64, state: State, message: impl Into<String>) -> Result<Deployment, RecordError> {
        self.step_with(id, Some(state), message.into(), None, None)
    }

    /// Adds a message without changing state.
    pub fn note(&self, id: u64, message: impl Into<String>) -> Result<Deployment, RecordError> {
        self.step_with(id, None, message.into(), None, None)
    }

    pub fn set_namespace(&self, id: u64, namespace: &str) -> Result<Deployment, RecordError> {
        self.step_with(id, None, format!("namespace {namespace}"), Some(namespace.to_owned()), None)
    }

    fn step_with(
        &self,
        id: u64,
        state: Option<State>,
        message: String,
        namespace: Option<String>,
        landed: Option<bool>,
    ) -> Result<Deployment, RecordError> {
        let at = Timestamp::now();
        let outcome = self.db.write(|tx| {
            let row = tx
                .prepare_cached("SELECT state FROM deployments WHERE id = ?")?
                .query_row([id as i64], |r| r.get::<_, String>(0))
                .optional()?;
            let Some(current) = row.as_deref().and_then(State::parse) else {
                return Ok(Err(RecordError::NotFound(id)));
            };
            let next = state.unwrap_or(current);
            if next != current && !current.can_become(next) {
                return Ok(Err(RecordError::BadTransition { id, from: current.as_str(), to: next.as_str() }));
            }
            let seq: i64 = tx
                .prepare_cached("SELECT coalesce(max(seq) + 1, 0) FROM steps WHERE deployment = ?")?
                .query_row([id as i64], |r| r.get(0))?;
            insert_step(tx, id, seq, &Step { at, state: next, message: message.clone() })?;
            tx.prepare_cached(
                "UPDATE deployments SET state = ?2, updated_at = ?3, namespace = coalesce(?4, namespace), \
                 landed = coalesce(?5, landed) WHERE id = ?1",
            )?
            .execute(params![id as i64, next.as_str(), nanos(at), namespace, landed])?;
            Ok(Ok(()))
        })?;
        outcome?;
        self.find(id)?.ok_or(RecordError::NotFound(id))
    }

    /// One deployment with its steps (`None` also when the database cannot be read: logged).
    pub fn get(&self, id: u64) -> Option<Deployment> {
        self.find(id).unwrap_or_else(|e| {
            tracing::error!(error = %e, "cannot read a deployment");
            None
        })
    }

    /// One deployment with its steps.
    pub fn find(&self, id: u64) -> Result<Option<Deployment>, RecordError> {
        Ok(self.db.read(|c| {
            let d = c
                .prepare_cached(&format!("SELECT {COLUMNS} FROM deployments WHERE id = ?"))?
                .query_row([id as i64], deployment_row)
                .optional()?;
            d.map(|d| with_steps(c, d)).transpose()
        })?)
    }

    /// A page of the deployments matching `filter`, newest first, and how many match in all.
    pub fn page(&self, filter: &Filter, offset: u64, limit: u64) -> Result<(Vec<Deployment>, u64), RecordError> {
        let (clause, args) = filter.sql();
        Ok(self.db.read(|c| {
            // Counted from the per-environment, per-state counts the triggers keep (db.rs).
            let total: i64 = c
                .prepare_cached(&format!("SELECT coalesce(sum(n), 0) FROM deployment_counts {clause}"))?
                .query_row(rusqlite::params_from_iter(&args), |r| r.get(0))?;
            let mut all: Vec<rusqlite::types::Value> = args.iter().map(|a| a.clone().into()).collect();
            let clause = match filter.before {
                None => clause,
                Some(before) => {
                    all.push((before.min(i64::MAX as u64) as i64).into());
                    if clause.is_empty() {
                        "WHERE id < ?".to_owned()
                    } else {
                        format!("{clause} AND id < ?")
                    }
                }
            };
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM deployments {clause} ORDER BY id DESC LIMIT ? OFFSET ?"
            ))?;
            all.push((limit.min(i64::MAX as u64) as i64).into());
            all.push((offset.min(i64::MAX as u64) as i64).into());
            let items = stmt
                .query_map(rusqlite::params_from_iter(all), deployment_row)?
                .collect::<Result<Vec<_>, _>>()?
                .into_iter()
                .map(|d| with_steps(c, d))
                .collect::<Result<Vec<_>, _>>()?;
            Ok((items, total as u64))
        })?)
    }

    /// The newest deployment of an environment.
    pub fn newest(&self, key: &EnvKey) -> Result<Option<Deployment>, RecordError> {
        Ok(self.page(&Filter::environment(key), 0, 1)?.0.into_iter().next())
    }

    /// The last deployment of an environment that reached `ready`.
    pub fn last_ready(&self, key: &EnvKey) -> Result<Option<Deployment>, RecordError> {
        let filter = Filter { state: Some(State::Ready), ..Filter::environment(key) };
        Ok(self.page(&filter, 0, 1)?.0.into_iter().next())
    }

    /// Deployments that had not finished (at a restart: to resume), oldest first, each with
    /// whether its branch had moved.
    pub fn unfinished(&self) -> Result<Vec<(Deployment, bool)>, RecordError> {
        Ok(self.db.read(|c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {COLUMNS}, landed FROM deployments WHERE state IN {UNFINISHED} ORDER BY id"
            ))?;
            let rows = stmt
                .query_map([], |r| Ok((deployment_row(r)?, r.get::<_, bool>(14)?)))?
                .collect::<Result<Vec<_>, _>>()?;
            rows.into_iter().map(|(d, landed)| Ok((with_steps(c, d)?, landed))).collect()
        })?)
    }

    /// The environments of a repo that have deployments.
    pub fn environments(&self, account: &str, application: &str, repo: &str) -> Result<Vec<String>, RecordError> {
        Ok(self.db.read(|c| {
            c.prepare_cached(
                "SELECT DISTINCT environment FROM deployments WHERE account = ? AND application = ? AND repo = ?",
            )?
            .query_map([account, application, repo], |r| r.get(0))?
            .collect()
        })?)
    }

    /// What an environment was last asked to run (see [`EnvironmentRecord`]).
    pub fn environment_record(&self, key: &EnvKey) -> Result<EnvironmentRecord, RecordError> {
        Ok(self.db.read(|c| {
            let env = [&key.0, &key.1, &key.2, &key.3];
            let newest = c
                .prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM deployments WHERE account = ? AND application = ? AND repo = ? \
                     AND environment = ? AND landed = 1 ORDER BY id DESC LIMIT 1"
                ))?
                .query_row(env, deployment_row)
                .optional()?;
            let Some(newest) = newest else { return Ok(EnvironmentRecord::default()) };
            let mut commits_asked = vec![newest.request.commit.clone()];
            let mut stmt = c.prepare_cached(&format!(
                "SELECT commit_id FROM deployments WHERE account = ?1 AND application = ?2 AND repo = ?3 \
                 AND environment = ?4 AND id > ?5 AND state IN {UNFINISHED}"
            ))?;
            let newer = stmt.query_map(params![key.0, key.1, key.2, key.3, newest.id as i64], |r| r.get(0))?;
            for commit in newer {
                commits_asked.push(commit?);
            }
            Ok(EnvironmentRecord { newest: Some(with_steps(c, newest)?), commits_asked })
        })?)
    }

    /// Retention: deletes the environment's deployments beyond the newest `keep` (see
    /// [`Records::set_keep_per_environment`]), except its last ready one and unfinished ones.
    pub fn prune(&self, key: &EnvKey) -> Result<usize, RecordError> {
        let keep = self.keep.load(Ordering::Relaxed).max(1);
        Ok(self.db.write(|tx| {
            let cutoff: Option<i64> = tx
                .prepare_cached(
                    "SELECT id FROM deployments WHERE account = ?1 AND application = ?2 AND repo = ?3 \
                     AND environment = ?4 ORDER BY id DESC LIMIT 1 OFFSET ?5",
                )?
                .query_row(params![key.0, key.1, key.2, key.3, (keep - 1) as i64], |r| r.get(0))
                .optional()?;
            let Some(cutoff) = cutoff else { return Ok(0) };
            let doomed = format!(
                "SELECT id FROM deployments WHERE account = ?1 AND application = ?2 AND repo = ?3 \
                 AND environment = ?4 AND id < ?5 AND state NOT IN {UNFINISHED} AND id != coalesce((SELECT max(id) \
                 FROM deployments WHERE account = ?1 AND application = ?2 AND repo = ?3 AND environment = ?4 \
                 AND state = 'ready'), 0)"
            );
            let args = params![key.0, key.1, key.2, key.3, cutoff];
            tx.execute(&format!("DELETE FROM steps WHERE deployment IN ({doomed})"), args)?;
            tx.execute(&format!("DELETE FROM deployments WHERE id IN ({doomed})"), args)
        })?)
    }
}

fn nanos(t: Timestamp) -> i64 {
    t.as_nanosecond() as i64
}

fn timestamp(n: i64) -> Timestamp {
    Timestamp::from_nanosecond(n as i128).unwrap_or(Timestamp::UNIX_EPOCH)
}

#[allow(clippy::too_many_arguments)]
fn insert_deployment(
    tx: &Transaction,
    id: Option<u64>,
    r: &NewDeployment,
    state: State,
    landed: bool,
    created: Timestamp,
    updated: Timestamp,
    namespace: Option<&str>,
) -> rusqlite::Result<u64> {
    let action = match r.action {
        Action::Deploy => "deploy",
        Action::Delete => "delete",
    };
    let validation = serde_json::to_string(&r.validation).expect("strings serialise");
    tx.prepare_cached(
        "INSERT INTO deployments (id, account, application, repo, environment, commit_id, action, pusher, \
         quarantine, validation, state, landed, created_at, updated_at, namespace) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )?
    .execute(params![
        id.map(|i| i as i64),
        r.account,
        r.application,
        r.repo,
        r.environment,
        r.commit,
        action,
        r.pusher,
        r.quarantine,
        validation,
        state.as_str(),
        landed,
        nanos(created),
        nanos(updated),
        namespace
    ])?;
    Ok(tx.last_insert_rowid() as u64)
}

/// A whole deployment as recorded (landed, with its steps), under its own id.
fn insert_whole(tx: &Transaction, d: &Deployment) -> rusqlite::Result<()> {
    insert_deployment(tx, Some(d.id), &d.request, d.state, true, d.created_at, d.updated_at, d.namespace.as_deref())?;
    for (seq, step) in d.steps.iter().enumerate() {
        insert_step(tx, d.id, seq as i64, step)?;
    }
    Ok(())
}

fn insert_step(tx: &Transaction, id: u64, seq: i64, step: &Step) -> rusqlite::Result<()> {
    tx.prepare_cached("INSERT INTO steps (deployment, seq, at, state, message) VALUES (?, ?, ?, ?, ?)")?
        .execute(params![id as i64, seq, nanos(step.at), step.state.as_str(), step.message])?;
    Ok(())
}

fn bad_column(i: usize, what: &str) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, what.to_owned().into())
}

fn deployment_row(r: &Row) -> rusqlite::Result<Deployment> {
    let action = match r.get_ref(6)?.as_str()? {
        "delete" => Action::Delete,
        _ => Action::Deploy,
    };
    let validation: String = r.get(9)?;
    let state: String = r.get(10)?;
    Ok(Deployment {
        id: r.get::<_, i64>(0)? as u64,
        request: NewDeployment {
            account: r.get(1)?,
            application: r.get(2)?,
            repo: r.get(3)?,
            environment: r.get(4)?,
            commit: r.get(5)?,
            action,
            pusher: r.get(7)?,
            quarantine: r.get(8)?,
            validation: serde_json::from_str(&validation).map_err(|_| bad_column(9, "validation is not JSON"))?,
        },
        state: State::parse(&state).ok_or_else(|| bad_column(10, "unknown state"))?,
        created_at: timestamp(r.get(11)?),
        updated_at: timestamp(r.get(12)?),
        steps: Vec::new(),
        namespace: r.get(13)?,
    })
}

fn with_steps(c: &rusqlite::Connection, mut d: Deployment) -> rusqlite::Result<Deployment> {
    let mut stmt = c.prepare_cached("SELECT at, state, message FROM steps WHERE deployment = ? ORDER BY seq")?;
    d.steps = stmt
        .query_map([d.id as i64], |r| {
            let state: String = r.get(1)?;
            Ok(Step {
                at: timestamp(r.get(0)?),
                state: State::parse(&state).ok_or_else(|| bad_column(1, "unknown state"))?,
                message: r.get(2)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    Ok(d)
}

pub fn short(commit: &str) -> &str {
    &commit[..commit.len().min(12)]
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn request(env: &str) -> NewDeployment {
        NewDeployment {
            account: "1".into(),
            application: "2".into(),
            repo: "site".into(),
            environment: env.into(),
            commit: "a".repeat(40),
            action: Action::Deploy,
            pusher: "dev".into(),
            quarantine: None,
            validation: vec!["Validating".into()],
        }
    }

    fn key(env: &str) -> EnvKey {
        ("1".into(), "2".into(), "site".into(), env.into())
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
        assert_eq!(a.request, request("Production"));
        let unfinished: Vec<u64> = r.unfinished().unwrap().iter().map(|(d, _)| d.id).collect();
        assert_eq!(unfinished, [1, 2]);
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
        assert!(matches!(r.note(9, "x"), Err(RecordError::NotFound(9))));
    }

    #[test]
    fn pages_are_newest_first_filtered_and_counted_by_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let r = Records::open(dir.path()).unwrap();
        for i in 0..30 {
            let d = r.create(request(if i % 3 == 0 { "Staging" } else { "Production" })).unwrap();
            if i % 2 == 0 {
                r.transition(d.id, State::Superseded, "newer").unwrap();
            }
        }
        let (page, total) = r.page(&Filter::default(), 5, 10).unwrap();
        assert_eq!(total, 30);
        assert_eq!(page.iter().map(|d| d.id).collect::<Vec<_>>(), (16..=25).rev().collect::<Vec<_>>());
        let staging = Filter::environment(&key("Staging"));
        let (page, total) = r.page(&staging, 0, 4).unwrap();
        assert_eq!(total, 10);
        assert_eq!(page.iter().map(|d| d.id).collect::<Vec<_>>(), [28, 25, 22, 19]);
        let cursor = Filter { before: Some(16), ..Filter::default() };
        let (page, total) = r.page(&cursor, 0, 3).unwrap();
        assert_eq!((page.iter().map(|d| d.id).collect::<Vec<_>>(), total), (vec![15, 14, 13], 30));
        let superseded = Filter { state: Some(State::Superseded), ..Filter::default() };
        assert_eq!(r.page(&superseded, 0, 100).unwrap().1, 15);
        let other = Filter { account: Some("7".into()), ..Filter::default() };
        assert_eq!(r.page(&other, 0, 100).unwrap(), (vec![], 0));
        assert_eq!(r.newest(&key("Staging")).unwrap().unwrap().id, 28);
    }

    #[test]
    fn a_pending_deployment_lands_with_its_audit_entry_or_fails() {
        let dir = tempfile::tempdir().unwrap();
        let r = Records::open(dir.path()).unwrap();
        let first = r.create(request("Production")).unwrap();
        let mut pending = request("Production");
        pending.commit = "p".repeat(40);
        let a = r.create_pending(pending).unwrap();
        assert!(!r.landed(a.id).unwrap());
        // Under way: it counts as asked for, so reconciliation leaves the environment alone.
        let seen = r.environment_record(&key("Production")).unwrap();
        assert_eq!(seen.newest.unwrap().id, first.id);
        assert_eq!(seen.commits_asked, ["a".repeat(40), "p".repeat(40)]);
        let entry = audit::AuditEntry::now("dev", None, "push", "1", "2/site/Production", "x");
        r.land(a.id, Some(entry)).unwrap();
        assert!(r.landed(a.id).unwrap());
        let audit = audit::AuditLog::with_db(r.db().clone());
        assert_eq!(audit.page(&audit::Visible::All, 0, 10).unwrap().1, 1);
        let mut other = request("Production");
        other.commit = "b".repeat(40);
        let b = r.create_pending(other).unwrap();
        r.not_landed(b.id, "the branch did not move").unwrap();
        let seen = r.environment_record(&key("Production")).unwrap();
        assert_eq!(seen.newest.unwrap().id, a.id, "a push that did not land is not what the environment runs");
        assert_eq!(r.get(b.id).unwrap().state, State::Failed);
    }

    #[test]
    fn retention_keeps_the_newest_per_environment_and_the_last_ready_one() {
        let dir = tempfile::tempdir().unwrap();
        let r = Records::open(dir.path()).unwrap();
        r.set_keep_per_environment(3);
        let ready = r.create(request("Production")).unwrap().id;
        for s in [State::Rendering, State::Applying, State::Progressing, State::Ready] {
            r.transition(ready, s, "x").unwrap();
        }
        let mut ids = Vec::new();
        for _ in 0..6 {
            let d = r.create(request("Production")).unwrap();
            r.transition(d.id, State::Failed, "no").unwrap();
            ids.push(d.id);
        }
        let staging = r.create(request("Staging")).unwrap().id;
        assert_eq!(r.prune(&key("Production")).unwrap(), 3);
        let (left, total) = r.page(&Filter::environment(&key("Production")), 0, 100).unwrap();
        assert_eq!(total, 4);
        assert_eq!(left.iter().map(|d| d.id).collect::<Vec<_>>(), [ids[5], ids[4], ids[3], ready]);
        assert!(r.get(ids[0]).is_none());
        assert!(r.get(staging).is_some());
        // Ids are never handed out again, even after the newest rows are gone.
        assert!(r.create(request("Production")).unwrap().id > staging);
    }
}
