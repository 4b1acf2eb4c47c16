//! The hook channel: how a push through `devpop serve` is checked inside the server.
//!
//! For each push the transport makes a socket pair and starts git with one end as fd 3
//! (`transport::spawn::Spec::fd3`) and `DEVPOP_HOOK_CHANNEL=fd3` in its environment; git passes
//! both on to the pre-receive hook.
//! The shim (`hooks/pre-receive`, shell builtins only: no process starts) writes the push and
//! relays what comes back, one line at a time:
//!
//! ```text
//! shim -> server   quarantine <n>\n<n bytes: GIT_QUARANTINE_PATH>\n
//!                  option <n>\n<n bytes: one push option>\n     (one per `git push -o`)
//!                  update <n>\n<n bytes: <old> <new> <ref>>\n   (one per ref update)
//!                  end <number of options>\n
//! server -> shim   |<line of output>               (shown as a `remote:` line)
//!                  =<exit status>                  (0 accepts the push)
//! ```
//!
//! Every value travels with its length in bytes, so no value can carry a separator: a push
//! option `x\nend` (git's client refuses to send one, a raw client can) is one option with a
//! newline in it, which the checks then refuse, never the end of the request.
//! Every output line is framed, so nothing a check prints can pass for the verdict. When the
//! hook never runs (git refused the pack first), git's exit closes the far end and the server's
//! side ends with it. The socket is the capability: only git and its hook hold the other end.

use std::io::{self, Write};
use std::os::fd::OwnedFd;
use std::path::PathBuf;

use tokio::io::AsyncReadExt;

use super::{HookError, HookSettings, PushOptions, PushRequest, PushServer, RefUpdate};
use crate::names::RepoId;
use crate::packages::PackageStore;

/// The variable that tells the shim the channel is there, and its value.
pub const ENV: (&str, &str) = ("DEVPOP_HOOK_CHANNEL", "fd3");

/// Bounds on what the shim may send: the whole request, and one value.
const MAX_REQUEST: usize = 4 << 20;
const MAX_VALUE: usize = 64 * 1024;

/// A new channel: the server's end, and the end git gets as fd 3.
pub fn pair() -> io::Result<(std::os::unix::net::UnixStream, OwnedFd)> {
    let (server, git) = std::os::unix::net::UnixStream::pair()?;
    Ok((server, git.into()))
}

/// What the bytes of a request hold so far.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// More bytes are needed.
    Incomplete,
    /// The whole request (its `end` frame came last).
    Done(PushRequest),
}

fn bad(what: impl Into<String>) -> HookError {
    HookError::BadRequest(what.into())
}

/// Parses the shim's request from `buf` (see the module doc for the frames). Pure: the reader
/// calls it as bytes arrive, and the fuzz target calls it on arbitrary bytes.
pub fn parse_request(buf: &[u8]) -> Result<Parsed, HookError> {
    let mut request = PushRequest::default();
    let mut options = Vec::new();
    let mut rest = buf;
    loop {
        let Some(nl) = rest.iter().position(|&b| b == b'\n') else {
            return if rest.len() > 64 { Err(bad("a frame header is too long")) } else { Ok(Parsed::Incomplete) };
        };
        let header = std::str::from_utf8(&rest[..nl]).map_err(|_| bad("a frame header is not UTF-8"))?;
        rest = &rest[nl + 1..];
        let (word, n) = header.split_once(' ').ok_or_else(|| bad(format!("unexpected frame {header:?}")))?;
        let n: usize = n.parse().map_err(|_| bad(format!("bad length in frame {header:?}")))?;
        if word == "end" {
            if n != options.len() {
                return Err(bad(format!("{} push options arrived, {n} were announced", options.len())));
            }
            if !rest.is_empty() {
                return Err(bad("bytes after the end of the request"));
            }
            request.options = PushOptions::parse(options);
            return Ok(Parsed::Done(request));
        }
        if n > MAX_VALUE {
            return Err(bad(format!("a {word} of {n} bytes is too long")));
        }
        if rest.len() < n + 1 {
            return Ok(Parsed::Incomplete);
        }
        if rest[n] != b'\n' {
            return Err(bad(format!("the {word} value is not followed by a newline")));
        }
        let value = std::str::from_utf8(&rest[..n]).map_err(|_| bad(format!("a {word} value is not UTF-8")))?;
        rest = &rest[n + 1..];
        match word {
            "quarantine" if value.is_empty() => {}
            "quarantine" => request.quarantine = Some(value.to_owned()),
            "option" => options.push(value.to_owned()),
            "update" => request.updates.push(RefUpdate::parse(value)?),
            _ => return Err(bad(format!("unexpected frame {word:?}"))),
        }
    }
}

