//! The cluster target's real kube-rs calls, checked against a mocked Kubernetes API (a tower
//! service answering like an API server would): server-side apply content type, field
//! manager and force; prune by label selector; rollout status and its failures.
//!
//! Against a real cluster: set DEVPOP_TEST_KUBECONFIG (see the README); without it that test
//! says it was skipped.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{Method, Request, Response, StatusCode};
use bytes::Bytes;
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
    deployment_status: Value,
    pods: Value,
}

fn ready_status() -> Value {
    json!({"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1, "availableReplicas": 1, "readyReplicas": 1})
}

fn mock(script: Script) -> (kube::Client, Arc<Mutex<Vec<Seen>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let next_ip = Arc::new(Mutex::new(0u32));
    let service = tower::service_fn(move |req: Request<kube::client::Body>| {
        let (log, next_ip, script) = (log.clone(), next_ip.clone(), script.clone());
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
                        let mut n = next_ip.lock().unwrap();
                        *n += 1;
                        obj["spec"]["clusterIP"] = json!(format!("10.96.7.{n}"));
                    }
                    obj["metadata"]["generation"] = json!(1);
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
                Method::GET if path.ends_with("/pods") => script.pods.clone(),
                Method::GET if path.starts_with("/api/v1/namespaces/") && path.matches('/').count() == 4 => {
                    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": path.rsplit('/').next().unwrap()}})
                }
                Method::GET if path.ends_with("/status") => json!({
                    "apiVersion": "apps/v1", "kind": "Deployment",
                    "metadata": {"name": path.rsplit('/').nth(1).unwrap(), "generation": 1},
                    "spec": {"replicas": 1, "selector": {}, "template": {}},
                    "status": script.deployment_status
                }),
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
    let dir = tempfile::tempdir().unwrap();
    let store = PackageStore::new(dir.path());
    for p in ["example-simple", "edge-cache"] {
        store.add(&fixture(&format!("packages/{p}"))).unwrap();
    }
    let root = fixture("repos/sample-application");
    let source = WorkDir { root: &root };
    let report = devpop::validation::check(&source.snapshot().unwrap(), "Production", &store.catalog());
    let id = RepoId::new("9999", "9999", "sample-application").unwrap();
    let subject =
        checks::Subject { id: &id, environment: "Production", commit: "0123456789abcdef0123456789abcdef01234567" };
    checks::render(&source, subject, report.config.as_ref().unwrap(), &store, &RenderSettings::default()).unwrap()
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
        deployment_status: ready_status(),
        pods: json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": []}),
    }
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
    let lists: Vec<&Seen> = seen.iter().filter(|s| s.method == Method::GET).collect();
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
        deployment_status: json!({"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1, "availableReplicas": 0}),
        pods: json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": [{
            "metadata": {"name": "private-ingress-abc"},
            "status": {"containerStatuses": [{"name": "nginx", "ready": false, "restartCount": 0, "image": "x", "imageID": "",
                "state": {"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image \"nginx:nope\""}}}]}
        }]}),
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
            reason: "pod private-ingress-abc: container nginx: ImagePullBackOff Back-off pulling image \"nginx:nope\""
                .into()
        }
    );

    let deadline = Script {
        deployment_status: json!({"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1, "availableReplicas": 0,
            "conditions": [{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded", "message": "ReplicaSet has timed out progressing."}]}),
        pods: json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": []}),
    };
    let (client, _) = mock(deadline);
    let err = KubeCluster::new(client).rollout(&subject(), &r, Duration::from_secs(5)).await.unwrap_err();
    assert!(err.to_string().contains("ProgressDeadlineExceeded: ReplicaSet has timed out progressing."), "{err}");
}

#[tokio::test]
async fn dry_run_asks_the_api_server_to_check_every_object_without_storing() {
    let (client, seen) = mock(ready());
    let r = rendered();
    let message = KubeCluster::new(client).dry_run(&subject(), &r).await.unwrap().unwrap();
    assert_eq!(message, format!("the cluster accepts all {} objects (server-side dry run)", r.objects.len()));
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

/// Deploys the sample application to a real cluster when DEVPOP_TEST_KUBECONFIG is set.
#[tokio::test]
async fn real_cluster_deploys_the_sample_application() {
    let Some(kubeconfig) = std::env::var_os("DEVPOP_TEST_KUBECONFIG") else {
        eprintln!("skipped: set DEVPOP_TEST_KUBECONFIG to a kind/minikube/k3d kubeconfig to run the real-cluster test (README: Real-cluster tests)");
        return;
    };
    let cluster = KubeCluster::discover(Some(std::path::Path::new(&kubeconfig))).await.unwrap();
    let r = rendered();
    cluster.apply(&subject(), &r).await.unwrap();
    // The sample modules' images are placeholders (registry.example.com): the rollout must fail
    // fast and say so, naming the module's Deployment.
    let err = cluster.rollout(&subject(), &r, Duration::from_secs(180)).await.unwrap_err();
    assert!(err.to_string().contains("Deployment/m"), "{err}");
    cluster.remove(&subject(), &r.namespace).await.unwrap();
}
