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

fn render_dir(dir: &Path, env: &str) -> Rendered {
    let (_d, store) = packages();
    let source = WorkDir { root: dir };
    let report = devpop::validation::check(&source.snapshot().unwrap(), env, &store.catalog());
    assert!(report.is_ok(), "{:?}", report.diagnostics);
    let id = RepoId::new("9999", "9999", "sample-application").unwrap();
    let subject = Subject { id: &id, environment: env, commit: COMMIT };
    checks::render(&source, subject, report.config.as_ref().unwrap(), &store, &RenderSettings::default()).unwrap()
}

fn sample(env: &str) -> Rendered {
    render_dir(&fixture("repos/sample-application"), env)
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

/// Strict schema validation for the oldest and the newest Kubernetes devpop supports.
fn validate_strict(files: &[PathBuf]) -> (bool, String) {
    let mut all = String::new();
    for version in ["1.33.0", "1.37.0"] {
        let out = Command::new(kubernetes_validate())
            .args(["--strict", "-k", version, "--no-warn"])
            .args(files)
            .output()
            .unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        if !out.status.success() || text.contains("ERROR") {
            return (false, format!("Kubernetes {version}:\n{text}"));
        }
        all.push_str(&text);
    }
    (true, all)
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
fn every_rendered_object_passes_strict_kubernetes_1_33_and_1_37_schema_validation() {
    let out = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for (n, (case, env)) in [
        ("repos/sample-application", "Production"),
        ("repos/sample-application", "Staging"),
        ("bad/no-origin", "Production"),
    ]
    .into_iter()
    .enumerate()
    {
        let dir = out.path().join(n.to_string());
        std::fs::create_dir(&dir).unwrap();
        files.extend(write_objects(&render_dir(&fixture(case), env), &dir));
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

/// A content-addressed ConfigMap by the name it has without its hash (e.g. `egress-nginx`).
fn config_map<'a>(r: &'a Rendered, base: &str) -> &'a k8s_openapi::api::core::v1::ConfigMap {
    let found = r.objects.iter().find_map(|o| match o {
        Object::ConfigMap(cm)
            if cm.metadata.labels.as_ref().unwrap().get(rendering::LABEL_CONFIG_OF).map(String::as_str)
                == Some(base) =>
        {
            Some(cm.as_ref())
        }
        _ => None,
    });
    found.unwrap_or_else(|| panic!("no ConfigMap {base}-<hash>"))
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
    let r = render_dir(&fixture("repos/sample-application"), "Production");
    let chain = ["private-ingress", "m1-cache", "m2-example", "egress"];

    // private-ingress forwards to the first module's Service.
    let cm = config_map(&r, "private-ingress-nginx");
    let conf = &cm.data.as_ref().unwrap()["nginx.conf"];
    assert!(conf.contains(&format!("server \"m1-cache.{}.svc.cluster.local:80\";", r.namespace)), "{conf}");
    // each module's next-hop is the next hop's Service, resolved by the pod's init container.
    for (module, next) in [("m1-cache", "m2-example"), ("m2-example", "egress")] {
        let Object::Deployment(d) = find(&r, &format!("Deployment/{module}")) else { unreachable!() };
        assert_eq!(d.metadata.annotations.as_ref().unwrap()[rendering::ANNOTATION_NEXT_HOP], next);
        let pod = d.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
        let init = &pod.init_containers.as_ref().unwrap()[0];
        let env: BTreeMap<&str, &str> =
            init.env.iter().flatten().map(|e| (e.name.as_str(), e.value.as_deref().unwrap())).collect();
        assert_eq!(env["NEXT_HOP_SERVICE"], format!("{next}.{}.svc.cluster.local", r.namespace));
        let Object::Service(s) = find(&r, &format!("Service/{next}")) else { unreachable!() };
        assert_eq!(s.spec.as_ref().unwrap().selector.as_ref().unwrap()[rendering::LABEL_HOP], next);
    }
    // egress sends to the origin.
    let cm = config_map(&r, "egress-nginx");
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
    let (_dir, work) = push_sample_everywhere(&devpop);
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

fn deployment<'a>(r: &'a Rendered, name: &str) -> &'a k8s_openapi::api::apps::v1::Deployment {
    match find(r, &format!("Deployment/{name}")) {
        Object::Deployment(d) => d,
        _ => unreachable!(),
    }
}

fn pod_spec<'a>(r: &'a Rendered, name: &str) -> &'a k8s_openapi::api::core::v1::PodSpec {
    deployment(r, name).spec.as_ref().unwrap().template.spec.as_ref().unwrap()
}

