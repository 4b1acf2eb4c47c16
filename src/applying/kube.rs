//! The cluster target: applies rendered environments to a real Kubernetes cluster with kube-rs.
//!
//! - The cluster is found the way kubectl finds it: `--kubeconfig`, else `KUBECONFIG`, else
//!   `~/.kube/config`, else the in-cluster service account.
//! - Every object is applied with server-side apply (field manager `devpop`, forced), in the
//!   rendered order: Namespace and guardrails, ConfigMaps and Services, then workloads.
//! - Prune: objects labelled `app.kubernetes.io/managed-by=devpop` in the environment's
//!   namespace that the new render no longer contains are deleted; replaced content-addressed
//!   ConfigMaps only after a successful rollout, keeping the newest [`CONFIG_HISTORY`].
//! - Rollout: as the Deployment controller computes it. Wait until the controller observed the
//!   new generation; find the new ReplicaSet (owned by the Deployment, with its revision); fail
//!   fast when that ReplicaSet cannot create pods (`ReplicaFailure`: quota, LimitRange, Pod
//!   Security), and on ProgressDeadlineExceeded, image pull errors, crash loops and a failing
//!   `next-hop` or `prepare.sh` init container of *its* pods (`pod-template-hash`, not
//!   terminating): an old ReplicaSet's pods never decide. Done like `kubectl rollout status`
//!   (updated and available replicas, no old ones left).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::path::Path;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, LimitRange, Namespace, Pod, ResourceQuota, Service};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, DeleteParams, ListParams, LogParams, Patch, PatchParams};
use kube::Client;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{ApplyReport, DryRun, Subject, Target, TargetError};
use crate::rendering::{Object, Rendered, LABEL_CONFIG_OF, LABEL_MANAGED_BY};

/// An object as the API server has it (live) and as it would store the applied one (dry run).
type Preview = (Option<serde_json::Value>, serde_json::Value);

pub const FIELD_MANAGER: &str = "devpop";

#[derive(Clone)]
pub struct KubeCluster {
    client: Client,
    poll: Duration,
    /// Every apply is a server-side dry run (`dryRun=All`): the API server checks, stores nothing.
    dry_run: bool,
    /// Longest an apply waits for the environment's namespace to finish terminating (a branch
    /// deleted and pushed again).
    namespace_wait: Duration,
}

/// No cluster configuration: `why` says which and what to do.
fn no_cluster(why: impl std::fmt::Display) -> TargetError {
    TargetError::NoCluster(why.to_string())
}

/// A cluster API error while `doing` (when the step does not say it already).
fn api_error(doing: Option<String>, e: &kube::Error) -> TargetError {
    let status = match e {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    };
    TargetError::Api { doing, answer: sentence(e), status }
}

/// A cluster error as a sentence: the API's own message and what to do (never a debug dump).
pub fn sentence(e: &kube::Error) -> String {
    let kube::Error::Api(status) = e else { return e.to_string() };
    let what = match status.code {
        401 | 403 => "devpop's service account may not do this: check its ClusterRole (docker/install.yaml)",
        404 => "it is gone: push again to recreate it",
        409 => "another client changed it at the same time: push again",
        422 | 400 => "the API server rejected the object: fix the package or the config it was rendered from",
        429 | 500..=599 => "the API server is busy or failing: push again later",
        _ => "see the message",
    };
    let message = if status.message.is_empty() { status.reason.as_str() } else { status.message.as_str() };
    format!(
        "{message} (HTTP {}{}); {what}",
        status.code,
        if status.reason.is_empty() { String::new() } else { format!(" {}", status.reason) }
    )
}

/// An object without what the API server keeps for itself (managed fields, versions, uid,
/// timestamps, status), so that a live object and a dry-run answer compare by content.
fn comparable<K: Serialize>(object: K) -> serde_json::Value {
    let mut v = serde_json::to_value(object).unwrap_or_default();
    if let Some(o) = v.as_object_mut() {
        o.remove("status");
    }
    if let Some(m) = v.get_mut("metadata").and_then(|m| m.as_object_mut()) {
        for k in ["managedFields", "resourceVersion", "uid", "creationTimestamp", "generation", "selfLink"] {
            m.remove(k);
        }
        let annotations = m.get_mut("annotations").and_then(|a| a.as_object_mut());
        if let Some(a) = annotations {
            a.remove("deployment.kubernetes.io/revision");
            if a.is_empty() {
                m.remove("annotations");
            }
        }
    }
    v
}

