//! The whole pre-receive check of one commit for one environment: the pure validation of
//! `section.config.json` and the folders, then each module's `validate.sh` in its sandbox.
//!
//! The git hook and `devpop validate` both call [`run`], so a push and an offline check print
//! the same lines and reach the same verdict. Lines go to `out` as they happen (in a push, each
//! is a `remote:` line the user sees immediately).

use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Mutex};

use crate::names::RepoId;
use crate::packages::PackageStore;
use crate::rendering::{self, Files, ModuleInput, RenderInput, RenderSettings, Rendered};
use crate::sandbox::{self, Outcome};
use crate::source::{RepoSource, SourceError};
use crate::validation::{self, Diagnostic};

/// Lines of a script's output shown to the pusher, and their width.
const SHOW_LINES: usize = 40;
const SHOW_WIDTH: usize = 300;

#[derive(Debug, Clone)]
pub struct CheckSettings {
    pub bwrap: PathBuf,
    pub sandbox: sandbox::Limits,
    /// Sandboxes started ahead of time (a long-running server has them; a one-off check
    /// starts each sandbox when it needs it).
    pub pool: Option<sandbox::Pool>,
    /// How many `validate.sh` run at once.
    pub parallel: usize,
    /// Where passing validations are remembered (see [`ValidationMemo`]); `None` disables it.
    pub memo: Option<MemoStore>,
    pub render: RenderSettings,
}

impl Default for CheckSettings {
    fn default() -> Self {
        CheckSettings {
            bwrap: PathBuf::from("bwrap"),
            sandbox: sandbox::Limits::default(),
            pool: None,
            parallel: 4,
            memo: None,
            render: RenderSettings::default(),
        }
    }
}

/// What is being checked: an application's environment at a commit.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    pub id: &'a RepoId,
    pub environment: &'a str,
    pub commit: &'a str,
}