/// Renders the sample application with these settings, and the example-simple package with
/// `descriptor_edit` applied to its descriptor.
fn render_with(env: &str, settings: &RenderSettings, descriptor_edit: impl Fn(&str) -> String) -> Rendered {
    render_edited(env, settings, descriptor_edit, str::to_owned)
}

/// The sample application rendered with its example package's descriptor and its
/// section.config.json edited.
fn render_edited(
    env: &str,
    settings: &RenderSettings,
    descriptor_edit: impl Fn(&str) -> String,
    config_edit: impl Fn(&str) -> String,
) -> Rendered {
    let dir = tempfile::tempdir().unwrap();
    let store = PackageStore::new(&dir.path().join("store"));
    store.add(&fixture("packages/edge-cache")).unwrap();
    let example = dir.path().join("example-simple");
    copy_tree(&fixture("packages/example-simple"), &example);
    let descriptor = example.join(".section-proxy.yaml");
    std::fs::write(&descriptor, descriptor_edit(&std::fs::read_to_string(&descriptor).unwrap())).unwrap();
    store.add(&example).unwrap();
    let root = dir.path().join("sample-application");
    copy_tree(&fixture("repos/sample-application"), &root);
    let config = root.join("section.config.json");
    std::fs::write(&config, config_edit(&std::fs::read_to_string(&config).unwrap())).unwrap();
    let source = WorkDir { root: &root };
    let report = devpop::validation::check(&source.snapshot().unwrap(), env, &store.catalog());
    assert!(report.is_ok(), "{:?}", report.diagnostics);
    let id = RepoId::new("9999", "9999", "sample-application").unwrap();
    let subject = Subject { id: &id, environment: env, commit: COMMIT };
    checks::render(&source, subject, report.config.as_ref().unwrap(), &store, settings).unwrap()
}

#[test]
fn render_only_module_pods_resolve_next_hop_themselves_with_a_restricted_init_container() {
    let r = sample("Production");
    let yaml = rendering::to_yaml(&r);
    assert!(!yaml.contains("hostAliases") && !yaml.contains("unresolved"), "nothing is left for an applier");
    let script = config_map(&r, rendering::NEXT_HOP_CONFIGMAP);
    assert_eq!(script.data.as_ref().unwrap()["next-hop.sh"], rendering::NEXT_HOP_SCRIPT);
    for module in ["m1-cache", "m2-example"] {
        let pod = pod_spec(&r, module);
        let inits = pod.init_containers.as_ref().unwrap();
        assert_eq!(inits.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(), ["next-hop", "prepare"]);
        let sc = inits[0].security_context.as_ref().unwrap();
        assert_eq!(
            (sc.run_as_non_root, sc.read_only_root_filesystem, sc.allow_privilege_escalation),
            (Some(true), Some(true), Some(false))
        );
        assert_eq!(sc.capabilities.as_ref().unwrap().drop.as_deref(), Some(&["ALL".to_owned()][..]));
        assert!(sc.capabilities.as_ref().unwrap().add.is_none());
        // Every other container (prepare.sh too) sees the written file as its /etc/hosts.
        for c in pod.containers.iter().chain(&inits[1..]) {
            let hosts = c
                .volume_mounts
                .iter()
                .flatten()
                .find(|m| m.mount_path == "/etc/hosts")
                .unwrap_or_else(|| panic!("{module}/{}: no /etc/hosts mount", c.name));
            assert_eq!(
                (hosts.name.as_str(), hosts.sub_path.as_deref(), hosts.read_only),
                ("devpop-hosts", Some("hosts"), Some(true))
            );
        }
        let volume = pod.volumes.iter().flatten().find(|v| v.name == "devpop-hosts").unwrap();
        assert!(volume.empty_dir.is_some());
    }
}

