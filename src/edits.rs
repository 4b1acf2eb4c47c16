//! Changes made through the API or the console, as commits: a new environment, a file edited
//! (Aperture's configuration, egress, IP restrictions, outage page, domains). Each is a commit
//! on the environment's branch, checked exactly like a push of it (`checks::run`), and moves
//! the branch only when accepted and only from the commit it was made on; [`held`] runs a
//! change under the environment's hold, so a change and a push never interleave.

use std::future::Future;
use std::sync::Arc;

use futures_util::FutureExt as _;
use git2::{Oid, Repository};

use crate::applying::deployer::{DeployError, Deployer, EnvKey};
use crate::applying::Target;
use crate::checks::{CheckError, CheckSettings};
use crate::names::RepoId;
use crate::packages::PackageStore;
use crate::records::audit::AuditLog;
use crate::records::{Action, NewDeployment};
use crate::repos::RepoStore;
use crate::source::GitCommit;
use crate::validation::config;

#[derive(Debug, thiserror::Error)]
pub enum EditError {
    #[error("environment {0} already exists")]
    Exists(String),
    #[error("environment {0} changed while this change was checked; read it again and retry")]
    Moved(String),
    #[error("application {application} has no environment {environment}")]
    NoEnvironment { application: String, environment: String },
    #[error("section.config.json of {environment}: {problem}")]
    Config { environment: String, problem: String },
    #[error("git: {0}")]
    Git(#[from] git2::Error),
    #[error(transparent)]
    Check(#[from] CheckError),
    #[error("{0:?} is not an environment name")]
    BadName(String),
    /// The change's commit was refused by the checks a push gets: their lines.
    #[error("refused by the same checks as a push:\n{}", .0.join("\n"))]
    Refused(Vec<String>),
    #[error(transparent)]
    Deploy(#[from] DeployError),
    #[error("a task of the server's failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// Who makes a change (a token's id, `local`), and from where (the audit log's address).
#[derive(Debug, Clone)]
pub struct Author {
    pub who: String,
    pub from: Option<String>,
}

impl Author {
    /// The commit signature of a change by this author.
    fn signature(&self) -> Result<git2::Signature<'static>, git2::Error> {
        git2::Signature::now(&self.who, &format!("{}@devpop.invalid", self.who))
    }
}

/// What an action on an environment reaches of the server: its repos, packages and check
/// settings, the deployer and the audit log. Cheap to clone.
pub struct Actions<T: Target> {
    pub repos: RepoStore,
    pub packages: PackageStore,
    pub checks: CheckSettings,
    pub deployer: Arc<Deployer<T>>,
    pub audit: Arc<AuditLog>,
}

impl<T: Target> Clone for Actions<T> {
    fn clone(&self) -> Self {
        Actions {
            repos: self.repos.clone(),
            packages: self.packages.clone(),
            checks: self.checks.clone(),
            deployer: self.deployer.clone(),
            audit: self.audit.clone(),
        }
    }
}

/// Names pushes and changes, each unique while this process runs (the holder of a hold).
static HOLDERS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A name for one push or change, unique while this process runs.
pub fn next_holder() -> String {
    format!("push-{}", HOLDERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
}

/// A deployment of `commit` to `env` by `pusher`.
pub fn request(id: &RepoId, env: &str, commit: String, action: Action, pusher: &str) -> NewDeployment {
    NewDeployment {
        account: id.account.clone(),
        application: id.application.clone(),
        repo: id.repo.clone(),
        environment: env.to_owned(),
        commit,
        action,
        pusher: pusher.to_owned(),
        quarantine: None,
        validation: Vec::new(),
    }
}

impl<T: Target> Actions<T> {
    /// Changes to the application `id`'s repo, checked with these packages and settings.
    pub fn edits<'a>(&'a self, repo: &'a Repository, id: &'a RepoId) -> Edits<'a> {
        Edits { repo, id, packages: &self.packages, checks: &self.checks }
    }

    /// Writes an audit entry, off the async threads (a database write).
    pub async fn audit(&self, author: &Author, action: &str, id: &RepoId, target: &str, detail: &str) {
        let audit = self.audit.clone();
        let (who, from, action, account, target, detail) = (
            author.who.clone(),
            author.from.clone(),
            action.to_owned(),
            id.account.clone(),
            target.to_owned(),
            detail.to_owned(),
        );
        let written =
            tokio::task::spawn_blocking(move || audit.record(&who, from, &action, &account, &target, &detail));
        if let Err(e) = written.await {
            tracing::error!(error = %e, "cannot write the audit log");
        }
    }

    /// Commits what `make` returns on top of `env`'s branch, checks it like a push and, when
    /// accepted, moves the branch and deploys it; audited as `action`. `make` (given the repo,
    /// the branch's commit and the environment's name) returning `None` changes nothing: no
    /// commit, no deployment. The whole change holds the environment as a push does, so a
    /// change and a push never interleave. The one path of every change to an environment's
    /// files (the Aperture API's and the console's).
    pub async fn commit_change<E>(
        &self,
        author: &Author,
        id: &RepoId,
        env: &str,
        action: &str,
        make: impl FnOnce(&Repository, Oid, &str) -> Result<Option<Edit>, E> + Send + 'static,
    ) -> Result<Option<Change>, E>
    where
        E: From<EditError> + Send + 'static,
    {
        if !crate::names::is_branch_name(env) {
            return Err(EditError::BadName(env.to_owned()).into());
        }
        let key = (id.account.clone(), id.application.clone(), id.repo.clone(), env.to_owned());
        let (me, id, env, author, action) =
            (self.clone(), id.clone(), env.to_owned(), author.clone(), action.to_owned());
        held(&self.deployer, &next_holder(), key, async move {
            let (blocking, rid, name, who) = (me.clone(), id.clone(), env.clone(), author.clone());
            let made = tokio::task::spawn_blocking(move || {
                let me = blocking;
                let repo = Repository::open_bare(me.repos.path(&rid)).map_err(EditError::from)?;
                let edits = me.edits(&repo, &rid);
                let head = edits.head(&name)?;
                let Some(edit) = make(&repo, head, &name)? else { return Ok(None) };
                let parent = repo.find_commit(head).map_err(EditError::from)?;
                let sig = who.signature().map_err(EditError::from)?;
                let commit = commit_files(&repo, &parent, &edit.files, &sig, &edit.message).map_err(EditError::from)?;
                let log = format!("devpop: {}", edit.message.lines().next().unwrap_or(""));
                let checked = edits.check_and_move(&name, commit, Some(head), &log)?;
                if !checked.accepted {
                    return Err(EditError::Refused(checked.lines).into());
                }
                Ok::<_, E>(Some((commit, checked.lines)))
            })
            .await
            .map_err(EditError::from)??;
            let Some((commit, lines)) = made else { return Ok(None) };
            let mut new = request(&id, &env, commit.to_string(), Action::Deploy, &author.who);
            new.validation = lines;
            let d = me.deployer.submit(new).await.map_err(EditError::from)?;
            let target = format!("{}/{}/{env}", id.application, id.repo);
            me.audit(&author, &action, &id, &target, &format!("commit {commit}, deployment {}", d.id)).await;
            Ok(Some(Change { commit, deployment: d.id }))
        })
        .await
    }
}

impl<T: Target> Actions<T> {
    /// Creates environment `name` from `source`'s commit, its entry in section.config.json
    /// changed by `edit`: the commit checked like a push, the branch made and deployed under the
    /// new environment's hold, audited as `environment.create`. The commit and its deployment.
    pub async fn create_environment(
        &self,
        author: &Author,
        id: &RepoId,
        source: &str,
        name: &str,
        edit: impl Fn(&mut serde_json::Value) + Send + 'static,
    ) -> Result<(Oid, crate::records::Deployment), EditError> {
        if !crate::names::is_branch_name(name) {
            return Err(EditError::BadName(name.to_owned()));
        }
        let key = (id.account.clone(), id.application.clone(), id.repo.clone(), name.to_owned());
        let (me, author, id, source, name) =
            (self.clone(), author.clone(), id.clone(), source.to_owned(), name.to_owned());
        held(&self.deployer, &next_holder(), key, async move {
            let (blocking, rid, new, who) = (me.clone(), id.clone(), name.clone(), author.clone());
            let (commit, lines) = tokio::task::spawn_blocking(move || {
                let repo = Repository::open_bare(blocking.repos.path(&rid))?;
                let (commit, checked) =
                    blocking.edits(&repo, &rid).new_environment(&source, &new, &edit, &who.signature()?)?;
                if !checked.accepted {
                    return Err(EditError::Refused(checked.lines));
                }
                Ok((commit, checked.lines))
            })
            .await??;
            let mut new = request(&id, &name, commit.to_string(), Action::Deploy, &author.who);
            new.validation = lines;
            let d = me.deployer.submit(new).await?;
            let target = format!("{}/{}/{name}", id.application, id.repo);
            me.audit(&author, "environment.create", &id, &target, &format!("deployment {}", d.id)).await;
            Ok((commit, d))
        })
        .await
    }
}

/// A change made: the commit and its deployment.
#[derive(Debug)]
pub struct Change {
    pub commit: Oid,
    pub deployment: u64,
}

/// The files a change writes (content) or removes (`None`: the file or folder goes), and its
/// commit message. Paths are components, each checked by the maker (`environment_config::repo_path`).
pub struct Edit {
    pub files: Vec<(Vec<String>, Option<Vec<u8>>)>,
    pub message: String,
}

impl Edit {
    /// An edit writing one file.
    pub fn one(path: Vec<String>, content: Vec<u8>, message: String) -> Self {
        Edit { files: vec![(path, Some(content))], message }
    }
}

/// What the checks of a change's commit said.
#[derive(Debug)]
pub struct Checked {
    pub accepted: bool,
    /// The lines a push of the commit would have printed (validation, validate.sh, rendering).
    pub lines: Vec<String>,
}

/// One application's repo, where changes are made and checked.
pub struct Edits<'a> {
    pub repo: &'a Repository,
    pub id: &'a RepoId,
    pub packages: &'a PackageStore,
    pub checks: &'a CheckSettings,
}

impl Edits<'_> {
    /// The commit the environment's branch is at.
    pub fn head(&self, env: &str) -> Result<Oid, EditError> {
        self.repo.find_reference(&format!("refs/heads/{env}")).ok().and_then(|r| r.target()).ok_or_else(|| {
            EditError::NoEnvironment {
                application: format!("{}/{}", self.id.account, self.id.application),
                environment: env.to_owned(),
            }
        })
    }

