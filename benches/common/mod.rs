//! What the records benchmarks share: the data dir of N deployments across M applications
//! (built once under target/), a GET over a fresh connection, a process's resident memory.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use devpop::names::RepoId;
use devpop::records::{Action, Deployment, NewDeployment, Records, State, Step};
use devpop::repos::RepoStore;

pub const EXE: &str = env!("CARGO_BIN_EXE_devpop");

/// GET over a fresh connection; the status and body.
pub fn get(addr: &str, path: &str) -> (u16, Vec<u8>) {
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

pub fn rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

/// Builds a data dir of `total` deployments across `apps` applications (`bench/appNNNN/site`),
/// each application's newest deployment ready at its branch's commit.
pub fn build(data: &Path, total: u64, apps: u64) {
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
