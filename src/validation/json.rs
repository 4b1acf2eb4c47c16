//! A strict JSON (RFC 8259) parser that keeps the line and column of every value and key.
//!
//! serde_json stops at the first error and forgets positions once parsing succeeds; devpop
//! must point at *every* problem in `section.config.json` with its position, so it parses into
//! a small spanned tree first and checks rules on that. Pushed content is hostile: nesting
//! depth is bounded, and the caller bounds the input size.

use std::fmt;

/// A 1-based line and column (columns count characters, not bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Pos {
    pub line: u32,
    pub col: u32,
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.col)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    /// The number as written; see [`Node::as_u64`].
    Number(String),
    String(String),
    Array(Vec<Node>),
    /// Members in document order (duplicates kept, so rules can flag them).
    Object(Vec<Member>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub pos: Pos,
    pub value: Value,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    pub key: String,
    pub key_pos: Pos,
    pub value: Node,
}

impl Node {
    pub fn kind(&self) -> &'static str {
        match self.value {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Number(_) => "a number",
            Value::String(_) => "a string",
            Value::Array(_) => "an array",
            Value::Object(_) => "an object",
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self.value {
            Value::Bool(b) => Some(b),
            _ => None,
        }
    }

    /// A non-negative integer written without fraction or exponent.
    pub fn as_u64(&self) -> Option<u64> {
        match &self.value {
            Value::Number(n) => n.parse().ok(),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[Node]> {
        match &self.value {
            Value::Array(items) => Some(items),
            _ => None,
        }
    }

    pub fn as_object(&self) -> Option<&[Member]> {
        match &self.value {
            Value::Object(members) => Some(members),
            _ => None,
        }
    }
}

/// Why a text is not JSON, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{pos}: {message}")]
pub struct SyntaxError {
    pub pos: Pos,
    pub message: String,
}

/// Deep enough for any real config; shallow enough that hostile nesting cannot exhaust the stack.
pub const MAX_DEPTH: usize = 64;

pub fn parse(text: &str) -> Result<Node, SyntaxError> {
    let mut p = Parser { src: text.as_bytes(), at: 0, line: 1, col: 1 };
    // A UTF-8 byte order mark is tolerated, as editors on some systems write one.
    if p.src.starts_with(b"\xEF\xBB\xBF") {
        p.at = 3;
    }
    p.skip_ws();
    let node = p.value(0)?;
    p.skip_ws();
    if p.at < p.src.len() {
        return Err(p.error("unexpected text after the end of the JSON document"));
    }
    Ok(node)
}

struct Parser<'a> {
    src: &'a [u8],
    at: usize,
    line: u32,
    col: u32,
}

impl Parser<'_> {
    fn pos(&self) -> Pos {
        Pos { line: self.line, col: self.col }
    }

    fn error(&self, message: impl Into<String>) -> SyntaxError {
        SyntaxError { pos: self.pos(), message: message.into() }
    }

    fn peek(&self) -> Option<u8> {
        self.src.get(self.at).copied()
    }

