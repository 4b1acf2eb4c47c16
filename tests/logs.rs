//! An environment's container logs through the real server: `GET .../environment/{env}/logs`
//! (Aperture's path style), newest first, per module, bounded, followed live. The cluster is a
//! stand-in API server over HTTP (`common::kubeapi`: no Kubernetes API server can run here), so
//! every test against it says `stand_in_api` in its name; the server, its kube client and the
//! HTTP it speaks are real.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::kubeapi::KubeApi;
use common::*;
use serde_json::Value;

const LOGS: &str = "/api/v1/account/1/application/1/environment/Production/logs";

/// A server on `target`, with application 1/1 whose Production holds the sample application.
fn server(args: &[&str]) -> Devpop {
    let devpop = Devpop::start_with(args);
    let url = devpop.create_app("1", "1", "site");
    let (_dir, work) = clone(&url);
    replace_tree(&work, &fixture("repos/sample-application"));
    commit_all(&work, "the sample application");
    let out = git(&work, &["push", "origin", "HEAD:Production"]);
    assert!(out.status.success(), "{}", stderr(&out));
    devpop
}

fn get(devpop: &Devpop, path: &str) -> (u16, Value) {
    let r = http(&devpop.addr(), "GET", path, &[], b"");
    (r.status, serde_json::from_slice(&r.body).unwrap_or(Value::Null))
}

fn stand_in() -> KubeApi {
    let api = KubeApi::start();
    api.add_pod("private-ingress-7d9f-abcde", "private-ingress", &["nginx"]);
    api.add_pod("m1-cache-5c4b-fghij", "m1-cache", &["varnish", "log-shipper"]);
    api.log("private-ingress-7d9f-abcde", "nginx", "2026-11-30T06:00:01Z", "GET / 200");
    api.log("m1-cache-5c4b-fghij", "varnish", "2026-11-30T06:00:02Z", "MISS /");
    api.log("private-ingress-7d9f-abcde", "nginx", "2026-11-30T06:00:03Z", "GET /a 200");
    api.log("m1-cache-5c4b-fghij", "log-shipper", "2026-11-30T06:00:04Z", "shipped 2 lines");
    api
}

#[test]
fn the_render_only_target_says_where_logs_live_instead() {
    let devpop = server(&[]);
    let (status, body) = get(&devpop, LOGS);
    assert_eq!(status, 404, "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(message.contains("live where the rendered manifests are applied"), "{message}");
}

#[test]
fn stand_in_api_logs_of_every_pod_and_container_come_merged_newest_first() {
    let api = stand_in();
    let kubeconfig = api.kubeconfig();
    let devpop = server(&["--target", "cluster", "--kubeconfig", kubeconfig.to_str().unwrap()]);
    let (status, body) = get(&devpop, LOGS);
    assert_eq!(status, 200, "{body}");
    let lines: Vec<(&str, &str, &str)> = body
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["module"].as_str().unwrap(), e["container"].as_str().unwrap(), e["message"].as_str().unwrap()))
        .collect();
    assert_eq!(
        lines,
        [
            ("m1-cache", "log-shipper", "shipped 2 lines"),
            ("private-ingress", "nginx", "GET /a 200"),
            ("m1-cache", "varnish", "MISS /"),
            ("private-ingress", "nginx", "GET / 200"),
        ]
    );
    let first = &body[0];
    assert_eq!(first["timestamp"], "2026-11-30T06:00:04Z");
    assert_eq!(first["instanceName"], "m1-cache-5c4b-fghij");
    // The pods of the environment's namespace, as the renderer names it, and each log tailed
    // with the kubelet's timestamps.
    let (_, env) = get(&devpop, "/api/v1/accounts/1/applications/1/environments/Production");
    let namespace = env["namespace"].as_str().unwrap();
    let requests = api.requests();
    assert!(
        requests.iter().any(|r| r.starts_with(&format!("GET /api/v1/namespaces/{namespace}/pods?"))),
        "{requests:?}"
    );
    assert!(requests.iter().filter(|r| r.contains("/log?")).all(|r| r.contains("timestamps=true")), "{requests:?}");
}

#[test]
fn stand_in_api_logs_are_filtered_by_module_and_bounded_in_length() {
    let api = stand_in();
    let kubeconfig = api.kubeconfig();
    let devpop = server(&["--target", "cluster", "--kubeconfig", kubeconfig.to_str().unwrap()]);
    let (status, body) = get(&devpop, &format!("{LOGS}?moduleName=m1-cache&length=1"));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body.as_array().unwrap().len(), 1);
    assert_eq!(body[0]["message"], "shipped 2 lines");
    let (status, body) = get(&devpop, &format!("{LOGS}?moduleName=private-ingress"));
    assert_eq!(status, 200);
    assert!(body.as_array().unwrap().iter().all(|e| e["module"] == "private-ingress"), "{body}");
    for bad in ["length=0", "length=5000", "moduleName=a%2Cb", "moduleName=x%3Dy"] {
        let (status, body) = get(&devpop, &format!("{LOGS}?{bad}"));
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(body["message"].is_string(), "{bad}: {body}");
    }
}

#[test]
fn stand_in_api_a_followed_log_streams_each_new_line_as_it_is_written() {
    let api = stand_in();
    let kubeconfig = api.kubeconfig();
    let devpop = server(&["--target", "cluster", "--kubeconfig", kubeconfig.to_str().unwrap()]);
    let mut stream = TcpStream::connect(devpop.addr()).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(stream, "GET {LOGS}?moduleName=m1-cache&length=1&follow=true HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut reader = BufReader::new(stream);
    let mut head = String::new();
    while reader.read_line(&mut head).unwrap() > 0 && !head.ends_with("\r\n\r\n") {}
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.to_ascii_lowercase().contains("content-type: application/x-ndjson"), "{head}");
    // Chunked: a size line, then the chunk (one JSON line each here).
    let mut next_entry = || -> Value {
        loop {
            let mut line = String::new();
            assert!(reader.read_line(&mut line).unwrap() > 0, "the stream ended");
            if let Ok(v) = serde_json::from_str::<Value>(line.trim()) {
                if v.is_object() {
                    return v;
                }
            }
        }
    };
    // The tail of each of the module's containers (one line each), in either order.
    let mut tail = [next_entry()["message"].clone(), next_entry()["message"].clone()];
    tail.sort_by_key(|m| m.to_string());
    assert_eq!(tail, [Value::from("MISS /"), Value::from("shipped 2 lines")]);
    // Then what the container writes from now on, as it writes it.
    api.log("m1-cache-5c4b-fghij", "varnish", "2026-11-30T06:00:09Z", "HIT /b");
    let live = next_entry();
    assert_eq!((live["container"].as_str(), live["message"].as_str()), (Some("varnish"), Some("HIT /b")));
    // Another module's lines are not in this stream.
    api.log("private-ingress-7d9f-abcde", "nginx", "2026-11-30T06:00:10Z", "GET /c 200");
    api.log("m1-cache-5c4b-fghij", "varnish", "2026-11-30T06:00:11Z", "HIT /d");
    assert_eq!(next_entry()["message"], "HIT /d");
}
