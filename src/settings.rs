//! Server settings: what `devpop serve` is told by flags and `DEVPOP_*` environment variables
//! (parsed in `main`), with defaults that work on a laptop with no configuration.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Settings {
    /// Absolute path of the data dir (repos, packages, records).
    pub data_dir: PathBuf,
    /// The base URL users reach devpop at (clone URLs, links); derived from the listen address
    /// when not set.
    pub public_url: Option<String>,
    /// The git executable that serves the protocol (`git upload-pack` / `git receive-pack`);
    /// made absolute by `Server::bind` (`posix_spawn` does not search PATH).
    pub git: PathBuf,
    pub limits: Limits,
    /// How pushes are checked (validation, the validate.sh sandboxes, rendering: the deployer
    /// renders with the same settings).
    pub hook: crate::hook::HookSettings,
    pub target: TargetSettings,
    /// Requests need an API token (`--auth tokens`).
    pub auth_tokens: bool,
    /// Reverse proxies whose `X-Forwarded-Proto` is believed (the console cookie gets `Secure`
    /// when it says https).
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// Retention of deployment records and of the audit log.
    pub records: RecordSettings,
}

/// How long records are kept.
#[derive(Debug, Clone)]
pub struct RecordSettings {
    /// Deployments kept per environment (besides its last ready one).
    pub keep_per_environment: usize,
    /// Audit entries older than this are deleted (`None`: kept for ever).
    pub audit_max_age: Option<Duration>,
}

impl Default for RecordSettings {
    fn default() -> Self {
        RecordSettings { keep_per_environment: crate::records::DEFAULT_KEEP_PER_ENVIRONMENT, audit_max_age: None }
    }
}

/// Where accepted pushes are deployed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum TargetSettings {
    /// The embedded default: manifests go to the rendered repo only.
    #[default]
    RenderOnly,
    /// A Kubernetes cluster, found like kubectl finds it (or from this kubeconfig).
    Cluster { kubeconfig: Option<PathBuf>, rollout_deadline: Duration },
}

#[derive(Debug, Clone)]
pub struct Limits {
    /// The largest request body accepted (a push's pack), after gzip decoding.
    pub max_request_bytes: u64,
    /// How long one git request (a whole push, checks included) may take.
    pub git_timeout: Duration,
    /// Pushes in progress at once per account.
    pub pushes_per_account: usize,
    /// API requests per second per client (token or address), and the burst allowed.
    pub api_rate: f64,
    pub api_burst: f64,
    /// Clients (addresses and tokens) the rate limiter remembers; past it, idle and then the
    /// least recently seen ones are forgotten.
    pub api_rate_clients: usize,
    /// Connections served at once; more are answered 503 and closed (lowered at start to fit
    /// the open-files limit).
    pub max_connections: usize,
    /// Longest a client may take to send a request's head (also the keep-alive idle limit).
    pub header_timeout: Duration,
    /// A console session's lifetime (its cookie's Max-Age) and how long it may sit unused.
    pub session_lifetime: Duration,
    pub session_idle: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_request_bytes: 2 << 30,
            git_timeout: Duration::from_secs(600),
            pushes_per_account: 32,
            api_rate: 50.0,
            api_burst: 200.0,
            api_rate_clients: 100_000,
            max_connections: 1024,
            header_timeout: Duration::from_secs(20),
            session_lifetime: Duration::from_secs(12 * 3600),
            session_idle: Duration::from_secs(3600),
        }
    }
}

impl Settings {
    pub fn new(data_dir: PathBuf) -> Self {
        Settings {
            data_dir,
            public_url: None,
            git: PathBuf::from("git"),
            limits: Limits::default(),
            hook: Default::default(),
            target: TargetSettings::default(),
            auth_tokens: false,
            trusted_proxies: Vec::new(),
            records: RecordSettings::default(),
        }
    }

