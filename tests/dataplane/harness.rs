//! The PoP on loopback: runs an environment as devpop renders it, the way a cluster would, as
//! far as one machine allows.
//!
//! - The input is the renderer's output as YAML (what the rendered repo holds): Deployments,
//!   ConfigMaps and Services are read back from it; nothing of the harness knows the templates.
//! - Each Deployment's pod is a real process: Debian's nginx (the image's command, `nginx -g
//!   'daemon off;'`; for a module, the fixture package's `nginx -c /opt/proxy/nginx.conf`,
//!   after its init containers) under bubblewrap with the constraints its pod spec declares: its own network
//!   namespace (a pod IP of its own, listening on its containerPort), a read-only root that
//!   holds the system's paths (so nginx's compiled-in paths are read-only, as in the image;
//!   without readOnlyRootFilesystem, nginx's writable paths are tmpfs), each
//!   emptyDir a tmpfs of its sizeLimit at its mountPath, each ConfigMap volume's items written
//!   with their modes and mounted at their paths (subPath as a file), the container's uid
//!   (`runAsUser`, else the image's: 101 for devpop's nginx, root for a module), its
//!   capabilities (drop ALL, then what it adds), its pod sysctls, its `/etc/hosts` from
//!   `hostAliases` plus the cluster DNS names of the Services and the origins' names (render-only
//!   output leaves `next-hop` unresolved: the harness points it at the next Service).
//! - A Service is a stand-in address (127.0.1.N): in every pod's network namespace a listener
//!   at `<address>:<port>` relays each connection to `127.0.0.1:<targetPort>` in the namespace
//!   of the pod the Service selects (one connection for one: connection counts hold).
//! - Origins are nginx processes of their own (HTTP on 8080 and HTTPS on 8443 with a
//!   certificate from a test CA with two intermediates) or in-process servers, reached from
//!   the pods at 127.0.2.N:80 and :443 through the same relays.
//! - An ingress-controller stand-in (nginx in front of private-ingress, like ingress-nginx: it
//!   appends the peer address to X-Forwarded-For and sets X-Forwarded-Proto) is where clients
//!   connect from, with a source address of the test's choosing (127.0.0.N).
//!
//! Waiting is on events: a port that accepts, a log line, a counter; never a fixed sleep.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use devpop::rendering;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

pub const NGINX: &str = "/usr/sbin/nginx";
/// The uid of the nginx-unprivileged image (its `USER`), used when a pod sets no runAsUser.
pub const IMAGE_UID: u32 = 101;
const WAIT: Duration = Duration::from_secs(30);

/// Polls `f` until it holds or `limit` passes (the condition is the event; the pause between
/// polls only spares the CPU).
pub fn wait_for(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if f() {
            return true;
        }
        if start.elapsed() > limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

// ---------------------------------------------------------------------------------------------
// Network namespaces

/// Runs `f` on a thread that has entered the network namespace `ns` (sockets made there stay
/// in it, whichever thread uses them later).
pub fn in_netns<T: Send>(ns: &File, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: setns on this thread only, with a valid namespace fd.
            let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .expect("netns thread")
    })
}

/// Where a relay connects: an address in a namespace (`None`: the test's own).
#[derive(Clone)]
pub struct Endpoint {
    pub ns: Option<Arc<File>>,
    pub addr: SocketAddr,
}

impl Endpoint {
    pub fn connect(&self) -> std::io::Result<TcpStream> {
        match &self.ns {
            Some(ns) => in_netns(ns, || TcpStream::connect(self.addr)),
            None => TcpStream::connect(self.addr),
        }
    }
}

/// Relays every connection to `listen` (in namespace `ns`) to `to`, byte for byte both ways.
pub fn relay(ns: &File, listen: SocketAddr, to: Endpoint) {
    let listener = in_netns(ns, || TcpListener::bind(listen)).unwrap_or_else(|e| panic!("relay {listen}: {e}"));
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { continue };
            let to = to.clone();
            std::thread::spawn(move || {
                let Ok(server) = to.connect() else { return };
                pipe(client, server);
            });
        }
    });
}

fn pipe(a: TcpStream, b: TcpStream) {
    let (mut a2, mut b2) = (a.try_clone().unwrap(), b.try_clone().unwrap());
    let t = std::thread::spawn(move || {
        let _ = std::io::copy(&mut a2, &mut b2);
        let _ = b2.shutdown(Shutdown::Write);
    });
    let (mut a, mut b) = (a, b);
    let _ = std::io::copy(&mut b, &mut a);
    let _ = a.shutdown(Shutdown::Write);
    let _ = t.join();
}

// ---------------------------------------------------------------------------------------------
// Pods

/// One container run as a pod: a process in a bubblewrap sandbox with its own network namespace.
pub struct Pod {
    pub name: String,
    child: Child,
    /// The process inside the sandbox (its namespaces, its root at /proc/<pid>/root).
    pub pid: u32,
    pub netns: Arc<File>,
    pub dir: PathBuf,
    pub port: u16,
    /// emptyDirs: mount path -> size limit in bytes.
    pub empty_dirs: Vec<(String, u64)>,
}

