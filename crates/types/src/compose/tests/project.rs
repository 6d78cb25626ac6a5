//! Loading a project where its files are (the CLI's side): interpolation once with the whole
//! environment, env_files inlined, several files merged, profiles. Every model is then read the
//! way the server reads it: `parse` with no variables and no files.

use super::*;
use crate::compose::{load_project, ComposeFile, ProjectInput};

/// Files a project directory holds, for `read_file`.
fn files_of<'a>(files: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Result<String, String> + 'a {
    move |path: &str| {
        files
            .iter()
            .find(|(name, _)| *name == path)
            .map(|(_, text)| text.to_string())
            .ok_or_else(|| "no such file".to_string())
    }
}

/// Loads `compose` (and overrides) with `env` and `disk`, then parses the model as the server
/// does.
fn load(
    compose: &[&str],
    env: &[(&str, &str)],
    disk: &[(&str, &str)],
    profiles: &[&str],
) -> Result<ComposeApp, ComposeError> {
    let names: Vec<String> = (0..compose.len())
        .map(|i| format!("compose{i}.yaml"))
        .collect();
    let files: Vec<ComposeFile<'_>> = compose
        .iter()
        .zip(&names)
        .map(|(source, name)| ComposeFile { name, source })
        .collect();
    let env = vars(env);
    let read = files_of(disk);
    let profiles: Vec<String> = profiles.iter().map(|s| s.to_string()).collect();
    let project = load_project(&ProjectInput {
        files: &files,
        env: &env,
        read_file: &read,
        profiles: &profiles,
        project_dir: None,
    })?;
    let nothing = |_: &str| -> Result<String, String> { Err("not sent".into()) };
    parse(&ComposeInput {
        file_name: &project.file_name,
        source: &project.source,
        env: &BTreeMap::new(),
        env_files: &nothing,
    })
}

#[track_caller]
fn load_ok(compose: &[&str], env: &[(&str, &str)], disk: &[(&str, &str)]) -> ComposeApp {
    match load(compose, env, disk, &[]) {
        Ok(app) => app,
        Err(e) => panic!("expected {compose:?} to load, got:\n{e}"),
    }
}

fn service<'a>(app: &'a ComposeApp, name: &str) -> &'a ServiceSpec {
    &app.services
        .iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no service {name} in {:?}", app.services))
        .1
}

