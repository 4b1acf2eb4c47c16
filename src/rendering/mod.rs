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
pub mod nginx;

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HorizontalPodAutoscaler, HorizontalPodAutoscalerSpec, MetricSpec, MetricTarget,
    ResourceMetricSource,
};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, ExecAction,
    HTTPGetAction, KeyToPath, Lifecycle, LifecycleHandler, LimitRange, LimitRangeItem, LimitRangeSpec, Namespace,
    PodSecurityContext, PodSpec, PodTemplateSpec, Probe, ResourceQuota, ResourceQuotaSpec, ResourceRequirements,
    SeccompProfile, SecurityContext, Service, ServicePort, ServiceSpec, Sysctl, TCPSocketAction, Volume, VolumeMount,
};
use k8s_openapi::api::networking::v1::{
    HTTPIngressPath, HTTPIngressRuleValue, IPBlock, Ingress, IngressBackend, IngressRule, IngressServiceBackend,
    IngressSpec, NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer,
    NetworkPolicyPort, NetworkPolicySpec, ServiceBackendPort,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
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
/// The script the `next-hop` init container of every module pod runs (see its header for the
/// contract: input env vars, output file). Rendered into the ConfigMap
/// `devpop-next-hop-<hash>` (see [`LABEL_CONFIG_OF`]).
pub const NEXT_HOP_SCRIPT: &str = include_str!("../../templates/pod/next-hop.sh");
pub const NEXT_HOP_CONFIGMAP: &str = "devpop-next-hop";
/// On every ConfigMap: the name it has without its content hash (`m1-cache-config`). ConfigMaps
/// are immutable and content-addressed (`m1-cache-config-<hash>`): a config change is a new
/// ConfigMap and a new pod template, so it rolls out (and back) with the pods, and running pods
/// never see files change under them. The cluster target prunes old ones after a successful
/// rollout, keeping the last few for a rollback.
pub const LABEL_CONFIG_OF: &str = "devpop.section.io/config-of";
/// Where the `next-hop` init container writes the pod's hosts file (an emptyDir).
pub const NEXT_HOP_HOSTS_DIR: &str = "/devpop/hosts";
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
    /// The cluster's DNS domain (kubelet `clusterDomain`): Service names end in `.svc.<domain>`.
    pub cluster_domain: String,
    /// The cluster DNS Service as `<name>.<namespace>`:
    /// its namespace is a DNS peer of the `allow-dns` NetworkPolicy.
    pub dns_service: String,
    /// More DNS servers pods may query (CIDRs), e.g. NodeLocal DNSCache's link-local address.
    pub dns_peers: Vec<String>,
    /// Ranges egress must never reach besides the private, loopback, link-local, shared and
    /// multicast ones (e.g. the cluster's pod and Service CIDRs when they are public).
    pub egress_excluded_cidrs: Vec<String>,
    /// The namespace allowed to scrape modules' metrics ports (none when unset).
    pub metrics_namespace: Option<String>,
    /// Pod Security Standard levels set on every environment namespace.
    pub pod_security_enforce: String,
    pub pod_security_warn: String,
    /// What validation accepts as origins (rendering follows what validation let through).
    pub origin_rules: crate::validation::config::Rules,
    pub quota: Quota,
}

impl RenderSettings {
    /// A Service of an environment namespace by its full name.
    pub fn service_host(&self, service: &str, namespace: &str) -> String {
        format!("{service}.{namespace}.svc.{}", self.cluster_domain)
    }

    fn dns_namespace(&self) -> &str {
        self.dns_service.split_once('.').map_or("kube-system", |(_, ns)| ns)
    }
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
            ingress_class: Some("nginx".into()),
            ingress_namespace: "ingress-nginx".into(),
            proxy_image: "nginxinc/nginx-unprivileged:1.27-alpine".into(),
            cluster_domain: "cluster.local".into(),
            dns_service: "kube-dns.kube-system".into(),
            dns_peers: vec!["169.254.20.10/32".into()],
            egress_excluded_cidrs: Vec::new(),
            metrics_namespace: Some("monitoring".into()),
            pod_security_enforce: "baseline".into(),
            pod_security_warn: "restricted".into(),
            origin_rules: Default::default(),
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
    #[error("environments.{environment}.outage_page names outage_pages/{page}, which this commit does not have: push the page, or engage one it has")]
    NoOutagePage { environment: String, page: String },
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
    PodDisruptionBudget(Box<PodDisruptionBudget>),
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
            Object::PodDisruptionBudget(_) => "PodDisruptionBudget",
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
            Object::PodDisruptionBudget(o) => &o.metadata,
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
            Object::PodDisruptionBudget(o) => &mut o.metadata,
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

/// The objects of one environment: complete as they are (a GitOps engine can apply them).
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    pub namespace: String,
    pub objects: Vec<Object>,
}

