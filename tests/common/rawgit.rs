//! A push client that speaks git's smart HTTP push protocol itself, so tests can send what
//! stock git refuses to: push options with newlines or control characters, hand-built packs
//! (trees deeper than git will write), any ref update line.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// One push as the raw client sends it.
#[derive(Default)]
pub struct RawPush {
    /// `(old, new, refname)`: 40-hex object ids.
    pub updates: Vec<(String, String, String)>,
    /// Push options, sent byte for byte (one pkt-line each).
    pub options: Vec<Vec<u8>>,
    /// The pack (empty for deletions only).
    pub pack: Vec<u8>,
}

/// What the server answered.
#[derive(Debug)]
pub struct RawResult {
    pub status: u16,
    /// The report-status lines (`unpack ok`, `ok <ref>`, `ng <ref> <reason>`).
    pub report: Vec<String>,
    /// Progress and hook output (side band 2), as git would print it after `remote: `.
    pub remote: String,
    /// The whole body when it was not a side-band answer (e.g. an HTTP error).
    pub body: String,
}

impl RawResult {
    /// The ref was updated.
    pub fn ok(&self, refname: &str) -> bool {
        self.report.iter().any(|l| l == &format!("ok {refname}"))
    }
}

pub fn pkt(out: &mut Vec<u8>, payload: &[u8]) {
    out.extend_from_slice(format!("{:04x}", payload.len() + 4).as_bytes());
    out.extend_from_slice(payload);
}

/// Splits pkt-lines; stops at the end of the data. Flushes (`0000`) give an empty payload.
pub fn pkt_lines(mut data: &[u8]) -> Vec<Vec<u8>> {
    let mut lines = Vec::new();
    while data.len() >= 4 {
        let Ok(len) = usize::from_str_radix(std::str::from_utf8(&data[..4]).unwrap_or("zzzz"), 16) else { break };
        if len < 4 {
            lines.push(Vec::new());
            data = &data[4..];
            continue;
        }
        if data.len() < len {
            break;
        }
        lines.push(data[4..len].to_vec());
        data = &data[len..];
    }
    lines
}

/// The body of a receive-pack request for `push`.
pub fn request_body(push: &RawPush) -> Vec<u8> {
    let mut body = Vec::new();
    for (i, (old, new, refname)) in push.updates.iter().enumerate() {
        let mut line = format!("{old} {new} {refname}").into_bytes();
        if i == 0 {
            line.push(0);
            line.extend_from_slice(b"report-status side-band-64k agent=devpop-raw-test");
            if !push.options.is_empty() {
                line.extend_from_slice(b" push-options");
            }
        }
        line.push(b'\n');
        pkt(&mut body, &line);
    }
    body.extend_from_slice(b"0000");
    if !push.options.is_empty() {
        for option in &push.options {
            pkt(&mut body, option);
        }
        body.extend_from_slice(b"0000");
    }
    body.extend_from_slice(&push.pack);
    body
}

/// Sends `push` to the repo at `path` (e.g. `/account/1/application/app/app.git`) on `addr`.
pub fn push(addr: &str, path: &str, push: &RawPush, auth: Option<&str>) -> RawResult {
    let body = request_body(push);
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let mut head = format!(
        "POST {path}/git-receive-pack HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/x-git-receive-pack-request\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some(auth) = auth {
        head.push_str(&format!("Authorization: {auth}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(&body).unwrap();
    let mut raw = Vec::new();
    loop {
        let mut buf = [0u8; 65536];
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("reading the push answer: {e}"),
        }
    }
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("an HTTP answer");
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let mut data = raw[split + 4..].to_vec();
    if head.contains("transfer-encoding: chunked") {
        data = dechunk(&data);
    }
    let (mut band1, mut remote) = (Vec::new(), String::new());
    if status == 200 {
        for line in pkt_lines(&data) {
            match line.first() {
                Some(1) => band1.extend_from_slice(&line[1..]),
                Some(2 | 3) => remote.push_str(&String::from_utf8_lossy(&line[1..])),
                _ => {}
            }
        }
    }
    let report = pkt_lines(&band1)
        .into_iter()
        .filter(|l| !l.is_empty())
        .map(|l| String::from_utf8_lossy(&l).trim_end().to_owned())
        .collect();
    RawResult { status, report, remote, body: String::from_utf8_lossy(&data).into_owned() }
}

fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(end) = raw.windows(2).position(|w| w == b"\r\n") {
        let Ok(size) = usize::from_str_radix(std::str::from_utf8(&raw[..end]).unwrap_or("").trim(), 16) else {
            break;
        };
        if size == 0 || raw.len() < end + 2 + size {
            break;
        }
        out.extend_from_slice(&raw[end + 2..end + 2 + size]);
        raw = &raw[(end + 4 + size).min(raw.len())..];
    }
    out
}

/// A pack holding exactly `objects` (each inserted alone: no recursive walk, so trees of any
/// depth can be packed), from the repo `repo`.
pub fn pack_of(repo: &git2::Repository, objects: &[git2::Oid]) -> Vec<u8> {
    let mut pb = repo.packbuilder().unwrap();
    for id in objects {
        pb.insert_object(*id, None).unwrap();
    }
    let mut buf = git2::Buf::new();
    pb.write_buf(&mut buf).unwrap();
    buf.to_vec()
}

/// Builds, in `repo`, a commit on `parent` whose tree is the parent's with `files` put at the
/// root and, when `depth` > 0, a folder `deep` nested `depth` levels; returns the commit and
/// every object it adds.
pub fn commit_with(
    repo: &git2::Repository,
    parent: Option<git2::Oid>,
    files: &[(&str, &[u8])],
    depth: usize,
) -> (git2::Oid, Vec<git2::Oid>) {
    let mut objects = Vec::new();
    let base = parent.map(|p| repo.find_commit(p).unwrap().tree().unwrap());
    let mut root = repo.treebuilder(base.as_ref()).unwrap();
    for (name, content) in files {
        let blob = repo.blob(content).unwrap();
        objects.push(blob);
        root.insert(name, blob, 0o100644).unwrap();
    }
    if depth > 0 {
        let leaf = repo.blob(b"deep\n").unwrap();
        objects.push(leaf);
        let mut b = repo.treebuilder(None).unwrap();
        b.insert("f", leaf, 0o100644).unwrap();
        let mut id = b.write().unwrap();
        objects.push(id);
        for _ in 1..depth {
            let mut b = repo.treebuilder(None).unwrap();
            b.insert("d", id, 0o040000).unwrap();
            id = b.write().unwrap();
            objects.push(id);
        }
        root.insert("deep", id, 0o040000).unwrap();
    }
    let tree = root.write().unwrap();
    objects.push(tree);
    let sig = git2::Signature::now("Raw Client", "raw@example.com").unwrap();
    let tree = repo.find_tree(tree).unwrap();
    let parents: Vec<git2::Commit> = parent.into_iter().map(|p| repo.find_commit(p).unwrap()).collect();
    let commit = repo.commit(None, &sig, &sig, "raw", &tree, &parents.iter().collect::<Vec<_>>()).unwrap();
    objects.push(commit);
    (commit, objects)
}
