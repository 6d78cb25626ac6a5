//! Errors of the Compose reader.
//!
//! A Compose file is read in one pass that keeps going after a problem, so that a user fixing a
//! file sees every mistake at once instead of one per deploy attempt. Each problem names the key
//! path (`services.web.ports[1]`), says what is wrong and how to fix it (STYLE: "what and how to
//! fix"). This module owns the error types and the collector; it knows nothing of YAML.

use std::fmt::Write as _;

use super::warnings::{Note, Unhonoured};

/// One problem at one key path of a Compose file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{message}\n  fix: {fix}", path_prefix(.path))]
pub struct FieldError {
    /// Key path such as `services.web.ports[1]` or `services.web.deploy.replicas`; empty when the
    /// problem concerns the whole file (a YAML syntax error, an empty file).
    pub path: String,
    /// What is wrong: lowercase, no full stop.
    pub message: String,
    /// How to fix it, as one line the CLI prints under the message.
    pub fix: String,
}

/// Everything wrong with one Compose (or `.env`) file. Never empty.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", render(.file, .errors))]
pub struct ComposeError {
    /// The file name as the caller gave it, e.g. `compose.yaml`.
    pub file: String,
    /// The problems in file order, at least one.
    pub errors: Vec<FieldError>,
}

impl ComposeError {
    /// The first problem at exactly `path`, if any. Convenient for callers (and tests) that act on
    /// one key.
    pub fn at(&self, path: &str) -> Option<&FieldError> {
        self.errors.iter().find(|e| e.path == path)
    }
}

fn path_prefix(path: &str) -> String {
    if path.is_empty() {
        String::new()
    } else {
        format!("{path}: ")
    }
}

/// How many problems the message shows; a file written for another tool can have dozens, and
/// a screenful with a tally reads better than a wall. `errors` keeps them all.
const SHOWN: usize = 20;

fn render(file: &str, errors: &[FieldError]) -> String {
    let mut out = String::new();
    for (i, e) in errors.iter().take(SHOWN).enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let _ = write!(out, "{file}: {e}");
    }
    if errors.len() > SHOWN {
        let _ = write!(
            out,
            "\n{file}: and {} more problems ({} in all)",
            errors.len() - SHOWN,
            errors.len()
        );
    }
    out
}

/// Collects problems while a file is read; turned into a `ComposeError` at the end. Also
/// collects the keys read but not honoured, which are warnings, not problems.
#[derive(Debug, Default)]
pub(crate) struct Problems {
    list: Vec<FieldError>,
    notes: Vec<Note>,
}

impl Problems {
    pub(crate) fn push(
        &mut self,
        path: impl Into<String>,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) {
        self.list.push(FieldError {
            path: path.into(),
            message: message.into(),
            fix: fix.into(),
        });
    }

    /// Notes a key at `path` that is read but not acted on (see `warnings`).
    pub(crate) fn note(&mut self, path: impl Into<String>, key: Unhonoured) {
        self.notes.push(Note {
            path: path.into(),
            key,
        });
    }

    /// The keys noted so far, in file order.
    pub(crate) fn take_notes(&mut self) -> Vec<Note> {
        std::mem::take(&mut self.notes)
    }

    /// How many problems were collected so far; readers compare counts to learn whether a
    /// sub-reader found a problem without threading flags through.
    pub(crate) fn len(&self) -> usize {
        self.list.len()
    }

    /// The problems so far, for tests that pin a file's errors and warnings together (`finish`
    /// drops the notes of a refused file).
    #[cfg(test)]
    pub(crate) fn errors(&self) -> &[FieldError] {
        &self.list
    }

    #[cfg(test)]
    pub(crate) fn notes(&self) -> &[Note] {
        &self.notes
    }

    /// `Err` with every collected problem if there is any.
    pub(crate) fn finish<T>(self, file: &str, value: T) -> Result<T, ComposeError> {
        if self.list.is_empty() {
            Ok(value)
        } else {
            Err(ComposeError {
                file: file.to_string(),
                errors: self.list,
            })
        }
    }
}