/// Runs `argv` with the environment `env` under bubblewrap in a root made of /usr, /etc and
/// `binds` (source, destination, writable), as a pod container would see its file system.
fn in_container(binds: &[(&Path, &str, bool)], env: &[(String, String)], argv: &[String]) -> std::process::Output {
    let mut cmd = Command::new("bwrap");
    cmd.args(["--unshare-all", "--die-with-parent", "--clearenv", "--uid", "65534", "--gid", "65534"]);
    cmd.args(["--ro-bind", "/usr", "/usr", "--ro-bind", "/etc", "/etc", "--dev", "/dev", "--proc", "/proc"]);
    for (link, target) in [("/bin", "usr/bin"), ("/lib", "usr/lib"), ("/lib64", "usr/lib64"), ("/sbin", "usr/sbin")] {
        if Path::new(link).is_symlink() {
            cmd.args(["--symlink", target, link]);
        }
    }
    cmd.args(["--tmpfs", "/devpop"]);
    for (src, dst, writable) in binds {
        cmd.arg(if *writable { "--bind" } else { "--ro-bind" }).arg(src).arg(dst);
    }
    for (k, v) in env {
        cmd.args(["--setenv", k, v]);
    }
    cmd.args(argv).output().unwrap()
}

#[test]
fn the_next_hop_init_container_writes_a_hosts_file_in_which_next_hop_is_the_next_service() {
    let r = sample("Production");
    let script = config_map(&r, rendering::NEXT_HOP_CONFIGMAP);
    let init = pod_spec(&r, "m1-cache").init_containers.as_ref().unwrap()[0].clone();
    let env: Vec<(String, String)> =
        init.env.iter().flatten().map(|e| (e.name.clone(), e.value.clone().unwrap())).collect();
    let service = env.iter().find(|(k, _)| k == "NEXT_HOP_SERVICE").unwrap().1.clone();
    assert_eq!(service, format!("m2-example.{}.svc.cluster.local", r.namespace));

    let tmp = tempfile::tempdir().unwrap();
    let (scripts, out) = (tmp.path().join("next-hop"), tmp.path().join("hosts-dir"));
    std::fs::create_dir_all(&scripts).unwrap();
    std::fs::create_dir_all(&out).unwrap();
    std::fs::set_permissions(&out, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    std::fs::write(scripts.join("next-hop.sh"), &script.data.as_ref().unwrap()["next-hop.sh"]).unwrap();
    // The kubelet's hosts file as the pod gets it, and cluster DNS for the next hop's Service
    // (here: a hosts entry, what getent consults first).
    let kubelet_hosts = tmp.path().join("kubelet-hosts");
    std::fs::write(
        &kubelet_hosts,
        format!("127.0.0.1\tlocalhost\n10.244.1.7\tm1-cache-5d9c-x2\n10.96.0.20\t{service}\n"),
    )
    .unwrap();
    let mounts: Vec<(PathBuf, String, bool)> = init
        .volume_mounts
        .iter()
        .flatten()
        .map(|m| {
            (
                if m.name == "devpop-hosts" { out.clone() } else { scripts.clone() },
                m.mount_path.clone(),
                m.read_only != Some(true),
            )
        })
        .collect();
    let mut binds: Vec<(&Path, &str, bool)> = mounts.iter().map(|(s, d, w)| (s.as_path(), d.as_str(), *w)).collect();
    binds.push((&kubelet_hosts, "/etc/hosts", false));
    let run = in_container(&binds, &env, init.command.as_ref().unwrap());
    assert!(run.status.success(), "{}", stderr(&run));
    let hosts = std::fs::read_to_string(out.join("hosts")).unwrap();
    assert!(
        hosts.starts_with("127.0.0.1\tlocalhost\n10.244.1.7\tm1-cache-5d9c-x2\n"),
        "the pod's own entries stay: {hosts}"
    );
    assert!(hosts.ends_with("\n10.96.0.20\tnext-hop\n"), "{hosts}");

    // A module container with that file as its /etc/hosts resolves next-hop to the Service.
    let module_view = in_container(
        &[(&out.join("hosts"), "/etc/hosts", false)],
        &[],
        &["getent".into(), "hosts".into(), "next-hop".into()],
    );
    assert_eq!(String::from_utf8_lossy(&module_view.stdout).split_whitespace().next(), Some("10.96.0.20"));

    // A Service that never resolves: the init container fails, saying which name.
    let env: Vec<(String, String)> = env
        .into_iter()
        .map(|(k, v)| match k.as_str() {
            "NEXT_HOP_SERVICE" => (k, "nothing-here.invalid".to_owned()),
            "NEXT_HOP_ATTEMPTS" => (k, "1".to_owned()),
            _ => (k, v),
        })
        .collect();
    let failed = in_container(&binds, &env, init.command.as_ref().unwrap());
    assert!(!failed.status.success());
    assert!(
        stderr(&failed).contains("next-hop: cannot resolve nothing-here.invalid after 1 attempts"),
        "{}",
        stderr(&failed)
    );
}

#[test]
fn module_pods_bind_port_80_without_capabilities_and_root_started_images_keep_the_baseline_set() {
    let r = sample("Production");
    for module in ["m1-cache", "m2-example"] {
        let pod = pod_spec(&r, module);
        let sysctls = pod.security_context.as_ref().unwrap().sysctls.as_ref().unwrap();
        assert_eq!((sysctls[0].name.as_str(), sysctls[0].value.as_str()), ("net.ipv4.ip_unprivileged_port_start", "0"));
        for c in pod.containers.iter().chain(&pod.init_containers.as_ref().unwrap()[1..]) {
            let sc = c.security_context.as_ref().unwrap();
            let caps = sc.capabilities.as_ref().unwrap();
            assert_eq!(caps.drop.as_deref(), Some(&["ALL".to_owned()][..]));
            let added: Vec<&str> = caps.add.iter().flatten().map(String::as_str).collect();
            assert_eq!(added, rendering::BASELINE_CAPABILITIES, "{module}/{}", c.name);
            for needed in ["CHOWN", "SETUID", "SETGID", "DAC_OVERRIDE"] {
                assert!(added.contains(&needed), "a root-started nginx needs {needed}");
            }
            assert!(!added.contains(&"NET_RAW") && sc.run_as_non_root.is_none() && sc.run_as_user.is_none());
        }
        // Without a health path, ready when :80 accepts.
        let http = &pod.containers[0];
        assert!(http.readiness_probe.as_ref().unwrap().tcp_socket.is_some(), "{module}");
    }
    // devpop's own hops listen on 8080 and need no sysctl.
    assert!(pod_spec(&r, "egress").security_context.as_ref().unwrap().sysctls.is_none());
}

#[test]
fn a_package_that_runs_as_non_root_renders_restricted_with_its_health_path_as_readiness_probe() {
    let r = render_with("Production", &RenderSettings::default(), |d| {
        d.replace("  metrics:\n", "  healthCheckPath: /ready\n  metrics:\n")
            .replace("hpa:", "  securityContext:\n    runAsUser: 101\n    runAsNonRoot: true\nhpa:")
    });
    let pod = pod_spec(&r, "m2-example");
    for c in pod.containers.iter().chain(&pod.init_containers.as_ref().unwrap()[1..]) {
        let sc = c.security_context.as_ref().unwrap();
        assert_eq!((sc.run_as_user, sc.run_as_non_root, sc.read_only_root_filesystem), (Some(101), Some(true), None));
        assert_eq!((sc.allow_privilege_escalation, sc.privileged), (Some(false), Some(false)));
        assert!(sc.capabilities.as_ref().unwrap().add.is_none(), "restricted: no capabilities");
    }
    let probe = pod.containers[0].readiness_probe.as_ref().unwrap().http_get.as_ref().unwrap();
    assert_eq!(
        (probe.path.as_deref(), &probe.port),
        (Some("/ready"), &k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(80))
    );
    // The other module is unchanged (its package declares neither).
    assert!(pod_spec(&r, "m1-cache").containers[0].readiness_probe.as_ref().unwrap().tcp_socket.is_some());
}

#[test]
fn the_cluster_domain_and_the_dns_service_are_settings() {
    let settings = RenderSettings {
        cluster_domain: "corp.internal".into(),
        dns_service: "coredns.dns-system".into(),
        ..RenderSettings::default()
    };
    let r = render_with("Production", &settings, str::to_owned);
    let yaml = rendering::to_yaml(&r);
    assert!(!yaml.contains("cluster.local") && !yaml.contains("kube-dns"), "nothing hard-coded is left");
    let cm = config_map(&r, "egress-nginx");
    let conf = &cm.data.as_ref().unwrap()["nginx.conf"];
    assert!(conf.contains(&format!("static-server.{}.svc.corp.internal", r.namespace)), "{conf}");
    let cm = config_map(&r, "private-ingress-nginx");
    assert!(cm.data.as_ref().unwrap()["nginx.conf"].contains(&format!("m1-cache.{}.svc.corp.internal", r.namespace)));
    let init = &pod_spec(&r, "m2-example").init_containers.as_ref().unwrap()[0];
    assert!(init
        .env
        .iter()
        .flatten()
        .any(|e| e.value.as_deref() == Some(&format!("egress.{}.svc.corp.internal", r.namespace))));
    let dns = policy(&r, "allow-dns").spec.as_ref().unwrap();
    assert_eq!(peers(dns.egress.as_ref().unwrap()[0].to.as_ref())[0], "ns:dns-system");
}

#[test]
fn environment_namespaces_carry_pod_security_labels_from_the_settings() {
    let r = sample("Production");
    let labels = find(&r, &format!("Namespace/{}", r.namespace)).metadata().labels.clone().unwrap();
    assert_eq!(labels["pod-security.kubernetes.io/enforce"], "baseline");
    assert_eq!(labels["pod-security.kubernetes.io/warn"], "restricted");
    assert_eq!(labels["pod-security.kubernetes.io/audit"], "restricted");
    let settings = RenderSettings {
        pod_security_enforce: "restricted".into(),
        pod_security_warn: "restricted".into(),
        ..Default::default()
    };
    let r = render_with("Production", &settings, str::to_owned);
    let labels = find(&r, &format!("Namespace/{}", r.namespace)).metadata().labels.clone().unwrap();
    assert_eq!(labels["pod-security.kubernetes.io/enforce"], "restricted");
}

#[test]
fn dns_is_allowed_to_the_dns_namespace_and_nodelocal_dns_on_53_and_5353() {
    let r = sample("Production");
    let rule = &policy(&r, "allow-dns").spec.as_ref().unwrap().egress.as_ref().unwrap()[0];
    assert_eq!(peers(rule.to.as_ref()), ["ns:kube-system", "ip:169.254.20.10/32"]);
    let to = &rule.to.as_ref().unwrap()[0];
    assert!(to.pod_selector.is_none(), "any DNS server pod of the namespace, not only CoreDNS's label");
    let ports: Vec<String> = rule
        .ports
        .iter()
        .flatten()
        .map(|p| format!("{:?}/{}", p.port.as_ref().unwrap(), p.protocol.as_deref().unwrap()))
        .collect();
    assert_eq!(ports, ["Int(53)/UDP", "Int(53)/TCP", "Int(5353)/UDP", "Int(5353)/TCP"]);
}

#[test]
fn egress_never_reaches_private_loopback_shared_link_local_or_multicast_ranges() {
    let settings = RenderSettings { egress_excluded_cidrs: vec!["203.0.113.0/24".into()], ..Default::default() };
    let r = render_with("Production", &settings, str::to_owned);
    let egress = policy(&r, "allow-egress").spec.as_ref().unwrap().egress.as_ref().unwrap();
    let block = egress[0].to.as_ref().unwrap()[0].ip_block.as_ref().unwrap();
    assert_eq!(block.cidr, "0.0.0.0/0");
    let except = block.except.as_ref().unwrap();
    for cidr in [
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "169.254.0.0/16",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "0.0.0.0/8",
        "224.0.0.0/4",
        "203.0.113.0/24",
    ] {
        assert!(except.contains(&cidr.to_owned()), "{cidr} not excluded: {except:?}");
    }
}

#[test]
fn module_metrics_ports_are_reachable_from_the_monitoring_namespace_only() {
    let r = sample("Production");
    let ingress = policy(&r, "allow-m2-example").spec.as_ref().unwrap().ingress.clone().unwrap();
    assert_eq!(ingress.len(), 2, "{ingress:?}");
    assert_eq!(peers(ingress[1].from.as_ref()), ["ns:monitoring"]);
    assert_eq!(
        ingress[1].ports.as_ref().unwrap()[0].port,
        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(9000))
    );
    // edge-cache declares no metrics: only the chain reaches it.
    assert_eq!(policy(&r, "allow-m1-cache").spec.as_ref().unwrap().ingress.as_ref().unwrap().len(), 1);
    let none = RenderSettings { metrics_namespace: None, ..Default::default() };
    let r = render_with("Production", &none, str::to_owned);
    assert_eq!(policy(&r, "allow-m2-example").spec.as_ref().unwrap().ingress.as_ref().unwrap().len(), 1);
}