/// What a pod is made of (from a Deployment, or written by a test for its origins).
pub struct PodSpec {
    pub name: String,
    pub command: Vec<String>,
    pub uid: u32,
    /// Files to bind read-only: host path -> path in the pod.
    pub binds: Vec<(PathBuf, String)>,
    /// tmpfs mounts: path -> size in bytes.
    pub empty_dirs: Vec<(String, u64)>,
    pub hosts: String,
    /// Capabilities kept (none unless the pod spec adds some), without `CAP_`.
    pub caps: Vec<String>,
    pub port: u16,
    /// `readOnlyRootFilesystem`; a writable root gets the writable paths of a typical nginx
    /// image (/var/lib/nginx, /var/log/nginx, /var/cache/nginx, /run) as its container layer.
    pub read_only_root: bool,
    /// Pod sysctls (`net.*`), set in the pod's network namespace before its containers start.
    pub sysctls: Vec<(String, String)>,
    /// Init containers' commands, run to completion in order before the container.
    pub init: Vec<Vec<String>>,
}

impl Pod {
    pub fn start(spec: PodSpec, dir: &Path) -> Pod {
        let pdir = dir.join(&spec.name);
        std::fs::create_dir_all(&pdir).unwrap();
        std::fs::write(pdir.join("hosts"), &spec.hosts).unwrap();
        for (i, init) in spec.init.iter().enumerate() {
            let out = Self::sandbox(&spec, &pdir, &[], init).output().expect("bwrap");
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "pod {}: init container {i} failed: {err}", spec.name);
        }
        let pipe = || {
            let mut fds = [0; 2];
            // SAFETY: pipe2 with a valid array; both ends close-on-exec (the child's ends are
            // made inheritable in the child only, below).
            assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
            (fds[0], fds[1])
        };
        // bwrap reports the sandbox's pid on one pipe, and waits on the other before it starts
        // the container (the pod's sysctls go in between).
        let (info_r, info_w) = pipe();
        let (block_r, block_w) = pipe();
        let extra = ["--info-fd".to_owned(), info_w.to_string(), "--block-fd".to_owned(), block_r.to_string()];
        let mut cmd = Self::sandbox(&spec, &pdir, &extra, &spec.command);
        cmd.stdin(Stdio::null())
            .stdout(File::create(pdir.join("stdout")).unwrap())
            .stderr(File::create(pdir.join("stderr")).unwrap());
        // SAFETY: only async-signal-safe calls (fcntl) between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                for fd in [info_w, block_r] {
                    if libc::fcntl(fd, libc::F_SETFD, 0) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let child = cmd.spawn().expect("bwrap runs (tests/run installs bubblewrap)");
        // SAFETY: we own these descriptors; the child has its copies.
        let (mut info_r, mut block_w) = unsafe {
            libc::close(info_w);
            libc::close(block_r);
            (File::from_raw_fd(info_r), File::from_raw_fd(block_w))
        };
        let mut info = String::new();
        let mut buf = [0u8; 256];
        while !info.contains('}') {
            let n = info_r.read(&mut buf).unwrap();
            if n == 0 {
                panic!("bwrap for {} exited: {}", spec.name, std::fs::read_to_string(pdir.join("stderr")).unwrap());
            }
            info.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
        let info: serde_json::Value = serde_json::from_str(&info).unwrap();
        let pid = info["child-pid"].as_u64().unwrap() as u32;
        let netns = Arc::new(File::open(format!("/proc/{pid}/ns/net")).unwrap());
        for (key, value) in &spec.sysctls {
            let path = format!("/proc/sys/{}", key.replace('.', "/"));
            in_netns(&netns, || std::fs::write(&path, value)).unwrap_or_else(|e| panic!("sysctl {key}: {e}"));
        }
        block_w.write_all(b"go").unwrap();
        drop(block_w);
        // bwrap brings the namespace's loopback up in the sandbox, after it reported the pid:
        // wait for that (127.0.0.1 exists once lo is up) before anything binds there.
        let lo_up = wait_for(WAIT, || in_netns(&netns, || TcpListener::bind("127.0.0.1:0")).is_ok());
        assert!(lo_up, "pod {}: loopback never came up", spec.name);
        Pod { name: spec.name, child, pid, netns, dir: pdir, port: spec.port, empty_dirs: spec.empty_dirs }
    }

