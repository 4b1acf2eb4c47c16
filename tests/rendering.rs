//! Rendering: snapshots of the sample application, a real schema validator over every rendered
//! object, the chain wiring object by object, and the rendered repo after real pushes.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use devpop::checks::{self, Subject};
use devpop::names::RepoId;
use devpop::packages::PackageStore;
use devpop::rendering::{self, Object, RenderSettings, Rendered};
use devpop::source::{RepoSource, WorkDir};
use k8s_openapi::api::networking::v1::NetworkPolicy;

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

fn packages() -> (tempfile::TempDir, PackageStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = PackageStore::new(dir.path());
    for p in ["example-simple", "edge-cache"] {
        store.add(&fixture(&format!("packages/{p}"))).unwrap();
    }
    (dir, store)
}

fn render_dir(dir: &Path, env: &str, hop_ips: &BTreeMap<String, String>) -> Rendered {
    let (_d, store) = packages();
    let source = WorkDir { root: dir };
    let report = devpop::validation::check(&source.snapshot().unwrap(), env, &store.catalog());
    assert!(report.is_ok(), "{:?}", report.diagnostics);
    let id = RepoId::new("9999", "9999", "sample-application").unwrap();
    let subject = Subject { id: &id, environment: env, commit: COMMIT };
    checks::render(&source, subject, report.config.as_ref().unwrap(), &store, &RenderSettings::default(), hop_ips)
        .unwrap()
}

fn sample(env: &str) -> Rendered {
    render_dir(&fixture("repos/sample-application"), env, &BTreeMap::new())
}

#[test]
fn sample_application_production_renders_as_snapshotted() {
    insta::assert_snapshot!("sample_production", rendering::to_yaml(&sample("Production")));
}

#[test]
fn sample_application_staging_renders_as_snapshotted() {
    insta::assert_snapshot!("sample_staging", rendering::to_yaml(&sample("Staging")));
}

#[test]
fn rendering_is_deterministic() {
    assert_eq!(rendering::to_yaml(&sample("Production")), rendering::to_yaml(&sample("Production")));
}

/// The validator the test command installs (tests/run).
fn kubernetes_validate() -> PathBuf {
    let path = std::env::var_os("DEVPOP_KUBERNETES_VALIDATE")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/kubernetes-validate"));
    assert!(path.is_file(), "{} is missing: run the tests with tests/run, which installs it", path.display());
    path
}

fn validate_strict(files: &[PathBuf]) -> (bool, String) {
    let out = Command::new(kubernetes_validate())
        .args(["--strict", "-k", "1.33.0", "--no-warn"])
        .args(files)
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success() && !text.contains("ERROR"), text)
}

fn write_objects(rendered: &Rendered, dir: &Path) -> Vec<PathBuf> {
    rendered
        .objects
        .iter()
        .enumerate()
        .map(|(i, o)| {
            let path = dir.join(format!("{i:03}-{}.yaml", o.key().replace('/', "-")));
            std::fs::write(&path, rendering::object_yaml(o)).unwrap();
            path
        })
        .collect()
}

#[test]
fn every_rendered_object_passes_strict_kubernetes_1_33_schema_validation() {
    let out = tempfile::tempdir().unwrap();
    let resolved: BTreeMap<String, String> = [("m2-example", "10.96.0.20"), ("egress", "10.96.0.30")]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let mut files = Vec::new();
    for (n, (case, env, ips)) in [
        ("repos/sample-application", "Production", BTreeMap::new()),
        ("repos/sample-application", "Staging", BTreeMap::new()),
        ("repos/sample-application", "Production", resolved),
        ("bad/no-origin", "Production", BTreeMap::new()),
    ]
    .into_iter()
    .enumerate()
    {
        let dir = out.path().join(n.to_string());
        std::fs::create_dir(&dir).unwrap();
        files.extend(write_objects(&render_dir(&fixture(case), env, &ips), &dir));
    }
    assert!(files.len() > 100, "{} files", files.len());
    let (ok, text) = validate_strict(&files);
    assert!(ok, "kubernetes-validate --strict failed:\n{text}");

    // The validator does reject what is wrong (so the check above means something).
    let bad = out.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec: {replicas: 1, selector: {}, templat: {}}\n",
    )
    .unwrap();
    assert!(!validate_strict(&[bad]).0, "an invalid Deployment must fail validation");
}

fn find<'a>(r: &'a Rendered, key: &str) -> &'a Object {
    r.objects.iter().find(|o| o.key() == key).unwrap_or_else(|| panic!("no {key}"))
}

fn policy<'a>(r: &'a Rendered, name: &str) -> &'a NetworkPolicy {
    match find(r, &format!("NetworkPolicy/{name}")) {
        Object::NetworkPolicy(p) => p,
        _ => unreachable!(),
    }
}

