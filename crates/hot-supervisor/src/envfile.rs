//! Environment files in the format systemd's `EnvironmentFile=` reads
//! (`--env-file`), and `KEY=VALUE` assignments (`--env`).
//!
//! One assignment per line; empty lines and lines starting with `#` or `;`
//! are ignored; a line may end in `\` to continue on the next. A value may
//! be unquoted (surrounding blanks removed, `\` escapes the next character),
//! in double quotes (`\` escapes `"`, `\`, `` ` ``, `$` and a newline; other
//! characters stand as they are; it may span lines) or in single quotes
//! (everything literal). Keys are letters, digits and `_`, not starting with
//! a digit. Pure: no I/O here.

/// One `KEY=VALUE`.
pub type Assignment = (String, String);

/// What is wrong in an environment file: the line it starts on, and what.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileError {
    /// The line (from 1) where the assignment starts.
    pub line: usize,
    /// What is wrong with it.
    pub what: String,
}

impl std::fmt::Display for FileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}", self.line, self.what)
    }
}

impl std::error::Error for FileError {}

/// Parse `KEY=VALUE` (the `--env` form: the value is taken as it is).
///
/// # Errors
/// No `=`, or an invalid key; the message names the text.
pub fn parse_assignment(text: &str) -> Result<Assignment, String> {
    let Some((key, value)) = text.split_once('=') else {
        return Err(format!("'{text}' is not KEY=VALUE"));
    };
    check_key(key).map_err(|why| format!("'{text}': {why}"))?;
    Ok((key.to_string(), value.to_string()))
}

fn check_key(key: &str) -> Result<(), String> {
    let mut chars = key.chars();
    match chars.next() {
        None => return Err("the key is empty".into()),
        Some(c) if !(c.is_ascii_alphabetic() || c == '_') => {
            return Err(format!("the key '{key}' must start with a letter or '_'"));
        }
        _ => {}
    }
    if let Some(c) = chars.find(|c| !(c.is_ascii_alphanumeric() || *c == '_')) {
        return Err(format!("the key '{key}' holds {c:?}"));
    }
    Ok(())
}