    /// bwrap with the pod's constraints (and `extra` options) around `command`.
    fn sandbox(spec: &PodSpec, dir: &Path, extra: &[String], command: &[String]) -> Command {
        let mut cmd = Command::new("bwrap");
        let uid = spec.uid.to_string();
        if spec.uid != 0 {
            cmd.args(["--unshare-user", "--uid", &uid, "--gid", &uid]);
        }
        // (uid 0: the test runs as root, and a root-started image must be able to hand files
        // and workers to other uids, which a one-uid user namespace cannot map.)
        cmd.args(["--unshare-net", "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--die-with-parent"])
            .args(extra)
            // The root: the system's paths (nginx's compiled-in ones included), read-only.
            .args(["--tmpfs", "/"]);
        for p in ["/usr", "/etc", "/var"] {
            if Path::new(p).exists() {
                cmd.args(["--ro-bind", p, p]);
            }
        }
        for (link, to) in [("/bin", "usr/bin"), ("/sbin", "usr/sbin"), ("/lib", "usr/lib"), ("/lib64", "usr/lib64")] {
            cmd.args(["--symlink", to, link]);
        }
        cmd.args(["--dev", "/dev", "--proc", "/proc"]);
        cmd.args(["--ro-bind", dir.join("hosts").to_str().unwrap(), "/etc/hosts"]);
        if !spec.read_only_root {
            // A writable root: the writable paths of a typical nginx image's container layer.
            for p in ["/var/lib/nginx", "/var/log/nginx", "/var/cache/nginx", "/run"] {
                if Path::new(p).is_dir() {
                    cmd.args(["--perms", "0755", "--tmpfs", p]);
                }
            }
        }
        for (path, size) in &spec.empty_dirs {
            cmd.args(["--size", &size.to_string(), "--perms", "1777", "--tmpfs", path]);
        }
        for (from, to) in &spec.binds {
            cmd.args(["--ro-bind", from.to_str().unwrap(), to]);
        }
        if spec.read_only_root {
            cmd.args(["--remount-ro", "/"]);
        }
        cmd.args(["--cap-drop", "ALL"]);
        for c in &spec.caps {
            cmd.args(["--cap-add", &format!("CAP_{c}")]);
        }
        cmd.arg("--").args(command);
        cmd
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.join("stderr")).unwrap_or_default()
    }

    pub fn stdout(&self) -> String {
        std::fs::read_to_string(self.dir.join("stdout")).unwrap_or_default()
    }

    /// Waits until the pod accepts connections on its port (or its process exits: a panic
    /// with its log).
    pub fn wait_ready(&mut self) {
        let port = self.port;
        let ok = wait_for(WAIT, || {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("pod {} exited ({status}) before it was ready:\n{}", self.name, self.stderr());
            }
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
            in_netns(&self.netns, || TcpStream::connect(addr)).is_ok()
        });
        assert!(ok, "pod {} never listened on {port}:\n{}", self.name, self.stderr());
    }

    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    pub fn endpoint(&self) -> Endpoint {
        Endpoint { ns: Some(self.netns.clone()), addr: SocketAddr::from((Ipv4Addr::LOCALHOST, self.port)) }
    }

    /// Bytes in use on the tmpfs at `path` inside the pod (files nginx unlinked but holds
    /// open included).
    pub fn tmpfs_used(&self, path: &str) -> u64 {
        let p = std::ffi::CString::new(format!("/proc/{}/root{path}", self.pid)).unwrap();
        let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: valid C string and out pointer.
        if unsafe { libc::statvfs(p.as_ptr(), &mut s) } != 0 {
            return 0;
        }
        (s.f_blocks - s.f_bfree) as u64 * s.f_frsize as u64
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// A test CA with two intermediates (openssl CLI)

pub struct Ca {
    pub dir: PathBuf,
    /// The root, as the image's trust store holds it.
    pub bundle: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl").current_dir(dir).args(args).output().expect("openssl");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

impl Ca {
    pub fn new(dir: &Path) -> Ca {
        let dir = dir.join("ca");
        std::fs::create_dir_all(&dir).unwrap();
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
        std::fs::write(
            dir.join("ca.ext"),
            "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n",
        )
        .unwrap();
        let mut args = vec!["req", "-x509", "-new", "-days", "2", "-subj", "/CN=devpop test root"];
        args.extend(ec);
        args.extend(["-keyout", "root.key", "-out", "root.pem", "-addext", "basicConstraints=critical,CA:TRUE"]);
        args.extend(["-addext", "keyUsage=critical,keyCertSign,cRLSign"]);
        openssl(&dir, &args);
        for (name, parent, serial) in [("int1", "root", "2"), ("int2", "int1", "3")] {
            let mut args = vec!["req", "-new", "-subj"];
            let subj = format!("/CN=devpop test {name}");
            args.push(&subj);
            args.extend(ec);
            let (key, csr, pem, pkey, ppem) = (
                format!("{name}.key"),
                format!("{name}.csr"),
                format!("{name}.pem"),
                format!("{parent}.key"),
                format!("{parent}.pem"),
            );
            args.extend(["-keyout", &key, "-out", &csr]);
            openssl(&dir, &args);
            openssl(
                &dir,
                &[
                    "x509",
                    "-req",
                    "-in",
                    &csr,
                    "-CA",
                    &ppem,
                    "-CAkey",
                    &pkey,
                    "-set_serial",
                    serial,
                    "-days",
                    "2",
                    "-extfile",
                    "ca.ext",
                    "-out",
                    &pem,
                ],
            );
        }
        Ca { bundle: dir.join("root.pem"), dir }
    }

    /// A key and a chain (leaf, int2, int1) for `names`, written to `<out>/cert.pem` and `key.pem`.
    pub fn leaf(&self, out: &Path, names: &[&str]) {
        std::fs::create_dir_all(out).unwrap();
        let san: Vec<String> = names.iter().map(|n| format!("DNS:{n}")).collect();
        let ext = out.join("leaf.ext");
        std::fs::write(
            &ext,
            format!("basicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\nsubjectAltName={}\n", san.join(",")),
        )
        .unwrap();
        let (key, csr, pem) = (out.join("key.pem"), out.join("leaf.csr"), out.join("leaf.pem"));
        let subj = format!("/CN={}", names[0]);
        openssl(
            &self.dir,
            &[
                "req",
                "-new",
                "-subj",
                &subj,
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                key.to_str().unwrap(),
                "-out",
                csr.to_str().unwrap(),
            ],
        );
        openssl(
            &self.dir,
            &[
                "x509",
                "-req",
                "-in",
                csr.to_str().unwrap(),
                "-CA",
                "int2.pem",
                "-CAkey",
                "int2.key",
                "-set_serial",
                "10",
                "-days",
                "2",
                "-extfile",
                ext.to_str().unwrap(),
                "-out",
                pem.to_str().unwrap(),
            ],
        );
        let mut chain = std::fs::read(&pem).unwrap();
        chain.extend(std::fs::read(self.dir.join("int2.pem")).unwrap());
        chain.extend(std::fs::read(self.dir.join("int1.pem")).unwrap());
        std::fs::write(out.join("cert.pem"), chain).unwrap();
        for f in ["key.pem", "cert.pem"] {
            std::fs::set_permissions(out.join(f), std::fs::Permissions::from_mode(0o444)).unwrap();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Origins

/// An origin nginx: HTTP on 8080, HTTPS on 8443 (chain from the test CA for `cert_names`).
/// `/` echoes what it saw; `/status/NNN` answers NNN; `/large` serves `large` bytes (a pattern
/// the test can check); every request is logged with its connection's serial number.
pub fn origin_pod(name: &str, ca: &Ca, cert_names: &[&str], large: u64, dir: &Path) -> Pod {
    let odir = dir.join(format!("origin-{name}"));
    std::fs::create_dir_all(&odir).unwrap();
    ca.leaf(&odir.join("certs"), cert_names);
    let data = odir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    if large > 0 {
        let mut f = std::io::BufWriter::new(File::create(data.join("large.bin")).unwrap());
        let mut at = 0;
        while at < large {
            let n = (large - at).min(1 << 20) as usize;
            f.write_all(&pattern(at, n)).unwrap();
            at += n as u64;
        }
    }
    let conf = r#"worker_processes 1;
pid /tmp/nginx.pid;
error_log /dev/stderr warn;
events { worker_connections 1024; }
http {
    client_body_temp_path /tmp/client_body;
    proxy_temp_path /tmp/proxy;
    fastcgi_temp_path /tmp/fastcgi;
    uwsgi_temp_path /tmp/uwsgi;
    scgi_temp_path /tmp/scgi;
    log_format origin 'conn=$connection req=$connection_requests scheme=$scheme uri=$request_uri';
    access_log /dev/stdout origin;
    keepalive_requests 10000;
    client_max_body_size 0;
    server {
        listen 8080;
        listen 8443 ssl;
        ssl_certificate /certs/cert.pem;
        ssl_certificate_key /certs/key.pem;
        default_type text/plain;
        location / {
            return 200 "scheme=$scheme\nhost=$http_host\nsni=$ssl_server_name\nxff=$http_x_forwarded_for\nsection-origin=$http_section_origin\nx-secret=$http_x_secret\nx-other=$http_x_other\naccept-encoding=$http_accept_encoding\nconn=$connection\n";
        }
        location = /status/404 { return 404 "origin says 404\n"; }
        location = /status/418 { return 418 "origin says 418\n"; }
        location = /status/502 { return 502 "origin says 502\n"; }
        location = /status/503 { return 503 "origin says 503\n"; }
        location = /status/504 { return 504 "origin says 504\n"; }
        location = /large { alias /data/large.bin; }
    }
}
"#;
    std::fs::write(odir.join("nginx.conf"), conf).unwrap();
    let mut pod = Pod::start(
        PodSpec {
            name: format!("origin-{name}"),
            command: vec![NGINX.into(), "-g".into(), "daemon off;".into()],
            uid: IMAGE_UID,
            binds: vec![
                (odir.join("nginx.conf"), "/etc/nginx/nginx.conf".into()),
                (odir.join("certs"), "/certs".into()),
                (data, "/data".into()),
            ],
            empty_dirs: vec![("/tmp".into(), 16 << 20)],
            hosts: "127.0.0.1 localhost\n".into(),
            caps: vec![],
            port: 8080,
            read_only_root: true,
            sysctls: vec![],
            init: vec![],
        },
        dir,
    );
    pod.wait_ready();
    pod
}

/// The bytes of the test pattern from `offset`: each 8-byte word is its own offset.
pub fn pattern(offset: u64, len: usize) -> Vec<u8> {
    assert_eq!(offset % 8, 0);
    let mut out = Vec::with_capacity(len + 8);
    let mut w = offset / 8;
    while out.len() < len {
        out.extend_from_slice(&w.to_le_bytes());
        w += 1;
    }
    out.truncate(len);
    out
}

/// An in-process origin that reads each request's body and answers with its length and
/// SHA-256; `received` counts body bytes as they arrive (to see a body stream).
pub struct Sink {
    pub addr: SocketAddr,
    pub received: Arc<AtomicU64>,
}

impl Sink {
    pub fn start() -> Sink {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(AtomicU64::new(0));
        let counter = received.clone();
        std::thread::spawn(move || {
            for s in listener.incoming().flatten() {
                let counter = counter.clone();
                std::thread::spawn(move || {
                    let _ = sink_connection(s, &counter);
                });
            }
        });
        Sink { addr, received }
    }
}

fn sink_connection(s: TcpStream, counter: &AtomicU64) -> std::io::Result<()> {
    use sha2::{Digest, Sha256};
    let mut w = s.try_clone()?;
    let mut r = BufReader::new(s);
    loop {
        let head = read_head(&mut r)?;
        if head.is_empty() {
            return Ok(());
        }
        let mut h = Sha256::new();
        let mut total = 0u64;
        let mut feed = |b: &[u8]| {
            h.update(b);
            total += b.len() as u64;
            counter.fetch_add(b.len() as u64, Ordering::SeqCst);
        };
        let lower = head.to_ascii_lowercase();
        if let Some(len) = header(&lower, "content-length") {
            let mut left: u64 = len.parse().unwrap();
            let mut buf = vec![0u8; 64 << 10];
            while left > 0 {
                let n = r.read(&mut buf[..left.min(64 << 10) as usize])?;
                if n == 0 {
                    return Ok(());
                }
                feed(&buf[..n]);
                left -= n as u64;
            }
        } else if lower.contains("transfer-encoding: chunked") {
            loop {
                let mut line = String::new();
                r.read_line(&mut line)?;
                let size = usize::from_str_radix(line.trim().split(';').next().unwrap(), 16).unwrap_or(0);
                if size == 0 {
                    let mut end = String::new();
                    r.read_line(&mut end)?;
                    break;
                }
                let mut buf = vec![0u8; size];
                let mut got = 0;
                while got < size {
                    let n = r.read(&mut buf[got..])?;
                    if n == 0 {
                        return Ok(());
                    }
                    feed(&buf[got..got + n]);
                    got += n;
                }
                let mut crlf = [0u8; 2];
                r.read_exact(&mut crlf)?;
            }
        }
        let digest: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
        let body = format!("length={total}\nsha256={digest}\n");
        write!(w, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}", body.len())?;
    }
}

fn read_head(r: &mut impl BufRead) -> std::io::Result<String> {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Ok(head);
        }
        if line == "\r\n" || line == "\n" {
            return Ok(head);
        }
        head.push_str(&line);
    }
}

fn header<'a>(lower_head: &'a str, name: &str) -> Option<&'a str> {
    lower_head.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(':').map(str::trim))
}