/// The Service (and Deployment) name of a module: `m<position>-<name>`, lower-case.
pub fn module_object_name(position: usize, name: &str) -> String {
    format!("m{position}-{}", name.to_ascii_lowercase())
}

pub const PRIVATE_INGRESS: &str = "private-ingress";
pub const EGRESS: &str = "egress";
pub const STATIC_SERVER: &str = "static-server";
const NGINX_PORT: i32 = 8080;
/// How long devpop's nginx hops keep serving after they are told to stop.
const PRE_STOP_SECONDS: u32 = 5;
/// The uid the next-hop init container runs as.
const NOBODY: i64 = 65534;
/// What egress never reaches, whatever port an origin names: private (RFC 1918), shared
/// (carrier-grade NAT, often the pod range), loopback, link-local (cloud metadata), "this
/// network" and multicast.
pub const EGRESS_EXCLUDED: &[&str] = &[
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "224.0.0.0/4",
];
/// The capabilities Pod Security baseline allows a container to add: what the container
/// runtimes give by default, less NET_RAW.
pub const BASELINE_CAPABILITIES: &[&str] = &[
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];

/// Pod Security restricted: non-root, read-only root, no capabilities, no escalation.
fn restricted(uid: Option<i64>) -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        privileged: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        run_as_user: uid,
        run_as_group: uid,
        capabilities: Some(Capabilities { drop: Some(vec!["ALL".into()]), add: None }),
        ..Default::default()
    }
}

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
    if let Some(page) = &env.outage_page {
        if nginx::outage_page(input.outage_pages.keys(), Some(page)).is_none() {
            return Err(RenderError::NoOutagePage { environment: env.name.clone(), page: page.clone() });
        }
    }
    let ns = naming::namespace(&input.settings.namespace_prefix, input.id, input.environment);
    let r = Renderer { input, ns: ns.clone() };
    let hops = chain(input.config);

    let mut objects = vec![r.namespace()];
    objects.push(r.resource_quota());
    objects.push(r.limit_range());
    objects.extend(r.network_policies(&hops, env, origin));

    let mut workloads = Vec::new();
    // private-ingress
    let first_hop = format!("{}:80", input.settings.service_host(&hops[1], &ns));
    let conf = r.template("private-ingress", nginx::private_ingress_context(&ns, &first_hop))?;
    workloads.extend(r.nginx_component(PRIVATE_INGRESS, conf, None));
    workloads.push(r.ingress(env));
    // modules
    if !input.modules.is_empty() {
        workloads.push(r.next_hop_script());
    }
    for (i, module) in input.modules.iter().enumerate() {
        let next = &hops[i + 2];
        workloads.extend(r.module(i + 1, module, next)?);
    }
    // egress and static-server
    let conf = r.egress_conf(env, origin)?;
    workloads.extend(r.nginx_component(EGRESS, conf, None));
    let conf = r.template("static-server", nginx::static_server_context(&ns))?;
    let content = r.static_content(env)?;
    workloads.extend(r.nginx_component(STATIC_SERVER, conf, Some(content)));

    // ConfigMaps and Services before the workloads that use them.
    let rank = |o: &Object| match o {
        Object::ConfigMap(_) => 0,
        Object::Service(_) => 1,
        Object::Deployment(_) => 2,
        Object::PodDisruptionBudget(_) => 3,
        Object::HorizontalPodAutoscaler(_) => 4,
        _ => 5,
    };
    workloads.sort_by_key(rank); // stable: chain order within each kind
    objects.extend(workloads);
    Ok(Rendered { namespace: ns, objects })
}

/// Multi-document YAML of the objects, in order, with a header naming the namespace.
pub fn to_yaml(rendered: &Rendered) -> String {
    let mut out = String::new();
    out.push_str(&format!("# Rendered by devpop for namespace {}.\n", rendered.namespace));
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
    let after: Vec<(String, String)> = after.objects.iter().map(|o| (object_stem(o), object_yaml(o))).collect();
    diff_yaml(before, &after)
}

