//! The pre-receive check of a push: git runs the hook (the shim in `hooks/`) once per push,
//! with the pushed objects in quarantine and one `<old> <new> <ref>` line per ref update.
//!
//! [`pre_receive`] reads each pushed commit from the quarantine and runs [`checks::run`] on it.
//! Everything it prints reaches the pusher as `remote:` lines as it happens (git relays hook
//! output on the side band), so each line is flushed. Rejecting fails the whole push; git then
//! drops the quarantine, so nothing of a rejected push stays on the server. An accepted push
//! reserves its deployments with the server, which records and queues them once git has moved
//! the branches (so devpop needs no post-receive hook).
//!
//! It runs in one of two places. A push through `devpop serve` is checked inside the server:
//! the shim passes the push over the [`channel`] and relays the answer, so no devpop process
//! starts per push and the server's warm state (waiting sandboxes, loaded packages) serves it.
//! A push that does not come through a server (to the repo's path on disk) runs
//! `devpop hook pre-receive`, which checks it in that process.

pub mod channel;
pub mod objects;
pub mod proc_receive;
mod request;

pub use request::{PushOptions, PushRequest, RefUpdate};

use std::io::{self, Write};

use git2::Repository;

use crate::applying::deployer::DeployError;
use crate::checks::{self, CheckSettings};
use crate::names::RepoId;
use crate::packages::PackageStore;
use crate::records::{Action, Deployment, NewDeployment, State};
use crate::rendering::Rendered;
use crate::source::GitCommit;
use crate::validation::diagnostic::Diagnostic;

#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error("malformed ref update line from git: {0:?}")]
    BadRefUpdate(String),
    #[error("the pre-receive hook sent a malformed request: {0}")]
    BadRequest(String),
    #[error("reading the pushed objects: {0}")]
    Git(#[from] git2::Error),
    #[error(transparent)]
    Check(#[from] checks::CheckError),
    #[error("not a devpop repo (expected repos/<account>/<application>/<repo>.git): {0}")]
    NotADevpopRepo(String),
    #[error(transparent)]
    Io(#[from] io::Error),
}

impl HookError {
    /// What the pusher is told: what went wrong and what to do, never a server path (the
    /// server's log has the whole error).
    pub fn for_pusher(&self) -> String {
        let unreadable = "devpop could not read this push's objects or its scratch space";
        match self {
            HookError::Git(_) | HookError::Io(_) | HookError::Check(_) | HookError::NotADevpopRepo(_) => format!(
                "error: {unreadable}; nothing was changed: push again, and if it fails again, tell the server's operator (its log has the details)"
            ),
            HookError::BadRefUpdate(_) | HookError::BadRequest(_) => {
                format!("error: devpop could not check this push ({self}); nothing was changed")
            }
        }
    }
}

/// The checks' settings plus the limits on a push as a whole.
#[derive(Debug, Clone)]
pub struct HookSettings {
    pub checks: CheckSettings,
    /// Refs one push may update.
    pub max_refs: usize,
    /// The largest file a pushed commit may hold.
    pub max_blob_bytes: u64,
}

impl Default for HookSettings {
    fn default() -> Self {
        HookSettings { checks: CheckSettings::default(), max_refs: 100, max_blob_bytes: 100 << 20 }
    }
}

/// A deployment the server took: its id and where to follow it.
#[derive(Debug, Clone)]
pub struct Queued {
    pub id: u64,
    /// The deployment's console page.
    pub url: String,
    /// The deployment in the API (JSON).
    pub api_url: String,
}

/// What the checks of a push need from the devpop server that received it.
pub trait PushServer {
    /// Who pushed, as the transport saw it.
    fn pusher(&self) -> &str;
    /// The id the deployment will have: it is recorded and queued once git has moved the branch.
    /// `rendered` is what the checks rendered, so the deployment need not render it again.
    fn reserve(&self, request: NewDeployment, rendered: Option<Rendered>) -> Result<Queued, DeployError>;
    /// Holds the request's environment until git has moved or refused this push's refs,
    /// waiting while another push holds it (`on_wait` runs once before waiting); `false` when
    /// the push ended meanwhile.
    fn hold(&self, request: &NewDeployment, on_wait: &mut dyn FnMut()) -> bool;
    /// `-o wait`: records and queues a deployment of a commit still in quarantine, now.
    fn submit(&self, request: NewDeployment) -> Result<Queued, DeployError>;
    /// A deployment as recorded.
    fn deployment(&self, id: u64) -> Option<Deployment>;
    /// `-o dry-run`: the target's own check of the render.
    fn dry_run(&self, request: NewDeployment) -> Result<Option<crate::applying::DryRun>, String>;
}

/// Runs the pre-receive checks of the push `request` to the repo `id` (opened so that the
/// quarantine is visible); `Ok(true)` accepts the push. Without a `server` (a push that did not
/// come through `devpop serve`) nothing is deployed.
pub fn pre_receive(
    id: &RepoId,
    repo: &Repository,
    request: &PushRequest,
    out: &mut dyn Write,
    packages: &PackageStore,
    settings: &HookSettings,
    server: Option<&dyn PushServer>,
) -> Result<bool, HookError> {
    let mut summary = Summary { dry_run: request.options.dry_run, ..Summary::default() };
    let push = Push { id, repo, request, packages, settings, server };
    let accepted = check_push(&push, out, &mut summary)?;
    if request.options.json {
        summary.accepted = accepted;
        say(out, &format!("devpop-result: {}", summary.to_json()))?;
    }
    Ok(accepted)
}

/// What `-o json` prints last: the verdict, each environment's outcome, every problem.
#[derive(Debug, Default)]
pub struct Summary {
    pub accepted: bool,
    pub dry_run: bool,
    pub environments: Vec<serde_json::Value>,
    pub problems: Vec<Diagnostic>,
}

impl Summary {
    fn environment(&mut self, environment: &str, state: &str, namespace: Option<&str>, queued: Option<&Queued>) {
        self.environments.push(serde_json::json!({
            "environment": environment,
            "state": state,
            "namespace": namespace,
            "deployment": queued.map(|q| q.id),
            "url": queued.map(|q| q.url.as_str()),
            "api_url": queued.map(|q| q.api_url.as_str()),
        }));
    }

    fn problem(&mut self, message: &str) {
        let message = message.strip_prefix("error: ").unwrap_or(message);
        self.problems.push(Diagnostic::error("", None, message));
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "accepted": self.accepted,
            "dry_run": self.dry_run,
            "environments": self.environments,
            "problems": self.problems.iter().map(|d| d.to_json()).collect::<Vec<_>>(),
        })
    }
}