fn yaml(v: &serde_json::Value) -> String {
    serde_yaml_ng::to_string(v).unwrap_or_default()
}

fn api_unavailable(e: kube::Error) -> TargetError {
    api_error(None, &e)
}

impl KubeCluster {
    pub fn new(client: Client) -> Self {
        KubeCluster { client, poll: Duration::from_secs(1), dry_run: false, namespace_wait: Duration::from_secs(120) }
    }

    /// How long an apply waits for a terminating namespace to be gone.
    pub fn with_namespace_wait(mut self, wait: Duration) -> Self {
        self.namespace_wait = wait;
        self
    }

    /// Waits while the environment's namespace is being deleted (a branch deleted and pushed
    /// again): objects cannot be created in a terminating namespace.
    async fn wait_namespace_gone_if_terminating(&self, ns: &str) -> Result<(), TargetError> {
        let api = Api::<Namespace>::all(self.client.clone());
        let start = Instant::now();
        loop {
            let terminating = api
                .get_opt(ns)
                .await
                .map_err(api_unavailable)?
                .and_then(|n| n.status)
                .and_then(|s| s.phase)
                .is_some_and(|p| p == "Terminating");
            if !terminating {
                return Ok(());
            }
            if start.elapsed() > self.namespace_wait {
                return Err(TargetError::NamespaceTerminating(ns.to_owned()));
            }
            tokio::time::sleep(self.poll).await;
        }
    }

    /// The client, for the other questions asked of the cluster (logs).
    pub(super) fn client(&self) -> Client {
        self.client.clone()
    }

    /// How often rollouts are checked (tests use a short one).
    pub fn with_poll(mut self, poll: Duration) -> Self {
        self.poll = poll;
        self
    }

    /// Finds the cluster the way kubectl does.
    pub async fn discover(kubeconfig: Option<&Path>) -> Result<Self, TargetError> {
        let config = match kubeconfig {
            Some(path) => {
                let kc = kube::config::Kubeconfig::read_from(path)
                    .map_err(|e| no_cluster(format!("{}: {e}", path.display())))?;
                kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                    .await
                    .map_err(no_cluster)?
            }
            None => kube::Config::infer()
                .await
                .map_err(|e| no_cluster(format!("no cluster found (KUBECONFIG, ~/.kube/config, in-cluster): {e}")))?,
        };
        Ok(Self::new(Client::try_from(config).map_err(api_unavailable)?))
    }

    fn api<K>(&self, namespace: &str) -> Api<K>
    where
        K: kube::Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>,
    {
        Api::namespaced(self.client.clone(), namespace)
    }

    async fn ssa<K>(&self, api: Api<K>, name: &str, object: &K) -> Result<K, TargetError>
    where
        K: kube::Resource<DynamicType = ()> + Clone + DeserializeOwned + Serialize + Debug,
    {
        let mut params = PatchParams::apply(FIELD_MANAGER).force();
        params.dry_run = self.dry_run;
        api.patch(name, &params, &Patch::Apply(object))
            .await
            .map_err(|e| TargetError::Refused { object: format!("{}/{name}", K::kind(&())), message: sentence(&e) })
    }

    /// Applies one object; in a dry run, also reads the live object and answers both.
    async fn put<K>(&self, api: Api<K>, name: &str, object: &K) -> Result<Option<Preview>, TargetError>
    where
        K: kube::Resource<DynamicType = ()> + Clone + DeserializeOwned + Serialize + Debug,
    {
        if !self.dry_run {
            self.ssa(api, name, object).await?;
            return Ok(None);
        }
        let live = api.get_opt(name).await.map_err(api_unavailable)?;
        let stored = self.ssa(api, name, object).await?;
        Ok(Some((live.map(comparable), comparable(stored))))
    }

    /// Applies one object (see [`Self::put`]).
    async fn apply_object(&self, ns: &str, o: &Object) -> Result<Option<Preview>, TargetError> {
        let name = o.name();
        Ok(match o {
            Object::Namespace(x) => self.put(Api::<Namespace>::all(self.client.clone()), name, x).await?,
            Object::ResourceQuota(x) => self.put(self.api::<ResourceQuota>(ns), name, x).await?,
            Object::LimitRange(x) => self.put(self.api::<LimitRange>(ns), name, x).await?,
            Object::NetworkPolicy(x) => self.put(self.api::<NetworkPolicy>(ns), name, x).await?,
            Object::ConfigMap(x) => self.put(self.api::<ConfigMap>(ns), name, x).await?,
            Object::Service(x) => self.put(self.api::<Service>(ns), name, x).await?,
            Object::Deployment(x) => self.put(self.api::<Deployment>(ns), name, x).await?,
            Object::PodDisruptionBudget(x) => self.put(self.api::<PodDisruptionBudget>(ns), name, x).await?,
            Object::HorizontalPodAutoscaler(x) => self.put(self.api::<HorizontalPodAutoscaler>(ns), name, x).await?,
            Object::Ingress(x) => self.put(self.api::<Ingress>(ns), name, x).await?,
        })
    }

