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

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{build, get, rss_kb, EXE};

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
