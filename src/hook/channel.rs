//! The hook channel: how a push through `devpop serve` is checked inside the server.
//!
//! For each push the transport makes a socket pair and starts git with one end as fd 3
//! (`transport::spawn::Spec::fd3`) and `DEVPOP_HOOK_CHANNEL=fd3` in its environment; git passes
//! both on to the pre-receive hook.
//! The shim (`hooks/pre-receive`, shell builtins only: no process starts) writes the push and
//! relays what comes back, one line at a time:
//!
//! ```text
//! shim -> server   quarantine <GIT_QUARANTINE_PATH>
//!                  option <push option>            (one per `git push -o`)
//!                  update <old> <new> <ref>        (one per ref update)
//!                  end
//! server -> shim   |<line of output>               (shown as a `remote:` line)
//!                  =<exit status>                  (0 accepts the push)
//! ```
//!
//! Every output line is framed, so nothing a check prints can pass for the verdict. When the
//! hook never runs (git refused the pack first), git's exit closes the far end and the server's
//! side ends with it. The socket is the capability: only git and its hook hold the other end.

use std::io::{self, Write};
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

use super::{HookError, HookSettings, PushOptions, PushRequest, PushServer, Queued, RefUpdate};
use crate::applying::deployer::Deployer;
use crate::applying::AnyTarget;
use crate::names::RepoId;
use crate::packages::PackageStore;
use crate::records::{Deployment, NewDeployment};

/// The variable that tells the shim the channel is there, and its value.
pub const ENV: (&str, &str) = ("DEVPOP_HOOK_CHANNEL", "fd3");

/// Bounds on what the shim may send.
const MAX_LINE: usize = 8 * 1024;
const MAX_LINES: usize = 100_000;

/// A new channel: the server's end, and the end git gets as fd 3.
pub fn pair() -> io::Result<(std::os::unix::net::UnixStream, OwnedFd)> {
    let (server, git) = std::os::unix::net::UnixStream::pair()?;
    Ok((server, git.into()))
}

/// The push as the shim wrote it (the lines before `end`).
pub fn parse_request(lines: &[String]) -> Result<PushRequest, HookError> {
    let mut request = PushRequest::default();
    let mut options = Vec::new();
    for line in lines {
        let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
        match word {
            "quarantine" if !rest.is_empty() => request.quarantine = Some(rest.to_owned()),
            "quarantine" => {}
            "option" => options.push(rest.to_owned()),
            "update" => request.updates.push(RefUpdate::parse(rest)?),
            _ => return Err(HookError::BadInput(line.clone())),
        }
    }
    request.options = PushOptions::parse(options);
    Ok(request)
}

/// Reads the shim's request; `None` when git ended without running the hook.
async fn read_request(
    stream: tokio::net::UnixStream,
) -> Result<(Option<PushRequest>, tokio::net::UnixStream), HookError> {
    let mut reader = BufReader::new(stream);
    let mut lines = Vec::new();
    loop {
        let mut line = Vec::new();
        let n = (&mut reader).take(MAX_LINE as u64 + 1).read_until(b'\n', &mut line).await?;
        if n == 0 {
            return Ok((None, reader.into_inner()));
        }
        if line.last() != Some(&b'\n') || lines.len() >= MAX_LINES {
            return Err(HookError::BadInput("the hook sent an over-long request".into()));
        }
        line.pop();
        let line = String::from_utf8(line).map_err(|e| HookError::BadInput(e.to_string()))?;
        if line == "end" {
            return Ok((Some(parse_request(&lines)?), reader.into_inner()));
        }
        lines.push(line);
    }
}

/// Output for the shim: each line framed as `|<line>`.
struct Framed<W: Write> {
    inner: W,
    partial: Vec<u8>,
}

