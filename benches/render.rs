//! Render benchmark: environments per second for a 5-module environment, single thread.
//!
//! `cargo bench --bench render` prints Markdown for BENCHMARKS.md. The input is built in memory
//! (no IO is timed): five modules of the example-simple package with a small config each, two
//! alternate origins, an IP blacklist, outage and error pages.

use std::hint::black_box;
use std::time::{Duration, Instant};

use devpop::names::RepoId;
use devpop::packages::descriptor;
use devpop::rendering::{self, Files, ModuleInput, RenderInput, RenderSettings};

fn main() {
    let descriptor =
        descriptor::parse(include_str!("../templates/packages/example-simple/.section-proxy.yaml")).unwrap();
    let names = ["cache", "waf", "images", "rewrite", "example"];
    let chain: Vec<String> =
        names.iter().map(|n| format!(r#"{{"name": "{n}", "image": "example-simple:1.0.0"}}"#)).collect();
    let config_text = format!(
        r#"{{"proxychain": [{}], "environments": {{"Production": {{"origin": {{"address": "origin.example.com", "host_header": "www.example.com"}},
        "alternate_origins": {{"images": {{"address": "img.example.com"}}, "api": {{"address": "api.example.com", "https_port": 8443}}}},
        "ip_blacklist": ["203.0.113.7", "198.51.100.0/24"]}}}}}}"#,
        chain.join(",")
    );
    let (config, diags) = devpop::validation::config::parse(config_text.as_bytes());
    assert!(diags.is_empty(), "{diags:?}");
    let config = config.unwrap();
    let file = |s: &str| s.as_bytes().to_vec();
    let modules: Vec<ModuleInput> = names
        .iter()
        .map(|n| ModuleInput {
            name: (*n).to_owned(),
            descriptor: descriptor.clone(),
            config_files: [(
                "server.conf".to_owned(),
                file(include_str!("../templates/packages/example-simple/proxy_config/server.conf")),
            )]
            .into(),
            proxy_files: [(
                "nginx.conf".to_owned(),
                file(include_str!("../templates/packages/example-simple/proxy/nginx.conf")),
            )]
            .into(),
            prepare_sh: file("#!/bin/sh\nexit 0\n"),
        })
        .collect();
    let outage: Files = [("maintenance.html".to_owned(), file("<h1>back soon</h1>"))].into();
    let errors: Files =
        [("503.html".to_owned(), file("<h1>503</h1>")), ("404.html".to_owned(), file("<h1>404</h1>"))].into();
    let id = RepoId::new("9999", "9999", "www-example-com").unwrap();
    let settings = RenderSettings::default();
    let input = RenderInput {
        id: &id,
        environment: "Production",
        commit: "0123456789abcdef0123456789abcdef01234567",
        config: &config,
        modules: &modules,
        outage_pages: &outage,
        custom_errors: &errors,
        settings: &settings,
    };

    let measure = |what: &str, f: &dyn Fn() -> usize| {
        for _ in 0..200 {
            black_box(f());
        }
        let mut rates = Vec::new();
        let mut objects = 0;
        for _ in 0..5 {
            let start = Instant::now();
            let mut n = 0u64;
            while start.elapsed() < Duration::from_millis(600) {
                objects = black_box(f());
                n += 1;
            }
            rates.push(n as f64 / start.elapsed().as_secs_f64());
        }
        rates.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let median = rates[2];
        println!("| {what} | {objects} | {median:.0} | {:.1} |", 1e6 / median);
    };
    println!("| what (5-module environment, 1 thread) | objects | environments/s (median of 5) | µs each |");
    println!("|---|---:|---:|---:|");
    measure("render (typed objects)", &|| rendering::render(&input).unwrap().objects.len());
    if std::env::var_os("RENDER_ONLY").is_some() {
        return;
    }
    measure("render + YAML", &|| {
        let r = rendering::render(&input).unwrap();
        let yaml = rendering::to_yaml(&r);
        black_box(yaml.len());
        r.objects.len()
    });
}
