//! The PoP on one machine: runs an environment as devpop renders it, the way a cluster would,
//! as far as one machine allows.
//!
//! - The input is the renderer's output (what the rendered repo holds, or a rendered folder's
//!   files read through its kustomization.yaml): Deployments, ConfigMaps and Services are read
//!   back from it; nothing of the harness knows the templates.
//! - The cluster network: a network namespace the test makes (`ip netns add`, iproute2) with a
//!   bridge; every pod gets a network namespace of its own, a veth pair into that bridge and
//!   an address of its own (10.244.0.N/24, default route via the bridge). Each Service is a
//!   ClusterIP (10.96.0.N) in the cluster namespace where a relay sends each connection to
//!   `<pod address>:<targetPort>` of the pod the Service selects (one connection for one, as
//!   kube-proxy's NAT: connection counts hold). The origins are pods too, reached at their
//!   public stand-in addresses (192.0.2.N:80 and :443) through the same relays.
//! - Names: every pod's hosts file (what the kubelet mounts at /etc/hosts) holds localhost,
//!   the pod's own name, and, standing in for cluster DNS, every Service's cluster names
//!   (`<svc>.<ns>.svc.<cluster domain>`, `<svc>.<ns>.svc`, `<svc>`) and the origins' names.
//!   A module pod gets `next-hop` only from its own `next-hop` init container: the rendered
//!   script run as the pod spec says (its env, its mounts, its uid), writing the emptyDir hosts
//!   file the module's containers mount at /etc/hosts.
//! - Each container of a pod (init containers in order, then the http container) is a real
//!   process under bubblewrap with the constraints its spec declares: the pod's network
//!   namespace, a read-only root that holds the system's paths (so nginx's compiled-in paths
//!   are read-only, as in the image; without readOnlyRootFilesystem, the image's writable
//!   paths are tmpfs), each emptyDir one tmpfs of its sizeLimit shared by the pod's containers
//!   (mounted at its mountPath, or its subPath as a file), each ConfigMap volume's items
//!   written with their modes, the container's env only, its uid (`runAsUser`, else the
//!   image's: 101 for devpop's nginx, root for the fixture modules), its capabilities (drop
//!   ALL, then what it adds), the pod's sysctls.
//! - Images: devpop's hops run Debian's nginx (`nginx -g 'daemon off;'`), example-simple its
//!   package's `nginx -c /opt/proxy/nginx.conf`, edge-cache Debian's varnishd with its
//!   package's varnish.params. A module's other containers (edge-cache's log shipper) are not
//!   run: they serve no request.
//! - An ingress-controller stand-in (nginx in front of private-ingress, like ingress-nginx: it
//!   appends the peer address to X-Forwarded-For and sets X-Forwarded-Proto) is where clients
//!   connect from, with a source address of the test's choosing.
//!
//! Waiting is on events: a port that accepts, a file, a counter; never a fixed sleep.

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
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use devpop::rendering;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Container, Service};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

pub const NGINX: &str = "/usr/sbin/nginx";
/// The uid of the nginx-unprivileged image (its `USER`), used when a pod sets no runAsUser.
pub const IMAGE_UID: u32 = 101;
const WAIT: Duration = Duration::from_secs(30);
/// The cluster namespace's address on the pod network: every pod's default route.
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 244, 0, 1);
/// Where the origins' `/upload` sends request bodies (the in-process [`Sink`]), from the
/// cluster namespace.
pub const SINK_PORT: u16 = 9999;

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
    // Bytes go on as they come, as through kube-proxy's NAT (no Nagle delay added here).
    let _ = a.set_nodelay(true);
    let _ = b.set_nodelay(true);
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
// The cluster network (iproute2)

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("ip runs (tests/run installs iproute2)");
    assert!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Runs `commands` (one `ip` command a line) in the named network namespace `ns`.
fn ip_batch(ns: &str, commands: &str) {
    let mut child = Command::new("ip")
        .args(["-n", ns, "-batch", "-"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ip runs (tests/run installs iproute2)");
    child.stdin.take().unwrap().write_all(commands.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "ip -n {ns} -batch:\n{commands}\n{}", String::from_utf8_lossy(&out.stderr));
}

/// A named network namespace (`ip netns add`), deleted with its interfaces when dropped.
pub struct Netns {
    pub name: String,
    pub file: Arc<File>,
}

impl Netns {
    fn add(name: String) -> Netns {
        ip(&["netns", "add", &name]);
        let file = Arc::new(File::open(format!("/run/netns/{name}")).unwrap());
        Netns { name, file }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).output();
    }
}

/// Namespaces left by a test process that no longer runs (killed before it could delete them).
fn remove_stale_namespaces() {
    for e in std::fs::read_dir("/run/netns").into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix("devpop-").and_then(|r| r.split('-').next()) else { continue };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = Command::new("ip").args(["netns", "del", &name]).output();
        }
    }
}

