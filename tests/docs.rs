//! The docs name the tests that execute their claims; those tests must exist.

use std::path::Path;

/// Every `file::test` a doc cites (a test file's or a module's name, then the test's), checked
/// against the sources: a renamed or removed test makes its claim unbacked.
#[test]
fn every_test_the_security_doc_cites_exists() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let doc = std::fs::read_to_string(root.join("docs/security.md")).unwrap();
    let mut sources = String::new();
    for dir in ["src", "tests"] {
        collect(&root.join(dir), &mut sources);
    }
    let mut cited = 0;
    for quoted in doc.split('`').skip(1).step_by(2) {
        let parts: Vec<&str> = quoted.split("::").collect();
        let plain =
            |p: &&str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if parts.len() < 2 || !parts.iter().all(plain) {
            continue;
        }
        let test = parts.last().unwrap();
        assert!(sources.contains(&format!("fn {test}(")), "docs/security.md cites `{quoted}`, which no test defines");
        cited += 1;
    }
    assert!(cited > 30, "the doc cites its tests ({cited} found)");
}

fn collect(dir: &Path, out: &mut String) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            collect(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push_str(&std::fs::read_to_string(&p).unwrap());
        }
    }
}