    /// Checks `commit` for `env` exactly as a push of it would be checked; when accepted,
    /// moves the branch to it, but only from `expected` (`None`: the branch must not exist
    /// yet), so a push in between is never lost.
    pub fn check_and_move(
        &self,
        env: &str,
        commit: Oid,
        expected: Option<Oid>,
        log: &str,
    ) -> Result<Checked, EditError> {
        let mut output = Vec::new();
        let commit_hex = commit.to_string();
        let subject = crate::checks::Subject { id: self.id, environment: env, commit: &commit_hex };
        let source = GitCommit { repo: self.repo, commit };
        let verdict = crate::checks::run(&source, subject, self.packages, self.checks, &mut output)?;
        let lines = String::from_utf8_lossy(&output).lines().map(str::to_owned).collect();
        if !verdict.accepted() {
            return Ok(Checked { accepted: false, lines });
        }
        let name = format!("refs/heads/{env}");
        match expected {
            None => self.repo.reference(&name, commit, false, log).map_err(|_| EditError::Exists(env.to_owned())),
            Some(old) => self
                .repo
                .reference_matching(&name, commit, true, old, log)
                .map_err(|_| EditError::Moved(env.to_owned())),
        }?;
        Ok(Checked { accepted: true, lines })
    }

    /// Creates environment `name` from `source_env`: a commit whose section.config.json also
    /// defines `name` as a copy of the source's settings (then changed by `edit`), checked like
    /// a push to `name`; the branch exists only when the checks accept it.
    pub fn new_environment(
        &self,
        source_env: &str,
        name: &str,
        edit: &dyn Fn(&mut serde_json::Value),
        sig: &git2::Signature,
    ) -> Result<(Oid, Checked), EditError> {
        let source = self.head(source_env)?;
        if self.repo.find_reference(&format!("refs/heads/{name}")).is_ok() {
            return Err(EditError::Exists(name.to_owned()));
        }
        let commit = environment_commit(self.repo, source, source_env, name, edit, sig)?;
        let log = format!("devpop: create environment {name} from {source_env}");
        let checked = self.check_and_move(name, commit, None, &log)?;
        Ok((commit, checked))
    }
}

