//! The cluster target's real kube-rs calls, checked against a mocked Kubernetes API (a tower
//! service answering like an API server would): server-side apply content type, field
//! manager and force; prune by label selector; rollout status and its failures.
//!
//! A real `devpop serve --target cluster` against the stand-in API server of tests/common
//! (mocked, on loopback): the restore after a failed `-o wait` push.
//!
//! Against a real cluster: set DEVPOP_TEST_KUBECONFIG and pass `--ignored` (see the README);
//! without them those tests are reported as ignored.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{Method, Request, Response, StatusCode};
use bytes::Bytes;
use common::kubeapi::{self, replica_set, selected, waiting_pod, KubeApi};
use common::*;
use devpop::applying::kube::{rollout_state, KubeCluster};
use devpop::applying::{Subject, Target, TargetError};
use devpop::checks;
use devpop::names::RepoId;
use devpop::packages::PackageStore;
use devpop::rendering::{RenderSettings, Rendered};
use devpop::source::{RepoSource, WorkDir};
use http_body_util::{BodyExt, Full};
use serde_json::{json, Value};

#[derive(Debug, Clone)]
struct Seen {
    method: Method,
    uri: String,
    content_type: String,
    body: Value,
}

/// How the mocked API answers a rollout question.
#[derive(Clone)]
struct Script {
    /// What each Deployment's status reads return, in turn (the last one repeats).
    deployment_status: Vec<Value>,
    /// ReplicaSets and pods in the namespace; list calls filter them by their label selector.
    replica_sets: Vec<Value>,
    pods: Vec<Value>,
    /// ConfigMaps in the namespace (as metadata).
    config_maps: Vec<Value>,
    /// How many reads of the environment's Namespace find it Terminating before it is gone.
    terminating: usize,
}

fn ready_status() -> Value {
    json!({"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1, "availableReplicas": 1, "readyReplicas": 1})
}

fn mock(script: Script) -> (kube::Client, Arc<Mutex<Vec<Seen>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let next_ip = Arc::new(Mutex::new(0u32));
    let reads = Arc::new(Mutex::new(std::collections::HashMap::<String, usize>::new()));
    // What was applied (not dry-run), by object path: a later GET of the object reads it back.
    let stored = Arc::new(Mutex::new(std::collections::HashMap::<String, Value>::new()));
    let service = tower::service_fn(move |req: Request<kube::client::Body>| {
        let (log, next_ip, script, reads, stored) =
            (log.clone(), next_ip.clone(), script.clone(), reads.clone(), stored.clone());
        async move {
            let (parts, body) = req.into_parts();
            let bytes = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            let uri = parts.uri.to_string();
            let content_type = parts.headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
            log.lock().unwrap().push(Seen {
                method: parts.method.clone(),
                uri: uri.clone(),
                content_type,
                body: body.clone(),
            });
            let path = parts.uri.path().to_owned();
            let answer = match parts.method {
                Method::PATCH => {
                    let mut obj = body;
                    if path.contains("/services/") {
                        // A Service keeps the address it was given.
                        let kept = stored.lock().unwrap().get(&path).map(|s| s["spec"]["clusterIP"].clone());
                        obj["spec"]["clusterIP"] = kept.unwrap_or_else(|| {
                            let mut n = next_ip.lock().unwrap();
                            *n += 1;
                            json!(format!("10.96.7.{n}"))
                        });
                    }
                    obj["metadata"]["generation"] = json!(1);
                    obj["metadata"]["resourceVersion"] = json!("1");
                    if !uri.contains("dryRun=All") {
                        stored.lock().unwrap().insert(path.clone(), obj.clone());
                    }
                    obj
                }
                Method::DELETE => json!({"kind": "Status", "apiVersion": "v1", "status": "Success", "metadata": {}}),
                Method::GET if path.ends_with("/deployments") => json!({
                    "apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadataList", "metadata": {},
                    "items": [
                        {"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata", "metadata": {"name": "m1-cache"}},
                        {"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata", "metadata": {"name": "m9-old"}}
                    ]
                }),
                Method::GET if path.ends_with("/pods") => json!({"apiVersion": "v1", "kind": "PodList", "metadata": {},
                    "items": selected(&script.pods, parts.uri.query().unwrap_or(""))}),
                Method::GET if path.ends_with("/configmaps") => json!({"apiVersion": "meta.k8s.io/v1",
                    "kind": "PartialObjectMetadataList", "metadata": {},
                    "items": selected(&script.config_maps, parts.uri.query().unwrap_or(""))}),
                Method::GET if path.ends_with("/replicasets") => {
                    json!({"apiVersion": "apps/v1", "kind": "ReplicaSetList",
                    "metadata": {}, "items": selected(&script.replica_sets, parts.uri.query().unwrap_or(""))})
                }
                Method::GET if path.starts_with("/api/v1/namespaces/") && path.matches('/').count() == 4 => {
                    let name = path.rsplit('/').next().unwrap().to_owned();
                    let n = {
                        let mut reads = reads.lock().unwrap();
                        let n = reads.entry(format!("namespace/{name}")).or_default();
                        *n += 1;
                        *n
                    };
                    if script.terminating == 0 {
                        let applied = stored.lock().unwrap().get(&path).cloned();
                        applied.unwrap_or_else(
                            || json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}),
                        )
                    } else if n <= script.terminating {
                        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name},
                            "status": {"phase": "Terminating"}})
                    } else {
                        let gone = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                            "message": format!("namespaces \"{name}\" not found"), "reason": "NotFound", "code": 404});
                        return Ok(Response::builder()
                            .status(StatusCode::NOT_FOUND)
                            .header("content-type", "application/json")
                            .body(Full::new(Bytes::from(serde_json::to_vec(&gone).unwrap())))
                            .unwrap());
                    }
                }
                Method::GET if path.ends_with("/status") => {
                    let name = path.rsplit('/').nth(1).unwrap().to_owned();
                    let n = {
                        let mut reads = reads.lock().unwrap();
                        let n = reads.entry(name.clone()).or_default();
                        *n += 1;
                        *n - 1
                    };
                    json!({
                        "apiVersion": "apps/v1", "kind": "Deployment",
                        "metadata": {"name": name, "generation": 1, "uid": format!("uid-{name}"),
                            "annotations": {"deployment.kubernetes.io/revision": "2"}},
                        "spec": {"replicas": 1, "selector": {}, "template": {}},
                        "status": script.deployment_status[n.min(script.deployment_status.len() - 1)]
                    })
                }
                // A container's log: what a crashing module prints.
                Method::GET if path.ends_with("/log") => {
                    return Ok(Response::builder()
                        .status(StatusCode::OK)
                        .header("content-type", "text/plain")
                        .body(Full::new(Bytes::from_static(
                            b"starting\nnginx: [emerg] host not found in upstream \"next-hop:80\"\n\n",
                        )))
                        .unwrap());
                }
                // One namespaced object (`.../namespaces/NS/RESOURCE/NAME`): as applied, or 404.
                Method::GET if path.split('/').rev().nth(3) == Some("namespaces") => {
                    match stored.lock().unwrap().get(&path) {
                        Some(obj) => obj.clone(),
                        None => {
                            let gone = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                                "message": "not found", "reason": "NotFound", "code": 404});
                            return Ok(Response::builder()
                                .status(StatusCode::NOT_FOUND)
                                .header("content-type", "application/json")
                                .body(Full::new(Bytes::from(serde_json::to_vec(&gone).unwrap())))
                                .unwrap());
                        }
                    }
                }
                Method::GET => {
                    json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadataList", "metadata": {}, "items": []})
                }
                _ => json!({}),
            };
            Ok::<_, std::convert::Infallible>(
                Response::builder()
                    .status(StatusCode::OK)
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from(serde_json::to_vec(&answer).unwrap())))
                    .unwrap(),
            )
        }
    });
    (kube::Client::new(service, "default"), seen)
}

