//! `devpop rollback` and `devpop redeploy`.
//!
//! With `--server`, both are API calls (`POST .../environments/{env}/rollback` and
//! `.../redeploy`): the server checks, records, audits (with the token's id) and deploys, and
//! the token is the one of `--token`, `DEVPOP_TOKEN` or git's credential helper. Without one,
//! `rollback` works on the server's data dir: it writes the restoring commit there
//! ([`devpop::lifecycle`]) and pushes it through the server at `--public-url` like any push
//! (with `--token` as the push's credentials, else git's own credential helper).

use std::io::Write;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::Args;
use hyper::Method;
use serde_json::{json, Value};

use super::args::{At, ClientArgs};
use super::client::{environment_path, Client};
use devpop::lifecycle::{self, Environment};
use devpop::records::short;

#[derive(Args)]
pub struct RollbackArgs {
    /// The application, as account/application/repo.
    pub app: String,
    /// The environment (branch).
    pub env: String,
    /// The deployment whose state to restore; defaults to the last ready deployment before the current state.
    #[arg(long)]
    pub to: Option<u64>,
    #[command(flatten)]
    pub at: At,
    /// Without --server: base URL of the devpop server the rollback is pushed to.
    #[arg(long, env = "DEVPOP_PUBLIC_URL", default_value = "http://127.0.0.1:8080")]
    pub public_url: String,
}

#[derive(Args)]
pub struct RedeployArgs {
    /// The application, as account/application/repo.
    pub app: String,
    /// The environment (branch).
    pub env: String,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// The lines a deployment made through the API is announced with (as a push announces it).
fn announce(c: &Client, d: &Value) -> Result<()> {
    let id = d["id"].as_u64().unwrap_or_default();
    let env = d["environment"].as_str().unwrap_or_default();
    out!("Deployment {id} queued for {env}: {}/api/v1/deployments/{id}", c.base());
    Ok(())
}

pub fn rollback(args: RollbackArgs) -> Result<ExitCode> {
    let id = super::app_id(&args.app)?;
    if let Some(c) = Client::new(&args.at.client)? {
        let body = args.to.map(|n| json!({ "to": n }));
        let path = format!("{}/rollback", environment_path(&id.account, &id.application, &args.env));
        let d = c.json(Method::POST, &path, body.as_ref())?;
        let restores = d["restores"].as_u64().map(|n| n.to_string()).unwrap_or_else(|| "?".into());
        out!(
            "Rolling {} of {id} back to deployment {restores} with commit {}",
            args.env,
            short(d["commit"].as_str().unwrap_or_default())
        );
        announce(&c, &d)?;
        return Ok(ExitCode::SUCCESS);
    }
    let data = args.at.data.existing()?;
    let repos = super::repos(&data)?;
    let repo_path = repos.path(&id);
    anyhow::ensure!(repo_path.is_dir(), "no application {id} in {}", data.display());
    let records = devpop::records::Records::open(&data)?;
    let environment = Environment { id: &id, name: &args.env };
    let plan = lifecycle::plan_rollback(&records, &repo_path, &environment, args.to)?;
    lifecycle::audit_rollback(&super::audit(&data)?, "cli", None, &environment, &plan);
    out!(
        "Rolling {} of {id} back to deployment {} (commit {}) with commit {}",
        args.env,
        plan.target.id,
        short(&plan.target.request.commit),
        short(&plan.commit.to_string())
    );
    std::io::stdout().flush()?;
    // Through the server, like any push: the same checks, a deployment record, linear history.
    let url = format!("{}{}", args.public_url.trim_end_matches('/'), id.url_path());
    let mut git = std::process::Command::new("git");
    git.arg("-C")
        .arg(&repo_path)
        .args(["push", &url, &format!("{}:refs/heads/{}", plan.commit, args.env)])
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_TERMINAL_PROMPT", "0");
    if let Some(token) = args.at.client.token.as_deref().filter(|t| !t.is_empty()) {
        // In the environment, not on the command line (where other users' `ps` would see it).
        git.env("GIT_CONFIG_COUNT", "1")
            .env("GIT_CONFIG_KEY_0", "http.extraHeader")
            .env("GIT_CONFIG_VALUE_0", format!("Authorization: Bearer {token}"));
    }
    let status = git.status().context("running git push")?;
    Ok(if status.success() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

pub fn redeploy(args: RedeployArgs) -> Result<ExitCode> {
    let id = super::app_id(&args.app)?;
    let Some(c) = Client::new(&args.client)? else {
        bail!("redeploy asks the server to deploy the branch again: pass --server URL (or set DEVPOP_SERVER)");
    };
    let path = format!("{}/redeploy", environment_path(&id.account, &id.application, &args.env));
    let d = c.json(Method::POST, &path, None)?;
    out!("Redeploying {} of {id} at commit {}", args.env, short(d["commit"].as_str().unwrap_or_default()));
    announce(&c, &d)?;
    Ok(ExitCode::SUCCESS)
}
