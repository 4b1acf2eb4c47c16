//! A stand-in (mocked) Kubernetes API server over plain HTTP on 127.0.0.1, for `devpop serve
//! --target cluster` in tests (no API server can run on these machines); tests/logs.rs,
//! tests/console.rs and tests/kube_requests.rs use it.
//!
//! - Logs: the pods a test adds (listed by label selector) and each container's log, tailed or
//!   followed (chunked, a line at a time as the test writes it).
//! - Applying: it stores what is server-side applied (a dry run stores nothing), lists it back
//!   by label selector (as PartialObjectMetadata when asked), deletes on request, and answers
//!   rollouts from what is stored: a Deployment whose pod template names a ConfigMap holding
//!   `BROKEN` crash-loops in its new ReplicaSet (`pod-template-hash` `broken`); every other
//!   Deployment is ready.
//!
//! An object it does not have is a 404 `Status`, as an API server answers. Every request is kept.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};

use serde_json::{json, Value};

#[derive(Default)]
struct State {
    /// (pod name, its hop label, its containers).
    pods: Vec<(String, String, Vec<String>)>,
    /// Lines written so far, by (pod, container), each already stamped.
    logs: HashMap<(String, String), Vec<String>>,
    requests: Vec<Request>,
    /// Stored objects by their path (`/apis/apps/v1/namespaces/ns/deployments/name`).
    objects: BTreeMap<String, Value>,
    /// ConfigMaps whose data holds `BROKEN`.
    broken: BTreeSet<String>,
    created: u32,
}

/// One request the server got.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    /// Path and query, as sent.
    pub uri: String,
    pub content_type: String,
    /// The body as JSON (`Null` when it is none).
    pub body: Value,
}

pub struct KubeApi {
    pub addr: String,
    state: Arc<(Mutex<State>, Condvar)>,
    dir: tempfile::TempDir,
}

impl KubeApi {
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let state: Arc<(Mutex<State>, Condvar)> = Arc::default();
        let shared = state.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let state = shared.clone();
                std::thread::spawn(move || serve(stream, &state));
            }
        });
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("kubeconfig"),
            format!(
                "apiVersion: v1\nkind: Config\ncurrent-context: stand-in\n\
                 clusters:\n- name: stand-in\n  cluster:\n    server: http://{addr}\n\
                 users:\n- name: stand-in\n  user:\n    token: stand-in\n\
                 contexts:\n- name: stand-in\n  context:\n    cluster: stand-in\n    user: stand-in\n"
            ),
        )
        .unwrap();
        KubeApi { addr, state, dir }
    }

    /// A kubeconfig naming this server.
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("kubeconfig")
    }

    /// A running pod of hop `hop` (in every namespace asked about).
    pub fn add_pod(&self, name: &str, hop: &str, containers: &[&str]) {
        let (lock, _) = &*self.state;
        lock.lock().unwrap().pods.push((name.into(), hop.into(), containers.iter().map(|c| c.to_string()).collect()));
    }

    /// A container writes `message` at `timestamp` (RFC 3339); followers get it at once.
    pub fn log(&self, pod: &str, container: &str, timestamp: &str, message: &str) {
        let (lock, changed) = &*self.state;
        lock.lock()
            .unwrap()
            .logs
            .entry((pod.into(), container.into()))
            .or_default()
            .push(format!("{timestamp} {message}\n"));
        changed.notify_all();
    }

    /// The requests seen as `METHOD /path?query`, in order.
    pub fn requests(&self) -> Vec<String> {
        self.seen().iter().map(|r| format!("{} {}", r.method, r.uri)).collect()
    }

    /// The requests seen, in order.
    pub fn seen(&self) -> Vec<Request> {
        self.state.0.lock().unwrap().requests.clone()
    }

    /// The objects stored now, by path.
    pub fn objects(&self) -> BTreeMap<String, Value> {
        self.state.0.lock().unwrap().objects.clone()
    }

    /// Whether the stored Deployment at `path` runs a pod template that crash-loops.
    pub fn crash_loops(&self, path: &str) -> bool {
        self.state.0.lock().unwrap().broken_deployment(path)
    }
}

