//! The data plane: environments as devpop renders them, run by the harness
//! (tests/dataplane/harness.rs: every pod in its own network namespace with its own address,
//! real nginx per hop and per module under its pod's constraints, Varnish for edge-cache,
//! Services as ClusterIPs, origins over HTTP and HTTPS with a two-intermediate chain), and
//! real requests through private-ingress.
//!
//! Every config here has the sample application's two modules in its chain, so every request
//! goes private-ingress -> m1-cache (edge-cache: varnishd) -> m2-example (example-simple:
//! nginx) -> egress -> origin, with static-server beside egress. The "every egress option"
//! config's cache VCL picks alternate origins the way a module does: it sets `section-origin`
//! (from the test's `X-Pick-Origin` request header) and passes every request.

#[path = "dataplane/harness.rs"]
mod harness;

use std::io::{Read, Write};
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use devpop::checks::{self, Subject};
use devpop::names::RepoId;
use devpop::packages::PackageStore;
use devpop::rendering::{self, RenderSettings};
use devpop::source::{RepoSource, WorkDir};
use harness::*;

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

/// The sample application's two modules, as every config here chains them.
const CHAIN: &str =
    r#"[{ "name": "cache", "image": "edge-cache:6.5.0" }, { "name": "example", "image": "example-simple:1.0.0" }]"#;

/// The cache module's VCL for the test configs: a module picks the alternate origin (the one
/// the test names in X-Pick-Origin), and nothing is cached (each request reaches the origin).
const PICKING_VCL: &str = r#"vcl 4.0;

backend default {
    .host = "next-hop";
    .port = "80";
}

sub vcl_recv {
    if (req.http.X-Pick-Origin) {
        set req.http.section-origin = req.http.X-Pick-Origin;
        unset req.http.X-Pick-Origin;
    }
    return (pass);
}
"#;

/// A config that uses every egress option, with origins the harness runs.
const EVERY_OPTION: &str = r#"{
  "proxychain": CHAIN,
  "environments": {
    "Production": {
      "origin": {
        "address": "origin.test",
        "host_header": "www.origin.test",
        "enable_sni": true,
        "verify_certificate": true,
        "remove_request_headers": ["X-Secret"]
      },
      "alternate_origins": {
        "alt": { "address": "alt.test", "enable_sni": false, "verify_certificate": false, "disable_keepalive": true, "remove_request_headers": ["X-Other"] },
        "wrong": { "address": "wrongname.test", "verify_certificate": true },
        "wrongok": { "address": "wrongname.test", "verify_certificate": false },
        "down": { "address": "down.test" },
        "v6": { "address": "2001:db8::1", "https_port": 8443 }
      },
      "ip_blacklist": ["127.0.0.66", "198.51.100.0/24"],
      "maintain_upstream_content_encoding": false
    }
  }
}"#;

const PAGE_403: &str = "<h1>custom 403 page</h1>";
const PAGE_404: &str = "<h1>custom 404 page</h1>";
const OUTAGE: &str = "<h1>we are down for maintenance</h1>";
/// The file name of issue 12 (3): it went verbatim into egress's config.
const CRAFTED: &str = "a.html break; } location ~ pwned { return 200 \"INJECTED\"; } location ~ x { rewrite ^ b.html";

fn fixtures() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// Renders `config`'s `env` with `files` beside it (and the modules' config folders: the
/// picking VCL and the sample application's example/server.conf unless `files` has them), as
/// the push path does (validated first). `CHAIN` in `config` stands for the two modules.
fn render(config: &str, env: &str, files: &[(&str, &str)]) -> String {
    render_with(config, env, files, &fixtures().join("packages/example-simple"))
}

/// As [`render`], with `example` as the example-simple package.
fn render_with(config: &str, env: &str, files: &[(&str, &str)], example: &Path) -> String {
    let work = tempfile::tempdir().unwrap();
    std::fs::write(work.path().join("section.config.json"), config.replace("CHAIN", CHAIN)).unwrap();
    let server_conf = std::fs::read_to_string(fixtures().join("repos/sample-application/example/server.conf")).unwrap();
    let defaults = [("cache/default.vcl", PICKING_VCL), ("example/server.conf", server_conf.as_str())];
    for (path, content) in defaults.iter().filter(|(p, _)| !files.iter().any(|(f, _)| f == p)).chain(files) {
        let p = work.path().join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }
    render_dir(work.path(), env, example)
}

