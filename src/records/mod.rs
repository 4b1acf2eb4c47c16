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
mod model;
mod rows;

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use jiff::Timestamp;
use rusqlite::{params, OptionalExtension, Row, Transaction};

pub use db::{Db, DbError};
pub use model::{Action, Deployment, EnvKey, NewDeployment, State, Step};
use rows::{deployment_row, insert_deployment, insert_step, insert_whole, nanos, with_steps};

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
        self.insert_new(request, landed, audit, None)
    }

    /// Records a new deployment with `note` after its queued step, in one transaction, so no
    /// reader sees it without the note (reconciliation's reason).
    pub fn create_noted(&self, request: NewDeployment, note: String) -> Result<Deployment, RecordError> {
        self.insert_new(request, true, None, Some(note))
    }

    fn insert_new(
        &self,
        request: NewDeployment,
        landed: bool,
        audit: Option<audit::AuditEntry>,
        note: Option<String>,
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
        let mut steps = vec![Step { at: now, state: State::Queued, message }];
        steps.extend(note.map(|message| Step { at: now, state: State::Queued, message }));
        let id = self.db.write(|tx| {
            let id = insert_deployment(tx, None, &request, State::Queued, landed, now, now, None)?;
            for (i, step) in steps.iter().enumerate() {
                insert_step(tx, id, i as i64, step)?;
            }
            if let Some(entry) = &audit {
                audit::insert(tx, entry)?;
            }
            Ok(id)
        })?;
        Ok(Deployment { id, request, state: State::Queued, created_at: now, updated_at: now, steps, namespace: None })
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

pub fn short(commit: &str) -> &str {
    &commit[..commit.len().min(12)]
}

#[cfg(test)]
mod tests;
