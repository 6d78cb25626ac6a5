//! Files that must be refused, each with the key path and a fragment of the message or fix.

use super::*;

/// (file, expected key path, fragment of "message\n  fix: fix").
pub(super) type BadCase = (String, &'static str, &'static str);

/// The shape of the file and its keys; `bad_values.rs` adds the cases about individual values.
fn cases() -> Vec<BadCase> {
    let s = |x: &str| x.to_string();
    vec![
        // The document as a whole.
        (s(""), "", "the file is empty"),
        (s("services: [web"), "", "invalid YAML"),
        (
            s("- just\n- a list\n"),
            "",
            "expected a mapping at the top of the file, got a list",
        ),
        (
            s("a: &x 1\nb: {<<: *x}\nservices: {web: {image: a}}"),
            "",
            "invalid merge key",
        ),
        (s("name: shop\n"), "services", "the file has no services"),
        (s("services: {}"), "services", "services is empty"),
        (s("services:\n"), "services", "services is empty"),
        (
            s("services: [web]"),
            "services",
            "expected a mapping, got a list",
        ),
        // Top-level keys.
        (
            s("volumes: {data: {driver: flocker}}\nservices: {web: {image: a}}"),
            "volumes.data.driver",
            "volume driver \"flocker\" is not supported",
        ),
        (
            s("secrets: [a]\nservices: {web: {image: a}}"),
            "secrets",
            "expected a mapping, got a list",
        ),
        (
            s("configs: {c: {}}\nservices: {web: {image: a}}"),
            "configs.c",
            "the config has no value",
        ),
        (
            s("networks: [front]\nservices: {web: {image: a}}"),
            "networks",
            "expected a mapping, got a list",
        ),
        (
            s("servcies: {}\nservices: {web: {image: a}}"),
            "servcies",
            "did you mean `services`?",
        ),
        (
            s("banana: 1\nservices: {web: {image: a}}"),
            "banana",
            "unknown key `banana`",
        ),
        (
            s("name: _app\nservices: {web: {image: a}}"),
            "name",
            "not a valid app name",
        ),
        // Service names and shapes.
        (
            s("services: {\"-web\": {image: a}}"),
            "services.-web",
            "hold only letters, digits, `_`, `.` and `-`",
        ),
        (
            s("services: {\"web 1\": {image: a}}"),
            "services.\"web 1\"",
            "not a valid service name",
        ),
        (
            s("services: {web: }"),
            "services.web",
            "expected a mapping, got null",
        ),
        (
            s("services: {web: {command: x}}"),
            "services.web.image",
            "image is required",
        ),
        (
            s("services: {web: {build: .}}"),
            "services.web.build",
            "hivemind image import FILE.tar",
        ),
        (
            web("image2: x"),
            "services.web.image2",
            "did you mean `image`?",
        ),
        (
            web("enviroment: {A: 1}"),
            "services.web.enviroment",
            "did you mean `environment`?",
        ),
        (
            web("prots: []"),
            "services.web.prots",
            "did you mean `ports`?",
        ),
        (
            web("flavour: x"),
            "services.web.flavour",
            "unknown key `flavour`",
        ),
        (
            web("volumes: [\"data:/data\"]"),
            "services.web.volumes[0]",
            "service web mounts volume \"data\", which the file does not define",
        ),
        (
            web("depends_on: [db]"),
            "services.web.depends_on[0]",
            "service \"db\" is not defined",
        ),
        (web("scale: 3"), "services.web.scale", "deploy.replicas"),
        (
            web("privileged: true"),
            "services.web.privileged",
            "not supported yet",
        ),
        // Types.
        (
            s("services: {web: {image: 3}}"),
            "services.web.image",
            "expected a string, got a number 3",
        ),
        (
            s("services: {web: {image: \" \"}}"),
            "services.web.image",
            "not an image reference",
        ),
        (
            web("deploy: {replicas: three}"),
            "services.web.deploy.replicas",
            "expected a number, got a string \"three\"",
        ),
        (
            web("deploy: {replicas: -1}"),
            "services.web.deploy.replicas",
            "-1 is negative",
        ),
        (
            web("deploy: {replicas: 1.5}"),
            "services.web.deploy.replicas",
            "expected a whole number",
        ),
        (
            web("deploy: {replicas: 99999999999}"),
            "services.web.deploy.replicas",
            "too large",
        ),
        (
            web("deploy: 3"),
            "services.web.deploy",
            "expected a mapping, got a number 3",
        ),
        (
            web("environment: \"A=1\""),
            "services.web.environment",
            "expected a list or a mapping",
        ),
        (
            web("environment: {A: [1]}"),
            "services.web.environment.A",
            "expected a string, number or boolean, got a list",
        ),
        (
            web("environment: [\"=x\"]"),
            "services.web.environment[0]",
            "not a valid variable name",
        ),
        (
            web("environment: [{A: 1}]"),
            "services.web.environment[0]",
            "expected a string, got a mapping",
        ),
        (
            web("labels: 5"),
            "services.web.labels",
            "expected a list or a mapping",
        ),
        (
            web("labels: [\"=v\"]"),
            "services.web.labels[0]",
            "has no label name",
        ),
        (
            web("command: {a: b}"),
            "services.web.command",
            "expected a string or a list",
        ),
        (
            web("command: \"echo 'oops\""),
            "services.web.command",
            "single quote is never closed",
        ),
        (
            web("entrypoint: [sh, [x]]"),
            "services.web.entrypoint[1]",
            "expected a string, got a list",
        ),
        (
            web("user: [root]"),
            "services.web.user",
            "expected a string, got a list",
        ),
        (
            web("working_dir: app"),
            "services.web.working_dir",
            "not an absolute path",
        ),
    ]
    .into_iter()
    .chain(super::bad_values::cases())
    .chain(super::limits::cases())
    .collect()
}

