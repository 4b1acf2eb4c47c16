//! Hostile network clients against a real `devpop serve` over real sockets: slow and idle
//! clients, connection floods, made-up tokens from many addresses, oversized and crafted
//! package uploads, cross-site console forms, and what the console's pages and cookies promise.
//! (Issue 12, items 8, 9 and 10.)

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::os::fd::FromRawFd;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

fn token(devpop: &Devpop, args: &[&str]) -> String {
    let out = Command::new(DEVPOP).args(["token", "create"]).args(args).arg("--data").arg(devpop.data.path()).output();
    let out = out.unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// A TCP connection to `addr` from the loopback address `from` (any 127.x.y.z works on Linux),
/// so one test can be many clients.
fn connect_from(from: Ipv4Addr, addr: &str) -> TcpStream {
    let to: std::net::SocketAddrV4 = addr.parse().unwrap();
    let sockaddr = |ip: Ipv4Addr, port: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr { s_addr: u32::from(ip).to_be() },
        sin_zero: [0; 8],
    };
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: plain socket calls on a descriptor this function owns until it hands it over.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        let local = sockaddr(from, 0);
        assert_eq!(libc::bind(fd, &local as *const _ as *const libc::sockaddr, len), 0, "bind {from}");
        let remote = sockaddr(*to.ip(), to.port());
        let rc = libc::connect(fd, &remote as *const _ as *const libc::sockaddr, len);
        assert_eq!(rc, 0, "connect from {from}: {}", std::io::Error::last_os_error());
        TcpStream::from_raw_fd(fd)
    }
}

struct Answer {
    status: u16,
    head: String,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}\n{}", self.head, self.body))
    }
}

/// One request (`Connection: close`) from the loopback address `from`; the answer is read to
/// its end.
fn request_from(from: Ipv4Addr, addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Answer {
    let mut s = connect_from(from, addr);
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    s.write_all(req.as_bytes()).unwrap();
    // The server may answer (413) and close before it has read a large body.
    let _ = s.write_all(body);
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no HTTP answer: {text:?}"));
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    Answer { status, head: head.to_owned(), body: body.to_owned() }
}

fn request(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Answer {
    request_from(Ipv4Addr::LOCALHOST, addr, method, path, headers, body)
}

/// Has the server closed this connection (or answered and closed it)? Waits up to `wait`.
fn closed_within(s: &mut TcpStream, wait: Duration) -> bool {
    s.set_read_timeout(Some(wait)).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue, // an answer (503) before the close
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => return false,
            Err(_) => return true, // reset
        }
    }
}

// ---- item 8: slow clients and connection floods -------------------------------------------

#[test]
fn a_client_trickling_header_lines_is_cut_off_at_the_header_timeout() {
    let devpop = Devpop::start_with(&["--header-timeout", "2s"]);
    // Slowloris: a header line every 300 ms, never the blank line that ends the head.
    let mut slow = TcpStream::connect(devpop.addr()).unwrap();
    let start = Instant::now();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").unwrap();
    let cut = loop {
        if closed_within(&mut slow, Duration::from_millis(300)) || slow.write_all(b"X-Slow: 1\r\n").is_err() {
            break start.elapsed();
        }
        assert!(start.elapsed() < Duration::from_secs(30), "a trickling client was never cut off");
    };
    eprintln!("trickling client cut after {cut:?} (header timeout 2s)");
    assert!(cut >= Duration::from_millis(1500) && cut < Duration::from_secs(6), "cut after {cut:?}");

    // A client that connects and sends nothing is cut the same way.
    let mut idle = TcpStream::connect(devpop.addr()).unwrap();
    let start = Instant::now();
    assert!(closed_within(&mut idle, Duration::from_secs(10)), "an idle connection was never closed");
    let cut = start.elapsed();
    eprintln!("silent client cut after {cut:?}");
    assert!(cut >= Duration::from_millis(1500), "cut after {cut:?}");

    // A request sent in time is served as before.
    assert_eq!(request(&devpop.addr(), "GET", "/healthz", &[], b"").body, "ok\n");
}

