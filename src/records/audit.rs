//! The audit log: who pushed, created, deleted, rolled back or changed access to what, when
//! and from where. Rows of the records database (`audit` table); the server and the CLI both
//! append (SQLite serialises writers across processes). Never holds a token. Bounded by age
//! when the server is told to ([`AuditLog::prune_older_than`]).

use std::path::Path;
use std::sync::Arc;

use jiff::Timestamp;
use rusqlite::{params, Row, Transaction};
use serde::{Deserialize, Serialize};

use super::db::{Db, DbError};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub at: Timestamp,
    /// A token id, `local` (no authentication), or `cli` (the devpop command on the server).
    pub who: String,
    /// The client address, when the action came over the network.
    #[serde(default)]
    pub from: Option<String>,
    /// e.g. `push`, `application.create`, `environment.delete`, `rollback`, `token.create`.
    pub action: String,
    /// The account acted on (`*` for server-wide actions).
    pub account: String,
    /// What was acted on, e.g. `shop/Production`.
    pub target: String,
    #[serde(default)]
    pub detail: String,
}

impl AuditEntry {
    pub fn now(who: &str, from: Option<String>, action: &str, account: &str, target: &str, detail: &str) -> Self {
        AuditEntry {
            at: Timestamp::now(),
            who: who.to_owned(),
            from,
            action: action.to_owned(),
            account: account.to_owned(),
            target: target.to_owned(),
            detail: detail.to_owned(),
        }
    }
}

/// Which entries a reader may see.
#[derive(Debug, Clone)]
pub enum Visible {
    /// Every entry (an admin).
    All,
    /// Every account's entries, not the server-wide ones (a read-only admin token).
    Accounts,
    /// One account's entries (not the server-wide ones).
    Account(String),
}

pub struct AuditLog {
    db: Arc<Db>,
}

impl AuditLog {
    /// The audit log of a data dir (for the CLI; the server shares its records database).
    pub fn open(data_dir: &Path) -> Result<Self, DbError> {
        Ok(AuditLog { db: Arc::new(Db::open(data_dir)?) })
    }

    pub fn with_db(db: Arc<Db>) -> Self {
        AuditLog { db }
    }

    /// Appends an entry; an audit failure is logged, never fatal to the action.
    pub fn record(&self, who: &str, from: Option<String>, action: &str, account: &str, target: &str, detail: &str) {
        let entry = AuditEntry::now(who, from, action, account, target, detail);
        if let Err(e) = self.db.write(|tx| insert(tx, &entry)) {
            tracing::error!(error = %e, "cannot write the audit log");
        }
    }

    /// Appends an entry, or says why it could not.
    pub fn append(&self, entry: AuditEntry) -> Result<(), DbError> {
        self.db.write(|tx| insert(tx, &entry))
    }

    /// A page of the entries `visible` lets through, newest first, and how many there are.
    pub fn page(&self, visible: &Visible, offset: u64, limit: u64) -> Result<(Vec<AuditEntry>, u64), DbError> {
        let (clause, args): (&str, Vec<String>) = match visible {
            Visible::All => ("", Vec::new()),
            Visible::Accounts => ("WHERE account != '*'", Vec::new()),
            Visible::Account(a) => ("WHERE account = ?", vec![a.clone()]),
        };
        self.db.read(|c| {
            let total: i64 = c
                .prepare_cached(&format!("SELECT count(*) FROM audit {clause}"))?
                .query_row(rusqlite::params_from_iter(&args), |r| r.get(0))?;
            let mut all: Vec<rusqlite::types::Value> = args.iter().map(|a| a.clone().into()).collect();
            all.push((limit.min(i64::MAX as u64) as i64).into());
            all.push((offset.min(i64::MAX as u64) as i64).into());
            let items = c
                .prepare_cached(&format!(
                    "SELECT at, who, from_addr, action, account, target, detail FROM audit {clause} \
                     ORDER BY id DESC LIMIT ? OFFSET ?"
                ))?
                .query_map(rusqlite::params_from_iter(all), entry_row)?
                .collect::<Result<Vec<_>, _>>()?;
            Ok((items, total as u64))
        })
    }

    /// Retention: deletes entries older than `age`; returns how many.
    pub fn prune_older_than(&self, age: std::time::Duration) -> Result<usize, DbError> {
        let cutoff = Timestamp::now().as_nanosecond() as i64 - age.as_nanos().min(i64::MAX as u128) as i64;
        self.db.write(|tx| tx.execute("DELETE FROM audit WHERE at < ?", [cutoff]))
    }
}

pub(super) fn insert(tx: &Transaction, e: &AuditEntry) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO audit (at, who, from_addr, action, account, target, detail) VALUES (?, ?, ?, ?, ?, ?, ?)",
    )?
    .execute(params![e.at.as_nanosecond() as i64, e.who, e.from, e.action, e.account, e.target, e.detail])?;
    Ok(())
}

fn entry_row(r: &Row) -> rusqlite::Result<AuditEntry> {
    Ok(AuditEntry {
        at: Timestamp::from_nanosecond(r.get::<_, i64>(0)? as i128).unwrap_or(Timestamp::UNIX_EPOCH),
        who: r.get(1)?,
        from: r.get(2)?,
        action: r.get(3)?,
        account: r.get(4)?,
        target: r.get(5)?,
        detail: r.get(6)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_append_and_read_newest_first_by_account() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open(dir.path()).unwrap();
        log.record("cli", None, "token.create", "*", "tok_1", "read-write");
        log.record("tok_1", Some("127.0.0.1".into()), "push", "acme", "shop/Production", "abc");
        let (all, total) = log.page(&Visible::All, 0, 50).unwrap();
        assert_eq!(all.iter().map(|e| e.action.as_str()).collect::<Vec<_>>(), ["push", "token.create"]);
        assert_eq!(total, 2);
        assert_eq!(log.page(&Visible::Account("globex".into()), 0, 50).unwrap(), (vec![], 0));
        let (acme, _) = log.page(&Visible::Account("acme".into()), 0, 50).unwrap();
        assert_eq!(acme[0].from.as_deref(), Some("127.0.0.1"));
        // A second writer (the CLI beside the server) appends to the same log.
        AuditLog::open(dir.path()).unwrap().record("cli", None, "rollback", "acme", "shop/Production", "");
        assert_eq!(log.page(&Visible::All, 0, 1).unwrap().0[0].action, "rollback");
    }

    #[test]
    fn entries_older_than_the_retention_age_are_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open(dir.path()).unwrap();
        let old = AuditEntry {
            at: Timestamp::now() - jiff::SignedDuration::from_hours(24 * 40),
            ..AuditEntry::now("cli", None, "token.create", "*", "tok_old", "")
        };
        log.db.write(|tx| insert(tx, &old)).unwrap();
        log.record("cli", None, "token.create", "*", "tok_new", "");
        assert_eq!(log.prune_older_than(std::time::Duration::from_secs(30 * 86400)).unwrap(), 1);
        let (left, _) = log.page(&Visible::All, 0, 10).unwrap();
        assert_eq!(left.iter().map(|e| e.target.as_str()).collect::<Vec<_>>(), ["tok_new"]);
    }
}
