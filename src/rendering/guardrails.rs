//! The guardrails of an environment namespace: the Namespace (Pod Security labels), its
//! ResourceQuota and LimitRange, and the NetworkPolicies that allow exactly the chain.

use super::*;

impl Renderer<'_> {
    pub(super) fn namespace(&self) -> Object {
        let mut meta = self.meta(&self.ns, None);
        meta.namespace = None;
        // Pod Security admission: module pods need baseline (root-started images with the
        // baseline capabilities); restricted is reported as a warning.
        let settings = self.input.settings;
        let labels = meta.labels.get_or_insert_with(BTreeMap::new);
        labels.insert("pod-security.kubernetes.io/enforce".into(), settings.pod_security_enforce.clone());
        labels.insert("pod-security.kubernetes.io/warn".into(), settings.pod_security_warn.clone());
        labels.insert("pod-security.kubernetes.io/audit".into(), settings.pod_security_warn.clone());
        Object::Namespace(Box::new(Namespace { metadata: meta, ..Default::default() }))
    }

    pub(super) fn resource_quota(&self) -> Object {
        let quota = &self.input.settings.quota;
        let hard = [
            ("pods", &quota.pods),
            ("requests.cpu", &quota.requests_cpu),
            ("requests.memory", &quota.requests_memory),
            ("limits.memory", &quota.limits_memory),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), q(v)))
        .collect();
        Object::ResourceQuota(Box::new(ResourceQuota {
            metadata: self.meta("devpop-quota", None),
            spec: Some(ResourceQuotaSpec { hard: Some(hard), ..Default::default() }),
            ..Default::default()
        }))
    }

    pub(super) fn limit_range(&self) -> Object {
        let map = |pairs: &[(&str, &str)]| Some(pairs.iter().map(|(k, v)| (k.to_string(), q(v))).collect());
        Object::LimitRange(Box::new(LimitRange {
            metadata: self.meta("devpop-limits", None),
            spec: Some(LimitRangeSpec {
                limits: vec![LimitRangeItem {
                    type_: "Container".into(),
                    default: map(&[("memory", descriptor::LIMIT_DEFAULT_MEMORY)]),
                    default_request: map(&[("cpu", "50m"), ("memory", "64Mi")]),
                    max: map(&[("memory", descriptor::LIMIT_MAX_MEMORY)]),
                    ..Default::default()
                }],
            }),
        }))
    }

    pub(super) fn policy(
        &self,
        name: &str,
        pods: Option<&str>,
        ingress: Option<Vec<NetworkPolicyIngressRule>>,
        egress: Option<Vec<NetworkPolicyEgressRule>>,
    ) -> Object {
        let mut types = Vec::new();
        if ingress.is_some() {
            types.push("Ingress".to_owned());
        }
        if egress.is_some() {
            types.push("Egress".to_owned());
        }
        Object::NetworkPolicy(Box::new(NetworkPolicy {
            metadata: self.meta(name, None),
            spec: Some(NetworkPolicySpec {
                pod_selector: Some(LabelSelector { match_labels: pods.map(selector), ..Default::default() }),
                policy_types: Some(types),
                ingress,
                egress,
            }),
        }))
    }

    /// Default deny; DNS for all; then each hop may be reached only from the previous one and
    /// may reach only the next one; egress may reach the internet and static-server.
    pub(super) fn network_policies(&self, hops: &[String], env: &Environment, origin: &Origin) -> Vec<Object> {
        let pod_peer = |hop: &str| NetworkPolicyPeer {
            pod_selector: Some(LabelSelector { match_labels: Some(selector(hop)), ..Default::default() }),
            ..Default::default()
        };
        let tcp = |port: i32| NetworkPolicyPort {
            port: Some(IntOrString::Int(port)),
            protocol: Some("TCP".into()),
            ..Default::default()
        };
        let port_of =
            |hop: &str| if hop == PRIVATE_INGRESS || hop == EGRESS || hop == STATIC_SERVER { NGINX_PORT } else { 80 };
        let mut out = vec![
            self.policy("default-deny", None, Some(vec![]), Some(vec![])),
            self.policy("allow-dns", None, None, Some(vec![self.dns_rule()])),
        ];
        for (i, hop) in hops.iter().enumerate() {
            let from = if i == 0 {
                NetworkPolicyPeer {
                    namespace_selector: Some(LabelSelector {
                        match_labels: Some(string_map([(
                            "kubernetes.io/metadata.name",
                            self.input.settings.ingress_namespace.clone(),
                        )])),
                        ..Default::default()
                    }),
                    ..Default::default()
                }
            } else {
                pod_peer(&hops[i - 1])
            };
            let mut ingress =
                vec![NetworkPolicyIngressRule { from: Some(vec![from]), ports: Some(vec![tcp(port_of(hop))]) }];
            // A module's metrics port, from the monitoring namespace.
            let metrics = (i > 0 && i + 1 < hops.len())
                .then(|| self.input.modules.get(i - 1))
                .flatten()
                .and_then(|m| m.descriptor.metadata.metrics.as_ref());
            if let (Some(metrics), Some(monitoring)) = (metrics, &self.input.settings.metrics_namespace) {
                ingress.push(NetworkPolicyIngressRule {
                    from: Some(vec![NetworkPolicyPeer {
                        namespace_selector: Some(LabelSelector {
                            match_labels: Some(string_map([("kubernetes.io/metadata.name", monitoring.clone())])),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }]),
                    ports: Some(vec![tcp(metrics.port.into())]),
                });
            }
            let egress = if let Some(next) = hops.get(i + 1) {
                vec![NetworkPolicyEgressRule { to: Some(vec![pod_peer(next)]), ports: Some(vec![tcp(port_of(next))]) }]
            } else {
                // egress: the origin (anywhere on the internet, not the cluster's private
                // ranges), and static-server for the error pages.
                let mut ports: Vec<i32> = vec![80, 443];
                for o in std::iter::once(origin).chain(env.alternate_origins.iter().map(|(_, o)| o)) {
                    ports.extend(o.http_port.map(i32::from));
                    ports.extend(o.https_port.map(i32::from));
                }
                ports.sort_unstable();
                ports.dedup();
                vec![
                    NetworkPolicyEgressRule {
                        to: Some(vec![NetworkPolicyPeer {
                            ip_block: Some(IPBlock {
                                cidr: "0.0.0.0/0".into(),
                                except: Some(
                                    EGRESS_EXCLUDED
                                        .iter()
                                        .map(|c| c.to_string())
                                        .chain(self.input.settings.egress_excluded_cidrs.iter().cloned())
                                        .collect(),
                                ),
                            }),
                            ..Default::default()
                        }]),
                        ports: Some(ports.into_iter().map(tcp).collect()),
                    },
                    NetworkPolicyEgressRule {
                        to: Some(vec![pod_peer(STATIC_SERVER)]),
                        ports: Some(vec![tcp(NGINX_PORT)]),
                    },
                ]
            };
            out.push(self.policy(&format!("allow-{hop}"), Some(hop), Some(ingress), Some(egress)));
        }
        out.push(self.policy(
            &format!("allow-{STATIC_SERVER}"),
            Some(STATIC_SERVER),
            Some(vec![NetworkPolicyIngressRule {
                from: Some(vec![pod_peer(EGRESS)]),
                ports: Some(vec![tcp(NGINX_PORT)]),
            }]),
            Some(vec![]),
        ));
        out
    }

    /// DNS for every pod: the cluster DNS Service's namespace (any pod there: CoreDNS, kube-dns
    /// or another server) and the configured DNS peers (NodeLocal DNSCache's address), on 53 and
    /// 5353 (servers behind the Service port), UDP and TCP.
    pub(super) fn dns_rule(&self) -> NetworkPolicyEgressRule {
        let settings = self.input.settings;
        let mut to = vec![NetworkPolicyPeer {
            namespace_selector: Some(LabelSelector {
                match_labels: Some(string_map([("kubernetes.io/metadata.name", settings.dns_namespace().to_owned())])),
                ..Default::default()
            }),
            ..Default::default()
        }];
        to.extend(settings.dns_peers.iter().map(|cidr| NetworkPolicyPeer {
            ip_block: Some(IPBlock { cidr: cidr.clone(), except: None }),
            ..Default::default()
        }));
        let port = |port: i32, protocol: &str| NetworkPolicyPort {
            port: Some(IntOrString::Int(port)),
            protocol: Some(protocol.into()),
            ..Default::default()
        };
        NetworkPolicyEgressRule {
            to: Some(to),
            ports: Some(vec![port(53, "UDP"), port(53, "TCP"), port(5353, "UDP"), port(5353, "TCP")]),
        }
    }
}