/// `devpop serve` under an open-files limit (`ulimit -n`), its log in a file; on a free port
/// picked here, so its address is known whatever `--public-url` says.
struct Limited {
    child: Child,
    addr: String,
    log: std::path::PathBuf,
    _data: tempfile::TempDir,
}

impl Limited {
    fn start(open_files: u32, args: &[&str]) -> Limited {
        let data = tempfile::tempdir().unwrap();
        let log = data.path().join("server.log");
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let addr = format!("127.0.0.1:{port}");
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(format!("ulimit -n {open_files} && exec \"$0\" \"$@\""))
            .arg(DEVPOP)
            .args(["serve", "--listen", &addr, "--data"])
            .arg(data.path())
            .args(args)
            .env("DEVPOP_LOG", "warn,devpop=info")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut line).unwrap();
        assert!(line.starts_with("devpop serving on "), "{line:?}");
        Limited { child, addr, log, _data: data }
    }

    /// The server's open sockets (its listener, connections, and any the processes it runs share).
    fn sockets(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.child.id()))
            .unwrap()
            .flatten()
            .filter(|e| std::fs::read_link(e.path()).is_ok_and(|t| t.to_string_lossy().starts_with("socket:")))
            .count()
    }
}

impl Drop for Limited {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// This test process opens over a thousand sockets: its own soft limit goes up to the hard one.
fn raise_own_open_files() -> libc::rlim_t {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: reads and writes the struct passed.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
    }
    lim.rlim_cur
}

#[test]
fn a_flood_of_connections_past_the_cap_is_refused_and_the_server_keeps_serving() {
    const FLOOD: usize = 1_100;
    assert!(raise_own_open_files() > FLOOD as u64 + 100, "the test needs more open files than {FLOOD}");
    // 400 open files: room for (400 - 256) / 2 = 72 connections. Without a cap, the server
    // accepts until it runs out of files and then cannot accept at all.
    let server = Limited::start(400, &["--header-timeout", "60s"]);
    let addr = server.addr.clone();
    let mut flood: Vec<TcpStream> = (0..FLOOD)
        .map(|_| {
            let mut s = TcpStream::connect(&addr).unwrap();
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").unwrap();
            s
        })
        .collect();
    // Every connection beyond the cap is closed at once; those within it wait for their head.
    let start = Instant::now();
    let mut refused = 0;
    let mut open = Vec::new();
    for mut s in flood.drain(..) {
        let left = Duration::from_secs(20).saturating_sub(start.elapsed()).max(Duration::from_millis(1));
        if closed_within(&mut s, if open.len() >= 72 { left } else { Duration::from_millis(20) }) {
            refused += 1;
        } else {
            open.push(s);
        }
    }
    let held = server.sockets();
    eprintln!(
        "flood of {FLOOD}: {refused} refused and closed within {:?}, {} left open, the server holds {held} sockets",
        start.elapsed(),
        open.len()
    );
    assert!(refused >= FLOOD - 72, "only {refused} of {FLOOD} refused");
    assert!(held <= 72 + 8, "the server holds {held} sockets");
    // While the flood holds every slot, a new client is told so (503), not left hanging.
    let busy = request(&addr, "GET", "/healthz", &[], b"");
    assert_eq!(busy.status, 503, "{}", busy.body);
    assert!(busy.body.contains("too many connections"), "{}", busy.body);
    // The flood ends: the server serves again at once.
    drop(open);
    assert!(
        eventually(Duration::from_secs(10), || request(&addr, "GET", "/healthz", &[], b"").status == 200),
        "the server does not serve after the flood"
    );
    let log = std::fs::read_to_string(&server.log).unwrap();
    assert!(!log.contains("Too many open files"), "{log}");
    assert!(log.contains("lowered to fit the open-files limit"), "{log}");
}

// ---- item 9: rate limits keyed by address until a token is verified -------------------------

