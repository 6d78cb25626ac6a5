//! Loading a Compose project where its files are (the CLI): every `-f` file read and
//! interpolated with the whole environment, its `include`s added, merged in order, `extends`
//! resolved, profiles applied, and each service's env_files and shell-taken variables inlined
//! into its `environment`. The result is
//! one self-contained model, written back as YAML with every `$` doubled, so that the reader
//! ([`super::parse`], which the server runs with no variables) interpolates it back to exactly
//! these values and needs no files.
//!
//! No I/O here: the caller passes the files' text and a reader for the files they name.

use std::collections::BTreeMap;

use serde_yaml_ng::{Mapping, Value};

use super::document::{escape_top, interpolate_top, load_yaml, top_mapping};
use super::environment::resolve_environments;
use super::error::{ComposeError, Problems};
use super::extends::resolve_extends;
use super::include::apply_includes;
use super::merge::{merge_files, strip_tags};
use super::profiles::apply_profiles;

/// One Compose file of a project.
pub struct ComposeFile<'a> {
    /// The name shown in errors, e.g. `compose.yaml`.
    pub name: &'a str,
    /// The file's text.
    pub source: &'a str,
}

/// What [`load_project`] reads.
pub struct ProjectInput<'a> {
    /// The files in `-f` order; later files are merged over earlier ones.
    pub files: &'a [ComposeFile<'a>],
    /// The whole environment: the `.env` file(s) merged with the process environment, the
    /// process environment winning.
    pub env: &'a BTreeMap<String, String>,
    /// Reads a file the model names (an `env_file`), by its path relative to the project
    /// directory (the first file's) or absolute. `Err` carries a short reason.
    pub read_file: &'a dyn Fn(&str) -> Result<String, String>,
    /// Profiles enabled on the command line (`--profile`); `COMPOSE_PROFILES` in `env` adds to
    /// them.
    pub profiles: &'a [String],
    /// The Compose file's directory (absolute), against which relative bind mount sources
    /// (`./data:/data`) are made absolute, since the server cannot see the user's files; the
    /// server passes `None` (what it receives is absolute already).
    pub project_dir: Option<&'a str>,
}

/// A project loaded into one model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Project {
    /// The name errors about the whole model use: the files' names joined with `+`.
    pub file_name: String,
    /// The model as YAML, every `$` doubled; give it to [`super::parse`] with no variables.
    pub source: String,
}

/// Loads, merges and resolves a project, reporting every problem of the first file that has
/// any (a file's problems would otherwise be repeated by every later step).
pub fn load_project(input: &ProjectInput<'_>) -> Result<Project, ComposeError> {
    let file_name = input
        .files
        .iter()
        .map(|f| f.name)
        .collect::<Vec<_>>()
        .join("+");
    let lookup = |name: &str| input.env.get(name).cloned();
    // An included file, read and interpolated with its own variables.
    let load_text = |name: &str, text: &str, vars: &BTreeMap<String, String>| {
        let lookup = |n: &str| vars.get(n).cloned();
        let mut p = Problems::default();
        let top = read_file_model(&mut p, text, &lookup);
        first_problem(p.finish(name, top))
    };
    let mut model: Option<Mapping> = None;
    for file in input.files {
        let mut p = Problems::default();
        let mut top = read_file_model(&mut p, file.source, &lookup);
        if let Some(top) = &mut top {
            apply_includes(&mut p, top, "", input.env, input.read_file, &load_text, 0);
        }
        let top = p.finish(file.name, top)?;
        let Some(mut top) = top else { continue };
        match &mut model {
            None => {
                strip_tags(&mut top);
                model = Some(top);
            }
            Some(base) => merge_files(base, top),
        }
    }
    let Some(mut model) = model else {
        let mut p = Problems::default();
        p.push(
            "",
            "no Compose file was given",
            "pass the file with -f FILE, or run in a directory with compose.yaml",
        );
        p.finish(&file_name, ())?;
        unreachable_model()?
    };

    let mut p = Problems::default();
    let mut profiles: Vec<String> = input.profiles.to_vec();
    if let Some(listed) = input.env.get("COMPOSE_PROFILES") {
        profiles.extend(
            listed
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from),
        );
    }
    // Another file named by `extends.file`, read and interpolated like the project's own.
    let load = |path: &str| -> Result<Mapping, String> {
        let text = (input.read_file)(path)?;
        let mut p = Problems::default();
        let top = read_file_model(&mut p, &text, &lookup);
        first_problem(p.finish(path, top))
    };
    if let Some(Value::Mapping(services)) = model.get_mut("services") {
        // After merging, so that a service of an override file may extend one of the base file.
        resolve_extends(&mut p, services, &load);
        if p.len() > 0 {
            return p.finish(&file_name, ()).and_then(|()| unreachable_model());
        }
        apply_profiles(&mut p, services, &profiles);
        resolve_environments(&mut p, services, input.env, input.read_file);
        if let Some(dir) = input.project_dir {
            let home = input.env.get("HOME").map(String::as_str);
            super::volumes::resolve_bind_sources(services, dir, home);
        }
    }
    escape_top(&mut model);
    let source = match serde_yaml_ng::to_string(&Value::Mapping(model)) {
        Ok(text) => text,
        Err(e) => {
            p.push(
                "",
                format!("the merged model cannot be written as YAML: {e}"),
                "report this as a bug, with the Compose files",
            );
            String::new()
        }
    };
    p.finish(
        &file_name,
        Project {
            file_name: file_name.clone(),
            source,
        },
    )
}

/// One file's top-level mapping, interpolated; `None` (with problems) when it cannot be read.
fn read_file_model(
    p: &mut Problems,
    source: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Option<Mapping> {
    let mut doc = load_yaml(p, source)?;
    let top = top_mapping(p, &mut doc)?;
    interpolate_top(p, top, lookup);
    Some(std::mem::take(top))
}

/// For a branch whose problems were just reported: `finish` never succeeds there, but the
/// types cannot say so, and the reader never panics.
fn unreachable_model<T>() -> Result<T, ComposeError> {
    Err(ComposeError {
        file: String::new(),
        errors: vec![super::FieldError {
            path: String::new(),
            message: "the project could not be loaded".to_string(),
            fix: "report this as a bug, with the Compose files".to_string(),
        }],
    })
}

/// A file's model with its tags applied, or its first problem as one line.
fn first_problem(read: Result<Option<Mapping>, ComposeError>) -> Result<Mapping, String> {
    match read {
        Ok(Some(mut top)) => {
            strip_tags(&mut top);
            Ok(top)
        }
        Ok(None) => Err("it has no Compose model".to_string()),
        Err(e) => Err(e.errors.first().map_or_else(String::new, |f| {
            if f.path.is_empty() {
                f.message.clone()
            } else {
                format!("{}: {}", f.path, f.message)
            }
        })),
    }
}