fn rendered() -> Rendered {
    rendered_as("sample-application", &RenderSettings::default())
}

/// The sample application rendered for Production as repo `repo`, with `settings`.
fn rendered_as(repo: &str, settings: &RenderSettings) -> Rendered {
    let dir = tempfile::tempdir().unwrap();
    let store = PackageStore::new(dir.path());
    for p in ["example-simple", "edge-cache"] {
        store.add(&fixture(&format!("packages/{p}"))).unwrap();
    }
    let root = fixture("repos/sample-application");
    let source = WorkDir { root: &root };
    let report = devpop::validation::check(&source.snapshot().unwrap(), "Production", &store.catalog());
    let id = RepoId::new("9999", "9999", repo).unwrap();
    let subject =
        checks::Subject { id: &id, environment: "Production", commit: "0123456789abcdef0123456789abcdef01234567" };
    checks::render(&source, subject, report.config.as_ref().unwrap(), &store, settings).unwrap()
}

fn subject() -> Subject {
    Subject {
        account: "9999".into(),
        application: "9999".into(),
        repo: "sample-application".into(),
        environment: "Production".into(),
        commit: "0123456789abcdef0123456789abcdef01234567".into(),
        deployment: 1,
    }
}

fn ready() -> Script {
    Script {
        deployment_status: vec![ready_status()],
        replica_sets: vec![],
        pods: vec![],
        config_maps: vec![],
        terminating: 0,
    }
}

