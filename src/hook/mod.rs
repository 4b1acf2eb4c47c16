//! `devpop hook pre-receive`: git runs it (through the shim in `hooks/`) once per push, with the
//! pushed objects in quarantine and one `<old> <new> <ref>` line per ref update on stdin.
//!
//! It reads each pushed commit from the quarantine (`Repository::open_from_env` sees it) and
//! runs [`checks::run`] on it. Everything it
//! prints reaches the pusher as `remote:` lines as it happens (git relays hook output on the
//! side band), so each line is flushed. A non-zero exit rejects the whole push; git then
//! drops the quarantine, so nothing of a rejected push stays on the server. An accepted push
//! announces its deployments to the server, which records and queues them once git has moved
//! the branches (so devpop needs no post-receive hook).

use std::io::{self, BufRead, Write};

use git2::{Oid, Repository};

use crate::checks::{self, CheckSettings};
use crate::names::RepoId;
use crate::packages::PackageStore;
use crate::source::GitCommit;

#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error("cannot open the pushed repo from git's environment: {0}")]
    Open(git2::Error),
    #[error("malformed ref update line from git: {0:?}")]
    BadInput(String),
    #[error(transparent)]
    Check(#[from] checks::CheckError),
    #[error("not a devpop repo (expected repos/<account>/<application>/<repo>.git): {0}")]
    NotADevpopRepo(String),
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// One ref update as git hands it to the hook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefUpdate {
    pub old: Oid,
    pub new: Oid,
    pub refname: String,
}

impl RefUpdate {
    pub fn parse(line: &str) -> Result<Self, HookError> {
        let bad = || HookError::BadInput(line.to_owned());
        let mut parts = line.split(' ');
        let (Some(old), Some(new), Some(refname), None) = (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        Ok(RefUpdate {
            old: Oid::from_str(old).map_err(|_| bad())?,
            new: Oid::from_str(new).map_err(|_| bad())?,
            refname: refname.to_owned(),
        })
    }

    pub fn branch(&self) -> Option<&str> {
        self.refname.strip_prefix("refs/heads/")
    }

    pub fn is_delete(&self) -> bool {
        self.new.is_zero()
    }
}

/// The push options devpop understands (`git push -o dry-run`, `git push -o wait`), read from
/// `GIT_PUSH_OPTION_*` as git passes them to hooks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PushOptions {
    pub dry_run: bool,
    pub wait: bool,
    pub unknown: Vec<String>,
}

impl PushOptions {
    pub fn from_env() -> Self {
        let count: usize = std::env::var("GIT_PUSH_OPTION_COUNT").ok().and_then(|c| c.parse().ok()).unwrap_or(0);
        let mut o = PushOptions::default();
        for i in 0..count.min(100) {
            match std::env::var(format!("GIT_PUSH_OPTION_{i}")).unwrap_or_default().as_str() {
                "dry-run" => o.dry_run = true,
                "wait" => o.wait = true,
                other => o.unknown.push(other.to_owned()),
            }
        }
        o
    }
}

/// Runs the pre-receive checks; `Ok(true)` accepts the push.
pub fn pre_receive(
    input: impl BufRead,
    out: &mut impl Write,
    packages: &PackageStore,
    settings: &CheckSettings,
    link: Option<&ServerLink>,
) -> Result<bool, HookError> {
    let updates = input.lines().map(|line| RefUpdate::parse(line?.trim_end())).collect::<Result<Vec<_>, _>>()?;
    let max_refs: usize = std::env::var("DEVPOP_MAX_REFS").ok().and_then(|v| v.parse().ok()).unwrap_or(100);
    if updates.len() > max_refs {
        say(
            out,
            &format!(
                "error: this push updates {} refs; at most {max_refs} are accepted in one push (each branch is an environment): push fewer at a time",
                updates.len()
            ),
        )?;
        return Ok(false);
    }
    let repo = Repository::open_from_env().map_err(HookError::Open)?;
    let id = repo_id(&repo)?;
    let options = PushOptions::from_env();
    for unknown in &options.unknown {
        say(out, &format!("warning: unknown push option {unknown:?} ignored (devpop knows: dry-run, wait)"))?;
    }
    // Everything the checks print also goes into the deployment records.
    let mut tee = Tee { out, seen: Vec::new() };
    let mut accepted = true;
    for update in &updates {
        accepted &= check_update(&id, &repo, update, &mut tee, packages, settings, &options, link)?;
    }
    let validation: Vec<String> = String::from_utf8_lossy(&tee.seen).lines().map(str::to_owned).collect();
    let out = tee.out;
    if options.dry_run && accepted {
        say(out, "error: dry run: nothing was changed; push without -o dry-run to deploy")?;
        return Ok(false);
    }
    if !options.wait && accepted {
        announce_deployments(out, &id, &updates, link, &validation)?;
    }
    if options.wait && accepted {
        let Some(link) = link else {
            say(out, "error: -o wait needs the push to come through a devpop server")?;
            return Ok(false);
        };
        // The commit is still in quarantine: the server reads it from there.
        let quarantine = std::env::var("GIT_QUARANTINE_PATH").ok();
        for update in updates.iter().filter(|u| u.branch().is_some()) {
            let mut request = deployment_request(&id, update, link, quarantine.clone());
            request.validation = validation.clone();
            if !deploy_and_wait(out, link, request)? {
                return Ok(false);
            }
        }
    }
    Ok(accepted)
}