#[test]
fn made_up_tokens_count_against_their_address_and_a_verified_token_has_its_own_bucket() {
    let devpop = Devpop::start_with(&["--auth", "tokens", "--api-rate", "0.01", "--api-burst", "5"]);
    let admin = token(&devpop, &["--admin"]);
    let addr = devpop.addr();
    let a = Ipv4Addr::new(127, 0, 0, 2);
    let statuses: Vec<u16> = (0..20)
        .map(|n| {
            let fake = format!("Bearer dp_{n:064x}");
            request_from(a, &addr, "GET", "/api/v1/accounts", &[("Authorization", &fake)], b"").status
        })
        .collect();
    assert_eq!(&statuses[..5], [401; 5], "{statuses:?}");
    assert_eq!(&statuses[5..], [429; 15], "made-up tokens share their address's bucket: {statuses:?}");
    let limited = request_from(a, &addr, "GET", "/api/v1/accounts", &[("Authorization", "Bearer dp_x")], b"");
    assert_eq!(limited.json()["error"]["code"], "rate_limited");
    assert!(limited.header("retry-after").is_some(), "{}", limited.head);
    // The verified token, from the same address, has its own bucket ...
    let bearer = format!("Bearer {admin}");
    for _ in 0..5 {
        assert_eq!(request_from(a, &addr, "GET", "/api/v1/accounts", &[("Authorization", &bearer)], b"").status, 200);
    }
    // ... which follows it to another address.
    let b = Ipv4Addr::new(127, 0, 0, 3);
    assert_eq!(request_from(b, &addr, "GET", "/api/v1/accounts", &[("Authorization", &bearer)], b"").status, 429);
    // That address's own bucket is untouched.
    assert_eq!(request_from(b, &addr, "GET", "/api/v1/accounts", &[("Authorization", "Bearer dp_y")], b"").status, 401);
}

#[test]
fn a_flood_of_new_addresses_forgets_the_least_recent_clients_not_every_bucket() {
    let devpop = Devpop::start_with(&["--api-rate", "0.01", "--api-burst", "2", "--api-rate-clients", "50"]);
    let addr = devpop.addr();
    let busy = Ipv4Addr::new(127, 0, 0, 2);
    let get = |from| request_from(from, &addr, "GET", "/api/v1/accounts", &[], b"").status;
    assert_eq!((get(busy), get(busy), get(busy)), (200, 200, 429));
    // 200 new addresses, four times what the limiter remembers; the busy client keeps asking.
    for n in 0..200u8 {
        assert_eq!(get(Ipv4Addr::new(127, 0, 1, n)), 200);
        assert_eq!(get(busy), 429, "the busy client was forgotten after {n} new addresses");
    }
}

// ---- item 10: package uploads ---------------------------------------------------------------

/// A `.tar.gz` of the example package, its descriptor replaced when given, with `extra` bytes
/// of incompressible data in `proxy_config/blob`.
fn package_archive(descriptor: Option<&str>, extra: usize) -> Vec<u8> {
    let src = tempfile::tempdir().unwrap();
    let pkg = src.path().join("pkg");
    copy_tree(&fixture("packages/example-simple"), &pkg);
    let yaml = pkg.join(".section-proxy.yaml");
    let text = std::fs::read_to_string(&yaml).unwrap().replace("example-simple:1.0.0", "example-simple:7.0.0");
    std::fs::write(&yaml, descriptor.unwrap_or(&text)).unwrap();
    if extra > 0 {
        std::fs::write(pkg.join("proxy_config/blob"), random_bytes(extra)).unwrap();
    }
    let out = Command::new("tar").args(["czf", "-", "-C"]).arg(src.path()).arg("pkg").output().unwrap();
    assert!(out.status.success());
    out.stdout
}

fn upload(addr: &str, archive: &[u8]) -> Answer {
    request(addr, "POST", "/api/v1/packages", &[("Content-Type", "application/gzip")], archive)
}

#[test]
fn a_package_archive_up_to_16_mib_installs_and_a_larger_one_gets_a_json_413() {
    let devpop = Devpop::start();
    let archive = package_archive(None, 10 << 20);
    assert!(archive.len() > 10 << 20, "incompressible: {} bytes", archive.len());
    let r = upload(&devpop.addr(), &archive);
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.json()["name"], "example-simple:7.0.0");

    let r = upload(&devpop.addr(), &random_bytes(17 << 20));
    assert_eq!(r.status, 413, "{}", r.body);
    assert_eq!(r.json()["error"]["code"], "too_large");
    assert!(r.json()["error"]["message"].as_str().unwrap().contains("16 MiB"), "{}", r.body);
}