/// A ReplicaSet of Deployment `deployment` (uid `uid-<deployment>`), with its revision and,
/// when given, a `ReplicaFailure` condition.
pub fn replica_set(deployment: &str, hash: &str, revision: u32, failure: Option<&str>) -> Value {
    let conditions: Vec<Value> = failure
        .map(|m| json!({"type": "ReplicaFailure", "status": "True", "reason": "FailedCreate", "message": m}))
        .into_iter()
        .collect();
    json!({
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {
            "name": format!("{deployment}-{hash}"),
            "labels": {"devpop.section.io/hop": deployment, "pod-template-hash": hash},
            "annotations": {"deployment.kubernetes.io/revision": revision.to_string()},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": deployment,
                "uid": format!("uid-{deployment}"), "controller": true}]
        },
        "spec": {"selector": {}},
        "status": {"replicas": 0, "conditions": conditions}
    })
}

/// A pod of `deployment`'s ReplicaSet `hash` whose container `container` waits for `reason`.
pub fn waiting_pod(deployment: &str, hash: &str, suffix: &str, container: &str, reason: &str, message: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": format!("{deployment}-{hash}-{suffix}"),
            "labels": {"devpop.section.io/hop": deployment, "pod-template-hash": hash}},
        "status": {"containerStatuses": [{"name": container, "ready": false, "restartCount": 3, "image": "x", "imageID": "",
            "state": {"waiting": {"reason": reason, "message": message}}}]}
    })
}

/// The items whose labels match a list call's `labelSelector` (equality terms only).
pub fn selected(items: &[Value], query: &str) -> Vec<Value> {
    let selector = query_value(query, "labelSelector").map(unescape).unwrap_or_default();
    items
        .iter()
        .filter(|item| {
            selector.split(',').filter(|t| !t.is_empty()).all(|term| match term.split_once('=') {
                Some((k, v)) => item["metadata"]["labels"][k].as_str() == Some(v),
                None => item["metadata"]["labels"].get(term).is_some(),
            })
        })
        .cloned()
        .collect()
}

/// The value a list call's `labelSelector` requires for `key`.
fn selected_value(query: &str, key: &str) -> String {
    let selector = query_value(query, "labelSelector").map(unescape).unwrap_or_default();
    selector.split(',').find_map(|t| t.strip_prefix(&format!("{key}="))).unwrap_or_default().to_owned()
}

fn not_found(path: &str) -> (u16, Value) {
    (
        404,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": format!("{path} not found"), "reason": "NotFound", "code": 404}),
    )
}

impl State {
    fn broken_deployment(&self, path: &str) -> bool {
        let text = self.objects.get(path).map(Value::to_string).unwrap_or_default();
        self.broken.iter().any(|cm| text.contains(&format!("\"{cm}\"")))
    }

    /// The pods of the namespace the list asks about: the test's, and a crash-looping one in a
    /// broken Deployment's new ReplicaSet.
    fn pods(&self, query: &str) -> Value {
        let mut items: Vec<Value> = self
            .pods
            .iter()
            .map(|(name, hop, containers)| {
                json!({
                    "metadata": {"name": name, "labels": {"app.kubernetes.io/managed-by": "devpop", "devpop.section.io/hop": hop}},
                    "spec": {"containers": containers.iter().map(|c| json!({"name": c})).collect::<Vec<_>>()}
                })
            })
            .collect();
        let hop = selected_value(query, "devpop.section.io/hop");
        if selected_value(query, "pod-template-hash") == "broken" {
            items.push(waiting_pod(
                &hop,
                "broken",
                "x1",
                "proxy",
                "CrashLoopBackOff",
                "back-off 40s restarting failed container",
            ));
        }
        json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": selected(&items, query)})
    }

