//! `devpop hook proc-receive`: how a `git push -o dry-run` that passed its checks ends in
//! success with its branches unchanged.
//!
//! A pre-receive hook can only accept (and git then moves the refs) or refuse (and the push
//! fails). For a dry run, the transport starts git with `receive.procReceiveRefs=refs/`, so after
//! the pre-receive check has passed, git hands every ref update to this hook instead of
//! applying it. The hook answers each one "ok" without touching the repo, reporting the ref as
//! staying where it was, so the client prints success, exits 0, and its remote-tracking refs
//! still match the server. If this hook fails, git refuses the updates: nothing moves either
//! way.
//!
//! The protocol (gitprotocol-pack's proc-receive section), in pkt-lines:
//!
//! ```text
//! git  -> hook   version=1\0<features>  flush   <old> <new> <ref> ... flush   [push options flush]
//! hook -> git    version=1\0            flush   ok <ref>  option old-oid <old>  option new-oid <old> ... flush
//! ```

use std::io::{self, Read, Write};

/// The longest pkt-line payload.
const MAX_PKT: usize = 65516;
/// Ref updates answered at most.
const MAX_COMMANDS: usize = 100_000;

fn read_pkt(input: &mut impl Read) -> io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 4];
    input.read_exact(&mut len)?;
    let len = std::str::from_utf8(&len)
        .ok()
        .and_then(|h| usize::from_str_radix(h, 16).ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "bad pkt-line length"))?;
    if len == 0 {
        return Ok(None);
    }
    if !(5..=MAX_PKT + 4).contains(&len) {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "pkt-line length out of range"));
    }
    let mut payload = vec![0u8; len - 4];
    input.read_exact(&mut payload)?;
    if payload.last() == Some(&b'\n') {
        payload.pop();
    }
    Ok(Some(payload))
}

fn write_pkt(out: &mut impl Write, payload: &str) -> io::Result<()> {
    write!(out, "{:04x}{payload}", payload.len() + 4)
}

/// Answers one dry run: every ref update "ok", staying at its old value.
pub fn answer(input: &mut impl Read, out: &mut impl Write) -> io::Result<()> {
    // Version and features; devpop asks for none (the push options were read by pre-receive).
    let mut version = None;
    while let Some(pkt) = read_pkt(input)? {
        version.get_or_insert(pkt);
    }
    let version = version.unwrap_or_default();
    if !version.starts_with(b"version=1") {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "git offered an unknown proc-receive version"));
    }
    write_pkt(out, "version=1\0")?;
    out.write_all(b"0000")?;
    out.flush()?;
    let mut commands = Vec::new();
    while let Some(pkt) = read_pkt(input)? {
        if commands.len() >= MAX_COMMANDS {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "too many ref updates"));
        }
        let line = String::from_utf8(pkt).map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "not UTF-8"))?;
        let mut parts = line.splitn(3, ' ');
        let (Some(old), Some(_new), Some(refname)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "malformed ref update"));
        };
        commands.push((old.to_owned(), refname.to_owned()));
    }
    for (old, refname) in &commands {
        write_pkt(out, &format!("ok {refname}"))?;
        write_pkt(out, &format!("option old-oid {old}"))?;
        write_pkt(out, &format!("option new-oid {old}"))?;
    }
    out.write_all(b"0000")?;
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_update_is_answered_ok_at_its_old_value() {
        let (a, b) = ("a".repeat(40), "b".repeat(40));
        let mut input = Vec::new();
        write_pkt(&mut input, "version=1\0atomic push-options").unwrap();
        input.extend_from_slice(b"0000");
        write_pkt(&mut input, &format!("{a} {b} refs/heads/Production\n")).unwrap();
        input.extend_from_slice(b"0000");
        let mut out = Vec::new();
        answer(&mut input.as_slice(), &mut out).unwrap();
        let out = String::from_utf8(out).unwrap();
        assert_eq!(
            out,
            format!("000eversion=1\00000001cok refs/heads/Production003boption old-oid {a}003boption new-oid {a}0000")
        );
    }
}