static CLUSTERS: AtomicU64 = AtomicU64::new(0);

/// One test's cluster network: a namespace with the pods' bridge, the ClusterIPs and the
/// origins' public addresses.
pub struct Cluster {
    pub ns: Netns,
    next: Mutex<u8>,
}

impl Cluster {
    pub fn new() -> Cluster {
        remove_stale_namespaces();
        let name = format!("devpop-{}-{}", std::process::id(), CLUSTERS.fetch_add(1, Ordering::SeqCst));
        let ns = Netns::add(name);
        // The bridge's MAC address is set, so that it stays put: a bridge otherwise takes the
        // lowest of its ports' addresses, and each pod added later would change it under the
        // pods that already know it (their connections then time out until ARP gives up).
        ip_batch(
            &ns.name,
            &format!(
                "link set lo up\nlink add br0 type bridge\nlink set br0 address 02:00:0a:f4:00:01\naddr add {GATEWAY}/24 dev br0\nlink set br0 up\n"
            ),
        );
        Cluster { ns, next: Mutex::new(2) }
    }

    /// Makes `ip` an address of the cluster namespace (a ClusterIP, an origin's address).
    pub fn add_address(&self, ip: Ipv4Addr) {
        ip_batch(&self.ns.name, &format!("addr add {ip}/32 dev lo\n"));
    }

    /// A pod's network: its own namespace, a veth pair into the bridge, its own address.
    pub fn pod_network(&self) -> (Netns, Ipv4Addr) {
        let n = {
            let mut next = self.next.lock().unwrap();
            let n = *next;
            *next += 1;
            n
        };
        let addr = Ipv4Addr::new(10, 244, 0, n);
        let ns = Netns::add(format!("{}-{n}", self.ns.name));
        ip_batch(
            &self.ns.name,
            &format!(
                "link add v{n} type veth peer name eth0 netns {}\nlink set v{n} master br0\nlink set v{n} up\n",
                ns.name
            ),
        );
        ip_batch(
            &ns.name,
            &format!(
                "link set lo up\naddr add {addr}/24 dev eth0\nlink set eth0 up\nroute add default via {GATEWAY}\n"
            ),
        );
        (ns, addr)
    }
}

// ---------------------------------------------------------------------------------------------
// Pods

/// Where a container's mount comes from.
#[derive(Clone, Debug)]
pub enum Source {
    /// A file or folder of the test's (a ConfigMap volume's items, certificates, a config).
    Host(PathBuf),
    /// The pod's emptyDir volume of that name (one tmpfs per pod), or a path in it (subPath).
    EmptyDir { volume: String, sub_path: Option<String> },
}

#[derive(Clone, Debug)]
pub struct Mount {
    pub from: Source,
    pub to: String,
    pub writable: bool,
}

impl Mount {
    pub fn host(from: PathBuf, to: &str) -> Mount {
        Mount { from: Source::Host(from), to: to.into(), writable: false }
    }
    pub fn empty_dir(volume: &str, to: &str) -> Mount {
        Mount { from: Source::EmptyDir { volume: volume.into(), sub_path: None }, to: to.into(), writable: true }
    }
}

/// One container: what it runs and under which constraints.
#[derive(Clone, Debug)]
pub struct ContainerSpec {
    pub command: Vec<String>,
    pub env: Vec<(String, String)>,
    pub uid: u32,
    pub mounts: Vec<Mount>,
    /// Capabilities kept (none unless the spec adds some), without `CAP_`.
    pub caps: Vec<String>,
    /// `readOnlyRootFilesystem`; a writable root gets the writable paths of a typical nginx or
    /// varnish image (/var/lib/nginx, /var/lib/varnish, /var/log/nginx, /var/cache/nginx,
    /// /run) as its container layer.
    pub read_only_root: bool,
}

/// What a pod is made of (from a Deployment, or written by a test for its origins).
pub struct PodSpec {
    pub name: String,
    /// emptyDir volumes: name -> size limit in bytes.
    pub volumes: Vec<(String, u64)>,
    /// Cluster DNS stand-in lines for the kubelet's hosts file.
    pub dns: String,
    pub port: u16,
    /// Pod sysctls (`net.*`), set in the pod's network namespace before its containers start.
    pub sysctls: Vec<(String, String)>,
    /// Init containers, run to completion in order before the container.
    pub init: Vec<ContainerSpec>,
    pub container: ContainerSpec,
}

