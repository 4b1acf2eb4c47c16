//! `.section-proxy.yaml`: a module package's descriptor, and the rules a tenant's package must
//! follow (a restricted pod spec). Pure: text in, typed descriptor or every problem out.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_yaml_ng::Value;

pub use crate::names::is_dns_label;

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

/// Keys a tenant's package must not set, wherever they appear, and why.
const FORBIDDEN: &[(&str, &str)] = &[
    ("serviceAccountName", "modules run with no Kubernetes API access"),
    ("serviceAccount", "modules run with no Kubernetes API access"),
    ("automountServiceAccountToken", "modules run with no Kubernetes API access"),
    ("hostNetwork", "modules share no host namespaces"),
    ("hostPID", "modules share no host namespaces"),
    ("hostIPC", "modules share no host namespaces"),
    ("hostPort", "modules are reached through their Service only"),
    ("privileged", "modules run unprivileged"),
    ("allowPrivilegeEscalation", "modules run unprivileged"),
    ("capabilities", "modules run unprivileged"),
    ("valueFrom", "env values must be plain values (no secrets or field references)"),
    ("envFrom", "env values must be plain values (no secrets or field references)"),
    ("nodeName", "devpop schedules modules"),
    ("image", "every container runs metadata.image"),
];

/// Bounds on a descriptor's YAML, checked while it is read: a real descriptor is a few KiB, a
/// few hundred values, a dozen levels deep. Aliases count as what they expand to, so a short
/// file that expands to millions of values (or nests hundreds deep) is refused after reading
/// `MAX_VALUES` of them, in microseconds.
pub const MAX_BYTES: usize = 64 << 10;
pub const MAX_DEPTH: usize = 32;
pub const MAX_VALUES: usize = 10_000;

/// Reads YAML into a [`Value`] within [`MAX_BYTES`], [`MAX_DEPTH`] and [`MAX_VALUES`].
pub fn load_bounded(text: &str) -> Result<Value, String> {
    use serde::de::DeserializeSeed;
    if text.len() > MAX_BYTES {
        return Err(format!("{} bytes, over the {MAX_BYTES} a descriptor may have", text.len()));
    }
    let values = std::cell::Cell::new(0);
    Bounded { values: &values, depth: 0 }
        .deserialize(serde_yaml_ng::Deserializer::from_str(text))
        .map_err(|e| format!("not valid YAML: {e}"))
}

/// Builds a [`Value`] as the YAML deserializer walks the document (aliases replayed), counting
/// values and depth as it goes.
struct Bounded<'a> {
    values: &'a std::cell::Cell<usize>,
    depth: usize,
}

impl Bounded<'_> {
    fn count<E: serde::de::Error>(&self) -> Result<(), E> {
        let n = self.values.get() + 1;
        self.values.set(n);
        if n > MAX_VALUES {
            return Err(E::custom(format_args!(
                "more than {MAX_VALUES} values (aliases count as what they expand to); a descriptor is small"
            )));
        }
        Ok(())
    }

    fn nested<E: serde::de::Error>(&self) -> Result<Bounded<'_>, E> {
        self.count()?;
        if self.depth >= MAX_DEPTH {
            return Err(E::custom(format_args!("nested more than {MAX_DEPTH} levels deep")));
        }
        Ok(Bounded { values: self.values, depth: self.depth + 1 })
    }
}

