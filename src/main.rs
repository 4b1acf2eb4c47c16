//! The `devpop` command line: parsing, logging and dispatch. Each subcommand lives in
//! `src/cli/` (the server's flags and start in `cli::serve`, the client of a server in
//! `cli::client`).

#![deny(unsafe_code)]

use std::io;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand, ValueEnum};

use devpop::settings;

/// `println!` for the CLI's output, as a `?`-able write: when the reader goes away
/// (`devpop app list | head`), the command ends quietly instead of panicking.
macro_rules! out {
    ($($arg:tt)*) => { writeln!(std::io::stdout(), $($arg)*)? };
}

mod cli;

#[derive(Parser)]
#[command(name = "devpop", version, about = "Turns `git push` into a deployment on Kubernetes", long_about = None)]
struct Cli {
    /// A config file (TOML, `flag-name = value`); flags and DEVPOP_* variables take precedence.
    /// Without one, ./devpop.toml is read when it exists.
    #[arg(long, global = true, env = "DEVPOP_CONFIG")]
    config: Option<PathBuf>,
    /// Log format.
    #[arg(long, global = true, env = "DEVPOP_LOG_FORMAT", value_enum, default_value_t = LogFormat::Human)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Serve git over HTTP and deploy what is pushed.
    Serve(cli::serve::ServeArgs),
    /// Manage applications (one application = one environment repo).
    #[command(subcommand)]
    App(cli::app::AppCommand),
    /// Manage API tokens (for git over HTTP, the API and the console, with --auth tokens).
    #[command(subcommand)]
    Token(cli::token::TokenCommand),
    /// Manage module packages (the module types a proxychain can use).
    #[command(subcommand)]
    Package(cli::package::PackageCommand),
    /// Check an environment repo working tree the way a push is checked, offline.
    Validate(cli::validate::ValidateArgs),
    /// Render an environment of a working tree to Kubernetes manifests, offline.
    Render(cli::render::RenderCmdArgs),
    /// Restore an environment to an earlier deployment: a new commit with that state, deployed.
    Rollback(cli::lifecycle::RollbackArgs),
    /// Deploy an environment's branch again, as it is (through the server).
    Redeploy(cli::lifecycle::RedeployArgs),
    /// List deployments, or show one (through the server).
    #[command(subcommand)]
    Deployments(cli::deployments::DeploymentsCommand),
    /// An environment's container logs from a server (cluster target), newest last; --follow.
    Logs(cli::logs::LogsArgs),
    /// Start a module in an environment repo: the package's starter folder and its proxychain entry.
    #[command(subcommand)]
    Module(cli::module::ModuleCommand),
    /// Entry points for the git hooks devpop installs in every repo (git runs these).
    #[command(subcommand)]
    Hook(cli::hook::HookCommand),
}

fn main() -> ExitCode {
    if let Err(e) = load_config_file() {
        eprintln!("error: {e}");
        return ExitCode::FAILURE;
    }
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let code = match run(cli.command) {
        Ok(code) => code,
        // The reader of our output went away (`devpop app list | head`): done, quietly.
        Err(e)
            if e.chain()
                .any(|c| c.downcast_ref::<io::Error>().is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)) =>
        {
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {}", message(&e));
            ExitCode::FAILURE
        }
    };
    // The validate.sh sandboxes' scratch folders (`validate`, the hook), if any were made.
    devpop::sandbox::remove_scratch_root();
    code
}

/// An error and its causes on one line, each cause once: a cause a message already quotes (as
/// `cannot listen on ...: {source}` does) is not repeated.
fn message(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let part = cause.to_string();
        if !text.contains(&part) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&part);
        }
    }
    text
}

/// Applies the config file's settings as DEVPOP_* variables that are not set already (flags >
/// environment > file). Runs before anything else, while the process is single-threaded.
fn load_config_file() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let given = args
        .iter()
        .position(|a| a == "--config")
        .and_then(|i| args.get(i + 1).cloned())
        .or_else(|| args.iter().find_map(|a| a.strip_prefix("--config=").map(str::to_owned)))
        .or_else(|| std::env::var("DEVPOP_CONFIG").ok());
    let path = match given {
        Some(p) => PathBuf::from(p),
        None if Path::new("devpop.toml").is_file() => PathBuf::from("devpop.toml"),
        None => return Ok(()),
    };
    let mut known = Vec::new();
    collect_env_names(&<Cli as clap::CommandFactory>::command(), &mut known);
    for (var, value) in settings::config_file_env(&path, &known)? {
        if std::env::var_os(&var).is_none() {
            std::env::set_var(var, value);
        }
    }
    Ok(())
}

fn collect_env_names(cmd: &clap::Command, out: &mut Vec<String>) {
    for arg in cmd.get_arguments() {
        if let Some(env) = arg.get_env().and_then(|e| e.to_str()) {
            if env != "DEVPOP_CONFIG" && env != "DEVPOP_HOOK_TOKEN" && !out.iter().any(|e| e == env) {
                out.push(env.to_owned());
            }
        }
    }
    for sub in cmd.get_subcommands() {
        collect_env_names(sub, out);
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("DEVPOP_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colour codes only for a person at a terminal, never into a file or a log collector.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr)
        .with_ansi(io::IsTerminal::is_terminal(&io::stderr()));
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn run(command: Command) -> Result<ExitCode> {
    match command {
        Command::Serve(args) => cli::serve::serve(args),
        Command::App(cmd) => cli::app::run(cmd),
        Command::Token(cmd) => cli::token::run(cmd),
        Command::Package(cmd) => cli::package::run(cmd),
        Command::Validate(args) => cli::validate::command(args),
        Command::Render(args) => cli::render::render(args),
        Command::Rollback(args) => cli::lifecycle::rollback(args),
        Command::Redeploy(args) => cli::lifecycle::redeploy(args),
        Command::Deployments(cmd) => cli::deployments::run(cmd),
        Command::Logs(args) => cli::logs::run(args),
        Command::Module(cmd) => cli::module::run(cmd),
        Command::Hook(cmd) => cli::hook::run(cmd),
    }
}