fn env_of(app: &ComposeApp, name: &str) -> Vec<(String, String)> {
    service(app, name)
        .environment
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn env_file_uses_dotenv_variable() {
    // DB_HOST comes from `.env` (merged into the environment by the CLI) and is mentioned only
    // in the env_file, never in the Compose text.
    let app = load_ok(
        &["services: {web: {image: nginx, env_file: web.env}}"],
        &[("DB_HOST", "db.internal")],
        &[("web.env", "DATABASE_URL=postgres://${DB_HOST}/shop\n")],
    );
    assert_eq!(
        env_of(&app, "web"),
        pairs(&[("DATABASE_URL", "postgres://db.internal/shop")])
    );
}

#[test]
fn environment_key_without_value_takes_shell_value() {
    let app = load_ok(
        &["services: {web: {image: nginx, environment: {DB_PASS: , LIST: x}}}"],
        &[("DB_PASS", "s3cret $ and ${braces}")],
        &[],
    );
    assert_eq!(
        env_of(&app, "web"),
        pairs(&[("DB_PASS", "s3cret $ and ${braces}"), ("LIST", "x")])
    );
    // The list form too.
    let app = load_ok(
        &["services: {web: {image: nginx, environment: [DB_PASS]}}"],
        &[("DB_PASS", "s3cret")],
        &[],
    );
    assert_eq!(env_of(&app, "web"), pairs(&[("DB_PASS", "s3cret")]));
}

#[test]
fn environment_key_without_value_unsets_env_file_value_when_shell_has_none() {
    let app = load_ok(
        &["services: {web: {image: nginx, env_file: web.env, environment: [PORT]}}"],
        &[],
        &[("web.env", "PORT=8080\nLOG=debug\n")],
    );
    assert_eq!(env_of(&app, "web"), pairs(&[("LOG", "debug")]));
}

#[test]
fn env_file_format_raw_is_not_interpolated() {
    let app = load_ok(
        &["services: {web: {image: nginx, env_file: [{path: raw.env, format: raw}]}}"],
        &[("HOME", "/root")],
        &[(
            "raw.env",
            "PASS='a$HOME\"b' # not a comment\nURL=http://x/${HOME}\n",
        )],
    );
    assert_eq!(
        env_of(&app, "web"),
        pairs(&[
            ("PASS", "'a$HOME\"b' # not a comment"),
            ("URL", "http://x/${HOME}")
        ])
    );
    assert!(app.unhonoured.is_empty(), "{:?}", app.unhonoured);
}

#[test]
fn env_file_not_required_may_be_missing() {
    let app = load_ok(
        &["services: {web: {image: nginx, env_file: [web.env, {path: local.env, required: false}]}}"],
        &[],
        &[("web.env", "A=1\n")],
    );
    assert_eq!(env_of(&app, "web"), pairs(&[("A", "1")]));
    let err = load(
        &["services: {web: {image: nginx, env_file: [{path: local.env}]}}"],
        &[],
        &[],
        &[],
    )
    .unwrap_err();
    assert!(err.at("services.web.env_file[0]").is_some(), "{err}");
}

#[test]
fn later_env_files_see_earlier_ones_and_environment_wins() {
    let app = load_ok(
        &["services: {web: {image: nginx, env_file: [a.env, b.env], environment: {B: from-yaml}}}"],
        &[],
        &[("a.env", "A=1\nB=2\n"), ("b.env", "C=${A}-c\nB=3\n")],
    );
    assert_eq!(
        env_of(&app, "web"),
        pairs(&[("A", "1"), ("B", "from-yaml"), ("C", "1-c")])
    );
}

#[test]
fn literal_dollars_survive_the_second_reading() {
    let app = load_ok(
        &["services: {web: {image: nginx, command: [sh, -c, \"echo $$HOME\"], environment: {P: \"a$$b\"}, labels: {x: \"${L}\"}}}"],
        &[("L", "$1.50")],
        &[],
    );
    let web = service(&app, "web");
    assert_eq!(
        web.command.as_deref(),
        Some(&["sh".to_string(), "-c".into(), "echo $HOME".into()][..])
    );
    assert_eq!(web.environment.get("P").map(String::as_str), Some("a$b"));
    assert_eq!(web.labels.get("x").map(String::as_str), Some("$1.50"));
}

#[test]
fn an_unreadable_env_file_has_no_variables_to_leak_to_the_server() {
    // The server's reader gets neither env nor files: the model carries the values.
    let app = load_ok(
        &["services: {web: {image: \"${IMAGE}\", env_file: web.env}}"],
        &[("IMAGE", "nginx:1.27"), ("UNRELATED_SECRET", "x")],
        &[("web.env", "A=1\n")],
    );
    assert_eq!(service(&app, "web").image, "nginx:1.27");
    assert_eq!(env_of(&app, "web"), pairs(&[("A", "1")]));
}

#[test]
fn interpolation_errors_name_the_file_that_has_them() {
    let err = load(
        &[
            "services: {web: {image: nginx}}",
            "services: {web: {image: \"${IMAGE:?set IMAGE}\"}}",
        ],
        &[],
        &[],
        &[],
    )
    .unwrap_err();
    assert_eq!(err.file, "compose1.yaml");
    assert!(err.at("services.web.image").is_some(), "{err}");
}

#[test]
fn override_file_merges_mappings_and_overrides_scalars() {
    let app = load_ok(
        &[
            "name: shop\nservices:\n  web:\n    image: nginx:1\n    environment: [A=1, B=2]\n    labels: {team: a}\n    command: [a, b]\n  db:\n    image: postgres\n",
            "services:\n  web:\n    image: nginx:2\n    environment: {B: 3, C: 4}\n    command: [c]\n  cache:\n    image: redis\n",
        ],
        &[],
        &[],
    );
    assert_eq!(app.name.as_deref(), Some("shop"));
    let names: Vec<&str> = app.services.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["web", "db", "cache"]);
    let web = service(&app, "web");
    assert_eq!(web.image, "nginx:2");
    assert_eq!(web.command.as_deref(), Some(&["c".to_string()][..]));
    assert_eq!(
        env_of(&app, "web"),
        pairs(&[("A", "1"), ("B", "3"), ("C", "4")])
    );
    assert_eq!(web.labels.get("team").map(String::as_str), Some("a"));
}

