//! GitOps consumers of the rendered repo: the Argo CD and Flux manifests in docs/gitops name
//! what a real push publishes, and a real `kubectl kustomize` builds every environment folder
//! into objects that pass strict schema validation (what Argo CD and Flux apply).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use serde_yaml_ng::Value;

fn tool(var: &str, venv_name: &str) -> PathBuf {
    let path = std::env::var_os(var)
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin").join(venv_name));
    assert!(path.is_file(), "{} is missing: run the tests with tests/run, which installs it", path.display());
    path
}

fn docs(name: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/gitops").join(name)).unwrap();
    serde_yaml_ng::Deserializer::from_str(&text).map(|d| serde::Deserialize::deserialize(d).unwrap()).collect()
}

fn validate_strict(file: &Path) -> Result<String, String> {
    let mut all = String::new();
    for version in ["1.33.0", "1.37.0"] {
        let out = Command::new(tool("DEVPOP_KUBERNETES_VALIDATE", "kubernetes-validate"))
            .args(["--strict", "-k", version, "--no-warn"])
            .arg(file)
            .output()
            .unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        if !out.status.success() || text.contains("ERROR") {
            return Err(format!("Kubernetes {version}:\n{text}"));
        }
        all.push_str(&text);
    }
    Ok(all)
}

/// The sample application pushed to Production and Staging; its rendered repo cloned.
fn pushed() -> (Devpop, tempfile::TempDir, PathBuf, String) {
    let devpop = Devpop::start();
    let (_dir, _work) = push_sample_everywhere(&devpop);
    let rendered_path = "/rendered/account/9999/application/9999/site.git".to_owned();
    let (rdir, rendered) = clone(&format!("{}{rendered_path}", devpop.url));
    (devpop, rdir, rendered, rendered_path)
}

/// The environment folders of a rendered repo clone.
fn folders(rendered: &Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(rendered)
        .unwrap()
        .flatten()
        .filter(|e| e.file_type().unwrap().is_dir() && e.file_name() != ".git")
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    out.sort();
    out
}

#[test]
fn kubectl_kustomize_builds_every_rendered_environment_folder_into_strictly_valid_objects() {
    let (_devpop, _rdir, rendered, _) = pushed();
    let kubectl = tool("DEVPOP_KUBECTL", "kubectl");
    let envs = folders(&rendered);
    assert_eq!(envs, ["Production", "Staging"]);
    let commit = git_ok(&rendered, &["log", "-1", "--format=%s"]);
    let commit = commit.trim().rsplit(' ').next().unwrap().to_owned();
    for env in &envs {
        let folder = rendered.join(env);
        let k = std::fs::read_to_string(folder.join("kustomization.yaml")).unwrap();
        // kustomize < 4.5.5 does not know the field; false is its default.
        assert!(!k.contains("includeTemplates"), "{k}");
        let out = Command::new(&kubectl).arg("kustomize").arg(&folder).output().unwrap();
        assert!(out.status.success(), "kubectl kustomize {env}: {}", stderr(&out));
        let built = String::from_utf8(out.stdout).unwrap();
        let file = rendered.parent().unwrap().join(format!("{env}-built.yaml"));
        std::fs::write(&file, &built).unwrap();
        let report = validate_strict(&file).unwrap_or_else(|e| panic!("{env}: {e}"));
        let files = std::fs::read_dir(&folder).unwrap().count() - 1;
        assert_eq!(report.matches("passed for resource").count(), 2 * files, "every object, twice:\n{report}");

        // The kustomization puts the commit label back on every object, never on a pod
        // template or a selector.
        for doc in serde_yaml_ng::Deserializer::from_str(&built) {
            let v: Value = serde::Deserialize::deserialize(doc).unwrap();
            let what = format!("{}/{}", v["kind"].as_str().unwrap(), v["metadata"]["name"].as_str().unwrap());
            assert_eq!(
                v["metadata"]["labels"]["devpop.section.io/commit"].as_str(),
                Some(commit.as_str()),
                "{env}: {what}"
            );
            if v["kind"] == "Deployment" {
                assert!(
                    v["spec"]["template"]["metadata"]["labels"].get("devpop.section.io/commit").is_none(),
                    "{what}"
                );
                assert!(v["spec"]["selector"]["matchLabels"].get("devpop.section.io/commit").is_none(), "{what}");
            }
        }
    }
}