/// A commit on top of `source` whose section.config.json also defines `name`, as a copy of
/// `source_env`'s settings changed by `edit` (no new commit when that changes nothing).
fn environment_commit(
    repo: &Repository,
    source: Oid,
    source_env: &str,
    name: &str,
    edit: &dyn Fn(&mut serde_json::Value),
    sig: &git2::Signature,
) -> Result<Oid, EditError> {
    let problem = |problem: &str| EditError::Config { environment: source_env.to_owned(), problem: problem.to_owned() };
    let parent = repo.find_commit(source)?;
    let tree = parent.tree()?;
    let entry = tree.get_name(config::FILE).ok_or_else(|| problem("the file is missing"))?;
    let blob = repo.find_blob(entry.id())?;
    let mut json: serde_json::Value =
        serde_json::from_slice(blob.content()).map_err(|e| problem(&format!("not JSON ({e})")))?;
    let before = json.clone();
    let envs = json["environments"].as_object_mut().ok_or_else(|| problem("environments is not an object"))?;
    if !envs.contains_key(name) {
        let copy = envs.get(source_env).cloned().ok_or_else(|| problem("it does not define the source environment"))?;
        envs.insert(name.to_owned(), copy);
    }
    edit(&mut envs[name]);
    if json == before {
        return Ok(source);
    }
    let mut text = serde_json::to_string_pretty(&json).expect("JSON serialises");
    text.push('\n');
    let message = format!("Create environment {name} from {source_env}\n");
    Ok(commit_file(repo, &parent, &[config::FILE], text.as_bytes(), sig, &message)?)
}

