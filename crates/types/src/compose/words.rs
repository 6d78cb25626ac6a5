//! Splitting a `command` or `entrypoint` string into arguments, shell-words style.
//!
//! Compose splits `command: echo "hello world"` into `["echo", "hello world"]` without running a
//! shell: whitespace separates words, single quotes are literal, double quotes allow `\"`, `\\`,
//! `\$` and `` \` `` escapes, and a backslash outside quotes escapes the next character. No
//! variable expansion happens here; interpolation ran before.

/// Splits `text` into words; the error says what is unbalanced.
pub(crate) fn split_words(text: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut current = String::new();
    // Distinguishes `''` (an empty word) from no word at all.
    let mut in_word = false;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut current));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => current.push(c),
                        None => return Err("a single quote is never closed".to_string()),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => current.push(c),
                            // A backslash-newline inside double quotes continues the line.
                            Some('\n') => {}
                            Some(c) => {
                                current.push('\\');
                                current.push(c);
                            }
                            None => return Err("a double quote is never closed".to_string()),
                        },
                        Some(c) => current.push(c),
                        None => return Err("a double quote is never closed".to_string()),
                    }
                }
            }
            '\\' => match chars.next() {
                Some('\n') => {}
                Some(c) => {
                    in_word = true;
                    current.push(c);
                }
                None => return Err("it ends with a lone backslash".to_string()),
            },
            c => {
                in_word = true;
                current.push(c);
            }
        }
    }
    if in_word {
        words.push(current);
    }
    Ok(words)
}
