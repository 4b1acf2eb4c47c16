//! Rendering: one environment of an application at one commit -> its Kubernetes objects.
//!
//! Pure: [`render`] takes data (the validated config, the module packages and the files of the
//! commit, server settings) and returns typed `k8s-openapi` objects in a fixed order; the same
//! input renders byte-identical YAML. No IO happens here.
//!
//! The topology of an environment namespace (see ARCHITECTURE.md, "The PoP topology"):
//! Ingress -> private-ingress -> module 1 -> ... -> module N -> egress -> origin, with
//! static-server beside egress for outage and error pages, and guardrails (ResourceQuota,
//! LimitRange, NetworkPolicies that allow exactly that chain).

pub mod changes;
pub mod naming;

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HorizontalPodAutoscaler, HorizontalPodAutoscalerSpec, MetricSpec, MetricTarget,
    ResourceMetricSource,
};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource, EnvVar,
    HTTPGetAction, HostAlias, KeyToPath, LimitRange, LimitRangeItem, LimitRangeSpec, Namespace, PodSecurityContext,
    PodSpec, PodTemplateSpec, Probe, ResourceQuota, ResourceQuotaSpec, ResourceRequirements, SeccompProfile,
    SecurityContext, Service, ServicePort, ServiceSpec, TCPSocketAction, Volume, VolumeMount,
};
use k8s_openapi::api::networking::v1::{
    HTTPIngressPath, HTTPIngressRuleValue, IPBlock, Ingress, IngressBackend, IngressRule, IngressServiceBackend,
    IngressSpec, NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer,
    NetworkPolicyPort, NetworkPolicySpec, ServiceBackendPort,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::ByteString;
use serde::Serialize;

use crate::names::RepoId;
use crate::packages::descriptor::{self, Descriptor};
use crate::validation::config::{Environment, Origin, SectionConfig};

/// Files by their path relative to a folder, e.g. `conf.d/site.conf`.
pub type Files = BTreeMap<String, Vec<u8>>;

/// The largest ConfigMap Kubernetes stores (its data, roughly).
pub const MAX_CONFIGMAP_BYTES: usize = 1_000_000;

pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const LABEL_ACCOUNT: &str = "devpop.section.io/account";
pub const LABEL_APPLICATION: &str = "devpop.section.io/application";
pub const LABEL_REPO: &str = "devpop.section.io/repo";
pub const LABEL_ENVIRONMENT: &str = "devpop.section.io/environment";
pub const LABEL_COMMIT: &str = "devpop.section.io/commit";
/// Which hop of the chain a pod is (`private-ingress`, `m1-cache`, ..., `egress`, `static-server`).
pub const LABEL_HOP: &str = "devpop.section.io/hop";
pub const ANNOTATION_NEXT_HOP: &str = "devpop.section.io/next-hop-service";
pub const ANNOTATION_CONFIG_HASH: &str = "devpop.section.io/config-hash";

/// Server settings that shape what is rendered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderSettings {
    pub namespace_prefix: String,
    /// Each environment is served at `<namespace>.<ingress_domain>`.
    pub ingress_domain: String,
    pub ingress_class: Option<String>,
    /// The namespace of the cluster's ingress controller (the only one that may reach
    /// private-ingress).
    pub ingress_namespace: String,
    /// The nginx image of private-ingress, egress and static-server (listening on 8080, non-root).
    pub proxy_image: String,
    /// A name or IP egress resolves origins with.
    pub cluster_dns: String,
    pub quota: Quota,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quota {
    pub pods: String,
    pub requests_cpu: String,
    pub requests_memory: String,
    pub limits_memory: String,
}

impl Default for RenderSettings {
    fn default() -> Self {
        RenderSettings {
            namespace_prefix: "section".into(),
            ingress_domain: "devpop.localhost".into(),
            ingress_class: None,
            ingress_namespace: "ingress-nginx".into(),
            proxy_image: "nginxinc/nginx-unprivileged:1.27-alpine".into(),
            cluster_dns: "kube-dns.kube-system.svc.cluster.local".into(),
            quota: Quota {
                pods: "50".into(),
                requests_cpu: "4".into(),
                requests_memory: "8Gi".into(),
                limits_memory: "16Gi".into(),
            },
        }
    }
}

/// One proxychain entry with everything rendering needs of it.
#[derive(Debug, Clone)]
pub struct ModuleInput {
    /// `proxychain[].name`.
    pub name: String,
    pub descriptor: Descriptor,
    /// The env repo's `<name>/` folder at the commit.
    pub config_files: Files,
    /// The package's `proxy/` files.
    pub proxy_files: Files,
    pub prepare_sh: Vec<u8>,
}

/// Everything one render depends on.
#[derive(Debug, Clone)]
pub struct RenderInput<'a> {
    pub id: &'a RepoId,
    pub environment: &'a str,
    /// The commit rendered from (40 hex digits).
    pub commit: &'a str,
    pub config: &'a SectionConfig,
    /// In proxychain order.
    pub modules: &'a [ModuleInput],
    pub outage_pages: &'a Files,
    /// `NNN.html` -> page.
    pub custom_errors: &'a Files,
    /// ClusterIPs of the hop Services, by Service name, when known (the applier fills them in).
    pub hop_ips: &'a BTreeMap<String, String>,
    pub settings: &'a RenderSettings,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RenderError {
    #[error("environment {0} is not defined in section.config.json")]
    NoEnvironment(String),
    #[error("environment {0} has no origin")]
    NoOrigin(String),
    #[error("proxy {module}: its config folder is {bytes} bytes; a ConfigMap holds at most {MAX_CONFIGMAP_BYTES}: keep the module's config small")]
    ConfigTooLarge { module: String, bytes: usize },
    #[error("outage_pages/ and custom_errors/ are {0} bytes together; at most {MAX_CONFIGMAP_BYTES}")]
    StaticTooLarge(usize),
    #[error("template {name}: {message}")]
    Template { name: &'static str, message: String },
}

/// One rendered object. Serialises as the Kubernetes object itself (with apiVersion and kind).
/// Boxed: a Deployment is kilobytes, and a render moves dozens of objects around.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Object {
    Namespace(Box<Namespace>),
    ResourceQuota(Box<ResourceQuota>),
    LimitRange(Box<LimitRange>),
    NetworkPolicy(Box<NetworkPolicy>),
    ConfigMap(Box<ConfigMap>),
    Service(Box<Service>),
    Deployment(Box<Deployment>),
    HorizontalPodAutoscaler(Box<HorizontalPodAutoscaler>),
    Ingress(Box<Ingress>),
}