impl PodSpec {
    /// A pod of one nginx container from the nginx-unprivileged image: read-only root, its
    /// config at /etc/nginx/nginx.conf, a 16 MiB emptyDir at /tmp.
    pub fn nginx(name: &str, mut mounts: Vec<Mount>, port: u16, dns: &str) -> PodSpec {
        mounts.push(Mount::empty_dir("tmp", "/tmp"));
        PodSpec {
            name: name.into(),
            volumes: vec![("tmp".into(), 16 << 20)],
            dns: dns.into(),
            port,
            sysctls: vec![],
            init: vec![],
            container: ContainerSpec {
                command: vec![NGINX.into(), "-g".into(), "daemon off;".into()],
                env: vec![],
                uid: IMAGE_UID,
                mounts,
                caps: vec![],
                read_only_root: true,
            },
        }
    }
}

/// An emptyDir: a tmpfs of its size limit, mounted by the test, shared by the pod's containers.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(path: PathBuf, size: u64) -> Tmpfs {
        std::fs::create_dir_all(&path).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=1777"), "tmpfs"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(out.status.success(), "mount tmpfs {}: {}", path.display(), String::from_utf8_lossy(&out.stderr));
        Tmpfs(path)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).output();
    }
}

/// One pod: its containers run in its own network namespace.
pub struct Pod {
    pub name: String,
    child: Child,
    /// The container's process inside the sandbox (its root at /proc/<pid>/root).
    pub pid: u32,
    pub netns: Arc<File>,
    /// The pod's address on the cluster network.
    pub ip: Ipv4Addr,
    pub dir: PathBuf,
    pub port: u16,
    /// The container's emptyDir mounts: mount path -> size limit in bytes.
    pub empty_dirs: Vec<(String, u64)>,
    /// What each init container printed (stdout, then stderr).
    pub init_logs: Vec<String>,
    tmpfs: Vec<Tmpfs>,
    net: Netns,
}