    /// Deletes the objects of kind `K` managed by devpop in `ns` that `keep` does not name.
    async fn prune_kind<K>(
        &self,
        ns: &str,
        keep: &BTreeSet<String>,
        pruned: &mut Vec<String>,
    ) -> Result<(), TargetError>
    where
        K: kube::Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
            + Clone
            + DeserializeOwned
            + Debug,
    {
        let api = self.api::<K>(ns);
        let kind = K::kind(&());
        let list = api
            .list_metadata(&ListParams::default().labels(&format!("{LABEL_MANAGED_BY}=devpop")))
            .await
            .map_err(api_unavailable)?;
        for item in list.items {
            // Content-addressed ConfigMaps outlive the render that replaced them: the rollout
            // prunes them once it succeeded (see `prune_config_history`).
            if item.metadata.labels.as_ref().is_some_and(|l| l.contains_key(LABEL_CONFIG_OF)) {
                continue;
            }
            let Some(name) = item.metadata.name else { continue };
            let key = format!("{kind}/{name}");
            if !keep.contains(&key) {
                match api.delete(&name, &DeleteParams::default()).await {
                    Ok(_) => pruned.push(key),
                    Err(kube::Error::Api(e)) if e.code == 404 => {}
                    Err(e) => return Err(api_error(Some(format!("deleting {key}")), &e)),
                }
            }
        }
        Ok(())
    }

    /// The newest live ConfigMap with the same base name as the content-addressed ConfigMap `o`
    /// (what `o` replaces), by file stem, as [`comparable`].
    async fn config_predecessor(
        &self,
        ns: &str,
        o: &Object,
    ) -> Result<Option<(String, serde_json::Value)>, TargetError> {
        let Some(base) = o.metadata().labels.as_ref().and_then(|l| l.get(LABEL_CONFIG_OF)) else { return Ok(None) };
        let api = self.api::<ConfigMap>(ns);
        let list = api
            .list_metadata(
                &ListParams::default().labels(&format!("{LABEL_MANAGED_BY}=devpop,{LABEL_CONFIG_OF}={base}")),
            )
            .await
            .map_err(api_unavailable)?;
        let newest = list
            .items
            .into_iter()
            .filter_map(|i| Some((i.metadata.creation_timestamp.map(|t| t.0), i.metadata.name?)))
            .max();
        let Some((_, name)) = newest else { return Ok(None) };
        let live = api.get_opt(&name).await.map_err(api_unavailable)?;
        Ok(live.map(|cm| (format!("configmap-{name}"), comparable(cm))))
    }

    /// After a successful rollout: deletes the content-addressed ConfigMaps no render uses any
    /// more, keeping for each the newest [`CONFIG_HISTORY`] besides the current one (what the
    /// ReplicaSets a rollback would return to still mount).
    async fn prune_config_history(&self, rendered: &Rendered) -> Result<Vec<String>, TargetError> {
        let ns = &rendered.namespace;
        let api = self.api::<ConfigMap>(ns);
        let current: BTreeSet<&str> =
            rendered.objects.iter().filter(|o| o.kind() == "ConfigMap").map(Object::name).collect();
        let list = api
            .list_metadata(&ListParams::default().labels(&format!("{LABEL_MANAGED_BY}=devpop,{LABEL_CONFIG_OF}")))
            .await
            .map_err(api_unavailable)?;
        let mut by_base: BTreeMap<String, Vec<(Option<jiff::Timestamp>, String)>> = BTreeMap::new();
        for item in list.items {
            let (Some(name), Some(base)) =
                (item.metadata.name, item.metadata.labels.as_ref().and_then(|l| l.get(LABEL_CONFIG_OF)).cloned())
            else {
                continue;
            };
            if !current.contains(name.as_str()) {
                by_base.entry(base).or_default().push((item.metadata.creation_timestamp.map(|t| t.0), name));
            }
        }
        let mut pruned = Vec::new();
        for (_, mut old) in by_base {
            old.sort_by(|a, b| b.cmp(a)); // newest first
            for (_, name) in old.into_iter().skip(CONFIG_HISTORY) {
                match api.delete(&name, &DeleteParams::default()).await {
                    Ok(_) => pruned.push(format!("ConfigMap/{name}")),
                    Err(kube::Error::Api(e)) if e.code == 404 => {}
                    Err(e) => return Err(api_error(Some(format!("deleting ConfigMap/{name}")), &e)),
                }
            }
        }
        Ok(pruned)
    }