/// The hop labels a policy's peers select.
fn peers(peers: Option<&Vec<k8s_openapi::api::networking::v1::NetworkPolicyPeer>>) -> Vec<String> {
    peers
        .into_iter()
        .flatten()
        .map(|p| {
            if let Some(ip) = &p.ip_block {
                return format!("ip:{}", ip.cidr);
            }
            if let Some(ns) = &p.namespace_selector {
                return format!("ns:{}", ns.match_labels.as_ref().unwrap()["kubernetes.io/metadata.name"]);
            }
            p.pod_selector.as_ref().unwrap().match_labels.as_ref().unwrap()[rendering::LABEL_HOP].clone()
        })
        .collect()
}

#[test]
fn each_hop_points_to_the_next_and_network_policies_allow_exactly_the_chain() {
    let ips: BTreeMap<String, String> = [("m2-example", "10.96.0.20"), ("egress", "10.96.0.30")]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let r = render_dir(&fixture("repos/sample-application"), "Production", &ips);
    let chain = ["private-ingress", "m1-cache", "m2-example", "egress"];

    // private-ingress forwards to the first module's Service.
    let Object::ConfigMap(cm) = find(&r, "ConfigMap/private-ingress-nginx") else { unreachable!() };
    let conf = &cm.data.as_ref().unwrap()["nginx.conf"];
    assert!(conf.contains(&format!("server \"m1-cache.{}.svc.cluster.local:80\";", r.namespace)), "{conf}");
    // each module's next-hop is the next hop's Service ClusterIP.
    for (module, next, ip) in [("m1-cache", "m2-example", "10.96.0.20"), ("m2-example", "egress", "10.96.0.30")] {
        let Object::Deployment(d) = find(&r, &format!("Deployment/{module}")) else { unreachable!() };
        assert_eq!(d.metadata.annotations.as_ref().unwrap()[rendering::ANNOTATION_NEXT_HOP], next);
        let pod = d.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
        let alias = &pod.host_aliases.as_ref().unwrap()[0];
        assert_eq!(
            (alias.ip.as_str(), alias.hostnames.as_ref().unwrap().as_slice()),
            (ip, &["next-hop".to_owned()][..])
        );
        let Object::Service(s) = find(&r, &format!("Service/{next}")) else { unreachable!() };
        assert_eq!(s.spec.as_ref().unwrap().selector.as_ref().unwrap()[rendering::LABEL_HOP], next);
    }
    assert!(r.depends_on.is_empty(), "all resolved: {:?}", r.depends_on);
    // egress sends to the origin.
    let Object::ConfigMap(cm) = find(&r, "ConfigMap/egress-nginx") else { unreachable!() };
    let conf = &cm.data.as_ref().unwrap()["nginx.conf"];
    assert!(conf.contains("server \"my-s3-bucket.s3-website.us-east-2.amazonaws.com:443\";"), "{conf}");
    assert!(conf.contains("\"images:\" 1;") && conf.contains("server \"images.example.com:443\";"), "{conf}");
    assert!(conf.contains("\"198.51.100.0/24\" 1;") && conf.contains("proxy_ssl_verify \"off\";"), "{conf}");

    // Policies: default deny, DNS, one per hop (+ static-server), nothing else.
    let names: Vec<&str> = r.objects.iter().filter(|o| o.kind() == "NetworkPolicy").map(Object::name).collect();
    assert_eq!(
        names,
        [
            "default-deny",
            "allow-dns",
            "allow-private-ingress",
            "allow-m1-cache",
            "allow-m2-example",
            "allow-egress",
            "allow-static-server"
        ]
    );
    for (i, hop) in chain.iter().enumerate() {
        let spec = policy(&r, &format!("allow-{hop}")).spec.as_ref().unwrap();
        let from = peers(spec.ingress.as_ref().unwrap()[0].from.as_ref());
        let expected_from = if i == 0 { "ns:ingress-nginx".to_owned() } else { chain[i - 1].to_owned() };
        assert_eq!(from, [expected_from], "who may reach {hop}");
        let to: Vec<String> = spec.egress.as_ref().unwrap().iter().flat_map(|e| peers(e.to.as_ref())).collect();
        let expected_to = if i + 1 < chain.len() {
            vec![chain[i + 1].to_owned()]
        } else {
            vec!["ip:0.0.0.0/0".to_owned(), "static-server".to_owned()]
        };
        assert_eq!(to, expected_to, "what {hop} may reach");
    }
    let deny = policy(&r, "default-deny").spec.as_ref().unwrap();
    assert_eq!(deny.policy_types.as_ref().unwrap(), &["Ingress", "Egress"]);
    assert!(deny.pod_selector.as_ref().unwrap().match_labels.is_none(), "applies to every pod");
}

