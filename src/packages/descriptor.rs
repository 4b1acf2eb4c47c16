//! `.section-proxy.yaml`: a module package's descriptor, and the rules a tenant's package must
//! follow (a restricted pod spec). Pure: text in, typed descriptor or every problem out.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_yaml_ng::Value;

pub const FILE: &str = ".section-proxy.yaml";
pub const DEFAULT_MOUNT: &str = "/opt/proxy_config";

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
    if !crate::validation::config::is_package_ref(&m.name) {
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
    }
    for (i, c) in d.spec.containers.iter().enumerate() {
        let at = format!("spec.containers[{i}]");
        if !is_dns_label(&c.name) {
            problem(format!("{at}.name {:?}: use lower-case letters, digits and '-' (at most 63)", c.name));
        }
        if containers.iter().filter(|n| **n == c.name).count() > 1 {
            problem(format!("{at}.name {:?}: two containers share this name", c.name));
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
            if vm.mount_path.trim_end_matches('/') == m.configuration_mount_path.trim_end_matches('/') {
                problem(format!(
                    "{at}.volumeMounts[{j}].mountPath {:?}: the module's config is mounted there",
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

/// An RFC 1123 label: what Kubernetes accepts as a container or volume name.
pub fn is_dns_label(s: &str) -> bool {
    (1..=63).contains(&s.len())
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
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
}
