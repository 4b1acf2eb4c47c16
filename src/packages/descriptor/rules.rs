//! The rules a tenant's package must follow: keys it must not set anywhere, and the checks of
//! a parsed descriptor (names, references between fields, mounts, resources, probes).

use super::*;

/// Keys a tenant's package must not set, wherever they appear, and why.
pub(super) const FORBIDDEN: &[(&str, &str)] = &[
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

pub(super) fn forbidden(value: &Value, path: &str, problems: &mut Vec<String>) {
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

/// The names one list of a pod (its volumes, its containers) may hold.
struct NameRule {
    /// What the list's entries are.
    what: &'static str,
    /// What two entries of one name are told.
    twice: &'static str,
    /// Names devpop gives entries of this list in every module pod, and what it uses them for.
    reserved: &'static [&'static str],
    reserved_by: &'static str,
}

const VOLUME_NAMES: NameRule = NameRule {
    what: "volume",
    twice: "declared twice",
    reserved: RESERVED_VOLUMES,
    reserved_by: "devpop adds a volume of this name to every module pod",
};

const CONTAINER_NAMES: NameRule = NameRule {
    what: "container",
    twice: "two containers share this name",
    reserved: RESERVED_CONTAINERS,
    reserved_by: "devpop runs an init container of this name in every module pod",
};

/// The names of the list at `list`: each a DNS label, none twice, none that devpop uses itself.
fn list_names(list: &str, names: &[&str], rule: &NameRule, problem: &mut impl FnMut(String)) {
    for (i, name) in names.iter().enumerate() {
        let at = format!("{list}[{i}].name {name:?}");
        if !is_dns_label(name) {
            problem(format!("{at}: use lower-case letters, digits and '-' (at most 63)"));
        }
        if names.iter().filter(|n| *n == name).count() > 1 {
            problem(format!("{at}: {}", rule.twice));
        }
        if rule.reserved.contains(name) {
            problem(format!("{at}: {} ({}); rename the {}", rule.reserved_by, rule.reserved.join(", "), rule.what));
        }
    }
}

pub(super) fn check(d: &Descriptor, problems: &mut Vec<String>) {
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
    list_names("spec.volumes", &volumes, &VOLUME_NAMES, &mut problem);
    list_names("spec.containers", &containers, &CONTAINER_NAMES, &mut problem);
    for (i, c) in d.spec.containers.iter().enumerate() {
        let at = format!("spec.containers[{i}]");
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
pub(super) fn same_path(a: &str, b: &str) -> bool {
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

pub(super) fn is_quantity(s: &str) -> bool {
    let num_end = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (num, suffix) = s.split_at(num_end);
    !num.is_empty()
        && num.parse::<f64>().is_ok()
        && ["", "m", "k", "M", "G", "T", "Ki", "Mi", "Gi", "Ti"].contains(&suffix)
}