/// Renders the environment repo at `work` for `env`, with edge-cache and `example` (the
/// example-simple package, or a variant of it) installed.
fn render_dir(work: &Path, env: &str, example: &Path) -> String {
    render_dir_with(work, env, example, &RenderSettings::default())
}

/// As [`render_dir`], with the operator's rendering `settings`.
fn render_dir_with(work: &Path, env: &str, example: &Path, settings: &RenderSettings) -> String {
    let store_dir = tempfile::tempdir().unwrap();
    let store = PackageStore::new(store_dir.path());
    store.add(example).unwrap();
    store.add(&fixtures().join("packages/edge-cache")).unwrap();
    let source = WorkDir { root: work };
    let report = devpop::validation::check(&source.snapshot().unwrap(), env, &store.catalog());
    assert!(report.is_ok(), "{:?}", report.diagnostics);
    let id = RepoId::new("9999", "9999", "dataplane").unwrap();
    let subject = Subject { id: &id, environment: env, commit: COMMIT };
    let rendered = checks::render(&source, subject, report.config.as_ref().unwrap(), &store, settings).unwrap();
    rendering::to_yaml(&rendered)
}

fn every_option_files() -> Vec<(&'static str, &'static str)> {
    vec![
        ("custom_errors/403.html", PAGE_403),
        ("custom_errors/404.html", PAGE_404),
        ("custom_errors/not-a-code.html", "never served"),
        (Box::leak(format!("outage_pages/{CRAFTED}").into_boxed_str()), OUTAGE),
    ]
}

fn every_option(opts: Options) -> Pop {
    Pop::start(&render(EVERY_OPTION, "Production", &every_option_files()), opts)
}

/// A config whose origin is `address` (plus the given origin fields).
fn with_origin(address: &str, extra: &str) -> String {
    format!(
        r#"{{"proxychain": {CHAIN}, "environments": {{"Production": {{"origin": {{"address": "{address}"{extra}}}}}}}}}"#
    )
}

/// A request through the whole chain in which the cache module picks `origin` (an alternate
/// origin's name; "" for the environment's origin), as a module does: it sets section-origin.
fn picking(pop: &Pop, origin: &str, https: bool, path: &str, extra: &[(&str, &str)]) -> Response {
    let mut h = vec![("X-Forwarded-For", "192.0.2.10")];
    if !origin.is_empty() {
        h.push(("X-Pick-Origin", origin));
    }
    h.extend_from_slice(extra);
    pop.request(Ipv4Addr::LOCALHOST, https, "GET", path, &h, b"")
}

fn connections_seen(pop: &Pop, origin: &str) -> std::collections::BTreeSet<String> {
    pop.origin_log(origin).iter().filter_map(|l| l.split(' ').next().map(str::to_owned)).collect()
}

#[test]
fn every_hop_starts_with_a_read_only_root_its_emptydir_tmp_uid_101_and_no_capabilities() {
    let pop = every_option(Options::default());
    for hop in ["private-ingress", "egress", "static-server"] {
        let pod = pop.pod(hop);
        assert!(pod.stderr().lines().all(|l| !l.contains("[emerg]")), "{hop}: {}", pod.stderr());
        let status = std::fs::read_to_string(format!("/proc/{}/status", pod.main_pid())).unwrap();
        assert!(status.contains("Name:\tnginx"), "{hop}: {status}");
        assert!(status.contains("CapEff:\t0000000000000000"), "{hop}: {status}");
        // The root (and nginx's compiled-in temp dirs under it) cannot be written, /tmp can.
        assert_eq!(pod.empty_dirs, [("/tmp".to_owned(), 64 << 20)], "{hop}");
        let root = format!("/proc/{}/root", pod.pid);
        assert!(Path::new(&format!("{root}/tmp/nginx.pid")).exists(), "{hop} writes its pid to the emptyDir");
    }
    assert_eq!(pop.get("/.devpop/healthz", &[]).status, 200);
    assert_eq!(pop.get("/hello", &[]).status, 200);
}