#[allow(clippy::too_many_arguments)]
fn check_update(
    id: &RepoId,
    repo: &Repository,
    update: &RefUpdate,
    out: &mut impl Write,
    packages: &PackageStore,
    settings: &CheckSettings,
    options: &PushOptions,
    link: Option<&ServerLink>,
) -> Result<bool, HookError> {
    let Some(branch) = update.branch() else {
        say(
            out,
            &format!(
                "error: {}: devpop deploys branches, one per environment; push a branch (e.g. git push developer-pop HEAD:Production)",
                update.refname
            ),
        )?;
        return Ok(false);
    };
    if update.is_delete() {
        say(out, &format!("Environment {branch}: branch deleted"))?;
        return Ok(true);
    }
    if let Some(problem) = oversized_blob(repo, update.new)? {
        say(out, &problem)?;
        say(
            out,
            &format!("error: push to {branch} rejected: 1 problem to fix (listed above); the branch is unchanged"),
        )?;
        return Ok(false);
    }
    let source = GitCommit { repo, commit: update.new };
    let commit = update.new.to_string();
    let subject = checks::Subject { id, environment: branch, commit: &commit };
    let verdict = checks::run(&source, subject, packages, settings, out)?;
    if let (true, Some(rendered)) = (options.dry_run, &verdict.rendered) {
        dry_run_report(out, id, branch, rendered, packages)?;
        if let Some(link) = link {
            let request = deployment_request(id, update, link, std::env::var("GIT_QUARANTINE_PATH").ok());
            let body = serde_json::to_vec(&request).map_err(|e| HookError::BadInput(e.to_string()))?;
            let answer: serde_json::Value = match call(link, "POST", "/internal/v1/dry-run", &body) {
                Ok(a) => serde_json::from_str(&a).unwrap_or_default(),
                Err(e) => {
                    say(out, &format!("warning: the target's own dry run did not run: {e}"))?;
                    serde_json::Value::Null
                }
            };
            if let Some(message) = answer["message"].as_str() {
                say(out, &format!("Dry run on the target: {message}"))?;
            }
            if let Some(error) = answer["error"].as_str() {
                say(out, &format!("error: dry run on the target: {error}"))?;
            }
        }
    }
    if verdict.accepted() {
        return Ok(true);
    }
    let n = verdict.errors;
    say(
        out,
        &format!(
            "error: push to {branch} rejected: {n} problem{} to fix (listed above); the branch is unchanged",
            if n == 1 { "" } else { "s" }
        ),
    )?;
    Ok(false)
}

/// How the hook reaches the server that ran it, to announce deployments (set by `devpop serve`
/// in the hooks' environment).
#[derive(Debug, Clone)]
pub struct ServerLink {
    /// e.g. `http://127.0.0.1:8080` (the address the server is bound to).
    pub internal_url: String,
    /// The per-start secret that proves a request comes from a hook of this server.
    pub token: String,
    /// Who pushed, as the transport saw it.
    pub pusher: String,
    /// This push, as the server knows it (its deployments are announced under it).
    pub push: Option<String>,
}

#[derive(serde::Deserialize)]
struct Queued {
    id: u64,
    url: String,
}

fn submit(link: &ServerLink, request: &crate::records::NewDeployment) -> Result<Queued, String> {
    let body = serde_json::to_vec(request).map_err(|e| e.to_string())?;
    let answer = call(link, "POST", "/internal/v1/deployments", &body)?;
    serde_json::from_str(&answer).map_err(|e| format!("unexpected answer {answer:?}: {e}"))
}