#[test]
fn a_descriptor_that_nests_deeply_or_expands_aliases_is_refused_in_milliseconds() {
    let devpop = Devpop::start();
    // 585 bytes: three levels of aliases, 96 x 39 x 39 x 39 values once expanded.
    let mut laughs = format!("spec:\n a: &a [{}]\n", vec!["1"; 96].join(","));
    for (name, prev) in [("b", "a"), ("c", "b"), ("d", "c")] {
        laughs.push_str(&format!(" {name}: &{name} [{}]\n", vec![format!("*{prev}"); 39].join(",")));
    }
    let laughs = laughs.trim_end().to_owned() + "\n";
    // 585 bytes: flow sequences 287 deep.
    let deep = format!("metadata: {}{}\n", "[".repeat(287), "]".repeat(287));
    for (yaml, says) in [(laughs, "more than 10000 values"), (deep, "nested more than 32 levels deep")] {
        let archive = package_archive(Some(&yaml), 0);
        let start = Instant::now();
        let r = upload(&devpop.addr(), &archive);
        let took = start.elapsed();
        eprintln!("{} byte descriptor refused in {took:?}", yaml.len());
        assert_eq!(r.status, 422, "{}", r.body);
        assert!(r.body.contains(says), "{}", r.body);
        assert!(took < Duration::from_millis(500), "took {took:?}");
    }
}

#[test]
fn package_install_errors_name_the_archives_files_never_a_server_path() {
    let devpop = Devpop::start();
    let data = devpop.data.path().to_string_lossy().into_owned();
    let tmp = std::env::temp_dir().to_string_lossy().into_owned();
    // An archive without validate.sh and prepare.sh.
    let src = tempfile::tempdir().unwrap();
    copy_tree(&fixture("packages/example-simple"), src.path());
    std::fs::remove_file(src.path().join("validate.sh")).unwrap();
    std::fs::remove_file(src.path().join("prepare.sh")).unwrap();
    let out = Command::new("tar").args(["czf", "-", "-C"]).arg(src.path()).arg(".").output().unwrap();
    let bad_yaml = package_archive(Some("metadata: [unclosed\n"), 0);
    for archive in [out.stdout, bad_yaml] {
        let r = upload(&devpop.addr(), &archive);
        assert_eq!(r.status, 422, "{}", r.body);
        let message = r.json()["error"]["message"].as_str().unwrap().to_owned();
        assert!(message.starts_with("the archive is not a module package"), "{message}");
        assert!(!message.contains(&tmp) && !message.contains(&data) && !message.contains("/dev/shm"), "{message}");
    }
}

// ---- item 10: the console ---------------------------------------------------------------------

fn login(addr: &str, token: &str, headers: &[(&str, &str)]) -> Answer {
    let mut all = vec![("Content-Type", "application/x-www-form-urlencoded")];
    all.extend_from_slice(headers);
    request(addr, "POST", "/console/login", &all, format!("token={token}").as_bytes())
}

fn session_of(a: &Answer) -> String {
    a.header("set-cookie").and_then(|c| c.split(';').next()).unwrap_or_else(|| panic!("no cookie: {}", a.head)).into()
}

#[test]
fn a_read_only_console_session_can_log_out() {
    let devpop = Devpop::start_with(&["--auth", "tokens"]);
    devpop.create_app("acme", "shop", "shop");
    let read_only = token(&devpop, &["--account", "acme", "--read-only"]);
    let addr = devpop.addr();
    let cookie = session_of(&login(&addr, &read_only, &[]));
    assert_eq!(request(&addr, "GET", "/console", &[("Cookie", &cookie)], b"").status, 200);
    let out = request(&addr, "POST", "/console/logout", &[("Cookie", &cookie)], b"");
    assert_eq!(out.status, 303, "{}\n{}", out.head, out.body);
    assert!(out.header("set-cookie").unwrap().contains("Max-Age=0"), "{}", out.head);
    assert_eq!(request(&addr, "GET", "/console", &[("Cookie", &cookie)], b"").status, 303, "the session is gone");
}