impl<'de> serde::de::DeserializeSeed<'de> for Bounded<'_> {
    type Value = Value;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Bounded<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a YAML value")
    }
    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Value, E> {
        self.count()?;
        Ok(Value::Bool(v))
    }
    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Value, E> {
        self.count()?;
        Ok(Value::Number(v.into()))
    }
    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Value, E> {
        self.count()?;
        Ok(Value::Number(v.into()))
    }
    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Value, E> {
        self.count()?;
        Ok(Value::Number(v.into()))
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Value, E> {
        self.count()?;
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Value, E> {
        self.count()?;
        Ok(Value::String(v))
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<Value, E> {
        self.count()?;
        Ok(Value::Null)
    }
    fn visit_none<E: serde::de::Error>(self) -> Result<Value, E> {
        self.visit_unit()
    }
    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let inner = self.nested()?;
        let mut items = Vec::new();
        while let Some(v) = seq.next_element_seed(Bounded { values: inner.values, depth: inner.depth })? {
            items.push(v);
        }
        Ok(Value::Sequence(items))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        use serde::de::Error;
        let inner = self.nested()?;
        let mut out = serde_yaml_ng::Mapping::new();
        while let Some(k) = map.next_key_seed(Bounded { values: inner.values, depth: inner.depth })? {
            let v = map.next_value_seed(Bounded { values: inner.values, depth: inner.depth })?;
            if out.insert(k, v).is_some() {
                return Err(A::Error::custom("duplicate key"));
            }
        }
        Ok(Value::Mapping(out))
    }
    fn visit_enum<A: serde::de::EnumAccess<'de>>(self, _: A) -> Result<Value, A::Error> {
        use serde::de::Error;
        Err(A::Error::custom("YAML tags (!name) are not allowed in a descriptor"))
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

fn forbidden(value: &Value, path: &str, problems: &mut Vec<String>) {
    match value {
        Value::Mapping(map) => {
            for (k, v) in map {
                let Some(key) = k.as_str() else { continue };
                let here = format!("{path}.{key}");
                if let Some((_, why)) = FORBIDDEN.iter().find(|(f, _)| *f == key) {
                    problems.push(format!("{FILE}: {here}: not allowed in a module package ({why}); remove it"));
                } else {
                    forbidden(v, &here, problems);
                }
            }
        }
        Value::Sequence(items) => {
            for (i, v) in items.iter().enumerate() {
                forbidden(v, &format!("{path}[{i}]"), problems);
            }
        }
        _ => {}
    }
}

fn check(d: &Descriptor, problems: &mut Vec<String>) {
    let mut problem = |s: String| problems.push(format!("{FILE}: {s}"));
    let m = &d.metadata;
    if !crate::names::is_package_ref(&m.name) {
        problem(format!("metadata.name {:?}: use module:version, e.g. example-simple:1.0.0", m.name));
    }
    if m.image.is_empty() || m.image.chars().any(|c| c.is_whitespace() || c.is_control()) {
        problem(format!("metadata.image {:?}: must be a container image reference", m.image));
    }
    if !m.configuration_mount_path.starts_with('/') || m.configuration_mount_path.contains("..") {
        problem(format!("metadata.configurationMountPath {:?}: must be an absolute path", m.configuration_mount_path));
    }
    let containers: Vec<&str> = d.spec.containers.iter().map(|c| c.name.as_str()).collect();
    if containers.is_empty() {
        problem("spec.containers: a module needs at least one container".into());
    }
    let mut named = |what: String, name: &str| {
        if !containers.contains(&name) {
            problems.push(format!(
                "{FILE}: {what} {name:?} is not a container of spec.containers ({})",
                containers.join(", ")
            ));
        }
    };
    named("metadata.httpContainer".into(), &m.http_container);
    if let Some(mc) = &m.memory_container {
        named("metadata.memoryContainer".into(), mc);
    }
    if let Some(logs) = &m.logs {
        if let Some(http) = &logs.http {
            named("metadata.logs.http.container".into(), &http.container);
        }
        for (i, a) in logs.additional.iter().enumerate() {
            named(format!("metadata.logs.additional[{i}].container"), &a.container);
        }
    }
    let mut problem = |s: String| problems.push(format!("{FILE}: {s}"));
    if let Some(path) = &m.health_check_path {
        if !path.starts_with('/') || path.len() > 1024 || path.chars().any(|c| c.is_whitespace() || c.is_control()) {
            problem(format!("metadata.healthCheckPath {path:?}: use an absolute URL path, e.g. /healthz"));
        }
    }
    if let Some(sc) = &d.spec.security_context {
        if sc.run_as_user.is_some_and(|u| !(0..=2_147_483_647).contains(&u)) {
            problem("spec.securityContext.runAsUser: use a uid from 0 to 2147483647".into());
        }
        if sc.run_as_group.is_some_and(|g| !(0..=2_147_483_647).contains(&g)) {
            problem("spec.securityContext.runAsGroup: use a gid from 0 to 2147483647".into());
        }
        if sc.run_as_non_root == Some(true) && sc.run_as_user == Some(0) {
            problem(
                "spec.securityContext.runAsUser 0 with runAsNonRoot: true: the pod would never start; use a non-zero uid".into(),
            );
        }
    }
    if RESERVED_MOUNTS.iter().any(|r| same_path(r, &m.configuration_mount_path)) {
        problem(format!(
            "metadata.configurationMountPath {:?}: devpop mounts its own files there ({}); choose another path, e.g. {DEFAULT_MOUNT}",
            m.configuration_mount_path,
            RESERVED_MOUNTS.join(", ")
        ));
    }
    if let Some(metrics) = &m.metrics {
        if metrics.port == 0 || metrics.port == 80 {
            problem(format!("metadata.metrics.port {}: use a port other than 0 and 80", metrics.port));
        }
        if !metrics.path.starts_with('/') {
            problem(format!("metadata.metrics.path {:?}: must start with /", metrics.path));
        }
    }
    let volumes: Vec<&str> = d.spec.volumes.iter().map(|v| v.name.as_str()).collect();
    for (i, v) in d.spec.volumes.iter().enumerate() {
        if !is_dns_label(&v.name) {
            problem(format!(
                "spec.volumes[{i}].name {:?}: use lower-case letters, digits and '-' (at most 63)",
                v.name
            ));
        }
        if volumes.iter().filter(|n| **n == v.name).count() > 1 {
            problem(format!("spec.volumes[{i}].name {:?}: declared twice", v.name));
        }
        if RESERVED_VOLUMES.contains(&v.name.as_str()) {
            problem(format!(
                "spec.volumes[{i}].name {:?}: devpop adds a volume of this name to every module pod ({}); rename the volume",
                v.name,
                RESERVED_VOLUMES.join(", ")
            ));
        }
    }
    for (i, c) in d.spec.containers.iter().enumerate() {
        let at = format!("spec.containers[{i}]");
        if !is_dns_label(&c.name) {
            problem(format!("{at}.name {:?}: use lower-case letters, digits and '-' (at most 63)", c.name));
        }
        if containers.iter().filter(|n| **n == c.name).count() > 1 {
            problem(format!("{at}.name {:?}: two containers share this name", c.name));
        }
        if RESERVED_CONTAINERS.contains(&c.name.as_str()) {
            problem(format!(
                "{at}.name {:?}: devpop runs an init container of this name in every module pod ({}); rename the container",
                c.name,
                RESERVED_CONTAINERS.join(", ")
            ));
        }
        let memory = |map: &BTreeMap<String, Quantity>| map.get("memory").and_then(|q| bytes(&q.as_string()));
        let (request, limit) = (memory(&c.resources.requests), memory(&c.resources.limits));
        let default_limit = bytes(LIMIT_DEFAULT_MEMORY).expect("a quantity");
        let max = bytes(LIMIT_MAX_MEMORY).expect("a quantity");
        match (request, limit) {
            (Some(r), Some(l)) if r > l => problem(format!(
                "{at}.resources.requests.memory: more than resources.limits.memory; lower the request or raise the limit"
            )),
            (Some(r), None) if r > default_limit => problem(format!(
                "{at}.resources.requests.memory: above {LIMIT_DEFAULT_MEMORY}, the memory limit a container gets when it sets none; set resources.limits.memory too (at most {LIMIT_MAX_MEMORY})"
            )),
            _ => {}
        }
        if limit.is_some_and(|l| l > max) || request.is_some_and(|r| r > max) {
            problem(format!(
                "{at}.resources: memory above {LIMIT_MAX_MEMORY}, the most one container may have; lower it"
            ));
        }
        for (kind, map) in [("requests", &c.resources.requests), ("limits", &c.resources.limits)] {
            for (res, q) in map {
                if !["cpu", "memory", "ephemeral-storage"].contains(&res.as_str()) {
                    problem(format!("{at}.resources.{kind}.{res}: only cpu, memory and ephemeral-storage can be set"));
                } else if !is_quantity(&q.as_string()) {
                    problem(format!(
                        "{at}.resources.{kind}.{res} {:?}: not a quantity (e.g. 100m, 128Mi)",
                        q.as_string()
                    ));
                }
            }
        }
        for (j, e) in c.env.iter().enumerate() {
            let ok = !e.name.is_empty()
                && !e.name.as_bytes()[0].is_ascii_digit()
                && e.name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b));
            if !ok {
                problem(format!("{at}.env[{j}].name {:?}: use letters, digits and '_'", e.name));
            }
        }
        for (j, vm) in c.volume_mounts.iter().enumerate() {
            if !volumes.contains(&vm.name.as_str()) {
                problem(format!("{at}.volumeMounts[{j}].name {:?}: no such volume in spec.volumes", vm.name));
            }
            if !vm.mount_path.starts_with('/') || vm.mount_path.contains("..") {
                problem(format!("{at}.volumeMounts[{j}].mountPath {:?}: must be an absolute path", vm.mount_path));
            }
            if same_path(&vm.mount_path, &m.configuration_mount_path) {
                problem(format!(
                    "{at}.volumeMounts[{j}].mountPath {:?}: the module's config is mounted there",
                    vm.mount_path
                ));
            }
            if RESERVED_MOUNTS.iter().any(|r| same_path(r, &vm.mount_path)) {
                problem(format!(
                    "{at}.volumeMounts[{j}].mountPath {:?}: devpop mounts its own files there ({}); mount the volume elsewhere",
                    vm.mount_path,
                    RESERVED_MOUNTS.join(", ")
                ));
            }
            if c.volume_mounts[..j].iter().any(|other| same_path(&other.mount_path, &vm.mount_path)) {
                problem(format!(
                    "{at}.volumeMounts[{j}].mountPath {:?}: mounted twice in this container",
                    vm.mount_path
                ));
            }
        }
    }
    if let Some(hpa) = &d.hpa {
        if hpa.min_replicas < 1 || hpa.min_replicas > hpa.max_replicas || hpa.max_replicas > 100 {
            problem(format!(
                "hpa: need 1 <= minReplicas ({}) <= maxReplicas ({}) <= 100",
                hpa.min_replicas, hpa.max_replicas
            ));
        }
        if !(1..=100).contains(&hpa.target_cpu_utilization_percentage) {
            problem(format!(
                "hpa.targetCPUUtilizationPercentage {}: use 1 to 100",
                hpa.target_cpu_utilization_percentage
            ));
        }
    }
}

