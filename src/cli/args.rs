//! Arguments several subcommands share: the data dir, the server to talk to, the checks' and
//! the push limits' settings, and the working tree `validate` and `render` look at.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use devpop::checks::CheckSettings;
use devpop::hook::HookSettings;
use devpop::rendering::RenderSettings;
use devpop::settings;

#[derive(Args, Clone)]
pub struct DataArgs {
    /// The data dir: repos, packages and records.
    #[arg(long = "data", env = "DEVPOP_DATA", default_value = "./devpop-data")]
    pub data: PathBuf,
}

/// How pushes are checked and rendered: the validate.sh sandbox and the rendering settings.
#[derive(Args, Clone)]
pub struct CheckArgs {
    /// Longest one validate.sh may run, e.g. 10s.
    #[arg(long, env = "DEVPOP_VALIDATE_TIMEOUT", default_value = "10s", value_parser = settings::parse_duration)]
    pub validate_timeout: Duration,
    /// Most output kept from one validate.sh (it is stopped beyond), e.g. 64k.
    #[arg(long, env = "DEVPOP_VALIDATE_MAX_OUTPUT", default_value = "64k", value_parser = settings::parse_size)]
    pub validate_max_output: u64,
    /// Memory of one validate.sh sandbox, all its processes and its /tmp together, e.g. 512M.
    #[arg(long, env = "DEVPOP_VALIDATE_MEMORY", default_value = "512M", value_parser = settings::parse_size)]
    pub validate_memory: u64,
    /// Processes one validate.sh sandbox may run at once.
    #[arg(long, env = "DEVPOP_VALIDATE_PROCESSES", default_value_t = 64)]
    pub validate_processes: u32,
    /// The bubblewrap binary.
    #[arg(long, env = "DEVPOP_BWRAP", default_value = "bwrap")]
    pub bwrap: PathBuf,
    /// Prefix of environment namespace names.
    #[arg(long, env = "DEVPOP_NAMESPACE_PREFIX", default_value = "section")]
    pub namespace_prefix: String,
    /// Each environment is served at <namespace>.<ingress-domain>.
    #[arg(long, env = "DEVPOP_INGRESS_DOMAIN", default_value = "devpop.localhost")]
    pub ingress_domain: String,
    /// The IngressClass of environment Ingresses ("" for the cluster's default class).
    #[arg(long, env = "DEVPOP_INGRESS_CLASS", default_value = "nginx")]
    pub ingress_class: String,
    /// The namespace of the cluster's ingress controller (the only one that may reach private-ingress).
    #[arg(long, env = "DEVPOP_INGRESS_NAMESPACE", default_value = "ingress-nginx")]
    pub ingress_namespace: String,
    /// The nginx image of private-ingress, egress and static-server (non-root, listening on 8080).
    #[arg(long, env = "DEVPOP_PROXY_IMAGE", default_value = "nginxinc/nginx-unprivileged:1.27-alpine")]
    pub proxy_image: String,
    /// The cluster's DNS domain (Service names end in .svc.<domain>).
    #[arg(long, env = "DEVPOP_CLUSTER_DOMAIN", default_value = "cluster.local")]
    pub cluster_domain: String,
    /// The cluster DNS Service as <name>.<namespace> (its namespace is the DNS policy's peer).
    #[arg(long, env = "DEVPOP_DNS_SERVICE", default_value = "kube-dns.kube-system")]
    pub dns_service: String,
    /// More DNS servers pods may query, as CIDRs, comma-separated (NodeLocal DNSCache's address by default).
    #[arg(long, env = "DEVPOP_DNS_PEERS", value_delimiter = ',', default_value = "169.254.20.10/32")]
    pub dns_peers: Vec<String>,
    /// Ranges egress never reaches besides the private, loopback, link-local, shared and multicast ones, comma-separated.
    #[arg(long, env = "DEVPOP_EGRESS_EXCLUDED_CIDRS", value_delimiter = ',')]
    pub egress_excluded_cidrs: Vec<String>,
    /// The namespace allowed to scrape modules' metrics ports ("" for none).
    #[arg(long, env = "DEVPOP_METRICS_NAMESPACE", default_value = "monitoring")]
    pub metrics_namespace: String,
    /// The Pod Security level enforced on environment namespaces.
    #[arg(long, env = "DEVPOP_POD_SECURITY_ENFORCE", default_value = "baseline")]
    pub pod_security_enforce: String,
    /// The Pod Security level warned about (and audited) on environment namespaces.
    #[arg(long, env = "DEVPOP_POD_SECURITY_WARN", default_value = "restricted")]
    pub pod_security_warn: String,
    /// Accept origins in private address ranges and cluster Service names (refused by default:
    /// egress would reach into the cluster). Loopback, link-local and localhost stay refused.
    #[arg(long, env = "DEVPOP_ALLOW_PRIVATE_ORIGINS")]
    pub allow_private_origins: bool,
}