#[test]
fn private_ingress_and_egress_run_two_replicas_under_a_disruption_budget_with_a_pre_stop_delay() {
    let r = sample("Production");
    for hop in ["private-ingress", "egress", "static-server"] {
        let d = deployment(&r, hop);
        let replicas = d.spec.as_ref().unwrap().replicas;
        let pdb = r.objects.iter().find(|o| o.key() == format!("PodDisruptionBudget/{hop}"));
        if hop == "static-server" {
            assert_eq!((replicas, pdb.is_some()), (Some(1), false));
        } else {
            assert_eq!(replicas, Some(2), "{hop}");
            let Some(Object::PodDisruptionBudget(pdb)) = pdb else { panic!("no PodDisruptionBudget/{hop}") };
            let spec = pdb.spec.as_ref().unwrap();
            assert_eq!(spec.max_unavailable, Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(1)));
            assert_eq!(spec.selector.as_ref().unwrap().match_labels.as_ref().unwrap()[rendering::LABEL_HOP], hop);
        }
        let nginx = &pod_spec(&r, hop).containers[0];
        let pre_stop = nginx.lifecycle.as_ref().unwrap().pre_stop.as_ref().unwrap();
        assert_eq!(pre_stop.exec.as_ref().unwrap().command.as_deref(), Some(&["sleep".to_owned(), "5".to_owned()][..]));
    }
    // A module whose HPA may go down to one replica gets no budget (it would block drains).
    assert!(!r.objects.iter().any(|o| o.key() == "PodDisruptionBudget/m2-example"));
    let Object::Ingress(ingress) = find(&r, "Ingress/private-ingress") else { unreachable!() };
    assert_eq!(ingress.spec.as_ref().unwrap().ingress_class_name.as_deref(), Some("nginx"));
}