#[test]
fn bad_files_report_path_and_reason() {
    let cases = cases();
    assert!(
        cases.len() >= 40,
        "the brief asks for at least 40 bad inputs"
    );
    let mut failures = Vec::new();
    for (source, path, fragment) in &cases {
        match parse_src(source) {
            Ok(app) => failures.push(format!("{source:?} parsed: {app:?}")),
            Err(err) => {
                if std::env::var_os("SHOW_COMPOSE_ERRORS").is_some() {
                    eprintln!("{err}\n");
                }
                assert_eq!(err.file, "compose.yaml");
                match err.at(path) {
                    Some(e) if e.to_string().contains(fragment) => {}
                    Some(e) => {
                        failures.push(format!("{source:?} at {path}: {e:?} lacks {fragment:?}"))
                    }
                    None => failures.push(format!(
                        "{source:?}: no error at {path:?}, got {:#?}",
                        err.errors
                    )),
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn a_failed_interpolation_is_reported_once() {
    let err = parse_src("name: \"${APP:?give the app a name}\"\nservices: {web: {image: a}}")
        .unwrap_err();
    assert_eq!(err.errors.len(), 1, "{err}");
}

#[test]
fn dotenv_errors_name_the_line() {
    for (source, line, fragment) in [
        ("A=1\nBAD KEY=2\n", "line 2", "not a valid variable name"),
        ("A=\"open\n", "line 1", "never closed"),
        ("A='x' y\n", "line 1", "after the quoted value"),
        ("A=${B\n", "line 1", "invalid interpolation"),
    ] {
        let err = crate::compose::parse_dotenv(source).unwrap_err();
        assert_eq!(err.file, ".env");
        let e = err
            .at(line)
            .unwrap_or_else(|| panic!("{source:?}: {err:?}"));
        assert!(e.message.contains(fragment), "{source:?}: {e:?}");
    }
}