#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("scratch dir: {0}")]
    Scratch(io::Error),
    #[error("writing output: {0}")]
    Output(#[from] io::Error),
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Verdict {
    pub errors: usize,
    pub warnings: usize,
    /// The parsed config, when it could be read.
    pub config: Option<validation::SectionConfig>,
    /// The environment's objects, when every check passed.
    pub rendered: Option<Rendered>,
    /// Every problem reported, as printed (for machine-readable output).
    pub problems: Vec<Diagnostic>,
}

impl Verdict {
    pub fn accepted(&self) -> bool {
        self.errors == 0
    }
}

/// Checks `source` for deployment to the subject's environment, printing every finding to
/// `out`; when all is well, renders the environment (a commit that cannot be rendered fails).
pub fn run(
    source: &dyn RepoSource,
    subject: Subject,
    packages: &PackageStore,
    settings: &CheckSettings,
    out: &mut dyn Write,
) -> Result<Verdict, CheckError> {
    let environment = subject.environment;
    let snapshot = source.snapshot()?;
    let report = validation::check(&snapshot, environment, &packages.catalog());
    let mut verdict = Verdict::default();
    for d in &report.diagnostics {
        say(out, &mut verdict, d)?;
    }
    let Some(config) = report.config else { return Ok(verdict) };

    // The modules whose validate.sh can run: package installed, folder present.
    let mut jobs = Vec::new();
    // The scripts whose sandbox this check uses (replaced in the pool afterwards).
    let mut sandboxed = Vec::new();
    for entry in &config.proxychain {
        let Ok(package) = packages.get(&entry.image) else { continue };
        if !snapshot.top_level_dirs.contains(&entry.name) {
            continue;
        }
        let script = package.validate_sh();
        let memo = settings.memo.as_ref().and_then(|store| {
            let folder = source.folder_id(&entry.name)?;
            ValidationMemo::new(store, &entry.image, &script, &folder, &settings.sandbox)
        });
        if memo.as_ref().is_some_and(ValidationMemo::passed_before) {
            // Passed on this very folder before: no sandbox, but the same warnings.
            let (_, written) = source.read_folder(&entry.name)?;
            jobs.push(Job { name: entry.name.clone(), sandbox: Mutex::new(None), written, memo });
            continue;
        }
        let sandbox = match &settings.pool {
            Some(pool) => pool.prepare(&script),
            None => sandbox::Prepared::fresh(&settings.bwrap, &script),
        }
        .map_err(CheckError::Scratch)?;
        tracing::debug!(module = %entry.name, ready = sandbox.was_ready(), "validate.sh sandbox");
        let written = source.write_folder(&entry.name, sandbox.config_dir())?;
        jobs.push(Job { name: entry.name.clone(), sandbox: Mutex::new(Some(sandbox)), written, memo });
        sandboxed.push(script);
    }

    // Run them in parallel (bounded), report in chain order as each finishes.
    let next = AtomicUsize::new(0);
    let (senders, receivers): (Vec<_>, Vec<_>) = jobs.iter().map(|_| mpsc::channel::<Outcome>()).unzip();
    std::thread::scope(|scope| -> Result<(), CheckError> {
        for _ in 0..settings.parallel.clamp(1, jobs.len().max(1)) {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(job) = jobs.get(i) else { break };
                let outcome = if let Some(limit) = &job.written.over_limit {
                    Outcome::CannotRun(format!("its folder has {limit}; a module's config must be small"))
                } else if let Some(sandbox) = job.sandbox.lock().expect("job lock").take() {
                    let outcome = sandbox.run(&settings.sandbox);
                    if let (Outcome::Passed { output }, Some(memo)) = (&outcome, &job.memo) {
                        if output.is_empty() {
                            memo.remember_pass();
                        }
                    }
                    outcome
                } else {
                    Outcome::Passed { output: String::new() } // remembered (see above)
                };
                let _ = senders[i].send(outcome);
            });
        }
        for (Job { name, written, .. }, rx) in jobs.iter().zip(&receivers) {
            line(out, &format!("Validating configuration for proxy {name}..."))?;
            for skipped in &written.skipped {
                let d = Diagnostic::warning(
                    skipped.clone(),
                    None,
                    "symlink or submodule not passed to validate.sh (links are never followed); commit the file itself",
                );
                say(out, &mut verdict, &d)?;
            }
            let outcome = rx.recv().unwrap_or_else(|_| Outcome::CannotRun("the validation worker stopped".into()));
            report_outcome(out, &mut verdict, name, &outcome, &settings.sandbox)?;
        }
        Ok(())
    })?;
    // Have the sandboxes used replaced (when the server is quiet).
    if let Some(pool) = &settings.pool {
        for script in &sandboxed {
            pool.replace(script);
        }
    }
    if verdict.accepted() {
        let ns = rendering::naming::namespace(&settings.render.namespace_prefix, subject.id, environment);
        line(out, &format!("Rendering environment {environment} (namespace {ns})..."))?;
        match render(source, subject, &config, packages, &settings.render, &Default::default()) {
            Ok(rendered) => verdict.rendered = Some(rendered),
            Err(e) => {
                let d = Diagnostic::error(
                    "section.config.json",
                    None,
                    format!("cannot render environment {environment}: {e}"),
                );
                say(out, &mut verdict, &d)?;
            }
        }
    }
    verdict.config = Some(config);
    Ok(verdict)
}

