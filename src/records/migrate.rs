//! The one-time migration of earlier versions' JSON-lines logs (`deployments.jsonl`,
//! `audit.jsonl`) into the records database, at the first start that finds them.
//!
//! Each file is read line by line (memory does not grow with its size) into one transaction,
//! marked done in the same transaction, then renamed to `<name>.migrated` (kept, not deleted).
//! A line that does not parse is skipped with a warning; when a torn write was followed by the
//! next event on the same line (an earlier version's failure mode), that event is recovered.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

use rusqlite::{params, OptionalExtension, Transaction};
use serde::de::DeserializeOwned;
use serde::Deserialize;

use super::audit::{self, AuditEntry};
use super::db::{Db, DbError};
use super::{insert_step, insert_whole, nanos, Deployment, Step};

#[derive(Deserialize)]
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

/// What migrating one file did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Migrated {
    pub lines: usize,
    pub skipped: usize,
    pub recovered: usize,
}

pub(super) fn run(db: &Db, data_dir: &Path) -> Result<(), DbError> {
    migrate_file::<Event>(db, data_dir, "deployments.jsonl", apply_event)?;
    migrate_file::<AuditEntry>(db, data_dir, "audit.jsonl", |tx, entry| audit::insert(tx, &entry))?;
    Ok(())
}

fn migrate_file<E: DeserializeOwned>(
    db: &Db,
    data_dir: &Path,
    name: &str,
    apply: impl Fn(&Transaction, E) -> rusqlite::Result<()>,
) -> Result<Option<Migrated>, DbError> {
    let path = data_dir.join(name);
    let io_err = |source: std::io::Error| DbError::Migrate { path: path.clone(), source };
    let marker = format!("migrated:{name}");
    let file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(e)),
    };
    let mut read_error = None;
    let migrated = db.write(|tx| {
        let done =
            tx.query_row("SELECT value FROM meta WHERE key = ?", [&marker], |r| r.get::<_, String>(0)).optional()?;
        if done.is_some() {
            return Ok(None);
        }
        let mut m = Migrated::default();
        let mut reader = BufReader::new(&file);
        let mut line = Vec::new();
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => {
                    read_error = Some(e);
                    return Err(rusqlite::Error::InvalidQuery);
                }
            }
            m.lines += 1;
            let text = String::from_utf8_lossy(&line);
            let text = text.trim_end_matches(['\n', '\r']);
            if text.trim().is_empty() {
                continue;
            }
            match parse::<E>(text) {
                Some((event, recovered)) => {
                    if recovered {
                        m.recovered += 1;
                        tracing::warn!(
                            file = name,
                            line = m.lines,
                            "a torn line: recovered the event written after it"
                        );
                    }
                    apply(tx, event)?;
                }
                None => {
                    m.skipped += 1;
                    tracing::warn!(file = name, line = m.lines, "a torn or unreadable line, skipped");
                }
            }
        }
        tx.execute("INSERT INTO meta (key, value) VALUES (?, ?)", params![marker, format!("{m:?}")])?;
        Ok(Some(m))
    });
    if let Some(e) = read_error {
        return Err(io_err(e));
    }
    let migrated = migrated?;
    // Done (now or by an earlier start that stopped before renaming): keep the file aside.
    std::fs::rename(&path, data_dir.join(format!("{name}.migrated"))).map_err(io_err)?;
    if let Some(m) = &migrated {
        tracing::info!(
            file = name,
            lines = m.lines,
            skipped = m.skipped,
            recovered = m.recovered,
            "migrated into the records database"
        );
    }
    Ok(migrated)
}

/// A line's event; or, when a torn write was followed by the next event on the same line, that
/// event (`true`).
fn parse<E: DeserializeOwned>(line: &str) -> Option<(E, bool)> {
    if let Ok(e) = serde_json::from_str(line) {
        return Some((e, false));
    }
    line.match_indices('{').skip(1).find_map(|(i, _)| serde_json::from_str(&line[i..]).ok()).map(|e| (e, true))
}

