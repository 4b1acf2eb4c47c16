//! Running one git service process per HTTP request, streaming both ways.
//!
//! devpop runs `git upload-pack` / `git receive-pack --stateless-rpc` itself instead of going
//! through `git http-backend` (one exec less per request: devpop already parsed the URL and
//! checked the request). The request body is piped to the process's stdin as it arrives and its
//! stdout is the response body, so memory use does not depend on the size of a push.
//!
//! The process is never SIGKILLed: on a client disconnect its pipes close and git exits on its
//! own; on a time-out it gets SIGTERM. Either way git removes its quarantine on the way out, so
//! a broken push leaves nothing behind.

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use async_compression::tokio::bufread::GzipDecoder;
use axum::body::Body;
use futures_util::TryStreamExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::pipe;
use tokio::process::Command;
use tokio_util::io::{ReaderStream, StreamReader};

use super::spawn::{Child, Spec};
use super::{Service, TransportError};
use crate::settings::Settings;

const PIPE_BUF: usize = 64 * 1024;
/// How much of an oversized request is read (and discarded) so the client gets its 413.
const DRAIN_MAX: u64 = 64 << 20;
const DRAIN_TIME: Duration = Duration::from_secs(10);

/// What to run for one request.
pub struct Invocation<'a> {
    pub settings: &'a Settings,
    pub service: Service,
    pub repo: &'a Path,
    /// The client's `Git-Protocol` header (e.g. `version=2`), already checked.
    pub protocol: Option<String>,
    /// A push's end of the hook channel: git and its pre-receive hook get it as fd 3 (see
    /// `hook::channel`).
    pub hook_channel: Option<std::os::fd::OwnedFd>,
    /// Git settings for this request alone (`-c key=value`).
    pub config: Vec<String>,
}

/// A request body as git will read it: the bytes already read (a push's head), then the rest.
pub struct RequestBody {
    /// A push's head (commands and options), when it could be read and parsed.
    pub head: Option<super::request_head::Head>,
    prefix: Vec<u8>,
    rest: Box<dyn AsyncRead + Send + Unpin>,
    gzip: bool,
}

impl RequestBody {
    /// The body as it comes (gzip-decoded when the client used gzip), nothing read yet.
    pub fn new(body: Body, gzip: bool) -> Self {
        let stream = body.into_data_stream().map_err(std::io::Error::other);
        let raw = BufReader::with_capacity(PIPE_BUF, StreamReader::new(stream));
        let rest: Box<dyn AsyncRead + Send + Unpin> =
            if gzip { Box::new(GzipDecoder::new(raw)) } else { Box::new(raw) };
        RequestBody { head: None, prefix: Vec::new(), rest, gzip }
    }

    /// Reads a push's head (the ref update commands and push options, before the pack), so
    /// the push can be started for what it asks; git still gets every byte.
    pub async fn read_head(body: Body, gzip: bool, limit: u64) -> Result<Self, TransportError> {
        use super::request_head::{parse, Parse, MAX_HEAD};
        let mut request = Self::new(body, gzip);
        let mut chunk = vec![0u8; PIPE_BUF];
        // Parsed again only when the bytes have doubled (or ended), so a client trickling its
        // head byte by byte costs a linear amount of parsing, not a quadratic one.
        let mut parse_at = 0;
        loop {
            let n = match request.rest.read(&mut chunk).await {
                Ok(n) => n,
                Err(e) => return Err(body_error(e, gzip)),
            };
            request.prefix.extend_from_slice(&chunk[..n]);
            if request.prefix.len() as u64 > limit {
                return Err(TransportError::TooLarge { limit });
            }
            if n != 0 && request.prefix.len() < parse_at && request.prefix.len() < MAX_HEAD {
                continue;
            }
            parse_at = request.prefix.len() * 2;
            match parse(&request.prefix) {
                Parse::Done(head, _) => {
                    request.head = Some(head);
                    return Ok(request);
                }
                Parse::Opaque => return Ok(request),
                Parse::Incomplete if n == 0 || request.prefix.len() >= MAX_HEAD => return Ok(request),
                Parse::Incomplete => {}
            }
        }
    }
}

