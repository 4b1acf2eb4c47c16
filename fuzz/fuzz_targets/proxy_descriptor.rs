//! A package's `.section-proxy.yaml`: any text. Parsing and the package rules must answer
//! (a descriptor or problems), never panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Err(problems) = devpop::packages::descriptor::parse(text) {
            assert!(!problems.is_empty());
        }
    }
});