#[derive(Debug, thiserror::Error)]
pub enum RenderFailure {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Package(#[from] crate::packages::PackageError),
    #[error(transparent)]
    Render(#[from] rendering::RenderError),
}

/// Gathers what rendering needs from the commit and the packages, and renders.
pub fn render(
    source: &dyn RepoSource,
    subject: Subject,
    config: &validation::SectionConfig,
    packages: &PackageStore,
    settings: &RenderSettings,
    hop_ips: &std::collections::BTreeMap<String, String>,
) -> Result<Rendered, RenderFailure> {
    let mut modules = Vec::new();
    for entry in &config.proxychain {
        let package = packages.get(&entry.image)?;
        let package_dir = crate::source::WorkDir { root: &package.dir };
        let (proxy_files, _) = package_dir.read_folder("proxy")?;
        let prepare_sh = std::fs::read(package.dir.join("prepare.sh"))
            .map_err(|source| SourceError::Io { path: package.dir.join("prepare.sh"), source })?;
        let (config_files, _) = source.read_folder(&entry.name)?;
        modules.push(ModuleInput {
            name: entry.name.clone(),
            descriptor: package.descriptor,
            config_files,
            proxy_files,
            prepare_sh,
        });
    }
    let (outage_pages, _): (Files, _) = source.read_folder("outage_pages")?;
    let (custom_errors, _): (Files, _) = source.read_folder("custom_errors")?;
    let input = RenderInput {
        id: subject.id,
        environment: subject.environment,
        commit: subject.commit,
        config,
        modules: &modules,
        outage_pages: &outage_pages,
        custom_errors: &custom_errors,
        hop_ips,
        settings,
    };
    Ok(rendering::render(&input)?)
}

/// One module's validate.sh run, prepared.
struct Job {
    name: String,
    /// The sandbox, with the module's folder written for it (taken by the worker that runs it);
    /// none when the memo says this folder passed before.
    sandbox: Mutex<Option<sandbox::Prepared>>,
    written: crate::source::Written,
    memo: Option<ValidationMemo>,
}

/// Where passing validations are remembered: files in a folder (one-off checks, e.g. the hook
/// of a push to a repo on disk), or memory (the server: creating files costs more than the
/// lookup saves on some filesystems, and a restart only costs one validation per folder).
#[derive(Debug, Clone)]
pub enum MemoStore {
    Dir(PathBuf),
    Memory(std::sync::Arc<Mutex<std::collections::HashSet<git2::Oid>>>),
}

/// Keys a memory store holds before it starts over.
const MEMO_MAX_KEYS: usize = 100_000;

impl MemoStore {
    pub fn memory() -> Self {
        MemoStore::Memory(Default::default())
    }
}

/// Remembers that a validate.sh passed on a module folder, so an unchanged folder is not
/// validated again (most pushes change one module, or none). The key is a hash of everything
/// the verdict depends on: the package, its validate.sh, the folder's git tree id and the
/// sandbox limits; validate.sh is a pure function of those by contract (read-only input, no
/// network). Only clean passes are remembered; a failure always runs again.
pub struct ValidationMemo {
    key: git2::Oid,
    store: MemoStore,
}

impl ValidationMemo {
    fn new(
        store: &MemoStore,
        image: &str,
        script: &std::path::Path,
        folder_id: &str,
        limits: &sandbox::Limits,
    ) -> Option<Self> {
        let script = std::fs::read(script).ok()?;
        let script_id = git2::Oid::hash_object(git2::ObjectType::Blob, &script).ok()?;
        let key = format!("{image}\n{script_id}\n{folder_id}\n{limits:?}");
        let key = git2::Oid::hash_object(git2::ObjectType::Blob, key.as_bytes()).ok()?;
        Some(ValidationMemo { key, store: store.clone() })
    }

    fn passed_before(&self) -> bool {
        match &self.store {
            MemoStore::Dir(dir) => dir.join(self.key.to_string()).is_file(),
            MemoStore::Memory(keys) => keys.lock().expect("memo lock").contains(&self.key),
        }
    }

    fn remember_pass(&self) {
        match &self.store {
            MemoStore::Dir(dir) => {
                let _ = std::fs::create_dir_all(dir);
                let _ = std::fs::write(dir.join(self.key.to_string()), b"");
            }
            MemoStore::Memory(keys) => {
                let mut keys = keys.lock().expect("memo lock");
                if keys.len() >= MEMO_MAX_KEYS {
                    keys.clear();
                }
                keys.insert(self.key);
            }
        }
    }
}

fn report_outcome(
    out: &mut dyn Write,
    verdict: &mut Verdict,
    name: &str,
    outcome: &Outcome,
    limits: &sandbox::Limits,
) -> io::Result<()> {
    let (head, output, is_error) = match outcome {
        Outcome::Passed { output } if output.trim().is_empty() => return Ok(()),
        Outcome::Passed { output } => (
            format!("warning: proxy {name}: validate.sh passed but printed (a valid config should print nothing):"),
            output.as_str(),
            false,
        ),
        Outcome::Failed { status, output } => {
            (format!("error: proxy {name}: validate.sh {status}:"), output.as_str(), true)
        }
        Outcome::TimedOut { output } => (
            format!(
                "error: proxy {name}: validate.sh did not finish within {}s and was stopped:",
                limits.timeout.as_secs_f32()
            ),
            output.as_str(),
            true,
        ),
        Outcome::OutputTooLarge { output } => (
            format!(
                "error: proxy {name}: validate.sh printed more than {} KiB and was stopped; it began with:",
                limits.max_output / 1024
            ),
            output.as_str(),
            true,
        ),
        Outcome::CannotRun(why) => (format!("error: proxy {name}: cannot run validate.sh: {why}"), "", true),
    };
    if is_error {
        verdict.errors += 1;
    } else {
        verdict.warnings += 1;
    }
    line(out, &head)?;
    let lines: Vec<&str> = output.lines().collect();
    // The same, as data: the module's folder, what happened and what validate.sh said.
    let what = head.split_once(&format!("proxy {name}: ")).map_or(head.as_str(), |(_, w)| w).trim_end_matches(':');
    let said: Vec<String> = lines.iter().take(SHOW_LINES).map(|l| printable(l)).collect();
    let message = if said.is_empty() { what.to_owned() } else { format!("{what}: {}", said.join("\n")) };
    verdict.problems.push(if is_error {
        Diagnostic::error(format!("{name}/"), None, message)
    } else {
        Diagnostic::warning(format!("{name}/"), None, message)
    });
    for l in lines.iter().take(SHOW_LINES) {
        line(out, &format!("  {}", printable(l)))?;
    }
    if lines.len() > SHOW_LINES {
        line(out, &format!("  ... ({} more lines)", lines.len() - SHOW_LINES))?;
    }
    if is_error && output.trim().is_empty() && !matches!(outcome, Outcome::CannotRun(_)) {
        line(out, "  (it printed no reason)")?;
    }
    Ok(())
}

/// A script's output is hostile too: no terminal control sequences reach the pusher.
fn printable(s: &str) -> String {
    s.chars().take(SHOW_WIDTH).map(|c| if c.is_control() && c != '\t' { '?' } else { c }).collect()
}

fn say(out: &mut dyn Write, verdict: &mut Verdict, d: &Diagnostic) -> io::Result<()> {
    if d.is_error() {
        verdict.errors += 1;
    } else {
        verdict.warnings += 1;
    }
    verdict.problems.push(d.clone());
    line(out, &d.to_string())
}

/// Writes one line of push output and flushes it, so the pusher sees it now. Control
/// characters (from a branch name, a file name, any pushed value) are written as escapes, so
/// nothing reaches the pusher's terminal as a control sequence.
pub fn line(out: &mut dyn Write, text: &str) -> io::Result<()> {
    if text.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        let mut escaped = String::with_capacity(text.len() + 8);
        for c in text.chars() {
            if !c.is_control() || c == '\n' || c == '\t' {
                escaped.push(c);
            } else {
                escaped.extend(c.escape_default());
            }
        }
        writeln!(out, "{escaped}")?;
    } else {
        writeln!(out, "{text}")?;
    }
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pushed_values_in_output_lines_are_escaped() {
        let mut out = Vec::new();
        line(&mut out, "push to Prod\x1b[31m\r rejected").unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "push to Prod\\u{1b}[31m\\r rejected\n");
    }

    #[test]
    fn control_characters_never_reach_the_terminal() {
        assert_eq!(printable("ok\x1b[31mred\x07"), "ok?[31mred?");
        assert_eq!(printable(&"x".repeat(1000)).len(), SHOW_WIDTH);
    }
}
