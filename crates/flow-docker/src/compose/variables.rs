//! Variables: interpolation (`${VAR}` and its forms) and `.env` / `env_file` files, both as
//! the Compose specification describes them (12-interpolation.md, 05-services.md "Env_file
//! format").

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use super::ComposeError;

/// Where a variable's value comes from while interpolating.
pub(super) trait Lookup {
    /// The value of `name`, `None` when unset.
    fn lookup(&self, name: &str) -> Option<String>;
}

impl Lookup for HashMap<String, String> {
    fn lookup(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }
}

/// The process environment first, then the entries already read from the same file (a
/// `.env` line may refer to an earlier line).
struct FileScope<'a> {
    outer: &'a dyn Lookup,
    earlier: &'a HashMap<String, String>,
}

impl Lookup for FileScope<'_> {
    fn lookup(&self, name: &str) -> Option<String> {
        self.outer
            .lookup(name)
            .or_else(|| self.earlier.get(name).cloned())
    }
}

/// Expands `$VAR`, `${VAR}`, `${VAR:-default}`, `${VAR-default}`, `${VAR:?message}`,
/// `${VAR?message}`, `${VAR:+alternative}`, `${VAR+alternative}` (defaults, messages and
/// alternatives nested to any depth) and `$$` in `text`.
pub fn interpolate(
    text: &str,
    variables: &HashMap<String, String>,
) -> Result<String, ComposeError> {
    let mut unset = BTreeSet::new();
    expand(text, variables, &mut unset).map_err(|message| ComposeError::Interpolation {
        location: String::new(),
        message,
    })
}