    /// The base URL for links, given the address actually bound.
    pub fn base_url(&self, bound: SocketAddr) -> String {
        match &self.public_url {
            Some(url) => url.trim_end_matches('/').to_owned(),
            None => format!("http://{bound}"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    #[error("{path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: not valid TOML: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("{path}: unknown setting {key:?}; settings are the long flag names, e.g. listen, data, max-request-bytes")]
    Unknown { path: PathBuf, key: String },
    #[error("{path}: {key}: use a string, a number or true/false")]
    Type { path: PathBuf, key: String },
}

/// Reads a config file (TOML, `flag-name = value`, e.g. `listen = "127.0.0.1:8080"`) into the
/// `DEVPOP_*` environment variables its keys stand for. `known` lists the variables the CLI
/// reads; the caller applies only those not already set, so flags beat env beat the file.
pub fn config_file_env(path: &std::path::Path, known: &[String]) -> Result<Vec<(String, String)>, ConfigFileError> {
    let text =
        std::fs::read_to_string(path).map_err(|source| ConfigFileError::Read { path: path.to_owned(), source })?;
    let table: toml::Table =
        toml::from_str(&text).map_err(|e| ConfigFileError::Syntax { path: path.to_owned(), message: e.to_string() })?;
    let mut out = Vec::new();
    for (key, value) in table {
        let var = format!("DEVPOP_{}", key.to_ascii_uppercase().replace('-', "_"));
        if !known.contains(&var) {
            return Err(ConfigFileError::Unknown { path: path.to_owned(), key });
        }
        let value = match value {
            toml::Value::String(s) => s,
            toml::Value::Integer(n) => n.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            _ => return Err(ConfigFileError::Type { path: path.to_owned(), key }),
        };
        out.push((var, value));
    }
    Ok(out)
}

/// Parses sizes such as `512`, `64k`, `200M`, `2G` (powers of 1024).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (digits, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = digits.parse().map_err(|_| format!("{s:?} is not a size (e.g. 512M, 2G)"))?;
    let mult = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (use k, M or G)")),
    };
    n.checked_mul(mult).ok_or_else(|| format!("{s:?} is too large"))
}

/// Parses durations such as `30s`, `10m`, `1h` (a bare number is seconds).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (digits, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = digits.parse().map_err(|_| format!("{s:?} is not a duration (e.g. 30s, 10m)"))?;
    let per = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (use s, m, h or d)")),
    };
    // Bounded so that adding it to a timestamp (token expiry, audit age) cannot overflow.
    const MAX_SECS: u64 = 100 * 366 * 86400;
    match n.checked_mul(per) {
        Some(secs) if secs <= MAX_SECS => Ok(Duration::from_secs(secs)),
        _ => Err(format!("{s:?} is too long (at most 100 years, e.g. 36600d)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_file_keys_become_devpop_variables() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("devpop.toml");
        std::fs::write(&path, "listen = \"127.0.0.1:9000\"\nmax-request-bytes = \"1G\"\ninsecure-no-auth = false\n")
            .unwrap();
        let known: Vec<String> = ["DEVPOP_LISTEN", "DEVPOP_MAX_REQUEST_BYTES", "DEVPOP_INSECURE_NO_AUTH"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let env = config_file_env(&path, &known).unwrap();
        assert!(env.contains(&("DEVPOP_LISTEN".into(), "127.0.0.1:9000".into())));
        assert!(env.contains(&("DEVPOP_INSECURE_NO_AUTH".into(), "false".into())));
        std::fs::write(&path, "lisen = 1\n").unwrap();
        assert!(config_file_env(&path, &known).unwrap_err().to_string().contains("unknown setting \"lisen\""));
    }

    #[test]
    fn sizes_and_durations_read_like_people_write_them() {
        assert_eq!(parse_size("2G"), Ok(2 << 30));
        assert_eq!(parse_size("64k"), Ok(65536));
        assert_eq!(parse_size("100"), Ok(100));
        assert!(parse_size("12x").is_err() && parse_size("M").is_err());
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("45"), Ok(Duration::from_secs(45)));
        assert_eq!(parse_duration("2d"), Ok(Duration::from_secs(2 * 86400)));
        assert!(parse_duration("1w").is_err());
        assert!(parse_duration("999999999999999999d").is_err(), "overflows u64 seconds");
        assert!(parse_duration("18446744073709551615").is_err(), "u64::MAX seconds overflows a timestamp");
        assert_eq!(parse_duration("36600d"), Ok(Duration::from_secs(36600 * 86400)));
    }
}