#[test]
fn config_maps_are_immutable_and_named_by_content_so_a_config_change_is_a_rollout() {
    let r = sample("Production");
    for o in r.objects.iter().filter(|o| o.kind() == "ConfigMap") {
        let Object::ConfigMap(cm) = o else { unreachable!() };
        assert_eq!(cm.immutable, Some(true), "{}", o.key());
        let base = &cm.metadata.labels.as_ref().unwrap()[rendering::LABEL_CONFIG_OF];
        let hash = o.name().strip_prefix(&format!("{base}-")).unwrap_or_else(|| panic!("{}", o.key()));
        assert!(hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit()), "{}", o.key());
    }
    // Every volume names a ConfigMap of the render.
    let names: Vec<&str> = r.objects.iter().filter(|o| o.kind() == "ConfigMap").map(Object::name).collect();
    for d in ["private-ingress", "m1-cache", "m2-example", "egress", "static-server"] {
        for v in pod_spec(&r, d).volumes.iter().flatten().filter_map(|v| v.config_map.as_ref()) {
            assert!(names.contains(&v.name.as_str()), "{d}: {} is not rendered", v.name);
        }
    }

    // A change to one module's config: a new ConfigMap name in that module's pod template only.
    let dir = tempfile::tempdir().unwrap();
    copy_tree(&fixture("repos/sample-application"), dir.path());
    let conf = dir.path().join("example/server.conf");
    let mut text = std::fs::read_to_string(&conf).unwrap();
    text.push_str("\n# changed\n");
    std::fs::write(&conf, text).unwrap();
    let changed = render_dir(dir.path(), "Production");
    let before = config_map(&r, "m2-example-config").metadata.name.clone();
    let after = config_map(&changed, "m2-example-config").metadata.name.clone();
    assert_ne!(before, after);
    let template =
        |r: &Rendered, d: &str| serde_json::to_string(&deployment(r, d).spec.as_ref().unwrap().template).unwrap();
    assert_ne!(template(&r, "m2-example"), template(&changed, "m2-example"), "the module rolls");
    assert_eq!(template(&r, "m1-cache"), template(&changed, "m1-cache"), "the other module does not");
}

#[test]
fn an_environments_domains_become_ingress_rules_and_an_engaged_outage_page_is_served() {
    let r = render_edited("Production", &RenderSettings::default(), str::to_owned, |config| {
        config.replacen(
            "\"Production\": {",
            "\"Production\": { \"domains\": [\"www.example.com\", \"*.shop.example.com\"], \"outage_page\": \"maintenance.html\",",
            1,
        )
    });
    let Object::Ingress(ing) = find(&r, "Ingress/private-ingress") else { unreachable!() };
    let hosts: Vec<&str> =
        ing.spec.as_ref().unwrap().rules.as_ref().unwrap().iter().filter_map(|r| r.host.as_deref()).collect();
    assert_eq!(hosts.len(), 3, "{hosts:?}");
    assert_eq!(&hosts[1..], ["www.example.com", "*.shop.example.com"]);
    let conf = &config_map(&r, "egress-nginx").data.as_ref().unwrap()["nginx.conf"];
    assert!(conf.contains("return 503;"), "{conf}");
}