/// One request to the server (plain HTTP/1.1 on loopback); the body of a 200 answer.
fn call(link: &ServerLink, method: &str, path: &str, body: &[u8]) -> Result<String, String> {
    use std::io::Read;
    let addr = link.internal_url.strip_prefix("http://").ok_or("the internal URL is not http://")?;
    let mut stream = std::net::TcpStream::connect(addr).map_err(|e| e.to_string())?;
    stream.set_read_timeout(Some(std::time::Duration::from_secs(30))).map_err(|e| e.to_string())?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nX-Devpop-Hook-Token: {}\r\nConnection: close\r\n\r\n",
        body.len(),
        link.token
    );
    stream.write_all(head.as_bytes()).and_then(|_| stream.write_all(body)).map_err(|e| e.to_string())?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text.split_once("\r\n\r\n").ok_or("malformed response")?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(format!("{}: {}", head.lines().next().unwrap_or(""), body.trim()));
    }
    Ok(body.to_owned())
}

/// `-o wait`: deploys the quarantined commit before the branch moves, streaming the
/// deployment's steps; `Ok(true)` when it became ready (the push is then accepted).
fn deploy_and_wait(
    out: &mut impl Write,
    link: &ServerLink,
    request: crate::records::NewDeployment,
) -> Result<bool, HookError> {
    let queued = match submit(link, &request) {
        Ok(q) => q,
        Err(e) => {
            say(
                out,
                &format!("error: {}: cannot deploy: the devpop server did not take it ({e})", request.environment),
            )?;
            return Ok(false);
        }
    };
    say(out, &format!("Deployment {} queued for {}: {}", queued.id, request.environment, queued.url))?;
    let mut shown = 1; // the "queued" step
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3600);
    loop {
        let d: crate::records::Deployment = match call(link, "GET", &format!("/api/v1/deployments/{}", queued.id), b"")
            .map(|b| serde_json::from_str(&b))
        {
            Ok(Ok(d)) => d,
            Ok(Err(e)) => return Err(HookError::BadInput(e.to_string())),
            Err(e) => {
                say(out, &format!("error: lost track of deployment {}: {e}", queued.id))?;
                return Ok(false);
            }
        };
        for step in d.steps.iter().skip(shown) {
            say(out, &format!("  [{}] {}", step.state.as_str(), step.message))?;
        }
        shown = d.steps.len();
        match d.state {
            crate::records::State::Ready => {
                say(out, &format!("Deployment {} of {} is ready", d.id, request.environment))?;
                return Ok(true);
            }
            crate::records::State::Failed | crate::records::State::Superseded => {
                say(
                    out,
                    &format!(
                        "error: deployment {} of {} {}; the branch is unchanged",
                        d.id,
                        request.environment,
                        d.state.as_str()
                    ),
                )?;
                return Ok(false);
            }
            _ if std::time::Instant::now() > deadline => {
                say(out, &format!("error: gave up waiting for deployment {}", d.id))?;
                return Ok(false);
            }
            _ => std::thread::sleep(std::time::Duration::from_millis(200)),
        }
    }
}

/// The first file of the commit larger than `DEVPOP_MAX_BLOB_BYTES` (sizes come from object
/// headers: nothing is loaded), as an error line.
fn oversized_blob(repo: &Repository, commit: Oid) -> Result<Option<String>, HookError> {
    let limit: usize = std::env::var("DEVPOP_MAX_BLOB_BYTES").ok().and_then(|v| v.parse().ok()).unwrap_or(100 << 20);
    let tree = repo.find_commit(commit).and_then(|c| c.tree()).map_err(|e| HookError::BadInput(e.to_string()))?;
    let odb = repo.odb().map_err(|e| HookError::BadInput(e.to_string()))?;
    let mut found = None;
    let mut seen = 0usize;
    tree.walk(git2::TreeWalkMode::PreOrder, |dir, entry| {
        seen += 1;
        if seen > 100_000 {
            return git2::TreeWalkResult::Abort;
        }
        if entry.kind() == Some(git2::ObjectType::Blob) {
            if let Ok((size, _)) = odb.read_header(entry.id()) {
                if size > limit {
                    found = Some(format!(
                        "error: {dir}{}: {size} bytes; files larger than {limit} bytes are refused (DEVPOP_MAX_BLOB_BYTES): an environment repo holds configuration",
                        entry.name().unwrap_or("?")
                    ));
                    return git2::TreeWalkResult::Abort;
                }
            }
        }
        git2::TreeWalkResult::Ok
    })
    .or_else(|e| if e.code() == git2::ErrorCode::User { Ok(()) } else { Err(HookError::BadInput(e.to_string())) })?;
    Ok(found)
}