impl Pod {
    pub fn start(spec: PodSpec, dir: &Path, cluster: &Cluster) -> Pod {
        let pdir = dir.join(&spec.name);
        std::fs::create_dir_all(&pdir).unwrap();
        let (net, ip) = cluster.pod_network();
        // The kubelet's hosts file: localhost, the pod itself, then the cluster DNS stand-in.
        std::fs::write(pdir.join("hosts"), format!("127.0.0.1\tlocalhost\n{ip}\t{}\n{}", spec.name, spec.dns)).unwrap();
        for (key, value) in &spec.sysctls {
            let path = format!("/proc/sys/{}", key.replace('.', "/"));
            in_netns(&net.file, || std::fs::write(&path, value)).unwrap_or_else(|e| panic!("sysctl {key}: {e}"));
        }
        let tmpfs: Vec<Tmpfs> =
            spec.volumes.iter().map(|(name, size)| Tmpfs::mount(pdir.join("empty").join(name), *size)).collect();
        let mut init_logs = Vec::new();
        for (i, init) in spec.init.iter().enumerate() {
            let out = Self::sandbox(&spec, init, &pdir, &net, &[]).output().expect("bwrap");
            let log = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
            assert!(out.status.success(), "pod {}: init container {i} {:?} failed: {log}", spec.name, init.command);
            init_logs.push(log);
        }
        let mut fds = [0; 2];
        // SAFETY: pipe2 with a valid array; both ends close-on-exec (the child's end is made
        // inheritable in the child only, below).
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        let (info_r, info_w) = (fds[0], fds[1]);
        // bwrap reports the sandbox's pid on a pipe.
        let extra = ["--info-fd".to_owned(), info_w.to_string()];
        let mut cmd = Self::sandbox(&spec, &spec.container, &pdir, &net, &extra);
        cmd.stdin(Stdio::null())
            .stdout(File::create(pdir.join("stdout")).unwrap())
            .stderr(File::create(pdir.join("stderr")).unwrap());
        // SAFETY: only async-signal-safe calls (fcntl) between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                if libc::fcntl(info_w, libc::F_SETFD, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().expect("bwrap runs (tests/run installs bubblewrap)");
        // SAFETY: we own this descriptor; the child has its copy.
        let mut info_r = unsafe {
            libc::close(info_w);
            File::from_raw_fd(info_r)
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
        let empty_dirs = spec
            .container
            .mounts
            .iter()
            .filter_map(|m| match &m.from {
                Source::EmptyDir { volume, sub_path: None } => {
                    Some((m.to.clone(), spec.volumes.iter().find(|(v, _)| v == volume).unwrap().1))
                }
                _ => None,
            })
            .collect();
        Pod {
            name: spec.name,
            child,
            pid,
            netns: net.file.clone(),
            ip,
            dir: pdir,
            port: spec.port,
            empty_dirs,
            init_logs,
            tmpfs,
            net,
        }
    }

    /// bwrap with the container's constraints (and `extra` options) in the pod's network
    /// namespace.
    fn sandbox(pod: &PodSpec, c: &ContainerSpec, dir: &Path, net: &Netns, extra: &[String]) -> Command {
        let mut cmd = Command::new("bwrap");
        let uid = c.uid.to_string();
        if c.uid != 0 {
            cmd.args(["--unshare-user", "--uid", &uid, "--gid", &uid]);
        }
        // (uid 0: the test runs as root, and a root-started image must be able to hand files
        // and workers to other uids, which a one-uid user namespace cannot map.)
        cmd.args(["--unshare-pid", "--unshare-ipc", "--unshare-uts", "--hostname", &pod.name, "--die-with-parent"])
            .args(extra)
            // The container's env only.
            .args(["--clearenv", "--setenv", "PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"])
            .args(["--setenv", "HOSTNAME", &pod.name]);
        for (k, v) in &c.env {
            cmd.args(["--setenv", k, v]);
        }
        // The root: the system's paths (nginx's compiled-in ones included), read-only.
        cmd.args(["--tmpfs", "/"]);
        // Mount points the image lacks (e.g. a module's volume at /var/lib/cache) are made as a
        // container runtime makes them: the trees above them are bound entry by entry.
        let targets: Vec<PathBuf> = c.mounts.iter().map(|m| PathBuf::from(&m.to)).collect();
        for p in ["/usr", "/etc", "/var"] {
            if Path::new(p).exists() {
                bind_tree(&mut cmd, Path::new(p), &targets);
            }
        }
        for (link, to) in [("/bin", "usr/bin"), ("/sbin", "usr/sbin"), ("/lib", "usr/lib"), ("/lib64", "usr/lib64")] {
            cmd.args(["--symlink", to, link]);
        }
        cmd.args(["--dev", "/dev", "--proc", "/proc"]);
        cmd.args(["--ro-bind", dir.join("hosts").to_str().unwrap(), "/etc/hosts"]);
        if !c.read_only_root {
            // A writable root: the writable paths of a typical nginx or varnish image's
            // container layer.
            for p in ["/var/lib/nginx", "/var/lib/varnish", "/var/log/nginx", "/var/cache/nginx", "/run", "/tmp"] {
                if Path::new(p).is_dir() {
                    cmd.args(["--perms", "0755", "--tmpfs", p]);
                }
            }
        }
        // A mount's parent folders, as a runtime makes them: 0755, owned by root.
        let mut parents: Vec<&Path> = c.mounts.iter().flat_map(|m| Path::new(&m.to).ancestors().skip(1)).collect();
        parents.sort();
        parents.dedup();
        for p in parents {
            if p != Path::new("/") && !["/usr", "/etc", "/var"].iter().any(|t| p.starts_with(t)) {
                cmd.args(["--perms", "0755", "--dir"]).arg(p);
            }
        }
        for m in &c.mounts {
            let from = match &m.from {
                Source::Host(p) => p.clone(),
                Source::EmptyDir { volume, sub_path } => {
                    let root = dir.join("empty").join(volume);
                    sub_path.as_ref().map_or(root.clone(), |s| root.join(s))
                }
            };
            let how = if m.writable { "--bind" } else { "--ro-bind" };
            cmd.args([how, from.to_str().unwrap(), &m.to]);
        }
        if c.read_only_root {
            cmd.args(["--remount-ro", "/"]);
        }
        cmd.args(["--cap-drop", "ALL"]);
        for cap in &c.caps {
            cmd.args(["--cap-add", &format!("CAP_{cap}")]);
        }
        cmd.arg("--").args(&c.command);
        // The pod's network namespace (bwrap makes none of its own).
        let ns = net.file.as_raw_fd();
        // SAFETY: setns is async-signal-safe; `ns` stays open until the command has run.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(ns, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        cmd
    }

    /// The container's main process: bwrap's pid-1 reaper's child (nginx's master, varnishd).
    pub fn main_pid(&self) -> u32 {
        let children = std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", self.pid)).unwrap_or_default();
        children.split_whitespace().next().map_or(self.pid, |c| c.parse().unwrap())
    }

    /// The name of the pod's network namespace (`ip netns`).
    pub fn net_name(&self) -> String {
        self.net.name.clone()
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.join("stderr")).unwrap_or_default()
    }

