//! `devpop app`: create, list and delete applications, on a server or in a data dir.

use std::io::Write;
use std::process::ExitCode;

use anyhow::{bail, Result};
use clap::Subcommand;
use hyper::Method;
use serde_json::json;

use super::args::{At, ClientArgs};
use super::client::{seg, Where};
use devpop::names::RepoId;

#[derive(Subcommand)]
pub enum AppCommand {
    /// Create an application's repo with a first commit on branch Production, and print its clone URL.
    Create {
        account: String,
        application: String,
        /// The repo name (the last part of the clone URL, without .git).
        repo_name: String,
        /// Production's origin: the host name or IP that traffic is finally sent to.
        #[arg(long, default_value = "example.com")]
        origin: String,
        #[command(flatten)]
        at: At,
        /// Base URL of the devpop server, for the printed clone URL (without --server; with
        /// one, the server's answer has the URL).
        #[arg(long, env = "DEVPOP_PUBLIC_URL", default_value = "http://127.0.0.1:8080")]
        public_url: String,
    },
    /// List applications.
    List {
        /// Only this account's (needed with a token of one account).
        #[arg(long)]
        account: Option<String>,
        #[command(flatten)]
        at: At,
    },
    /// Delete an application: each environment is removed (a deployment each), then its repo (needs --server).
    Delete {
        account: String,
        application: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

fn print_created(id: &str, origin: &str, url: &str) -> Result<()> {
    out!("Created application {id} (branch Production, origin {origin}).");
    out!("Clone it with:\n  git clone {url}");
    out!("or add it to an existing environment repo:\n  git remote add developer-pop {url}");
    Ok(())
}

pub fn run(command: AppCommand) -> Result<ExitCode> {
    match command {
        AppCommand::Create { account, application, repo_name, origin, at, public_url } => {
            let id = RepoId::new(&account, &application, &repo_name)?;
            match at.where_to()? {
                Where::Server(c) => {
                    let body = json!({"application": application, "repo": repo_name, "origin": origin});
                    let app =
                        c.json(Method::POST, &format!("/api/v1/accounts/{}/applications", seg(&account)), Some(&body))?;
                    let url = app["clone_url"].as_str().unwrap_or_default();
                    print_created(&id.to_string(), &origin, url)?;
                }
                Where::Data(data) => {
                    super::repos(&data)?.create(&id, &origin)?;
                    devpop::applying::RenderedRepos::new(&data).prepare(&id)?;
                    super::audit(&data)?.record(
                        "cli",
                        None,
                        "application.create",
                        &id.account,
                        &format!("{}/{}", id.application, id.repo),
                        &origin,
                    );
                    let url = format!("{}{}", public_url.trim_end_matches('/'), id.url_path());
                    print_created(&id.to_string(), &origin, &url)?;
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        AppCommand::List { account, at } => {
            match at.where_to()? {
                Where::Server(c) => {
                    let accounts = match account {
                        Some(a) => vec![a],
                        None => c
                            .all("/api/v1/accounts")
                            .map_err(|e| anyhow::anyhow!("{e} (a token of one account: pass --account)"))?
                            .iter()
                            .filter_map(|a| a["account"].as_str().map(str::to_owned))
                            .collect(),
                    };
                    for a in accounts {
                        for app in c.all(&format!("/api/v1/accounts/{}/applications", seg(&a)))? {
                            let s = |k: &str| app[k].as_str().unwrap_or_default().to_owned();
                            out!("{}/{}/{}\t{}", s("account"), s("application"), s("repo"), s("clone_url"));
                        }
                    }
                }
                Where::Data(data) => {
                    for id in super::repos(&data)?.list() {
                        if account.as_ref().is_none_or(|a| *a == id.account) {
                            out!("{id}\t{}", id.url_path());
                        }
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        AppCommand::Delete { account, application, client } => {
            let Some(c) = super::client::Client::new(&client)? else {
                bail!("deleting an application removes its environments' deployments, which the server does: pass --server URL (or set DEVPOP_SERVER)");
            };
            c.json(
                Method::DELETE,
                &format!("/api/v1/accounts/{}/applications/{}", seg(&account), seg(&application)),
                None,
            )?;
            out!("Deleted application {account}/{application} (its environments are removed by their deployments).");
            Ok(ExitCode::SUCCESS)
        }
    }
}