#[test]
fn override_file_ports_are_unique_by_target_and_published() {
    let app = load_ok(
        &[
            "services: {web: {image: nginx, ports: [\"8080:80\", \"9000:90\"]}}",
            "services: {web: {image: nginx, ports: [{target: 80, published: \"8080\", protocol: tcp}, \"8443:443\"]}}",
        ],
        &[],
        &[],
    );
    let ports = &service(&app, "web").ports;
    assert_eq!(ports.len(), 3, "{ports:?}");
}

#[test]
fn reset_and_override_tags() {
    let app = load_ok(
        &[
            "services: {web: {image: nginx, ports: [\"8080:80\"], environment: {FOO: bar, KEEP: 1}}}",
            "services: {web: {ports: !override [\"8443:443\"], environment: {FOO: !reset null}}}",
        ],
        &[],
        &[],
    );
    let web = service(&app, "web");
    assert_eq!(web.ports.len(), 1);
    assert_eq!(web.ports[0].target, 443);
    assert_eq!(env_of(&app, "web"), pairs(&[("KEEP", "1")]));
    let app = load_ok(
        &[
            "services: {web: {image: nginx, ports: [\"8080:80\"]}}",
            "services: {web: {ports: !reset []}}",
        ],
        &[],
        &[],
    );
    assert!(service(&app, "web").ports.is_empty());
}

#[test]
fn profiles_select_services() {
    let file = "services:\n  web: {image: nginx}\n  debug: {image: busybox, profiles: [debug]}\n";
    let app = load(&[file], &[], &[], &[]).unwrap();
    assert_eq!(app.services.len(), 1);
    let app = load(&[file], &[], &[], &["debug"]).unwrap();
    assert_eq!(app.services.len(), 2);
    let app = load(&[file], &[("COMPOSE_PROFILES", "other,debug")], &[], &[]).unwrap();
    assert_eq!(app.services.len(), 2);
    let app = load(&[file], &[], &[], &["*"]).unwrap();
    assert_eq!(app.services.len(), 2);
}

#[test]
fn service_depending_on_disabled_profile_is_an_error_naming_both() {
    let file = "services:\n  bar: {image: a, profiles: [test]}\n  zot: {image: b, depends_on: [bar], profiles: [debug]}\n";
    let err = load(&[file], &[], &[], &["debug"]).unwrap_err();
    let e = err.at("services.zot.depends_on").expect("names zot");
    assert!(
        e.message.contains("bar") && e.message.contains("test"),
        "{e}"
    );
    assert!(e.fix.contains("--profile test"), "{e}");
}

#[test]
fn no_files_is_an_error_not_a_panic() {
    assert!(load(&[], &[], &[], &[]).is_err());
}

#[test]
fn extends_in_the_same_file_merges_the_base_under_the_service() {
    let app = load_ok(
        &["services:\n  common:\n    image: busybox\n    environment: {TZ: utc, PORT: \"80\"}\n    ports: [\"8080:80\"]\n  cli:\n    extends: common\n    environment: {PORT: \"8080\"}\n    ports: [\"9090:90\"]\n  other:\n    extends: {service: cli}\n    command: [x]\n"],
        &[],
        &[],
    );
    assert_eq!(
        env_of(&app, "cli"),
        pairs(&[("PORT", "8080"), ("TZ", "utc")])
    );
    assert_eq!(service(&app, "cli").image, "busybox");
    assert_eq!(service(&app, "cli").ports.len(), 2);
    assert_eq!(
        env_of(&app, "other"),
        pairs(&[("PORT", "8080"), ("TZ", "utc")])
    );
}