    pub fn stdout(&self) -> String {
        std::fs::read_to_string(self.dir.join("stdout")).unwrap_or_default()
    }

    /// Waits until the pod accepts connections on its port at its address (or its process
    /// exits: a panic with its log).
    pub fn wait_ready(&mut self) {
        let addr = SocketAddr::from((self.ip, self.port));
        let ok = wait_for(WAIT, || {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("pod {} exited ({status}) before it was ready:\n{}{}", self.name, self.stdout(), self.stderr());
            }
            in_netns(&self.netns, || TcpStream::connect(addr)).is_ok()
        });
        assert!(ok, "pod {} never listened on {addr}:\n{}", self.name, self.stderr());
    }

    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// The pod's port, as the kubelet's probes reach it (from inside the pod's namespace).
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

/// Binds `path` read-only, or, when a mount target that does not exist lies under it, a
/// directory of its own with each entry bound (symlinks as symlinks), recursively.
fn bind_tree(cmd: &mut Command, path: &Path, targets: &[PathBuf]) {
    let missing = targets.iter().any(|t| t.starts_with(path) && t != path && !t.exists());
    if !missing {
        cmd.arg("--ro-bind").arg(path).arg(path);
        return;
    }
    cmd.arg("--dir").arg(path);
    for e in std::fs::read_dir(path).unwrap().flatten() {
        let p = e.path();
        if e.file_type().unwrap().is_symlink() {
            cmd.arg("--symlink").arg(std::fs::read_link(&p).unwrap()).arg(&p);
        } else {
            bind_tree(cmd, &p, targets);
        }
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
pub fn origin_pod(name: &str, ca: &Ca, cert_names: &[&str], large: u64, dir: &Path, cluster: &Cluster) -> Pod {
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
        # Nothing here is for a cache to keep: every request through the chain reaches the
        # origin (edge-cache's Varnish then passes it on, as it does for such answers).
        add_header Cache-Control "private, no-store" always;
        location / {
            return 200 "scheme=$scheme\nhost=$http_host\nsni=$ssl_server_name\nxff=$http_x_forwarded_for\nsection-origin=$http_section_origin\nx-secret=$http_x_secret\nx-other=$http_x_other\naccept-encoding=$http_accept_encoding\nconn=$connection\n";
        }
        location = /status/404 { return 404 "origin says 404\n"; }
        location = /status/418 { return 418 "origin says 418\n"; }
        location = /status/502 { return 502 "origin says 502\n"; }
        location = /status/503 { return 503 "origin says 503\n"; }
        location = /status/504 { return 504 "origin says 504\n"; }
        location = /large { alias /data/large.bin; }
        # Request bodies go on, as they arrive, to the test's sink (which counts and hashes them).
        location = /upload {
            proxy_request_buffering off;
            proxy_http_version 1.1;
            proxy_pass http://GATEWAY:SINK_PORT;
        }
    }
}
"#
    .replace("GATEWAY", &GATEWAY.to_string())
    .replace("SINK_PORT", &SINK_PORT.to_string());
    std::fs::write(odir.join("nginx.conf"), conf).unwrap();
    let mounts = vec![
        Mount::host(odir.join("nginx.conf"), "/etc/nginx/nginx.conf"),
        Mount::host(odir.join("certs"), "/certs"),
        Mount::host(data, "/data"),
    ];
    let mut pod = Pod::start(PodSpec::nginx(&format!("origin-{name}"), mounts, 8080, ""), dir, cluster);
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

/// The origins the harness runs: name -> public stand-in address. Every name a test config
/// may use as an origin address is here (the sample application's too).
pub const ORIGIN_HOSTS: &[(&str, &str)] = &[
    ("origin.test", "192.0.2.1"),
    ("www.origin.test", "192.0.2.1"),
    ("my-s3-bucket.s3-website.us-east-2.amazonaws.com", "192.0.2.1"),
    ("my-s3-bucket-staging.s3-website.us-east-2.amazonaws.com", "192.0.2.1"),
    ("alt.test", "192.0.2.2"),
    ("images.example.com", "192.0.2.2"),
    ("wrongname.test", "192.0.2.3"),
    ("upload.test", "192.0.2.4"),
    // Nothing listens there: connections are refused.
    ("down.test", "192.0.2.250"),
];

/// The origin pods: (stand-in address, name, the names its certificate holds).
const ORIGIN_PODS: &[(&str, &str, &[&str])] = &[
    (
        "192.0.2.1",
        "origin",
        &[
            "origin.test",
            "www.origin.test",
            "my-s3-bucket.s3-website.us-east-2.amazonaws.com",
            "my-s3-bucket-staging.s3-website.us-east-2.amazonaws.com",
        ],
    ),
    ("192.0.2.2", "alt", &["alt.test", "images.example.com"]),
    ("192.0.2.3", "wrongname", &["nobody.test"]),
];

pub struct Pop {
    // Fields drop in this order: the processes first, then the network, then the files.
    pub pods: BTreeMap<String, Pod>,
    /// Origin pods by their first name (origin.test, alt.test, wrongname.test).
    pub origins: BTreeMap<String, Pod>,
    pub ingress: Pod,
    pub sink: Sink,
    pub namespace: String,
    /// Service name -> ClusterIP.
    pub services: BTreeMap<String, Ipv4Addr>,
    pub cluster: Cluster,
    pub dir: tempfile::TempDir,
}

pub struct Options {
    /// Bytes of `/large` at the origins.
    pub large: u64,
    /// The cluster domain the rendered manifests name Services with.
    pub cluster_domain: String,
}

impl Default for Options {
    fn default() -> Options {
        Options { large: 0, cluster_domain: "cluster.local".into() }
    }
}

fn quantity_bytes(q: &str) -> u64 {
    let (num, mult) =
        [("Ki", 1u64 << 10), ("Mi", 1 << 20), ("Gi", 1 << 30), ("k", 1000), ("M", 1_000_000), ("G", 1_000_000_000)]
            .iter()
            .find_map(|(s, m)| q.strip_suffix(s).map(|n| (n, *m)))
            .unwrap_or((q, 1));
    num.parse::<u64>().unwrap() * mult
}

/// The YAML of a rendered environment folder, from its files only: the resources its
/// kustomization.yaml lists, in order.
pub fn folder_yaml(folder: &Path) -> String {
    let k: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(folder.join("kustomization.yaml")).unwrap()).unwrap();
    let mut yaml = String::new();
    for r in k["resources"].as_sequence().expect("kustomization.yaml lists resources") {
        yaml.push_str("---\n");
        yaml.push_str(&std::fs::read_to_string(folder.join(r.as_str().unwrap())).unwrap());
    }
    yaml
}

