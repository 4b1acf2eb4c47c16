//! The hook channel's request, as the pre-receive shim frames it: any bytes. The parser must
//! answer Incomplete, a request or an error, never panic; and a prefix of a complete request
//! is never taken for a whole one.
#![no_main]
use devpop::hook::channel::{parse_request, Parsed};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(Parsed::Done(request)) = parse_request(data) {
        for cut in 0..data.len() {
            assert!(
                !matches!(parse_request(&data[..cut]), Ok(Parsed::Done(_))),
                "a prefix of a request parsed as a whole one"
            );
        }
        // No accepted option carries a control character.
        let o = &request.options;
        for option in o.unknown.iter() {
            assert!(!option.chars().any(char::is_control));
        }
    }
});
