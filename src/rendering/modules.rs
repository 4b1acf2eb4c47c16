//! The module hops: each proxychain entry's Deployment, Service, ConfigMaps and autoscaler,
//! and the `next-hop` init container that resolves the next hop inside the pod.

use super::*;

impl Renderer<'_> {
    /// The ConfigMap with the `next-hop` init container's script (one per namespace).
    pub(super) fn next_hop_script(&self) -> Object {
        let files: Files = [("next-hop.sh".to_owned(), NEXT_HOP_SCRIPT.as_bytes().to_vec())].into();
        self.config_map(NEXT_HOP_CONFIGMAP, None, &files).0
    }

    /// The init container that writes the pod's hosts file with `next-hop` (see
    /// templates/pod/next-hop.sh): devpop's pinned proxy image (Alpine: sh and getent), run
    /// restricted.
    pub(super) fn next_hop_container(&self, next: &str) -> Container {
        let env = |name: &str, value: String| EnvVar { name: name.into(), value: Some(value), value_from: None };
        Container {
            name: "next-hop".into(),
            image: Some(self.input.settings.proxy_image.clone()),
            command: Some(vec!["/bin/sh".into(), "/devpop/next-hop/next-hop.sh".into()]),
            env: Some(vec![
                env("NEXT_HOP_SERVICE", self.input.settings.service_host(next, &self.ns)),
                env("NEXT_HOP_HOSTS_OUT", format!("{NEXT_HOP_HOSTS_DIR}/hosts")),
                env("NEXT_HOP_HOSTS_IN", "/etc/hosts".into()),
                env("NEXT_HOP_ATTEMPTS", "60".into()),
            ]),
            volume_mounts: Some(vec![
                VolumeMount {
                    name: "devpop-next-hop".into(),
                    mount_path: "/devpop/next-hop".into(),
                    read_only: Some(true),
                    ..Default::default()
                },
                VolumeMount {
                    name: "devpop-hosts".into(),
                    mount_path: NEXT_HOP_HOSTS_DIR.into(),
                    ..Default::default()
                },
            ]),
            resources: Some(ResourceRequirements {
                requests: Some([("cpu".to_owned(), q("10m")), ("memory".to_owned(), q("8Mi"))].into()),
                limits: Some([("memory".to_owned(), q("32Mi"))].into()),
                ..Default::default()
            }),
            security_context: Some(restricted(Some(NOBODY))),
            ..Default::default()
        }
    }

    pub(super) fn module(&self, position: usize, m: &ModuleInput, next: &str) -> Result<Vec<Object>, RenderError> {
        let name = module_object_name(position, &m.name);
        let size: usize = m.config_files.values().map(Vec::len).sum();
        if size > MAX_CONFIGMAP_BYTES {
            return Err(RenderError::ConfigTooLarge { module: m.name.clone(), bytes: size });
        }
        let d = &m.descriptor;
        let (config_cm, config_items) = self.config_map(&format!("{name}-config"), Some(&name), &m.config_files);
        let (proxy_cm, proxy_items) = self.config_map(&format!("{name}-proxy"), Some(&name), &m.proxy_files);
        let prepare_files: Files = [("prepare.sh".to_owned(), m.prepare_sh.clone())].into();
        let (prepare_cm, prepare_items) = self.config_map(&format!("{name}-prepare"), Some(&name), &prepare_files);
        let next_hop_cm = self.next_hop_script();

        let cm_volume = |vol: &str, cm: &str, items: Vec<KeyToPath>, mode: i32| Volume {
            name: vol.into(),
            config_map: Some(ConfigMapVolumeSource {
                name: cm.into(),
                items: Some(items),
                default_mode: Some(mode),
                optional: Some(false),
            }),
            ..Default::default()
        };
        let mut volumes = vec![
            cm_volume("devpop-config", config_cm.name(), config_items, 0o444),
            cm_volume("devpop-proxy", proxy_cm.name(), proxy_items, 0o444),
            cm_volume("devpop-prepare", prepare_cm.name(), prepare_items, 0o555),
            cm_volume(
                "devpop-next-hop",
                next_hop_cm.name(),
                vec![KeyToPath { key: "next-hop.sh".into(), path: "next-hop.sh".into(), mode: None }],
                0o555,
            ),
            Volume {
                name: "devpop-hosts".into(),
                empty_dir: Some(EmptyDirVolumeSource { medium: None, size_limit: Some(q("1Mi")) }),
                ..Default::default()
            },
        ];
        for v in &d.spec.volumes {
            let ed = v.empty_dir.clone().unwrap_or_default();
            volumes.push(Volume {
                name: v.name.clone(),
                empty_dir: Some(EmptyDirVolumeSource {
                    medium: ed.medium,
                    size_limit: ed.size_limit.as_deref().map(q),
                }),
                ..Default::default()
            });
        }
        let mount = |vol: &str, path: &str| VolumeMount {
            name: vol.into(),
            mount_path: path.into(),
            read_only: Some(true),
            ..Default::default()
        };
        // The hosts file the next-hop init container wrote: the kubelet does not mount its own
        // /etc/hosts into a container that mounts one.
        let hosts = VolumeMount {
            name: "devpop-hosts".into(),
            mount_path: descriptor::HOSTS_MOUNT.into(),
            sub_path: Some("hosts".into()),
            read_only: Some(true),
            ..Default::default()
        };
        let standard_mounts = vec![
            mount("devpop-config", &d.metadata.configuration_mount_path),
            mount("devpop-proxy", descriptor::PROXY_MOUNT),
            hosts,
        ];

        let containers = d
            .spec
            .containers
            .iter()
            .map(|c| {
                let is_http = c.name == d.metadata.http_container;
                let resources = |map: &BTreeMap<String, descriptor::Quantity>| {
                    (!map.is_empty()).then(|| map.iter().map(|(k, v)| (k.clone(), q(&v.as_string()))).collect())
                };
                let mut mounts = standard_mounts.clone();
                mounts.extend(c.volume_mounts.iter().map(|vm| VolumeMount {
                    name: vm.name.clone(),
                    mount_path: vm.mount_path.clone(),
                    read_only: vm.read_only.then_some(true),
                    ..Default::default()
                }));
                let mut ports = Vec::new();
                if is_http {
                    ports.push(ContainerPort {
                        name: Some("http".into()),
                        container_port: 80,
                        protocol: Some("TCP".into()),
                        ..Default::default()
                    });
                }
                if let Some(metrics) = d.metadata.metrics.as_ref().filter(|_| is_http) {
                    ports.push(ContainerPort {
                        name: Some("metrics".into()),
                        container_port: metrics.port.into(),
                        protocol: Some("TCP".into()),
                        ..Default::default()
                    });
                }
                let tcp_probe = |delay: i32| Probe {
                    tcp_socket: Some(TCPSocketAction { port: IntOrString::Int(80), host: None }),
                    initial_delay_seconds: Some(delay),
                    period_seconds: Some(10),
                    ..Default::default()
                };
                // Ready when the package's health path answers, else when :80 accepts.
                let readiness = match &d.metadata.health_check_path {
                    Some(path) => Probe {
                        http_get: Some(HTTPGetAction {
                            path: Some(path.clone()),
                            port: IntOrString::Int(80),
                            ..Default::default()
                        }),
                        initial_delay_seconds: Some(2),
                        period_seconds: Some(5),
                        ..Default::default()
                    },
                    None => tcp_probe(2),
                };
                Container {
                    name: c.name.clone(),
                    image: Some(d.metadata.image.clone()),
                    command: (!c.command.is_empty()).then(|| c.command.clone()),
                    args: (!c.args.is_empty()).then(|| c.args.clone()),
                    env: (!c.env.is_empty()).then(|| {
                        c.env
                            .iter()
                            .map(|e| EnvVar { name: e.name.clone(), value: Some(e.value.clone()), value_from: None })
                            .collect()
                    }),
                    resources: Some(ResourceRequirements {
                        requests: resources(&c.resources.requests),
                        limits: resources(&c.resources.limits),
                        ..Default::default()
                    }),
                    volume_mounts: Some(mounts),
                    ports: (!ports.is_empty()).then_some(ports),
                    readiness_probe: is_http.then_some(readiness),
                    liveness_probe: is_http.then(|| tcp_probe(10)),
                    security_context: Some(self.module_security(d)),
                    ..Default::default()
                }
            })
            .collect();

        let prepare = Container {
            name: "prepare".into(),
            image: Some(d.metadata.image.clone()),
            command: Some(vec!["/bin/sh".into(), format!("{}/prepare.sh", descriptor::PREPARE_MOUNT)]),
            volume_mounts: Some({
                let mut v = standard_mounts.clone();
                v.push(mount("devpop-prepare", descriptor::PREPARE_MOUNT));
                v
            }),
            resources: Some(ResourceRequirements {
                requests: Some([("cpu".to_owned(), q("10m")), ("memory".to_owned(), q("16Mi"))].into()),
                limits: Some([("memory".to_owned(), q("128Mi"))].into()),
                ..Default::default()
            }),
            security_context: Some(self.module_security(d)),
            ..Default::default()
        };

        // next-hop: the init container resolves the next hop's Service and writes the hosts
        // file every container of the pod mounts (the same output with or without a cluster).
        let annotations = string_map([(ANNOTATION_NEXT_HOP, next.to_owned())]);
        // The next-hop script is part of the pod's config: a devpop release that changes it rolls
        // the module pods, as a changed prepare.sh does.
        let mut parts: Vec<&[u8]> = vec![d.metadata.image.as_bytes(), &m.prepare_sh, NEXT_HOP_SCRIPT.as_bytes()];
        parts.extend(m.config_files.iter().flat_map(|(k, v)| [k.as_bytes(), v.as_slice()]));
        parts.extend(m.proxy_files.iter().flat_map(|(k, v)| [k.as_bytes(), v.as_slice()]));
        let hash = content_hash(&parts);

        let pod = PodSpec {
            automount_service_account_token: Some(false),
            enable_service_links: Some(false),
            security_context: Some(self.pod_security(true)),
            init_containers: Some(vec![self.next_hop_container(next), prepare]),
            containers,
            volumes: Some(volumes),
            termination_grace_period_seconds: Some(30),
            ..Default::default()
        };
        let replicas = if d.hpa.is_some() { None } else { Some(1) };
        let mut out = vec![
            config_cm,
            proxy_cm,
            prepare_cm,
            self.service(&name, 80),
            self.deployment(&name, replicas, hash, pod, annotations),
        ];
        // A disruption budget only where there can be more than one replica to keep.
        if d.hpa.as_ref().is_some_and(|h| h.min_replicas >= 2) {
            out.push(self.pdb(&name));
        }
        if let Some(hpa) = &d.hpa {
            out.push(Object::HorizontalPodAutoscaler(Box::new(HorizontalPodAutoscaler {
                metadata: self.meta(&name, Some(&name)),
                spec: Some(HorizontalPodAutoscalerSpec {
                    scale_target_ref: CrossVersionObjectReference {
                        api_version: Some("apps/v1".into()),
                        kind: "Deployment".into(),
                        name: name.clone(),
                    },
                    min_replicas: Some(hpa.min_replicas as i32),
                    max_replicas: hpa.max_replicas as i32,
                    metrics: Some(vec![MetricSpec {
                        type_: "Resource".into(),
                        resource: Some(ResourceMetricSource {
                            name: "cpu".into(),
                            target: MetricTarget {
                                type_: "Utilization".into(),
                                average_utilization: Some(hpa.target_cpu_utilization_percentage as i32),
                                ..Default::default()
                            },
                        }),
                        ..Default::default()
                    }]),
                    ..Default::default()
                }),
                ..Default::default()
            })));
        }
        Ok(out)
    }
}