#[test]
fn every_object_carries_who_manages_it_the_environment_and_the_commit_but_pod_templates_not_the_commit() {
    let r = sample("Production");
    for o in &r.objects {
        let labels = o.metadata().labels.as_ref().unwrap();
        assert_eq!(labels[rendering::LABEL_MANAGED_BY], "devpop", "{}", o.key());
        assert_eq!(labels[rendering::LABEL_ENVIRONMENT], "Production", "{}", o.key());
        assert_eq!(labels[rendering::LABEL_COMMIT], COMMIT, "{}", o.key());
        if o.kind() != "Namespace" {
            assert_eq!(o.metadata().namespace.as_deref(), Some(r.namespace.as_str()));
        }
        if let rendering::Object::Deployment(d) = o {
            // A new commit alone must not roll the pods.
            let template = d.spec.as_ref().unwrap().template.metadata.as_ref().unwrap();
            assert!(!template.labels.as_ref().unwrap().contains_key(rendering::LABEL_COMMIT), "{}", o.key());
        }
    }
}

#[test]
fn a_push_publishes_the_rendered_repo_which_clones_with_plain_git() {
    let devpop = Devpop::start();
    let url = devpop.create_app("9999", "9999", "site");
    let (_dir, work) = clone(&url);
    replace_tree(&work, &fixture("repos/sample-application"));
    commit_all(&work, "the sample application");
    for env in ["Production", "Staging"] {
        let out = git(&work, &["push", "origin", &format!("HEAD:{env}")]);
        assert!(out.status.success(), "{}", stderr(&out));
        let d = wait_deployment(&devpop, queued_deployment(&stderr(&out), env));
        assert_eq!(d["state"], "ready", "{d}");
    }
    let pushed = git_ok(&work, &["rev-parse", "HEAD"]).trim().to_owned();

    let rendered_url = format!("{}/rendered/account/9999/application/9999/site.git", devpop.url);
    let (_rdir, rendered) = clone(&rendered_url);
    let log = git_ok(&rendered, &["log", "--format=%s"]);
    assert_eq!(
        log.lines().collect::<Vec<_>>(),
        [format!("Staging: render of {pushed}"), format!("Production: render of {pushed}")]
    );
    for env in ["Production", "Staging"] {
        let k = std::fs::read_to_string(rendered.join(env).join("kustomization.yaml")).unwrap();
        assert!(k.contains("kind: Kustomization") && k.contains("-deployment-m1-cache.yaml"), "{k}");
        // The commit label is kept once, in the kustomization, which puts it on every object.
        assert!(k.contains(&format!("devpop.section.io/commit: \"{pushed}\"")), "{k}");
        for f in std::fs::read_dir(rendered.join(env)).unwrap() {
            let text = std::fs::read_to_string(f.unwrap().path()).unwrap();
            assert!(text.contains("kind: Kustomization") || !text.contains("devpop.section.io/commit"), "{text}");
        }
    }
    assert!(rendered.join("README.md").is_file());

    // Deleting an environment's branch removes its folder.
    let out = git(&work, &["push", "origin", ":Staging"]);
    assert_eq!(wait_deployment(&devpop, queued_deployment(&stderr(&out), "Staging"))["state"], "ready");
    git_ok(&rendered, &["pull", "-q"]);
    assert!(!rendered.join("Staging").exists() && rendered.join("Production").is_dir());
    // devpop writes the packs of the rendered repo itself: git finds them sound.
    git_ok(&devpop.data.path().join("rendered/9999/9999/site.git"), &["fsck", "--strict", "--no-dangling"]);

    // The rendered repo is read-only.
    git_ok(&rendered, &["commit", "-q", "--allow-empty", "-m", "no"]);
    let out = git(&rendered, &["push", "origin", "HEAD:main"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("the rendered repo is read-only"), "{}", stderr(&out));
}

#[test]
fn devpop_render_writes_one_file_per_object_and_a_kustomization() {
    let out = tempfile::tempdir().unwrap();
    let status = Command::new(DEVPOP)
        .args(["render", "--env", "Production", "--app", "9999/9999/sample-application", "--out"])
        .arg(out.path())
        .arg(fixture("repos/sample-application"))
        .output()
        .unwrap();
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
    let k = std::fs::read_to_string(out.path().join("kustomization.yaml")).unwrap();
    let listed: Vec<&str> = k.lines().filter_map(|l| l.strip_prefix("  - ")).filter(|l| l.ends_with(".yaml")).collect();
    assert!(listed.len() > 30);
    for f in &listed {
        assert!(out.path().join(f).is_file(), "{f}");
    }
    assert!(listed[0].ends_with("-namespace-section-sampleapplication-production-6b170bd85b05b.yaml"), "{listed:?}");

    // Broken input: a clear error, non-zero exit.
    let bad =
        Command::new(DEVPOP).args(["render", "--env", "Production"]).arg(fixture("bad/broken-json")).output().unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("section.config.json:4:3: invalid JSON"));
}
