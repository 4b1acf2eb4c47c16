//! What reaches the data plane, checked at push with the real git client and a real server:
//! origins that would point egress into the cluster are refused (with the operator's setting
//! for private ones), alternate-origin names nginx reads as keywords are refused, and a crafted
//! file name in a folder that reaches a config is pushed inert.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

fn push_files(devpop: &Devpop, app: &str, files: &[(&str, &str)]) -> (bool, String) {
    let url = devpop.create_app("1", app, app);
    let (_dir, work) = clone(&url);
    for (path, content) in files {
        let p = work.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }
    commit_all(&work, "config");
    let out = git(&work, &["push", "origin", "HEAD:Production"]);
    (out.status.success(), stderr(&out))
}

fn config(origin: &str, alternates: &str) -> String {
    format!(
        "{{\n  \"proxychain\": [],\n  \"environments\": {{\n    \"Production\": {{\n      \"origin\": {{ \"address\": \"{origin}\" }},\n      \"alternate_origins\": {{ {alternates} }}\n    }}\n  }}\n}}\n"
    )
}

#[test]
fn origins_inside_the_cluster_or_the_node_are_refused_at_push_with_the_place_and_the_fix() {
    let devpop = Devpop::start();
    for (i, origin) in
        ["169.254.169.254", "100.64.0.1", "localhost", "kubernetes.default.svc.cluster.local", "10.0.0.5"]
            .into_iter()
            .enumerate()
    {
        let (ok, out) = push_files(&devpop, &format!("o{i}"), &[("section.config.json", &config(origin, ""))]);
        assert!(!ok, "{origin}: {out}");
        let want =
            format!("remote: error: section.config.json:5:30: environments.Production.origin.address \"{origin}\": ");
        assert!(out.contains(&want), "{origin}: {out}");
        assert!(out.contains("use the origin's public host name or address"), "{out}");
    }
    let (ok, out) = push_files(&devpop, "public", &[("section.config.json", &config("origin.example.com", ""))]);
    assert!(ok, "{out}");
}

#[test]
fn an_operator_may_allow_private_origins_but_never_loopback_or_metadata() {
    let devpop = Devpop::start_with(&["--allow-private-origins"]);
    let (ok, out) = push_files(&devpop, "private", &[("section.config.json", &config("10.0.0.5", ""))]);
    assert!(ok, "{out}");
    for (i, origin) in ["127.0.0.1", "169.254.169.254"].into_iter().enumerate() {
        let (ok, out) = push_files(&devpop, &format!("n{i}"), &[("section.config.json", &config(origin, ""))]);
        assert!(!ok && out.contains(&format!("origin.address \"{origin}\"")), "{out}");
    }
}

#[test]
fn alternate_origins_named_like_nginx_map_keywords_are_refused_at_push() {
    let devpop = Devpop::start();
    let alternates = r#""default": { "address": "a.example.com" }, "include": { "address": "b.example.com" }"#;
    let (ok, out) = push_files(&devpop, "kw", &[("section.config.json", &config("origin.example.com", alternates))]);
    assert!(!ok, "{out}");
    for name in ["default", "include"] {
        assert!(
            out.contains(&format!(
                "environments.Production.alternate_origins.{name}: \"{name}\" is a keyword of nginx's map"
            )),
            "{out}"
        );
    }
}

/// The file name of issue 12 (3), in both folders that reach static-server.
const CRAFTED: &str = "a.html break; } location ~ pwned { return 200 \"INJECTED\"; } location ~ x { rewrite ^ b.html";

#[test]
fn a_crafted_outage_or_error_page_file_name_is_pushed_inert() {
    let devpop = Devpop::start();
    let outage = format!("outage_pages/{CRAFTED}");
    let error = format!("custom_errors/{CRAFTED}");
    let section_config = config("origin.example.com", "");
    let files = [
        ("section.config.json", section_config.as_str()),
        (outage.as_str(), "<h1>down</h1>"),
        (error.as_str(), "<h1>error</h1>"),
        ("custom_errors/503.html", "<h1>503</h1>"),
    ];
    let (ok, out) = push_files(&devpop, "crafted", &files);
    assert!(ok, "{out}");
    // What that push rendered: `devpop render` runs the same render on the same tree.
    let work = tempfile::tempdir().unwrap();
    for (path, content) in files {
        let p = work.path().join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }
    let yaml = render(work.path());
    assert!(!yaml.contains("pwned") && !yaml.contains("INJECTED"), "{yaml}");
    assert!(yaml.contains("rewrite ^/\\.devpop/outage$ /outage_pages/outage.html break;"), "{yaml}");
    assert!(yaml.contains("path: outage_pages/outage.html") && yaml.contains("path: custom_errors/503.html"), "{yaml}");
}

fn render(dir: &Path) -> String {
    let out = Command::new(DEVPOP).args(["render", "--env", "Production"]).arg(dir).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}
