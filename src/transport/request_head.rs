//! The head of a `git-receive-pack` request: the ref update commands and the push options,
//! which come before the pack.
//!
//! ```text
//! *PKT-LINE("shallow" SP <oid>)
//! PKT-LINE(<old> SP <new> SP <ref> NUL <capabilities>) *PKT-LINE(<old> SP <new> SP <ref>) flush
//! [ *PKT-LINE(<push option>) flush ]          (when the capabilities include push-options)
//! <pack>
//! ```
//!
//! The transport reads the head before it starts git, to start git for what the push asks
//! (a `-o dry-run` push is answered without moving its refs), then hands git the same bytes.
//! git remains the judge of the request: anything this parser does not understand is passed on
//! to git untouched (it answers [`Parse::Opaque`]). Pure: fuzzed in `fuzz/`.

/// The most bytes of a head that are read before the pack.
pub const MAX_HEAD: usize = 1 << 20;

/// One ref update command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    pub old: String,
    pub new: String,
    pub refname: String,
}

/// A parsed head.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Head {
    pub commands: Vec<Command>,
    pub capabilities: Vec<String>,
    pub options: Vec<Vec<u8>>,
}

impl Head {
    /// The push asked for `-o <option>`.
    pub fn has_option(&self, option: &str) -> bool {
        self.options.iter().any(|o| o == option.as_bytes())
    }
}

/// What the bytes so far hold.
#[derive(Debug, PartialEq, Eq)]
pub enum Parse {
    /// More bytes are needed.
    Incomplete,
    /// The head, and how many bytes it took (the pack starts there).
    Done(Head, usize),
    /// Not a head this parser knows (a signed push, a malformed request, more than
    /// [`MAX_HEAD`] bytes): git gets it as it is and answers it.
    Opaque,
}

enum Pkt<'a> {
    Flush,
    Data(&'a [u8]),
}

/// The pkt-line at the start of `buf` and its length; `None` when incomplete, `Err` when
/// malformed.
fn pkt(buf: &[u8]) -> Result<Option<(Pkt<'_>, usize)>, ()> {
    let Some(hex) = buf.get(..4) else { return Ok(None) };
    let hex = std::str::from_utf8(hex).map_err(|_| ())?;
    let len = usize::from_str_radix(hex, 16).map_err(|_| ())?;
    match len {
        0 => Ok(Some((Pkt::Flush, 4))),
        1..=4 => Err(()),
        _ if buf.len() < len => Ok(None),
        _ => Ok(Some((Pkt::Data(&buf[4..len]), len))),
    }
}

fn is_oid(s: &str) -> bool {
    (s.len() == 40 || s.len() == 64) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn command(line: &[u8]) -> Option<Command> {
    let line = std::str::from_utf8(line.strip_suffix(b"\n").unwrap_or(line)).ok()?;
    let mut parts = line.split(' ');
    let (old, new, refname) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || !is_oid(old) || !is_oid(new) || refname.is_empty() {
        return None;
    }
    Some(Command { old: old.to_owned(), new: new.to_owned(), refname: refname.to_owned() })
}

/// Parses the head at the start of `buf`.
pub fn parse(buf: &[u8]) -> Parse {
    match parse_inner(&buf[..buf.len().min(MAX_HEAD)]) {
        Ok(Some(done)) => done,
        Ok(None) if buf.len() >= MAX_HEAD => Parse::Opaque,
        Ok(None) => Parse::Incomplete,
        Err(()) => Parse::Opaque,
    }
}

fn parse_inner(buf: &[u8]) -> Result<Option<Parse>, ()> {
    let mut head = Head::default();
    let mut at = 0;
    // Shallow lines, then the commands up to a flush.
    loop {
        let Some((p, n)) = pkt(&buf[at..])? else { return Ok(None) };
        at += n;
        match p {
            Pkt::Flush if head.commands.is_empty() => return Ok(Some(Parse::Done(head, at))),
            Pkt::Flush => break,
            Pkt::Data(line) if line.starts_with(b"shallow ") && head.commands.is_empty() => continue,
            Pkt::Data(line) => {
                let (line, caps) = match line.iter().position(|&b| b == 0) {
                    Some(nul) if head.commands.is_empty() => (&line[..nul], Some(&line[nul + 1..])),
                    Some(_) => return Err(()),
                    None => (line, None),
                };
                if let Some(caps) = caps {
                    let caps = std::str::from_utf8(caps).map_err(|_| ())?;
                    head.capabilities = caps.split_whitespace().map(str::to_owned).collect();
                }
                head.commands.push(command(line).ok_or(())?);
            }
        }
    }
    if head.capabilities.iter().any(|c| c == "push-options") {
        loop {
            let Some((p, n)) = pkt(&buf[at..])? else { return Ok(None) };
            at += n;
            match p {
                Pkt::Flush => break,
                Pkt::Data(option) => head.options.push(option.to_vec()),
            }
        }
    }
    Ok(Some(Parse::Done(head, at)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkt_line(out: &mut Vec<u8>, payload: &[u8]) {
        out.extend_from_slice(format!("{:04x}", payload.len() + 4).as_bytes());
        out.extend_from_slice(payload);
    }

    fn request(options: &[&[u8]]) -> Vec<u8> {
        let (a, b) = ("a".repeat(40), "b".repeat(40));
        let mut r = Vec::new();
        let caps = if options.is_empty() { "report-status" } else { "report-status push-options" };
        pkt_line(&mut r, format!("{a} {b} refs/heads/Production\0{caps}\n").as_bytes());
        pkt_line(&mut r, format!("{a} {b} refs/heads/Staging\n").as_bytes());
        r.extend_from_slice(b"0000");
        if !options.is_empty() {
            for o in options {
                pkt_line(&mut r, o);
            }
            r.extend_from_slice(b"0000");
        }
        r.extend_from_slice(b"PACK....");
        r
    }

    #[test]
    fn reads_commands_and_options_up_to_the_pack() {
        let r = request(&[b"dry-run", b"x\nend"]);
        let Parse::Done(head, n) = parse(&r) else { panic!() };
        assert_eq!(&r[n..], b"PACK....");
        assert_eq!(head.commands.len(), 2);
        assert_eq!(head.commands[1].refname, "refs/heads/Staging");
        assert!(head.has_option("dry-run") && !head.has_option("wait"));
        assert_eq!(head.options[1], b"x\nend");
        for cut in 0..n {
            assert_eq!(parse(&r[..cut]), Parse::Incomplete, "cut at {cut}");
        }
    }

    #[test]
    fn what_it_does_not_know_is_left_to_git() {
        assert_eq!(parse(b"zzzz"), Parse::Opaque);
        assert_eq!(parse(b"0009push-cert"), Parse::Opaque);
        let Parse::Done(head, _) = parse(&request(&[])) else { panic!() };
        assert!(head.options.is_empty());
        assert_eq!(parse(b"000"), Parse::Incomplete);
    }
}