fn apply_event(tx: &Transaction, event: Event) -> rusqlite::Result<()> {
    match event {
        Event::Created { deployment: d } => {
            // A second "created" of one id replaces the first (as replaying the log did).
            tx.execute("DELETE FROM steps WHERE deployment = ?", [d.id as i64])?;
            tx.execute("DELETE FROM deployments WHERE id = ?", [d.id as i64])?;
            insert_whole(tx, &d)?;
        }
        Event::Step { id, step, namespace } => {
            let exists = tx.query_row("SELECT 1 FROM deployments WHERE id = ?", [id as i64], |_| Ok(())).optional()?;
            if exists.is_none() {
                return Ok(());
            }
            let seq: i64 =
                tx.query_row("SELECT coalesce(max(seq) + 1, 0) FROM steps WHERE deployment = ?", [id as i64], |r| {
                    r.get(0)
                })?;
            insert_step(tx, id, seq, &step)?;
            tx.execute(
                "UPDATE deployments SET state = ?2, updated_at = ?3, namespace = coalesce(?4, namespace) WHERE id = ?1",
                params![id as i64, step.state.as_str(), nanos(step.at), namespace],
            )?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::super::{audit, Filter, Records, State};

    fn created(id: u64, env: &str) -> String {
        format!(
            r#"{{"event":"created","deployment":{{"id":{id},"account":"1","application":"2","repo":"site","environment":"{env}","commit":"{c}","action":"deploy","pusher":"dev","state":"queued","created_at":"2026-01-01T00:00:0{id}Z","updated_at":"2026-01-01T00:00:0{id}Z","steps":[{{"at":"2026-01-01T00:00:0{id}Z","state":"queued","message":"queued"}}],"namespace":null}}}}"#,
            c = "c".repeat(40)
        )
    }

    fn step(id: u64, state: &str) -> String {
        format!(
            r#"{{"event":"step","id":{id},"step":{{"at":"2026-01-01T00:00:09Z","state":"{state}","message":"{state}"}},"namespace":null}}"#
        )
    }

    #[test]
    fn jsonl_logs_migrate_once_with_torn_lines_in_the_middle_and_at_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = String::new();
        log += &format!("{}\n", created(1, "Production"));
        log += &format!("{}\n", step(1, "rendering"));
        // A torn write followed by a newline (what the earlier version wrote after a tear).
        log += "{\"event\":\"step\",\"id\":1,\"st\n";
        log += &format!("{}\n", created(2, "Staging"));
        // A torn write with the next event appended on the same line.
        log += &format!("{{\"event\":\"step\",\"id\":2,\"step\":{{\"at\"{}\n", created(3, "Production"));
        log += &format!("{}\n", step(3, "rendering"));
        log += &format!("{}\n", step(1, "applying"));
        // Torn at the very end.
        log += "{\"event\":\"created\",\"deployment\":{\"id\":4,";
        std::fs::write(dir.path().join("deployments.jsonl"), &log).unwrap();
        let mut audit_log = std::fs::File::create(dir.path().join("audit.jsonl")).unwrap();
        writeln!(audit_log, r#"{{"at":"2026-01-01T00:00:00Z","who":"cli","action":"token.create","account":"*","target":"tok_1","detail":""}}"#).unwrap();
        write!(audit_log, r#"{{"at":"2026-01-01T00:00:01Z","who":"cli","acti"#).unwrap();
        writeln!(audit_log, r#"{{"at":"2026-01-01T00:00:02Z","who":"tok_1","from":"10.0.0.1","action":"push","account":"1","target":"2/site/Production","detail":"abc"}}"#).unwrap();
        write!(audit_log, r#"{{"at":"2026-01-01T00:00:03Z","who":"to"#).unwrap();
        drop(audit_log);

        let r = Records::open(dir.path()).unwrap();
        let (all, total) = r.page(&Filter::default(), 0, 10).unwrap();
        assert_eq!(total, 3);
        assert_eq!(
            all.iter().map(|d| (d.id, d.state)).collect::<Vec<_>>(),
            [(3, State::Rendering), (2, State::Queued), (1, State::Applying)]
        );
        assert_eq!(r.get(1).unwrap().steps.len(), 3);
        assert_eq!(r.get(3).unwrap().created_at.to_string(), "2026-01-01T00:00:03Z");
        let audit = audit::AuditLog::with_db(r.db().clone());
        let (entries, _) = audit.page(&audit::Visible::All, 0, 10).unwrap();
        assert_eq!(entries.iter().map(|e| e.action.as_str()).collect::<Vec<_>>(), ["push", "token.create"]);
        assert_eq!(entries[0].from.as_deref(), Some("10.0.0.1"));
        assert!(dir.path().join("deployments.jsonl.migrated").exists());
        assert!(!dir.path().join("deployments.jsonl").exists());
        // New ids follow the migrated ones; a second start migrates nothing again.
        assert_eq!(r.create(super::super::tests::request("Production")).unwrap().id, 4);
        drop((r, audit));
        std::fs::copy(dir.path().join("deployments.jsonl.migrated"), dir.path().join("deployments.jsonl")).unwrap();
        let r = Records::open(dir.path()).unwrap();
        assert_eq!(r.page(&Filter::default(), 0, 10).unwrap().1, 4);
    }
}
