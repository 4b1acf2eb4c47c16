//! A stand-in Kubernetes API server over plain HTTP on 127.0.0.1, for `devpop serve --target
//! cluster` in tests (no API server can run on these machines). It answers what the logs
//! feature asks: the pod list (filtered by label selector) and each container's log, tailed or
//! followed (chunked, a line at a time as the test writes it). Everything else is a 404
//! `Status`, as an API server answers for an object it does not have. Every request line is kept.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};

#[derive(Default)]
struct State {
    /// (pod name, its hop label, its containers).
    pods: Vec<(String, String, Vec<String>)>,
    /// Lines written so far, by (pod, container), each already stamped.
    logs: HashMap<(String, String), Vec<String>>,
    requests: Vec<String>,
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

    /// The request lines seen (`GET /api/v1/...`), in order.
    pub fn requests(&self) -> Vec<String> {
        self.state.0.lock().unwrap().requests.clone()
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
        let mut length = 0;
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 || header == "\r\n" {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0; length];
        if std::io::Read::read_exact(&mut reader, &mut body).is_err() {
            return;
        }
        state.0.lock().unwrap().requests.push(request.clone());
        let target = request.split(' ').nth(1).unwrap_or("");
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let parts: Vec<&str> = path.split('/').collect();
        let result = match parts.as_slice() {
            ["", "api", "v1", "namespaces", _, "pods"] => pod_list(&mut stream, state, &unescape(query)),
            ["", "api", "v1", "namespaces", _, "pods", pod, "log"] => {
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
            _ => respond(
                &mut stream,
                "404 Not Found",
                "application/json",
                br#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"not found","reason":"NotFound","code":404}"#,
            ),
        };
        if result.is_err() {
            return;
        }
    }
}

fn pod_list(stream: &mut TcpStream, state: &(Mutex<State>, Condvar), query: &str) -> std::io::Result<()> {
    let selector = query_value(query, "labelSelector").unwrap_or("");
    let hop = selector.split(',').find_map(|t| t.strip_prefix("devpop.section.io/hop="));
    let pods = state.0.lock().unwrap().pods.clone();
    let items: Vec<serde_json::Value> = pods
        .iter()
        .filter(|(_, h, _)| hop.is_none_or(|hop| hop == h))
        .map(|(name, hop, containers)| {
            serde_json::json!({
                "metadata": {"name": name, "labels": {"app.kubernetes.io/managed-by": "devpop", "devpop.section.io/hop": hop}},
                "spec": {"containers": containers.iter().map(|c| serde_json::json!({"name": c})).collect::<Vec<_>>()}
            })
        })
        .collect();
    let body = serde_json::json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": items});
    respond(stream, "200 OK", "application/json", body.to_string().as_bytes())
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
