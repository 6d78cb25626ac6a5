//! Registry credentials in Docker's `config.json` format, so that `docker login`, `skopeo
//! login` and `hivemind registry login` share one file: `auths.<registry>.auth` is base64
//! `user:password`; separate `username`/`password` fields are read too. Credential helpers
//! (`credsStore`, `credHelpers`) are not run.
//!
//! Pure file handling: no network. Writing keeps every key it does not own.

use std::io;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use serde_json::{Map, Value};

/// Docker Hub's names for itself; its credentials are stored under the first.
const DOCKER_HUB_KEYS: &[&str] = &[
    "https://index.docker.io/v1/",
    "index.docker.io",
    "registry-1.docker.io",
    "docker.io",
];

/// Why credentials could not be read or stored.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{} is not a Docker config file (fix or remove it)", path.display())]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "{}: `auths.{registry}.auth` is not base64 `user:password` (log in again)",
        path.display()
    )]
    BadAuth { path: PathBuf, registry: String },
    #[error("cannot write {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// A user name and password for one registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// `$DOCKER_CONFIG/config.json`, else `$HOME/.docker/config.json`, as Docker does.
pub fn docker_config_path() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(dir).join("config.json"));
    }
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(|home| PathBuf::from(home).join(".docker").join("config.json"))
}

/// The registry an `auths` key names, as `host[:port]`: Docker writes both bare hosts and URLs.
fn registry_of_key(key: &str) -> String {
    let host = key
        .trim()
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let host = host.split('/').next().unwrap_or(host).to_ascii_lowercase();
    if DOCKER_HUB_KEYS.iter().any(|k| registry_of_hub(k) == host) {
        "docker.io".to_string()
    } else {
        host
    }
}

fn registry_of_hub(key: &str) -> &str {
    key.trim_start_matches("https://")
        .split('/')
        .next()
        .unwrap_or(key)
}

/// The key to store `registry`'s credentials under.
fn key_for(registry: &str) -> String {
    if registry_of_key(registry) == "docker.io" {
        DOCKER_HUB_KEYS[0].to_string()
    } else {
        registry.to_ascii_lowercase()
    }
}