    /// Why a Deployment's new pods are not coming up, if they are failing in a way that will
    /// not fix itself. Only the new ReplicaSet and its live pods count.
    async fn trouble(&self, ns: &str, d: &Deployment) -> Result<Option<String>, TargetError> {
        let name = d.metadata.name.as_deref().unwrap_or_default();
        if d.status.as_ref().and_then(|s| s.observed_generation).unwrap_or(0) < d.metadata.generation.unwrap_or(0) {
            return Ok(None); // the controller has not seen this generation yet
        }
        let hop = format!("{}={name}", crate::rendering::LABEL_HOP);
        let sets =
            self.api::<ReplicaSet>(ns).list(&ListParams::default().labels(&hop)).await.map_err(api_unavailable)?.items;
        let Some(new) = new_replica_set(d, &sets) else { return Ok(None) };
        if let Some(failure) = replica_failure(new) {
            return Ok(Some(failure));
        }
        let Some(hash) = new.metadata.labels.as_ref().and_then(|l| l.get(POD_TEMPLATE_HASH)) else { return Ok(None) };
        let pods = self
            .api::<Pod>(ns)
            .list(&ListParams::default().labels(&format!("{hop},{POD_TEMPLATE_HASH}={hash}")))
            .await
            .map_err(api_unavailable)?;
        let Some((pod, trouble)) = pods.items.iter().find_map(|p| pod_trouble(p).map(|t| (p, t))) else {
            return Ok(None);
        };
        // A container that ran and failed: what it printed last says why.
        let tail = match crashed_container(pod) {
            Some((container, previous)) => self.last_lines(ns, pod, &container, previous).await,
            None => None,
        };
        Ok(Some(match tail {
            Some(lines) => format!("{trouble}; its last lines: {lines}"),
            None => trouble,
        }))
    }

    /// The last [`CRASH_LINES`] lines a container printed, on one line (`«...» «...»`), each
    /// cut at 200 characters; `None` when there are none or the cluster will not say.
    async fn last_lines(&self, ns: &str, pod: &Pod, container: &str, previous: bool) -> Option<String> {
        let params = LogParams {
            container: Some(container.to_owned()),
            previous,
            tail_lines: Some(CRASH_LINES),
            ..LogParams::default()
        };
        let text = self.api::<Pod>(ns).logs(pod.metadata.name.as_deref()?, &params).await.ok()?;
        let lines: Vec<String> = text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| format!("«{}»", l.trim_end().chars().take(200).collect::<String>()))
            .collect();
        (!lines.is_empty()).then(|| lines.join(" "))
    }
}

const REVISION: &str = "deployment.kubernetes.io/revision";
/// How many replaced ConfigMaps of each kind stay for a rollback (besides the current one).
pub const CONFIG_HISTORY: usize = 2;
const POD_TEMPLATE_HASH: &str = "pod-template-hash";

/// The Deployment's new ReplicaSet: owned by it (uid) and of its current revision.
pub fn new_replica_set<'a>(d: &Deployment, sets: &'a [ReplicaSet]) -> Option<&'a ReplicaSet> {
    let revision = d.metadata.annotations.as_ref()?.get(REVISION)?;
    let uid = d.metadata.uid.as_deref()?;
    sets.iter().find(|rs| {
        rs.metadata.owner_references.iter().flatten().any(|o| o.uid == uid && o.controller == Some(true))
            && rs.metadata.annotations.as_ref().and_then(|a| a.get(REVISION)) == Some(revision)
    })
}

/// Why a ReplicaSet cannot create its pods (quota, LimitRange, Pod Security admission...).
pub fn replica_failure(rs: &ReplicaSet) -> Option<String> {
    let c =
        rs.status.as_ref()?.conditions.iter().flatten().find(|c| c.type_ == "ReplicaFailure" && c.status == "True")?;
    Some(
        format!(
            "ReplicaSet {} cannot create pods: {} {}",
            rs.metadata.name.as_deref().unwrap_or_default(),
            c.reason.clone().unwrap_or_default(),
            c.message.clone().unwrap_or_default()
        )
        .trim_end()
        .to_owned(),
    )
}

