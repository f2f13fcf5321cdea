//! `${VAR}` substitution in config text, before TOML parsing.

/// Replaces `${NAME}` with the variable's value and `${NAME:-default}` with
/// the value or the default; `$${` stands for a literal `${`. An unset
/// variable without a default is an error naming it and its line, so a
/// missing secret fails loudly at start instead of becoming an empty string.
pub fn interpolate_env(
    text: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(tail) = after.strip_prefix("${") {
            out.push_str("${");
            rest = tail;
        } else if let Some(body) = after.strip_prefix('{') {
            let end = body.find('}').ok_or_else(|| {
                format!("line {}: unclosed ${{", line_of(text, rest, pos))
            })?;
            let expr = &body[..end];
            let (name, default) = match expr.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (expr, None),
            };
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!(
                    "line {}: ${{{expr}}} is not a valid variable reference",
                    line_of(text, rest, pos)
                ));
            }
            match (lookup(name), default) {
                (Some(v), _) => out.push_str(&v),
                (None, Some(d)) => out.push_str(d),
                (None, None) => {
                    return Err(format!(
                        "line {}: environment variable {name} is not set (use ${{{name}:-default}} for a fallback)",
                        line_of(text, rest, pos)
                    ))
                }
            }
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

fn line_of(text: &str, rest: &str, pos: usize) -> usize {
    let offset = text.len() - rest.len() + pos;
    text[..offset].matches('\n').count() + 1
}