/// What a failed read of the request body means.
fn body_error(e: std::io::Error, gzip: bool) -> TransportError {
    if e.get_ref().is_some_and(|inner| inner.is::<axum::Error>()) {
        TransportError::ClientGone(e)
    } else if gzip {
        TransportError::BadBody(format!("the gzip-encoded request is corrupt: {e}"))
    } else {
        TransportError::ClientGone(e)
    }
}

/// Called when the git process has ended, with whether it succeeded.
pub type OnExit = Box<dyn FnOnce(bool) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> + Send>;

/// The environment of every git process devpop starts: no system or user git config, no
/// prompts, English messages.
pub fn git_env(settings: &Settings) -> Vec<(OsString, OsString)> {
    vec![
        ("PATH".into(), std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into())),
        ("HOME".into(), settings.data_dir.clone().into_os_string()),
        ("GIT_CONFIG_NOSYSTEM".into(), "1".into()),
        ("GIT_CONFIG_GLOBAL".into(), "/dev/null".into()),
        ("GIT_TERMINAL_PROMPT".into(), "0".into()),
        ("LC_ALL".into(), "C".into()),
    ]
}

/// `git` with [`git_env`] and nothing else, for git's chores (housekeeping, the start-up
/// probe); the protocol's processes start through [`super::spawn`].
pub fn git_command(settings: &Settings) -> Command {
    let mut cmd = Command::new(&settings.git);
    cmd.env_clear().envs(git_env(settings));
    cmd
}

/// `program` as an absolute path: as given when it has a `/`, else the first match on PATH (as
/// the shell finds it).
pub fn resolve_program(program: &Path) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    if program.as_os_str().as_bytes().contains(&b'/') {
        return std::path::absolute(program).ok();
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(program)).find(|candidate| {
        candidate.is_absolute()
            && std::fs::metadata(candidate).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    })
}

impl Invocation<'_> {
    fn spawn(&mut self, advertise: bool, stdin: bool) -> Result<Child, TransportError> {
        let mut args: Vec<OsString> = Vec::new();
        for setting in &self.config {
            args.push("-c".into());
            args.push(setting.into());
        }
        args.push(self.service.subcommand().into());
        args.push("--stateless-rpc".into());
        if advertise {
            args.push("--advertise-refs".into());
        }
        args.push(self.repo.as_os_str().to_owned());
        let mut env = git_env(self.settings);
        if let Some(p) = &self.protocol {
            env.push(("GIT_PROTOCOL".into(), p.into()));
        }
        let fd3 = self.hook_channel.take();
        if fd3.is_some() {
            let (key, value) = crate::hook::channel::ENV;
            env.push((key.into(), value.into()));
        }
        // `settings.git` is absolute: the server resolved it on PATH at start-up.
        super::spawn::spawn(Spec { program: &self.settings.git, args, env, stdin, fd3 }).map_err(TransportError::Spawn)
    }

    /// `GET info/refs`: the ref advertisement, streamed.
    pub async fn advertise(mut self) -> Result<Body, TransportError> {
        let mut child = self.spawn(true, false)?;
        let stdout = child.stdout.take().expect("stdout is piped");
        supervise(child, self.settings.limits.git_timeout, self.service, None, None);
        Ok(Body::from_stream(ReaderStream::with_capacity(stdout, PIPE_BUF)))
    }

    /// `POST git-upload-pack` / `git-receive-pack`: pipes `body` into the service and returns
    /// its output as the response body. Holds the response back until git has said something
    /// (or the request body was refused), so an oversized or broken upload gets a real HTTP
    /// error instead of a truncated protocol stream.
    pub async fn rpc(mut self, body: RequestBody, on_exit: Option<OnExit>) -> Result<Body, TransportError> {
        let mut child = self.spawn(false, true)?;
        let stdin = child.stdin.take().expect("stdin is piped");
        let mut stdout = child.stdout.take().expect("stdout is piped");
        // After a push, git's housekeeping (repack, prune) runs once the client has its answer,
        // when the repo looks like it needs it.
        let maintain = (self.service == Service::ReceivePack).then(|| {
            let mut cmd = git_command(self.settings);
            cmd.arg("-C").arg(self.repo).args(["maintenance", "run", "--auto", "--quiet"]);
            (cmd, self.repo.to_owned())
        });
        // With an exit action (a push's deployments), the response ends only once it has run:
        // the ids the push printed exist when the client is told the push is done.
        let (exited_tx, exited_rx) = tokio::sync::oneshot::channel::<()>();
        let waits = on_exit.is_some();
        let on_exit = on_exit.map(|f| -> OnExit {
            Box::new(move |ok| {
                Box::pin(async move {
                    f(ok).await;
                    let _ = exited_tx.send(());
                })
            })
        });
        supervise(child, self.settings.limits.git_timeout, self.service, maintain, on_exit);

        let limit = self.settings.limits.max_request_bytes;
        // The feeder says why it gave up *before* it closes git's stdin, so its verdict always
        // wins over whatever git then prints about the truncated request.
        let (verdict_tx, mut verdict) = tokio::sync::oneshot::channel();
        let feeder = tokio::spawn(feed(body, stdin, limit, verdict_tx));
        let mut first = vec![0u8; PIPE_BUF];
        let mut fed = false;
        let n = loop {
            tokio::select! {
                biased;
                given_up = &mut verdict, if !fed => match given_up {
                    // git sees a truncated request and exits through its own error path (which
                    // removes the quarantine). Drain its output meanwhile, so it never dies of a
                    // broken pipe halfway, and answer once the feeder has read what it will.
                    Ok(e) => {
                        tokio::spawn(drain(stdout));
                        let _ = feeder.await;
                        return Err(e);
                    }
                    Err(_) => fed = true, // the whole request went to git
                },
                read = stdout.read(&mut first) => break read.map_err(TransportError::Pipe)?,
            }
        };
        first.truncate(n);
        let body = prepend(first, stdout);
        if !waits {
            return Ok(Body::from_stream(body));
        }
        let after_exit = futures_util::StreamExt::filter_map(futures_util::stream::once(exited_rx), |_| async {
            None::<Result<bytes::Bytes, std::io::Error>>
        });
        Ok(Body::from_stream(futures_util::StreamExt::chain(body, after_exit)))
    }
}