impl Object {
    pub fn kind(&self) -> &'static str {
        match self {
            Object::Namespace(_) => "Namespace",
            Object::ResourceQuota(_) => "ResourceQuota",
            Object::LimitRange(_) => "LimitRange",
            Object::NetworkPolicy(_) => "NetworkPolicy",
            Object::ConfigMap(_) => "ConfigMap",
            Object::Service(_) => "Service",
            Object::Deployment(_) => "Deployment",
            Object::HorizontalPodAutoscaler(_) => "HorizontalPodAutoscaler",
            Object::Ingress(_) => "Ingress",
        }
    }

    pub fn metadata(&self) -> &ObjectMeta {
        match self {
            Object::Namespace(o) => &o.metadata,
            Object::ResourceQuota(o) => &o.metadata,
            Object::LimitRange(o) => &o.metadata,
            Object::NetworkPolicy(o) => &o.metadata,
            Object::ConfigMap(o) => &o.metadata,
            Object::Service(o) => &o.metadata,
            Object::Deployment(o) => &o.metadata,
            Object::HorizontalPodAutoscaler(o) => &o.metadata,
            Object::Ingress(o) => &o.metadata,
        }
    }

    pub fn metadata_mut(&mut self) -> &mut ObjectMeta {
        match self {
            Object::Namespace(o) => &mut o.metadata,
            Object::ResourceQuota(o) => &mut o.metadata,
            Object::LimitRange(o) => &mut o.metadata,
            Object::NetworkPolicy(o) => &mut o.metadata,
            Object::ConfigMap(o) => &mut o.metadata,
            Object::Service(o) => &mut o.metadata,
            Object::Deployment(o) => &mut o.metadata,
            Object::HorizontalPodAutoscaler(o) => &mut o.metadata,
            Object::Ingress(o) => &mut o.metadata,
        }
    }

    /// The commit label's value (what [`LABEL_COMMIT`] says), if the object carries it.
    pub fn commit_label(&self) -> Option<&str> {
        self.metadata().labels.as_ref()?.get(LABEL_COMMIT).map(String::as_str)
    }

    pub fn name(&self) -> &str {
        self.metadata().name.as_deref().unwrap_or("")
    }

    /// `kind/name`, e.g. `Deployment/m1-cache`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.kind(), self.name())
    }
}