    fn bump(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.at += 1;
        if b == b'\n' {
            self.line += 1;
            self.col = 1;
        } else if b & 0xC0 != 0x80 {
            // Count characters: UTF-8 continuation bytes do not start a new column.
            self.col += 1;
        }
        Some(b)
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.bump();
        }
    }

    fn describe_next(&self) -> String {
        match self.peek() {
            None => "the end of the file".to_owned(),
            Some(b) if b.is_ascii_graphic() => format!("'{}'", b as char),
            Some(b) => format!("byte 0x{b:02x}"),
        }
    }

    fn expect_literal(&mut self, word: &str) -> Result<(), SyntaxError> {
        for &w in word.as_bytes() {
            if self.peek() != Some(w) {
                return Err(self.error(format!("expected a JSON value, found {}", self.describe_next())));
            }
            self.bump();
        }
        Ok(())
    }

    fn value(&mut self, depth: usize) -> Result<Node, SyntaxError> {
        if depth >= MAX_DEPTH {
            return Err(self.error(format!("nested deeper than {MAX_DEPTH} levels")));
        }
        let pos = self.pos();
        let value = match self.peek() {
            Some(b'{') => self.object(depth)?,
            Some(b'[') => self.array(depth)?,
            Some(b'"') => Value::String(self.string()?),
            Some(b't') => {
                self.expect_literal("true")?;
                Value::Bool(true)
            }
            Some(b'f') => {
                self.expect_literal("false")?;
                Value::Bool(false)
            }
            Some(b'n') => {
                self.expect_literal("null")?;
                Value::Null
            }
            Some(b'-' | b'0'..=b'9') => Value::Number(self.number()?),
            _ => return Err(self.error(format!("expected a JSON value, found {}", self.describe_next()))),
        };
        Ok(Node { pos, value })
    }

    fn object(&mut self, depth: usize) -> Result<Value, SyntaxError> {
        self.bump(); // {
        let mut members = Vec::new();
        self.skip_ws();
        if self.peek() == Some(b'}') {
            self.bump();
            return Ok(Value::Object(members));
        }
        loop {
            self.skip_ws();
            if self.peek() != Some(b'"') {
                let hint = if self.peek() == Some(b'}') { " (remove the trailing comma)" } else { "" };
                return Err(self
                    .error(format!("expected a member name in double quotes, found {}{hint}", self.describe_next())));
            }
            let key_pos = self.pos();
            let key = self.string()?;
            self.skip_ws();
            if self.peek() != Some(b':') {
                return Err(self.error(format!("expected ':' after \"{key}\", found {}", self.describe_next())));
            }
            self.bump();
            self.skip_ws();
            let value = self.value(depth + 1)?;
            members.push(Member { key, key_pos, value });
            self.skip_ws();
            match self.peek() {
                Some(b',') => {
                    self.bump();
                }
                Some(b'}') => {
                    self.bump();
                    return Ok(Value::Object(members));
                }
                _ => {
                    return Err(self
                        .error(format!("expected ',' or '}}' after an object member, found {}", self.describe_next())))
                }
            }
        }
    }

    fn array(&mut self, depth: usize) -> Result<Value, SyntaxError> {
        self.bump(); // [
        let mut items = Vec::new();
        self.skip_ws();
        if self.peek() == Some(b']') {
            self.bump();
            return Ok(Value::Array(items));
        }
        loop {
            self.skip_ws();
            if self.peek() == Some(b']') {
                return Err(self.error("expected a JSON value, found ']' (remove the trailing comma)"));
            }
            items.push(self.value(depth + 1)?);
            self.skip_ws();
            match self.peek() {
                Some(b',') => {
                    self.bump();
                }
                Some(b']') => {
                    self.bump();
                    return Ok(Value::Array(items));
                }
                _ => {
                    return Err(self
                        .error(format!("expected ',' or ']' after an array element, found {}", self.describe_next())))
                }
            }
        }
    }

    fn hex4(&mut self) -> Result<u32, SyntaxError> {
        let mut v = 0;
        for _ in 0..4 {
            let d = self
                .peek()
                .and_then(|b| (b as char).to_digit(16))
                .ok_or_else(|| self.error("expected 4 hex digits after \\u"))?;
            self.bump();
            v = v * 16 + d;
        }
        Ok(v)
    }

    fn string(&mut self) -> Result<String, SyntaxError> {
        let start = self.pos();
        self.bump(); // "
        let mut out = Vec::new();
        loop {
            match self.peek() {
                None => {
                    return Err(SyntaxError {
                        pos: start,
                        message: "string is not closed: add the closing '\"'".to_owned(),
                    })
                }
                Some(b'"') => {
                    self.bump();
                    break;
                }
                Some(b'\\') => {
                    self.bump();
                    let c = match self.bump() {
                        Some(b'"') => '"',
                        Some(b'\\') => '\\',
                        Some(b'/') => '/',
                        Some(b'b') => '\u{8}',
                        Some(b'f') => '\u{c}',
                        Some(b'n') => '\n',
                        Some(b'r') => '\r',
                        Some(b't') => '\t',
                        Some(b'u') => {
                            let hi = self.hex4()?;
                            let code = if (0xD800..0xDC00).contains(&hi) {
                                if self.bump() != Some(b'\\') || self.bump() != Some(b'u') {
                                    return Err(self.error("a \\u surrogate must come in a pair"));
                                }
                                let lo = self.hex4()?;
                                if !(0xDC00..0xE000).contains(&lo) {
                                    return Err(self.error("invalid low surrogate in \\u escape"));
                                }
                                0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
                            } else {
                                hi
                            };
                            char::from_u32(code).ok_or_else(|| self.error("invalid \\u escape"))?
                        }
                        _ => return Err(self.error("invalid escape in string")),
                    };
                    let mut buf = [0; 4];
                    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                }
                Some(b) if b < 0x20 => return Err(self.error("control character in string: escape it (e.g. \\n)")),
                Some(b) => {
                    self.bump();
                    out.push(b);
                }
            }
        }
        // The input is a &str, so the bytes between quotes are valid UTF-8.
        String::from_utf8(out).map_err(|_| SyntaxError { pos: start, message: "invalid UTF-8".into() })
    }

    fn number(&mut self) -> Result<String, SyntaxError> {
        let start = self.at;
        if self.peek() == Some(b'-') {
            self.bump();
        }
        match self.peek() {
            Some(b'0') => {
                self.bump();
            }
            Some(b'1'..=b'9') => {
                while matches!(self.peek(), Some(b'0'..=b'9')) {
                    self.bump();
                }
            }
            _ => return Err(self.error("expected a digit")),
        }
        if self.peek() == Some(b'.') {
            self.bump();
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return Err(self.error("expected a digit after '.'"));
            }
            while matches!(self.peek(), Some(b'0'..=b'9')) {
                self.bump();
            }
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.bump();
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.bump();
            }
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return Err(self.error("expected a digit in the exponent"));
            }
            while matches!(self.peek(), Some(b'0'..=b'9')) {
                self.bump();
            }
        }
        Ok(String::from_utf8_lossy(&self.src[start..self.at]).into_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> SyntaxError {
        parse(text).unwrap_err()
    }

    #[test]
    fn keeps_positions_of_values_and_keys() {
        let doc = parse("{\n  \"a\": [1, \"x\"],\n  \"é\": true\n}").unwrap();
        let members = doc.as_object().unwrap();
        assert_eq!(members[0].key_pos, Pos { line: 2, col: 3 });
        assert_eq!(members[0].value.pos, Pos { line: 2, col: 8 });
        assert_eq!(members[0].value.as_array().unwrap()[1].pos, Pos { line: 2, col: 12 });
        assert_eq!(members[1].key, "é");
        assert_eq!(members[1].value.pos, Pos { line: 3, col: 8 }, "columns count characters");
    }

    #[test]
    fn trailing_comma_is_an_error_with_its_position_and_fix() {
        let e = err("{\n  \"proxychain\": [\n    { \"name\": \"cache\" },\n  ]\n");
        assert_eq!(e.pos, Pos { line: 4, col: 3 });
        assert!(e.message.contains("trailing comma"), "{}", e.message);
    }

    #[test]
    fn unterminated_document_points_at_the_end() {
        let e = err("{\n  \"a\": [1]\n");
        assert_eq!(e.pos, Pos { line: 3, col: 1 });
        assert!(e.message.contains("end of the file"), "{}", e.message);
    }

    #[test]
    fn rejects_what_json_does_not_allow() {
        for bad in [
            "",
            "{'a': 1}",
            "[01]",
            "[1.]",
            "[.5]",
            "{\"a\" 1}",
            "[true false]",
            "\"a\nb\"",
            "[1] x",
            "nul",
            "// c\n{}",
            "[\"\\x\"]",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn decodes_escapes_and_surrogate_pairs() {
        let doc = parse(r#"["a\"b\\\/\n\u00e9\ud83d\ude00"]"#).unwrap();
        assert_eq!(doc.as_array().unwrap()[0].as_str(), Some("a\"b\\/\né😀"));
        assert!(parse(r#"["\ud83d"]"#).is_err());
    }

    #[test]
    fn deep_nesting_is_refused_not_a_stack_overflow() {
        let deep = "[".repeat(100_000) + &"]".repeat(100_000);
        let e = err(&deep);
        assert!(e.message.contains("nested deeper"), "{}", e.message);
        let ok = "[".repeat(MAX_DEPTH - 1) + &"]".repeat(MAX_DEPTH - 1);
        assert!(parse(&ok).is_ok());
    }

    #[test]
    fn numbers_keep_their_text() {
        let doc = parse("[0, -1.5e3, 8080]").unwrap();
        let items = doc.as_array().unwrap();
        assert_eq!(items[2].as_u64(), Some(8080));
        assert_eq!(items[1].as_u64(), None);
        assert_eq!(items[1].value, Value::Number("-1.5e3".into()));
    }
}