fn not_ready_status() -> Value {
    json!({"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1, "availableReplicas": 0})
}

#[tokio::test]
async fn every_object_is_server_side_applied_by_devpop_with_force() {
    let (client, seen) = mock(ready());
    let cluster = KubeCluster::new(client);
    let r = rendered();
    cluster.apply(&subject(), &r).await.unwrap();

    let seen = seen.lock().unwrap().clone();
    let patches: Vec<&Seen> = seen.iter().filter(|s| s.method == Method::PATCH).collect();
    assert_eq!(patches.len(), r.objects.len(), "every object is applied once, in the rendered order");
    for p in &patches {
        assert_eq!(p.content_type, "application/apply-patch+yaml", "{}", p.uri);
        assert!(p.uri.contains("fieldManager=devpop") && p.uri.contains("force=true"), "{}", p.uri);
    }
    let ns = &r.namespace;
    assert_eq!(patches[0].uri.split('?').next().unwrap(), format!("/api/v1/namespaces/{ns}"));
    let deploy = patches
        .iter()
        .find(|p| p.uri.starts_with(&format!("/apis/apps/v1/namespaces/{ns}/deployments/m1-cache?")))
        .expect("the module Deployment is applied");
    assert_eq!(deploy.body["kind"], "Deployment");
    let pod = &deploy.body["spec"]["template"]["spec"];
    assert_eq!(pod["initContainers"][0]["name"], "next-hop", "next-hop is wired in the pod itself: {pod}");
    assert!(pod.get("hostAliases").is_none(), "{pod}");
    let pdb = patches
        .iter()
        .find(|p| p.uri.starts_with(&format!("/apis/policy/v1/namespaces/{ns}/poddisruptionbudgets/egress?")))
        .expect("the egress PodDisruptionBudget is applied");
    assert_eq!(pdb.body["kind"], "PodDisruptionBudget");
}

#[tokio::test]
async fn prune_lists_by_the_devpop_label_and_deletes_only_what_the_render_dropped() {
    let (client, seen) = mock(ready());
    let cluster = KubeCluster::new(client);
    let report = cluster.apply(&subject(), &rendered()).await.unwrap();
    assert_eq!(report.pruned, ["Deployment/m9-old"]);
    let seen = seen.lock().unwrap().clone();
    let lists: Vec<&Seen> =
        seen.iter().filter(|s| s.method == Method::GET && s.uri.contains("labelSelector")).collect();
    assert_eq!(lists.len(), 9, "one list per managed kind");
    for l in &lists {
        assert!(l.uri.contains("labelSelector=app.kubernetes.io%2Fmanaged-by%3Ddevpop"), "{}", l.uri);
    }
    let deletes: Vec<&str> = seen.iter().filter(|s| s.method == Method::DELETE).map(|s| s.uri.as_str()).collect();
    assert_eq!(deletes.len(), 1, "{deletes:?}");
    assert!(deletes[0].starts_with(&format!("/apis/apps/v1/namespaces/{}/deployments/m9-old", rendered().namespace)));
}

#[tokio::test]
async fn rollout_waits_for_every_deployment_and_fails_fast_naming_the_reason() {
    let r = rendered();
    let (client, _) = mock(ready());
    let msg = KubeCluster::new(client).rollout(&subject(), &r, Duration::from_secs(5)).await.unwrap();
    assert_eq!(msg, "5 Deployments rolled out");

    let stuck = Script {
        deployment_status: vec![not_ready_status()],
        replica_sets: vec![replica_set("private-ingress", "abc", 2, None)],
        pods: vec![waiting_pod(
            "private-ingress",
            "abc",
            "x1",
            "nginx",
            "ImagePullBackOff",
            "Back-off pulling image \"nginx:nope\"",
        )],
        config_maps: vec![],
        terminating: 0,
    };
    let (client, _) = mock(stuck);
    let err = KubeCluster::new(client)
        .with_poll(Duration::from_millis(10))
        .rollout(&subject(), &r, Duration::from_secs(5))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        TargetError::Unhealthy {
            object: "Deployment/private-ingress".into(),
            reason:
                "pod private-ingress-abc-x1: container nginx: ImagePullBackOff Back-off pulling image \"nginx:nope\""
                    .into()
        }
    );

    let deadline = Script {
        deployment_status: vec![
            json!({"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1, "availableReplicas": 0,
            "conditions": [{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded", "message": "ReplicaSet has timed out progressing."}]}),
        ],
        replica_sets: vec![],
        pods: vec![],
        config_maps: vec![],
        terminating: 0,
    };
    let (client, _) = mock(deadline);
    let err = KubeCluster::new(client).rollout(&subject(), &r, Duration::from_secs(5)).await.unwrap_err();
    assert!(err.to_string().contains("ProgressDeadlineExceeded: ReplicaSet has timed out progressing."), "{err}");
}

#[tokio::test]
async fn mocked_api_an_old_replica_sets_failing_pods_do_not_fail_the_rollout_of_the_new_one() {
    let r = rendered();
    // Every Deployment: revision 2's ReplicaSet (hash new) comes up while revision 1's pod
    // (hash old) is stuck in ImagePullBackOff, and one of the new pods is terminating in a crash
    // loop. The controller first reports the old generation, then progress, then ready.
    let mut replica_sets = Vec::new();
    let mut pods = Vec::new();
    for d in r.objects.iter().filter(|o| o.kind() == "Deployment").map(|o| o.name()) {
        replica_sets.push(replica_set(d, "old", 1, None));
        replica_sets.push(replica_set(d, "new", 2, None));
        pods.push(waiting_pod(d, "old", "a", "nginx", "ImagePullBackOff", "Back-off pulling image \"bad:1\""));
        let mut terminating = waiting_pod(d, "new", "b", "nginx", "CrashLoopBackOff", "back-off 10s");
        terminating["metadata"]["deletionTimestamp"] = json!("2026-11-30T04:00:00Z");
        pods.push(terminating);
    }
    let script = Script {
        deployment_status: vec![
            json!({"observedGeneration": 0, "replicas": 2, "updatedReplicas": 0, "availableReplicas": 1}),
            json!({"observedGeneration": 1, "replicas": 2, "updatedReplicas": 1, "availableReplicas": 1}),
            ready_status(),
        ],
        replica_sets,
        pods,
        config_maps: vec![],
        terminating: 0,
    };
    let (client, seen) = mock(script);
    let msg = KubeCluster::new(client)
        .with_poll(Duration::from_millis(5))
        .rollout(&subject(), &r, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(msg, "5 Deployments rolled out");
    // Pods were asked for by the new ReplicaSet's pod-template-hash only.
    let seen = seen.lock().unwrap().clone();
    let pod_lists: Vec<&str> = seen.iter().filter(|s| s.uri.contains("/pods?")).map(|s| s.uri.as_str()).collect();
    assert!(!pod_lists.is_empty());
    assert!(pod_lists.iter().all(|u| u.contains("pod-template-hash%3Dnew")), "{pod_lists:?}");
}

#[tokio::test]
async fn mocked_api_a_replica_set_refused_by_the_quota_fails_fast_with_the_quotas_message() {
    let r = rendered();
    let quota = "pods \"egress-new-x\" is forbidden: exceeded quota: devpop-quota, requested: requests.memory=32Mi, used: requests.memory=8Gi, limited: requests.memory=8Gi";
    let mut replica_sets = vec![replica_set("egress", "new", 2, Some(quota))];
    for d in r.objects.iter().filter(|o| o.kind() == "Deployment" && o.name() != "egress").map(|o| o.name()) {
        replica_sets.push(replica_set(d, "new", 2, None));
    }
    let script = Script {
        deployment_status: vec![not_ready_status()],
        replica_sets,
        pods: vec![],
        config_maps: vec![],
        terminating: 0,
    };
    let (client, seen) = mock(script);
    let err = KubeCluster::new(client)
        .with_poll(Duration::from_millis(5))
        .rollout(&subject(), &r, Duration::from_secs(30))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        TargetError::Unhealthy {
            object: "Deployment/egress".into(),
            reason: format!("ReplicaSet egress-new cannot create pods: FailedCreate {quota}"),
        }
    );
    let egress_reads = seen.lock().unwrap().iter().filter(|s| s.uri.ends_with("/deployments/egress/status")).count();
    assert_eq!(egress_reads, 1, "failed at the first look, not at the deadline");
}

#[tokio::test]
async fn dry_run_asks_the_api_server_to_check_every_object_without_storing() {
    let (client, seen) = mock(ready());
    let r = rendered();
    let message = KubeCluster::new(client).dry_run(&subject(), &r).await.unwrap().unwrap();
    assert_eq!(message.summary, format!("the cluster accepts all {} objects (server-side dry run)", r.objects.len()));
    let seen = seen.lock().unwrap().clone();
    let patches: Vec<&Seen> = seen.iter().filter(|s| s.method == Method::PATCH).collect();
    assert_eq!(patches.len(), r.objects.len());
    for p in patches {
        assert!(p.uri.contains("dryRun=All") && p.uri.contains("fieldManager=devpop"), "{}", p.uri);
    }
}

#[test]
fn rollout_state_follows_kubectl_rollout_status() {
    let d = |status: Value, generation: i64| -> k8s_openapi::api::apps::v1::Deployment {
        serde_json::from_value(json!({"metadata": {"name": "x", "generation": generation}, "spec": {"replicas": 2, "selector": {}, "template": {}}, "status": status})).unwrap()
    };
    assert_eq!(
        rollout_state(&d(
            json!({"observedGeneration": 2, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2}),
            2
        )),
        Ok(true)
    );
    assert_eq!(
        rollout_state(&d(
            json!({"observedGeneration": 1, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2}),
            2
        )),
        Ok(false),
        "old generation"
    );
    assert_eq!(
        rollout_state(&d(
            json!({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 2, "availableReplicas": 2}),
            2
        )),
        Ok(false),
        "old pods remain"
    );
    assert_eq!(
        rollout_state(&d(
            json!({"observedGeneration": 2, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 1}),
            2
        )),
        Ok(false)
    );
}

/// Deploys the sample application to a real cluster: ignored unless asked for (`--ignored`)
/// with DEVPOP_TEST_KUBECONFIG set, so a run without a cluster reports it ignored, not passed.
#[tokio::test]
#[ignore = "needs a real cluster: DEVPOP_TEST_KUBECONFIG=... tests/run --test kube_requests -- --ignored"]
async fn real_cluster_deploys_the_sample_application() {
    let kubeconfig = std::env::var_os("DEVPOP_TEST_KUBECONFIG")
        .expect("set DEVPOP_TEST_KUBECONFIG to a kind/minikube/k3d kubeconfig (README: Real-cluster tests)");
    let cluster = KubeCluster::discover(Some(std::path::Path::new(&kubeconfig))).await.unwrap();
    let r = rendered();
    cluster.apply(&subject(), &r).await.unwrap();
    // The sample modules' images are placeholders (registry.example.com): the rollout must fail
    // fast and say so, naming the module's Deployment.
    let err = cluster.rollout(&subject(), &r, Duration::from_secs(180)).await.unwrap_err();
    assert!(err.to_string().contains("Deployment/m"), "{err}");
    cluster.remove(&subject(), &r.namespace).await.unwrap();
}

/// A fix-forward on a real cluster: a push whose image cannot be pulled fails its rollout fast,
/// naming the pull error; the fixing push then rolls out although the failed ReplicaSet's pods
/// are still in ImagePullBackOff (only the new ReplicaSet's pods count). The sample modules'
/// images are placeholders (registry.example.com), so this rolls out the hops devpop ships
/// (private-ingress, egress, static-server: their image is a render setting); the modules'
/// Services and ConfigMaps are applied as rendered.
#[tokio::test]
#[ignore = "needs a real cluster: DEVPOP_TEST_KUBECONFIG=... tests/run --test kube_requests -- --ignored"]
async fn real_cluster_a_fixing_push_rolls_out_after_a_rollout_failed_on_an_unpullable_image() {
    let kubeconfig = std::env::var_os("DEVPOP_TEST_KUBECONFIG")
        .expect("set DEVPOP_TEST_KUBECONFIG to a kind/minikube/k3d kubeconfig (README: Real-cluster tests)");
    let cluster = KubeCluster::discover(Some(std::path::Path::new(&kubeconfig))).await.unwrap();
    let hops_only = |mut r: Rendered| {
        // Module Deployments are named m<position>-<name> (rendering::module_object_name).
        let module = |name: &str| {
            name.strip_prefix('m').and_then(|n| n.split_once('-')).is_some_and(|(p, _)| p.parse::<usize>().is_ok())
        };
        r.objects.retain(|o| !(o.kind() == "Deployment" && module(o.name())));
        r
    };
    let repo = "fix-forward";
    let unpullable =
        RenderSettings { proxy_image: "registry.invalid/devpop/no-such-image:0".into(), ..Default::default() };
    let broken = hops_only(rendered_as(repo, &unpullable));
    let subject = Subject { repo: repo.into(), ..subject() };
    cluster.apply(&subject, &broken).await.unwrap();
    let err = cluster.rollout(&subject, &broken, Duration::from_secs(300)).await.unwrap_err();
    let TargetError::Unhealthy { object, reason } = &err else { panic!("{err}") };
    assert!(object.starts_with("Deployment/"), "{err}");
    assert!(reason.contains("ErrImagePull") || reason.contains("ImagePullBackOff"), "{err}");

    let fixed = hops_only(rendered_as(repo, &RenderSettings::default()));
    let applied = cluster.apply(&subject, &fixed).await;
    let rolled = match applied {
        Ok(_) => cluster.rollout(&subject, &fixed, Duration::from_secs(300)).await,
        Err(e) => Err(e),
    };
    cluster.remove(&subject, &fixed.namespace).await.unwrap();
    let message = rolled.expect("the fixing push rolls out");
    assert!(message.starts_with("3 Deployments rolled out"), "{message}");
}

/// (verb, apiGroup, resource) of one request to the API server.
fn permission(method: &Method, uri: &str) -> (String, String, String) {
    let path = uri.split('?').next().unwrap();
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let (group, rest) = match parts[0] {
        "api" => ("", &parts[2..]),
        _ => (parts[1], &parts[3..]),
    };
    // namespaces[/name] | namespaces/ns/resource[/name[/sub]]
    let (resource, named) = match rest {
        ["namespaces"] => ("namespaces".to_owned(), false),
        ["namespaces", _] => ("namespaces".to_owned(), true),
        ["namespaces", _, resource] => (resource.to_string(), false),
        ["namespaces", _, resource, _] => (resource.to_string(), true),
        ["namespaces", _, resource, _, sub] => (format!("{resource}/{sub}"), true),
        other => panic!("unexpected path {other:?}"),
    };
    let verb = match (method.as_str(), named) {
        ("GET", true) => "get",
        ("GET", false) => "list",
        ("PATCH", _) => "patch",
        ("DELETE", _) => "delete",
        (m, _) => panic!("unexpected method {m}"),
    };
    (verb.to_owned(), group.to_owned(), resource)
}

#[tokio::test]
async fn mocked_api_the_install_cluster_role_grants_exactly_the_verbs_the_applier_uses() {
    let r = rendered();
    let mut replica_sets = Vec::new();
    for d in r.objects.iter().filter(|o| o.kind() == "Deployment").map(|o| o.name()) {
        replica_sets.push(replica_set(d, "new", 2, None));
    }
    let script = Script {
        deployment_status: vec![not_ready_status(), ready_status()],
        replica_sets,
        // A pod whose containers' logs are read.
        pods: vec![{
            let mut pod = waiting_pod("egress", "new", "a", "nginx", "ContainerCreating", "");
            pod["metadata"]["labels"]["app.kubernetes.io/managed-by"] = json!("devpop");
            pod["spec"] = json!({"containers": [{"name": "nginx"}]});
            pod
        }],
        config_maps: vec![],
        terminating: 0,
    };
    let (client, seen) = mock(script);
    let cluster = KubeCluster::new(client).with_poll(Duration::from_millis(5));
    cluster.dry_run(&subject(), &r).await.unwrap();
    cluster.apply(&subject(), &r).await.unwrap();
    cluster.rollout(&subject(), &r, Duration::from_secs(5)).await.unwrap();
    let everything = devpop::applying::logs::LogQuery::new(None, None).unwrap();
    cluster.logs(&r.namespace, &everything).await.unwrap();
    cluster.remove(&subject(), &r.namespace).await.unwrap();
    let mut used = std::collections::BTreeSet::new();
    for s in seen.lock().unwrap().iter() {
        let (verb, group, resource) = permission(&s.method, &s.uri);
        if verb == "patch" {
            // Server-side apply creates what does not exist yet: create and patch.
            used.insert(("create".to_owned(), group.clone(), resource.clone()));
        }
        // (Pods are listed by the same label for their logs, and never pruned.)
        if verb == "list"
            && s.uri.contains("labelSelector=app.kubernetes.io%2Fmanaged-by%3Ddevpop")
            && resource != "pods"
        {
            // Prune: lists what devpop manages, deletes what the render no longer has.
            used.insert(("delete".to_owned(), group.clone(), resource.clone()));
        }
        used.insert((verb, group, resource));
    }

    let yaml =
        std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docker/install.yaml")).unwrap();
    let mut granted = std::collections::BTreeSet::new();
    for doc in serde_yaml_ng::Deserializer::from_str(&yaml) {
        let v: serde_yaml_ng::Value = serde::Deserialize::deserialize(doc).unwrap();
        if v["kind"] != "ClusterRole" {
            continue;
        }
        for rule in v["rules"].as_sequence().unwrap() {
            let list = |k: &str| -> Vec<String> {
                rule[k].as_sequence().unwrap().iter().map(|x| x.as_str().unwrap().to_owned()).collect()
            };
            for verb in list("verbs") {
                for group in list("apiGroups") {
                    for resource in list("resources") {
                        granted.insert((verb.clone(), group.clone(), resource));
                    }
                }
            }
        }
    }
    let missing: Vec<_> = used.difference(&granted).collect();
    let unused: Vec<_> = granted.difference(&used).collect();
    assert!(missing.is_empty(), "the applier needs, and the ClusterRole does not grant: {missing:?}");
    assert!(unused.is_empty(), "the ClusterRole grants, and the applier never uses: {unused:?}");
}

#[tokio::test]
async fn mocked_api_a_refused_object_is_reported_as_a_sentence_not_a_debug_dump() {
    let service = tower::service_fn(|req: Request<kube::client::Body>| async move {
        // No namespace yet (GET: 404); every apply refused as invalid.
        let (code, status) = if req.method() == Method::GET {
            (
                StatusCode::NOT_FOUND,
                json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": "not found", "reason": "NotFound", "code": 404}),
            )
        } else {
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": "Deployment.apps \"m1-cache\" is invalid: spec.template.spec.containers[0].image: Required value",
                "reason": "Invalid", "code": 422}),
            )
        };
        Ok::<_, std::convert::Infallible>(
            Response::builder()
                .status(code)
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(serde_json::to_vec(&status).unwrap())))
                .unwrap(),
        )
    });
    let cluster = KubeCluster::new(kube::Client::new(service, "default"));
    let err = cluster.apply(&subject(), &rendered()).await.unwrap_err();
    let text = err.to_string();
    assert_eq!(
        text,
        format!(
            "Namespace/{}: Deployment.apps \"m1-cache\" is invalid: spec.template.spec.containers[0].image: Required value (HTTP 422 Invalid); the API server rejected the object: fix the package or the config it was rendered from",
            rendered().namespace
        )
    );
    assert!(!text.contains("Status {") && !text.contains("Some("), "{text}");
}