/// The objects of one environment, and what applying them depends on.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    pub namespace: String,
    pub objects: Vec<Object>,
    /// What must be resolved before these objects work in a cluster (e.g. the ClusterIP of a
    /// Service that a Deployment's `next-hop` points at). Empty when fully resolved.
    pub depends_on: Vec<String>,
}

/// The Service (and Deployment) name of a module: `m<position>-<name>`, lower-case.
pub fn module_object_name(position: usize, name: &str) -> String {
    format!("m{position}-{}", name.to_ascii_lowercase())
}

pub const PRIVATE_INGRESS: &str = "private-ingress";
pub const EGRESS: &str = "egress";
pub const STATIC_SERVER: &str = "static-server";
const NGINX_PORT: i32 = 8080;

/// The hops of the chain in order: private-ingress, the modules, egress.
pub fn chain(config: &SectionConfig) -> Vec<String> {
    let mut hops = vec![PRIVATE_INGRESS.to_owned()];
    hops.extend(config.proxychain.iter().enumerate().map(|(i, e)| module_object_name(i + 1, &e.name)));
    hops.push(EGRESS.to_owned());
    hops
}

pub fn render(input: &RenderInput) -> Result<Rendered, RenderError> {
    let env = input
        .config
        .environment(input.environment)
        .ok_or_else(|| RenderError::NoEnvironment(input.environment.to_owned()))?;
    let origin = env.origin.as_ref().ok_or_else(|| RenderError::NoOrigin(input.environment.to_owned()))?;
    let ns = naming::namespace(&input.settings.namespace_prefix, input.id, input.environment);
    let r = Renderer { input, ns: ns.clone() };
    let hops = chain(input.config);

    let mut objects = vec![r.namespace()];
    objects.push(r.resource_quota());
    objects.push(r.limit_range());
    objects.extend(r.network_policies(&hops, env, origin));

    let mut depends_on = Vec::new();
    let mut workloads = Vec::new();
    // private-ingress
    let first_hop = format!("{}.{ns}.svc.cluster.local", hops[1]);
    let conf = r.template(
        "private-ingress",
        minijinja::context! {
            namespace => ns, first_hop => first_hop,
        },
    )?;
    workloads.extend(r.nginx_component(PRIVATE_INGRESS, conf, None));
    workloads.push(r.ingress());
    // modules
    for (i, module) in input.modules.iter().enumerate() {
        let next = &hops[i + 2];
        workloads.extend(r.module(i + 1, module, next, &mut depends_on)?);
    }
    // egress and static-server
    let conf = r.egress_conf(env, origin)?;
    workloads.extend(r.nginx_component(EGRESS, conf, None));
    let conf = r.template(
        "static-server",
        minijinja::context! {
            namespace => ns,
        },
    )?;
    let content = r.static_content()?;
    workloads.extend(r.nginx_component(STATIC_SERVER, conf, Some(content)));

    // ConfigMaps and Services before the workloads that use them.
    let rank = |o: &Object| match o {
        Object::ConfigMap(_) => 0,
        Object::Service(_) => 1,
        Object::Deployment(_) => 2,
        Object::HorizontalPodAutoscaler(_) => 3,
        _ => 4,
    };
    workloads.sort_by_key(rank); // stable: chain order within each kind
    objects.extend(workloads);
    Ok(Rendered { namespace: ns, objects, depends_on })
}

