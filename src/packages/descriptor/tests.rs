//! The descriptor's unit tests.

use super::*;

const EXAMPLE: &str = include_str!("../../../templates/packages/example-simple/.section-proxy.yaml");
const CACHE: &str = include_str!("../../../templates/packages/edge-cache/.section-proxy.yaml");

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
    let p =
        problems(&EXAMPLE.replace("configurationMountPath: /opt/proxy_config", "configurationMountPath: /opt/proxy"));
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
    assert!(parse(&EXAMPLE.replace("memory: 32Mi", "memory: 1Gi").replace("memory: 64Mi", "memory: 1024Mi")).is_ok());
}

#[test]
fn run_as_user_and_a_health_path_may_be_declared_and_are_checked() {
    let good = EXAMPLE
        .replace("  metrics:\n", "  healthCheckPath: /healthz\n  metrics:\n")
        .replace("hpa:", "  securityContext:\n    runAsUser: 101\n    runAsGroup: 101\n    runAsNonRoot: true\nhpa:");
    let d = parse(&good).unwrap();
    assert!(d.spec.runs_as_non_root());
    assert_eq!(d.metadata.health_check_path.as_deref(), Some("/healthz"));
    assert_eq!(d.spec.security_context.as_ref().unwrap().run_as_user, Some(101));
    let p = problems(&good.replace("runAsUser: 101", "runAsUser: 0").replace("/healthz", "healthz"));
    assert!(p.contains("spec.securityContext.runAsUser 0 with runAsNonRoot: true"), "{p}");
    assert!(p.contains("metadata.healthCheckPath \"healthz\": use an absolute URL path"), "{p}");
    // Capabilities stay out of a package's hands.
    let p = problems(&good.replace("runAsNonRoot: true", "runAsNonRoot: true\n    capabilities: {add: [SYS_ADMIN]}"));
    assert!(p.contains("spec.securityContext.capabilities: not allowed"), "{p}");
}

#[test]
fn volume_and_container_names_must_be_dns_labels() {
    let p = problems(&CACHE.replace("name: shm", "name: Bad_Name"));
    assert!(
        p.contains("spec.volumes[0].name \"Bad_Name\": use lower-case letters, digits and '-' (at most 63)"),
        "{p}"
    );
    let bad = EXAMPLE
        .replace("- name: example\n", "- name: Bad_Name\n")
        .replace("httpContainer: example", "httpContainer: Bad_Name");
    let p = problems(&bad);
    assert!(
        p.contains("spec.containers[0].name \"Bad_Name\": use lower-case letters, digits and '-' (at most 63)"),
        "{p}"
    );
}
