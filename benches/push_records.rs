//! Push latency and throughput with a data dir of 1,000,000 deployments against an empty one
//! (issue 15, "Numbers": "within 5% of an empty one"), both measured in the same run, beside
//! the reference bench/run uses: stock `git http-backend` (CGI behind lighttpd) with a no-op
//! pre-receive hook, serving bare copies of the same repos.
//!
//! `cargo bench --bench push_records` (options after `--`: `--deployments N`,
//! `--applications N`, `--data DIR`, `--pushes N`, `--clients N`, `--rounds N`). Needs
//! `lighttpd` on PATH (bench/run installs it). The large data dir is the records benchmark's
//! (target/records-bench-<N>-<M>/, built once; the pushes here add to it); the empty one is made
//! for the run, with the same applications the clients push to. Both release servers run at
//! once with the render-only target (every accepted push is checked, recorded and published to
//! the rendered repo).
//!
//! Latency: `--pushes` pushes of a one-file commit (`git push -q origin HEAD:Production`) to
//! each of the three servers, interleaved (the order rotates every push), 100 ms after each
//! (what a server does after answering, its deployment, happens then, not during the other's
//! push). Throughput: `--clients` clients, each pushing `--rounds` times to its own
//! application; the servers take turns in ABC CBA order, twice each, and each devpop turn waits
//! until the server's deployments have all finished (not timed) before the next starts.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{build, get, EXE};

fn arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned().unwrap_or_else(|| default.to_owned())
}

/// A release server on a data dir; killed when dropped.
struct Server {
    child: Child,
    addr: String,
}

impl Server {
    fn start(data: &Path) -> Server {
        let mut child = Command::new(EXE)
            .args(["serve", "--listen", "127.0.0.1:0", "--data"])
            .arg(data)
            .args(["--api-rate", "1000000", "--api-burst", "1000000"])
            .env("DEVPOP_LOG", "warn")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let addr = line.split_whitespace().nth(3).unwrap().trim_start_matches("http://").to_owned();
        let server = Server { child, addr };
        while get(&server.addr, "/readyz").0 != 200 {
            std::thread::sleep(Duration::from_millis(5));
        }
        server
    }

    fn url(&self, app: u64) -> String {
        format!("http://{}/account/bench/application/app{app:04}/site.git", self.addr)
    }

    /// Deployments not yet in a final state.
    fn unfinished(&self) -> u64 {
        ["queued", "rendering", "applying", "progressing"]
            .iter()
            .map(|s| {
                let (status, raw) = get(&self.addr, &format!("/api/v1/deployments?state={s}&limit=1"));
                assert_eq!(status, 200);
                let body = &raw[raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4..];
                let page: serde_json::Value = serde_json::from_slice(body).unwrap();
                page["total"].as_u64().unwrap()
            })
            .sum()
    }