#[test]
fn the_origin_sees_its_host_header_and_the_scheme_the_client_used() {
    let pop = every_option(Options::default());
    let r = pop.request(Ipv4Addr::LOCALHOST, false, "GET", "/a?b=1", &[], b"");
    assert_eq!((r.status, r.echo("scheme"), r.echo("host")), (200, "http".into(), "www.origin.test".into()), "{r:?}");
    let r = pop.request(Ipv4Addr::LOCALHOST, true, "GET", "/a?b=1", &[], b"");
    assert_eq!((r.status, r.echo("scheme"), r.echo("host")), (200, "https".into(), "www.origin.test".into()), "{r:?}");
    let logged = |scheme: &str| {
        wait_for(Duration::from_secs(10), || {
            pop.origin_log("origin.test").iter().any(|l| l.ends_with(&format!("scheme={scheme} uri=/a?b=1")))
        })
    };
    assert!(logged("http") && logged("https"), "{:?}", pop.origin_log("origin.test"));
    // The client's address reaches the origin as the first X-Forwarded-For entry.
    assert!(r.echo("xff").starts_with("127.0.0.1"), "{}", r.text());
}

#[test]
fn sni_and_verification_follow_each_origins_settings_through_two_intermediates() {
    let pop = every_option(Options::default());
    // The origin: SNI on, verification on, a chain root -> int1 -> int2 -> leaf.
    let r = picking(&pop, "", true, "/", &[]);
    assert_eq!((r.status, r.echo("sni")), (200, "www.origin.test".into()), "{r:?}");
    // alt: SNI off, verification off.
    let r = picking(&pop, "alt", true, "/", &[]);
    assert_eq!((r.status, r.echo("sni"), r.echo("host")), (200, String::new(), "alt.test".into()), "{r:?}");
    // A certificate for another name: refused with verification on, accepted with it off.
    let r = picking(&pop, "wrong", true, "/", &[]);
    assert_eq!(r.status, 502, "{r:?}");
    assert!(
        pop.pod("egress").stderr().contains("upstream SSL certificate does not match"),
        "{}",
        pop.pod("egress").stderr()
    );
    let r = picking(&pop, "wrongok", true, "/", &[]);
    assert_eq!((r.status, r.echo("sni")), (200, "wrongname.test".into()), "{r:?}");
}

#[test]
fn removed_request_headers_are_each_origins_own() {
    let pop = every_option(Options::default());
    let h = [("X-Secret", "s3cret"), ("X-Other", "other")];
    let r = picking(&pop, "", false, "/", &h);
    assert_eq!((r.echo("x-secret"), r.echo("x-other")), (String::new(), "other".into()), "{r:?}");
    let r = picking(&pop, "alt", false, "/", &h);
    assert_eq!((r.echo("x-secret"), r.echo("x-other")), ("s3cret".into(), String::new()), "{r:?}");
    // Content encoding is not kept upstream (maintain_upstream_content_encoding: false).
    let r = picking(&pop, "", false, "/", &[("Accept-Encoding", "gzip")]);
    assert_eq!(r.echo("accept-encoding"), "");
}

#[test]
fn a_clients_own_section_origin_header_is_dropped_at_private_ingress() {
    let pop = every_option(Options::default());
    let r = pop.get("/", &[("section-origin", "alt")]);
    assert_eq!(
        (r.status, r.echo("host"), r.echo("section-origin")),
        (200, "www.origin.test".into(), String::new()),
        "{r:?}"
    );
    assert!(connections_seen(&pop, "alt.test").is_empty(), "the alternate origin was reached");
}

#[test]
fn ip_blacklist_answers_403_with_the_custom_page_and_leaves_health_checks_alone() {
    let pop = every_option(Options::default());
    let blocked = Ipv4Addr::new(127, 0, 0, 66);
    let r = pop.request(blocked, false, "GET", "/", &[], b"");
    assert_eq!((r.status, r.text()), (403, PAGE_403.to_owned()), "{r:?}");
    assert!(pop.origin_log("origin.test").is_empty(), "a blocked request reached the origin");
    // Health checks: private-ingress's own, and egress probed directly by the kubelet (from a
    // node address that the blacklist may cover).
    assert_eq!(pop.request(blocked, false, "GET", "/.devpop/healthz", &[], b"").status, 200);
    let egress = pop.pod("egress").endpoint();
    let mut s = egress.connect().unwrap();
    write_request(
        &mut s,
        "GET",
        "/.devpop/healthz",
        &[("X-Forwarded-For", "127.0.0.66"), ("Connection", "close")],
        None,
    );
    assert_eq!(read_response(s, "GET").status, 200);
    // Others pass.
    assert_eq!(pop.request(Ipv4Addr::new(127, 0, 0, 67), false, "GET", "/", &[], b"").status, 200);
}