impl CheckArgs {
    pub fn render_settings(&self) -> RenderSettings {
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

    pub fn check_settings(&self) -> CheckSettings {
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
pub struct PushLimitArgs {
    /// The largest file a pushed commit may hold, e.g. 100M.
    #[arg(long, env = "DEVPOP_MAX_BLOB_BYTES", default_value = "100M", value_parser = settings::parse_size)]
    pub max_blob_bytes: u64,
    /// Refs one push may update.
    #[arg(long, env = "DEVPOP_MAX_REFS", default_value_t = 100)]
    pub max_refs: usize,
}

impl PushLimitArgs {
    pub fn hook_settings(&self, checks: CheckSettings) -> HookSettings {
        HookSettings { checks, max_refs: self.max_refs, max_blob_bytes: self.max_blob_bytes }
    }
}

/// Where `validate` and `render` work: a working tree, as an application of some data dir.
#[derive(Args)]
pub struct LocalArgs {
    /// The environment repo's working tree.
    #[arg(default_value = ".")]
    pub dir: PathBuf,
    /// The environment (branch) to check for; defaults to the checked-out branch.
    #[arg(long)]
    pub env: Option<String>,
    /// The data dir whose installed packages to use; without one, the built-in packages.
    #[arg(long = "data", env = "DEVPOP_DATA")]
    pub data: Option<PathBuf>,
    /// The application, as account/application/repo (names the namespace); defaults to local/local/<dir name>.
    #[arg(long)]
    pub app: Option<String>,
}

impl DataArgs {
    /// The data dir, which must exist already (`devpop serve` creates it): a command that
    /// works on one never creates it.
    pub fn existing(&self) -> anyhow::Result<PathBuf> {
        let path = &self.data;
        if !path.is_dir() {
            anyhow::bail!(
                "no data dir at {}: pass --server URL (or set DEVPOP_SERVER) to work on a running devpop server, or --data DIR (DEVPOP_DATA) with the server's data dir (devpop serve creates it)",
                path.display()
            );
        }
        path.canonicalize().map_err(|e| anyhow::anyhow!("cannot resolve the data dir {}: {e}", path.display()))
    }
}

/// The server a command talks to instead of a data dir (its REST API).
#[derive(Args, Clone)]
pub struct ClientArgs {
    /// The devpop server to work on, e.g. https://devpop.example.com (without one: the data dir).
    #[arg(long, env = "DEVPOP_SERVER")]
    pub server: Option<String>,
    /// The API token for --server (else git's credential helper is asked for the server's URL).
    #[arg(long, env = "DEVPOP_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

/// Where a command works: the server of `--server` (through its API, with `--token`), or else
/// the data dir of `--data`. Every subcommand that can do either flattens this one struct.
#[derive(Args, Clone)]
pub struct At {
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub client: ClientArgs,
}

impl At {
    /// The server when one is given, else the data dir, which must exist: a command that needs
    /// one never creates one.
    pub fn where_to(&self) -> anyhow::Result<super::client::Where> {
        use super::client::{Client, Where};
        match Client::new(&self.client)? {
            Some(c) => Ok(Where::Server(Box::new(c))),
            None => Ok(Where::Data(self.data.existing()?)),
        }
    }
}