#[test]
fn the_argo_cd_and_flux_manifests_in_docs_sync_the_environment_folders_of_the_rendered_repo() {
    let (_devpop, _rdir, rendered, rendered_path) = pushed();
    let branch = git_ok(&rendered, &["rev-parse", "--abbrev-ref", "HEAD"]).trim().to_owned();
    let fill = |url: &str| url.replace("ACCOUNT", "9999").replace("APPLICATION", "9999").replace("REPO", "site");
    let path_of = |url: &str| format!("/{}", fill(url).splitn(4, '/').nth(3).unwrap());

    // Argo CD: an ApplicationSet whose git directory generator finds exactly the environment
    // folders, applied server-side with prune.
    let argo = docs("argocd.yaml");
    assert_eq!(argo.len(), 1);
    let set = &argo[0];
    assert_eq!(
        (set["apiVersion"].as_str(), set["kind"].as_str()),
        (Some("argoproj.io/v1alpha1"), Some("ApplicationSet"))
    );
    let git_gen = &set["spec"]["generators"][0]["git"];
    assert_eq!(path_of(git_gen["repoURL"].as_str().unwrap()), rendered_path);
    assert_eq!(git_gen["revision"].as_str(), Some(branch.as_str()));
    let pattern = git_gen["directories"][0]["path"].as_str().unwrap();
    assert_eq!(pattern, "*", "one Application per top-level folder");
    for env in folders(&rendered) {
        assert!(rendered.join(&env).join("kustomization.yaml").is_file(), "{env} is a kustomization");
    }
    let template = &set["spec"]["template"]["spec"];
    assert_eq!(path_of(template["source"]["repoURL"].as_str().unwrap()), rendered_path);
    assert_eq!(template["source"]["targetRevision"].as_str(), Some(branch.as_str()));
    assert_eq!(template["source"]["path"].as_str(), Some("{{ .path.path }}"));
    let sync: Vec<&str> =
        template["syncPolicy"]["syncOptions"].as_sequence().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert!(sync.contains(&"ServerSideApply=true"), "large ConfigMaps need server-side apply: {sync:?}");
    assert_eq!(template["syncPolicy"]["automated"]["prune"].as_bool(), Some(true));

    // Flux: a GitRepository of the rendered repo's branch, a Kustomization of a folder in it.
    let flux = docs("flux.yaml");
    let repo = flux.iter().find(|v| v["kind"] == "GitRepository").expect("a GitRepository");
    assert_eq!(repo["apiVersion"].as_str(), Some("source.toolkit.fluxcd.io/v1"));
    assert_eq!(path_of(repo["spec"]["url"].as_str().unwrap()), rendered_path);
    assert_eq!(repo["spec"]["ref"]["branch"].as_str(), Some(branch.as_str()));
    let ks = flux.iter().find(|v| v["kind"] == "Kustomization").expect("a Kustomization");
    assert_eq!(ks["apiVersion"].as_str(), Some("kustomize.toolkit.fluxcd.io/v1"));
    assert_eq!(ks["spec"]["sourceRef"]["name"], repo["metadata"]["name"]);
    assert_eq!(ks["spec"]["sourceRef"]["kind"].as_str(), Some("GitRepository"));
    let path = ks["spec"]["path"].as_str().unwrap();
    assert!(rendered.join(path).join("kustomization.yaml").is_file(), "{path} is an environment folder");
    assert_eq!(ks["spec"]["prune"].as_bool(), Some(true));
}