#[tokio::test]
async fn mocked_api_replaced_config_maps_outlive_the_apply_and_are_pruned_after_the_rollout_keeping_two() {
    let r = rendered();
    let current = r
        .objects
        .iter()
        .find(|o| o.kind() == "ConfigMap" && o.name().starts_with("egress-nginx-"))
        .unwrap()
        .name()
        .to_owned();
    let cm = |name: &str, base: Option<&str>, created: &str| {
        let mut labels = json!({"app.kubernetes.io/managed-by": "devpop"});
        if let Some(base) = base {
            labels["devpop.section.io/config-of"] = json!(base);
        }
        json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
            "metadata": {"name": name, "labels": labels, "creationTimestamp": created}})
    };
    let config_maps = vec![
        cm(&current, Some("egress-nginx"), "2026-11-30T05:00:00Z"),
        cm("egress-nginx-0000000000000001", Some("egress-nginx"), "2026-11-30T01:00:00Z"),
        cm("egress-nginx-0000000000000002", Some("egress-nginx"), "2026-11-30T02:00:00Z"),
        cm("egress-nginx-0000000000000003", Some("egress-nginx"), "2026-11-30T03:00:00Z"),
        cm("egress-nginx-0000000000000004", Some("egress-nginx"), "2026-11-30T04:00:00Z"),
        // From before content addressing: an ordinary object the render no longer has.
        cm("egress-nginx", None, "2026-11-29T00:00:00Z"),
    ];
    let script = Script {
        deployment_status: vec![ready_status()],
        replica_sets: vec![],
        pods: vec![],
        config_maps,
        terminating: 0,
    };
    let (client, seen) = mock(script);
    let cluster = KubeCluster::new(client);
    let deleted = |seen: &Arc<Mutex<Vec<Seen>>>| -> Vec<String> {
        seen.lock()
            .unwrap()
            .iter()
            .filter(|s| s.method == Method::DELETE && s.uri.contains("/configmaps/"))
            .map(|s| s.uri.split('?').next().unwrap().rsplit('/').next().unwrap().to_owned())
            .collect()
    };
    let report = cluster.apply(&subject(), &r).await.unwrap();
    assert!(report.pruned.contains(&"ConfigMap/egress-nginx".to_owned()), "{:?}", report.pruned);
    assert_eq!(deleted(&seen), ["egress-nginx"], "the old pods' ConfigMaps stay while the rollout runs");
    let msg = cluster.rollout(&subject(), &r, Duration::from_secs(5)).await.unwrap();
    assert_eq!(msg, "5 Deployments rolled out; 2 old ConfigMaps pruned");
    assert_eq!(
        deleted(&seen),
        ["egress-nginx", "egress-nginx-0000000000000002", "egress-nginx-0000000000000001"],
        "the two newest replaced ones stay for a rollback"
    );
}