#[test]
fn an_address_the_client_writes_into_x_forwarded_for_cannot_decide_the_blacklist() {
    let pop = every_option(Options::default());
    // A blocked client claiming another address is still blocked...
    let r = pop.request(Ipv4Addr::new(127, 0, 0, 66), false, "GET", "/", &[("X-Forwarded-For", "203.0.113.9")], b"");
    assert_eq!(r.status, 403, "{r:?}");
    // ...and a client naming a blocked address is not blocked by it.
    for xff in ["127.0.0.66", "198.51.100.7", "198.51.100.7, 127.0.0.66"] {
        let r = pop.request(Ipv4Addr::new(127, 0, 0, 67), false, "GET", "/", &[("X-Forwarded-For", xff)], b"");
        assert_eq!(r.status, 200, "{xff}: {r:?}");
        assert!(r.echo("xff").starts_with("127.0.0.67"), "{}", r.text());
    }
}

#[test]
fn custom_error_pages_replace_the_origins_error_responses() {
    let pop = every_option(Options::default());
    let r = pop.get("/status/404", &[]);
    assert_eq!((r.status, r.text()), (404, PAGE_404.to_owned()), "{r:?}");
    // No custom page for 418: the origin's own answer.
    let r = pop.get("/status/418", &[]);
    assert_eq!((r.status, r.text()), (418, "origin says 418\n".to_owned()));
}

#[test]
fn the_outage_page_answers_when_the_origin_is_down_or_says_502_503_504() {
    let pop = every_option(Options::default());
    for code in [502, 503, 504] {
        let r = pop.get(&format!("/status/{code}"), &[]);
        assert_eq!((r.status, r.text()), (code, OUTAGE.to_owned()), "{r:?}");
    }
    let r = picking(&pop, "down", false, "/", &[]);
    assert_eq!((r.status, r.text()), (502, OUTAGE.to_owned()), "{r:?}");
    let down =
        Pop::start(&render(&with_origin("down.test", ""), "Production", &every_option_files()), Options::default());
    let r = down.get("/anything", &[]);
    assert_eq!((r.status, r.text()), (502, OUTAGE.to_owned()), "{r:?}");
}

#[test]
fn a_crafted_outage_page_file_name_cannot_inject_a_location() {
    let yaml = render(EVERY_OPTION, "Production", &every_option_files());
    assert!(!yaml.contains("INJECTED") && !yaml.contains("pwned"), "the file name reached the rendered output");
    let pop = Pop::start(&yaml, Options::default());
    let r = pop.get("/pwned", &[]);
    assert_eq!(r.status, 200);
    assert!(r.text().starts_with("scheme=http\n"), "{r:?}");
    let r = pop.get("/status/503", &[]);
    assert_eq!(r.text(), OUTAGE);
}

#[test]
fn an_ipv6_alternate_origin_is_addressed_in_brackets() {
    let yaml = render(EVERY_OPTION, "Production", &[]);
    assert!(yaml.contains("server \"[2001:db8::1]:8443\";"), "{yaml}");
    let pop = Pop::start(&yaml, Options::default());
    // No route to 2001:db8::/32 here: a gateway error, not a broken upstream address (500).
    let r = picking(&pop, "v6", true, "/", &[]);
    assert_eq!(r.status, 502, "{r:?}");
    // nginx logs a request after answering it: wait for the line.
    let logged = wait_for(Duration::from_secs(10), || {
        pop.pod("egress").stdout().contains("\"upstream\":\"[2001:db8::1]:8443\"")
    });
    assert!(logged, "{}", pop.pod("egress").stdout());
}

/// The example module's per-environment config for uploads: the module's own nginx takes
/// bodies of any size and streams them on (a module's limits are its config's to set).
const STREAMING_SERVER_CONF: &str =
    "add_header X-Edge-Module example-simple always;\nclient_max_body_size 0;\nproxy_request_buffering off;\n";

