//! The install manifests (docker/install.yaml): a strict schema check, and an RBAC role that
//! grants exactly what the cluster target uses.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

fn install_yaml() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("docker/install.yaml")
}

#[test]
fn install_manifests_pass_strict_kubernetes_1_33_and_1_37_validation() {
    let validator = std::env::var_os("DEVPOP_KUBERNETES_VALIDATE")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/kubernetes-validate"));
    assert!(validator.is_file(), "run the tests with tests/run, which installs kubernetes-validate");
    let mut text = String::new();
    for version in ["1.33.0", "1.37.0"] {
        let out = Command::new(&validator)
            .args(["--strict", "-k", version, "--no-warn"])
            .arg(install_yaml())
            .output()
            .unwrap();
        text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success() && !text.contains("ERROR"), "{version}: {text}");
    }
    for kind in [
        "namespace/devpop",
        "serviceaccount/devpop",
        "clusterrole/devpop-applier",
        "clusterrolebinding/devpop-applier",
        "persistentvolumeclaim/devpop-data",
        "deployment/devpop",
        "service/devpop",
    ] {
        assert!(text.contains(&format!("passed for resource {kind}")), "{kind} missing:\n{text}");
    }
    let yaml = std::fs::read_to_string(install_yaml()).unwrap();
    assert!(yaml.contains("nodePort: 30090"), "DevPoP's port");
}

/// (apiGroup, resource) pairs the role grants write access to.
fn granted() -> BTreeSet<(String, String)> {
    let yaml = std::fs::read_to_string(install_yaml()).unwrap();
    let mut out = BTreeSet::new();
    for doc in serde_yaml_ng::Deserializer::from_str(&yaml) {
        let v: serde_yaml_ng::Value = serde::Deserialize::deserialize(doc).unwrap();
        if v["kind"] != "ClusterRole" {
            continue;
        }
        for rule in v["rules"].as_sequence().unwrap() {
            let verbs: Vec<&str> = rule["verbs"].as_sequence().unwrap().iter().map(|x| x.as_str().unwrap()).collect();
            if !verbs.contains(&"patch") {
                continue;
            }
            for g in rule["apiGroups"].as_sequence().unwrap() {
                for r in rule["resources"].as_sequence().unwrap() {
                    out.insert((g.as_str().unwrap().to_owned(), r.as_str().unwrap().to_owned()));
                }
            }
        }
    }
    out
}

#[test]
fn the_role_grants_exactly_the_kinds_devpop_renders() {
    let out = tempfile::tempdir().unwrap();
    let status = Command::new(common::DEVPOP)
        .args(["render", "--env", "Production", "--out"])
        .arg(out.path())
        .arg(common::fixture("repos/sample-application"))
        .output()
        .unwrap();
    assert!(status.status.success());
    let mut rendered = BTreeSet::new();
    for e in std::fs::read_dir(out.path()).unwrap().flatten() {
        let v: serde_yaml_ng::Value = serde_yaml_ng::from_str(&std::fs::read_to_string(e.path()).unwrap()).unwrap();
        let (Some(api), Some(kind)) = (v["apiVersion"].as_str(), v["kind"].as_str()) else { continue };
        if kind == "Kustomization" {
            continue;
        }
        let group = api.rsplit_once('/').map_or("", |(g, _)| g).to_owned();
        let resource = match kind {
            "NetworkPolicy" => "networkpolicies".to_owned(),
            "Ingress" => "ingresses".to_owned(),
            k => format!("{}s", k.to_ascii_lowercase()),
        };
        rendered.insert((group, resource));
    }
    assert_eq!(granted(), rendered, "the ClusterRole must grant write access to what is rendered, and nothing more");
}

fn install_docs() -> Vec<serde_yaml_ng::Value> {
    let yaml = std::fs::read_to_string(install_yaml()).unwrap();
    serde_yaml_ng::Deserializer::from_str(&yaml).map(|d| serde::Deserialize::deserialize(d).unwrap()).collect()
}

fn strings(v: &serde_yaml_ng::Value) -> Vec<String> {
    v.as_sequence().unwrap().iter().map(|x| x.as_str().unwrap().to_owned()).collect()
}

