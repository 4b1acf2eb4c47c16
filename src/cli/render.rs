//! `devpop render`: an environment of a working tree as Kubernetes manifests, offline, or
//! (`--diff`) what would change against its last deployment.

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;

use super::args::{CheckArgs, LocalArgs};
use super::local::Local;
use devpop::source::WorkDir;

#[derive(Args)]
pub struct RenderCmdArgs {
    #[command(flatten)]
    pub local: LocalArgs,
    /// Write one file per object (and a kustomization.yaml) into this folder instead of YAML on stdout.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Print what would change against the environment's last deployment (needs --data: the
    /// server's data dir) instead of the manifests.
    #[arg(long, conflicts_with = "out", requires = "data")]
    pub diff: bool,
    /// With --diff: text, or one JSON object on stdout (for CI).
    #[arg(long, value_enum, default_value = "text", requires = "diff")]
    pub format: super::validate::Format,
    #[command(flatten)]
    pub check: CheckArgs,
}

pub fn render(args: RenderCmdArgs) -> Result<ExitCode> {
    let local = Local::new(&args.local, false)?;
    let source = WorkDir { root: &local.dir };
    let snapshot = devpop::source::RepoSource::snapshot(&source)?;
    let rules = args.check.render_settings().origin_rules;
    let report = devpop::validation::check_with(&snapshot, &local.env, &local.packages.catalog(), &rules);
    let ok = report.is_ok();
    let Some(config) = report.config.filter(|_| ok) else {
        for d in &report.diagnostics {
            eprintln!("{d}");
        }
        anyhow::bail!(
            "{} cannot be rendered for {} until the problems above are fixed (devpop validate shows them all)",
            local.dir.display(),
            local.env
        );
    };
    let rendered =
        devpop::checks::render(&source, local.subject(), &config, &local.packages, &args.check.render_settings())?;
    if args.diff {
        let data = args.local.data.as_deref().context("--diff needs --data (the server's data dir)")?;
        let before = devpop::applying::RenderedRepos::new(
            &data
                .canonicalize()
                .with_context(|| format!("no data dir at {}: pass the server's data dir", data.display()))?,
        )
        .environment_objects(&local.id, &local.env)?
        .unwrap_or_default();
        let diff = devpop::rendering::diff(&before, &rendered);
        let mut stdout = io::stdout().lock();
        if args.format == super::validate::Format::Json {
            let report = serde_json::json!({
                "environment": local.env,
                "namespace": rendered.namespace,
                "added": diff.added,
                "changed": diff.details,
                "removed": diff.removed,
                "unchanged": diff.unchanged,
            });
            writeln!(stdout, "{report}")?;
        } else {
            for (mark, keys) in [("+", &diff.added), ("~", &diff.changed), ("-", &diff.removed)] {
                for key in keys {
                    writeln!(stdout, "{mark} {key}")?;
                    for line in diff.details.get(key).into_iter().flatten() {
                        writeln!(stdout, "    {line}")?;
                    }
                }
            }
            writeln!(
                stdout,
                "({} added, {} changed, {} removed, {} unchanged)",
                diff.added.len(),
                diff.changed.len(),
                diff.removed.len(),
                diff.unchanged
            )?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    match args.out {
        None => write!(io::stdout(), "{}", devpop::rendering::to_yaml(&rendered))?,
        Some(out) => {
            std::fs::create_dir_all(&out)?;
            let files = devpop::applying::environment_files(&rendered);
            for (name, content) in &files {
                std::fs::write(out.join(name), content)?;
            }
            eprintln!("wrote {} files for namespace {} to {}", files.len(), rendered.namespace, out.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}
