//! Records benchmark (issue 15, "Numbers"): a data dir with 1,000,000 deployments across 1,000
//! applications, the release server started on it, and what that costs:
//! start to `/readyz`, resident memory after start, and the API's latency for a page of 50
//! deployments, a page filtered by environment, and one deployment by id.
//!
//! `cargo bench --bench records` (options after `--`: `--deployments N`, `--applications N`,
//! `--data DIR`, `--samples N`). The data dir is built once (target/records-bench-<N>-<M>/) and
//! reused by later runs; each deployment has 5 steps and 3 validation lines, like a push's. The
//! newest deployment of every environment is ready at its branch's commit, so start-up
//! reconciliation finds nothing to do (it still looks at all 1,000 repos).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use devpop::names::RepoId;
use devpop::records::{Action, Deployment, NewDeployment, Records, State, Step};
use devpop::repos::RepoStore;

const EXE: &str = env!("CARGO_BIN_EXE_devpop");

fn arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned().unwrap_or_else(|| default.to_owned())
}

fn main() {
    let total: u64 = arg("--deployments", "1000000").parse().unwrap();
    let apps: u64 = arg("--applications", "1000").parse().unwrap();
    let samples: usize = arg("--samples", "300").parse().unwrap();
    let default_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("target/records-bench-{total}-{apps}"));
    let data = PathBuf::from(arg("--data", default_dir.to_str().unwrap()));
    if !data.join("built").exists() {
        build(&data, total, apps);
    }
    let size: u64 = ["records.sqlite3", "records.sqlite3-wal"]
        .iter()
        .filter_map(|f| std::fs::metadata(data.join(f)).ok())
        .map(|m| m.len())
        .sum();

    // A first start does the one-time chores of a data dir it has not seen (built-in packages,
    // filling new tables); the figure is the start after it.
    let mut first = Command::new(EXE)
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(&data)
        .env("DEVPOP_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(first.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let first_addr = line.split_whitespace().nth(3).unwrap().trim_start_matches("http://").to_owned();
    while get(&first_addr, "/readyz").0 != 200 {
        std::thread::sleep(Duration::from_millis(5));
    }
    // SAFETY: kill(2) with SIGTERM on our own child: a graceful stop.
    unsafe { libc::kill(first.id() as i32, libc::SIGTERM) };
    first.wait().unwrap();

    // Start to /readyz.
    let started = Instant::now();
    let mut child = Command::new(EXE)
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(&data)
        // The API's rate limit would answer 429 to a benchmark's request rate.
        .args(["--api-rate", "1000000", "--api-burst", "1000000"])
        .env("DEVPOP_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    // Stopped however the benchmark ends (a failed assertion too).
    struct Stop(std::process::Child);
    impl Drop for Stop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let child = Stop(child);
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let addr = line.split_whitespace().nth(3).unwrap().trim_start_matches("http://").to_owned();
    while get(&addr, "/readyz").0 != 200 {
        std::thread::sleep(Duration::from_millis(1));
    }
    let ready = started.elapsed();
    let rss_start = rss_kb(child.0.id());

    let mut rng = 0x2545F4914F6CDD1Du64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut rows = Vec::new();
    let mut bench = |name: &str, path: &mut dyn FnMut() -> String| {
        for _ in 0..20 {
            let p = path();
            assert_eq!(get(&addr, &p).0, 200, "{p}");
        }
        let mut ms: Vec<f64> = (0..samples)
            .map(|_| {
                let p = path();
                let t = Instant::now();
                let (status, _) = get(&addr, &p);
                let elapsed = t.elapsed().as_secs_f64() * 1e3;
                assert_eq!(status, 200, "{p}");
                elapsed
            })
            .collect();
        ms.sort_by(f64::total_cmp);
        rows.push((name.to_owned(), ms[ms.len() / 2], ms[ms.len() * 95 / 100]));
    };
    bench("a page of 50 (`/api/v1/deployments?limit=50`)", &mut || "/api/v1/deployments?limit=50".to_owned());
    bench("a page of 50, offset 10,000", &mut || "/api/v1/deployments?limit=50&offset=10000".to_owned());
    bench("a page of 50 by cursor, 10,000 deep (`?before=`)", &mut || {
        format!("/api/v1/deployments?limit=50&before={}", total - 10_000)
    });
    bench("a page of 50 of one environment (`.../environments/Production/deployments`)", &mut || {
        format!(
            "/api/v1/accounts/bench/applications/app{:04}/environments/Production/deployments?limit=50",
            next() % apps
        )
    });
    bench("a page of 50 filtered by `?account=&application=&environment=`", &mut || {
        format!("/api/v1/deployments?account=bench&application=app{:04}&environment=Production&limit=50", next() % apps)
    });
    bench("one deployment by id (`/api/v1/deployments/{id}`)", &mut || {
        format!("/api/v1/deployments/{}", next() % total + 1)
    });
    let rss_after = rss_kb(child.0.id());
    drop(child);

    println!(
        "Records benchmark: {total} deployments across {apps} applications (database {} MB), release build",
        size >> 20
    );
    println!();
    println!("| figure | value |");
    println!("|---|---:|");
    println!("| start to `/readyz` | {:.0} ms |", ready.as_secs_f64() * 1e3);
    println!("| resident memory after start | {:.1} MB |", rss_start as f64 / 1024.0);
    println!(
        "| resident memory after the {} requests below | {:.1} MB |",
        rows.len() * (samples + 20),
        rss_after as f64 / 1024.0
    );
    println!();
    println!("| request ({samples} each, one connection per request) | p50 ms | p95 ms |");
    println!("|---|---:|---:|");
    for (name, p50, p95) in rows {
        println!("| {name} | {p50:.2} | {p95:.2} |");
    }
}

/// GET over a fresh connection; the status and body.
fn get(addr: &str, path: &str) -> (u16, Vec<u8>) {
    let Ok(mut s) = TcpStream::connect(addr) else { return (0, Vec::new()) };
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let status = std::str::from_utf8(&raw[..raw.len().min(12)])
        .ok()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, raw)
}

