//! The `devpop` command line.

#![deny(unsafe_code)]

mod cli;

use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};

use devpop::checks::{CheckSettings, MemoStore};
use devpop::hook::HookSettings;
use devpop::names::RepoId;
use devpop::packages::PackageStore;
use devpop::rendering::RenderSettings;
use devpop::repos::RepoStore;
use devpop::server::Server;
use devpop::settings::{self, Limits, Settings};
use devpop::source::WorkDir;

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

#[derive(Args, Clone)]
struct DataArgs {
    /// The data dir: repos, packages and records.
    #[arg(long = "data", env = "DEVPOP_DATA", default_value = "./devpop-data")]
    data: PathBuf,
}

/// How pushes are checked and rendered: the validate.sh sandbox and the rendering settings.
#[derive(Args, Clone)]
struct CheckArgs {
    /// Longest one validate.sh may run, e.g. 10s.
    #[arg(long, env = "DEVPOP_VALIDATE_TIMEOUT", default_value = "10s", value_parser = settings::parse_duration)]
    validate_timeout: Duration,
    /// Most output kept from one validate.sh (it is stopped beyond), e.g. 64k.
    #[arg(long, env = "DEVPOP_VALIDATE_MAX_OUTPUT", default_value = "64k", value_parser = settings::parse_size)]
    validate_max_output: u64,
    /// Memory of one validate.sh sandbox, all its processes and its /tmp together, e.g. 512M.
    #[arg(long, env = "DEVPOP_VALIDATE_MEMORY", default_value = "512M", value_parser = settings::parse_size)]
    validate_memory: u64,
    /// Processes one validate.sh sandbox may run at once.
    #[arg(long, env = "DEVPOP_VALIDATE_PROCESSES", default_value_t = 64)]
    validate_processes: u32,
    /// The bubblewrap binary.
    #[arg(long, env = "DEVPOP_BWRAP", default_value = "bwrap")]
    bwrap: PathBuf,
    /// Prefix of environment namespace names.
    #[arg(long, env = "DEVPOP_NAMESPACE_PREFIX", default_value = "section")]
    namespace_prefix: String,
    /// Each environment is served at <namespace>.<ingress-domain>.
    #[arg(long, env = "DEVPOP_INGRESS_DOMAIN", default_value = "devpop.localhost")]
    ingress_domain: String,
    /// The IngressClass of environment Ingresses ("" for the cluster's default class).
    #[arg(long, env = "DEVPOP_INGRESS_CLASS", default_value = "nginx")]
    ingress_class: String,
    /// The namespace of the cluster's ingress controller (the only one that may reach private-ingress).
    #[arg(long, env = "DEVPOP_INGRESS_NAMESPACE", default_value = "ingress-nginx")]
    ingress_namespace: String,
    /// The nginx image of private-ingress, egress and static-server (non-root, listening on 8080).
    #[arg(long, env = "DEVPOP_PROXY_IMAGE", default_value = "nginxinc/nginx-unprivileged:1.27-alpine")]
    proxy_image: String,
    /// The cluster's DNS domain (Service names end in .svc.<domain>).
    #[arg(long, env = "DEVPOP_CLUSTER_DOMAIN", default_value = "cluster.local")]
    cluster_domain: String,
    /// The cluster DNS Service as <name>.<namespace> (its namespace is the DNS policy's peer).
    #[arg(long, env = "DEVPOP_DNS_SERVICE", default_value = "kube-dns.kube-system")]
    dns_service: String,
    /// More DNS servers pods may query, as CIDRs, comma-separated (NodeLocal DNSCache's address by default).
    #[arg(long, env = "DEVPOP_DNS_PEERS", value_delimiter = ',', default_value = "169.254.20.10/32")]
    dns_peers: Vec<String>,
    /// Ranges egress never reaches besides the private, loopback, link-local, shared and multicast ones, comma-separated.
    #[arg(long, env = "DEVPOP_EGRESS_EXCLUDED_CIDRS", value_delimiter = ',')]
    egress_excluded_cidrs: Vec<String>,
    /// The namespace allowed to scrape modules' metrics ports ("" for none).
    #[arg(long, env = "DEVPOP_METRICS_NAMESPACE", default_value = "monitoring")]
    metrics_namespace: String,
    /// The Pod Security level enforced on environment namespaces.
    #[arg(long, env = "DEVPOP_POD_SECURITY_ENFORCE", default_value = "baseline")]
    pod_security_enforce: String,
    /// The Pod Security level warned about (and audited) on environment namespaces.
    #[arg(long, env = "DEVPOP_POD_SECURITY_WARN", default_value = "restricted")]
    pod_security_warn: String,
    /// Accept origins in private address ranges and cluster Service names (refused by default:
    /// egress would reach into the cluster). Loopback, link-local and localhost stay refused.
    #[arg(long, env = "DEVPOP_ALLOW_PRIVATE_ORIGINS")]
    allow_private_origins: bool,
}