#[tokio::test]
async fn mocked_api_a_push_while_the_namespace_is_still_terminating_waits_until_it_is_gone() {
    let r = rendered();
    let script = Script {
        deployment_status: vec![ready_status()],
        replica_sets: vec![],
        pods: vec![],
        config_maps: vec![],
        terminating: 3,
    };
    let (client, seen) = mock(script);
    let cluster = KubeCluster::new(client).with_poll(Duration::from_millis(5));
    cluster.apply(&subject(), &r).await.unwrap();
    let seen = seen.lock().unwrap().clone();
    let ns_path = format!("/api/v1/namespaces/{}", r.namespace);
    let reads = seen.iter().filter(|s| s.method == Method::GET && s.uri == ns_path).count();
    assert_eq!(reads, 4, "read until the old namespace was gone");
    let first_patch = seen.iter().position(|s| s.method == Method::PATCH).unwrap();
    let last_read = seen.iter().rposition(|s| s.method == Method::GET && s.uri == ns_path).unwrap();
    assert!(last_read < first_patch, "nothing applied into a terminating namespace");

    // Still terminating at the limit: a sentence that says what to do.
    let script = Script {
        deployment_status: vec![ready_status()],
        replica_sets: vec![],
        pods: vec![],
        config_maps: vec![],
        terminating: usize::MAX,
    };
    let (client, _) = mock(script);
    let err = KubeCluster::new(client)
        .with_poll(Duration::from_millis(5))
        .with_namespace_wait(Duration::from_millis(50))
        .apply(&subject(), &r)
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "cluster: namespace {} is still being deleted (its branch was deleted): push again once `kubectl get namespace {}` finds nothing",
            r.namespace, r.namespace
        )
    );
}