/// A 20 MB POST to `path` streams through every hop: the origin's sink has bytes of it while
/// the client is still sending, and gets all of it.
fn assert_a_20_mb_upload_streams(pop: &Pop, path: &str) {
    let before = pop.sink.received.load(Ordering::SeqCst);
    let body = pattern(0, 20 << 20);
    let mut s = pop.connect(Ipv4Addr::LOCALHOST, false);
    write_request(&mut s, "POST", path, &[("Connection", "close")], Some(body.len() as u64));
    // Half the body, then wait until the origin has bytes of it: no hop holds the body back.
    s.write_all(&body[..10 << 20]).unwrap();
    assert!(
        wait_for(Duration::from_secs(20), || pop.sink.received.load(Ordering::SeqCst) > before),
        "the origin got nothing of the body while the client was sending it"
    );
    assert!(pop.sink.received.load(Ordering::SeqCst) - before < body.len() as u64);
    s.write_all(&body[10 << 20..]).unwrap();
    let r = read_response(s, "POST");
    use sha2::Digest;
    let digest: String = sha2::Sha256::digest(&body).iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!((r.status, r.text()), (200, format!("length={}\nsha256={digest}\n", body.len())), "{r:?}");
}

#[test]
fn a_20_mb_upload_streams_through_every_hop() {
    let files = [("example/server.conf", STREAMING_SERVER_CONF)];
    let pop = Pop::start(&render(&with_origin("upload.test", ""), "Production", &files), Options::default());
    assert_a_20_mb_upload_streams(&pop, "/upload");
}

#[test]
fn a_large_download_to_a_slow_client_keeps_every_hops_tmp_within_its_emptydir() {
    const SIZE: u64 = 160 << 20;
    let pop = every_option(Options { large: SIZE, ..Default::default() });
    assert_a_large_download_keeps_tmp_within_the_emptydirs(&pop, SIZE);
}

/// A download of `size` bytes (the origin's /large) to a slow client: devpop's hops use
/// under 1 MiB of their /tmp emptyDir for it, and nothing runs out of space.
fn assert_a_large_download_keeps_tmp_within_the_emptydirs(pop: &Pop, size: u64) {
    let mut s = pop.connect(Ipv4Addr::LOCALHOST, false);
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write_request(&mut s, "GET", "/large", &[("Connection", "close")], None);
    // A slow client: it reads 256 KiB, then waits for the next 5 ms tick (about 50 MB/s at
    // most, well below loopback speed, so the hops fill whatever they buffer).
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&head));
    let mut got = 0u64;
    let mut peak = std::collections::BTreeMap::<&str, u64>::new();
    let mut buf = vec![0u8; 256 << 10];
    let mut tick = Instant::now();
    while got < size {
        let want = ((size - got) as usize).min(buf.len());
        let n = s.read(&mut buf[..want]).unwrap();
        assert!(n > 0, "the download stopped at {got} of {size} bytes");
        let skew = (got % 8) as usize;
        assert!(buf[..n] == pattern(got - skew as u64, n + skew)[skew..], "wrong bytes at {got}..{}", got + n as u64);
        got += n as u64;
        for hop in ["private-ingress", "egress"] {
            let used = pop.pod(hop).tmpfs_used("/tmp");
            let e = peak.entry(hop).or_default();
            *e = (*e).max(used);
        }
        tick += Duration::from_millis(5);
        if let Some(wait) = tick.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    for (hop, used) in &peak {
        assert!(*used < 1 << 20, "{hop} used {used} bytes of its /tmp for one download");
        let log = pop.pod(hop).stderr();
        assert!(!log.contains("No space left"), "{hop}: {log}");
    }
}

#[test]
fn requests_reuse_connections_to_the_origin() {
    let pop = every_option(Options::default());
    for https in [false, true] {
        for _ in 0..20 {
            assert_eq!(pop.request(Ipv4Addr::LOCALHOST, https, "GET", "/", &[], b"").status, 200);
        }
    }
    // nginx logs a request after answering it: wait for all 40 lines.
    assert!(wait_for(Duration::from_secs(10), || pop.origin_log("origin.test").len() == 40));
    let seen = connections_seen(&pop, "origin.test");
    assert!(seen.len() <= 2, "40 requests (http and https) took {} origin connections", seen.len());
    // An origin with disable_keepalive gets a connection per request.
    for _ in 0..5 {
        assert_eq!(picking(&pop, "alt", false, "/", &[]).status, 200);
    }
    assert!(wait_for(Duration::from_secs(10), || pop.origin_log("alt.test").len() == 5));
    assert_eq!(connections_seen(&pop, "alt.test").len(), 5);
}