impl CheckArgs {
    fn render_settings(&self) -> RenderSettings {
        RenderSettings {
            namespace_prefix: self.namespace_prefix.clone(),
            ingress_domain: self.ingress_domain.clone(),
            ingress_class: Some(self.ingress_class.clone()).filter(|c| !c.is_empty()),
            ingress_namespace: self.ingress_namespace.clone(),
            proxy_image: self.proxy_image.clone(),
            cluster_domain: self.cluster_domain.clone(),
            dns_service: self.dns_service.clone(),
            dns_peers: self.dns_peers.iter().filter(|c| !c.is_empty()).cloned().collect(),
            egress_excluded_cidrs: self.egress_excluded_cidrs.iter().filter(|c| !c.is_empty()).cloned().collect(),
            metrics_namespace: Some(self.metrics_namespace.clone()).filter(|n| !n.is_empty()),
            pod_security_enforce: self.pod_security_enforce.clone(),
            pod_security_warn: self.pod_security_warn.clone(),
            origin_rules: devpop::validation::config::Rules { allow_private_origins: self.allow_private_origins },
            ..RenderSettings::default()
        }
    }

    fn check_settings(&self) -> CheckSettings {
        CheckSettings {
            render: self.render_settings(),
            bwrap: self.bwrap.clone(),
            sandbox: devpop::sandbox::Limits {
                timeout: self.validate_timeout,
                max_output: self.validate_max_output as usize,
                memory_bytes: self.validate_memory,
                processes: self.validate_processes,
                ..devpop::sandbox::Limits::default()
            },
            ..CheckSettings::default()
        }
    }
}

/// Limits on one push as a whole (the checks refuse a push over them).
#[derive(Args)]
struct PushLimitArgs {
    /// The largest file a pushed commit may hold, e.g. 100M.
    #[arg(long, env = "DEVPOP_MAX_BLOB_BYTES", default_value = "100M", value_parser = settings::parse_size)]
    max_blob_bytes: u64,
    /// Refs one push may update.
    #[arg(long, env = "DEVPOP_MAX_REFS", default_value_t = 100)]
    max_refs: usize,
}