/// [`interpolate`] on any [`Lookup`], collecting the names substituted because unset (each is a
/// warning, as in Compose). The error is the message alone; the caller names the place.
pub(super) fn expand(
    text: &str,
    variables: &dyn Lookup,
    unset: &mut BTreeSet<String>,
) -> Result<String, String> {
    if !text.contains('$') {
        return Ok(text.to_string());
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(position) = rest.find('$') {
        out.push_str(&rest[..position]);
        let after = &rest[position + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('{') {
            let end = closing_brace(body).ok_or_else(|| {
                format!(
                    "unterminated ${{ in {text:?}; close it with }} or write $$ for a literal $"
                )
            })?;
            out.push_str(&expand_braced(&body[..end], variables, unset)?);
            rest = &body[end + 1..];
        } else {
            let name_len = name_length(after);
            if name_len == 0 {
                // Not a variable (`$1`, `$ `, a trailing `$`): kept as written.
                out.push('$');
            } else {
                let name = &after[..name_len];
                match variables.lookup(name) {
                    Some(value) => out.push_str(&value),
                    None => {
                        unset.insert(name.to_string());
                    }
                }
            }
            rest = &after[name_len..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// The length of the variable name at the start of `text`: `[_a-zA-Z][_a-zA-Z0-9]*`.
fn name_length(text: &str) -> usize {
    let mut chars = text.char_indices();
    match chars.next() {
        Some((_, c)) if c.is_ascii_alphabetic() || c == '_' => {}
        _ => return 0,
    }
    chars
        .find(|(_, c)| !(c.is_ascii_alphanumeric() || *c == '_'))
        .map_or(text.len(), |(index, _)| index)
}

/// The index of the `}` closing a `${` whose body starts `body`, skipping nested `${…}`.
fn closing_brace(body: &str) -> Option<usize> {
    let bytes = body.as_bytes();
    let mut depth = 0usize;
    let mut index = 0;
    while index < bytes.len() {
        match bytes[index] {
            b'$' if bytes.get(index + 1) == Some(&b'$') => index += 1,
            b'$' if bytes.get(index + 1) == Some(&b'{') => {
                depth += 1;
                index += 1;
            }
            b'}' if depth == 0 => return Some(index),
            b'}' => depth -= 1,
            _ => {}
        }
        index += 1;
    }
    None
}

fn expand_braced(
    expression: &str,
    variables: &dyn Lookup,
    unset: &mut BTreeSet<String>,
) -> Result<String, String> {
    let name_len = name_length(expression);
    let (name, operator) = expression.split_at(name_len);
    if name.is_empty() {
        return Err(format!("${{{expression}}} has no variable name"));
    }
    let value = variables.lookup(name);
    let set_and_non_empty = value.as_deref().is_some_and(|v| !v.is_empty());
    let is_set = value.is_some();
    // The operand (a default, message or alternative) is interpolated only when used.
    let mut operand = |text: &str| expand(text, variables, unset);
    let (colon, operator) = match operator.strip_prefix(':') {
        Some(rest) => (true, rest),
        None => (false, operator),
    };
    let present = if colon { set_and_non_empty } else { is_set };
    let Some(kind) = operator.chars().next() else {
        if colon {
            return Err(format!("${{{expression}}} is not supported; use ${{VAR}}, ${{VAR:-default}}, ${{VAR:?message}} or ${{VAR:+alternative}}"));
        }
        return Ok(match value {
            Some(value) => value,
            None => {
                unset.insert(name.to_string());
                String::new()
            }
        });
    };
    let argument = &operator[kind.len_utf8()..];
    match kind {
        '-' if present => Ok(value.unwrap_or_default()),
        '-' => operand(argument),
        '?' if present => Ok(value.unwrap_or_default()),
        '?' => {
            let message = operand(argument)?;
            let condition = if colon { "unset or empty" } else { "unset" };
            Err(if message.is_empty() {
                format!("required variable {name} is {condition}")
            } else {
                format!("required variable {name} is {condition}: {message}")
            })
        }
        '+' if present => operand(argument),
        '+' => Ok(String::new()),
        _ => Err(format!(
            "${{{expression}}} is not supported; use ${{VAR}}, ${{VAR:-default}}, ${{VAR:?message}} or ${{VAR:+alternative}}"
        )),
    }
}

/// How an `env_file` is read (`format:`): Compose's rules, or every value verbatim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum EnvFormat {
    /// Quotes, escapes, comments and interpolation as the specification lists them.
    Compose,
    /// `KEY=VALUE` with the value taken as written (`format: raw`).
    Raw,
}

/// Reads an env file's `text` (the file is `path`, for messages). A line `VAR` without `=`
/// yields `None` (the variable is unset). Unquoted and double-quoted values are interpolated
/// from `outer`, then from the lines above.
pub(super) fn parse_env_text(
    text: &str,
    path: &Path,
    format: EnvFormat,
    outer: &dyn Lookup,
    unset: &mut BTreeSet<String>,
) -> Result<Vec<(String, Option<String>)>, ComposeError> {
    let mut entries = Vec::new();
    let mut earlier: HashMap<String, String> = HashMap::new();
    let mut rest = text;
    let mut line_number = 0usize;
    while !rest.is_empty() {
        line_number += 1;
        let (line, tail) = rest.split_once('\n').unwrap_or((rest, ""));
        rest = tail;
        let trimmed = line.trim_start();
        if trimmed.trim().is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let declaration = trimmed.strip_prefix("export ").unwrap_or(trimmed);
        let start_line = line_number;
        let invalid = |message: String| ComposeError::EnvFile {
            path: path.to_path_buf(),
            line: start_line,
            message,
        };
        let Some((key, value)) = declaration.split_once('=') else {
            let key = declaration.trim();
            check_key(key).map_err(invalid)?;
            entries.push((key.to_string(), None));
            continue;
        };
        let key = key.trim();
        check_key(key).map_err(invalid)?;
        if format == EnvFormat::Raw {
            let value = value.strip_suffix('\r').unwrap_or(value);
            earlier.insert(key.to_string(), value.to_string());
            entries.push((key.to_string(), Some(value.to_string())));
            continue;
        }
        let value = value.trim_start_matches([' ', '\t']);
        let scope = FileScope {
            outer,
            earlier: &earlier,
        };
        let resolved = match value.chars().next() {
            Some(quote @ ('"' | '\'')) => {
                // A quoted value may run over several lines: take lines until the closing quote.
                let mut quoted = value[1..].to_string();
                let closing = loop {
                    if let Some(end) = unescaped_quote(&quoted, quote) {
                        break end;
                    }
                    if rest.is_empty() {
                        return Err(invalid(format!(
                            "the value of {key} opens a {quote} quote that is never closed"
                        )));
                    }
                    let (next, tail) = rest.split_once('\n').unwrap_or((rest, ""));
                    rest = tail;
                    line_number += 1;
                    quoted.push('\n');
                    quoted.push_str(next);
                };
                let inner = &quoted[..closing];
                if quote == '"' {
                    expand(&unescape_double(inner), &scope, unset)
                        .map_err(|m| invalid(format!("{key}: {m}")))?
                } else {
                    inner.replace("\\'", "'")
                }
            }
            _ => {
                let without_comment = match value.find(" #").or_else(|| value.find("\t#")) {
                    Some(start) => &value[..start],
                    None => value,
                };
                expand(without_comment.trim_end(), &scope, unset)
                    .map_err(|m| invalid(format!("{key}: {m}")))?
            }
        };
        earlier.insert(key.to_string(), resolved.clone());
        entries.push((key.to_string(), Some(resolved)));
    }
    Ok(entries)
}

fn check_key(key: &str) -> Result<(), String> {
    if key.is_empty() || key.contains(char::is_whitespace) {
        return Err(format!(
            "{key:?} is not a variable name; write each line as VAR=VALUE"
        ));
    }
    Ok(())
}

/// The byte index of the first `quote` in `text` not preceded by a backslash.
fn unescaped_quote(text: &str, quote: char) -> Option<usize> {
    let mut escaped = false;
    for (index, c) in text.char_indices() {
        match c {
            '\\' if !escaped => escaped = true,
            c if c == quote && !escaped => return Some(index),
            _ => escaped = false,
        }
    }
    None
}

/// `\n`, `\r`, `\t`, `\\` and `\"` in a double-quoted value; other backslashes are kept.
fn unescape_double(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('t') => out.push('\t'),
            Some('\\') => out.push('\\'),
            Some('"') => out.push('"'),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    out
}