/// The price of the PoP: requests/s and median latency through the whole chain
/// (private-ingress -> m1-cache (varnishd) -> m2-example (nginx) -> egress -> origin, each pod
/// in its own network namespace, Services relayed like kube-proxy would) against the origin
/// alone, both measured from the
/// same client namespace with 8 keep-alive connections. A benchmark, not a test: run it with
/// `cargo test --release --test dataplane -- --ignored --nocapture dataplane_price_of_the_pop`.
#[test]
#[ignore = "benchmark: run explicitly (BENCHMARKS.md)"]
fn dataplane_price_of_the_pop() {
    const CONNECTIONS: usize = 8;
    const REQUESTS: usize = 2_000;
    let pop = Pop::start(&render(&with_origin("origin.test", ""), "Production", &[]), Options::default());
    let run = |label: &str, target: std::net::SocketAddrV4| {
        let start = Instant::now();
        let mut latencies: Vec<Duration> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..CONNECTIONS)
                .map(|_| {
                    s.spawn(|| {
                        let connect = || {
                            let stream = in_netns(&pop.ingress.netns, || std::net::TcpStream::connect(target)).unwrap();
                            stream.set_nodelay(true).unwrap();
                            (stream.try_clone().unwrap(), std::io::BufReader::new(stream))
                        };
                        let (mut w, mut r) = connect();
                        let mut out = Vec::with_capacity(REQUESTS);
                        for _ in 0..REQUESTS {
                            let t = Instant::now();
                            write_request(&mut w, "GET", "/", &[("X-Forwarded-Proto", "http")], None);
                            let resp = read_response_from(&mut r, "GET");
                            assert_eq!(resp.status, 200);
                            out.push(t.elapsed());
                            // nginx ends a connection after keepalive_requests (1000) requests.
                            if resp.head.to_ascii_lowercase().contains("connection: close") {
                                (w, r) = connect();
                            }
                        }
                        out
                    })
                })
                .collect();
            handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
        });
        let elapsed = start.elapsed();
        latencies.sort();
        let total = latencies.len();
        let rps = total as f64 / elapsed.as_secs_f64();
        let p50 = latencies[total / 2];
        let p99 = latencies[total * 99 / 100];
        println!("{label}: {total} requests in {elapsed:.2?}: {rps:.0} requests/s, p50 {p50:.2?}, p99 {p99:.2?}");
        (rps, p50)
    };
    let origin = std::net::SocketAddrV4::new(pop.origin_addr("origin.test"), 80);
    let chain = std::net::SocketAddrV4::new(pop.services["private-ingress"], 80);
    // Warm both paths (connections, workers), then measure.
    run("warm-up origin", origin);
    run("warm-up chain", chain);
    let (o_rps, o_p50) = run("origin alone", origin);
    let (c_rps, c_p50) = run("whole chain", chain);
    println!("the PoP: {:.2}x the origin's requests/s, p50 +{:.2?}", c_rps / o_rps, c_p50.saturating_sub(o_p50));
}

/// example-simple as the only module, started as its image starts (root, with the baseline
/// capabilities) and as a package that declares it runs as non-root (uid 101, restricted: no
/// capabilities; port 80 through the pod's sysctl). Its `next-hop` comes from its pod's own
/// init container, the rendered script run as the pod spec says.
#[test]
fn a_module_hop_in_the_chain_serves_requests() {
    let config = r#"{"proxychain": [{"name": "example", "image": "example-simple:1.0.0"}],
"environments": {"Production": {"origin": {"address": "origin.test", "host_header": "www.origin.test"}}}}"#;
    let package = tempfile::tempdir().unwrap();
    let non_root = package.path().join("example-simple");
    copy_tree(&fixtures().join("packages/example-simple"), &non_root);
    let descriptor = std::fs::read_to_string(non_root.join(".section-proxy.yaml")).unwrap();
    let declared = descriptor
        .replace("hpa:", "  securityContext:\n    runAsUser: 101\n    runAsGroup: 101\n    runAsNonRoot: true\nhpa:");
    assert_ne!(declared, descriptor);
    std::fs::write(non_root.join(".section-proxy.yaml"), declared).unwrap();
    for (example, root) in [(fixtures().join("packages/example-simple"), true), (non_root, false)] {
        let pop = Pop::start(&render_with(config, "Production", &[], &example), Options::default());
        let module = pop.pod("m1-example");
        let init = &module.init_logs[0];
        let want = format!("next-hop: egress.{}.svc.cluster.local is {}\n", pop.namespace, pop.services["egress"]);
        assert_eq!(init, &want, "the next-hop init container");
        let status = std::fs::read_to_string(format!("/proc/{}/status", module.main_pid())).unwrap();
        let caps = status.lines().find(|l| l.starts_with("CapEff:")).unwrap().to_owned();
        assert_eq!(caps == "CapEff:\t0000000000000000", !root, "root-started: {root}: {caps}");
        let r = pop.get("/through-a-module", &[]);
        assert_eq!((r.status, r.echo("host")), (200, "www.origin.test".to_owned()), "{r:?}");
        assert!(r.head.to_ascii_lowercase().contains("x-edge-module: example-simple"), "{}", r.head);
    }
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// The sample application (tests/fixtures/repos/sample-application) rendered for `env`, its
/// example/server.conf letting large bodies stream (example-simple's nginx stops bodies over
/// 1 MB by default: a module's own limit, set by its config).
fn sample_application(env: &str, opts: Options) -> Pop {
    let work = tempfile::tempdir().unwrap();
    copy_tree(&fixtures().join("repos/sample-application"), work.path());
    std::fs::write(work.path().join("example/server.conf"), STREAMING_SERVER_CONF).unwrap();
    Pop::start(&render_dir(work.path(), env, &fixtures().join("packages/example-simple")), opts)
}

