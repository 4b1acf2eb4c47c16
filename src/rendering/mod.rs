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
mod guardrails;
mod hops;
mod modules;
pub mod naming;
pub mod nginx;
mod workloads;

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
}
