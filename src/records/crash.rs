//! Test-only crash points: with `DEVPOP_TEST_CRASH_AT=<point>` in its environment, the server
//! kills itself with SIGKILL when it reaches that point (no unwinding, no destructors, no
//! flushing: as if the machine's OOM killer or an operator's `kill -9` struck there). The fault
//! injection tests (tests/crash.rs) use it to stop the server at a known step of a push or a
//! deployment. Never set it in production.
//!
//! Points: `before-reserve` (a push passed its checks, nothing recorded), `before-ref-move`
//! (its deployment recorded, git has not moved the branch), `after-ref-move` (git moved the
//! branch, the deployment not yet marked landed nor queued), `mid-apply` (a deployment is
//! `applying`, the target not called), `mid-rollout` (`progressing`, before the rollout ends).

use std::sync::OnceLock;

/// Dies here (SIGKILL) when `DEVPOP_TEST_CRASH_AT` names `point`.
pub fn point(point: &str) {
    static AT: OnceLock<Option<String>> = OnceLock::new();
    let at = AT.get_or_init(|| std::env::var("DEVPOP_TEST_CRASH_AT").ok().filter(|s| !s.is_empty()));
    if at.as_deref() == Some(point) {
        tracing::warn!(point, "DEVPOP_TEST_CRASH_AT: killing the server here (test only)");
        let killed = rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::KILL);
        unreachable!("SIGKILL of our own pid returned: {killed:?}");
    }
}