/// How many of a crashed container's last lines a failed rollout quotes.
const CRASH_LINES: i64 = 5;

/// The container of `pod` that ran and failed (crash-looping, or an init container that exited
/// non-zero), and whether its failed run is the previous one (it is waiting to restart).
pub fn crashed_container(pod: &Pod) -> Option<(String, bool)> {
    let status = pod.status.as_ref()?;
    let all = status.init_container_statuses.iter().flatten().chain(status.container_statuses.iter().flatten());
    for cs in all {
        let state = cs.state.as_ref();
        if state.and_then(|s| s.waiting.as_ref()).and_then(|w| w.reason.as_deref()) == Some("CrashLoopBackOff") {
            return Some((cs.name.clone(), true));
        }
        if state.and_then(|s| s.terminated.as_ref()).is_some_and(|t| t.exit_code != 0) {
            return Some((cs.name.clone(), false));
        }
    }
    None
}

/// Why one pod will not come up by itself; terminating pods never count.
pub fn pod_trouble(pod: &Pod) -> Option<String> {
    if pod.metadata.deletion_timestamp.is_some() {
        return None;
    }
    let status = pod.status.as_ref()?;
    let pod_name = pod.metadata.name.clone().unwrap_or_default();
    for (init, statuses) in
        [(true, status.init_container_statuses.iter().flatten()), (false, status.container_statuses.iter().flatten())]
    {
        for cs in statuses {
            let what = match (init, cs.name.as_str()) {
                (true, "prepare") => "prepare.sh".to_owned(),
                (true, "next-hop") => "next-hop (resolving the next hop's Service)".to_owned(),
                _ => format!("container {}", cs.name),
            };
            if let Some(waiting) = cs.state.as_ref().and_then(|s| s.waiting.as_ref()) {
                let reason = waiting.reason.clone().unwrap_or_default();
                if [
                    "ImagePullBackOff",
                    "ErrImagePull",
                    "CrashLoopBackOff",
                    "CreateContainerConfigError",
                    "InvalidImageName",
                ]
                .contains(&reason.as_str())
                {
                    let message = waiting.message.clone().unwrap_or_default();
                    return Some(format!("pod {pod_name}: {what}: {reason} {message}").trim_end().to_owned());
                }
            }
            if init {
                if let Some(t) = cs.state.as_ref().and_then(|s| s.terminated.as_ref()).filter(|t| t.exit_code != 0) {
                    if cs.restart_count >= 2 {
                        return Some(format!(
                            "pod {pod_name}: {what} exited {} ({})",
                            t.exit_code,
                            t.reason.clone().unwrap_or_default()
                        ));
                    }
                }
            }
        }
    }
    None
}

/// Is this Deployment rolled out (as `kubectl rollout status` decides)? `Err` when it failed.
pub fn rollout_state(d: &Deployment) -> Result<bool, String> {
    let generation = d.metadata.generation.unwrap_or(0);
    let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let Some(status) = &d.status else { return Ok(false) };
    for c in status.conditions.iter().flatten() {
        if c.type_ == "Progressing" && c.reason.as_deref() == Some("ProgressDeadlineExceeded") {
            return Err(format!("ProgressDeadlineExceeded: {}", c.message.clone().unwrap_or_default()));
        }
    }
    Ok(status.observed_generation.unwrap_or(0) >= generation
        && status.updated_replicas.unwrap_or(0) >= want
        && status.available_replicas.unwrap_or(0) >= want
        && status.replicas.unwrap_or(0) <= status.updated_replicas.unwrap_or(0))
}

