//! The records database: one SQLite file (`<data>/records.sqlite3`) holding deployments, their
//! steps and the audit log.
//!
//! - WAL journal with `synchronous=NORMAL`: a commit is in the WAL file (the OS has it) before
//!   the call returns, so a crash of the process loses no committed write; an OS crash or power
//!   loss may lose the last commits before the next checkpoint, never the database's
//!   consistency.
//! - One writer connection (a mutex) and a few reader connections (WAL lets readers run while
//!   the writer writes). Every call blocks: callers on the async runtime use `spawn_blocking`.
//! - Memory is bounded by SQLite's page cache per connection (2 MiB), whatever the data size.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension, Transaction};

/// The database file in a data dir.
pub const FILE: &str = "records.sqlite3";

/// Reader connections kept open (more are opened while more readers run at once).
const IDLE_READERS: usize = 4;

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("records database {path}: {source}")]
    Sql { path: PathBuf, source: rusqlite::Error },
    #[error("migrating {path} into the records database: {source}")]
    Migrate { path: PathBuf, source: std::io::Error },
}

pub struct Db {
    path: PathBuf,
    writer: Mutex<Connection>,
    readers: Mutex<Vec<Connection>>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS deployments (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    account TEXT NOT NULL,
    application TEXT NOT NULL,
    repo TEXT NOT NULL,
    environment TEXT NOT NULL,
    commit_id TEXT NOT NULL,
    action TEXT NOT NULL,
    pusher TEXT NOT NULL,
    quarantine TEXT,
    validation TEXT NOT NULL DEFAULT '[]',
    state TEXT NOT NULL,
    -- 0 while the push that asked for it has not moved its branch (and for good when it never did).
    landed INTEGER NOT NULL DEFAULT 1,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    namespace TEXT
);
CREATE INDEX IF NOT EXISTS deployments_environment ON deployments (account, application, repo, environment, id);
CREATE INDEX IF NOT EXISTS deployments_application ON deployments (account, application, id);
CREATE INDEX IF NOT EXISTS deployments_account ON deployments (account, id);
CREATE INDEX IF NOT EXISTS deployments_env_name ON deployments (environment, id);
CREATE INDEX IF NOT EXISTS deployments_state ON deployments (state, id);
CREATE TABLE IF NOT EXISTS steps (
    deployment INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    at INTEGER NOT NULL,
    state TEXT NOT NULL,
    message TEXT NOT NULL,
    PRIMARY KEY (deployment, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at INTEGER NOT NULL,
    who TEXT NOT NULL,
    from_addr TEXT,
    action TEXT NOT NULL,
    account TEXT NOT NULL,
    target TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_account ON audit (account, id);
CREATE INDEX IF NOT EXISTS audit_at ON audit (at);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
-- How many deployments each environment has in each state, kept by triggers: a list's `total`
-- sums a few of these rows instead of counting a million.
CREATE TABLE IF NOT EXISTS deployment_counts (
    account TEXT NOT NULL,
    application TEXT NOT NULL,
    repo TEXT NOT NULL,
    environment TEXT NOT NULL,
    state TEXT NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY (account, application, repo, environment, state)
) WITHOUT ROWID;
CREATE TRIGGER IF NOT EXISTS deployment_counts_insert AFTER INSERT ON deployments BEGIN
    INSERT INTO deployment_counts VALUES (NEW.account, NEW.application, NEW.repo, NEW.environment, NEW.state, 1)
        ON CONFLICT DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER IF NOT EXISTS deployment_counts_delete AFTER DELETE ON deployments BEGIN
    UPDATE deployment_counts SET n = n - 1 WHERE account = OLD.account AND application = OLD.application
        AND repo = OLD.repo AND environment = OLD.environment AND state = OLD.state;
END;
CREATE TRIGGER IF NOT EXISTS deployment_counts_state AFTER UPDATE OF state ON deployments
    WHEN OLD.state != NEW.state BEGIN
    UPDATE deployment_counts SET n = n - 1 WHERE account = OLD.account AND application = OLD.application
        AND repo = OLD.repo AND environment = OLD.environment AND state = OLD.state;
    INSERT INTO deployment_counts VALUES (NEW.account, NEW.application, NEW.repo, NEW.environment, NEW.state, 1)
        ON CONFLICT DO UPDATE SET n = n + 1;
END;
";

impl Db {
    /// Opens (creating) the data dir's database and migrates the JSON-lines logs of earlier
    /// versions into it, once.
    pub fn open(data_dir: &Path) -> Result<Db, DbError> {
        let path = data_dir.join(FILE);
        let err = |source| DbError::Sql { path: path.clone(), source };
        let writer = connect(&path, false).map_err(err)?;
        writer.execute_batch(SCHEMA).map_err(err)?;
        let db = Db { path: path.clone(), writer: Mutex::new(writer), readers: Mutex::new(Vec::new()) };
        // The counts came with a later schema: fill them once from the rows already there.
        db.write(|tx| {
            let key = "deployment_counts";
            if tx.query_row("SELECT 1 FROM meta WHERE key = ?", [key], |_| Ok(())).optional()?.is_none() {
                tx.execute("DELETE FROM deployment_counts", [])?;
                tx.execute(
                    "INSERT INTO deployment_counts SELECT account, application, repo, environment, state, count(*) \
                     FROM deployments GROUP BY account, application, repo, environment, state",
                    [],
                )?;
                tx.execute("INSERT INTO meta (key, value) VALUES (?, 'filled')", [key])?;
            }
            Ok(())
        })?;
        super::migrate::run(&db, data_dir)?;
        Ok(db)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self, source: rusqlite::Error) -> DbError {
        DbError::Sql { path: self.path.clone(), source }
    }

    /// Runs `f` in one write transaction (`BEGIN IMMEDIATE`): all of it is committed or none.
    pub fn write<T>(&self, f: impl FnOnce(&Transaction) -> rusqlite::Result<T>) -> Result<T, DbError> {
        let mut conn = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(|e| self.err(e))?;
        let out = f(&tx).map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))?;
        Ok(out)
    }

    /// Runs `f` on a reader connection (a consistent snapshot when `f` uses one transaction).
    pub fn read<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T, DbError> {
        let conn = self.readers.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let conn = match conn {
            Some(c) => c,
            None => connect(&self.path, true).map_err(|e| self.err(e))?,
        };
        let out = f(&conn).map_err(|e| self.err(e));
        let mut readers = self.readers.lock().unwrap_or_else(|e| e.into_inner());
        if readers.len() < IDLE_READERS {
            readers.push(conn);
        }
        out
    }
}

fn connect(path: &Path, read_only: bool) -> rusqlite::Result<Connection> {
    let flags = if read_only {
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX
    } else {
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX
    };
    let conn = Connection::open_with_flags(path, flags)?;
    // Another process (the devpop CLI) may hold the write lock for a moment.
    conn.busy_timeout(Duration::from_secs(10))?;
    if !read_only {
        conn.pragma_update(None, "journal_mode", "WAL")?;
    }
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    // A 2 MiB page cache per connection: memory stays flat however many records there are.
    conn.pragma_update(None, "cache_size", -2000)?;
    conn.set_prepared_statement_cache_capacity(32);
    Ok(conn)
}
