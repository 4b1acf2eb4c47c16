//! The audit log: who pushed, created, deleted, rolled back or changed access to what, when
//! and from where. Append-only JSON lines (`<data>/audit.jsonl`); the server and the CLI both
//! append (one short line per write, so appends do not interleave). Never holds a token.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

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

pub struct AuditLog {
    path: PathBuf,
}

impl AuditLog {
    pub fn new(data_dir: &Path) -> Self {
        AuditLog { path: data_dir.join("audit.jsonl") }
    }

    /// Appends an entry; an audit failure is logged, never fatal to the action.
    pub fn record(&self, who: &str, from: Option<String>, action: &str, account: &str, target: &str, detail: &str) {
        let entry = AuditEntry {
            at: Timestamp::now(),
            who: who.to_owned(),
            from,
            action: action.to_owned(),
            account: account.to_owned(),
            target: target.to_owned(),
            detail: detail.to_owned(),
        };
        let mut line = serde_json::to_vec(&entry).expect("audit entries serialise");
        line.push(b'\n');
        let written =
            std::fs::OpenOptions::new().create(true).append(true).open(&self.path).and_then(|mut f| f.write_all(&line));
        if let Err(e) = written {
            tracing::error!(error = %e, path = %self.path.display(), "cannot write the audit log");
        }
    }

    /// Entries, newest first, that `visible` lets through.
    pub fn read(&self, visible: impl Fn(&AuditEntry) -> bool) -> Vec<AuditEntry> {
        let Ok(f) = std::fs::File::open(&self.path) else { return Vec::new() };
        let mut out: Vec<AuditEntry> = std::io::BufReader::new(f)
            .lines()
            .map_while(Result::ok)
            .filter_map(|l| serde_json::from_str(&l).ok())
            .filter(|e| visible(e))
            .collect();
        out.reverse();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_append_and_read_newest_first() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::new(dir.path());
        log.record("cli", None, "token.create", "acme", "tok_1", "read-write");
        log.record("tok_1", Some("127.0.0.1".into()), "push", "acme", "shop/Production", "abc");
        let all = log.read(|_| true);
        assert_eq!(all.iter().map(|e| e.action.as_str()).collect::<Vec<_>>(), ["push", "token.create"]);
        assert_eq!(log.read(|e| e.account == "globex").len(), 0);
    }
}
