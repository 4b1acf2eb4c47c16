//! `devpop deployments`: list deployments (newest first, with filters) or show one, from a
//! server or a data dir; `--format json` prints what the API answers.

use std::io::Write;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use serde_json::{json, Value};

use super::args::At;
use super::client::{seg, Where};
use super::validate::Format;
use devpop::records::{Filter, Records, State};

#[derive(Subcommand)]
pub enum DeploymentsCommand {
    /// List deployments, newest first.
    List(ListArgs),
    /// Show one deployment with its steps.
    Show {
        id: u64,
        /// text, or the deployment as one JSON object.
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
        #[command(flatten)]
        at: At,
    },
}

#[derive(Args)]
pub struct ListArgs {
    #[arg(long)]
    account: Option<String>,
    #[arg(long)]
    application: Option<String>,
    #[arg(long)]
    repo: Option<String>,
    /// The environment (branch).
    #[arg(long = "env")]
    environment: Option<String>,
    /// queued, rendering, applying, progressing, ready, failed or superseded.
    #[arg(long, value_parser = parse_state)]
    state: Option<State>,
    /// How many (the newest first), 1 to 500.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=500))]
    limit: u64,
    /// text, or one JSON object (`{"items", "total", ...}`, as the API answers).
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
    #[command(flatten)]
    at: At,
}

fn parse_state(s: &str) -> Result<State, String> {
    State::parse(s).ok_or_else(|| {
        format!("{s:?} is not a deployment state (queued, rendering, applying, progressing, ready, failed, superseded)")
    })
}

fn row(d: &Value) -> Result<()> {
    let s = |k: &str| d[k].as_str().unwrap_or_default();
    out!(
        "{}\t{}\t{}/{}/{}\t{}\t{}\t{}\t{}",
        d["id"],
        s("state"),
        s("account"),
        s("application"),
        s("repo"),
        s("environment"),
        devpop::records::short(s("commit")),
        s("action"),
        s("created_at")
    );
    Ok(())
}

fn detail(d: &Value) -> Result<()> {
    let s = |k: &str| d[k].as_str().unwrap_or_default();
    out!("deployment {} ({})", d["id"], s("state"));
    out!("  application  {}/{}/{}", s("account"), s("application"), s("repo"));
    out!("  environment  {}", s("environment"));
    out!("  commit       {}", s("commit"));
    out!("  action       {}", s("action"));
    out!("  pusher       {}", s("pusher"));
    out!("  namespace    {}", d["namespace"].as_str().unwrap_or("-"));
    out!("  created      {}", s("created_at"));
    for step in d["steps"].as_array().into_iter().flatten() {
        let t = |k: &str| step[k].as_str().unwrap_or_default();
        out!("  {}  {:<12} {}", t("at"), t("state"), t("message"));
    }
    Ok(())
}

pub fn run(command: DeploymentsCommand) -> Result<ExitCode> {
    match command {
        DeploymentsCommand::List(a) => {
            let page = match a.at.where_to()? {
                Where::Server(c) => {
                    let mut query = format!("/api/v1/deployments?limit={}", a.limit);
                    for (key, value) in [
                        ("account", &a.account),
                        ("application", &a.application),
                        ("repo", &a.repo),
                        ("environment", &a.environment),
                    ] {
                        if let Some(v) = value {
                            query.push_str(&format!("&{key}={}", seg(v)));
                        }
                    }
                    if let Some(st) = a.state {
                        query.push_str(&format!("&state={}", st.as_str()));
                    }
                    c.get(&query)?
                }
                Where::Data(data) => {
                    let filter = Filter {
                        account: a.account,
                        application: a.application,
                        repo: a.repo,
                        environment: a.environment,
                        state: a.state,
                        before: None,
                    };
                    let (items, total) = Records::open(&data)?.page(&filter, 0, a.limit)?;
                    json!({"items": items, "total": total, "offset": 0, "limit": a.limit})
                }
            };
            if a.format == Format::Json {
                out!("{page}");
            } else {
                for d in page["items"].as_array().into_iter().flatten() {
                    row(d)?;
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        DeploymentsCommand::Show { id, format, at } => {
            let d = match at.where_to()? {
                Where::Server(c) => c.get(&format!("/api/v1/deployments/{id}"))?,
                Where::Data(data) => {
                    let d = Records::open(&data)?.find(id)?.with_context(|| format!("no deployment {id}"))?;
                    serde_json::to_value(d)?
                }
            };
            if format == Format::Json {
                out!("{d}");
            } else {
                detail(&d)?;
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