    /// Waits until every deployment the pushes started has finished.
    fn settle(&self) {
        while self.unfinished() > 0 {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The reference: `git http-backend` as CGI behind lighttpd (bench/lighttpd.conf, as
/// bench/pushbench.py runs it), its repos bare clones of the empty devpop's with a no-op pre-receive
/// hook; killed when dropped.
struct Reference {
    child: Child,
    root: PathBuf,
    port: u16,
}

impl Reference {
    fn start(work: &Path) -> Reference {
        let root = work.join("reference-repos");
        std::fs::create_dir_all(&root).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let exec_path = String::from_utf8(git(work, &["--exec-path"]).stdout).unwrap();
        let backend = Path::new(exec_path.trim()).join("git-http-backend");
        let conf = work.join("lighttpd.conf");
        let path = std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into());
        let template = include_str!("../bench/lighttpd.conf");
        let values = [
            ("@WORK@", work.display().to_string()),
            ("@PORT@", port.to_string()),
            ("@BACKEND@", backend.display().to_string()),
            ("@ROOT@", root.display().to_string()),
            ("@PATH@", path),
        ];
        std::fs::write(&conf, values.iter().fold(template.to_owned(), |t, (name, value)| t.replace(name, value)))
            .unwrap();
        let child = Command::new("lighttpd")
            .arg("-D")
            .arg("-f")
            .arg(&conf)
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("lighttpd (the reference's web server; bench/run installs it): {e}"));
        let addr = format!("127.0.0.1:{port}");
        while get(&addr, "/").0 == 0 {
            std::thread::sleep(Duration::from_millis(5));
        }
        Reference { child, root, port }
    }

    /// A bare copy of `seed` (a devpop application's repo URL) with a no-op hook; its URL.
    fn create(&self, app: u64, seed: &str) -> String {
        let path = self.root.join(format!("app{app:04}.git"));
        let out = git(&self.root, &["clone", "-q", "--bare", seed, path.to_str().unwrap()]);
        assert!(out.status.success(), "clone {seed}: {}", String::from_utf8_lossy(&out.stderr));
        git(&path, &["config", "http.receivepack", "true"]);
        let hook = path.join("hooks/pre-receive");
        std::fs::write(&hook, "#!/bin/sh\nexit 0\n").unwrap();
        std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        format!("http://127.0.0.1:{}/git/app{app:04}.git", self.port)
    }
}

impl Drop for Reference {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn git(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new("git")
        .current_dir(dir)
        .args(args)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_AUTHOR_NAME", "bench")
        .env("GIT_AUTHOR_EMAIL", "bench@example.com")
        .env("GIT_COMMITTER_NAME", "bench")
        .env("GIT_COMMITTER_EMAIL", "bench@example.com")
        .output()
        .unwrap()
}

/// A clone that makes one small commit per push.
struct Work {
    dir: PathBuf,
    n: u64,
}

impl Work {
    fn clone(parent: &Path, name: &str, url: &str) -> Work {
        let out = git(parent, &["clone", "-q", url, name]);
        assert!(out.status.success(), "clone {url}: {}", String::from_utf8_lossy(&out.stderr));
        Work { dir: parent.join(name), n: 0 }
    }

    /// One push; its wall time.
    fn push(&mut self) -> Duration {
        self.n += 1;
        std::fs::write(self.dir.join("counter.txt"), format!("change {}\n", self.n)).unwrap();
        git(&self.dir, &["add", "counter.txt"]);
        git(&self.dir, &["commit", "-q", "-m", &format!("change {}", self.n)]);
        let start = Instant::now();
        let out = git(&self.dir, &["push", "-q", "origin", "HEAD:Production"]);
        let took = start.elapsed();
        assert!(out.status.success(), "push: {}", String::from_utf8_lossy(&out.stderr));
        took
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let k = (sorted.len() - 1) as f64 * p / 100.0;
    let (lo, hi) = (k.floor() as usize, (k.floor() as usize + 1).min(sorted.len() - 1));
    sorted[lo] + (sorted[hi] - sorted[lo]) * (k - lo as f64)
}

fn main() {
    let total: u64 = arg("--deployments", "1000000").parse().unwrap();
    let apps: u64 = arg("--applications", "1000").parse().unwrap();
    let pushes: usize = arg("--pushes", "100").parse().unwrap();
    let clients: u64 = arg("--clients", "32").parse().unwrap();
    let rounds: usize = arg("--rounds", "5").parse().unwrap();
    assert!(clients <= apps, "--clients at most --applications");
    let default_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("target/records-bench-{total}-{apps}"));
    let big_data = PathBuf::from(arg("--data", default_dir.to_str().unwrap()));
    if !big_data.join("built").exists() {
        build(&big_data, total, apps);
    }
    let tmp = tempfile::tempdir().unwrap();
    let empty_data = tmp.path().join("empty-data");
    std::fs::create_dir(&empty_data).unwrap();
    for app in 0..clients {
        let status = Command::new(EXE)
            .args([
                "app",
                "create",
                "bench",
                &format!("app{app:04}"),
                "site",
                "--origin",
                "origin.example.com",
                "--data",
            ])
            .arg(&empty_data)
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success());
    }
    let names = ["1,000,000 deployments", "empty", "reference: git http-backend"];
    let servers = [Server::start(&big_data), Server::start(&empty_data)];
    let records_before = servers[0].unfinished();
    assert_eq!(records_before, 0, "the large data dir has no unfinished deployments");
    let reference = Reference::start(tmp.path());
    // Each target's URL for application `app`: the two devpops, then the reference (seeded from
    // the empty devpop, so all three start from the same commit).
    let urls: Vec<Vec<String>> = vec![
        (0..clients).map(|c| servers[0].url(c)).collect(),
        (0..clients).map(|c| servers[1].url(c)).collect(),
        (0..clients).map(|c| reference.create(c, &servers[1].url(c))).collect(),
    ];
    // What happens after a push answers (a devpop's deployment) is waited for, untimed.
    let settle = |target: usize| {
        if let Some(s) = servers.get(target) {
            s.settle();
        }
    };

    // Latency.
    let mut works: Vec<Work> = (0..3).map(|t| Work::clone(tmp.path(), &format!("lat-{t}"), &urls[t][0])).collect();
    for w in &mut works {
        w.push(); // warm-up
    }
    let mut times: [Vec<f64>; 3] = [Vec::new(), Vec::new(), Vec::new()];
    for i in 0..pushes {
        for k in 0..3 {
            let t = (i + k) % 3;
            times[t].push(works[t].push().as_secs_f64() * 1e3);
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    (0..3).for_each(settle);

    // Throughput.
    let mut clones: Vec<Vec<Work>> = (0..3)
        .map(|t| (0..clients).map(|c| Work::clone(tmp.path(), &format!("tp-{t}-{c}"), &urls[t][c as usize])).collect())
        .collect();
    let mut seconds = [0.0f64; 3];
    let mut pushed = [0usize; 3];
    for turn in [0, 1, 2, 2, 1, 0, 0, 1, 2, 2, 1, 0] {
        let start = Instant::now();
        std::thread::scope(|scope| {
            for w in clones[turn].iter_mut() {
                scope.spawn(move || {
                    for _ in 0..rounds {
                        w.push();
                    }
                });
            }
        });
        seconds[turn] += start.elapsed().as_secs_f64();
        pushed[turn] += clients as usize * rounds;
        settle(turn);
    }
    drop(servers);
    drop(reference);

    println!("Push benchmark: a data dir of {total} deployments across {apps} applications against an empty one and against git http-backend, release build, render-only target");
    println!();
    println!("| server | p50 ms | p95 ms | mean ms | {clients}-client pushes/s |");
    println!("|---|---:|---:|---:|---:|");
    let mut p = [(0.0, 0.0, 0.0, 0.0); 3];
    for t in 0..3 {
        times[t].sort_by(f64::total_cmp);
        let mean = times[t].iter().sum::<f64>() / times[t].len() as f64;
        let rate = pushed[t] as f64 / seconds[t];
        p[t] = (percentile(&times[t], 50.0), percentile(&times[t], 95.0), mean, rate);
        println!("| {} | {:.1} | {:.1} | {:.1} | {:.1} |", names[t], p[t].0, p[t].1, p[t].2, p[t].3);
    }
    for (label, a, b) in [("1,000,000 / empty", 0, 1), ("1,000,000 / reference", 0, 2), ("empty / reference", 1, 2)] {
        println!(
            "| **ratio {label}** | **{:.3}x** | **{:.3}x** | {:.3}x | **{:.3}x** |",
            p[a].0 / p[b].0,
            p[a].1 / p[b].1,
            p[a].2 / p[b].2,
            p[a].3 / p[b].3
        );
    }
    println!();
    println!(
        "({pushes} interleaved pushes each for latency; throughput: {clients} clients x {rounds} pushes, ABCCBA turns, twice each)"
    );
}