/// Multi-document YAML of the objects, in order, with a header saying what they depend on.
pub fn to_yaml(rendered: &Rendered) -> String {
    let mut out = String::new();
    out.push_str(&format!("# Rendered by devpop for namespace {}.\n", rendered.namespace));
    if !rendered.depends_on.is_empty() {
        out.push_str("# Depends on (resolved by devpop's applier when applying to a cluster):\n");
        for d in &rendered.depends_on {
            out.push_str(&format!("#   - {d}\n"));
        }
    }
    for o in &rendered.objects {
        out.push_str("---\n");
        out.push_str(&object_yaml(o));
    }
    out
}

/// An object's stable file stem: `kind-name`, lower-case kind (e.g. `deployment-m1-cache`).
pub fn object_stem(o: &Object) -> String {
    format!("{}-{}", o.kind().to_ascii_lowercase(), o.name())
}

/// How a new render differs from what was published before (by object, ignoring the commit
/// label, which changes with every push; the rendered repo stores objects without it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diff {
    pub added: Vec<String>,
    pub changed: Vec<String>,
    pub removed: Vec<String>,
    pub unchanged: usize,
    /// For each changed object (by key), the unified diff of its YAML ([`changes::unified`]).
    pub details: BTreeMap<String, Vec<String>>,
}

pub fn diff(before: &BTreeMap<String, String>, after: &Rendered) -> Diff {
    let normalise = |yaml: &str| -> String {
        yaml.lines().filter(|l| !l.trim_start().starts_with(&format!("{LABEL_COMMIT}:"))).collect::<Vec<_>>().join("\n")
    };
    let mut d = Diff::default();
    let mut seen = std::collections::BTreeSet::new();
    for o in &after.objects {
        let stem = object_stem(o);
        match before.get(&stem) {
            None => d.added.push(o.key()),
            Some(old) if normalise(old) != normalise(&object_yaml(o)) => {
                let lines = changes::unified(&(normalise(old) + "\n"), &(normalise(&object_yaml(o)) + "\n"));
                d.details.insert(o.key(), lines);
                d.changed.push(o.key());
            }
            Some(_) => d.unchanged += 1,
        }
        seen.insert(stem);
    }
    d.removed = before
        .iter()
        .filter(|(k, _)| !seen.contains(*k))
        .map(|(stem, yaml)| {
            let v: serde_yaml_ng::Value = serde_yaml_ng::from_str(yaml).unwrap_or_default();
            match (v["kind"].as_str(), v["metadata"]["name"].as_str()) {
                (Some(kind), Some(name)) => format!("{kind}/{name}"),
                _ => stem.clone(),
            }
        })
        .collect();
    d
}

pub fn object_yaml(o: &Object) -> String {
    serde_yaml_ng::to_string(o).expect("Kubernetes objects serialise to YAML")
}

/// The nginx config templates of devpop's own components, compiled once.
fn templates() -> &'static minijinja::Environment<'static> {
    static TEMPLATES: std::sync::OnceLock<minijinja::Environment<'static>> = std::sync::OnceLock::new();
    TEMPLATES.get_or_init(|| {
        let mut env = minijinja::Environment::new();
        for (name, source) in [
            ("private-ingress", include_str!("../../templates/nginx/private-ingress.conf.j2")),
            ("egress", include_str!("../../templates/nginx/egress.conf.j2")),
            ("static-server", include_str!("../../templates/nginx/static-server.conf.j2")),
        ] {
            env.add_template(name, source).expect("templates/nginx are valid templates");
        }
        env
    })
}

struct Renderer<'a> {
    input: &'a RenderInput<'a>,
    ns: String,
}

fn q(s: &str) -> Quantity {
    Quantity(s.to_owned())
}

fn string_map<const N: usize>(pairs: [(&str, String); N]) -> BTreeMap<String, String> {
    pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

fn selector(hop: &str) -> BTreeMap<String, String> {
    string_map([(LABEL_HOP, hop.to_owned())])
}

/// A short content hash (for pod-template annotations that roll pods when config changes).
fn content_hash(parts: &[&[u8]]) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    h.finalize().iter().take(8).map(|b| format!("{b:02x}")).collect()
}