fn rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

fn build(data: &Path, total: u64, apps: u64) {
    let t = Instant::now();
    let _ = std::fs::remove_dir_all(data);
    std::fs::create_dir_all(data).unwrap();
    let data = data.canonicalize().unwrap();
    let repos = RepoStore::new(&data, Path::new(EXE));
    let first = RepoId::new("bench", "app0000", "site").unwrap();
    let path = repos.create(&first, "origin.example.com").unwrap();
    let head = git2::Repository::open_bare(&path)
        .unwrap()
        .find_reference("refs/heads/Production")
        .unwrap()
        .target()
        .unwrap()
        .to_string();
    for app in 1..apps {
        let dir = data.join(format!("repos/bench/app{app:04}"));
        std::fs::create_dir_all(&dir).unwrap();
        let status = Command::new("cp").arg("-a").arg(&path).arg(dir.join("site.git")).status().unwrap();
        assert!(status.success());
    }
    let records = Records::open(&data).unwrap();
    let rounds = total / apps;
    let epoch = jiff::Timestamp::now() - jiff::SignedDuration::from_secs(rounds as i64 * 60);
    let mut batch = Vec::with_capacity(20_000);
    for round in 0..rounds {
        for app in 0..apps {
            let id = round * apps + app + 1;
            let last = round + 1 == rounds;
            let commit = if last { head.clone() } else { format!("{id:040x}") };
            let at = epoch + jiff::SignedDuration::from_secs(round as i64 * 60);
            let state = match id % 10 {
                _ if last => State::Ready,
                0 => State::Failed,
                1 => State::Superseded,
                _ => State::Ready,
            };
            let steps = [
                (State::Queued, format!("queued: {} of Production by tok_bench@10.0.0.1", &commit[..12])),
                (State::Rendering, "rendering".to_owned()),
                (State::Applying, "applying 21 objects (render-only)".to_owned()),
                (State::Progressing, "waiting for the rollout".to_owned()),
                (state, "published to the rendered repo".to_owned()),
            ];
            batch.push(Deployment {
                id,
                request: NewDeployment {
                    account: "bench".into(),
                    application: format!("app{app:04}"),
                    repo: "site".into(),
                    environment: "Production".into(),
                    commit,
                    action: Action::Deploy,
                    pusher: "tok_bench@10.0.0.1".into(),
                    quarantine: None,
                    validation: vec![
                        "Validating section.config.json for Production...".into(),
                        "ok: 0 modules".into(),
                        "Rendering environment Production (namespace section-1a2b3c4d5e6f7-production)...".into(),
                    ],
                },
                state,
                created_at: at,
                updated_at: at,
                steps: steps.into_iter().map(|(state, message)| Step { at, state, message }).collect(),
                namespace: Some("section-1a2b3c4d5e6f7-production".into()),
            });
            if batch.len() == batch.capacity() {
                records.import(&batch).unwrap();
                batch.clear();
            }
        }
    }
    records.import(&batch).unwrap();
    drop(records);
    std::fs::write(data.join("built"), "").unwrap();
    eprintln!("built {total} deployments across {apps} applications in {:.0} s", t.elapsed().as_secs_f64());
}
