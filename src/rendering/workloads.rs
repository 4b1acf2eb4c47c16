//! The objects every hop is made of: content-addressed ConfigMaps, Services, Deployments,
//! PodDisruptionBudgets, and the security contexts of their pods.

use super::*;

impl Renderer<'_> {
    /// One replica may be evicted at a time (a node drain then waits for its replacement).
    pub(super) fn pdb(&self, name: &str) -> Object {
        Object::PodDisruptionBudget(Box::new(PodDisruptionBudget {
            metadata: self.meta(name, Some(name)),
            spec: Some(PodDisruptionBudgetSpec {
                max_unavailable: Some(IntOrString::Int(1)),
                selector: Some(LabelSelector { match_labels: Some(selector(name)), ..Default::default() }),
                ..Default::default()
            }),
            ..Default::default()
        }))
    }

    /// An immutable ConfigMap named `<name>-<hash of its files>`, and the items that mount it.
    pub(super) fn config_map(&self, name: &str, hop: Option<&str>, files: &Files) -> (Object, Vec<KeyToPath>) {
        let mut data = BTreeMap::new();
        let mut binary = BTreeMap::new();
        let mut items = Vec::new();
        for (path, content) in files {
            let mut key: String =
                path.chars().map(|c| if c.is_ascii_alphanumeric() || "-._".contains(c) { c } else { '_' }).collect();
            while data.contains_key(&key) || binary.contains_key(&key) {
                key.push('_');
            }
            match std::str::from_utf8(content) {
                Ok(text) => data.insert(key.clone(), text.to_owned()),
                Err(_) => binary.insert(key.clone(), ByteString(content.clone())).map(|_| String::new()),
            };
            items.push(KeyToPath { key, path: path.clone(), mode: None });
        }
        let parts: Vec<&[u8]> = files.iter().flat_map(|(k, v)| [k.as_bytes(), v.as_slice()]).collect();
        let mut metadata = self.meta(&format!("{name}-{}", content_hash(&parts)), hop);
        metadata.labels.get_or_insert_with(BTreeMap::new).insert(LABEL_CONFIG_OF.into(), name.into());
        let cm = ConfigMap {
            metadata,
            data: (!data.is_empty()).then_some(data),
            binary_data: (!binary.is_empty()).then_some(binary),
            immutable: Some(true),
        };
        (Object::ConfigMap(Box::new(cm)), items)
    }

    pub(super) fn service(&self, name: &str, target: i32) -> Object {
        Object::Service(Box::new(Service {
            metadata: self.meta(name, Some(name)),
            spec: Some(ServiceSpec {
                type_: Some("ClusterIP".into()),
                selector: Some(selector(name)),
                ports: Some(vec![ServicePort {
                    name: Some("http".into()),
                    port: 80,
                    target_port: Some(IntOrString::Int(target)),
                    protocol: Some("TCP".into()),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        }))
    }

    pub(super) fn deployment(
        &self,
        name: &str,
        replicas: Option<i32>,
        config_hash: String,
        pod: PodSpec,
        annotations: BTreeMap<String, String>,
    ) -> Object {
        let mut meta = self.meta(name, Some(name));
        if !annotations.is_empty() {
            meta.annotations = Some(annotations);
        }
        // A commit that changes nothing of a module must not restart it: the config hash rolls
        // pods when their config changes.
        let mut pod_labels = self.labels();
        pod_labels.insert(LABEL_HOP.into(), name.into());
        Object::Deployment(Box::new(Deployment {
            metadata: meta,
            spec: Some(DeploymentSpec {
                replicas,
                revision_history_limit: Some(5),
                progress_deadline_seconds: Some(300),
                selector: LabelSelector { match_labels: Some(selector(name)), ..Default::default() },
                template: PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: Some(pod_labels),
                        annotations: Some(string_map([(ANNOTATION_CONFIG_HASH, config_hash)])),
                        ..Default::default()
                    }),
                    spec: Some(pod),
                },
                ..Default::default()
            }),
            ..Default::default()
        }))
    }

    /// A module container: restricted when the package runs as non-root; else the image's own
    /// user with the capabilities Pod Security baseline allows (what a root-started nginx or
    /// varnish needs to chown its dirs and switch to its worker user), never NET_RAW.
    pub(super) fn module_security(&self, d: &Descriptor) -> SecurityContext {
        let run_as = d.spec.security_context.clone().unwrap_or_default();
        if d.spec.runs_as_non_root() {
            // Restricted, but the image keeps a writable root (restricted does not require a
            // read-only one, and most images write under /var).
            return SecurityContext {
                run_as_user: run_as.run_as_user,
                run_as_group: run_as.run_as_group,
                read_only_root_filesystem: None,
                ..restricted(None)
            };
        }
        SecurityContext {
            allow_privilege_escalation: Some(false),
            privileged: Some(false),
            run_as_user: run_as.run_as_user,
            run_as_group: run_as.run_as_group,
            run_as_non_root: run_as.run_as_non_root,
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                add: Some(BASELINE_CAPABILITIES.iter().map(|c| c.to_string()).collect()),
            }),
            ..Default::default()
        }
    }

    /// Every pod: the runtime's seccomp profile; module pods also bind :80 without a capability
    /// (the `ip_unprivileged_port_start` sysctl, which Pod Security baseline allows).
    pub(super) fn pod_security(&self, low_ports: bool) -> PodSecurityContext {
        PodSecurityContext {
            seccomp_profile: Some(SeccompProfile { type_: "RuntimeDefault".into(), localhost_profile: None }),
            sysctls: low_ports
                .then(|| vec![Sysctl { name: "net.ipv4.ip_unprivileged_port_start".into(), value: "0".into() }]),
            ..Default::default()
        }
    }
}
