//! The CLI as a person or a script uses it: pipes, terminals, logs.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};

use common::*;

#[test]
fn output_into_a_closed_pipe_ends_the_command_quietly() {
    let data = tempfile::tempdir().unwrap();
    let create = Command::new(DEVPOP)
        .args(["app", "create", "1", "app", "app", "--origin", "example.com", "--data"])
        .arg(data.path())
        .output()
        .unwrap();
    assert!(create.status.success(), "{}", String::from_utf8_lossy(&create.stderr));
    // `devpop app list | head -0`: the reader is gone before the first line is written.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = Command::new(DEVPOP).args(["app", "list", "--data"]).arg(data.path()).stdout(writer).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert!(out.status.success(), "{err}");
}

#[test]
fn logs_carry_no_colour_codes_when_stderr_is_not_a_terminal() {
    let data = tempfile::tempdir().unwrap();
    let mut child = Command::new(DEVPOP)
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(data.path())
        .env("DEVPOP_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    assert!(line.starts_with("devpop serving on "), "{line}");
    // A graceful stop: every log line is written by the time the process has exited.
    let term = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(term.success());
    child.wait().unwrap();
    let mut log = String::new();
    child.stderr.take().unwrap().read_to_string(&mut log).unwrap();
    assert!(log.contains("serving"), "{log}");
    assert!(!log.contains('\x1b'), "colour codes in a piped log: {log:?}");
}