/// Copies the request body into git's stdin, decoding gzip when the client used it, and stops
/// at `limit` bytes. Closing stdin is how git learns the request is complete; when the request
/// is refused, the reason goes to `verdict` before stdin is closed.
async fn feed(
    body: RequestBody,
    mut stdin: pipe::Sender,
    limit: u64,
    verdict: tokio::sync::oneshot::Sender<TransportError>,
) {
    let gzip = body.gzip;
    let reader = std::io::Cursor::new(body.prefix).chain(body.rest);
    // One byte past the limit tells "exactly at the limit" from "over it".
    let mut limited = reader.take(limit.saturating_add(1));
    let copied = tokio::io::copy_buf(&mut BufReader::with_capacity(PIPE_BUF, &mut limited), &mut stdin).await;
    let refused = match copied {
        Ok(n) if n > limit => TransportError::TooLarge { limit },
        Ok(_) => {
            // git may exit before reading everything (e.g. a refused push); that is its answer.
            let _ = stdin.shutdown().await;
            return;
        }
        // git stopped reading: it has answered (an error of its own) on stdout.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return,
        // Errors of the body stream itself carry the axum::Error: the client went away.
        Err(e) => body_error(e, gzip),
    };
    let too_large = matches!(refused, TransportError::TooLarge { .. });
    let _ = verdict.send(refused);
    drop(stdin);
    if too_large {
        // Read on a while: a client still sending would miss the 413 if the connection closed now.
        let rest = limited.into_inner().take(DRAIN_MAX);
        let _ = tokio::time::timeout(DRAIN_TIME, tokio::io::copy(&mut Box::new(rest), &mut tokio::io::sink())).await;
    }
}

/// Waits for the process in the background, enforcing the time limit, and logs how it ended;
/// then starts `after` (if any) when git succeeded.
/// Whether a repo is past git's default thresholds for automatic housekeeping (`gc.auto`:
/// about 6,700 loose objects, estimated from `objects/17` as git does; `gc.autoPackLimit`: 50
/// packs). Checking costs two directory reads; starting `git maintenance run --auto` to ask costs
/// a process per push.
pub fn needs_maintenance(repo: &Path) -> bool {
    let count = |dir: &Path, keep: &dyn Fn(&str) -> bool| {
        std::fs::read_dir(dir)
            .map(|d| d.flatten().filter(|e| e.file_name().to_str().is_some_and(keep)).count())
            .unwrap_or(0)
    };
    let objects = repo.join("objects");
    let loose = count(&objects.join("17"), &|n| n.len() == 38 && n.bytes().all(|b| b.is_ascii_hexdigit()));
    let packs = count(&objects.join("pack"), &|n| n.ends_with(".pack"));
    loose > 6700usize.div_ceil(256) || packs > 50
}