/// A commit on top of `parent` with `content` at `path` (its components, each checked by the
/// caller); every other file stays as it is.
pub fn commit_file(
    repo: &Repository,
    parent: &git2::Commit,
    path: &[&str],
    content: &[u8],
    sig: &git2::Signature,
    message: &str,
) -> Result<Oid, git2::Error> {
    let files = [(path.iter().map(|p| p.to_string()).collect(), Some(content.to_vec()))];
    commit_files(repo, parent, &files, sig, message)
}

/// A commit on top of `parent` with each of `files` written or removed (a folder left empty
/// goes too); every other file stays as it is.
pub fn commit_files(
    repo: &Repository,
    parent: &git2::Commit,
    files: &[(Vec<String>, Option<Vec<u8>>)],
    sig: &git2::Signature,
    message: &str,
) -> Result<Oid, git2::Error> {
    /// The tree `tree` with `path` set to `blob` (or removed); `None` when it ends up empty.
    fn put(
        repo: &Repository,
        tree: Option<&git2::Tree>,
        path: &[String],
        blob: Option<Oid>,
    ) -> Result<Option<Oid>, git2::Error> {
        let mut builder = repo.treebuilder(tree)?;
        match (path, blob) {
            ([file], Some(blob)) => {
                builder.insert(file, blob, 0o100644)?;
            }
            ([file], None) => {
                if builder.get(file)?.is_some() {
                    builder.remove(file)?;
                }
            }
            ([dir, rest @ ..], _) => {
                let sub = match tree.and_then(|t| t.get_name(dir)) {
                    Some(e) if e.kind() == Some(git2::ObjectType::Tree) => Some(repo.find_tree(e.id())?),
                    Some(_) => return Err(git2::Error::from_str(&format!("{dir} is a file, not a folder"))),
                    None if blob.is_none() => return Ok(tree.map(git2::Tree::id)),
                    None => None,
                };
                match put(repo, sub.as_ref(), rest, blob)? {
                    Some(id) => {
                        builder.insert(dir, id, 0o040000)?;
                    }
                    None => {
                        if builder.get(dir)?.is_some() {
                            builder.remove(dir)?;
                        }
                    }
                }
            }
            ([], _) => return Err(git2::Error::from_str("empty path")),
        }
        if builder.is_empty() {
            return Ok(None);
        }
        builder.write().map(Some)
    }
    let mut tree = parent.tree()?;
    for (path, content) in files {
        let blob = content.as_deref().map(|c| repo.blob(c)).transpose()?;
        let id = match put(repo, Some(&tree), path, blob)? {
            Some(id) => id,
            None => repo.treebuilder(None)?.write()?,
        };
        tree = repo.find_tree(id)?;
    }
    repo.commit(None, sig, sig, message, &tree, &[parent])
}

