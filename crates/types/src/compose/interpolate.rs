//! Variable interpolation in Compose values and `.env` files (`$VAR`, `${VAR:-default}`, ...).
//!
//! This follows the Compose Specification as Docker Compose implements it: a variable missing
//! without a default becomes the empty string, `$$` is a literal `$`, and a `$` that starts no
//! valid reference is an error rather than being passed through, so that typos surface. Defaults
//! may themselves contain references (`${A:-${B}}`). Only strings are handled here; walking the
//! YAML tree is the caller's business.

/// Why a string could not be interpolated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct InterpolationError {
    pub(crate) message: String,
    pub(crate) fix: String,
}

/// Looks a variable up; `None` means "not set", which differs from set-but-empty for `-` and `?`.
pub(crate) type Lookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Expands every variable reference in `text`.
pub(crate) fn interpolate(text: &str, lookup: Lookup<'_>) -> Result<String, InterpolationError> {
    // Fast path: most values contain no `$` at all.
    if !text.contains('$') {
        return Ok(text.to_string());
    }
    let chars: Vec<char> = text.chars().collect();
    let mut parser = Parser {
        chars: &chars,
        pos: 0,
        text,
        lookup,
    };
    parser.sequence(true, false)
}

struct Parser<'a> {
    chars: &'a [char],
    pos: usize,
    /// The whole input, quoted in error messages.
    text: &'a str,
    lookup: Lookup<'a>,
}

/// What follows the name inside `${NAME...}`.
#[derive(Clone, Copy)]
enum Operator {
    /// `:-` (`colon` = true) or `-`: use the word when unset (or empty).
    Default { colon: bool },
    /// `:?` or `?`: fail with the word when unset (or empty).
    Required { colon: bool },
    /// `:+` or `+`: use the word when set (and non-empty).
    Alternative { colon: bool },
}

impl Parser<'_> {
    /// Reads text up to the end (or up to the `}` closing a braced reference when `in_braces`).
    /// With `eval` false the text is only checked, not expanded: a default that is not used must
    /// not raise its `:?` errors.
    fn sequence(&mut self, eval: bool, in_braces: bool) -> Result<String, InterpolationError> {
        let mut out = String::new();
        while let Some(&c) = self.chars.get(self.pos) {
            match c {
                '}' if in_braces => return Ok(out),
                '$' => {
                    self.pos += 1;
                    let expanded = self.reference(eval)?;
                    out.push_str(&expanded);
                }
                _ => {
                    out.push(c);
                    self.pos += 1;
                }
            }
        }
        if in_braces {
            return Err(self.invalid("a `${` is never closed with `}`"));
        }
        Ok(out)
    }

    /// Parses what follows a `$`.
    fn reference(&mut self, eval: bool) -> Result<String, InterpolationError> {
        match self.chars.get(self.pos) {
            Some('$') => {
                self.pos += 1;
                Ok("$".to_string())
            }
            Some('{') => {
                self.pos += 1;
                self.braced(eval)
            }
            Some(c) if is_name_start(*c) => {
                let name = self.name();
                Ok(if eval {
                    (self.lookup)(&name).unwrap_or_default()
                } else {
                    String::new()
                })
            }
            _ => Err(self.invalid("a `$` is not followed by a variable name")),
        }
    }

    fn name(&mut self) -> String {
        let start = self.pos;
        while self
            .chars
            .get(self.pos)
            .is_some_and(|c| c.is_ascii_alphanumeric() || *c == '_')
        {
            self.pos += 1;
        }
        self.chars[start..self.pos].iter().collect()
    }

    /// Parses `NAME[op word]}` after `${`.
    fn braced(&mut self, eval: bool) -> Result<String, InterpolationError> {
        if !self.chars.get(self.pos).is_some_and(|c| is_name_start(*c)) {
            return Err(self.invalid("`${` is not followed by a variable name"));
        }
        let name = self.name();
        let op = match (self.chars.get(self.pos), self.chars.get(self.pos + 1)) {
            (Some('}'), _) => {
                self.pos += 1;
                return Ok(if eval {
                    (self.lookup)(&name).unwrap_or_default()
                } else {
                    String::new()
                });
            }
            (Some(':'), Some('-')) => Operator::Default { colon: true },
            (Some(':'), Some('?')) => Operator::Required { colon: true },
            (Some(':'), Some('+')) => Operator::Alternative { colon: true },
            (Some('-'), _) => Operator::Default { colon: false },
            (Some('?'), _) => Operator::Required { colon: false },
            (Some('+'), _) => Operator::Alternative { colon: false },
            (None, _) => return Err(self.invalid("a `${` is never closed with `}`")),
            _ => {
                return Err(self.invalid(&format!(
                    "`${{{name}` is followed by something other than `}}`, `:-`, `-`, `:?`, `?`, `:+` or `+`"
                )))
            }
        };
        let colon = matches!(
            op,
            Operator::Default { colon: true }
                | Operator::Required { colon: true }
                | Operator::Alternative { colon: true }
        );
        self.pos += if colon { 2 } else { 1 };

        let value = if eval { (self.lookup)(&name) } else { None };
        // "Unset" for the plain operators, "unset or empty" for the colon forms.
        let missing = match &value {
            None => true,
            Some(v) => colon && v.is_empty(),
        };
        let use_word = eval
            && match op {
                Operator::Default { .. } | Operator::Required { .. } => missing,
                Operator::Alternative { .. } => !missing,
            };
        let word = self.sequence(use_word, true)?;
        // `sequence` stopped on the closing brace.
        self.pos += 1;
        if !eval {
            return Ok(String::new());
        }
        Ok(match op {
            Operator::Default { .. } => {
                if missing {
                    word
                } else {
                    value.unwrap_or_default()
                }
            }
            Operator::Alternative { .. } => {
                if missing {
                    String::new()
                } else {
                    word
                }
            }
            Operator::Required { .. } => {
                if missing {
                    let why = if word.is_empty() {
                        String::new()
                    } else {
                        format!(": {word}")
                    };
                    let state = if value.is_some() { "empty" } else { "not set" };
                    return Err(InterpolationError {
                        message: format!("required variable {name} is {state}{why}"),
                        fix: format!(
                            "set {name} in the environment or in the .env file next to the compose file"
                        ),
                    });
                }
                value.unwrap_or_default()
            }
        })
    }

    fn invalid(&self, why: &str) -> InterpolationError {
        InterpolationError {
            message: format!("invalid interpolation in {:?}: {why}", self.text),
            fix: "use $VAR, ${VAR}, ${VAR:-default} or ${VAR:?message}; write $$ for a literal $"
                .to_string(),
        }
    }
}

fn is_name_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_'
}