fn read_config(path: &Path) -> Result<Option<Map<String, Value>>, CredentialsError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(CredentialsError::Read {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    if text.trim().is_empty() {
        return Ok(Some(Map::new()));
    }
    let parse = |source| CredentialsError::Parse {
        path: path.to_path_buf(),
        source,
    };
    match serde_json::from_str::<Value>(&text).map_err(parse)? {
        Value::Object(map) => Ok(Some(map)),
        _ => Err(parse(serde::de::Error::custom("expected a JSON object"))),
    }
}

/// The credentials stored for `registry` (`host[:port]`), if the file and an entry exist.
pub fn credentials_for(
    path: &Path,
    registry: &str,
) -> Result<Option<Credentials>, CredentialsError> {
    let Some(config) = read_config(path)? else {
        return Ok(None);
    };
    let Some(Value::Object(auths)) = config.get("auths") else {
        return Ok(None);
    };
    let wanted = registry_of_key(registry);
    let Some((key, entry)) = auths.iter().find(|(k, _)| registry_of_key(k) == wanted) else {
        return Ok(None);
    };
    let field = |name: &str| entry.get(name).and_then(Value::as_str).unwrap_or("");
    let bad = || CredentialsError::BadAuth {
        path: path.to_path_buf(),
        registry: key.clone(),
    };
    if !field("auth").is_empty() {
        let decoded = BASE64.decode(field("auth").trim()).map_err(|_| bad())?;
        let text = String::from_utf8(decoded).map_err(|_| bad())?;
        let (username, password) = text.split_once(':').ok_or_else(bad)?;
        return Ok(Some(Credentials {
            username: username.to_string(),
            password: password.to_string(),
        }));
    }
    if !field("username").is_empty() {
        return Ok(Some(Credentials {
            username: field("username").to_string(),
            password: field("password").to_string(),
        }));
    }
    Ok(None)
}

/// Stores `credentials` for `registry`, keeping the rest of the file. The file is created
/// (with its directory) readable by its owner only, as it holds passwords.
pub fn credentials_store(
    path: &Path,
    registry: &str,
    credentials: &Credentials,
) -> Result<(), CredentialsError> {
    let mut config = read_config(path)?.unwrap_or_default();
    let auths = config
        .entry("auths")
        .or_insert_with(|| Value::Object(Map::new()));
    if !auths.is_object() {
        *auths = Value::Object(Map::new());
    }
    let auths = auths.as_object_mut().expect("auths is an object");
    // Drop other spellings of the same registry so that one entry stays authoritative.
    let wanted = registry_of_key(registry);
    auths.retain(|k, _| registry_of_key(k) != wanted);
    let token = BASE64.encode(format!("{}:{}", credentials.username, credentials.password));
    auths.insert(key_for(registry), serde_json::json!({ "auth": token }));
    let text = serde_json::to_string_pretty(&Value::Object(config)).expect("json serializes");
    write_private(path, text.as_bytes()).map_err(|source| CredentialsError::Write {
        path: path.to_path_buf(),
        source,
    })
}

/// Forgets the credentials for `registry` (in any spelling), keeping the rest of the file.
/// Returns whether there were any; a missing file holds none.
pub fn credentials_remove(path: &Path, registry: &str) -> Result<bool, CredentialsError> {
    let Some(mut config) = read_config(path)? else {
        return Ok(false);
    };
    let wanted = registry_of_key(registry);
    let Some(auths) = config.get_mut("auths").and_then(Value::as_object_mut) else {
        return Ok(false);
    };
    let before = auths.len();
    auths.retain(|k, _| registry_of_key(k) != wanted);
    if auths.len() == before {
        return Ok(false);
    }
    let text = serde_json::to_string_pretty(&Value::Object(config)).expect("json serializes");
    write_private(path, text.as_bytes()).map_err(|source| CredentialsError::Write {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(true)
}

/// Writes `data` to `path` atomically (temporary file + rename) with mode 0600.
fn write_private(path: &Path, data: &[u8]) -> io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".config.json.{}", std::process::id()));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(data)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds(u: &str, p: &str) -> Credentials {
        Credentials {
            username: u.into(),
            password: p.into(),
        }
    }

    #[test]
    fn reads_auth_and_username_password_entries() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        let auth = BASE64.encode("alice:s3:cret");
        std::fs::write(
            &path,
            format!(
                r#"{{"auths":{{"127.0.0.1:5001":{{"auth":"{auth}"}},
                "https://reg.example.com/v2/":{{"username":"bob","password":"pw"}},
                "https://index.docker.io/v1/":{{"auth":"{auth}"}}}},"credsStore":"x"}}"#
            ),
        )
        .unwrap();
        let got = |r| credentials_for(&path, r).unwrap();
        assert_eq!(got("127.0.0.1:5001"), Some(creds("alice", "s3:cret")));
        assert_eq!(got("reg.example.com"), Some(creds("bob", "pw")));
        assert_eq!(got("docker.io"), Some(creds("alice", "s3:cret")));
        assert_eq!(got("127.0.0.1:5002"), None);
    }

    #[test]
    fn missing_file_means_no_credentials_and_bad_auth_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        assert_eq!(credentials_for(&path, "r").unwrap(), None);
        std::fs::write(&path, r#"{"auths":{"r":{"auth":"!!"}}}"#).unwrap();
        assert!(matches!(
            credentials_for(&path, "r"),
            Err(CredentialsError::BadAuth { .. })
        ));
        std::fs::write(&path, "[").unwrap();
        assert!(matches!(
            credentials_for(&path, "r"),
            Err(CredentialsError::Parse { .. })
        ));
    }

    #[test]
    fn remove_forgets_every_spelling_and_keeps_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        assert!(!credentials_remove(&path, "127.0.0.1:5001").unwrap());
        std::fs::write(
            &path,
            r#"{"auths":{"http://127.0.0.1:5001":{"auth":"eDp5"},"other:1":{"auth":"eDp5"}},"psFormat":"x"}"#,
        )
        .unwrap();
        assert!(credentials_remove(&path, "127.0.0.1:5001").unwrap());
        assert!(!credentials_remove(&path, "127.0.0.1:5001").unwrap());
        let json: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(json["psFormat"], "x");
        assert!(json["auths"]["other:1"].is_object());
        assert_eq!(credentials_for(&path, "127.0.0.1:5001").unwrap(), None);
    }

    #[test]
    fn store_keeps_other_keys_and_replaces_the_entry() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("config.json");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(
            &path,
            r#"{"auths":{"http://127.0.0.1:5001":{"auth":"eDp5"},"other:1":{"auth":"eDp5"}},"psFormat":"x"}"#,
        )
        .unwrap();
        credentials_store(&path, "127.0.0.1:5001", &creds("u", "p")).unwrap();
        let json: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(json["psFormat"], "x");
        assert!(json["auths"]["other:1"].is_object());
        assert!(json["auths"].get("http://127.0.0.1:5001").is_none());
        assert_eq!(
            credentials_for(&path, "127.0.0.1:5001").unwrap(),
            Some(creds("u", "p"))
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        credentials_store(&path, "docker.io", &creds("d", "h")).unwrap();
        let json: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert!(json["auths"]["https://index.docker.io/v1/"].is_object());
    }
}
