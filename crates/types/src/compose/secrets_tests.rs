use std::collections::BTreeMap;

use super::super::{parse, ComposeApp, ComposeError, ComposeInput};
use super::{FileDef, FileSource};
use crate::secret::FileMount;

fn read(source: &str) -> Result<ComposeApp, ComposeError> {
    parse(&ComposeInput {
        file_name: "compose.yaml",
        source,
        env: &BTreeMap::new(),
        env_files: &|_| Err("no such file".into()),
    })
}

#[track_caller]
fn read_ok(source: &str) -> ComposeApp {
    match read(source) {
        Ok(app) => app,
        Err(e) => panic!("expected {source:?} to parse, got:\n{e}"),
    }
}

/// The first error's path and message, for a file expected to be refused.
#[track_caller]
fn first_error(source: &str) -> (String, String, String) {
    match read(source) {
        Ok(_) => panic!("expected {source:?} to be refused"),
        Err(e) => {
            let f = &e.errors[0];
            (f.path.clone(), f.message.clone(), f.fix.clone())
        }
    }
}

fn mount(source: &str, target: &str, uid: u32, gid: u32, mode: u32) -> FileMount {
    FileMount {
        source: source.into(),
        external: false,
        target: target.into(),
        uid,
        gid,
        mode,
        digest: String::new(),
    }
}

