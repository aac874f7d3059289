//! `META-INF/MANIFEST.MF` text in the format the JDK writes and reads.

/// Renders a main manifest section: `Manifest-Version: 1.0` first, then `attributes` in the
/// given order, each line at most 72 bytes with continuation lines starting with one space,
/// CRLF line ends and the blank line that ends the section, as the JAR specification asks.
pub fn manifest_text(attributes: &[(String, String)]) -> String {
    let mut out = String::new();
    let version = ("Manifest-Version".to_string(), "1.0".to_string());
    let already_versioned = attributes
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("Manifest-Version"));
    let all = (!already_versioned)
        .then_some(&version)
        .into_iter()
        .chain(attributes.iter());
    for (key, value) in all {
        push_wrapped(&mut out, &format!("{key}: {value}"));
    }
    out.push_str("\r\n");
    out
}

/// Appends `line` split into 72-byte pieces (never inside a UTF-8 character).
fn push_wrapped(out: &mut String, line: &str) {
    let mut rest = line;
    let mut first = true;
    while !rest.is_empty() {
        // Continuation lines spend one of their 72 bytes on the leading space.
        let budget = if first { 72 } else { 71 };
        let mut cut = rest.len().min(budget);
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        if !first {
            out.push(' ');
        }
        out.push_str(&rest[..cut]);
        out.push_str("\r\n");
        rest = &rest[cut..];
        first = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn short_attributes_are_one_line_each_after_the_version() {
        let text = manifest_text(&attrs(&[
            ("Ark-Biz-Name", "demo"),
            ("Ark-Biz-Version", "1.0.0"),
        ]));
        assert_eq!(
            text,
            "Manifest-Version: 1.0\r\nArk-Biz-Name: demo\r\nArk-Biz-Version: 1.0.0\r\n\r\n"
        );
    }

    #[test]
    fn an_explicit_version_is_not_duplicated() {
        let text = manifest_text(&attrs(&[("Manifest-Version", "1.0"), ("A", "b")]));
        assert_eq!(text, "Manifest-Version: 1.0\r\nA: b\r\n\r\n");
    }

    #[test]
    fn long_lines_wrap_at_72_bytes_with_a_leading_space() {
        let value = "x".repeat(150);
        let text = manifest_text(&attrs(&[("Long", &value)]));
        let lines: Vec<&str> = text.split("\r\n").collect();
        assert_eq!(lines[1].len(), 72);
        assert!(lines[2].starts_with(' ') && lines[2].len() == 72);
        assert!(lines[3].starts_with(' '));
        let joined: String = lines[1..4]
            .iter()
            .map(|l| l.trim_start_matches(' '))
            .collect();
        assert_eq!(joined, format!("Long: {value}"));
        assert!(lines.iter().all(|l| l.len() <= 72));
    }

    #[test]
    fn wrapping_never_splits_a_character() {
        let value = "é".repeat(60);
        let text = manifest_text(&attrs(&[("K", &value)]));
        assert!(text.split("\r\n").all(|l| l.len() <= 72));
        let joined: String = text
            .split("\r\n")
            .skip(1)
            .map(|l| l.strip_prefix(' ').unwrap_or(l))
            .collect();
        assert_eq!(joined, format!("K: {value}"));
    }
}