/// Runs `change` holding the environment `key` the way a push holds it (`Deployer::hold`,
/// under the name `holder`, unique among pushes and changes), so the change's read of the
/// branch, its commit, the branch's move and its deployment's submission happen while no push
/// of that environment passes its verdict, and the other way round.
///
/// The change runs as a task of its own, which the server waits for at shutdown
/// (`Deployer::finish_changes`): a caller that goes away (a client hanging up, which makes
/// hyper drop its handler) does not cancel it halfway, between a moved branch and its
/// deployment or audit entry. The hold is let go when the change ends, a panic included; the
/// panic is then the caller's again.
pub async fn held<T: Target, R: Send + 'static>(
    deployer: &Arc<Deployer<T>>,
    holder: &str,
    key: EnvKey,
    change: impl Future<Output = R> + Send + 'static,
) -> R {
    let (runner, holder) = (deployer.clone(), holder.to_owned());
    let task = deployer.spawn_change(async move {
        let deployer = runner;
        deployer.push_started(&holder);
        deployer.hold(&holder, key, || tracing::debug!(holder, "a change waits for a push of its environment")).await;
        // A panic in the change still lets go of the environment, then is the caller's.
        let out = std::panic::AssertUnwindSafe(change).catch_unwind().await;
        deployer.push_finished(&holder, true).await;
        out.unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    });
    match task.await {
        Ok(out) => out,
        Err(e) => match e.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(e) => panic!("a change's task was cancelled: {e}"),
        },
    }
}