impl Target for KubeCluster {
    fn name(&self) -> &'static str {
        "cluster"
    }

    async fn apply(&self, _: &Subject, rendered: &Rendered) -> Result<ApplyReport, TargetError> {
        let ns = &rendered.namespace;
        self.wait_namespace_gone_if_terminating(ns).await?;
        for o in &rendered.objects {
            self.apply_object(ns, o).await?;
        }
        let keep: BTreeSet<String> = rendered.objects.iter().map(Object::key).collect();
        let mut pruned = Vec::new();
        // Workloads first, then what they used.
        self.prune_kind::<Ingress>(ns, &keep, &mut pruned).await?;
        self.prune_kind::<HorizontalPodAutoscaler>(ns, &keep, &mut pruned).await?;
        self.prune_kind::<PodDisruptionBudget>(ns, &keep, &mut pruned).await?;
        self.prune_kind::<Deployment>(ns, &keep, &mut pruned).await?;
        self.prune_kind::<Service>(ns, &keep, &mut pruned).await?;
        self.prune_kind::<ConfigMap>(ns, &keep, &mut pruned).await?;
        self.prune_kind::<NetworkPolicy>(ns, &keep, &mut pruned).await?;
        self.prune_kind::<LimitRange>(ns, &keep, &mut pruned).await?;
        self.prune_kind::<ResourceQuota>(ns, &keep, &mut pruned).await?;
        Ok(ApplyReport {
            applied: rendered.objects.len(),
            summary: format!("{} objects applied (server-side apply), {} pruned", rendered.objects.len(), pruned.len()),
            pruned,
        })
    }

    async fn rollout(&self, _: &Subject, rendered: &Rendered, deadline: Duration) -> Result<String, TargetError> {
        let ns = &rendered.namespace;
        let api = self.api::<Deployment>(ns);
        let names: Vec<&str> = rendered.objects.iter().filter(|o| o.kind() == "Deployment").map(Object::name).collect();
        let start = Instant::now();
        let mut pending: Vec<&str> = names.clone();
        while !pending.is_empty() {
            let mut still = Vec::new();
            for name in pending {
                let d = api.get_status(name).await.map_err(api_unavailable)?;
                match rollout_state(&d) {
                    Ok(true) => {}
                    Ok(false) => {
                        if let Some(trouble) = self.trouble(ns, &d).await? {
                            return Err(TargetError::Unhealthy {
                                object: format!("Deployment/{name}"),
                                reason: trouble,
                            });
                        }
                        still.push(name);
                    }
                    Err(reason) => return Err(TargetError::Unhealthy { object: format!("Deployment/{name}"), reason }),
                }
            }
            pending = still;
            if !pending.is_empty() {
                if start.elapsed() > deadline {
                    return Err(TargetError::Unhealthy {
                        object: format!("Deployment/{}", pending[0]),
                        reason: format!("not ready within {}s (the deployment's deadline)", deadline.as_secs()),
                    });
                }
                tokio::time::sleep(self.poll).await;
            }
        }
        let pruned = self.prune_config_history(rendered).await?;
        Ok(match pruned.len() {
            0 => format!("{} Deployments rolled out", names.len()),
            n => format!("{} Deployments rolled out; {n} old ConfigMaps pruned", names.len()),
        })
    }

    async fn dry_run(&self, _: &Subject, rendered: &Rendered) -> Result<Option<DryRun>, TargetError> {
        let checker = KubeCluster { dry_run: true, ..self.clone() };
        let namespace_exists = Api::<Namespace>::all(self.client.clone())
            .get_opt(&rendered.namespace)
            .await
            .map_err(api_unavailable)?
            .is_some();
        if !namespace_exists {
            let namespace = rendered.objects.iter().find(|o| o.kind() == "Namespace");
            if let Some(o) = namespace {
                checker.apply_object(&rendered.namespace, o).await?;
            }
            // Objects of a namespace that does not exist yet cannot be dry-run before it is.
            return Ok(Some(DryRun::summary(format!(
                "the cluster accepts namespace {} (server-side dry run; its objects are checked once it exists)",
                rendered.namespace
            ))));
        }
        let (mut before, mut after) = (BTreeMap::new(), Vec::new());
        for o in &rendered.objects {
            let Some((live, stored)) = checker.apply_object(&rendered.namespace, o).await? else { continue };
            let stem = crate::rendering::object_stem(o);
            let live = match live {
                Some(live) => Some((stem.clone(), live)),
                // A new content-addressed ConfigMap replaces the newest one of its base name.
                None => self.config_predecessor(&rendered.namespace, o).await?,
            };
            if let Some((live_stem, live)) = live {
                before.insert(live_stem, yaml(&live));
            }
            after.push((stem, yaml(&stored)));
        }
        let changes = crate::rendering::diff_yaml(&before, &after);
        Ok(Some(DryRun {
            summary: format!("the cluster accepts all {} objects (server-side dry run)", after.len()),
            changes: Some(changes),
        }))
    }

    async fn remove(&self, _: &Subject, namespace: &str) -> Result<String, TargetError> {
        match Api::<Namespace>::all(self.client.clone()).delete(namespace, &DeleteParams::default()).await {
            Ok(_) => Ok(format!("namespace {namespace} deleted")),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(format!("namespace {namespace} was already gone")),
            Err(e) => Err(api_unavailable(e)),
        }
    }
}
