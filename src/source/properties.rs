//! A reader for Java `.properties` files, the format of ESH's filesystem firmware
//! provider: `key = value`, `key: value` or `key value`; `#`/`!` comments; a trailing
//! backslash continues the line; `\t \n \r \f \\ \uXXXX` escapes.

use std::collections::BTreeMap;

/// One property and the (1-based) line it starts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Property {
    pub value: String,
    pub line: usize,
}

/// Parses `text`; a later duplicate key replaces an earlier one, as in Java.
pub fn parse(text: &str) -> BTreeMap<String, Property> {
    let mut out = BTreeMap::new();
    let mut lines = text.lines().enumerate();
    while let Some((idx, raw)) = lines.next() {
        let trimmed = raw.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with('!') {
            continue;
        }
        let mut logical = String::from(trimmed);
        while ends_with_continuation(&logical) {
            logical.pop();
            match lines.next() {
                Some((_, next)) => logical.push_str(next.trim_start()),
                None => break,
            }
        }
        let (key, value) = split_key_value(&logical);
        out.insert(
            unescape(&key),
            Property {
                value: unescape(&value),
                line: idx + 1,
            },
        );
    }
    out
}

/// An odd number of trailing backslashes continues the line.
fn ends_with_continuation(s: &str) -> bool {
    s.chars().rev().take_while(|c| *c == '\\').count() % 2 == 1
}

fn split_key_value(line: &str) -> (String, String) {
    let mut key = String::new();
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                key.push(c);
                if let Some(n) = chars.next() {
                    key.push(n);
                }
            }
            '=' | ':' => break,
            c if c.is_whitespace() => {
                // Whitespace ends the key; one following `=`/`:` is still a separator.
                while chars.peek().is_some_and(|c| c.is_whitespace()) {
                    chars.next();
                }
                if chars.peek().is_some_and(|c| *c == '=' || *c == ':') {
                    chars.next();
                }
                break;
            }
            c => key.push(c),
        }
    }
    let rest: String = chars.collect();
    (key, rest.trim_start().to_string())
}

fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('t') => out.push('\t'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('f') => out.push('\u{c}'),
            Some('u') => {
                let hex: String = chars.by_ref().take(4).collect();
                match u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32) {
                    Some(ch) if hex.len() == 4 => out.push(ch),
                    _ => {
                        out.push_str("\\u");
                        out.push_str(&hex);
                    }
                }
            }
            Some(other) => out.push(other),
            None => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(map: &BTreeMap<String, Property>, k: &str) -> (String, usize) {
        let p = &map[k];
        (p.value.clone(), p.line)
    }

    #[test]
    fn reads_the_forms_java_accepts() {
        let text = "# comment\n! also\n\nversion = V1.2-b18\nimage:img.bin\nmodel Model A\n\
                    description = a \\\n    long one\nkey\\ with\\ space = x\nuni = caf\\u00e9\nempty=\n";
        let m = parse(text);
        assert_eq!(get(&m, "version"), ("V1.2-b18".into(), 4));
        assert_eq!(get(&m, "image"), ("img.bin".into(), 5));
        assert_eq!(get(&m, "model"), ("Model A".into(), 6));
        assert_eq!(get(&m, "description"), ("a long one".into(), 7));
        assert_eq!(get(&m, "key with space"), ("x".into(), 9));
        assert_eq!(get(&m, "uni"), ("café".into(), 10));
        assert_eq!(get(&m, "empty"), ("".into(), 11));
    }

    #[test]
    fn garbage_never_panics() {
        for text in [
            "\\",
            "\\u12",
            "=",
            ":::",
            "\\\\\\",
            "a\\u\u{1F600}zz",
            "\u{0}=\u{0}",
        ] {
            let _ = parse(text);
        }
    }
}