/// [`diff`] of two sets of objects as YAML documents: `before` by file stem, `after` in order as
/// (stem, YAML). The cluster's dry run compares live objects with what the API server would
/// store this way.
pub fn diff_yaml(before: &BTreeMap<String, String>, after: &[(String, String)]) -> Diff {
    let normalise = |yaml: &str| -> String {
        yaml.lines().filter(|l| !l.trim_start().starts_with(&format!("{LABEL_COMMIT}:"))).collect::<Vec<_>>().join("\n")
    };
    let parse = |yaml: &str| -> serde_yaml_ng::Value { serde_yaml_ng::from_str(yaml).unwrap_or_default() };
    // A content-addressed ConfigMap is known by the name it has without its hash: a new hash of
    // `m1-cache-config` is that ConfigMap changed, not one added and one removed.
    let config_of = |v: &serde_yaml_ng::Value| v["metadata"]["labels"][LABEL_CONFIG_OF].as_str().map(str::to_owned);
    let key_of = |v: &serde_yaml_ng::Value, stem: &str| match (v["kind"].as_str(), v["metadata"]["name"].as_str()) {
        (Some(kind), Some(name)) => format!("{kind}/{name}"),
        _ => stem.to_owned(),
    };
    let parsed: BTreeMap<&String, serde_yaml_ng::Value> =
        before.iter().map(|(stem, yaml)| (stem, parse(yaml))).collect();
    let before_config: BTreeMap<String, &String> =
        parsed.iter().filter_map(|(stem, v)| config_of(v).map(|base| (base, *stem))).collect();
    let mut d = Diff::default();
    let mut seen = std::collections::BTreeSet::new();
    for (after_stem, yaml) in after {
        let v = parse(yaml);
        let base = config_of(&v);
        let (stem, key) = match base.and_then(|b| before_config.get(&b).map(|stem| (b, stem))) {
            Some((base, stem)) => ((*stem).clone(), format!("ConfigMap/{base}")),
            None => (after_stem.clone(), key_of(&v, after_stem)),
        };
        match before.get(&stem) {
            None => d.added.push(key),
            Some(old) if normalise(old) != normalise(yaml) => {
                let lines = changes::unified(&(normalise(old) + "\n"), &(normalise(yaml) + "\n"));
                d.details.insert(key.clone(), lines);
                d.changed.push(key);
            }
            Some(_) => d.unchanged += 1,
        }
        seen.insert(stem);
    }
    d.removed = parsed
        .iter()
        .filter(|(k, _)| !seen.contains(**k))
        .map(|(stem, v)| match (v["kind"].as_str(), config_of(v)) {
            (Some(kind), Some(base)) => format!("{kind}/{base}"),
            _ => key_of(v, stem),
        })
        .collect();
    d
}

pub fn object_yaml(o: &Object) -> String {
    serde_yaml_ng::to_string(o).expect("Kubernetes objects serialise to YAML")
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
        nginx::templates().get_template(name).map_err(err)?.render(ctx).map_err(err)
    }

    fn namespace(&self) -> Object {
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
                    default: map(&[("memory", descriptor::LIMIT_DEFAULT_MEMORY)]),
                    default_request: map(&[("cpu", "50m"), ("memory", "64Mi")]),
                    max: map(&[("memory", descriptor::LIMIT_MAX_MEMORY)]),
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
    fn dns_rule(&self) -> NetworkPolicyEgressRule {
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

    /// The ConfigMap with the `next-hop` init container's script (one per namespace).
    fn next_hop_script(&self) -> Object {
        let files: Files = [("next-hop.sh".to_owned(), NEXT_HOP_SCRIPT.as_bytes().to_vec())].into();
        self.config_map(NEXT_HOP_CONFIGMAP, None, &files).0
    }

    /// The init container that writes the pod's hosts file with `next-hop` (see
    /// templates/pod/next-hop.sh): devpop's pinned proxy image (Alpine: sh and getent), run
    /// restricted.
    fn next_hop_container(&self, next: &str) -> Container {
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

    /// One replica may be evicted at a time (a node drain then waits for its replacement).
    fn pdb(&self, name: &str) -> Object {
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
    fn config_map(&self, name: &str, hop: Option<&str>, files: &Files) -> (Object, Vec<KeyToPath>) {
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

    /// A module container: restricted when the package runs as non-root; else the image's own
    /// user with the capabilities Pod Security baseline allows (what a root-started nginx or
    /// varnish needs to chown its dirs and switch to its worker user), never NET_RAW.
    fn module_security(&self, d: &Descriptor) -> SecurityContext {
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
    fn pod_security(&self, low_ports: bool) -> PodSecurityContext {
        PodSecurityContext {
            seccomp_profile: Some(SeccompProfile { type_: "RuntimeDefault".into(), localhost_profile: None }),
            sysctls: low_ports
                .then(|| vec![Sysctl { name: "net.ipv4.ip_unprivileged_port_start".into(), value: "0".into() }]),
            ..Default::default()
        }
    }

    fn module(&self, position: usize, m: &ModuleInput, next: &str) -> Result<Vec<Object>, RenderError> {
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

    /// private-ingress, egress and static-server: devpop's own nginx, config from templates.
    fn nginx_component(
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
    fn ingress(&self, env: &Environment) -> Object {
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

    fn egress_conf(&self, env: &Environment, origin: &Origin) -> Result<String, RenderError> {
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
    fn static_content(&self, env: &Environment) -> Result<(Object, Vec<KeyToPath>), RenderError> {
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