#[test]
fn extends_another_file_reads_it_relative_to_the_file_that_names_it() {
    let app = load_ok(
        &["services:\n  web:\n    extends: {file: common/base.yaml, service: base}\n    environment: {B: \"2\"}\n"],
        &[("TAG", "1.27")],
        &[
            (
                "common/base.yaml",
                "services:\n  base:\n    extends: {file: root.yaml, service: root}\n    image: nginx:${TAG}\n    env_file: base.env\n",
            ),
            ("common/root.yaml", "services:\n  root:\n    image: x\n    labels: {tier: web}\n"),
            ("common/base.env", "A=1\n"),
        ],
    );
    let web = service(&app, "web");
    assert_eq!(web.image, "nginx:1.27");
    assert_eq!(web.labels.get("tier").map(String::as_str), Some("web"));
    assert_eq!(env_of(&app, "web"), pairs(&[("A", "1"), ("B", "2")]));
}

#[test]
fn extends_cycles_and_unknown_services_are_errors_naming_them() {
    let err = load(
        &["services:\n  a: {image: x, extends: b}\n  b: {image: x, extends: a}\n"],
        &[],
        &[],
        &[],
    )
    .unwrap_err();
    let e = err.at("services.a.extends").expect("names a");
    assert!(e.message.contains("a -> b -> a"), "{e}");
    let err = load(&["services:\n  a: {extends: nope}\n"], &[], &[], &[]).unwrap_err();
    assert!(err.errors[0].message.contains("\"nope\""), "{err}");
    let err = load(
        &["services:\n  a: {extends: {file: gone.yaml, service: b}}\n"],
        &[],
        &[],
        &[],
    )
    .unwrap_err();
    assert!(err.errors[0].message.contains("gone.yaml"), "{err}");
}

mod robustness {
    //! The loader never panics either: random files merged over each other, with `extends`,
    //! `include` (of itself too), `profiles`, env_files and tags, give a model or an error with problems; and a model it
    //! gives reads the same when loaded again (the server's side is idempotent).

    use proptest::prelude::*;

    use super::super::properties::{document, text, yamlish};
    use super::*;