impl Renderer<'_> {
    fn labels(&self) -> BTreeMap<String, String> {
        let id = self.input.id;
        string_map([
            (LABEL_MANAGED_BY, "devpop".to_owned()),
            (LABEL_ACCOUNT, naming::label_value(&id.account)),
            (LABEL_APPLICATION, naming::label_value(&id.application)),
            (LABEL_REPO, naming::label_value(&id.repo)),
            (LABEL_ENVIRONMENT, naming::label_value(self.input.environment)),
        ])
    }

    /// Object metadata: the common labels plus the commit (on the object only: pod templates and
    /// selectors get [`Self::labels`], so a push that changes nothing of a Deployment does not
    /// restart its pods).
    fn meta(&self, name: &str, hop: Option<&str>) -> ObjectMeta {
        let mut labels = self.labels();
        labels.insert(LABEL_COMMIT.into(), naming::label_value(self.input.commit));
        if let Some(hop) = hop {
            labels.insert(LABEL_HOP.into(), hop.into());
        }
        ObjectMeta {
            name: Some(name.into()),
            namespace: Some(self.ns.clone()),
            labels: Some(labels),
            ..Default::default()
        }
    }

    fn template(&self, name: &'static str, ctx: minijinja::Value) -> Result<String, RenderError> {
        let err = |e: minijinja::Error| RenderError::Template { name, message: e.to_string() };
        templates().get_template(name).map_err(err)?.render(ctx).map_err(err)
    }

    fn namespace(&self) -> Object {
        let mut meta = self.meta(&self.ns, None);
        meta.namespace = None;
        Object::Namespace(Box::new(Namespace { metadata: meta, ..Default::default() }))
    }

    fn resource_quota(&self) -> Object {
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

    fn limit_range(&self) -> Object {
        let map = |pairs: &[(&str, &str)]| Some(pairs.iter().map(|(k, v)| (k.to_string(), q(v))).collect());
        Object::LimitRange(Box::new(LimitRange {
            metadata: self.meta("devpop-limits", None),
            spec: Some(LimitRangeSpec {
                limits: vec![LimitRangeItem {
                    type_: "Container".into(),
                    default: map(&[("memory", "256Mi")]),
                    default_request: map(&[("cpu", "50m"), ("memory", "64Mi")]),
                    max: map(&[("memory", "4Gi")]),
                    ..Default::default()
                }],
            }),
        }))
    }

    fn policy(
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
    fn network_policies(&self, hops: &[String], env: &Environment, origin: &Origin) -> Vec<Object> {
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
            self.policy(
                "allow-dns",
                None,
                None,
                Some(vec![NetworkPolicyEgressRule {
                    to: Some(vec![NetworkPolicyPeer {
                        namespace_selector: Some(LabelSelector {
                            match_labels: Some(string_map([("kubernetes.io/metadata.name", "kube-system".to_owned())])),
                            ..Default::default()
                        }),
                        pod_selector: Some(LabelSelector {
                            match_labels: Some(string_map([("k8s-app", "kube-dns".to_owned())])),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }]),
                    ports: Some(vec![
                        NetworkPolicyPort {
                            port: Some(IntOrString::Int(53)),
                            protocol: Some("UDP".into()),
                            ..Default::default()
                        },
                        tcp(53),
                    ]),
                }]),
            ),
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
            let ingress =
                vec![NetworkPolicyIngressRule { from: Some(vec![from]), ports: Some(vec![tcp(port_of(hop))]) }];
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
                                except: Some(vec![
                                    "10.0.0.0/8".into(),
                                    "172.16.0.0/12".into(),
                                    "192.168.0.0/16".into(),
                                    "169.254.0.0/16".into(),
                                ]),
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

    fn config_map(&self, name: &str, hop: &str, files: &Files) -> (Object, Vec<KeyToPath>) {
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
        let cm = ConfigMap {
            metadata: self.meta(name, Some(hop)),
            data: (!data.is_empty()).then_some(data),
            binary_data: (!binary.is_empty()).then_some(binary),
            immutable: None,
        };
        (Object::ConfigMap(Box::new(cm)), items)
    }

    fn service(&self, name: &str, target: i32) -> Object {
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

    fn deployment(
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

    fn container_security(&self, bind_low_port: bool) -> SecurityContext {
        SecurityContext {
            allow_privilege_escalation: Some(false),
            privileged: Some(false),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                add: bind_low_port.then(|| vec!["NET_BIND_SERVICE".into()]),
            }),
            ..Default::default()
        }
    }

    fn pod_security(&self) -> PodSecurityContext {
        PodSecurityContext {
            seccomp_profile: Some(SeccompProfile { type_: "RuntimeDefault".into(), localhost_profile: None }),
            ..Default::default()
        }
    }

    fn module(
        &self,
        position: usize,
        m: &ModuleInput,
        next: &str,
        depends_on: &mut Vec<String>,
    ) -> Result<Vec<Object>, RenderError> {
        let name = module_object_name(position, &m.name);
        let size: usize = m.config_files.values().map(Vec::len).sum();
        if size > MAX_CONFIGMAP_BYTES {
            return Err(RenderError::ConfigTooLarge { module: m.name.clone(), bytes: size });
        }
        let d = &m.descriptor;
        let (config_cm, config_items) = self.config_map(&format!("{name}-config"), &name, &m.config_files);
        let (proxy_cm, proxy_items) = self.config_map(&format!("{name}-proxy"), &name, &m.proxy_files);
        let prepare_files: Files = [("prepare.sh".to_owned(), m.prepare_sh.clone())].into();
        let (prepare_cm, prepare_items) = self.config_map(&format!("{name}-prepare"), &name, &prepare_files);

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
            cm_volume("devpop-config", &format!("{name}-config"), config_items, 0o444),
            cm_volume("devpop-proxy", &format!("{name}-proxy"), proxy_items, 0o444),
            cm_volume("devpop-prepare", &format!("{name}-prepare"), prepare_items, 0o555),
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
        let standard_mounts =
            vec![mount("devpop-config", &d.metadata.configuration_mount_path), mount("devpop-proxy", "/opt/proxy")];

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
                    readiness_probe: is_http.then(|| tcp_probe(2)),
                    liveness_probe: is_http.then(|| tcp_probe(10)),
                    security_context: Some(self.container_security(is_http)),
                    ..Default::default()
                }
            })
            .collect();

        let prepare = Container {
            name: "prepare".into(),
            image: Some(d.metadata.image.clone()),
            command: Some(vec!["/bin/sh".into(), "/opt/section/prepare.sh".into()]),
            volume_mounts: Some({
                let mut v = standard_mounts.clone();
                v.push(mount("devpop-prepare", "/opt/section"));
                v
            }),
            resources: Some(ResourceRequirements {
                requests: Some([("cpu".to_owned(), q("10m")), ("memory".to_owned(), q("16Mi"))].into()),
                limits: Some([("memory".to_owned(), q("128Mi"))].into()),
                ..Default::default()
            }),
            security_context: Some(self.container_security(false)),
            ..Default::default()
        };

        // next-hop: a host alias to the ClusterIP of the next hop's Service.
        let mut annotations = string_map([(ANNOTATION_NEXT_HOP, next.to_owned())]);
        let host_aliases = match self.input.hop_ips.get(next) {
            Some(ip) => Some(vec![HostAlias { ip: ip.clone(), hostnames: Some(vec!["next-hop".into()]) }]),
            None => {
                depends_on.push(format!("the ClusterIP of Service {}/{next}: next-hop of Deployment {name}", self.ns));
                annotations.insert("devpop.section.io/next-hop-unresolved".into(), "true".into());
                None
            }
        };
        let mut parts: Vec<&[u8]> = vec![d.metadata.image.as_bytes(), &m.prepare_sh];
        parts.extend(m.config_files.iter().flat_map(|(k, v)| [k.as_bytes(), v.as_slice()]));
        parts.extend(m.proxy_files.iter().flat_map(|(k, v)| [k.as_bytes(), v.as_slice()]));
        let hash = content_hash(&parts);

        let pod = PodSpec {
            automount_service_account_token: Some(false),
            enable_service_links: Some(false),
            host_aliases,
            security_context: Some(self.pod_security()),
            init_containers: Some(vec![prepare]),
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

    /// private-ingress, egress and static-server: devpop's own nginx, config from templates.
    fn nginx_component(
        &self,
        name: &str,
        nginx_conf: String,
        content: Option<(Object, Vec<KeyToPath>)>,
    ) -> Vec<Object> {
        let conf_files: Files = [("nginx.conf".to_owned(), nginx_conf.into_bytes())].into();
        let (conf_cm, conf_items) = self.config_map(&format!("{name}-nginx"), name, &conf_files);
        let hash = content_hash(&[&conf_files["nginx.conf"]]);
        let mut volumes = vec![
            Volume {
                name: "nginx-conf".into(),
                config_map: Some(ConfigMapVolumeSource {
                    name: format!("{name}-nginx"),
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
            security_context: Some(SecurityContext {
                read_only_root_filesystem: Some(true),
                run_as_non_root: Some(true),
                ..self.container_security(false)
            }),
            ..Default::default()
        };
        let pod = PodSpec {
            automount_service_account_token: Some(false),
            enable_service_links: Some(false),
            security_context: Some(self.pod_security()),
            containers: vec![container],
            volumes: Some(volumes),
            ..Default::default()
        };
        out.push(self.service(name, NGINX_PORT));
        out.push(self.deployment(name, Some(1), hash, pod, BTreeMap::new()));
        out
    }

    fn ingress(&self) -> Object {
        let host = format!("{}.{}", self.ns, self.input.settings.ingress_domain);
        Object::Ingress(Box::new(Ingress {
            metadata: self.meta(PRIVATE_INGRESS, Some(PRIVATE_INGRESS)),
            spec: Some(IngressSpec {
                ingress_class_name: self.input.settings.ingress_class.clone(),
                rules: Some(vec![IngressRule {
                    host: Some(host),
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
                }]),
                ..Default::default()
            }),
            ..Default::default()
        }))
    }

    fn egress_conf(&self, env: &Environment, origin: &Origin) -> Result<String, RenderError> {
        let view = |o: &Origin| {
            minijinja::context! {
                address => o.address,
                host => o.host_header.clone().unwrap_or_else(|| o.address.clone()),
                http_port => o.http_port.unwrap_or(80),
                https_port => o.https_port.unwrap_or(443),
                sni => o.enable_sni.unwrap_or(true),
                verify => o.verify_certificate.unwrap_or(true),
                keepalive => !o.disable_keepalive.unwrap_or(false),
                remove_headers => o.remove_request_headers,
            }
        };
        let alternates: Vec<minijinja::Value> = env
            .alternate_origins
            .iter()
            .map(|(name, o)| {
                let v = view(o);
                minijinja::context! { name => name, ..v }
            })
            .collect();
        let custom_errors: Vec<String> = self
            .input
            .custom_errors
            .keys()
            .filter_map(|k| k.strip_suffix(".html"))
            .filter(|code| code.len() == 3 && code.parse::<u16>().is_ok_and(|c| (300..600).contains(&c) && c != 499))
            .map(str::to_owned)
            .collect();
        let outage_page = self.input.outage_pages.keys().find(|k| k.ends_with(".html") && !k.contains('/')).cloned();
        // The outage page covers the gateway errors that have no custom page of their own.
        let outage_codes: Vec<&str> =
            ["502", "503", "504"].into_iter().filter(|c| !custom_errors.iter().any(|e| e == c)).collect();
        self.template(
            "egress",
            minijinja::context! {
                namespace => self.ns,
                resolver => self.input.settings.cluster_dns,
                origin => view(origin),
                alternates => alternates,
                ip_blacklist => env.ip_blacklist,
                maintain_encoding => env.maintain_upstream_content_encoding,
                custom_errors => custom_errors,
                outage_page => outage_page,
                outage_codes => outage_codes,
                static_server => format!("{STATIC_SERVER}.{}.svc.cluster.local", self.ns),
            },
        )
    }

    fn static_content(&self) -> Result<(Object, Vec<KeyToPath>), RenderError> {
        let mut files = Files::new();
        for (prefix, set) in [("outage_pages", self.input.outage_pages), ("custom_errors", self.input.custom_errors)] {
            for (path, content) in set {
                files.insert(format!("{prefix}/{path}"), content.clone());
            }
        }
        let size: usize = files.values().map(Vec::len).sum();
        if size > MAX_CONFIGMAP_BYTES {
            return Err(RenderError::StaticTooLarge(size));
        }
        Ok(self.config_map(&format!("{STATIC_SERVER}-content"), STATIC_SERVER, &files))
    }
}