/// Both modules answered: example-simple's header and Varnish's.
fn assert_through_both_modules(r: &Response) {
    let head = r.head.to_ascii_lowercase();
    assert!(head.contains("x-edge-module: example-simple") && head.contains("x-varnish:"), "{}", r.head);
}

/// What both of the sample application's environments show through the whole chain.
fn assert_the_sample_applications_chain(pop: &Pop, host: &str, sni: &str) {
    for https in [false, true] {
        let r = pop.request(Ipv4Addr::LOCALHOST, https, "GET", "/page", &[("section-origin", "images")], b"");
        let scheme = if https { "https" } else { "http" };
        assert_eq!((r.status, r.echo("scheme"), r.echo("host")), (200, scheme.to_owned(), host.to_owned()), "{r:?}");
        assert_eq!(r.echo("section-origin"), "");
        if https {
            assert_eq!(r.echo("sni"), sni);
        }
        assert_through_both_modules(&r);
    }
    assert!(pop.origin_log("alt.test").is_empty(), "a client's section-origin reached the alternate origin");
    // The custom 503 page of the sample application.
    let r = pop.get("/status/503", &[]);
    let page = std::fs::read_to_string(fixtures().join("repos/sample-application/custom_errors/503.html")).unwrap();
    assert_eq!((r.status, r.text()), (503, page), "{r:?}");
    // Connection reuse: 20 more requests, at most two new origin connections.
    let before = connections_seen(pop, "origin.test");
    let logged = pop.origin_log("origin.test").len();
    for _ in 0..20 {
        assert_eq!(pop.get("/", &[]).status, 200);
    }
    assert!(wait_for(Duration::from_secs(10), || pop.origin_log("origin.test").len() == logged + 20));
    let new = connections_seen(pop, "origin.test").difference(&before).count();
    assert!(new <= 2, "20 requests took {new} new origin connections");
    assert_a_20_mb_upload_streams(pop, "/upload");
    assert_a_large_download_keeps_tmp_within_the_emptydirs(pop, 64 << 20);
}

#[test]
fn the_sample_applications_production_serves_through_both_modules_with_its_blacklist() {
    let pop = sample_application("Production", Options { large: 64 << 20, ..Default::default() });
    let host = "my-s3-bucket.s3-website.us-east-2.amazonaws.com";
    // Production: no SNI, no verification.
    assert_the_sample_applications_chain(&pop, host, "");
    for blocked in [Ipv4Addr::new(203, 0, 113, 7), Ipv4Addr::new(198, 51, 100, 9)] {
        let r = pop.request(blocked, false, "GET", "/", &[], b"");
        assert_eq!(r.status, 403, "{blocked}: {r:?}");
        let r = pop.request(blocked, false, "GET", "/.devpop/healthz", &[], b"");
        assert_eq!(r.status, 200, "health checks are exempt: {r:?}");
    }
    let r = pop.request(Ipv4Addr::new(203, 0, 113, 8), false, "GET", "/", &[("X-Forwarded-For", "203.0.113.7")], b"");
    assert_eq!(r.status, 200, "{r:?}");
}

