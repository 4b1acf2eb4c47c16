//! `devpop hook`: what the git hooks devpop installs in every repo run (git runs these).

use std::io::{self, Write};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Subcommand;

use super::args::{CheckArgs, DataArgs, PushLimitArgs};
use devpop::checks::{CheckSettings, MemoStore};
use devpop::packages::PackageStore;

// Parsed once per process: the size of a variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
pub enum HookCommand {
    /// Check a push to a repo on disk (git runs this with the ref updates on stdin; a push
    /// through `devpop serve` is checked inside the server instead).
    PreReceive {
        #[command(flatten)]
        data: DataArgs,
        #[command(flatten)]
        check: CheckArgs,
        #[command(flatten)]
        push: PushLimitArgs,
    },
    /// Answer a `git push -o dry-run` that passed its checks: every ref "ok", none moved (git
    /// runs this only when devpop serve asks it to, for dry runs).
    ProcReceive,
}

pub fn run(command: HookCommand) -> Result<ExitCode> {
    match command {
        HookCommand::ProcReceive => {
            devpop::hook::proc_receive::answer(&mut io::stdin().lock(), &mut io::stdout().lock())
                .context("answering git's proc-receive request")?;
            Ok(ExitCode::SUCCESS)
        }
        HookCommand::PreReceive { data, check, push } => {
            let packages = PackageStore::new(&data.data);
            let checks = CheckSettings {
                memo: Some(MemoStore::Dir(data.data.join("cache/validated"))),
                ..check.check_settings()
            };
            let settings = push.hook_settings(checks);
            let request = devpop::hook::PushRequest::from_git(io::stdin().lock())?;
            let repo = git2::Repository::open_from_env()?;
            let id = devpop::hook::repo_id(&repo)?;
            let mut out = io::stdout().lock();
            let accepted = devpop::hook::pre_receive(&id, &repo, &request, &mut out, &packages, &settings, None)?;
            out.flush()?;
            Ok(if accepted { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
    }
}