/// Tells the server which deployments this push makes, and the user their ids. The server
/// records them once git has moved the branches (a push that fails after this leaves nothing).
fn announce_deployments(
    out: &mut impl Write,
    id: &RepoId,
    updates: &[RefUpdate],
    link: Option<&ServerLink>,
    validation: &[String],
) -> Result<(), HookError> {
    for update in updates {
        let Some(branch) = update.branch() else { continue };
        let (Some(link), Some(push)) = (link, link.and_then(|l| l.push.as_deref())) else {
            say(out, &format!("warning: {branch} not deployed: this push did not come through a devpop server"))?;
            continue;
        };
        let mut request = deployment_request(id, update, link, None);
        request.validation = validation.to_vec();
        let body = serde_json::json!({ "push": push, "deployment": request });
        let answer = call(link, "POST", "/internal/v1/reservations", body.to_string().as_bytes())
            .and_then(|a| serde_json::from_str::<Queued>(&a).map_err(|e| e.to_string()));
        match answer {
            Ok(q) => say(out, &format!("Deployment {} queued for {branch}: {}", q.id, q.url))?,
            Err(e) => say(out, &format!("warning: {branch} not deployed: the devpop server did not take it ({e})"))?,
        }
    }
    Ok(())
}

fn deployment_request(
    id: &RepoId,
    update: &RefUpdate,
    link: &ServerLink,
    quarantine: Option<String>,
) -> crate::records::NewDeployment {
    crate::records::NewDeployment {
        account: id.account.clone(),
        application: id.application.clone(),
        repo: id.repo.clone(),
        environment: update.branch().unwrap_or_default().to_owned(),
        commit: if update.is_delete() { update.old.to_string() } else { update.new.to_string() },
        action: if update.is_delete() { crate::records::Action::Delete } else { crate::records::Action::Deploy },
        pusher: link.pusher.clone(),
        quarantine,
        validation: Vec::new(),
    }
}

/// Passes writes through, keeping a copy.
struct Tee<'a, W: Write> {
    out: &'a mut W,
    seen: Vec<u8>,
}

impl<W: Write> Write for Tee<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.out.write(buf)?;
        if self.seen.len() < 256 * 1024 {
            self.seen.extend_from_slice(&buf[..n]);
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// What a push would change, against what was last published for the environment.
fn dry_run_report(
    out: &mut impl Write,
    id: &RepoId,
    branch: &str,
    rendered: &crate::rendering::Rendered,
    packages: &PackageStore,
) -> Result<(), HookError> {
    // The rendered repos live beside the packages in the data dir.
    let data_dir = packages.data_dir();
    let before = crate::applying::RenderedRepos::new(&data_dir).environment_objects(id, branch).unwrap_or(None);
    let Some(before) = before else {
        say(
            out,
            &format!(
                "Dry run: {branch} has not been deployed yet; this push would create {} objects in namespace {}",
                rendered.objects.len(),
                rendered.namespace
            ),
        )?;
        return Ok(());
    };
    let d = crate::rendering::diff(&before, rendered);
    say(out, &format!("Dry run: changes to {branch} (namespace {}) against its last deployment:", rendered.namespace))?;
    for (mark, keys) in [("+", &d.added), ("~", &d.changed), ("-", &d.removed)] {
        for k in keys {
            say(out, &format!("  {mark} {k}"))?;
        }
    }
    say(
        out,
        &format!(
            "  ({} added, {} changed, {} removed, {} unchanged)",
            d.added.len(),
            d.changed.len(),
            d.removed.len(),
            d.unchanged
        ),
    )?;
    Ok(())
}

/// The application a repo belongs to, from its place in the data dir
/// (`repos/<account>/<application>/<repo>.git`).
pub fn repo_id(repo: &Repository) -> Result<RepoId, HookError> {
    let path = repo.path().canonicalize()?;
    let part = |n: usize| path.iter().rev().nth(n).and_then(|p| p.to_str()).unwrap_or("");
    RepoId::new(part(2), part(1), part(0)).map_err(|e| HookError::NotADevpopRepo(format!("{}: {e}", path.display())))
}

fn say(out: &mut impl Write, line: &str) -> io::Result<()> {
    checks::line(out, line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_git_ref_update_lines() {
        let z = "0".repeat(40);
        let a = "a".repeat(40);
        let u = RefUpdate::parse(&format!("{a} {z} refs/heads/Staging")).unwrap();
        assert_eq!(u.branch(), Some("Staging"));
        assert!(u.is_delete());
        assert!(RefUpdate::parse("x y").is_err());
        assert!(RefUpdate::parse(&format!("{a} {a} refs/heads/x extra")).is_err());
    }
}
