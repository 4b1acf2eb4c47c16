//! `.section-proxy.yaml`: a module package's descriptor, and the rules a tenant's package must
//! follow (a restricted pod spec). Pure: text in, typed descriptor or every problem out.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_yaml_ng::Value;

mod bounded;
mod rules;

pub use crate::names::is_dns_label;
pub use bounded::{load_bounded, MAX_BYTES, MAX_DEPTH, MAX_VALUES};
pub use rules::bytes;
use rules::{check, forbidden};

pub const FILE: &str = ".section-proxy.yaml";
pub const DEFAULT_MOUNT: &str = "/opt/proxy_config";

/// Names and paths devpop itself puts into every module pod (see `rendering`): a package that
/// used one would render a pod the API server rejects (duplicate names or mount paths).
pub const RESERVED_CONTAINERS: &[&str] = &["prepare", "next-hop"];
pub const RESERVED_VOLUMES: &[&str] = &["devpop-config", "devpop-proxy", "devpop-prepare", "devpop-hosts"];
/// Where devpop mounts the package's `proxy/` files, `prepare.sh` and the pod's hosts file.
pub const PROXY_MOUNT: &str = "/opt/proxy";
pub const PREPARE_MOUNT: &str = "/opt/section";
pub const HOSTS_MOUNT: &str = "/etc/hosts";
pub const RESERVED_MOUNTS: &[&str] = &[PROXY_MOUNT, PREPARE_MOUNT, HOSTS_MOUNT];
/// The environment LimitRange's default memory limit (what a container without a limit gets)
/// and its maximum, in bytes: a request above the limit it ends up with is rejected.
pub const LIMIT_DEFAULT_MEMORY: &str = "256Mi";
pub const LIMIT_MAX_MEMORY: &str = "4Gi";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Descriptor {
    pub metadata: Metadata,
    pub spec: PodSpec,
    #[serde(default)]
    pub hpa: Option<Hpa>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Metadata {
    /// `module:version`, what `proxychain[].image` refers to.
    pub name: String,
    /// The container image every container of the module runs.
    pub image: String,
    /// The container that listens on :80.
    pub http_container: String,
    #[serde(default)]
    pub memory_container: Option<String>,
    #[serde(default = "default_mount")]
    pub configuration_mount_path: String,
    #[serde(default)]
    pub logs: Option<Logs>,
    #[serde(default)]
    pub metrics: Option<MetricsEndpoint>,
    /// An HTTP path on :80 of the http container that answers 2xx when the module can serve:
    /// it becomes the readiness probe (without it, a TCP connect to :80).
    #[serde(default)]
    pub health_check_path: Option<String>,
}

fn default_mount() -> String {
    DEFAULT_MOUNT.to_owned()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Logs {
    #[serde(default)]
    pub handler: Option<String>,
    #[serde(default)]
    pub http: Option<LogStream>,
    #[serde(default)]
    pub additional: Vec<NamedLogStream>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LogStream {
    pub container: String,
    pub stream: Stream,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NamedLogStream {
    pub name: String,
    pub container: String,
    pub stream: Stream,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    Stdout,
    Stderr,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MetricsEndpoint {
    pub path: String,
    pub port: u16,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PodSpec {
    pub containers: Vec<Container>,
    #[serde(default)]
    pub volumes: Vec<Volume>,
    /// The user the module's containers run as. Without it the image's own user runs, with the
    /// capabilities Pod Security baseline allows; `runAsNonRoot: true` runs the module
    /// restricted (no capabilities at all).
    #[serde(default)]
    pub security_context: Option<RunAs>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RunAs {
    #[serde(default)]
    pub run_as_user: Option<i64>,
    #[serde(default)]
    pub run_as_group: Option<i64>,
    #[serde(default)]
    pub run_as_non_root: Option<bool>,
}

impl PodSpec {
    /// Whether the module declared that it runs as non-root (and so can run restricted).
    pub fn runs_as_non_root(&self) -> bool {
        self.security_context.as_ref().is_some_and(|s| s.run_as_non_root == Some(true))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Container {
    pub name: String,
    #[serde(default)]
    pub command: Vec<String>,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub resources: Resources,
    #[serde(default)]
    pub env: Vec<EnvVar>,
    #[serde(default)]
    pub volume_mounts: Vec<VolumeMount>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Resources {
    #[serde(default)]
    pub requests: BTreeMap<String, Quantity>,
    #[serde(default)]
    pub limits: BTreeMap<String, Quantity>,
}

/// A Kubernetes quantity (`100m`, `128Mi`, `1`), written as a string or a number.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Quantity {
    Text(String),
    Int(u64),
    Float(f64),
}

impl Quantity {
    pub fn as_string(&self) -> String {
        match self {
            Quantity::Text(s) => s.clone(),
            Quantity::Int(n) => n.to_string(),
            Quantity::Float(f) => f.to_string(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EnvVar {
    pub name: String,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VolumeMount {
    pub name: String,
    pub mount_path: String,
    #[serde(default)]
    pub read_only: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Volume {
    pub name: String,
    #[serde(default)]
    pub empty_dir: Option<EmptyDir>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EmptyDir {
    #[serde(default)]
    pub size_limit: Option<String>,
    #[serde(default)]
    pub medium: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Hpa {
    #[serde(default = "one")]
    pub min_replicas: u32,
    pub max_replicas: u32,
    #[serde(default = "seventy", rename = "targetCPUUtilizationPercentage")]
    pub target_cpu_utilization_percentage: u32,
}

fn one() -> u32 {
    1
}

fn seventy() -> u32 {
    70
}

impl Descriptor {
    /// The module part of `metadata.name`.
    pub fn module(&self) -> &str {
        self.metadata.name.split_once(':').map_or(&self.metadata.name, |(m, _)| m)
    }

    pub fn version(&self) -> &str {
        self.metadata.name.split_once(':').map_or("", |(_, v)| v)
    }
}

/// Parses and checks a descriptor; on failure, every problem found, each naming its place.
pub fn parse(text: &str) -> Result<Descriptor, Vec<String>> {
    let value = load_bounded(text).map_err(|e| vec![format!("{FILE}: {e}")])?;
    let mut problems = Vec::new();
    if let Some(spec) = value.get("spec") {
        forbidden(spec, "spec", &mut problems);
        if let Some(volumes) = spec.get("volumes").and_then(Value::as_sequence) {
            for (i, v) in volumes.iter().enumerate() {
                for key in v.as_mapping().into_iter().flat_map(|m| m.keys()).filter_map(Value::as_str) {
                    if key != "name" && key != "emptyDir" {
                        problems.push(format!(
                            "{FILE}: spec.volumes[{i}].{key}: only emptyDir volumes are allowed; remove {key}"
                        ));
                    }
                }
            }
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    let d: Descriptor = serde_yaml_ng::from_value(value).map_err(|e| vec![format!("{FILE}: {e}")])?;
    check(&d, &mut problems);
    if problems.is_empty() {
        Ok(d)
    } else {
        Err(problems)
    }
}

#[cfg(test)]
mod tests;