#[test]
fn short_and_long_forms_mount_where_docker_does() {
    let app = read_ok(
        "services:
  db:
    image: postgres
    secrets:
      - db_password
      - source: api_key
        target: key.txt
        uid: '103'
        gid: 104
        mode: 0440
    configs:
      - nginx
      - source: nginx
        target: /etc/nginx/nginx.conf
        mode: 0o600
secrets:
  db_password: {file: ./db_password.txt}
  api_key: {environment: API_KEY, name: shop_api_key}
configs:
  nginx: {content: \"worker_processes 1;\"}
",
    );
    let spec = &app.services[0].1;
    assert_eq!(
        spec.secrets,
        vec![
            mount("db_password", "/run/secrets/db_password", 0, 0, 0o444),
            mount("shop_api_key", "/run/secrets/key.txt", 103, 104, 0o440),
        ]
    );
    assert_eq!(
        spec.configs,
        vec![
            mount("nginx", "/nginx", 0, 0, 0o444),
            mount("nginx", "/etc/nginx/nginx.conf", 0, 0, 0o600),
        ]
    );
    assert_eq!(
        app.secrets["db_password"],
        FileDef {
            name: "db_password".into(),
            source: FileSource::File("./db_password.txt".into())
        }
    );
    assert_eq!(
        app.secrets["api_key"].source,
        FileSource::Environment("API_KEY".into())
    );
    assert_eq!(
        app.configs["nginx"].source,
        FileSource::Content("worker_processes 1;".into())
    );
}

#[test]
fn external_ones_are_looked_up_by_name_in_both_forms() {
    let app = read_ok(
        "services:
  web: {image: nginx, secrets: [tls, old]}
secrets:
  tls: {external: true}
  old: {external: {name: legacy_tls}}
",
    );
    let spec = &app.services[0].1;
    assert!(spec.secrets.iter().all(|m| m.external));
    assert_eq!(spec.secrets[1].source, "legacy_tls");
    assert_eq!(app.secrets["old"].source, FileSource::External);
}

#[test]
fn an_undefined_secret_names_the_entry_and_the_fix() {
    let (path, message, fix) =
        first_error("services:\n  web: {image: nginx, secrets: [db_password]}\n");
    assert_eq!(path, "services.web.secrets[0]");
    assert!(
        message.contains("\"db_password\" is not defined"),
        "{message}"
    );
    assert!(fix.contains("top-level `secrets:`"), "{fix}");
    let (path, _, _) = first_error(
        "services:\n  web: {image: nginx, configs: [{source: nope}]}\nconfigs: {a: {content: x}}\n",
    );
    assert_eq!(path, "services.web.configs[0].source");
}

#[test]
fn bad_definitions_are_refused_with_their_key() {
    for (source, want_path, want) in [
        ("secrets: {a: {}}", "secrets.a", "has no value"),
        (
            "secrets: {a: {file: x, environment: Y}}",
            "secrets.a",
            "both `file` and `environment`",
        ),
        (
            "secrets: {a: {content: x}}",
            "secrets.a.content",
            "no `content`",
        ),
        (
            "secrets: {a: {driver: vault}}",
            "secrets.a.driver",
            "not supported",
        ),
        ("secrets: {a: {fiel: x}}", "secrets.a.fiel", "unknown key"),
        (
            "secrets: {a: {external: maybe}}",
            "secrets.a.external",
            "a boolean",
        ),
        (
            "secrets: {\"a/b\": {file: x}}",
            "secrets.a/b",
            "not a valid secret name",
        ),
        (
            "secrets: {a: {environment: \"A B\"}}",
            "secrets.a.environment",
            "not a variable",
        ),
        ("secrets: [a]", "secrets", "expected a mapping"),
        ("configs: {c: {file: \"\"}}", "configs.c.file", "empty"),
    ] {
        let file = format!("services:\n  web: {{image: nginx}}\n{source}\n");
        let (path, message, fix) = first_error(&file);
        assert_eq!(path, want_path, "{source}: {message}");
        assert!(message.contains(want), "{source}: {message}");
        assert!(!fix.is_empty(), "{source}");
    }
}

#[test]
fn bad_mounts_are_refused_with_their_key() {
    let defs = "secrets: {s: {file: x}}";
    for (entry, want_path, want) in [
        (
            "{source: s, mode: 0999}",
            "services.web.secrets[0].mode",
            "not a file mode",
        ),
        (
            "{source: s, mode: 4096}",
            "services.web.secrets[0].mode",
            "not a file mode",
        ),
        (
            "{source: s, uid: root}",
            "services.web.secrets[0].uid",
            "not a numeric id",
        ),
        (
            "{source: s, target: /a/../b}",
            "services.web.secrets[0].target",
            "not a file path",
        ),
        (
            "{source: s, target: /}",
            "services.web.secrets[0].target",
            "not a file path",
        ),
        (
            "{target: /x}",
            "services.web.secrets[0].source",
            "names no secret",
        ),
        (
            "{source: s, owner: 1}",
            "services.web.secrets[0].owner",
            "unknown key",
        ),
        (
            "[s]",
            "services.web.secrets[0]",
            "expected a name or a mapping",
        ),
    ] {
        let file = format!("services:\n  web: {{image: nginx, secrets: [{entry}]}}\n{defs}\n");
        let (path, message, _) = first_error(&file);
        assert_eq!(path, want_path, "{entry}: {message}");
        assert!(message.contains(want), "{entry}: {message}");
    }
    let (path, message, _) = first_error(&format!(
        "services:\n  web: {{image: nginx, secrets: [s, {{source: s, target: s}}]}}\n{defs}\n"
    ));
    assert_eq!(path, "services.web.secrets[1]");
    assert!(message.contains("/run/secrets/s"), "{message}");
}

#[test]
fn a_service_without_secrets_keeps_its_json() {
    let app = read_ok("services:\n  web: {image: nginx}\nsecrets: {s: {file: x}}\n");
    let json = serde_json::to_value(&app.services[0].1).unwrap();
    assert!(json.get("secrets").is_none() && json.get("configs").is_none());
}

#[test]
fn damaged_sections_never_panic() {
    for junk in [
        "secrets: 3",
        "secrets: {a: null}",
        "secrets: {a: [1]}",
        "secrets: {a: {external: {name: [x]}}}",
        "configs: {a: {content: {x: 1}}}",
        "configs: {a: {content: 12}}",
    ] {
        let file =
            format!("services:\n  web: {{image: nginx, secrets: [a, 3, null, {{}}]}}\n{junk}\n");
        let _ = read(&file);
    }
}

#[test]
fn an_included_files_secret_paths_are_relative_to_it() {
    use super::super::{load_project, ComposeFile, ProjectInput};
    let read = |path: &str| match path {
        "db/compose.yaml" => Ok("services:\n  db: {image: postgres, secrets: [pw, home]}\n\
             secrets:\n  pw: {file: ./pw.txt}\n  home: {file: ~/pw.txt}\n"
            .to_string()),
        _ => Err("no such file".to_string()),
    };
    let project = load_project(&ProjectInput {
        files: &[ComposeFile {
            name: "compose.yaml",
            source: "include: [db/compose.yaml]\nservices:\n  web: {image: nginx}\n",
        }],
        env: &BTreeMap::new(),
        read_file: &read,
        profiles: &[],
        project_dir: None,
    })
    .unwrap();
    let app = read_ok(&project.source);
    assert_eq!(
        app.secrets["pw"].source,
        FileSource::File("db/./pw.txt".into())
    );
    assert_eq!(
        app.secrets["home"].source,
        FileSource::File("~/pw.txt".into())
    );
}