/// Parse an environment file's text.
///
/// # Errors
/// A line that is not an assignment, an invalid key, an unterminated quote;
/// the error names the line.
pub fn parse(text: &str) -> Result<Vec<Assignment>, FileError> {
    let mut out = Vec::new();
    let mut rest = text;
    let mut line_no = 0usize;
    while !rest.is_empty() {
        line_no += 1;
        let start_line = line_no;
        // Skip blanks at the start of the line.
        rest = rest.trim_start_matches([' ', '\t']);
        if rest.starts_with('\n') {
            rest = &rest[1..];
            continue;
        }
        if rest.starts_with('#') || rest.starts_with(';') {
            rest = rest.split_once('\n').map_or("", |(_, r)| r);
            continue;
        }
        let Some(eq) = rest
            .find(['=', '\n'])
            .filter(|&i| rest.as_bytes()[i] == b'=')
        else {
            let shown: String = rest.lines().next().unwrap_or("").chars().take(40).collect();
            return Err(FileError {
                line: start_line,
                what: format!("'{shown}' is not KEY=VALUE"),
            });
        };
        let key = rest[..eq].trim_end_matches([' ', '\t']);
        check_key(key).map_err(|what| FileError {
            line: start_line,
            what,
        })?;
        rest = rest[eq + 1..].trim_start_matches([' ', '\t']);
        let mut value = String::new();
        let mut chars = rest.char_indices().peekable();
        let mut end = rest.len();
        // Trailing blanks of the unquoted part are dropped at the end.
        let mut pending_blanks = String::new();
        while let Some((i, c)) = chars.next() {
            match c {
                '\n' => {
                    end = i + 1;
                    break;
                }
                '\\' => match chars.next() {
                    Some((_, '\n')) => line_no += 1,
                    Some((_, e)) => {
                        value.push_str(&std::mem::take(&mut pending_blanks));
                        value.push(e);
                    }
                    None => {}
                },
                '"' | '\'' => {
                    value.push_str(&std::mem::take(&mut pending_blanks));
                    let quote = c;
                    let mut closed = false;
                    while let Some((_, q)) = chars.next() {
                        if q == quote {
                            closed = true;
                            break;
                        }
                        if q == '\n' {
                            line_no += 1;
                        }
                        if quote == '"' && q == '\\' {
                            match chars.next() {
                                Some((_, '\n')) => line_no += 1,
                                Some((_, e @ ('"' | '\\' | '`' | '$'))) => value.push(e),
                                Some((_, e)) => {
                                    value.push('\\');
                                    value.push(e);
                                }
                                None => {}
                            }
                            continue;
                        }
                        value.push(q);
                    }
                    if !closed {
                        return Err(FileError {
                            line: start_line,
                            what: format!("unterminated {quote} quote"),
                        });
                    }
                }
                ' ' | '\t' => pending_blanks.push(c),
                _ => {
                    value.push_str(&std::mem::take(&mut pending_blanks));
                    value.push(c);
                }
            }
        }
        out.push((key.to_string(), value));
        rest = if end >= rest.len() { "" } else { &rest[end..] };
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_systemd_reads() {
        let text = "# comment\n; also\n\nA=1\n  B = two words  \nC=\"quoted # not a comment\"\nD='single $x \\n'\nE=esc\\ aped\nF=\"multi\nline\"\nG=cont\\\ninued\nH=\n";
        let got = parse(text).unwrap();
        let want: Vec<(String, String)> = [
            ("A", "1"),
            ("B", "two words"),
            ("C", "quoted # not a comment"),
            ("D", "single $x \\n"),
            ("E", "esc aped"),
            ("F", "multi\nline"),
            ("G", "continued"),
            ("H", ""),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn errors_name_the_line() {
        assert_eq!(
            parse("A=1\nnot an assignment\n").unwrap_err(),
            FileError {
                line: 2,
                what: "'not an assignment' is not KEY=VALUE".into()
            }
        );
        assert_eq!(
            parse("A=1\nnot an assignment\n").unwrap_err().to_string(),
            "line 2: 'not an assignment' is not KEY=VALUE"
        );
        assert!(
            parse("1A=x")
                .unwrap_err()
                .to_string()
                .contains("line 1: the key '1A'")
        );
        let e = parse("X=1\nA=\"open\n").unwrap_err();
        assert!(e.line == 2 && e.what.contains("unterminated"), "{e}");
        assert!(parse("A-B=1").unwrap_err().what.contains("holds '-'"));
    }

    #[test]
    fn assignments() {
        assert_eq!(parse_assignment("K=a=b"), Ok(("K".into(), "a=b".into())));
        assert!(parse_assignment("K").unwrap_err().contains("not KEY=VALUE"));
        assert!(parse_assignment("=v").unwrap_err().contains("empty"));
    }

    use supervisor_child::test_rng::Rng;

    /// A value in double quotes, escaped as the format wants.
    fn quoted(value: &str) -> String {
        let mut out = String::from("\"");
        for c in value.chars() {
            if matches!(c, '"' | '\\' | '`' | '$') {
                out.push('\\');
            }
            out.push(c);
        }
        out.push('"');
        out
    }

    #[test]
    fn quoted_values_read_back() {
        let mut rng = Rng::new(15);
        for _ in 0..10_000 {
            let key = format!("K{}", rng.string_from("AZ_09az", 8));
            let value = rng.string(30);
            let line = format!("{key}={}\n", quoted(&value));
            assert_eq!(
                parse(&line),
                Ok(vec![(key.clone(), value.clone())]),
                "{line:?}"
            );
            // Single quotes: everything literal, if the value has none.
            if !value.contains('\'') {
                let line = format!("{key}='{value}'");
                assert_eq!(parse(&line), Ok(vec![(key.clone(), value.clone())]));
            }
            let text = format!("{key}={value}");
            assert_eq!(parse_assignment(&text), Ok((key, value)));
        }
    }

    #[test]
    fn any_text_parses_into_valid_keys_or_is_refused() {
        let mut rng = Rng::new(16);
        let pieces = [
            "A", "_b", "=", "\"", "'", "\\", "\n", " ", "#", ";", "$", "1", "\t",
        ];
        for _ in 0..20_000 {
            let text = rng.mix(&pieces, 12);
            if let Ok(list) = parse(&text) {
                for (key, value) in list {
                    let line = format!("{key}={value}");
                    assert_eq!(parse_assignment(&line), Ok((key.clone(), value.clone())));
                    assert_eq!(
                        parse(&format!("{key}={}", quoted(&value))),
                        Ok(vec![(key, value)])
                    );
                }
            }
            if let Ok((key, value)) = parse_assignment(&text) {
                assert_eq!(format!("{key}={value}"), text);
            }
        }
    }
}
