//! The CLI's side of loading a project: which files, which variables, what is sent.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::{compose_files, deploy_request, project_env};
use crate::cli::DeployArgs;

fn args(files: &[&str]) -> DeployArgs {
    DeployArgs {
        file: files.iter().map(PathBuf::from).collect(),
        env_file: Vec::new(),
        profile: Vec::new(),
        app: None,
        wait: false,
        timeout: std::time::Duration::from_secs(1),
        strict: false,
    }
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn default_file_and_its_override_are_found_from_a_subdirectory() {
    let tmp = tempfile::tempdir().unwrap();
    let sub = tmp.path().join("src/deep");
    std::fs::create_dir_all(&sub).unwrap();
    write(tmp.path(), "docker-compose.yml", "services: {}\n");
    write(tmp.path(), "compose.yaml", "services: {}\n");
    write(tmp.path(), "compose.override.yml", "services: {}\n");
    let files = compose_files(&sub, &env(&[]), &[]).unwrap();
    assert_eq!(
        files,
        [
            tmp.path().join("compose.yaml"),
            tmp.path().join("compose.override.yml")
        ]
    );
}

#[test]
fn compose_file_variable_and_flags() {
    let tmp = tempfile::tempdir().unwrap();
    let cwd = tmp.path();
    let files = compose_files(cwd, &env(&[("COMPOSE_FILE", "a.yaml:b/c.yaml")]), &[]).unwrap();
    assert_eq!(files, [cwd.join("a.yaml"), cwd.join("b/c.yaml")]);
    let e = env(&[
        ("COMPOSE_FILE", "a.yaml;b.yaml"),
        ("COMPOSE_PATH_SEPARATOR", ";"),
    ]);
    assert_eq!(compose_files(cwd, &e, &[]).unwrap().len(), 2);
    // Flags win over the variable.
    let flags = [PathBuf::from("x.yaml")];
    assert_eq!(
        compose_files(cwd, &e, &flags).unwrap(),
        [cwd.join("x.yaml")]
    );
    let err = compose_files(cwd, &env(&[]), &[]).unwrap_err().to_string();
    assert!(err.contains("-f FILE"), "{err}");
}

#[test]
fn process_environment_wins_over_dotenv_and_env_file_flag_replaces_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write(dir, ".env", "A=dotenv\nB=dotenv\nC=${HOME_DIR}/x\n");
    write(dir, "other.env", "A=other\n");
    let process = env(&[("B", "shell"), ("HOME_DIR", "/home/u")]);
    let vars = project_env(dir, dir, &process, &[]).unwrap();
    assert_eq!(vars.get("A").unwrap(), "dotenv");
    assert_eq!(vars.get("B").unwrap(), "shell");
    assert_eq!(vars.get("C").unwrap(), "/home/u/x");
    let vars = project_env(dir, dir, &process, &[PathBuf::from("other.env")]).unwrap();
    assert_eq!(vars.get("A").unwrap(), "other");
    assert!(!vars.contains_key("C"));
    let err = project_env(dir, dir, &process, &[PathBuf::from("missing.env")]).unwrap_err();
    assert!(err.to_string().contains("missing.env"), "{err}");
}

#[test]
fn request_carries_the_resolved_model_and_no_variables() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write(
        dir,
        "compose.yaml",
        "services:\n  web:\n    image: ${IMAGE}\n    env_file: web.env\n    environment: {DB_PASS: }\n",
    );
    write(
        dir,
        "compose.override.yaml",
        "services:\n  web:\n    environment: {EXTRA: \"1\"}\n",
    );
    write(dir, ".env", "IMAGE=nginx:1.27\nDB_HOST=db\n");
    write(dir, "web.env", "URL=postgres://${DB_HOST}/x\n");
    let process = env(&[("DB_PASS", "p$ss"), ("UNRELATED", "secret")]);
    let req = deploy_request(dir, &process, &args(&[])).unwrap();
    assert!(req.env.is_empty() && req.env_files.is_empty(), "{req:?}");
    assert_eq!(
        req.file_name.as_deref(),
        Some("compose.yaml+compose.override.yaml")
    );
    assert!(!req.compose.contains("UNRELATED"), "{}", req.compose);
    assert!(!req.compose.contains("env_file"), "{}", req.compose);
    // What the server reads back.
    let nothing = |_: &str| -> Result<String, String> { Err("none".into()) };
    let app = hivemind_types::compose::parse(&hivemind_types::compose::ComposeInput {
        file_name: "sent.yaml",
        source: &req.compose,
        env: &BTreeMap::new(),
        env_files: &nothing,
    })
    .unwrap();
    let web = &app.services[0].1;
    assert_eq!(web.image, "nginx:1.27");
    assert_eq!(web.environment.get("URL").unwrap(), "postgres://db/x");
    assert_eq!(web.environment.get("DB_PASS").unwrap(), "p$ss");
    assert_eq!(web.environment.get("EXTRA").unwrap(), "1");
}

#[test]
fn secret_values_travel_beside_the_model_never_in_it() {
    use base64::Engine as _;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::create_dir(dir.join("conf")).unwrap();
    write(
        dir,
        "compose.yaml",
        "services:\n  db:\n    image: postgres\n    secrets: [pw, token]\n    configs: [app, inline]\n\
         secrets:\n  pw: {file: ./pw.txt}\n  token: {environment: API_TOKEN}\n  tls: {external: true}\n\
         configs:\n  app: {file: conf/app.ini}\n  inline: {content: \"x=1\"}\n",
    );
    write(dir, "pw.txt", "file-secret-1");
    write(dir, "conf/app.ini", "[app]\n");
    write(dir, ".env", "API_TOKEN=dotenv-secret-2\n");
    let req = deploy_request(dir, &env(&[]), &args(&[])).unwrap();
    let decoded = |values: &hivemind_client::wire::FileValues, key: &str| {
        let text = values.0.get(key).unwrap();
        String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(text)
                .unwrap(),
        )
        .unwrap()
    };
    assert_eq!(decoded(&req.secrets, "pw"), "file-secret-1");
    assert_eq!(decoded(&req.secrets, "token"), "dotenv-secret-2");
    assert_eq!(decoded(&req.configs, "app"), "[app]\n");
    // External and inline ones are not sent: the server has them.
    assert_eq!(req.secrets.0.len(), 2);
    assert_eq!(req.configs.0.len(), 1);
    for v in ["file-secret-1", "dotenv-secret-2"] {
        assert!(!req.compose.contains(v), "{}", req.compose);
        assert!(
            !format!("{req:?}").contains(v),
            "a value in the request's Debug"
        );
    }

    // A missing file or variable names the key.
    std::fs::remove_file(dir.join("pw.txt")).unwrap();
    let err = deploy_request(dir, &env(&[]), &args(&[]))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("secrets.pw") && err.contains("pw.txt"),
        "{err}"
    );
    write(dir, "pw.txt", "x");
    write(dir, ".env", "");
    let err = deploy_request(dir, &env(&[]), &args(&[]))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("secrets.token") && err.contains("API_TOKEN"),
        "{err}"
    );
}
