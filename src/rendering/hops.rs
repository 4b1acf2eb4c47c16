//! devpop's own nginx hops: private-ingress (behind the Ingress), egress (to the origin) and
//! static-server (outage and error pages).

use super::*;

impl Renderer<'_> {
    /// private-ingress, egress and static-server: devpop's own nginx, config from templates.
    pub(super) fn nginx_component(
        &self,
        name: &str,
        nginx_conf: String,
        content: Option<(Object, Vec<KeyToPath>)>,
    ) -> Vec<Object> {
        let conf_files: Files = [("nginx.conf".to_owned(), nginx_conf.into_bytes())].into();
        let (conf_cm, conf_items) = self.config_map(&format!("{name}-nginx"), Some(name), &conf_files);
        let hash = content_hash(&[&conf_files["nginx.conf"]]);
        let mut volumes = vec![
            Volume {
                name: "nginx-conf".into(),
                config_map: Some(ConfigMapVolumeSource {
                    name: conf_cm.name().to_owned(),
                    items: Some(conf_items),
                    default_mode: Some(0o444),
                    optional: Some(false),
                }),
                ..Default::default()
            },
            Volume {
                name: "tmp".into(),
                empty_dir: Some(EmptyDirVolumeSource { medium: None, size_limit: Some(q("64Mi")) }),
                ..Default::default()
            },
        ];
        let mut mounts = vec![
            VolumeMount {
                name: "nginx-conf".into(),
                mount_path: "/etc/nginx/nginx.conf".into(),
                sub_path: Some("nginx.conf".into()),
                read_only: Some(true),
                ..Default::default()
            },
            VolumeMount { name: "tmp".into(), mount_path: "/tmp".into(), ..Default::default() },
        ];
        let mut out = vec![conf_cm];
        if let Some((content_cm, items)) = content {
            volumes.push(Volume {
                name: "static".into(),
                config_map: Some(ConfigMapVolumeSource {
                    name: content_cm.name().to_owned(),
                    items: Some(items),
                    default_mode: Some(0o444),
                    optional: Some(false),
                }),
                ..Default::default()
            });
            mounts.push(VolumeMount {
                name: "static".into(),
                mount_path: "/srv/static".into(),
                read_only: Some(true),
                ..Default::default()
            });
            out.push(content_cm);
        }
        let probe = |delay: i32| Probe {
            http_get: Some(HTTPGetAction {
                path: Some("/.devpop/healthz".into()),
                port: IntOrString::Int(NGINX_PORT),
                ..Default::default()
            }),
            initial_delay_seconds: Some(delay),
            period_seconds: Some(10),
            ..Default::default()
        };
        let container = Container {
            name: "nginx".into(),
            image: Some(self.input.settings.proxy_image.clone()),
            ports: Some(vec![ContainerPort {
                name: Some("http".into()),
                container_port: NGINX_PORT,
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            resources: Some(ResourceRequirements {
                requests: Some([("cpu".to_owned(), q("50m")), ("memory".to_owned(), q("32Mi"))].into()),
                limits: Some([("memory".to_owned(), q("128Mi"))].into()),
                ..Default::default()
            }),
            volume_mounts: Some(mounts),
            readiness_probe: Some(probe(1)),
            liveness_probe: Some(probe(10)),
            // Keep serving while the endpoint removal reaches every node (no 502s on a rollout
            // or a drain); nginx then stops gracefully on SIGTERM (well within the grace period).
            lifecycle: Some(Lifecycle {
                pre_stop: Some(LifecycleHandler {
                    exec: Some(ExecAction { command: Some(vec!["sleep".into(), PRE_STOP_SECONDS.to_string()]) }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            security_context: Some(restricted(None)),
            ..Default::default()
        };
        let pod = PodSpec {
            automount_service_account_token: Some(false),
            enable_service_links: Some(false),
            security_context: Some(self.pod_security(false)),
            containers: vec![container],
            volumes: Some(volumes),
            termination_grace_period_seconds: Some(30),
            ..Default::default()
        };
        // Every request passes private-ingress and egress: two replicas and a disruption
        // budget, so a node drain or a rollout never leaves the chain without one.
        let replicas = if name == STATIC_SERVER { 1 } else { 2 };
        out.push(self.service(name, NGINX_PORT));
        out.push(self.deployment(name, Some(replicas), hash, pod, BTreeMap::new()));
        if replicas > 1 {
            out.push(self.pdb(name));
        }
        out
    }

    /// The environment's Ingress: `<namespace>.<ingress domain>` and each of its `domains`.
    pub(super) fn ingress(&self, env: &Environment) -> Object {
        let host = format!("{}.{}", self.ns, self.input.settings.ingress_domain);
        let rule = |host: &str| IngressRule {
            host: Some(host.to_owned()),
            http: Some(HTTPIngressRuleValue {
                paths: vec![HTTPIngressPath {
                    path: Some("/".into()),
                    path_type: "Prefix".into(),
                    backend: IngressBackend {
                        service: Some(IngressServiceBackend {
                            name: PRIVATE_INGRESS.into(),
                            port: Some(ServiceBackendPort { number: Some(80), name: None }),
                        }),
                        resource: None,
                    },
                }],
            }),
        };
        let rules = std::iter::once(host.as_str()).chain(env.domains.iter().map(String::as_str)).map(rule).collect();
        Object::Ingress(Box::new(Ingress {
            metadata: self.meta(PRIVATE_INGRESS, Some(PRIVATE_INGRESS)),
            spec: Some(IngressSpec {
                ingress_class_name: self.input.settings.ingress_class.clone(),
                rules: Some(rules),
                ..Default::default()
            }),
            ..Default::default()
        }))
    }

    pub(super) fn egress_conf(&self, env: &Environment, origin: &Origin) -> Result<String, RenderError> {
        let custom_errors = nginx::custom_error_codes(self.input.custom_errors.keys());
        let has_outage_page = nginx::outage_page(self.input.outage_pages.keys(), env.outage_page.as_deref()).is_some();
        let static_server = format!("{}:80", self.input.settings.service_host(STATIC_SERVER, &self.ns));
        self.template(
            "egress",
            nginx::egress_context(&self.ns, env, origin, &custom_errors, has_outage_page, &static_server),
        )
    }

    /// static-server's pages, under fixed names only: the outage page as
    /// [`nginx::OUTAGE_PAGE`], custom error pages as `custom_errors/NNN.html` for the codes
    /// egress answers with them. Other files of those folders are never served, so not mounted.
    pub(super) fn static_content(&self, env: &Environment) -> Result<(Object, Vec<KeyToPath>), RenderError> {
        let mut files = Files::new();
        if let Some(name) = nginx::outage_page(self.input.outage_pages.keys(), env.outage_page.as_deref()) {
            files.insert(nginx::OUTAGE_PAGE.to_owned(), self.input.outage_pages[name].clone());
        }
        for code in nginx::custom_error_codes(self.input.custom_errors.keys()) {
            let name = format!("{code}.html");
            files.insert(format!("custom_errors/{name}"), self.input.custom_errors[&name].clone());
        }
        let size: usize = files.values().map(Vec::len).sum();
        if size > MAX_CONFIGMAP_BYTES {
            return Err(RenderError::StaticTooLarge(size));
        }
        Ok(self.config_map(&format!("{STATIC_SERVER}-content"), Some(STATIC_SERVER), &files))
    }
}