#[tokio::test]
async fn mocked_api_a_dry_run_shows_each_change_as_a_diff_of_the_live_object_against_the_dry_run_answer() {
    use devpop::rendering::{Object, LABEL_CONFIG_OF};
    let before = rendered();
    // The next push: the egress Deployment changed, and one content-addressed ConfigMap replaced
    // by a new hash of itself with a changed line.
    let mut after = before.clone();
    let mut replaced = None;
    for o in after.objects.iter_mut() {
        match o {
            Object::Deployment(d) if d.metadata.name.as_deref().is_some_and(|n| n.starts_with("egress")) => {
                d.spec.as_mut().unwrap().min_ready_seconds = Some(7);
            }
            Object::ConfigMap(c) if replaced.is_none() => {
                let Some(base) = c.metadata.labels.as_ref().and_then(|l| l.get(LABEL_CONFIG_OF)).cloned() else {
                    continue;
                };
                let data = c.data.as_mut().unwrap();
                let file = data.keys().next().unwrap().clone();
                data.get_mut(&file).unwrap().push_str("\n# a changed line");
                replaced = Some((c.metadata.name.replace(format!("{base}-0000000000")).unwrap(), base));
            }
            _ => {}
        }
    }
    let (old, base) = replaced.expect("the sample renders a content-addressed ConfigMap");
    // The API server lists the live ConfigMap of that base name (by label).
    let script = Script {
        config_maps: vec![json!({"metadata": {"name": old, "creationTimestamp": "2026-01-01T00:00:00Z",
            "labels": {"app.kubernetes.io/managed-by": "devpop", LABEL_CONFIG_OF: base}}})],
        ..ready()
    };
    let (client, seen) = mock(script);
    let cluster = KubeCluster::new(client);
    cluster.apply(&subject(), &before).await.unwrap();

    let answer = cluster.dry_run(&subject(), &after).await.unwrap().unwrap();
    let changes = answer.changes.expect("a cluster dry run says what would change");
    let egress = changes.changed.iter().find(|k| k.starts_with("Deployment/egress")).expect("egress changed");
    let lines = &changes.details[egress];
    assert!(lines.iter().any(|l| l.starts_with('+') && l.contains("minReadySeconds: 7")), "{lines:?}");
    let cm = format!("ConfigMap/{base}");
    assert!(changes.changed.contains(&cm), "the new hash is a change of {cm}: {changes:?}");
    assert!(changes.details[&cm].iter().any(|l| l.starts_with('+') && l.contains("# a changed line")), "{changes:?}");
    assert!(changes.added.is_empty() && changes.removed.is_empty(), "{changes:?}");
    assert_eq!(changes.unchanged, before.objects.len() - 2, "{changes:?}");
    // Nothing the dry run sent was stored: every PATCH after the apply asked for dryRun=All.
    let seen = seen.lock().unwrap().clone();
    let patches: Vec<&Seen> = seen.iter().filter(|s| s.method == Method::PATCH).collect();
    assert_eq!(patches.len(), 2 * before.objects.len());
    assert!(patches[before.objects.len()..].iter().all(|p| p.uri.contains("dryRun=All")));
}