    /// What an API server answers `method` on `path?query`, from what is stored.
    fn answer(&mut self, method: &str, path: &str, query: &str, accept: &str, body: Value) -> (u16, Value) {
        let path = path.to_owned();
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        // /api/v1/namespaces[/ns/kind[/name[/sub]]] or /apis/group/v1/namespaces[/ns/kind[/name[/sub]]]
        let rest =
            if segments[0] == "api" { segments.get(2..).unwrap_or(&[]) } else { segments.get(3..).unwrap_or(&[]) };
        match method {
            "PATCH" => {
                let mut obj = body;
                if query.contains("dryRun=All") {
                    return (200, obj);
                }
                if let Some(previous) = self.objects.get(&path) {
                    obj["metadata"]["creationTimestamp"] = previous["metadata"]["creationTimestamp"].clone();
                } else {
                    self.created += 1;
                    let n = self.created;
                    obj["metadata"]["creationTimestamp"] =
                        json!(format!("2026-11-30T0{}:{:02}:{:02}Z", n / 3600, n / 60 % 60, n % 60));
                }
                obj["metadata"]["generation"] = json!(1);
                if path.contains("/services/") {
                    obj["spec"]["clusterIP"] = json!("10.96.7.1");
                }
                if path.contains("/configmaps/") && obj["data"].to_string().contains("BROKEN") {
                    self.broken.insert(obj["metadata"]["name"].as_str().unwrap_or_default().to_owned());
                }
                self.objects.insert(path, obj.clone());
                (200, obj)
            }
            "DELETE" => match self.objects.remove(&path) {
                Some(_) => (200, json!({"kind": "Status", "apiVersion": "v1", "status": "Success", "metadata": {}})),
                None => not_found(&path),
            },
            "GET" if path.ends_with("/status") => {
                let object = path.trim_end_matches("/status").to_owned();
                let Some(mut d) = self.objects.get(&object).cloned() else { return not_found(&path) };
                let name = d["metadata"]["name"].as_str().unwrap_or_default().to_owned();
                d["metadata"]["uid"] = json!(format!("uid-{name}"));
                d["metadata"]["annotations"] = json!({"deployment.kubernetes.io/revision": "2"});
                let n = d["spec"]["replicas"].as_i64().unwrap_or(1);
                d["status"] = if self.broken_deployment(&object) {
                    json!({"observedGeneration": 1, "replicas": n, "updatedReplicas": n, "availableReplicas": 0})
                } else {
                    json!({"observedGeneration": 1, "replicas": n, "updatedReplicas": n, "availableReplicas": n, "readyReplicas": n})
                };
                (200, d)
            }
            "GET" if rest.len() == 3 && rest[2] == "replicasets" => {
                let hop = selected_value(query, "devpop.section.io/hop");
                let deployment = format!("/apis/apps/v1/namespaces/{}/deployments/{hop}", rest[1]);
                let hash = if self.broken_deployment(&deployment) { "broken" } else { "fine" };
                (
                    200,
                    json!({"apiVersion": "apps/v1", "kind": "ReplicaSetList", "metadata": {},
                        "items": [replica_set(&hop, hash, 2, None)]}),
                )
            }
            "GET" if rest.len() == 3 && rest[2] == "pods" => (200, self.pods(query)),
            "GET" if rest.len() % 2 == 0 => match self.objects.get(&path) {
                Some(o) => (200, o.clone()),
                None => not_found(&path),
            },
            "GET" => {
                let prefix = format!("{path}/");
                let stored: Vec<Value> = self
                    .objects
                    .iter()
                    .filter(|(p, _)| p.starts_with(&prefix) && !p[prefix.len()..].contains('/'))
                    .map(|(_, o)| o.clone())
                    .collect();
                let mut items = selected(&stored, query);
                if accept.contains("PartialObjectMetadata") {
                    for item in &mut items {
                        *item = json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
                            "metadata": item["metadata"].clone()});
                    }
                    (
                        200,
                        json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadataList", "metadata": {}, "items": items}),
                    )
                } else {
                    (200, json!({"apiVersion": "v1", "kind": "List", "metadata": {}, "items": items}))
                }
            }
            _ => (405, json!({})),
        }
    }
}