/// Two mount paths Kubernetes treats as the same place.
fn same_path(a: &str, b: &str) -> bool {
    a.trim_end_matches('/') == b.trim_end_matches('/')
}

/// A quantity in bytes (memory), when it is one.
pub fn bytes(s: &str) -> Option<f64> {
    if !is_quantity(s) {
        return None;
    }
    let num_end = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (num, suffix) = s.split_at(num_end);
    let factor = match suffix {
        "" => 1.0,
        "m" => 0.001,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    num.parse::<f64>().ok().map(|n| n * factor)
}

fn is_quantity(s: &str) -> bool {
    let num_end = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (num, suffix) = s.split_at(num_end);
    !num.is_empty()
        && num.parse::<f64>().is_ok()
        && ["", "m", "k", "M", "G", "T", "Ki", "Mi", "Gi", "Ti"].contains(&suffix)
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../../tests/fixtures/packages/example-simple/.section-proxy.yaml");
    const CACHE: &str = include_str!("../../tests/fixtures/packages/edge-cache/.section-proxy.yaml");

    #[test]
    fn fixture_packages_parse() {
        let d = parse(EXAMPLE).unwrap();
        assert_eq!((d.module(), d.version()), ("example-simple", "1.0.0"));
        assert_eq!(d.metadata.configuration_mount_path, "/opt/proxy_config");
        assert_eq!(d.spec.containers[0].env[0].name, "PROXY_MODE");
        assert_eq!(d.hpa.as_ref().unwrap().max_replicas, 4);
        let c = parse(CACHE).unwrap();
        assert_eq!(c.spec.containers[1].command, ["/usr/local/bin/log-shipper", "--format=json"]);
        assert_eq!(c.spec.volumes[0].name, "shm");
    }

    #[test]
    fn forbidden_pod_fields_are_refused_with_the_reason() {
        let bad = EXAMPLE.replace(
            "spec:\n  containers:\n    - name: example\n",
            "spec:\n  serviceAccountName: admin\n  hostNetwork: true\n  containers:\n    - name: example\n      securityContext:\n        privileged: true\n",
        )
        .replace(
            "          value: edge\n",
            "          value: edge\n        - name: X\n          valueFrom:\n            secretKeyRef: {name: s, key: k}\n",
        )
        .replace("hpa:", "  volumes:\n    - name: host\n      hostPath: {path: /}\nhpa:");
        let problems = parse(&bad).unwrap_err().join("\n");
        for want in [
            "spec.serviceAccountName: not allowed in a module package (modules run with no Kubernetes API access)",
            "spec.hostNetwork: not allowed",
            "spec.containers[0].securityContext.privileged: not allowed in a module package (modules run unprivileged)",
            "spec.containers[0].env[1].valueFrom: not allowed",
            "spec.volumes[0].hostPath: only emptyDir volumes are allowed",
        ] {
            assert!(problems.contains(want), "no {want:?} in:\n{problems}");
        }
    }

    #[test]
    fn references_between_fields_are_checked() {
        let bad = EXAMPLE
            .replace("httpContainer: example", "httpContainer: web")
            .replace("cpu: 50m", "cpu: lots")
            .replace("name: example-simple:1.0.0", "name: example-simple");
        let problems = parse(&bad).unwrap_err().join("\n");
        assert!(
            problems.contains("metadata.httpContainer \"web\" is not a container of spec.containers (example)"),
            "{problems}"
        );
        assert!(problems.contains("resources.requests.cpu \"lots\": not a quantity"), "{problems}");
        assert!(problems.contains("metadata.name \"example-simple\": use module:version"), "{problems}");
    }

    #[test]
    fn unknown_fields_are_named() {
        let problems = parse(&EXAMPLE.replace("hpa:", "hpaa:")).unwrap_err().join("\n");
        assert!(problems.contains("unknown field `hpaa`"), "{problems}");
    }

    fn problems(text: &str) -> String {
        parse(text).unwrap_err().join("\n")
    }

    #[test]
    fn a_container_named_like_devpops_init_containers_is_refused_with_the_fix() {
        for reserved in ["prepare", "next-hop"] {
            let bad = EXAMPLE
                .replace("- name: example\n", &format!("- name: {reserved}\n"))
                .replace("httpContainer: example", &format!("httpContainer: {reserved}"));
            let p = problems(&bad);
            assert!(
                p.contains(&format!(
                    "spec.containers[0].name \"{reserved}\": devpop runs an init container of this name in every module pod (prepare, next-hop); rename the container"
                )),
                "{p}"
            );
        }
    }

    #[test]
    fn a_volume_named_like_devpops_volumes_is_refused_with_the_fix() {
        for reserved in RESERVED_VOLUMES {
            let bad = CACHE.replace("name: shm", &format!("name: {reserved}"));
            let p = problems(&bad);
            assert!(
                p.contains(&format!(
                    "spec.volumes[0].name \"{reserved}\": devpop adds a volume of this name to every module pod"
                )),
                "{p}"
            );
            assert!(p.contains("rename the volume"), "{p}");
        }
    }

    #[test]
    fn a_mount_at_devpops_mount_paths_is_refused_with_the_fix() {
        for reserved in ["/opt/proxy", "/opt/proxy/", "/opt/section", "/etc/hosts"] {
            let bad = CACHE.replace("mountPath: /var/lib/cache", &format!("mountPath: {reserved}"));
            let p = problems(&bad);
            assert!(
                p.contains(&format!(
                    "spec.containers[0].volumeMounts[0].mountPath \"{reserved}\": devpop mounts its own files there"
                )) && p.contains("mount the volume elsewhere"),
                "{p}"
            );
        }
        let p = problems(
            &EXAMPLE.replace("configurationMountPath: /opt/proxy_config", "configurationMountPath: /opt/proxy"),
        );
        assert!(p.contains("metadata.configurationMountPath \"/opt/proxy\": devpop mounts its own files there"), "{p}");
        let twice = CACHE.replace(
            "        - name: shm\n          mountPath: /var/lib/cache\n",
            "        - name: shm\n          mountPath: /var/lib/cache\n        - name: shm\n          mountPath: /var/lib/cache/\n",
        );
        assert!(
            problems(&twice).contains("volumeMounts[1].mountPath \"/var/lib/cache/\": mounted twice"),
            "{}",
            problems(&twice)
        );
    }

    #[test]
    fn a_memory_request_above_the_limit_it_gets_is_refused_with_the_fix() {
        // No limit: the LimitRange's default (256Mi) applies, so a 300Mi request is rejected.
        let no_limit = EXAMPLE
            .replace("          memory: 32Mi\n        limits:\n          memory: 64Mi\n", "          memory: 300Mi\n");
        let p = problems(&no_limit);
        assert!(
            p.contains("spec.containers[0].resources.requests.memory: above 256Mi, the memory limit a container gets when it sets none; set resources.limits.memory too"),
            "{p}"
        );
        // Over its own limit.
        let p = problems(&EXAMPLE.replace("memory: 32Mi", "memory: 65Mi"));
        assert!(
            p.contains(
                "resources.requests.memory: more than resources.limits.memory; lower the request or raise the limit"
            ),
            "{p}"
        );
        // Over the LimitRange maximum.
        let p = problems(&EXAMPLE.replace("memory: 64Mi", "memory: 5Gi"));
        assert!(p.contains("spec.containers[0].resources: memory above 4Gi"), "{p}");
        // At the default limit is fine; 1Gi = 1024Mi is compared in bytes.
        assert!(parse(&EXAMPLE.replace("memory: 32Mi", "memory: 64Mi")).is_ok());
        assert!(
            parse(&EXAMPLE.replace("memory: 32Mi", "memory: 1Gi").replace("memory: 64Mi", "memory: 1024Mi")).is_ok()
        );
    }

    #[test]
    fn run_as_user_and_a_health_path_may_be_declared_and_are_checked() {
        let good = EXAMPLE.replace("  metrics:\n", "  healthCheckPath: /healthz\n  metrics:\n").replace(
            "hpa:",
            "  securityContext:\n    runAsUser: 101\n    runAsGroup: 101\n    runAsNonRoot: true\nhpa:",
        );
        let d = parse(&good).unwrap();
        assert!(d.spec.runs_as_non_root());
        assert_eq!(d.metadata.health_check_path.as_deref(), Some("/healthz"));
        assert_eq!(d.spec.security_context.as_ref().unwrap().run_as_user, Some(101));
        let p = problems(&good.replace("runAsUser: 101", "runAsUser: 0").replace("/healthz", "healthz"));
        assert!(p.contains("spec.securityContext.runAsUser 0 with runAsNonRoot: true"), "{p}");
        assert!(p.contains("metadata.healthCheckPath \"healthz\": use an absolute URL path"), "{p}");
        // Capabilities stay out of a package's hands.
        let p =
            problems(&good.replace("runAsNonRoot: true", "runAsNonRoot: true\n    capabilities: {add: [SYS_ADMIN]}"));
        assert!(p.contains("spec.securityContext.capabilities: not allowed"), "{p}");
    }
}