/// A server's [`Actions`] on a data dir of its own, with the application `1/2/site` created
/// (Production, from `templates/app`) and an in-memory cluster: for the domain's unit tests.
#[cfg(test)]
pub(crate) fn test_actions(data: &std::path::Path) -> (Actions<crate::applying::memory::MemoryCluster>, RepoId) {
    let repos = RepoStore::new(data, std::path::Path::new("/bin/true"));
    let id = RepoId::new("1", "2", "site").unwrap();
    repos.create(&id, "origin.example.com").unwrap();
    let packages = PackageStore::new(data);
    let records = Arc::new(crate::records::Records::open(data).unwrap());
    let target = Arc::new(crate::applying::memory::MemoryCluster::new());
    let deployer = Arc::new(Deployer::new(records, target, repos.clone(), packages.clone(), Default::default(), 1));
    let audit = Arc::new(AuditLog::open(data).unwrap());
    (Actions { repos, packages, checks: CheckSettings::default(), deployer, audit }, id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repos::RepoStore;

    struct World {
        _data: tempfile::TempDir,
        repos: RepoStore,
        packages: PackageStore,
        id: RepoId,
    }

    fn world() -> World {
        let data = tempfile::tempdir().unwrap();
        let repos = RepoStore::new(data.path(), std::path::Path::new("/bin/true"));
        let id = RepoId::new("1", "2", "site").unwrap();
        repos.create(&id, "origin.example.com").unwrap();
        let packages = PackageStore::new(data.path());
        World { _data: data, repos, packages, id }
    }

    fn sig() -> git2::Signature<'static> {
        git2::Signature::now("test", "test@localhost").unwrap()
    }

    #[test]
    fn a_new_environment_copies_the_source_settings_and_exists_only_when_checked() {
        let w = world();
        let repo = Repository::open_bare(w.repos.path(&w.id)).unwrap();
        let checks = CheckSettings::default();
        let edits = Edits { repo: &repo, id: &w.id, packages: &w.packages, checks: &checks };
        let (commit, checked) = edits.new_environment("Production", "Staging", &|_| {}, &sig()).unwrap();
        assert!(checked.accepted, "{:?}", checked.lines);
        assert_eq!(edits.head("Staging").unwrap(), commit);
        let config = crate::source::RepoSource::snapshot(&GitCommit { repo: &repo, commit }).unwrap().config;
        let crate::validation::ConfigFile::Present(text) = config else { panic!("no config") };
        let json: serde_json::Value = serde_json::from_slice(&text).unwrap();
        assert_eq!(json["environments"]["Staging"], json["environments"]["Production"]);

        assert!(matches!(edits.new_environment("Production", "Staging", &|_| {}, &sig()), Err(EditError::Exists(_))));
        assert!(matches!(
            edits.new_environment("Nowhere", "Qa", &|_| {}, &sig()),
            Err(EditError::NoEnvironment { .. })
        ));
        // An edit the checks refuse leaves no branch.
        let broken = |env: &mut serde_json::Value| env["origin"]["address"] = "http://not a host".into();
        let (_, checked) = edits.new_environment("Production", "Broken", &broken, &sig()).unwrap();
        assert!(!checked.accepted && !checked.lines.is_empty());
        assert!(matches!(edits.head("Broken"), Err(EditError::NoEnvironment { .. })));
    }

    #[test]
    fn a_change_moves_the_branch_only_from_the_commit_it_was_made_on() {
        let w = world();
        let repo = Repository::open_bare(w.repos.path(&w.id)).unwrap();
        let checks = CheckSettings::default();
        let edits = Edits { repo: &repo, id: &w.id, packages: &w.packages, checks: &checks };
        let head = edits.head("Production").unwrap();
        let parent = repo.find_commit(head).unwrap();
        let a = commit_file(&repo, &parent, &["custom_errors", "503.html"], b"<p>a</p>", &sig(), "a").unwrap();
        let b = commit_file(&repo, &parent, &["custom_errors", "503.html"], b"<p>b</p>", &sig(), "b").unwrap();
        assert!(edits.check_and_move("Production", a, Some(head), "a").unwrap().accepted);
        assert_eq!(edits.head("Production").unwrap(), a);
        // b was made on the old head: the branch has moved since.
        assert!(matches!(edits.check_and_move("Production", b, Some(head), "b"), Err(EditError::Moved(_))));
        assert_eq!(edits.head("Production").unwrap(), a);
        let tree = repo.find_commit(a).unwrap().tree().unwrap();
        let file = tree.get_path(std::path::Path::new("custom_errors/503.html")).unwrap();
        assert_eq!(repo.find_blob(file.id()).unwrap().content(), b"<p>a</p>");
    }

    /// A deployer over `world()`'s repos and the key of its Production environment.
    fn held_world() -> (World, tempfile::TempDir, Arc<Deployer<crate::applying::memory::MemoryCluster>>, EnvKey) {
        let w = world();
        let data = tempfile::tempdir().unwrap();
        let records = Arc::new(crate::records::Records::open(data.path()).unwrap());
        let target = Arc::new(crate::applying::memory::MemoryCluster::new());
        let deployer =
            Arc::new(Deployer::new(records, target, w.repos.clone(), w.packages.clone(), Default::default(), 1));
        (w, data, deployer, ("1".into(), "2".into(), "site".into(), "Production".into()))
    }

    #[tokio::test]
    async fn a_change_whose_caller_goes_away_midway_still_runs_to_its_end_and_lets_go_of_the_environment() {
        let (_w, _data, deployer, key) = held_world();
        let (started, midway) = tokio::sync::oneshot::channel::<()>();
        let (go_on, resume) = tokio::sync::oneshot::channel::<()>();
        let (finished, ended) = tokio::sync::oneshot::channel::<()>();
        // The caller: a request handler, which hyper drops when its client hangs up.
        let caller = tokio::spawn({
            let (deployer, key) = (deployer.clone(), key.clone());
            async move {
                held(&deployer, "change-1", key, async move {
                    started.send(()).unwrap();
                    resume.await.unwrap();
                    finished.send(()).unwrap();
                })
                .await
            }
        });
        midway.await.unwrap();
        caller.abort();
        assert!(caller.await.unwrap_err().is_cancelled());
        go_on.send(()).unwrap();
        ended.await.expect("the change ran to its end after its caller went away");
        // And let go of the environment: a push holds it (once the change's task has ended).
        deployer.push_started("push-1");
        assert!(deployer.hold("push-1", key, || {}).await);
    }

    #[tokio::test]
    async fn a_change_waits_while_a_push_holds_its_environment() {
        use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
        let (_w, _data, deployer, key) = held_world();
        deployer.push_started("push-1");
        assert!(deployer.hold("push-1", key.clone(), || {}).await);
        let ran = Arc::new(AtomicBool::new(false));
        let flag = ran.clone();
        let mut change = std::pin::pin!(held(&deployer, "change-1", key.clone(), async move {
            flag.store(true, SeqCst);
            "changed"
        }));
        assert!(change.as_mut().now_or_never().is_none());
        // On this one-thread runtime, each yield lets the change's task run until it waits.
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert!(!ran.load(SeqCst), "the change waits for the push");
        deployer.push_finished("push-1", true).await;
        assert_eq!(change.await, "changed");
        assert!(ran.load(SeqCst));
        // And the hold is let go after the change: a push holds the environment at once.
        deployer.push_started("push-2");
        let mut push = std::pin::pin!(deployer.hold("push-2", key, || {}));
        assert_eq!(push.as_mut().now_or_never(), Some(true));
    }

    #[tokio::test]
    async fn a_change_that_panics_lets_go_of_its_environment_and_the_panic_is_the_callers() {
        let (_w, _data, deployer, key) = held_world();
        let fails = true;
        let caller = tokio::spawn({
            let (deployer, key) = (deployer.clone(), key.clone());
            async move { held(&deployer, "change-1", key, async move { assert!(!fails, "a change that fails") }).await }
        });
        assert!(caller.await.unwrap_err().is_panic(), "the caller sees the change's panic");
        deployer.push_started("push-1");
        let mut push = std::pin::pin!(deployer.hold("push-1", key, || {}));
        assert_eq!(push.as_mut().now_or_never(), Some(true), "the environment is free");
    }
}