// ---------------------------------------------------------------------------------------------
// HTTP client

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub head: String,
    pub body: Vec<u8>,
}

impl Response {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    /// A `key=value` line of the origin's echo.
    pub fn echo(&self, key: &str) -> String {
        self.text()
            .lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('=').map(str::to_owned))
            .unwrap_or_else(|| panic!("no {key}= in {}", self.text()))
    }
}

pub fn write_request(s: &mut TcpStream, method: &str, path: &str, headers: &[(&str, &str)], body_len: Option<u64>) {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: www.example.test\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some(n) = body_len {
        req.push_str(&format!("Content-Length: {n}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
}

/// Reads one response (Content-Length, chunked, or to the end).
pub fn read_response(s: TcpStream, method: &str) -> Response {
    read_response_from(&mut BufReader::new(s), method)
}

/// Reads one response from a connection that may carry more (keep-alive).
pub fn read_response_from(r: &mut BufReader<TcpStream>, method: &str) -> Response {
    let head = read_head(r).unwrap();
    let status: u16 =
        head.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or_else(|| panic!("no response: {head:?}"));
    let lower = head.to_ascii_lowercase();
    let mut body = Vec::new();
    if method == "HEAD" || status == 204 || status == 304 {
    } else if let Some(len) = header(&lower, "content-length") {
        let len: usize = len.parse().unwrap();
        body.resize(len, 0);
        r.read_exact(&mut body).unwrap();
    } else if lower.contains("transfer-encoding: chunked") {
        loop {
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            let size = usize::from_str_radix(line.trim(), 16).unwrap();
            let mut chunk = vec![0u8; size + 2];
            r.read_exact(&mut chunk).unwrap();
            if size == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..size]);
        }
    } else {
        r.read_to_end(&mut body).unwrap();
    }
    Response { status, head, body }
}

// ---------------------------------------------------------------------------------------------
// The PoP

/// Names and stand-in addresses of the origins a test config may use.
pub const ORIGIN_HOSTS: &[(&str, &str)] = &[
    ("origin.test", "127.0.2.1"),
    ("alt.test", "127.0.2.2"),
    ("wrongname.test", "127.0.2.3"),
    ("upload.test", "127.0.2.4"),
    // No origin listens there: connections are refused.
    ("down.test", "127.0.2.250"),
];

pub struct Pop {
    pub dir: tempfile::TempDir,
    pub namespace: String,
    pub pods: BTreeMap<String, Pod>,
    pub origins: BTreeMap<String, Pod>,
    pub ingress: Pod,
    pub sink: Sink,
    /// Service name -> stand-in address.
    pub services: BTreeMap<String, Ipv4Addr>,
}

#[derive(Default)]
pub struct Options {
    /// Bytes of `/large` at the origins.
    pub large: u64,
}

fn quantity_bytes(q: &str) -> u64 {
    let (num, mult) =
        [("Ki", 1u64 << 10), ("Mi", 1 << 20), ("Gi", 1 << 30), ("k", 1000), ("M", 1_000_000), ("G", 1_000_000_000)]
            .iter()
            .find_map(|(s, m)| q.strip_suffix(s).map(|n| (n, *m)))
            .unwrap_or((q, 1));
    num.parse::<u64>().unwrap() * mult
}

impl Pop {
    /// Runs the environment rendered as `yaml` (the renderer's multi-document output).
    pub fn start(yaml: &str, opts: Options) -> Pop {
        let dir = tempfile::tempdir().unwrap();
        let mut deployments = Vec::new();
        let mut config_maps = BTreeMap::new();
        let mut services = Vec::new();
        let mut namespace = String::new();
        for doc in serde_yaml_ng::Deserializer::from_str(yaml) {
            let v = <serde_yaml_ng::Value as serde::Deserialize>::deserialize(doc).unwrap();
            match v["kind"].as_str() {
                Some("Deployment") => deployments.push(serde_yaml_ng::from_value::<Deployment>(v).unwrap()),
                Some("ConfigMap") => {
                    let cm: ConfigMap = serde_yaml_ng::from_value(v).unwrap();
                    config_maps.insert(cm.metadata.name.clone().unwrap(), cm);
                }
                Some("Service") => services.push(serde_yaml_ng::from_value::<Service>(v).unwrap()),
                Some("Namespace") => namespace = v["metadata"]["name"].as_str().unwrap().to_owned(),
                _ => {}
            }
        }
        let ca = Ca::new(dir.path());
        // Service stand-in addresses, and the pods' hosts file: Services by their cluster names,
        // the origins by theirs.
        let mut service_ips = BTreeMap::new();
        let mut hosts = String::from("127.0.0.1 localhost\n");
        for (i, s) in services.iter().enumerate() {
            let name = s.metadata.name.clone().unwrap();
            let ip = Ipv4Addr::new(127, 0, 1, i as u8 + 1);
            hosts.push_str(&format!("{ip} {name}.{namespace}.svc.cluster.local {name}.{namespace}.svc {name}\n"));
            service_ips.insert(name, ip);
        }
        for (name, ip) in ORIGIN_HOSTS {
            hosts.push_str(&format!("{ip} {name}\n"));
        }

        let mut pods = BTreeMap::new();
        for d in &deployments {
            let name = d.metadata.name.clone().unwrap();
            let pod = d.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
            let c = &pod.containers[0];
            let sc = c.security_context.as_ref().expect("devpop sets a securityContext");
            let caps = sc.capabilities.as_ref().and_then(|c| c.add.clone()).unwrap_or_default();
            let annotations = d.metadata.annotations.clone().unwrap_or_default();
            // A module: its package's image. The harness runs the fixture packages' nginx
            // (their proxy/nginx.conf), starting as root as such images do, unless the pod
            // says otherwise.
            let next_hop = annotations.get(rendering::ANNOTATION_NEXT_HOP);
            let (command, image_uid) = match next_hop {
                Some(_) => (
                    vec![NGINX.into(), "-c".into(), "/opt/proxy/nginx.conf".into(), "-g".into(), "daemon off;".into()],
                    0,
                ),
                None => (vec![NGINX.into(), "-g".into(), "daemon off;".into()], IMAGE_UID),
            };
            let uid = sc
                .run_as_user
                .or(pod.security_context.as_ref().and_then(|p| p.run_as_user))
                .map_or(image_uid, |u| u as u32);
            let sysctls = pod
                .security_context
                .as_ref()
                .and_then(|p| p.sysctls.clone())
                .unwrap_or_default()
                .into_iter()
                .map(|s| (s.name, s.value))
                .collect();
            let init = pod
                .init_containers
                .iter()
                .flatten()
                .map(|i| {
                    i.command
                        .clone()
                        .unwrap_or_default()
                        .into_iter()
                        .chain(i.args.clone().unwrap_or_default())
                        .collect()
                })
                .collect();
            let pdir = dir.path().join(format!("pod-{name}"));
            let mut binds = Vec::new();
            let mut empty_dirs = Vec::new();
            let mut pod_hosts = hosts.clone();
            for alias in pod.host_aliases.iter().flatten() {
                pod_hosts.push_str(&format!(
                    "{} {}\n",
                    alias.ip,
                    alias.hostnames.clone().unwrap_or_default().join(" ")
                ));
            }
            if let (Some(next), None) = (next_hop, &pod.host_aliases) {
                // Render-only output leaves next-hop to be resolved: the harness wires it to
                // the next hop's Service stand-in.
                pod_hosts.push_str(&format!("{} next-hop\n", service_ips[next]));
            }
            // Every container's mounts (the init containers' too), each path once.
            let mut mounts: Vec<&k8s_openapi::api::core::v1::VolumeMount> = Vec::new();
            for m in pod
                .init_containers
                .iter()
                .flatten()
                .chain(std::iter::once(c))
                .flat_map(|c| c.volume_mounts.iter().flatten())
            {
                if !mounts.iter().any(|x| x.mount_path == m.mount_path) {
                    mounts.push(m);
                }
            }
            for m in mounts {
                let vol = pod.volumes.iter().flatten().find(|v| v.name == m.name).unwrap();
                if let Some(ed) = &vol.empty_dir {
                    let size = ed.size_limit.as_ref().map_or(64 << 20, |q| quantity_bytes(&q.0));
                    empty_dirs.push((m.mount_path.clone(), size));
                } else if let Some(cmv) = &vol.config_map {
                    let cm = &config_maps[&cmv.name];
                    let vdir = pdir.join("volumes").join(&vol.name);
                    let mode = cmv.default_mode.unwrap_or(0o644) as u32;
                    std::fs::create_dir_all(&vdir).unwrap();
                    for item in cmv.items.iter().flatten() {
                        let content: Vec<u8> = cm
                            .data
                            .as_ref()
                            .and_then(|d| d.get(&item.key).map(|s| s.as_bytes().to_vec()))
                            .or_else(|| cm.binary_data.as_ref().and_then(|d| d.get(&item.key).map(|b| b.0.clone())))
                            .unwrap();
                        let path = vdir.join(&item.path);
                        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                        std::fs::write(&path, content).unwrap();
                        std::fs::set_permissions(
                            &path,
                            std::fs::Permissions::from_mode(item.mode.map_or(mode, |m| m as u32)),
                        )
                        .unwrap();
                    }
                    let from = match &m.sub_path {
                        Some(sub) => vdir.join(sub),
                        None => vdir,
                    };
                    binds.push((from, m.mount_path.clone()));
                }
            }
            // The CA store of the image: the test root.
            binds.push((ca.bundle.clone(), "/etc/ssl/certs/ca-certificates.crt".into()));
            let port = c.ports.as_ref().and_then(|p| p.first()).map_or(80, |p| p.container_port as u16);
            let spec = PodSpec {
                name: format!("pod-{name}"),
                command,
                uid,
                binds,
                empty_dirs,
                hosts: pod_hosts,
                caps,
                port,
                read_only_root: sc.read_only_root_filesystem == Some(true),
                sysctls,
                init,
            };
            pods.insert(name, Pod::start(spec, dir.path()));
        }

        // Origins.
        let mut origins = BTreeMap::new();
        origins.insert(
            "origin.test".to_owned(),
            origin_pod("origin", &ca, &["origin.test", "www.origin.test"], opts.large, dir.path()),
        );
        origins.insert("alt.test".to_owned(), origin_pod("alt", &ca, &["alt.test"], 0, dir.path()));
        origins.insert("wrongname.test".to_owned(), origin_pod("wrongname", &ca, &["nobody.test"], 0, dir.path()));
        let sink = Sink::start();

        // The ingress controller stand-in: 8000 says http, 8001 says https.
        let idir = dir.path().join("ingress");
        std::fs::create_dir_all(&idir).unwrap();
        let pi = service_ips["private-ingress"];
        std::fs::write(
            idir.join("nginx.conf"),
            format!(
                r#"worker_processes 1;
pid /tmp/nginx.pid;
error_log /dev/stderr warn;
events {{ worker_connections 1024; }}
http {{
    client_body_temp_path /tmp/client_body;
    proxy_temp_path /tmp/proxy;
    fastcgi_temp_path /tmp/fastcgi;
    uwsgi_temp_path /tmp/uwsgi;
    scgi_temp_path /tmp/scgi;
    access_log off;
    client_max_body_size 0;
    proxy_request_buffering off;
    proxy_buffering off;
    upstream pi {{ server {pi}:80; keepalive 16; }}
    server {{
        listen 8000;
        listen 8001;
        location / {{
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $devpop_test_proto;
            proxy_pass http://pi;
        }}
    }}
    map $server_port $devpop_test_proto {{ 8001 https; default http; }}
}}
"#
            ),
        )
        .unwrap();
        let ingress = Pod::start(
            PodSpec {
                name: "ingress-controller".into(),
                command: vec![NGINX.into(), "-g".into(), "daemon off;".into()],
                uid: IMAGE_UID,
                binds: vec![(idir.join("nginx.conf"), "/etc/nginx/nginx.conf".into())],
                empty_dirs: vec![("/tmp".into(), 16 << 20)],
                hosts: hosts.clone(),
                caps: vec![],
                port: 8000,
                read_only_root: true,
                sysctls: vec![],
                init: vec![],
            },
            dir.path(),
        );

        // Service stand-ins and origin addresses in every pod's namespace.
        let target_of = |s: &Service| -> Endpoint {
            let spec = s.spec.as_ref().unwrap();
            let hop = spec.selector.as_ref().unwrap().values().next().unwrap().clone();
            let port = match spec.ports.as_ref().unwrap()[0].target_port.as_ref().unwrap() {
                IntOrString::Int(p) => *p as u16,
                IntOrString::String(_) => panic!("named target ports are not used by devpop"),
            };
            let pod = pods.get(&hop).unwrap_or_else(|| panic!("no pod for Service {hop}"));
            Endpoint { ns: Some(pod.netns.clone()), addr: SocketAddr::from((Ipv4Addr::LOCALHOST, port)) }
        };
        let mut origin_routes: Vec<(Ipv4Addr, u16, Endpoint)> = Vec::new();
        for (name, ip) in ORIGIN_HOSTS {
            let ip: Ipv4Addr = ip.parse().unwrap();
            if let Some(o) = origins.get(*name) {
                for (port, target) in [(80, 8080), (443, 8443)] {
                    origin_routes.push((
                        ip,
                        port,
                        Endpoint { ns: Some(o.netns.clone()), addr: SocketAddr::from((Ipv4Addr::LOCALHOST, target)) },
                    ));
                }
            } else if *name == "upload.test" {
                origin_routes.push((ip, 80, Endpoint { ns: None, addr: sink.addr }));
            }
        }
        for ns in pods.values().map(|p| p.netns.clone()).chain(std::iter::once(ingress.netns.clone())) {
            for s in &services {
                let ip = service_ips[s.metadata.name.as_ref().unwrap()];
                relay(&ns, SocketAddr::V4(SocketAddrV4::new(ip, 80)), target_of(s));
            }
            for (ip, port, to) in &origin_routes {
                relay(&ns, SocketAddr::V4(SocketAddrV4::new(*ip, *port)), to.clone());
            }
        }
        let mut pop = Pop { dir, namespace, pods, origins, ingress, sink, services: service_ips };
        for p in pop.pods.values_mut() {
            p.wait_ready();
        }
        pop.ingress.wait_ready();
        pop
    }

    /// A connection from `client` (a 127.0.0.N address) to the ingress stand-in; `https`
    /// picks the listener that tells private-ingress the client used https.
    pub fn connect(&self, client: Ipv4Addr, https: bool) -> TcpStream {
        let port = if https { 8001 } else { 8000 };
        in_netns(&self.ingress.netns, || {
            let s = socket2_bind_connect(client, SocketAddr::from((Ipv4Addr::LOCALHOST, port)));
            s.set_read_timeout(Some(WAIT)).unwrap();
            s
        })
    }

    /// One request through the whole chain from 127.0.0.1, over http.
    pub fn get(&self, path: &str, headers: &[(&str, &str)]) -> Response {
        self.request(Ipv4Addr::LOCALHOST, false, "GET", path, headers, b"")
    }

    pub fn request(
        &self,
        client: Ipv4Addr,
        https: bool,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Response {
        let mut s = self.connect(client, https);
        let mut h = headers.to_vec();
        h.push(("Connection", "close"));
        write_request(&mut s, method, path, &h, (!body.is_empty()).then_some(body.len() as u64));
        s.write_all(body).unwrap();
        read_response(s, method)
    }

    /// A request straight to a Service (as the hop in front of it would send it).
    pub fn request_service(&self, service: &str, path: &str, headers: &[(&str, &str)]) -> Response {
        let ip = self.services[service];
        let mut s = in_netns(&self.ingress.netns, || TcpStream::connect((ip, 80))).unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        let mut h = headers.to_vec();
        h.push(("Connection", "close"));
        write_request(&mut s, "GET", path, &h, None);
        read_response(s, "GET")
    }

    pub fn pod(&self, hop: &str) -> &Pod {
        &self.pods[hop]
    }

    /// The origin's access log lines.
    pub fn origin_log(&self, origin: &str) -> Vec<String> {
        self.origins[origin].stdout().lines().map(str::to_owned).collect()
    }
}

/// A TCP connection from `from` (port chosen by the system) to `to`.
fn socket2_bind_connect(from: Ipv4Addr, to: SocketAddr) -> TcpStream {
    // SAFETY: plain socket calls on a fresh descriptor, checked.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0);
        let s = TcpStream::from_raw_fd(fd);
        let sin = |ip: Ipv4Addr, port: u16| libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: port.to_be(),
            sin_addr: libc::in_addr { s_addr: u32::from(ip).to_be() },
            sin_zero: [0; 8],
        };
        let local = sin(from, 0);
        let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        assert_eq!(libc::bind(fd, &local as *const _ as *const libc::sockaddr, len), 0, "bind {from}");
        let SocketAddr::V4(to) = to else { panic!("IPv4 only") };
        let remote = sin(*to.ip(), to.port());
        assert_eq!(
            libc::connect(fd, &remote as *const _ as *const libc::sockaddr, len),
            0,
            "connect {to}: {}",
            std::io::Error::last_os_error()
        );
        s
    }
}