    fn loaded(compose: &[&str], env_file: &str, profiles: &[&str]) {
        let disk = [("x.env", env_file), ("other.yaml", compose[0])];
        let env = [("A", "1"), ("COMPOSE_PROFILES", "p")];
        match load(compose, &env, &disk, profiles) {
            Ok(_) => {}
            Err(e) => assert!(!e.errors.is_empty(), "an error without problems"),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn merged_arbitrary_files_never_panic(a in document(), b in document(), c in yamlish()) {
            loaded(&[&a, &b], "", &[]);
            loaded(&[&a, &c], "", &["*"]);
        }

        #[test]
        fn extends_profiles_and_tags_never_panic(
            a in text(), b in text(), c in text(),
            env_file in "([A-Z_]{1,4}=?[^\n]{0,12}\n?){0,4}|.{0,40}",
        ) {
            let base = format!(
                "include: [other.yaml, {{path: [\"{b}\"]}}]\nservices:\n  web:\n    image: x\n    extends: {{service: \"{a}\", file: other.yaml}}\n    \
                 env_file: [{{path: x.env, format: raw}}, x.env]\n    profiles: [\"{b}\"]\n    \
                 depends_on: [\"{c}\"]\n  \"{a}\": {{image: y, extends: web, ports: !reset []}}\n"
            );
            let over = format!("services:\n  web:\n    environment: {{\"{c}\": !reset null}}\n    ports: !override [\"{b}\"]\n");
            loaded(&[&base, &over], &env_file, &[&b]);
        }
    }
}

#[test]
fn loading_the_loaded_model_again_changes_nothing() {
    let compose = ["services:\n  web:\n    image: \"${IMAGE}\"\n    command: [sh, -c, \"echo $$HOME\"]\n    env_file: web.env\n    environment: [P]\n"];
    let env = vars(&[("IMAGE", "a$b"), ("P", "x${y}$$")]);
    let disk = [("web.env", "Q='$lit'\n")];
    let read = files_of(&disk);
    let files = [ComposeFile {
        name: "compose.yaml",
        source: compose[0],
    }];
    let first = load_project(&ProjectInput {
        files: &files,
        env: &env,
        read_file: &read,
        profiles: &[],
        project_dir: None,
    })
    .unwrap();
    let again = [ComposeFile {
        name: "compose.yaml",
        source: &first.source,
    }];
    let second = load_project(&ProjectInput {
        files: &again,
        env: &BTreeMap::new(),
        read_file: &|_| Err("none".into()),
        profiles: &[],
        project_dir: None,
    })
    .unwrap();
    assert_eq!(first.source, second.source);
}

#[test]
fn include_adds_services_with_paths_and_dotenv_of_the_included_file() {
    let app = load_ok(
        &["include: [db/compose.yaml]\nservices:\n  web: {image: nginx}\n"],
        &[],
        &[
            (
                "db/compose.yaml",
                "services:\n  db:\n    image: \"postgres:${PG}\"\n    env_file: db.env\n",
            ),
            ("db/.env", "PG=16\n"),
            ("db/db.env", "POSTGRES_DB=shop\n"),
        ],
    );
    assert_eq!(service(&app, "db").image, "postgres:16");
    assert_eq!(env_of(&app, "db"), pairs(&[("POSTGRES_DB", "shop")]));
    let err = load(
        &["include: [other.yaml]\nservices:\n  web: {image: nginx}\n"],
        &[],
        &[("other.yaml", "services:\n  web: {image: x}\n")],
        &[],
    )
    .unwrap_err();
    let e = err.at("include[0]").expect("names the include");
    assert!(
        e.message.contains("web") && e.message.contains("other.yaml"),
        "{e}"
    );
}

#[test]
fn merge_rules_for_names_lists_and_logging() {
    let yaml = |s: &str| -> serde_yaml_ng::Mapping { serde_yaml_ng::from_str(s).unwrap() };
    let mut base = yaml(
        "services:\n  web:\n    depends_on: [db]\n    networks: [front]\n    cap_add: [NET_ADMIN]\n    \
         logging: {driver: json-file, options: {max-size: 1m}}\n    extra_hosts: [\"a:10.0.0.1\"]\n",
    );
    let over = yaml(
        "services:\n  web:\n    depends_on: {cache: {condition: service_healthy}}\n    networks: [back, front]\n    \
         cap_add: [NET_ADMIN, SYS_TIME]\n    logging: {options: {max-file: \"3\"}}\n    extra_hosts: {a: 10.0.0.2}\n",
    );
    super::super::merge::merge_files(&mut base, over);
    let expected = yaml(
        "services:\n  web:\n    depends_on: {db: {condition: service_started}, cache: {condition: service_healthy}}\n    \
         networks: [front, back]\n    cap_add: [NET_ADMIN, SYS_TIME]\n    \
         logging: {driver: json-file, options: {max-size: 1m, max-file: \"3\"}}\n    extra_hosts: {a: 10.0.0.2}\n",
    );
    assert_eq!(base, expected);
    // A new logging driver replaces the old settings.
    let mut base = yaml("services: {web: {logging: {driver: json-file, options: {max-size: 1m}}}}");
    super::super::merge::merge_files(
        &mut base,
        yaml("services: {web: {logging: {driver: local}}}"),
    );
    assert_eq!(base, yaml("services: {web: {logging: {driver: local}}}"));
}