#[test]
fn a_cross_site_login_post_is_refused() {
    let devpop = Devpop::start_with(&["--auth", "tokens"]);
    let t = token(&devpop, &["--account", "acme"]);
    let addr = devpop.addr();
    for headers in [
        vec![("Origin", "https://evil.example")],
        vec![("Sec-Fetch-Site", "cross-site")],
        vec![("Origin", "null"), ("Sec-Fetch-Site", "cross-site")],
    ] {
        let r = login(&addr, &t, &headers);
        assert_eq!(r.status, 403, "{headers:?}: {}", r.head);
        assert!(r.header("set-cookie").is_none(), "{}", r.head);
        assert!(r.body.contains("cross-site form refused"), "{}", r.body);
    }
    // The console's own form, as a browser posts it.
    let own = format!("http://{addr}");
    let r = login(&addr, &t, &[("Origin", &own), ("Sec-Fetch-Site", "same-origin")]);
    assert_eq!(r.status, 303, "{}", r.head);
    assert!(r.header("set-cookie").is_some());
}

#[test]
fn the_session_cookie_is_secure_over_https_has_a_max_age_and_ends_when_idle() {
    // Served as https (the public URL says so): Secure, and the lifetime as Max-Age.
    let https = Limited::start(4096, &["--auth", "tokens", "--public-url", "https://devpop.example.com"]);
    let out =
        Command::new(DEVPOP).args(["token", "create", "--account", "acme", "--data"]).arg(https._data.path()).output();
    let t = String::from_utf8(out.unwrap().stdout).unwrap().trim().to_owned();
    let r = login(&https.addr, &t, &[]);
    let cookie = r.header("set-cookie").unwrap_or_else(|| panic!("{}", r.head)).to_owned();
    assert!(cookie.contains("; Secure") && cookie.contains("Max-Age=43200"), "{cookie}");
    drop(https);

    // Behind a proxy: X-Forwarded-Proto counts from the trusted proxy only.
    let devpop = Devpop::start_with(&[
        "--auth",
        "tokens",
        "--trusted-proxies",
        "127.0.0.1",
        "--session-idle",
        "1s",
        "--session-lifetime",
        "1h",
    ]);
    let t = token(&devpop, &["--account", "acme"]);
    let addr = devpop.addr();
    let form = format!("token={t}");
    let via = |from| {
        let headers = [("Content-Type", "application/x-www-form-urlencoded"), ("X-Forwarded-Proto", "https")];
        request_from(from, &addr, "POST", "/console/login", &headers, form.as_bytes())
    };
    let proxied = via(Ipv4Addr::LOCALHOST);
    assert!(proxied.header("set-cookie").unwrap().contains("; Secure"), "{}", proxied.head);
    assert!(proxied.header("set-cookie").unwrap().contains("Max-Age=3600"), "{}", proxied.head);
    let direct = via(Ipv4Addr::new(127, 0, 0, 9));
    assert!(!direct.header("set-cookie").unwrap().contains("Secure"), "{}", direct.head);

    // The server ends a session unused for --session-idle, whatever the cookie says.
    let cookie = session_of(&login(&addr, &t, &[]));
    assert_eq!(request(&addr, "GET", "/console", &[("Cookie", &cookie)], b"").status, 200);
    // Waiting is the event here: the idle time has to pass.
    std::thread::sleep(Duration::from_millis(1500));
    let r = request(&addr, "GET", "/console", &[("Cookie", &cookie)], b"");
    assert_eq!((r.status, r.header("location")), (303, Some("/console/login")), "{}", r.head);
}

