//! section.config.json as pushed: any bytes. The parser and every rule must return
//! diagnostics, never panic, and stay within their bounds (depth, size).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (config, diagnostics) = devpop::validation::config::parse(data);
    // Every diagnostic prints (file:line:col: ...) without panicking.
    for d in &diagnostics {
        let _ = d.to_string();
    }
    if config.is_none() {
        assert!(!diagnostics.is_empty(), "no model and no diagnostic");
    }
});
