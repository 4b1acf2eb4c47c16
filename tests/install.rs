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
fn install_manifests_pass_strict_kubernetes_1_33_validation() {
    let validator = std::env::var_os("DEVPOP_KUBERNETES_VALIDATE")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/kubernetes-validate"));
    assert!(validator.is_file(), "run the tests with tests/run, which installs kubernetes-validate");
    let out =
        Command::new(validator).args(["--strict", "-k", "1.33.0", "--no-warn"]).arg(install_yaml()).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && !text.contains("ERROR"), "{text}");
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