#[test]
fn the_install_serves_with_token_auth_and_labels_its_namespace_for_pod_security() {
    let docs = install_docs();
    let ns = docs.iter().find(|d| d["kind"] == "Namespace").unwrap();
    let labels = &ns["metadata"]["labels"];
    // bubblewrap needs seccomp Unconfined, which baseline forbids: an explicit level.
    assert_eq!(labels["pod-security.kubernetes.io/enforce"].as_str(), Some("privileged"));
    assert_eq!(labels["pod-security.kubernetes.io/warn"].as_str(), Some("baseline"));
    let deploy = docs.iter().find(|d| d["kind"] == "Deployment").unwrap();
    let pod = &deploy["spec"]["template"]["spec"];
    let args = strings(&pod["containers"][0]["args"]);
    assert!(args.contains(&"--auth=tokens".to_owned()), "{args:?}");
    assert!(!args.iter().any(|a| a.contains("insecure")), "{args:?}");
    assert_eq!(pod["initContainers"][0]["name"].as_str(), Some("first-admin-token"));
}

/// The first-admin-token init container's command, run here as the pod runs it: the first start
/// prints an admin token, a restart prints nothing new.
#[test]
fn the_first_admin_token_is_created_on_the_first_start_only_and_printed_once() {
    let docs = install_docs();
    let deploy = docs.iter().find(|d| d["kind"] == "Deployment").unwrap();
    let init = &deploy["spec"]["template"]["spec"]["initContainers"][0];
    let command = strings(&init["command"]);
    let data = tempfile::tempdir().unwrap();
    let bin = Path::new(common::DEVPOP).parent().unwrap();
    let run = || {
        Command::new(&command[0])
            .args(&command[1..])
            .env("DEVPOP_DATA", data.path())
            .env("PATH", format!("{}:/usr/bin:/bin", bin.display()))
            .output()
            .unwrap()
    };
    let first = run();
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    let token = String::from_utf8(first.stdout).unwrap().trim().to_owned();
    assert!(!token.is_empty() && !token.contains(' '), "one token on stdout: {token:?}");
    assert!(String::from_utf8_lossy(&first.stderr).contains("every account"));
    let again = run();
    assert!(again.status.success() && again.stdout.is_empty(), "a restart creates no second admin token");
    let tokens = std::fs::read_to_string(data.path().join("tokens.json")).unwrap();
    assert!(!tokens.contains(&token), "only the hash is kept");

    // The server of the install takes it: an admin API call with the token succeeds.
    let devpop = common::Devpop::start_in(data, &["--auth", "tokens"]);
    let addr = devpop.addr();
    let ok = common::http(&addr, "GET", "/api/v1/tokens", &[("authorization", &format!("Bearer {token}"))], b"");
    assert_eq!(ok.status, 200, "{}", ok.text());
}

/// The image's default command (Dockerfile ENTRYPOINT + CMD) starts a server: beyond loopback
/// it must bring its own authentication. (No Docker engine here: the same argv is run directly,
/// on a free port instead of 8080.)
#[test]
fn the_dockerfiles_default_command_starts_a_server() {
    let dockerfile = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docker/Dockerfile")).unwrap();
    let json_of = |key: &str| -> Vec<String> {
        let line = dockerfile.lines().rfind(|l| l.starts_with(key)).unwrap();
        serde_json::from_str(line[key.len()..].trim()).unwrap()
    };
    let (entrypoint, cmd) = (json_of("ENTRYPOINT"), json_of("CMD"));
    assert_eq!(entrypoint, ["devpop"]);
    let args: Vec<String> = cmd.iter().map(|a| a.replace("0.0.0.0:8080", "0.0.0.0:0")).collect();
    let data = tempfile::tempdir().unwrap();
    // The cluster target finds its cluster at start: give it a kubeconfig (never contacted).
    let kubeconfig = data.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        "apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: 'https://127.0.0.1:1'}}]\n\
         users: [{name: u, user: {token: t}}]\ncontexts: [{name: x, context: {cluster: c, user: u}}]\ncurrent-context: x\n",
    )
    .unwrap();
    let mut child = Command::new(common::DEVPOP)
        .args(&args)
        .env("DEVPOP_DATA", data.path().join("data"))
        .env("KUBECONFIG", &kubeconfig)
        .env("DEVPOP_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut line).unwrap();
    let status = child.try_wait().unwrap();
    child.kill().ok();
    let out = child.wait_with_output().unwrap();
    assert!(
        line.starts_with("devpop serving on ") && status.is_none(),
        "the default command did not start: {line:?} {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
