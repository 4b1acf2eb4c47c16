//! `devpop serve`: the server's flags, and running it until SIGINT or SIGTERM.

use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use clap::{Args, ValueEnum};

use super::args::{CheckArgs, DataArgs, PushLimitArgs};
use devpop::server::{ServeError, Server};
use devpop::settings::{self, Limits, Settings};

#[derive(Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// Address to listen on.
    #[arg(long, env = "DEVPOP_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Base URL users reach this server at (for clone URLs and links); defaults to http://<listen>.
    #[arg(long, env = "DEVPOP_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Largest request body (a push) accepted, e.g. 512M, 2G.
    #[arg(long, env = "DEVPOP_MAX_REQUEST_BYTES", default_value = "2G", value_parser = settings::parse_size)]
    pub max_request_bytes: u64,
    /// Longest a git request (a whole push, checks included) may take, e.g. 90s, 10m.
    #[arg(long, env = "DEVPOP_GIT_TIMEOUT", default_value = "10m", value_parser = settings::parse_duration)]
    pub git_timeout: Duration,
    /// Listen beyond loopback without authentication (never on a shared network).
    #[arg(long, env = "DEVPOP_INSECURE_NO_AUTH")]
    pub insecure_no_auth: bool,
    /// Pushes in progress at once per account (more get 429).
    #[arg(long, env = "DEVPOP_PUSHES_PER_ACCOUNT", default_value_t = 32)]
    pub pushes_per_account: usize,
    /// API requests per second per client (token or address); more get 429.
    #[arg(long, env = "DEVPOP_API_RATE", default_value_t = 50.0)]
    pub api_rate: f64,
    /// API requests a client may burst above the rate.
    #[arg(long, env = "DEVPOP_API_BURST", default_value_t = 200.0)]
    pub api_burst: f64,
    /// Clients (addresses, tokens) the API rate limiter remembers; idle ones are forgotten first.
    #[arg(long, env = "DEVPOP_API_RATE_CLIENTS", default_value_t = 100_000)]
    pub api_rate_clients: usize,
    /// Connections served at once (more get 503 and are closed); lowered to fit the open-files limit.
    #[arg(long, env = "DEVPOP_MAX_CONNECTIONS", default_value_t = 1024)]
    pub max_connections: usize,
    /// Longest a client may take to send a request's head, and to stay idle between requests, e.g. 20s.
    #[arg(long, env = "DEVPOP_HEADER_TIMEOUT", default_value = "20s", value_parser = settings::parse_duration)]
    pub header_timeout: Duration,
    /// A console session's lifetime, e.g. 12h.
    #[arg(long, env = "DEVPOP_SESSION_LIFETIME", default_value = "12h", value_parser = settings::parse_duration)]
    pub session_lifetime: Duration,
    /// How long a console session may sit unused before it ends, e.g. 1h.
    #[arg(long, env = "DEVPOP_SESSION_IDLE", default_value = "1h", value_parser = settings::parse_duration)]
    pub session_idle: Duration,
    /// Reverse proxies (IP addresses, comma-separated) whose X-Forwarded-Proto is believed.
    #[arg(long, env = "DEVPOP_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<std::net::IpAddr>,
    #[command(flatten)]
    pub push: PushLimitArgs,
    /// Authentication: none (the local default: loopback only) or API tokens (devpop token create).
    #[arg(long, env = "DEVPOP_AUTH", value_enum, default_value_t = AuthMode::None)]
    pub auth: AuthMode,
    /// Where accepted pushes are deployed: the rendered repo only, or a Kubernetes cluster.
    #[arg(long, env = "DEVPOP_TARGET", value_enum, default_value_t = TargetKind::RenderOnly)]
    pub target: TargetKind,
    /// The kubeconfig of the cluster target (default: as kubectl: KUBECONFIG, ~/.kube/config, in-cluster).
    #[arg(long, env = "DEVPOP_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Longest a deployment's rollout may take before it fails, e.g. 5m.
    #[arg(long, env = "DEVPOP_ROLLOUT_DEADLINE", default_value = "5m", value_parser = settings::parse_duration)]
    pub rollout_deadline: Duration,
    /// Deployments kept per environment (older ones are deleted; each environment's last ready
    /// deployment is always kept).
    #[arg(long, env = "DEVPOP_KEEP_DEPLOYMENTS", default_value_t = devpop::records::DEFAULT_KEEP_PER_ENVIRONMENT)]
    pub keep_deployments: usize,
    /// Audit log entries older than this are deleted, e.g. 365d (default: kept for ever).
    #[arg(long, env = "DEVPOP_AUDIT_MAX_AGE", value_parser = settings::parse_duration)]
    pub audit_max_age: Option<Duration>,
    #[command(flatten)]
    pub check: CheckArgs,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AuthMode {
    None,
    Tokens,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum TargetKind {
    RenderOnly,
    Cluster,
}

pub fn serve(args: ServeArgs) -> Result<ExitCode> {
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        // The address first: a server that cannot listen leaves no data dir behind. (The
        // listener is let go at once; std sets SO_REUSEADDR, so the server binds it again.)
        if args.listen.port() != 0 {
            std::net::TcpListener::bind(args.listen)
                .map_err(|source| ServeError::Bind { addr: args.listen, source })?;
        }
        let mut settings = Settings::new(super::absolute(&args.data.data)?);
        settings.public_url = args.public_url;
        settings.limits = Limits {
            max_request_bytes: args.max_request_bytes,
            git_timeout: args.git_timeout,
            pushes_per_account: args.pushes_per_account,
            api_rate: args.api_rate,
            api_burst: args.api_burst,
            api_rate_clients: args.api_rate_clients,
            max_connections: args.max_connections,
            header_timeout: args.header_timeout,
            session_lifetime: args.session_lifetime,
            session_idle: args.session_idle,
        };
        settings.trusted_proxies = args.trusted_proxies;
        settings.hook = args.push.hook_settings(args.check.check_settings());
        settings.auth_tokens = args.auth == AuthMode::Tokens;
        settings.records = devpop::settings::RecordSettings {
            keep_per_environment: args.keep_deployments,
            audit_max_age: args.audit_max_age,
        };
        settings.target = match args.target {
            TargetKind::RenderOnly => devpop::settings::TargetSettings::RenderOnly,
            TargetKind::Cluster => devpop::settings::TargetSettings::Cluster {
                kubeconfig: args.kubeconfig,
                rollout_deadline: args.rollout_deadline,
            },
        };
        let server = Server::bind(settings, args.listen, args.insecure_no_auth).await?;
        let url = server.base_url()?;
        let mode = match (args.auth, args.insecure_no_auth) {
            (AuthMode::Tokens, _) => "API tokens required",
            (AuthMode::None, true) => "NO AUTHENTICATION (--insecure-no-auth)",
            (AuthMode::None, false) => "local mode: loopback only, no authentication",
        };
        // The first line on stdout is the address; tests and scripts read it.
        let shutdown = shutdown_signal()?;
        out!("devpop serving on {url} ({mode})");
        io::stdout().flush()?;
        tracing::info!(%url, "serving");
        server.run(shutdown).await?;
        tracing::info!("stopped");
        Ok(ExitCode::SUCCESS)
    })
}

/// The signals that stop the server gracefully, listened to from now on (a signal that arrives
/// before the address line is printed still stops it gracefully, with its last log lines).
fn shutdown_signal() -> Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = term.recv() => {}
        }
    })
}
