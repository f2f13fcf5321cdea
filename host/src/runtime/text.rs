//! Text a plugin hands the host (error reasons, log lines, its name), made
//! safe once at the boundary: control characters are escaped so a line
//! cannot be forged in the host's log, and the result is cut to
//! [`MAX_PLUGIN_TEXT`] bytes so one huge string cannot be multiplied into
//! every dead letter, log line and status page.

use std::fmt;

/// Longest plugin-provided string the host keeps, in bytes (after
/// escaping, before the cut marker).
pub const MAX_PLUGIN_TEXT: usize = 4096;

/// A plugin-provided string, escaped and cut to [`MAX_PLUGIN_TEXT`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PluginText(String);

impl PluginText {
    /// Escapes control characters (`\n` → `\\n`, others as `\u{..}`) and
    /// cuts the result to [`MAX_PLUGIN_TEXT`] bytes, noting how much was cut.
    pub fn new(s: &str) -> PluginText {
        Self::with_max(s, MAX_PLUGIN_TEXT)
    }

    fn with_max(s: &str, max: usize) -> PluginText {
        let mut out = String::with_capacity(s.len().min(max) + 32);
        let mut taken = 0;
        for c in s.chars() {
            let before = out.len();
            match c {
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                c if c.is_control() => out.extend(c.escape_unicode()),
                c => out.push(c),
            }
            if out.len() > max {
                out.truncate(before);
                break;
            }
            taken += c.len_utf8();
        }
        if taken < s.len() {
            out.push_str(&format!("… [{} bytes cut]", s.len() - taken));
        }
        PluginText(out)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

/// Makes a plugin's string safe in place: the form the host's own types
/// carry it in (`String`) stays, its content is a [`PluginText`].
pub fn clean(s: &mut String) {
    if s.len() <= MAX_PLUGIN_TEXT && !s.chars().any(char::is_control) {
        return;
    }
    *s = PluginText::new(s).into_string();
}

impl fmt::Display for PluginText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<PluginText> for String {
    fn from(t: PluginText) -> String {
        t.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped() {
        let t = PluginText::new("ok\n2026-01-01T00:00:00Z ERROR forged\r\x1b[31m");
        assert_eq!(
            t.as_str(),
            "ok\\n2026-01-01T00:00:00Z ERROR forged\\r\\u{1b}[31m"
        );
        assert!(!t.as_str().chars().any(char::is_control));
    }

    #[test]
    fn long_text_is_cut_at_a_char_boundary_with_a_note() {
        let s = "é".repeat(10_000);
        let t = PluginText::new(&s);
        let body = t.as_str().split('…').next().unwrap();
        assert!(body.len() <= MAX_PLUGIN_TEXT);
        assert!(t.as_str().len() < MAX_PLUGIN_TEXT + 40);
        assert!(t
            .as_str()
            .ends_with(&format!("[{} bytes cut]", s.len() - body.len())));
        // Escapes count towards the cap too.
        let t = PluginText::with_max(&"\n".repeat(100), 10);
        assert_eq!(t.as_str(), "\\n\\n\\n\\n\\n… [95 bytes cut]");
    }

    #[test]
    fn clean_leaves_short_plain_text_alone() {
        let mut s = "fine".to_string();
        clean(&mut s);
        assert_eq!(s, "fine");
        let mut s = "a\nb".to_string();
        clean(&mut s);
        assert_eq!(s, "a\\nb");
    }
}