impl<W: Write> Write for Framed<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        for &b in buf {
            if b == b'\n' {
                let mut frame = Vec::with_capacity(self.partial.len() + 2);
                frame.push(b'|');
                frame.append(&mut self.partial);
                frame.push(b'\n');
                self.inner.write_all(&frame)?;
            } else {
                self.partial.push(b);
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// What checking one push needs, besides the push itself.
pub struct Context {
    pub id: RepoId,
    pub repo_path: PathBuf,
    pub packages: PackageStore,
    pub settings: HookSettings,
    pub server: InServer,
}

/// Serves one push's channel: waits for the hook, checks the push, answers the verdict.
pub async fn serve(stream: std::os::unix::net::UnixStream, ctx: Context) {
    if let Err(e) = serve_inner(stream, ctx).await {
        tracing::warn!(error = %e, "the pre-receive hook channel failed; the push is refused");
    }
}

async fn serve_inner(stream: std::os::unix::net::UnixStream, ctx: Context) -> Result<(), HookError> {
    stream.set_nonblocking(true)?;
    let (request, stream) = read_request(tokio::net::UnixStream::from_std(stream)?).await?;
    let Some(request) = request else { return Ok(()) };
    let stream = stream.into_std()?;
    stream.set_nonblocking(false)?;
    tokio::task::spawn_blocking(move || -> Result<(), HookError> {
        let started = std::time::Instant::now();
        let mut out = Framed { inner: io::BufWriter::new(&stream), partial: Vec::new() };
        let accepted = match crate::source::open_pushed(&ctx.repo_path, request.quarantine.as_deref()) {
            Ok(repo) => {
                super::pre_receive(&ctx.id, &repo, &request, &mut out, &ctx.packages, &ctx.settings, Some(&ctx.server))
            }
            Err(e) => Err(HookError::Check(e.into())),
        };
        let status = match accepted {
            Ok(true) => 0,
            Ok(false) => 1,
            Err(e) => {
                tracing::error!(error = %e, repo = %ctx.id, "checking a push failed");
                let _ = super::say(&mut out, &format!("error: devpop could not check this push: {e}"));
                1
            }
        };
        tracing::debug!(repo = %ctx.id, status, ms = started.elapsed().as_secs_f64() * 1e3, "push checked");
        let mut inner = out.inner;
        writeln!(inner, "={status}")?;
        inner.flush()?;
        Ok(())
    })
    .await
    .map_err(|e| HookError::BadInput(e.to_string()))?
}

/// The server a push came through, as its checks see it.
pub struct InServer {
    pub deployer: Arc<Deployer<AnyTarget>>,
    pub base_url: String,
    pub pusher: String,
    /// This push, as the server knows it (its deployments are reserved under it).
    pub push: String,
    pub runtime: tokio::runtime::Handle,
}

impl PushServer for InServer {
    fn pusher(&self) -> &str {
        &self.pusher
    }

    fn reserve(&self, request: NewDeployment, rendered: Option<crate::rendering::Rendered>) -> Result<Queued, String> {
        let id = self.deployer.reserve(&self.push, request, rendered).map_err(|e| e.to_string())?;
        Ok(Queued { id, url: crate::api::deployment_url(&self.base_url, id) })
    }

    fn submit(&self, request: NewDeployment) -> Result<Queued, String> {
        let d = self.runtime.block_on(self.deployer.submit(request)).map_err(|e| e.to_string())?;
        Ok(Queued { id: d.id, url: crate::api::deployment_url(&self.base_url, d.id) })
    }

    fn deployment(&self, id: u64) -> Option<Deployment> {
        self.deployer.records().get(id)
    }

    fn dry_run(&self, request: NewDeployment) -> Result<Option<String>, String> {
        self.runtime.block_on(self.deployer.dry_run(request))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_shims_request() {
        let (z, a) = ("0".repeat(40), "a".repeat(40));
        let lines: Vec<String> = [
            "quarantine /data/repos/1/app/app.git/objects/tmp_objdir-incoming-x".to_owned(),
            "option wait".to_owned(),
            "option color=blue".to_owned(),
            format!("update {z} {a} refs/heads/Production"),
        ]
        .into();
        let r = parse_request(&lines).unwrap();
        assert_eq!(r.quarantine.as_deref(), Some("/data/repos/1/app/app.git/objects/tmp_objdir-incoming-x"));
        assert!(r.options.wait && !r.options.dry_run);
        assert_eq!(r.options.unknown, vec!["color=blue".to_owned()]);
        assert_eq!(r.updates.len(), 1);
        assert_eq!(r.updates[0].branch(), Some("Production"));
        assert!(parse_request(&["hello".to_owned()]).is_err());
        assert_eq!(parse_request(&["quarantine ".to_owned()]).unwrap().quarantine, None);
    }

    #[test]
    fn every_output_line_is_framed() {
        let mut out = Framed { inner: Vec::new(), partial: Vec::new() };
        write!(out, "Validating ").unwrap();
        writeln!(out, "configuration").unwrap();
        writeln!(out, "=0 is not a verdict\n").unwrap();
        assert_eq!(String::from_utf8(out.inner).unwrap(), "|Validating configuration\n|=0 is not a verdict\n|\n");
    }
}