#[tokio::test]
async fn mocked_api_a_crash_looping_module_fails_the_rollout_quoting_its_last_lines() {
    let r = rendered();
    let script = Script {
        deployment_status: vec![not_ready_status()],
        replica_sets: vec![replica_set("m1-cache", "abc", 2, None)],
        pods: vec![waiting_pod("m1-cache", "abc", "x1", "cache", "CrashLoopBackOff", "back-off 20s restarting")],
        ..ready()
    };
    let (client, seen) = mock(script);
    let err = KubeCluster::new(client)
        .with_poll(Duration::from_millis(10))
        .rollout(&subject(), &r, Duration::from_secs(5))
        .await
        .unwrap_err();
    let TargetError::Unhealthy { object, reason } = err else { panic!("{err:?}") };
    assert_eq!(object, "Deployment/m1-cache");
    assert_eq!(
        reason,
        "pod m1-cache-abc-x1: container cache: CrashLoopBackOff back-off 20s restarting; its last lines: \
         «starting» «nginx: [emerg] host not found in upstream \"next-hop:80\"»"
    );
    // The crashed run is the previous one (the container is waiting to restart).
    let seen = seen.lock().unwrap().clone();
    let log = seen.iter().find(|s| s.uri.contains("/pods/m1-cache-abc-x1/log")).expect("the log was read");
    assert!(log.uri.contains("previous=true") && log.uri.contains("container=cache"), "{}", log.uri);
}