/// One push being checked: where it goes, what it asks, and what checks it.
#[derive(Clone, Copy)]
struct Push<'a> {
    id: &'a RepoId,
    repo: &'a Repository,
    request: &'a PushRequest,
    packages: &'a PackageStore,
    settings: &'a HookSettings,
    server: Option<&'a dyn PushServer>,
}

fn check_push(push: &Push<'_>, out: &mut dyn Write, summary: &mut Summary) -> Result<bool, HookError> {
    let Push { id, repo, request, packages, settings, server } = *push;
    let updates = &request.updates;
    let max_refs = settings.max_refs;
    if updates.len() > max_refs {
        let problem = format!(
            "error: this push updates {} refs; at most {max_refs} are accepted in one push (each branch is an environment): push fewer at a time",
            updates.len()
        );
        summary.problem(&problem);
        say(out, &problem)?;
        return Ok(false);
    }
    let options = &request.options;
    let problems = options.problems();
    if updates.is_empty() {
        say(out, "error: this push updates no refs; nothing was changed")?;
        return Ok(false);
    }
    let mut names: Vec<&str> = updates.iter().map(|u| u.refname.as_str()).collect();
    names.sort_unstable();
    if let Some(twice) = names.windows(2).find(|w| w[0] == w[1]) {
        let problem = format!("error: this push names {} twice; name each ref once", twice[0]);
        summary.problem(&problem);
        say(out, &problem)?;
        return Ok(false);
    }
    if !problems.is_empty() {
        for problem in &problems {
            summary.problem(problem);
            say(out, problem)?;
        }
        say(out, "error: push rejected: fix the push options (listed above); nothing was changed")?;
        return Ok(false);
    }
    for unknown in &options.unknown {
        say(out, &format!("warning: unknown push option {unknown:?} ignored (devpop knows: dry-run, wait, json)"))?;
    }
    // Every object the push adds is sized (not only the tip's files): the quarantine holds them.
    let mut oversized = match &request.quarantine {
        Some(q) => objects::oversized_blobs(std::path::Path::new(q), settings.max_blob_bytes)?,
        None => Default::default(),
    };
    // Everything the checks print also goes into the deployment records.
    let mut tee = Tee { out, seen: Vec::new() };
    let mut accepted = true;
    let mut rendered = Vec::new();
    for update in updates {
        let checked = check_update(id, repo, update, &mut tee, packages, settings, request, server, &mut oversized)?;
        accepted &= checked.accepted;
        summary.problems.extend(checked.problems);
        if let Some(branch) = update.branch() {
            let namespace = checked.rendered.as_ref().map(|r| r.namespace.as_str());
            let state = if !checked.accepted { "refused" } else { "checked" };
            summary.environment(branch, state, namespace, None);
        }
        rendered.push(checked.rendered);
    }
    if let Some((blob, size)) = oversized.iter().next() {
        // In the pack, but in no pushed commit: refused all the same (git would keep it).
        let problem = format!(
            "error: this push carries a {size}-byte object ({blob}) that no pushed branch holds; files larger than {} bytes are refused (DEVPOP_MAX_BLOB_BYTES)",
            settings.max_blob_bytes
        );
        summary.problem(&problem);
        say(tee.out, &problem)?;
        accepted = false;
    }
    let validation: Vec<String> = String::from_utf8_lossy(&tee.seen).lines().map(str::to_owned).collect();
    let out = tee.out;
    if options.dry_run && accepted {
        if request.dry_run_answered {
            // git hands the refs to `devpop hook proc-receive`, which keeps them where they are.
            say(out, "Dry run passed: this push would be accepted and deployed; nothing was changed")?;
            return Ok(true);
        }
        say(out, "error: dry run passed, refused on purpose: nothing was changed; push without -o dry-run to deploy")?;
        return Ok(false);
    }
    if !accepted {
        return Ok(false);
    }
    let Some(server) = server else {
        if options.wait {
            say(out, "error: -o wait needs the push to come through a devpop server")?;
            return Ok(false);
        }
        announce_deployments(out, id, updates, rendered, None, &validation, summary)?;
        return Ok(true);
    };
    if let Some(problem) = hold_environments(out, repo, id, updates, server)? {
        summary.problem(&problem);
        return Ok(false);
    }
    // From here on, each environment's entry says what became of it.
    summary.environments.clear();
    if !options.wait {
        announce_deployments(out, id, updates, rendered, Some(server), &validation, summary)?;
        return Ok(true);
    }
    // The commit is still in quarantine: the server reads it from there.
    for update in updates.iter().filter(|u| u.branch().is_some()) {
        let mut deployment = deployment_request(id, update, server.pusher(), request.quarantine.clone());
        deployment.validation = validation.clone();
        if !deploy_and_wait(out, server, deployment, summary)? {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Holds the environment of each pushed branch until git has moved (or refused) this push's
/// refs, then checks that no branch moved since the push began; the problem (also said) when
/// one did. Pushes of one environment through the server therefore pass this point
/// one at a time: a push that lost a race is refused here, before it announces a deployment
/// that could never exist, and `-o wait` deployments run in branch order. Environments are
/// held in name order, so two pushes of the same branches cannot deadlock.
fn hold_environments(
    out: &mut dyn Write,
    repo: &Repository,
    id: &RepoId,
    updates: &[RefUpdate],
    server: &dyn PushServer,
) -> Result<Option<String>, HookError> {
    let mut held: Vec<(&RefUpdate, NewDeployment)> = updates
        .iter()
        .filter(|u| u.branch().is_some())
        .map(|u| (u, deployment_request(id, u, server.pusher(), None)))
        .collect();
    held.sort_by(|a, b| a.1.environment.cmp(&b.1.environment));
    for (_, deployment) in &held {
        let environment = &deployment.environment;
        let mut waiting = || {
            let _ = say(out, &format!("Waiting for another push to {environment} to finish..."));
        };
        if !server.hold(deployment, &mut waiting) {
            let problem = "error: this push ended (git stopped) while it waited; nothing was changed".to_owned();
            say(out, &problem)?;
            return Ok(Some(problem));
        }
    }
    for (update, _) in &held {
        let now = repo.refname_to_id(&update.refname).unwrap_or(git2::Oid::ZERO_SHA1);
        if now != update.old {
            let branch = update.branch().unwrap_or_default();
            let at =
                if now.is_zero() { "was deleted".to_owned() } else { format!("moved to {}", &now.to_string()[..12]) };
            let problem = format!(
                "error: {branch} {at} while this push was being checked; nothing was changed: fetch, rebase and push again"
            );
            say(out, &problem)?;
            return Ok(Some(problem));
        }
    }
    Ok(None)
}

/// What checking one ref update found: whether it passed, and the environment it renders to.
struct Checked {
    accepted: bool,
    rendered: Option<Rendered>,
    /// Every problem found, as data (for `-o json`).
    problems: Vec<Diagnostic>,
}

impl Checked {
    fn rejected(problems: Vec<Diagnostic>) -> Self {
        Checked { accepted: false, rendered: None, problems }
    }
}

#[allow(clippy::too_many_arguments)]
fn check_update(
    id: &RepoId,
    repo: &Repository,
    update: &RefUpdate,
    out: &mut dyn Write,
    packages: &PackageStore,
    settings: &HookSettings,
    request: &PushRequest,
    server: Option<&dyn PushServer>,
    oversized: &mut std::collections::HashMap<git2::Oid, u64>,
) -> Result<Checked, HookError> {
    let Some(branch) = update.branch() else {
        say(
            out,
            &format!(
                "error: {}: devpop deploys branches, one per environment; push a branch (e.g. git push developer-pop HEAD:Production)",
                update.refname
            ),
        )?;
        let problem = format!("{}: devpop deploys branches, one per environment; push a branch", update.refname);
        return Ok(Checked::rejected(vec![Diagnostic::error("", None, problem)]));
    };
    if update.is_delete() {
        say(out, &format!("Environment {branch}: branch deleted"))?;
        return Ok(Checked { accepted: true, rendered: None, problems: Vec::new() });
    }
    let problems = objects::check_update(repo, update, oversized, settings.max_blob_bytes)?;
    if !problems.is_empty() {
        for problem in &problems {
            say(out, problem)?;
        }
        say_rejected(out, branch, problems.len())?;
        let problems = problems.iter().map(|p| Diagnostic::error("", None, p.trim_start_matches("error: "))).collect();
        return Ok(Checked::rejected(problems));
    }
    let source = GitCommit { repo, commit: update.new };
    let commit = update.new.to_string();
    let subject = checks::Subject { id, environment: branch, commit: &commit };
    let verdict = checks::run(&source, subject, packages, &settings.checks, out)?;
    if let (true, Some(rendered)) = (request.options.dry_run, &verdict.rendered) {
        dry_run_report(out, id, branch, rendered, packages)?;
        if let Some(server) = server {
            let deployment = deployment_request(id, update, server.pusher(), request.quarantine.clone());
            match server.dry_run(deployment) {
                Ok(Some(answer)) => {
                    say(out, &format!("Dry run on the target: {}", answer.summary))?;
                    if let Some(changes) = &answer.changes {
                        say(out, "Dry run: changes on the target (live objects against the server-side dry run):")?;
                        say_changes(out, changes)?;
                    }
                }
                Ok(None) => {}
                Err(error) => say(out, &format!("error: dry run on the target: {error}"))?,
            }
        }
    }
    if verdict.accepted() {
        return Ok(Checked { accepted: true, rendered: verdict.rendered, problems: verdict.problems });
    }
    say_rejected(out, branch, verdict.errors)?;
    Ok(Checked::rejected(verdict.problems))
}

/// The last line of a refused environment: how many problems, and that nothing moved.
fn say_rejected(out: &mut dyn Write, branch: &str, n: usize) -> Result<(), HookError> {
    let s = if n == 1 { "" } else { "s" };
    say(
        out,
        &format!("error: push to {branch} rejected: {n} problem{s} to fix (listed above); the branch is unchanged"),
    )?;
    Ok(())
}

/// `-o wait`: deploys the quarantined commit before the branch moves, streaming the
/// deployment's steps; `Ok(true)` when it became ready (the push is then accepted).
fn deploy_and_wait(
    out: &mut dyn Write,
    server: &dyn PushServer,
    request: NewDeployment,
    summary: &mut Summary,
) -> Result<bool, HookError> {
    let environment = request.environment.clone();
    let queued = match server.submit(request) {
        Ok(q) => q,
        Err(e) => {
            say(out, &format!("error: {environment}: cannot deploy: the devpop server did not take it ({e})"))?;
            return Ok(false);
        }
    };
    say(out, &format!("Deployment {} queued for {environment}: {} (API: {})", queued.id, queued.url, queued.api_url))?;
    let mut shown = 1; // the "queued" step
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3600);
    loop {
        let Some(d) = server.deployment(queued.id) else {
            say(out, &format!("error: lost track of deployment {}", queued.id))?;
            return Ok(false);
        };
        for step in d.steps.iter().skip(shown) {
            say(out, &format!("  [{}] {}", step.state.as_str(), step.message))?;
        }
        shown = d.steps.len();
        if matches!(d.state, State::Ready | State::Failed | State::Superseded) {
            summary.environment(&environment, d.state.as_str(), d.namespace.as_deref(), Some(&queued));
        }
        match d.state {
            State::Ready => {
                say(out, &format!("Deployment {} of {environment} is ready", d.id))?;
                return Ok(true);
            }
            State::Failed | State::Superseded => {
                say(
                    out,
                    &format!(
                        "error: deployment {} of {environment} {}; the branch is unchanged",
                        d.id,
                        d.state.as_str()
                    ),
                )?;
                return Ok(false);
            }
            _ if std::time::Instant::now() > deadline => {
                say(out, &format!("error: gave up waiting for deployment {}", d.id))?;
                return Ok(false);
            }
            _ => std::thread::sleep(std::time::Duration::from_millis(100)),
        }
    }
}

/// Tells the server which deployments this push makes, and the user their ids. The server
/// records them once git has moved the branches (a push that fails after this leaves nothing).
fn announce_deployments(
    out: &mut dyn Write,
    id: &RepoId,
    updates: &[RefUpdate],
    rendered: Vec<Option<Rendered>>,
    server: Option<&dyn PushServer>,
    validation: &[String],
    summary: &mut Summary,
) -> Result<(), HookError> {
    for (update, rendered) in updates.iter().zip(rendered) {
        let Some(branch) = update.branch() else { continue };
        let namespace = rendered.as_ref().map(|r| r.namespace.clone());
        let Some(server) = server else {
            say(out, &format!("warning: {branch} not deployed: this push did not come through a devpop server"))?;
            continue;
        };
        let mut request = deployment_request(id, update, server.pusher(), None);
        request.validation = validation.to_vec();
        match server.reserve(request, rendered) {
            Ok(q) => {
                summary.environment(branch, "queued", namespace.as_deref(), Some(&q));
                say(out, &format!("Deployment {} queued for {branch}: {} (API: {})", q.id, q.url, q.api_url))?
            }
            Err(e) => say(out, &format!("warning: {branch} not deployed: the devpop server did not take it ({e})"))?,
        }
    }
    Ok(())
}

fn deployment_request(id: &RepoId, update: &RefUpdate, pusher: &str, quarantine: Option<String>) -> NewDeployment {
    NewDeployment {
        account: id.account.clone(),
        application: id.application.clone(),
        repo: id.repo.clone(),
        environment: update.branch().unwrap_or_default().to_owned(),
        commit: if update.is_delete() { update.old.to_string() } else { update.new.to_string() },
        action: if update.is_delete() { Action::Delete } else { Action::Deploy },
        pusher: pusher.to_owned(),
        quarantine,
        validation: Vec::new(),
    }
}

/// Passes writes through, keeping a copy.
struct Tee<'a> {
    out: &'a mut dyn Write,
    seen: Vec<u8>,
}

impl Write for Tee<'_> {
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
    out: &mut dyn Write,
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
    say_changes(out, &d)
}

/// Each changed object (`+` added, `~` changed with the unified diff of its YAML, `-` removed)
/// and the counts.
fn say_changes(out: &mut dyn Write, d: &crate::rendering::Diff) -> Result<(), HookError> {
    for (mark, keys) in [("+", &d.added), ("~", &d.changed), ("-", &d.removed)] {
        for k in keys {
            say(out, &format!("  {mark} {k}"))?;
            // What changes inside it, as a unified diff of its YAML.
            for line in d.details.get(k).into_iter().flatten() {
                say(out, &format!("      {line}"))?;
            }
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

fn say(out: &mut dyn Write, line: &str) -> io::Result<()> {
    checks::line(out, line)
}