impl PushLimitArgs {
    fn hook_settings(&self, checks: CheckSettings) -> HookSettings {
        HookSettings { checks, max_refs: self.max_refs, max_blob_bytes: self.max_blob_bytes }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Serve git over HTTP and deploy what is pushed.
    Serve(ServeArgs),
    /// Manage applications (one application = one environment repo).
    #[command(subcommand)]
    App(AppCommand),
    /// Manage API tokens (for git over HTTP, the API and the console, with --auth tokens).
    #[command(subcommand)]
    Token(TokenCommand),
    /// Manage module packages (the module types a proxychain can use).
    #[command(subcommand)]
    Package(PackageCommand),
    /// Check an environment repo working tree the way a push is checked, offline.
    Validate(ValidateArgs),
    /// Render an environment of a working tree to Kubernetes manifests, offline.
    Render(RenderCmdArgs),
    /// Restore an environment to an earlier deployment: pushes a new commit with that state, which deploys it.
    Rollback(RollbackArgs),
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
    /// Pushes in progress at once per account (more get 429).
    #[arg(long, env = "DEVPOP_PUSHES_PER_ACCOUNT", default_value_t = 32)]
    pushes_per_account: usize,
    /// API requests per second per client (token or address); more get 429.
    #[arg(long, env = "DEVPOP_API_RATE", default_value_t = 50.0)]
    api_rate: f64,
    /// API requests a client may burst above the rate.
    #[arg(long, env = "DEVPOP_API_BURST", default_value_t = 200.0)]
    api_burst: f64,
    /// Clients (addresses, tokens) the API rate limiter remembers; idle ones are forgotten first.
    #[arg(long, env = "DEVPOP_API_RATE_CLIENTS", default_value_t = 100_000)]
    api_rate_clients: usize,
    /// Connections served at once (more get 503 and are closed); lowered to fit the open-files limit.
    #[arg(long, env = "DEVPOP_MAX_CONNECTIONS", default_value_t = 1024)]
    max_connections: usize,
    /// Longest a client may take to send a request's head, and to stay idle between requests, e.g. 20s.
    #[arg(long, env = "DEVPOP_HEADER_TIMEOUT", default_value = "20s", value_parser = settings::parse_duration)]
    header_timeout: Duration,
    /// A console session's lifetime, e.g. 12h.
    #[arg(long, env = "DEVPOP_SESSION_LIFETIME", default_value = "12h", value_parser = settings::parse_duration)]
    session_lifetime: Duration,
    /// How long a console session may sit unused before it ends, e.g. 1h.
    #[arg(long, env = "DEVPOP_SESSION_IDLE", default_value = "1h", value_parser = settings::parse_duration)]
    session_idle: Duration,
    /// Reverse proxies (IP addresses, comma-separated) whose X-Forwarded-Proto is believed.
    #[arg(long, env = "DEVPOP_TRUSTED_PROXIES", value_delimiter = ',')]
    trusted_proxies: Vec<std::net::IpAddr>,
    #[command(flatten)]
    push: PushLimitArgs,
    /// Authentication: none (the local default: loopback only) or API tokens (devpop token create).
    #[arg(long, env = "DEVPOP_AUTH", value_enum, default_value_t = AuthMode::None)]
    auth: AuthMode,
    /// Where accepted pushes are deployed: the rendered repo only, or a Kubernetes cluster.
    #[arg(long, env = "DEVPOP_TARGET", value_enum, default_value_t = TargetKind::RenderOnly)]
    target: TargetKind,
    /// The kubeconfig of the cluster target (default: as kubectl: KUBECONFIG, ~/.kube/config, in-cluster).
    #[arg(long, env = "DEVPOP_KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// Longest a deployment's rollout may take before it fails, e.g. 5m.
    #[arg(long, env = "DEVPOP_ROLLOUT_DEADLINE", default_value = "5m", value_parser = settings::parse_duration)]
    rollout_deadline: Duration,
    /// Deployments kept per environment (older ones are deleted; each environment's last ready
    /// deployment is always kept).
    #[arg(long, env = "DEVPOP_KEEP_DEPLOYMENTS", default_value_t = devpop::records::DEFAULT_KEEP_PER_ENVIRONMENT)]
    keep_deployments: usize,
    /// Audit log entries older than this are deleted, e.g. 365d (default: kept for ever).
    #[arg(long, env = "DEVPOP_AUDIT_MAX_AGE", value_parser = settings::parse_duration)]
    audit_max_age: Option<Duration>,
    #[command(flatten)]
    check: CheckArgs,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum AuthMode {
    None,
    Tokens,
}

#[derive(Clone, Copy, ValueEnum)]
enum TargetKind {
    RenderOnly,
    Cluster,
}

#[derive(Args)]
struct ValidateArgs {
    #[command(flatten)]
    local: LocalArgs,
    #[command(flatten)]
    check: CheckArgs,
    /// Check the index (what `git commit` would commit) instead of the last commit.
    #[arg(long, conflicts_with = "worktree")]
    staged: bool,
    /// Check the files in the working tree as they are, committed or not.
    #[arg(long)]
    worktree: bool,
    /// How to print the result: text, or one JSON object on stdout (for CI).
    #[arg(long, value_enum, default_value = "text")]
    format: cli::validate::Format,
}

/// Where `validate` and `render` work: a working tree, as an application of some data dir.
#[derive(Args)]
struct LocalArgs {
    /// The environment repo's working tree.
    #[arg(default_value = ".")]
    dir: PathBuf,
    /// The environment (branch) to check for; defaults to the checked-out branch.
    #[arg(long)]
    env: Option<String>,
    /// The data dir whose installed packages to use; without one, the built-in packages.
    #[arg(long = "data", env = "DEVPOP_DATA")]
    data: Option<PathBuf>,
    /// The application, as account/application/repo (names the namespace); defaults to local/local/<dir name>.
    #[arg(long)]
    app: Option<String>,
}

#[derive(Args)]
struct RenderCmdArgs {
    #[command(flatten)]
    local: LocalArgs,
    /// Write one file per object (and a kustomization.yaml) into this folder instead of YAML on stdout.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Print what would change against the environment's last deployment (needs --data: the
    /// server's data dir) instead of the manifests.
    #[arg(long, conflicts_with = "out", requires = "data")]
    diff: bool,
    /// With --diff: text, or one JSON object on stdout (for CI).
    #[arg(long, value_enum, default_value = "text", requires = "diff")]
    format: cli::validate::Format,
    #[command(flatten)]
    check: CheckArgs,
}

#[derive(Subcommand)]
enum TokenCommand {
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
        data: DataArgs,
    },
    /// List tokens (ids, scopes, expiry; never the tokens).
    List {
        #[command(flatten)]
        data: DataArgs,
    },
    /// Revoke a token by id.
    Revoke {
        id: String,
        #[command(flatten)]
        data: DataArgs,
    },
}

#[derive(Subcommand)]
enum PackageCommand {
    /// Install a module package from its source folder (.section-proxy.yaml, validate.sh, prepare.sh, proxy/, proxy_config/).
    Add {
        /// The module's source folder.
        source: PathBuf,
        #[command(flatten)]
        data: DataArgs,
    },
    /// List installed packages.
    List {
        #[command(flatten)]
        data: DataArgs,
    },
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

#[derive(Args)]
struct RollbackArgs {
    /// The application, as account/application/repo.
    app: String,
    /// The environment (branch).
    env: String,
    /// The deployment whose state to restore; defaults to the last ready deployment before the current state.
    #[arg(long)]
    to: Option<u64>,
    #[command(flatten)]
    data: DataArgs,
    /// Base URL of the devpop server the rollback is pushed to.
    #[arg(long, env = "DEVPOP_PUBLIC_URL", default_value = "http://127.0.0.1:8080")]
    public_url: String,
}

#[derive(Subcommand)]
enum HookCommand {
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

/// `println!` for the CLI's output, as a `?`-able write: when the reader goes away
/// (`devpop app list | head`), the command ends quietly instead of panicking.
macro_rules! out {
    ($($arg:tt)*) => { writeln!(io::stdout(), $($arg)*)? };
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
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    };
    // The validate.sh sandboxes' scratch folders (`validate`, the hook), if any were made.
    devpop::sandbox::remove_scratch_root();
    code
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

fn absolute(path: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(path).with_context(|| format!("creating the data dir {}", path.display()))?;
    path.canonicalize().with_context(|| format!("resolving {}", path.display()))
}

fn audit(data: &Path) -> Result<devpop::records::audit::AuditLog> {
    Ok(devpop::records::audit::AuditLog::open(&absolute(data)?)?)
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
            devpop::applying::RenderedRepos::new(&absolute(&data.data)?).prepare(&id)?;
            audit(&data.data)?.record(
                "cli",
                None,
                "application.create",
                &id.account,
                &format!("{}/{}", id.application, id.repo),
                &origin,
            );
            let url = format!("{}{}", public_url.trim_end_matches('/'), id.url_path());
            out!("Created application {id} (branch Production, origin {origin}).");
            out!("Clone it with:\n  git clone {url}");
            out!("or add it to an existing environment repo:\n  git remote add developer-pop {url}");
            Ok(ExitCode::SUCCESS)
        }
        Command::App(AppCommand::List { data }) => {
            for id in store(&data)?.list() {
                out!("{id}\t{}", id.url_path());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Package(PackageCommand::Add { source, data }) => {
            let store = PackageStore::new(&absolute(&data.data)?);
            let p = store.add(&source)?;
            audit(&data.data)?.record(
                "cli",
                None,
                "package.install",
                devpop::auth::ALL_ACCOUNTS,
                &p.descriptor.metadata.name,
                &p.descriptor.metadata.image,
            );
            out!("Installed {} (image {}).", p.descriptor.metadata.name, p.descriptor.metadata.image);
            Ok(ExitCode::SUCCESS)
        }
        Command::Package(PackageCommand::List { data }) => {
            let store = PackageStore::new(&absolute(&data.data)?);
            for name in store.catalog().all() {
                let image = store
                    .get(&name)
                    .map(|p| p.descriptor.metadata.image)
                    .unwrap_or_else(|e| format!("(unreadable: {e})"));
                out!("{name}\t{image}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Validate(args) => validate(args),
        Command::Token(TokenCommand::Create { account, admin, read_only, expires, data }) => {
            let store = devpop::auth::TokenStore::new(&absolute(&data.data)?);
            let account = if admin { devpop::auth::ALL_ACCOUNTS.to_owned() } else { account.unwrap_or_default() };
            if account != devpop::auth::ALL_ACCOUNTS {
                RepoId::new(&account, "x", "x")?;
            }
            let expires_at =
                expires.map(|d| jiff::Timestamp::now() + jiff::SignedDuration::from_secs(d.as_secs() as i64));
            let (record, token) = store.create(&account, read_only, expires_at)?;
            audit(&data.data)?.record(
                "cli",
                None,
                "token.create",
                &record.account,
                &record.id,
                if read_only { "read-only" } else { "read-write" },
            );
            eprintln!(
                "Created {} for {} ({}{}). It is shown once; devpop keeps only its hash:",
                record.id,
                if admin { "every account".to_owned() } else { format!("account {account}") },
                if read_only { "read-only" } else { "read-write" },
                expires_at.map(|e| format!(", expires {e}")).unwrap_or_default()
            );
            out!("{token}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Token(TokenCommand::List { data }) => {
            for t in devpop::auth::TokenStore::new(&absolute(&data.data)?).list()? {
                let state = if t.revoked { "revoked" } else { "active" };
                let expires = t.expires_at.map(|e| e.to_string()).unwrap_or_else(|| "never".into());
                out!(
                    "{}\t{}\t{}\t{state}\texpires {expires}",
                    t.id,
                    t.account,
                    if t.read_only { "read-only" } else { "read-write" }
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Token(TokenCommand::Revoke { id, data }) => {
            let t = devpop::auth::TokenStore::new(&absolute(&data.data)?).revoke(&id)?;
            audit(&data.data)?.record("cli", None, "token.revoke", &t.account, &t.id, "");
            out!("Revoked {} (account {}).", t.id, t.account);
            Ok(ExitCode::SUCCESS)
        }
        Command::Render(args) => render(args),
        Command::Rollback(args) => rollback(args),
        Command::Hook(HookCommand::ProcReceive) => {
            devpop::hook::proc_receive::answer(&mut io::stdin().lock(), &mut io::stdout().lock())
                .context("answering git's proc-receive request")?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Hook(HookCommand::PreReceive { data, check, push }) => {
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

/// A working tree checked as an application of a data dir: what `validate` and `render` share.
struct Local {
    dir: PathBuf,
    env: String,
    id: RepoId,
    commit: String,
    packages: PackageStore,
    /// Holds the built-in package store when no data dir was given.
    _builtin: Option<tempfile::TempDir>,
}

impl Local {
    fn new(args: &LocalArgs) -> Result<Local> {
        let dir = args.dir.canonicalize().with_context(|| format!("{}", args.dir.display()))?;
        let env = match &args.env {
            Some(env) => env.clone(),
            None => {
                current_branch(&dir).context("no --env given and the checked-out branch is unknown; pass --env NAME")?
            }
        };
        let id = match &args.app {
            Some(app) => {
                let parts: Vec<&str> = app.split('/').collect();
                let [account, application, repo] = parts[..] else {
                    anyhow::bail!("--app {app:?}: use account/application/repo")
                };
                RepoId::new(account, application, repo)?
            }
            None if let Some(id) = remote_app(&dir) => id,
            None => {
                let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or("app");
                let clean: String = name.chars().filter(|c| c.is_ascii_alphanumeric() || "-_.".contains(*c)).collect();
                RepoId::new("local", "local", clean.trim_start_matches(['-', '_', '.']))
                    .or_else(|_| RepoId::new("local", "local", "app"))?
            }
        };
        let commit = git2::Repository::discover(&dir)
            .ok()
            .and_then(|r| r.head().ok()?.target())
            .map_or_else(|| "worktree".to_owned(), |oid| oid.to_string());
        let (packages, builtin) = match &args.data {
            Some(data) if data.join("packages").is_dir() => (PackageStore::new(data), None),
            _ => {
                let tmp = tempfile::tempdir()?;
                let store = PackageStore::new(tmp.path());
                store.install_builtins()?;
                eprintln!(
                    "note: using the built-in packages ({}); pass --data to use a server's",
                    store.catalog().all().join(", ")
                );
                (store, Some(tmp))
            }
        };
        Ok(Local { dir, env, id, commit, packages, _builtin: builtin })
    }

    fn subject(&self) -> devpop::checks::Subject<'_> {
        devpop::checks::Subject { id: &self.id, environment: &self.env, commit: &self.commit }
    }
}

fn validate(args: ValidateArgs) -> Result<ExitCode> {
    let local = Local::new(&args.local)?;
    let settings = args.check.check_settings();
    let namespace = devpop::rendering::naming::namespace(&settings.render.namespace_prefix, &local.id, &local.env);
    let what = match (args.staged, args.worktree) {
        (_, true) => cli::validate::What::Worktree,
        (true, _) => cli::validate::What::Staged,
        _ => cli::validate::What::Head,
    };
    cli::validate::run(cli::validate::Request {
        dir: &local.dir,
        env: &local.env,
        subject: local.subject(),
        namespace,
        packages: &local.packages,
        settings,
        what,
        format: args.format,
    })
}

fn render(args: RenderCmdArgs) -> Result<ExitCode> {
    let local = Local::new(&args.local)?;
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
        let before = devpop::applying::RenderedRepos::new(&absolute(data)?)
            .environment_objects(&local.id, &local.env)?
            .unwrap_or_default();
        let diff = devpop::rendering::diff(&before, &rendered);
        let mut stdout = io::stdout().lock();
        if args.format == cli::validate::Format::Json {
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

/// The application the work tree's devpop remote (`developer-pop`, else `origin`) points at,
/// from its URL (`.../account/<account>/application/<application>/<repo>.git`): the server
/// names the environment's namespace after it.
fn remote_app(dir: &Path) -> Option<RepoId> {
    let repo = git2::Repository::discover(dir).ok()?;
    ["developer-pop", "origin"].iter().find_map(|name| {
        let remote = repo.find_remote(name).ok()?;
        let path = remote.url().ok()?.split_once("/account/")?.1.trim_end_matches('/');
        let (account, rest) = path.split_once("/application/")?;
        let (application, repo_name) = rest.split_once('/')?;
        let repo_name = repo_name.strip_suffix(".git").unwrap_or(repo_name);
        RepoId::new(account, application, repo_name).ok()
    })
}

/// The branch checked out in the git work tree containing `dir`.
fn current_branch(dir: &Path) -> Option<String> {
    let repo = git2::Repository::discover(dir).ok()?;
    let head = repo.find_reference("HEAD").ok()?;
    let target = head.symbolic_target().ok()??;
    target.strip_prefix("refs/heads/").map(str::to_owned)
}

fn rollback(args: RollbackArgs) -> Result<ExitCode> {
    let parts: Vec<&str> = args.app.split('/').collect();
    let [account, application, repo] = parts[..] else {
        anyhow::bail!("{:?}: name the application as account/application/repo", args.app)
    };
    let id = RepoId::new(account, application, repo)?;
    let data = absolute(&args.data.data)?;
    let repo_path = RepoStore::new(&data, &std::env::current_exe()?).path(&id);
    anyhow::ensure!(repo_path.is_dir(), "no application {id} in {}", data.display());
    let records = devpop::records::Records::open(&data)?;
    let key = (id.account.clone(), id.application.clone(), id.repo.clone(), args.env.clone());
    let head = git2::Repository::open_bare(&repo_path)?
        .find_reference(&format!("refs/heads/{}", args.env))
        .with_context(|| format!("{id} has no environment {}", args.env))?
        .peel_to_tree()?
        .id();
    let tree_of = |commit: &str| -> Option<git2::Oid> {
        let repo = git2::Repository::open_bare(&repo_path).ok()?;
        let tree = repo.find_commit(git2::Oid::from_str(commit).ok()?).ok()?.tree_id();
        Some(tree)
    };
    let target = match args.to {
        Some(n) => {
            let d = records.get(n).with_context(|| format!("no deployment {n}"))?;
            anyhow::ensure!(
                d.environment_key() == key,
                "deployment {n} is of {}/{}/{} {}, not {id} {}",
                d.request.account,
                d.request.application,
                d.request.repo,
                d.request.environment,
                args.env
            );
            anyhow::ensure!(
                d.request.action == devpop::records::Action::Deploy,
                "deployment {n} removed the environment; pick a deployment that deployed it"
            );
            d
        }
        None => {
            // The environment's ready deployments, newest first, a page at a time.
            let filter = devpop::records::Filter {
                state: Some(devpop::records::State::Ready),
                ..devpop::records::Filter::environment(&key)
            };
            let mut found = None;
            for offset in (0..).step_by(100) {
                let (page, _) = records.page(&filter, offset, 100)?;
                let n = page.len();
                found = page.into_iter().find(|d| {
                    d.request.action == devpop::records::Action::Deploy
                        && tree_of(&d.request.commit).is_some_and(|t| t != head)
                });
                if found.is_some() || n < 100 {
                    break;
                }
            }
            found.with_context(|| {
                format!("{id} {} has no earlier ready deployment with a different state to restore", args.env)
            })?
        }
    };
    let message = format!(
        "Roll back {} to deployment {} (commit {})\n\nRestores the state deployed by deployment {} ({}).\n",
        args.env,
        target.id,
        devpop::records::short(&target.request.commit),
        target.id,
        target.request.commit
    );
    let commit = devpop::repos::restore_commit(&repo_path, &args.env, &target.request.commit, &message)?;
    devpop::records::audit::AuditLog::open(&data)?.record(
        "cli",
        None,
        "rollback",
        &id.account,
        &format!("{}/{}/{}", id.application, id.repo, args.env),
        &format!("to deployment {} (commit {})", target.id, devpop::records::short(&target.request.commit)),
    );
    out!(
        "Rolling {} of {id} back to deployment {} (commit {}) with commit {}",
        args.env,
        target.id,
        devpop::records::short(&target.request.commit),
        devpop::records::short(&commit.to_string())
    );
    // Through the server, like any push: the same checks, a deployment record, linear history.
    let url = format!("{}{}", args.public_url.trim_end_matches('/'), id.url_path());
    let status = std::process::Command::new("git")
        .arg("-C")
        .arg(&repo_path)
        .args(["push", &url, &format!("{commit}:refs/heads/{}", args.env)])
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_TERMINAL_PROMPT", "0")
        .status()
        .context("running git push")?;
    Ok(if status.success() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn serve(args: ServeArgs) -> Result<ExitCode> {
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let mut settings = Settings::new(absolute(&args.data.data)?);
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
        out!("devpop serving on {url} ({mode})");
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
