//! The head of a receive-pack request (ref update commands and push options before the pack),
//! as any client may send it. The parser must answer, never panic, and agree with itself on
//! prefixes: a prefix of a complete head is never a complete head.
#![no_main]
use devpop::transport::request_head::{parse, Parse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Parse::Done(head, used) = parse(data) {
        assert!(used <= data.len());
        for cut in 0..used {
            assert!(!matches!(parse(&data[..cut]), Parse::Done(..)), "a prefix parsed as a whole head");
        }
        assert!(head.commands.iter().all(|c| !c.refname.is_empty()));
    }
});