/// Every `<script>` and `<style>` of a page carries the nonce its policy allows, and nothing
/// else runs or styles (no inline handlers or style attributes, which a nonce does not cover).
fn assert_console_policy(a: &Answer) {
    let csp = a.header("content-security-policy").unwrap_or_else(|| panic!("no CSP: {}", a.head));
    assert!(csp.contains("frame-ancestors 'none'") && csp.contains("default-src 'none'"), "{csp}");
    assert_eq!(a.header("x-frame-options"), Some("DENY"), "{}", a.head);
    let nonce = csp.split("'nonce-").nth(1).and_then(|n| n.split('\'').next()).unwrap_or_else(|| panic!("{csp}"));
    assert!(nonce.len() >= 16, "{csp}");
    for tag in ["<script", "<style"] {
        let tags = a.body.matches(tag).count();
        assert!(tags > 0);
        assert_eq!(a.body.matches(&format!("{tag} nonce=\"{nonce}\"")).count(), tags, "{}", a.body);
    }
    assert!(!a.body.contains(" style=\""), "style attribute in:\n{}", a.body);
    let handler = a.body.split_whitespace().find(|w| {
        w.split_once('=').is_some_and(|(name, _)| {
            name.len() > 2 && name.starts_with("on") && name.chars().all(|c| c.is_ascii_lowercase())
        })
    });
    assert_eq!(handler, None, "inline event handler in:\n{}", a.body);
}

#[test]
fn console_pages_carry_a_nonce_content_security_policy_and_refuse_framing() {
    let devpop = Devpop::start();
    devpop.create_app("acme", "shop", "shop");
    let addr = devpop.addr();
    let mut nonces = Vec::new();
    for path in ["/console", "/console/accounts/acme/applications/shop", "/console/packages", "/console/login"] {
        let page = request(&addr, "GET", path, &[], b"");
        assert_eq!(page.status, 200, "{path}");
        assert_console_policy(&page);
        nonces.push(page.header("content-security-policy").unwrap().to_owned());
    }
    nonces.dedup();
    assert_eq!(nonces.len(), 4, "a new nonce per page");
    // Console errors are framed by no one either.
    let missing = request(&addr, "GET", "/console/deployments/999", &[], b"");
    assert_eq!(missing.status, 404);
    assert_eq!(missing.header("x-frame-options"), Some("DENY"));
    assert!(missing.header("content-security-policy").unwrap().contains("frame-ancestors 'none'"));
}

// ---- item 10: tokens --------------------------------------------------------------------------

#[test]
fn the_last_admin_token_cannot_be_revoked() {
    let devpop = Devpop::start_with(&["--auth", "tokens"]);
    let admin = token(&devpop, &["--admin"]);
    let addr = devpop.addr();
    let bearer = format!("Bearer {admin}");
    let auth = [("Authorization", bearer.as_str()), ("Content-Type", "application/json")];
    let list = request(&addr, "GET", "/api/v1/tokens", &auth, b"").json();
    let id = list["items"][0]["id"].as_str().unwrap().to_owned();
    let r = request(&addr, "DELETE", &format!("/api/v1/tokens/{id}"), &auth, b"");
    assert_eq!(r.status, 409, "{}", r.body);
    assert_eq!(r.json()["error"]["code"], "last_admin");
    assert!(r.body.contains("create another admin token first"), "{}", r.body);
    // An account token does not count as an admin; a second admin token does.
    token(&devpop, &["--account", "acme"]);
    assert_eq!(request(&addr, "DELETE", &format!("/api/v1/tokens/{id}"), &auth, b"").status, 409);
    let second = request(&addr, "POST", "/api/v1/tokens", &auth, br#"{"account":"*"}"#).json();
    let r = request(&addr, "DELETE", &format!("/api/v1/tokens/{id}"), &auth, b"");
    assert_eq!(r.status, 200, "{}", r.body);
    let bearer2 = format!("Bearer {}", second["token"].as_str().unwrap());
    let auth2 = [("Authorization", bearer2.as_str())];
    let id2 = second["id"].as_str().unwrap();
    assert_eq!(request(&addr, "DELETE", &format!("/api/v1/tokens/{id2}"), &auth2, b"").status, 409);
    // The CLI keeps the same rule.
    let out = Command::new(DEVPOP).args(["token", "revoke", id2, "--data"]).arg(devpop.data.path()).output().unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("last admin token"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