/// What the harness runs for a module image (the fixture packages' images): the http
/// container's command and the image's user.
fn module_image(image: &str) -> (Vec<String>, u32) {
    let cmd = |s: &[&str]| s.iter().map(|s| s.to_string()).collect();
    if image.contains("/example-simple:") {
        (cmd(&[NGINX, "-c", "/opt/proxy/nginx.conf", "-g", "daemon off;"]), 0)
    } else if image.contains("/edge-cache:") {
        // Varnish's own start script, reading the package's varnish.params.
        let script = r#". /opt/proxy/varnish.params && exec /usr/sbin/varnishd -F -a ":$VARNISH_LISTEN_PORT" -f "$VARNISH_VCL_CONF" -s "$VARNISH_STORAGE""#;
        (cmd(&["/bin/sh", "-c", script]), 0)
    } else {
        panic!("the harness runs no image {image:?} (see module_image)")
    }
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
        if namespace.is_empty() {
            // A rendered folder's objects carry their namespace (the folder has no Namespace
            // object of its own when the kustomization sets it).
            namespace = deployments[0].metadata.namespace.clone().expect("a namespace");
        }
        let cluster = Cluster::new();
        let ca = Ca::new(dir.path());
        // ClusterIPs, and the cluster DNS stand-in: Services by their cluster names, the
        // origins by their public ones.
        let mut service_ips = BTreeMap::new();
        let mut dns = String::new();
        let domain = &opts.cluster_domain;
        for (i, s) in services.iter().enumerate() {
            let name = s.metadata.name.clone().unwrap();
            let ip = Ipv4Addr::new(10, 96, 0, i as u8 + 1);
            cluster.add_address(ip);
            dns.push_str(&format!("{ip}\t{name}.{namespace}.svc.{domain} {name}.{namespace}.svc {name}\n"));
            service_ips.insert(name, ip);
        }
        let mut origin_ips: Vec<&str> = ORIGIN_HOSTS.iter().map(|(_, ip)| *ip).collect();
        origin_ips.sort();
        origin_ips.dedup();
        for ip in &origin_ips {
            cluster.add_address(ip.parse().unwrap());
        }
        for (name, ip) in ORIGIN_HOSTS {
            dns.push_str(&format!("{ip}\t{name}\n"));
        }

        let mut pods = BTreeMap::new();
        for d in &deployments {
            let name = d.metadata.name.clone().unwrap();
            let spec = Self::pod_spec(d, &config_maps, &ca, &dns, dir.path());
            pods.insert(name, Pod::start(spec, dir.path(), &cluster));
        }

        // Origins, and the sink behind their /upload (and behind upload.test).
        let mut origins = BTreeMap::new();
        for (_, name, certs) in ORIGIN_PODS {
            let pod =
                origin_pod(name, &ca, certs, if *name == "origin" { opts.large } else { 0 }, dir.path(), &cluster);
            origins.insert(certs[0].to_owned(), pod);
        }
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
            PodSpec::nginx(
                "ingress-controller",
                vec![Mount::host(idir.join("nginx.conf"), "/etc/nginx/nginx.conf")],
                8000,
                &dns,
            ),
            dir.path(),
            &cluster,
        );

        // Service stand-ins and origin addresses, in the cluster namespace; each relayed
        // connection reaches its pod from the cluster's gateway address, as a node's SNAT.
        let cl = &cluster.ns.file;
        for s in &services {
            let spec = s.spec.as_ref().unwrap();
            let hop = spec.selector.as_ref().unwrap().values().next().unwrap().clone();
            let pod = pods.get(&hop).unwrap_or_else(|| panic!("no pod for Service {hop}"));
            for p in spec.ports.as_ref().unwrap() {
                let target = match p.target_port.as_ref() {
                    Some(IntOrString::Int(t)) => *t as u16,
                    None => p.port as u16,
                    Some(IntOrString::String(_)) => panic!("named target ports are not used by devpop"),
                };
                let ip = service_ips[s.metadata.name.as_ref().unwrap()];
                let to = Endpoint { ns: Some(cl.clone()), addr: SocketAddr::from((pod.ip, target)) };
                relay(cl, SocketAddr::V4(SocketAddrV4::new(ip, p.port as u16)), to);
            }
        }
        for (ip, name, _) in ORIGIN_PODS {
            let o = &origins[origin_name(name)];
            for (port, target) in [(80, 8080), (443, 8443)] {
                let to = Endpoint { ns: Some(cl.clone()), addr: SocketAddr::from((o.ip, target)) };
                relay(cl, SocketAddr::V4(SocketAddrV4::new(ip.parse().unwrap(), port)), to);
            }
        }
        let to_sink = Endpoint { ns: None, addr: sink.addr };
        relay(cl, SocketAddr::V4(SocketAddrV4::new("192.0.2.4".parse().unwrap(), 80)), to_sink.clone());
        relay(cl, SocketAddr::V4(SocketAddrV4::new(GATEWAY, SINK_PORT)), to_sink);

        let mut pop = Pop { pods, origins, ingress, sink, namespace, services: service_ips, cluster, dir };
        for p in pop.pods.values_mut() {
            p.wait_ready();
        }
        pop.ingress.wait_ready();
        pop
    }

    /// Runs a rendered environment folder (`devpop render --out`, or an environment folder of
    /// the rendered repo) from its files only.
    pub fn start_folder(folder: &Path, opts: Options) -> Pop {
        Pop::start(&folder_yaml(folder), opts)
    }

    /// A Deployment's pod as the harness runs it.
    fn pod_spec(d: &Deployment, config_maps: &BTreeMap<String, ConfigMap>, ca: &Ca, dns: &str, dir: &Path) -> PodSpec {
        let name = d.metadata.name.clone().unwrap();
        let pod = d.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
        let annotations = d.metadata.annotations.clone().unwrap_or_default();
        let is_module = annotations.contains_key(rendering::ANNOTATION_NEXT_HOP);
        // The container that serves: a module's http container (the one with the `http`
        // port), devpop's hop's only one.
        let c = pod
            .containers
            .iter()
            .find(|c| c.ports.iter().flatten().any(|p| p.name.as_deref() == Some("http")))
            .unwrap_or(&pod.containers[0]);
        let pod_uid = pod.security_context.as_ref().and_then(|p| p.run_as_user);
        let pdir = dir.join(format!("pod-{name}"));
        let mut volumes = Vec::new();
        for v in pod.volumes.iter().flatten() {
            if let Some(ed) = &v.empty_dir {
                let size = ed.size_limit.as_ref().map_or(64 << 20, |q| quantity_bytes(&q.0));
                volumes.push((v.name.clone(), size));
            } else if let Some(cmv) = &v.config_map {
                let cm = &config_maps[&cmv.name];
                let vdir = pdir.join("volumes").join(&v.name);
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
            }
        }
        let container = |c: &Container, command: Vec<String>, image_uid: u32| -> ContainerSpec {
            let sc = c.security_context.as_ref().expect("devpop sets a securityContext");
            let mut mounts = Vec::new();
            for m in c.volume_mounts.iter().flatten() {
                let vol = pod.volumes.iter().flatten().find(|v| v.name == m.name).unwrap();
                let read_only = m.read_only == Some(true);
                let from = if vol.empty_dir.is_some() {
                    Source::EmptyDir { volume: vol.name.clone(), sub_path: m.sub_path.clone() }
                } else {
                    let vdir = pdir.join("volumes").join(&vol.name);
                    Source::Host(m.sub_path.as_ref().map_or(vdir.clone(), |s| vdir.join(s)))
                };
                mounts.push(Mount { from, to: m.mount_path.clone(), writable: !read_only && vol.empty_dir.is_some() });
            }
            // The CA store of the image: the test root.
            mounts.push(Mount::host(ca.bundle.clone(), "/etc/ssl/certs/ca-certificates.crt"));
            let env = c.env.iter().flatten().map(|e| (e.name.clone(), e.value.clone().unwrap_or_default())).collect();
            let mut command = command;
            if let Some(cmd) = &c.command {
                command = cmd.clone();
            }
            command.extend(c.args.clone().unwrap_or_default());
            ContainerSpec {
                command,
                env,
                uid: sc.run_as_user.or(pod_uid).map_or(image_uid, |u| u as u32),
                mounts,
                caps: sc.capabilities.as_ref().and_then(|c| c.add.clone()).unwrap_or_default(),
                read_only_root: sc.read_only_root_filesystem == Some(true),
            }
        };
        let (command, image_uid) = if is_module {
            module_image(c.image.as_deref().unwrap())
        } else {
            (vec![NGINX.into(), "-g".into(), "daemon off;".into()], IMAGE_UID)
        };
        // Init containers: devpop's own (next-hop) on its proxy image, whose user is 101; a
        // module's prepare on the module's image.
        let init = pod
            .init_containers
            .iter()
            .flatten()
            .map(|i| {
                let uid = if i.image == c.image { image_uid } else { IMAGE_UID };
                container(i, vec![], uid)
            })
            .collect();
        let sysctls = pod
            .security_context
            .as_ref()
            .and_then(|p| p.sysctls.clone())
            .unwrap_or_default()
            .into_iter()
            .map(|s| (s.name, s.value))
            .collect();
        let port = c.ports.as_ref().and_then(|p| p.first()).map_or(80, |p| p.container_port as u16);
        PodSpec {
            name: format!("pod-{name}"),
            volumes,
            dns: dns.to_owned(),
            port,
            sysctls,
            init,
            container: container(c, command, image_uid),
        }
    }

    /// A connection from `client` to the ingress stand-in; `https` picks the listener that
    /// tells private-ingress the client used https. A client outside 127.0.0.0/8 (a public
    /// address of the test's choosing) is an address of the ingress namespace's loopback.
    pub fn connect(&self, client: Ipv4Addr, https: bool) -> TcpStream {
        let port = if https { 8001 } else { 8000 };
        let to = if client.is_loopback() {
            Ipv4Addr::LOCALHOST
        } else {
            let ns = &self.ingress.net.name;
            let _ = Command::new("ip").args(["-n", ns, "addr", "add", &format!("{client}/32"), "dev", "lo"]).output();
            client
        };
        in_netns(&self.ingress.netns, || {
            let s = socket2_bind_connect(client, SocketAddr::from((to, port)));
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

    /// A request straight to a Service (as the hop in front of it would send it), from the
    /// ingress controller's pod.
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
        self.pods.get(hop).unwrap_or_else(|| panic!("no pod {hop}: {:?}", self.pods.keys().collect::<Vec<_>>()))
    }

    /// The origin's access log lines.
    pub fn origin_log(&self, origin: &str) -> Vec<String> {
        self.origins[origin].stdout().lines().map(str::to_owned).collect()
    }

    /// The public stand-in address of the origin named `name`.
    pub fn origin_addr(&self, name: &str) -> Ipv4Addr {
        ORIGIN_HOSTS.iter().find(|(n, _)| *n == name).unwrap().1.parse().unwrap()
    }
}

/// An origin pod's key in [`Pop::origins`]: its first certificate name.
fn origin_name(pod: &str) -> &'static str {
    ORIGIN_PODS.iter().find(|(_, n, _)| *n == pod).unwrap().2[0]
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
