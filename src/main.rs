//! The `devpop` command line.

use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};

use devpop::names::RepoId;
use devpop::repos::RepoStore;
use devpop::server::Server;
use devpop::settings::{self, Limits, Settings};

#[derive(Parser)]
#[command(name = "devpop", version, about = "Turns `git push` into a deployment on Kubernetes", long_about = None)]
struct Cli {
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

#[derive(Args, Clone)]
struct DataArgs {
    /// The data dir: repos, packages and records.
    #[arg(long = "data", env = "DEVPOP_DATA", default_value = "./devpop-data")]
    data: PathBuf,
}

#[derive(Subcommand)]
enum Command {
    /// Serve git over HTTP and deploy what is pushed.
    Serve(ServeArgs),
    /// Manage applications (one application = one environment repo).
    #[command(subcommand)]
    App(AppCommand),
    /// Entry points for the git hooks devpop installs in every repo (git runs these).
    #[command(subcommand)]
    Hook(HookCommand),
}

#[derive(Args)]
struct ServeArgs {
    #[command(flatten)]
    data: DataArgs,
    /// Address to listen on.
    #[arg(long, env = "DEVPOP_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Base URL users reach this server at (for clone URLs and links); defaults to http://<listen>.
    #[arg(long, env = "DEVPOP_PUBLIC_URL")]
    public_url: Option<String>,
    /// Largest request body (a push) accepted, e.g. 512M, 2G.
    #[arg(long, env = "DEVPOP_MAX_REQUEST_BYTES", default_value = "2G", value_parser = settings::parse_size)]
    max_request_bytes: u64,
    /// Longest a git request (a whole push, checks included) may take, e.g. 90s, 10m.
    #[arg(long, env = "DEVPOP_GIT_TIMEOUT", default_value = "10m", value_parser = settings::parse_duration)]
    git_timeout: Duration,
    /// Listen beyond loopback without authentication (never on a shared network).
    #[arg(long, env = "DEVPOP_INSECURE_NO_AUTH")]
    insecure_no_auth: bool,
}

#[derive(Subcommand)]
enum AppCommand {
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
        data: DataArgs,
        /// Base URL of the devpop server, for the printed clone URL.
        #[arg(long, env = "DEVPOP_PUBLIC_URL", default_value = "http://127.0.0.1:8080")]
        public_url: String,
    },
    /// List applications.
    List {
        #[command(flatten)]
        data: DataArgs,
    },
}

#[derive(Subcommand)]
enum HookCommand {
    /// Check a push (git runs this with the ref updates on stdin).
    PreReceive {
        #[command(flatten)]
        data: DataArgs,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match run(cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("DEVPOP_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(io::stderr);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn absolute(path: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(path).with_context(|| format!("creating the data dir {}", path.display()))?;
    path.canonicalize().with_context(|| format!("resolving {}", path.display()))
}

fn store(data: &DataArgs) -> Result<RepoStore> {
    let exe = std::env::current_exe().context("finding the devpop binary")?;
    Ok(RepoStore::new(&absolute(&data.data)?, &exe))
}

fn run(command: Command) -> Result<ExitCode> {
    match command {
        Command::Serve(args) => serve(args),
        Command::App(AppCommand::Create { account, application, repo_name, origin, data, public_url }) => {
            let id = RepoId::new(&account, &application, &repo_name)?;
            store(&data)?.create(&id, &origin)?;
            let url = format!("{}{}", public_url.trim_end_matches('/'), id.url_path());
            println!("Created application {id} (branch Production, origin {origin}).");
            println!("Clone it with:\n  git clone {url}");
            println!("or add it to an existing environment repo:\n  git remote add developer-pop {url}");
            Ok(ExitCode::SUCCESS)
        }
        Command::App(AppCommand::List { data }) => {
            for id in store(&data)?.list() {
                println!("{id}\t{}", id.url_path());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Hook(HookCommand::PreReceive { data: _ }) => {
            let stdin = io::stdin().lock();
            let mut out = io::stdout().lock();
            let accepted = devpop::hook::pre_receive(stdin, &mut out)?;
            out.flush()?;
            Ok(if accepted { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
    }
}

fn serve(args: ServeArgs) -> Result<ExitCode> {
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let mut settings = Settings::new(absolute(&args.data.data)?);
        settings.public_url = args.public_url;
        settings.limits = Limits { max_request_bytes: args.max_request_bytes, git_timeout: args.git_timeout };
        let server = Server::bind(settings, args.listen, args.insecure_no_auth).await?;
        let url = server.base_url()?;
        let mode = if args.insecure_no_auth { "NO AUTHENTICATION (--insecure-no-auth)" } else { "local mode: loopback only, no authentication" };
        // The first line on stdout is the address; tests and scripts read it.
        println!("devpop serving on {url} ({mode})");
        io::stdout().flush()?;
        tracing::info!(%url, "serving");
        server.run(shutdown_signal()).await?;
        tracing::info!("stopped");
        Ok(ExitCode::SUCCESS)
    })
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = ctrl_c => {}
        _ = term.recv() => {}
    }
}
