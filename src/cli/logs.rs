//! `devpop logs`: an environment's container logs from a server (the cluster target keeps
//! them), printed oldest first (the server answers newest first), or followed as they are
//! written; like `kubectl logs` and sectionctl's
//! `logs`. Always a client of a server: logs live in the cluster, not in a data dir.

use std::io::Write;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;
use serde_json::Value;

use super::args::ClientArgs;
use super::client::{environment_path, seg, Client};
use super::validate::Format;

#[derive(Args)]
pub struct LogsArgs {
    /// The application, as account/application/repo.
    pub app: String,
    /// The environment (branch).
    pub env: String,
    /// Only this module's lines (a proxychain entry's name, or private-ingress, egress,
    /// static-server).
    #[arg(long)]
    pub module: Option<String>,
    /// How many lines, 1 to 1000 (with --follow: the last of each container before the new ones).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub length: u64,
    /// Keep printing lines as they are written, until interrupted.
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// text (`time module/pod/container message`), or one JSON object per line.
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
    #[command(flatten)]
    pub client: ClientArgs,
}

fn print(entry: &Value, format: Format) -> Result<()> {
    match format {
        Format::Json => out!("{entry}"),
        Format::Text => {
            let s = |k: &str| entry[k].as_str().unwrap_or_default();
            out!("{} {}/{}/{} {}", s("timestamp"), s("module"), s("instanceName"), s("container"), s("message"));
        }
    }
    Ok(())
}

pub fn run(args: LogsArgs) -> Result<ExitCode> {
    let id = super::app_id(&args.app)?;
    let client = Client::new(&args.client)?.context(
        "devpop logs asks a server (logs live in the cluster it deploys to): pass --server URL or set DEVPOP_SERVER",
    )?;
    let mut path = format!("{}/logs?length={}", environment_path(&id.account, &id.application, &args.env), args.length);
    if let Some(m) = &args.module {
        path.push_str(&format!("&moduleName={}", seg(m)));
    }
    if !args.follow {
        let entries = client.get(&path)?;
        // Newest first from the server; printed oldest first, as a terminal reads a log.
        for entry in entries.as_array().into_iter().flatten().rev() {
            print(entry, args.format)?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    client.follow_lines(&format!("{path}&follow=true"), |line| {
        if line.iter().all(u8::is_ascii_whitespace) {
            return Ok(());
        }
        let entry: Value = serde_json::from_slice(line).context("the server sent a log line that is not JSON")?;
        print(&entry, args.format)
    })?;
    Ok(ExitCode::SUCCESS)
}