fn query_value<'a>(query: &'a str, key: &str) -> Option<&'a str> {
    query.split('&').find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
}

fn unescape(s: &str) -> String {
    s.replace("%3D", "=").replace("%2C", ",").replace("%2F", "/")
}

fn respond(stream: &mut TcpStream, status: &str, content_type: &str, body: &[u8]) -> std::io::Result<()> {
    write!(stream, "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n", body.len())?;
    stream.write_all(body)
}

fn serve(stream: TcpStream, state: &(Mutex<State>, Condvar)) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut stream = stream;
    loop {
        let mut request = String::new();
        if reader.read_line(&mut request).unwrap_or(0) == 0 {
            return;
        }
        let request = request.trim_end().to_owned();
        let (mut length, mut content_type, mut accept) = (0, String::new(), String::new());
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 || header == "\r\n" {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                let value = value.trim();
                match name.to_ascii_lowercase().as_str() {
                    "content-length" => length = value.parse().unwrap_or(0),
                    "content-type" => content_type = value.to_owned(),
                    "accept" => accept = value.to_owned(),
                    _ => {}
                }
            }
        }
        let mut body = vec![0; length];
        if std::io::Read::read_exact(&mut reader, &mut body).is_err() {
            return;
        }
        let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let mut words = request.split(' ');
        let (method, target) = (words.next().unwrap_or("").to_owned(), words.next().unwrap_or("").to_owned());
        state.0.lock().unwrap().requests.push(Request {
            method: method.clone(),
            uri: target.clone(),
            content_type,
            body: body.clone(),
        });
        let (path, query) = target.split_once('?').unwrap_or((&target, ""));
        let parts: Vec<&str> = path.split('/').collect();
        let result = match (method.as_str(), parts.as_slice()) {
            ("GET", ["", "api", "v1", "namespaces", _, "pods", pod, "log"]) => {
                let container = query_value(query, "container").unwrap_or("").to_owned();
                let tail = query_value(query, "tailLines").and_then(|n| n.parse().ok()).unwrap_or(usize::MAX);
                let key = (pod.to_string(), container);
                if query_value(query, "follow") == Some("true") {
                    follow(&mut stream, state, &key, tail);
                    return;
                }
                let lines = state.0.lock().unwrap().logs.get(&key).cloned().unwrap_or_default();
                let body: String = lines[lines.len().saturating_sub(tail)..].concat();
                respond(&mut stream, "200 OK", "text/plain", body.as_bytes())
            }
            _ => {
                let (code, answer) = state.0.lock().unwrap().answer(&method, path, query, &accept, body);
                let status = match code {
                    200 => "200 OK",
                    404 => "404 Not Found",
                    _ => "405 Method Not Allowed",
                };
                respond(&mut stream, status, "application/json", answer.to_string().as_bytes())
            }
        };
        if result.is_err() {
            return;
        }
    }
}

/// A followed log: the tail, then each new line as a chunk, until the client goes away.
fn follow(stream: &mut TcpStream, state: &(Mutex<State>, Condvar), key: &(String, String), tail: usize) {
    let (lock, changed) = state;
    if write!(stream, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n").is_err() {
        return;
    }
    let mut sent = {
        let logs = lock.lock().unwrap();
        let n = logs.logs.get(key).map_or(0, Vec::len);
        n.saturating_sub(tail)
    };
    loop {
        let pending: Vec<String> = {
            let mut logs = lock.lock().unwrap();
            // Wakes on every new line; a client that went away is noticed at the next write.
            while logs.logs.get(key).map_or(0, Vec::len) <= sent {
                logs = changed.wait(logs).unwrap();
            }
            logs.logs[key][sent..].to_vec()
        };
        for line in pending {
            if write!(stream, "{:x}\r\n{line}\r\n", line.len()).and_then(|_| stream.flush()).is_err() {
                return;
            }
            sent += 1;
        }
    }
}
