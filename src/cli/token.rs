//! `devpop token`: create, list and revoke API tokens, on a server (admin token) or in a data dir.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use clap::Subcommand;
use hyper::Method;
use serde_json::{json, Value};

use super::args::At;
use super::client::{seg, Where};
use devpop::names::RepoId;
use devpop::settings;

#[derive(Subcommand)]
pub enum TokenCommand {
    /// Create a token and print it (shown once; only its hash is kept).
    Create {
        /// The account it acts on.
        #[arg(long, required_unless_present = "admin")]
        account: Option<String>,
        /// Every account, and server-wide things (packages, tokens).
        #[arg(long, conflicts_with = "account")]
        admin: bool,
        /// Clone, fetch and read only.
        #[arg(long)]
        read_only: bool,
        /// Lifetime, e.g. 90d, 12h (default: no expiry).
        #[arg(long, value_parser = settings::parse_duration)]
        expires: Option<Duration>,
        #[command(flatten)]
        at: At,
    },
    /// List tokens (ids, scopes, expiry; never the tokens).
    List {
        #[command(flatten)]
        at: At,
    },
    /// Revoke a token by id.
    Revoke {
        id: String,
        #[command(flatten)]
        at: At,
    },
}

fn scope(read_only: bool) -> &'static str {
    if read_only {
        "read-only"
    } else {
        "read-write"
    }
}

fn print_row(id: &str, account: &str, read_only: bool, revoked: bool, expires: Option<String>) -> Result<()> {
    let state = if revoked { "revoked" } else { "active" };
    let expires = expires.unwrap_or_else(|| "never".into());
    out!("{id}\t{account}\t{}\t{state}\texpires {expires}", scope(read_only));
    Ok(())
}

/// Now plus `d`; an error (not a panic, not a wrapped date) when that is beyond any date.
fn expiry_from_now(d: Duration) -> Result<jiff::Timestamp> {
    i64::try_from(d.as_secs())
        .ok()
        .and_then(|s| jiff::Timestamp::now().checked_add(jiff::SignedDuration::from_secs(s)).ok())
        .ok_or_else(|| anyhow::anyhow!("--expires is too far in the future; give a lifetime such as 90d"))
}

pub fn run(command: TokenCommand) -> Result<ExitCode> {
    match command {
        TokenCommand::Create { account, admin, read_only, expires, at } => {
            let account = if admin { devpop::auth::ALL_ACCOUNTS.to_owned() } else { account.unwrap_or_default() };
            if account != devpop::auth::ALL_ACCOUNTS {
                RepoId::new(&account, "x", "x")?;
            }
            let (id, token, expires_at) = match at.where_to()? {
                Where::Server(c) => {
                    let mut body = json!({"account": account, "read_only": read_only});
                    if let Some(d) = expires {
                        body["expires_in"] = json!(d.as_secs());
                    }
                    let t = c.json(Method::POST, "/api/v1/tokens", Some(&body))?;
                    let s = |k: &str| t[k].as_str().map(str::to_owned);
                    (s("id").unwrap_or_default(), s("token").unwrap_or_default(), s("expires_at"))
                }
                Where::Data(data) => {
                    let store = devpop::auth::TokenStore::new(&data);
                    let expires_at = match expires {
                        None => None,
                        Some(d) => Some(expiry_from_now(d)?),
                    };
                    let (record, token) = store.create(&account, read_only, expires_at)?;
                    super::audit(&data)?.record(
                        "cli",
                        None,
                        "token.create",
                        &record.account,
                        &record.id,
                        scope(read_only),
                    );
                    (record.id, token, expires_at.map(|e| e.to_string()))
                }
            };
            eprintln!(
                "Created {id} for {} ({}{}). It is shown once; devpop keeps only its hash:",
                if admin { "every account".to_owned() } else { format!("account {account}") },
                scope(read_only),
                expires_at.map(|e| format!(", expires {e}")).unwrap_or_default()
            );
            out!("{token}");
            Ok(ExitCode::SUCCESS)
        }
        TokenCommand::List { at } => {
            match at.where_to()? {
                Where::Server(c) => {
                    for t in c.all("/api/v1/tokens")? {
                        let s = |k: &str| t[k].as_str().unwrap_or_default().to_owned();
                        let expires = t["expires_at"].as_str().map(str::to_owned);
                        let flag = |k: &str| t[k].as_bool().unwrap_or(false);
                        print_row(&s("id"), &s("account"), flag("read_only"), flag("revoked"), expires)?;
                    }
                }
                Where::Data(data) => {
                    for t in devpop::auth::TokenStore::new(&data).list()? {
                        print_row(&t.id, &t.account, t.read_only, t.revoked, t.expires_at.map(|e| e.to_string()))?;
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        TokenCommand::Revoke { id, at } => {
            let (id, account) = match at.where_to()? {
                Where::Server(c) => {
                    let t: Value = c.json(Method::DELETE, &format!("/api/v1/tokens/{}", seg(&id)), None)?;
                    (t["id"].as_str().unwrap_or(&id).to_owned(), t["account"].as_str().unwrap_or_default().to_owned())
                }
                Where::Data(data) => {
                    let t = devpop::auth::TokenStore::new(&data).revoke(&id)?;
                    super::audit(&data)?.record("cli", None, "token.revoke", &t.account, &t.id, "");
                    (t.id, t.account)
                }
            };
            out!("Revoked {id} (account {account}).");
            Ok(ExitCode::SUCCESS)
        }
    }
}