#[test]
fn the_sample_applications_staging_serves_through_both_modules_with_sni_and_verification() {
    let pop = sample_application("Staging", Options { large: 64 << 20, ..Default::default() });
    let host = "my-s3-bucket-staging.s3-website.us-east-2.amazonaws.com";
    assert_the_sample_applications_chain(&pop, host, host);
    // No blacklist in Staging.
    assert_eq!(pop.request(Ipv4Addr::new(203, 0, 113, 7), false, "GET", "/", &[], b"").status, 200);
}

/// Issue 13 item 11: a cluster whose domain is not `cluster.local`. The cluster DNS stand-in
/// knows the Services only by that domain's names, so a name rendered with `cluster.local`
/// would not resolve and its hop would not start.
#[test]
fn a_cluster_with_another_domain_serves_through_both_modules() {
    let work = tempfile::tempdir().unwrap();
    copy_tree(&fixtures().join("repos/sample-application"), work.path());
    let settings = RenderSettings { cluster_domain: "cluster.example".into(), ..RenderSettings::default() };
    let yaml = render_dir_with(work.path(), "Staging", &fixtures().join("packages/example-simple"), &settings);
    assert!(!yaml.contains("cluster.local"), "{yaml}");
    let pop = Pop::start(&yaml, Options { cluster_domain: "cluster.example".into(), ..Default::default() });
    let want =
        format!("next-hop: m2-example.{}.svc.cluster.example is {}\n", pop.namespace, pop.services["m2-example"]);
    assert_eq!(pop.pod("m1-cache").init_logs[0], want);
    let r = pop.get("/", &[]);
    assert_eq!(r.status, 200, "{r:?}");
    assert_through_both_modules(&r);
}

/// Issue 13: the rendered repo runs as it stands. `devpop render --out` writes the folder and
/// exits; the harness runs the folder's files (through its kustomization.yaml) with no devpop
/// process running, and requests pass both modules.
#[test]
fn a_rendered_folder_with_two_modules_serves_requests_with_no_devpop_running() {
    let work = tempfile::tempdir().unwrap();
    copy_tree(&fixtures().join("repos/sample-application"), work.path());
    let out = tempfile::tempdir().unwrap();
    let folder = out.path().join("Production");
    let devpop = env!("CARGO_BIN_EXE_devpop");
    let run = Command::new(devpop)
        .args(["render", "--env", "Production", "--app", "9999/9999/site", "--out"])
        .arg(&folder)
        .arg(work.path())
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let running = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| std::fs::read_link(e.path().join("exe")).is_ok_and(|exe| exe == Path::new(devpop)))
        .count();
    assert_eq!(running, 0, "a devpop process is running");
    let pop = Pop::start_folder(&folder, Options::default());
    let r = pop.get("/from-the-folder", &[]);
    assert_eq!(
        (r.status, r.echo("host")),
        (200, "my-s3-bucket.s3-website.us-east-2.amazonaws.com".to_owned()),
        "{r:?}"
    );
    assert_through_both_modules(&r);
    assert_eq!(pop.request(Ipv4Addr::new(203, 0, 113, 7), false, "GET", "/", &[], b"").status, 403);
}

/// Aperture's `outagepage` engages a page (`environments.<env>.outage_page`): every request
/// through the chain gets it with 503, health checks excepted, until it is disengaged.
#[test]
fn an_engaged_outage_page_answers_every_request_until_disengaged() {
    let engaged = with_origin("origin.test", "").replacen(
        r#""origin": {"#,
        r#""outage_page": "maintenance.html", "origin": {"#,
        1,
    );
    let files = [
        ("outage_pages/maintenance.html", "<h1>planned maintenance</h1>"),
        ("outage_pages/other.html", OUTAGE),
        ("custom_errors/503.html", "a custom 503 is not the engaged page"),
    ];
    let pop = Pop::start(&render(&engaged, "Production", &files), Options::default());
    for path in ["/", "/any/page?x=1"] {
        let r = pop.get(path, &[]);
        assert_eq!((r.status, r.text()), (503, "<h1>planned maintenance</h1>".to_owned()), "{r:?}");
    }
    let r = pop.request_service("egress", "/.devpop/healthz", &[]);
    assert_eq!(r.status, 200, "health checks stay exempt: {r:?}");
    // Disengaged (the field removed): requests reach the origin again.
    let pop = Pop::start(&render(&with_origin("origin.test", ""), "Production", &files), Options::default());
    let r = pop.get("/", &[]);
    assert_eq!(r.status, 200, "{r:?}");
}