/// The pod template of the Deployment in a server-side apply's body.
fn applied_template(s: &kubeapi::Request) -> Value {
    s.body["spec"]["template"].clone()
}

#[test]
fn mocked_api_a_failed_wait_push_leaves_the_branch_and_the_applier_puts_the_last_ready_state_back() {
    // The stand-in API server (tests/common/kubeapi.rs), mocked: no cluster runs here.
    let api = KubeApi::start();
    let kubeconfig = api.kubeconfig();
    let devpop = Devpop::start_with(&[
        "--target",
        "cluster",
        "--kubeconfig",
        kubeconfig.to_str().unwrap(),
        "--rollout-deadline",
        "30s",
    ]);
    let url = devpop.create_app("1", "1", "site");
    let (_work_dir, work) = clone(&url);
    replace_tree(&work, &fixture("repos/sample-application"));
    commit_all(&work, "good");
    let out = git(&work, &["push", "-o", "wait", "origin", "HEAD:Production"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let good = git_ok(&work, &["rev-parse", "HEAD"]).trim().to_owned();
    let repo = devpop.repo_path("1", "1", "site");
    assert_eq!(server_branch(&repo, "Production"), good);
    let is_cache_apply = |s: &kubeapi::Request| s.method == "PATCH" && s.uri.contains("/deployments/m1-cache?");
    let first = api.seen().into_iter().rfind(|s| is_cache_apply(s)).expect("m1-cache was applied");

    // A config the proxy crash-loops on: the rollout fails, so the push fails.
    let vcl = std::fs::read_to_string(work.join("cache/default.vcl")).unwrap();
    std::fs::write(work.join("cache/default.vcl"), format!("{vcl}\n# BROKEN\n")).unwrap();
    commit_all(&work, "bad");
    let out = git(&work, &["push", "-o", "wait", "origin", "HEAD:Production"]);
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("remote: error: deployment 2 of Production failed; the branch is unchanged"), "{err}");
    assert!(err.contains("Deployment/m1-cache") && err.contains("CrashLoopBackOff"), "{err}");
    assert_eq!(server_branch(&repo, "Production"), good, "the branch did not move");

    // The applier put the last ready state back: deployment 3 of the good commit, ready.
    let restore = wait_deployment(&devpop, 3);
    assert_eq!(restore["state"], "ready", "{restore}");
    assert_eq!(restore["commit"], good.as_str());
    assert_eq!(restore["pusher"], "devpop (restoring after deployment 2 failed)");
    let failed = wait_deployment(&devpop, 2);
    assert_eq!(failed["state"], "failed", "{failed}");
    let notes: Vec<&str> = failed["steps"].as_array().unwrap().iter().map(|s| s["message"].as_str().unwrap()).collect();
    assert!(notes.contains(&"restoring deployment 1 as deployment 3"), "{notes:?}");

    // The requests: the broken template was applied, its new ReplicaSet's pods were read (and
    // only those), then the first template was applied again and rolled out.
    let seen = api.seen();
    let applies: Vec<&kubeapi::Request> = seen.iter().filter(|s| is_cache_apply(s)).collect();
    assert_eq!(applies.len(), 3, "good, broken, restored");
    assert_ne!(applied_template(applies[1]), applied_template(&first), "the broken push changed the pod template");
    assert_eq!(applied_template(applies[2]), applied_template(&first), "the restore applies the ready template again");
    let broken_pods =
        seen.iter().position(|s| s.uri.contains("/pods?") && s.uri.contains("pod-template-hash%3Dbroken"));
    let broken_pods = broken_pods.expect("the failing rollout read the new ReplicaSet's pods");
    let restore_apply = seen.iter().position(|s| std::ptr::eq(s, applies[2])).unwrap();
    assert!(broken_pods < restore_apply, "restored after the rollout failed");
    let status_reads = seen[restore_apply..].iter().filter(|s| s.uri.ends_with("/deployments/m1-cache/status")).count();
    assert!(status_reads >= 1, "the restore's rollout was followed");
    // The ready state's ConfigMaps were never deleted (a rollback needs them).
    let objects = api.objects();
    let cache = objects.keys().find(|p| p.ends_with("/deployments/m1-cache")).unwrap();
    assert!(!api.crash_loops(cache), "the cluster runs the ready template");
    for cm in first.body["spec"]["template"]["spec"]["volumes"].as_array().unwrap() {
        if let Some(name) = cm["configMap"]["name"].as_str() {
            assert!(objects.keys().any(|p| p.ends_with(&format!("/configmaps/{name}"))), "{name} was deleted");
        }
    }
}
