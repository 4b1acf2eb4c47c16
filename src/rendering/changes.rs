//! What changed inside an object: a unified diff of its YAML, shortened for a push's output.
//!
//! A ConfigMap's files are block scalars in the YAML, so a changed line of an nginx config shows
//! as that line with its neighbours and the key it sits under, not as a whole new object.

use similar::TextDiff;

/// Lines of a diff shown per object; the rest are counted.
pub const MAX_LINES: usize = 60;

/// The unified diff of `before` to `after` (3 lines of context), at most [`MAX_LINES`] lines.
pub fn unified(before: &str, after: &str) -> Vec<String> {
    let diff = TextDiff::from_lines(before, after);
    let text = diff.unified_diff().context_radius(3).to_string();
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    if lines.len() > MAX_LINES {
        let more = lines.len() - MAX_LINES;
        lines.truncate(MAX_LINES);
        lines.push(format!("... ({more} more lines of diff)"));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shows_the_changed_line_with_its_context() {
        let before = "data:\n  egress.conf: |\n    a\n    b\n    proxy_pass https://old.example.com;\n    c\n";
        let after = before.replace("old.example.com", "new.example.com");
        let lines = unified(before, &after);
        assert!(lines.contains(&"-    proxy_pass https://old.example.com;".to_owned()), "{lines:?}");
        assert!(lines.contains(&"+    proxy_pass https://new.example.com;".to_owned()), "{lines:?}");
        assert!(lines.iter().any(|l| l.starts_with("@@")), "{lines:?}");
        let long: String = (0..500).map(|i| format!("{i}\n")).collect();
        assert_eq!(unified("", &long).len(), MAX_LINES + 1);
    }
}