/// Reads the shim's request; `None` when git ended without running the hook.
async fn read_request(
    mut stream: tokio::net::UnixStream,
) -> Result<(Option<PushRequest>, tokio::net::UnixStream), HookError> {
    let mut buf = Vec::new();
    loop {
        let n = (&mut stream).take((MAX_REQUEST + 1 - buf.len()) as u64).read_buf(&mut buf).await?;
        if n == 0 {
            if buf.is_empty() {
                return Ok((None, stream));
            }
            return Err(bad("the hook stopped in the middle of its request"));
        }
        if buf.len() > MAX_REQUEST {
            return Err(bad("the request is too large"));
        }
        // Parsed only when the bytes end like a request (an `end` frame last), so a long
        // request is not parsed again for every read.
        let last_line = buf.strip_suffix(b"\n").map(|b| &b[b.iter().rposition(|&c| c == b'\n').map_or(0, |i| i + 1)..]);
        if !last_line.is_some_and(|l| l.starts_with(b"end ")) {
            continue;
        }
        if let Parsed::Done(request) = parse_request(&buf)? {
            return Ok((Some(request), stream));
        }
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
    /// git was started to hand this push's refs to the proc-receive hook if it is a dry run.
    pub dry_run_answered: bool,
    /// The server the push came through (the transport's adapter to the deployer).
    pub server: Box<dyn PushServer + Send>,
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
    let Some(mut request) = request else { return Ok(()) };
    request.dry_run_answered = ctx.dry_run_answered;
    let stream = stream.into_std()?;
    stream.set_nonblocking(false)?;
    tokio::task::spawn_blocking(move || -> Result<(), HookError> {
        let started = std::time::Instant::now();
        let mut out = Framed { inner: io::BufWriter::new(&stream), partial: Vec::new() };
        let accepted = match crate::source::open_pushed(&ctx.repo_path, request.quarantine.as_deref()) {
            Ok(repo) => super::pre_receive(
                &ctx.id,
                &repo,
                &request,
                &mut out,
                &ctx.packages,
                &ctx.settings,
                Some(ctx.server.as_ref()),
            ),
            Err(e) => Err(HookError::Check(e.into())),
        };
        let status = match accepted {
            Ok(true) => 0,
            Ok(false) => 1,
            Err(e) => {
                tracing::error!(error = %e, repo = %ctx.id, "checking a push failed");
                let _ = super::say(&mut out, &e.for_pusher());
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
    .map_err(|e| HookError::Io(io::Error::other(e)))?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(word: &str, value: &str) -> String {
        format!("{word} {}\n{value}\n", value.len())
    }

    fn done(bytes: &str) -> PushRequest {
        match parse_request(bytes.as_bytes()).unwrap() {
            Parsed::Done(r) => r,
            Parsed::Incomplete => panic!("incomplete: {bytes:?}"),
        }
    }

    #[test]
    fn parses_the_shims_request() {
        let (z, a) = ("0".repeat(40), "a".repeat(40));
        let bytes = [
            frame("quarantine", "/data/repos/1/app/app.git/objects/tmp_objdir-incoming-x"),
            frame("option", "wait"),
            frame("option", "color=blue"),
            frame("update", &format!("{z} {a} refs/heads/Production")),
            "end 2\n".to_owned(),
        ]
        .concat();
        let r = done(&bytes);
        assert_eq!(r.quarantine.as_deref(), Some("/data/repos/1/app/app.git/objects/tmp_objdir-incoming-x"));
        assert!(r.options.wait && !r.options.dry_run);
        assert_eq!(r.options.unknown, vec!["color=blue".to_owned()]);
        assert_eq!(r.updates.len(), 1);
        assert_eq!(r.updates[0].branch(), Some("Production"));
        for cut in 0..bytes.len() {
            assert_eq!(parse_request(&bytes.as_bytes()[..cut]).unwrap(), Parsed::Incomplete, "cut at {cut}");
        }
        assert!(parse_request(b"hello 1\nx\n").is_err());
        assert_eq!(done(&format!("{}end 0\n", frame("quarantine", ""))).quarantine, None);
    }

    #[test]
    fn an_option_cannot_carry_the_end_of_the_request() {
        let a = "a".repeat(40);
        let update = frame("update", &format!("{a} {a} refs/heads/Production"));
        // A raw client's option "x\nend": one option holding a newline, then the update.
        let r = done(&[frame("option", "x\nend"), update.clone(), "end 1\n".to_owned()].concat());
        assert_eq!(r.updates.len(), 1, "the update after the option is still read");
        assert_eq!(r.options.invalid, ["x\nend"]);
        assert!(r.options.problems()[0].contains("x\\nend"), "{:?}", r.options.problems());
        // Unframed (the old protocol's shape), it is not a request at all.
        assert!(parse_request(b"option x\nend\n").is_err());
        // The announced count must match.
        assert!(parse_request([frame("option", "wait"), update, "end 0\n".to_owned()].concat().as_bytes()).is_err());
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