fn supervise(
    mut child: Child,
    timeout: Duration,
    service: Service,
    after: Option<(Command, std::path::PathBuf)>,
    on_exit: Option<OnExit>,
) {
    tokio::spawn(async move {
        let stderr = child.stderr.take();
        let log_stderr = async move {
            let Some(stderr) = stderr else { return String::new() };
            let mut text = String::new();
            // Bounded: git's own complaints are short; anything longer is noise.
            let _ = stderr.take(16 * 1024).read_to_string(&mut text).await;
            text
        };
        let status = tokio::select! {
            status = child.wait() => status,
            _ = tokio::time::sleep(timeout) => {
                tracing::warn!(service = service.subcommand(), ?timeout, "git request took too long; terminating it");
                terminate(child.id());
                child.wait().await
            }
        };
        let stderr = log_stderr.await;
        if let Some(on_exit) = on_exit {
            on_exit(status.as_ref().is_ok_and(|s| s.success())).await;
        }
        match status {
            Ok(s) if s.success() => {
                tracing::debug!(service = service.subcommand(), "git finished");
                let due = match &after {
                    Some((_, repo)) => {
                        let repo = repo.clone();
                        tokio::task::spawn_blocking(move || needs_maintenance(&repo)).await.unwrap_or(false)
                    }
                    None => false,
                };
                if let (true, Some((mut after, _))) = (due, after) {
                    after.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
                    match after.status().await {
                        Ok(s) if !s.success() => tracing::warn!(status = %s, "git maintenance failed"),
                        Err(e) => tracing::warn!(error = %e, "cannot start git maintenance"),
                        Ok(_) => {}
                    }
                }
            }
            Ok(s) => {
                tracing::info!(service = service.subcommand(), status = %s, stderr = stderr.trim(), "git ended with an error")
            }
            Err(e) => tracing::warn!(service = service.subcommand(), error = %e, "waiting for git failed"),
        }
    });
}

/// SIGTERM to git's process group, so git and its helpers run their cleanup (quarantine
/// removal) on the way out.
fn terminate(pid: u32) {
    if let Some(group) = rustix::process::Pid::from_raw(pid as i32) {
        // The process group of a child started in a group of its own and not reaped yet (only
        // the supervisor reaps it, after this call).
        let _ = rustix::process::kill_process_group(group, rustix::process::Signal::TERM);
    }
}

async fn drain(mut stdout: pipe::Receiver) {
    let _ = tokio::io::copy(&mut stdout, &mut tokio::io::sink()).await;
}

fn prepend(
    first: Vec<u8>,
    rest: pipe::Receiver,
) -> impl futures_util::Stream<Item = Result<bytes::Bytes, std::io::Error>> + Send {
    let head = futures_util::stream::iter((!first.is_empty()).then(|| Ok(bytes::Bytes::from(first))));
    let tail = ReaderStream::with_capacity(rest, PIPE_BUF);
    futures_util::StreamExt::chain(head, tail)
}

#[cfg(test)]
mod tests {
    #[test]
    fn housekeeping_is_due_past_gits_default_thresholds() {
        let repo = tempfile::tempdir().unwrap();
        let objects = repo.path().join("objects");
        std::fs::create_dir_all(objects.join("17")).unwrap();
        std::fs::create_dir_all(objects.join("pack")).unwrap();
        assert!(!super::needs_maintenance(repo.path()));
        for i in 0..28 {
            std::fs::write(objects.join("17").join(format!("{i:038x}")), b"").unwrap();
        }
        assert!(super::needs_maintenance(repo.path()), "28 loose objects in 17/: about 7,168 in all");
        std::fs::remove_dir_all(objects.join("17")).unwrap();
        for i in 0..51 {
            std::fs::write(objects.join("pack").join(format!("pack-{i}.pack")), b"").unwrap();
        }
        assert!(super::needs_maintenance(repo.path()), "51 packs");
    }
}
