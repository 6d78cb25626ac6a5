//! Secrets at rest: sealed with XChaCha20-Poly1305 (RustCrypto's `chacha20poly1305`) under the
//! server's key in `{data_dir}/secrets.key` (0600, created at first start, never in the store).
//!
//! - Every value gets a fresh random 24-byte nonce (XChaCha's nonces are long enough for that to
//!   be safe without a counter); the stored form is base64 of nonce and ciphertext.
//! - The associated data is the object's kind and key, so a sealed value copied onto another
//!   secret does not open there.
//! - A secret's digest (in the service spec, so that a changed value replaces the replicas, and
//!   shown by `secret inspect`) is HMAC-SHA256 under a key derived from the secrets key: a plain
//!   hash of a short password would let anyone who reads the store or the API guess it.
//! - Configs are not secret: stored plain, with a plain SHA-256 digest.
//!
//! Routes (`routes`), the deploy step that writes an app's own secrets (`deploy`) and delivery in
//! assignments (`assignments::secrets`) build on this. Nothing here logs a value.

use std::io;
use std::path::Path;
use std::sync::Arc;

use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hivemind_types::secret::{FileKind, StoredFile};
use hivemind_types::Kind;
use rand::RngCore;
use sha2::{Digest, Sha256};

pub(crate) mod deploy;
pub(crate) mod routes;
#[cfg(test)]
mod tests;

const NONCE_LEN: usize = 24;
/// Larger values are refused: they are delivered in assignments and held in node memory.
pub const MAX_VALUE_BYTES: usize = 512 * 1024;

/// The server's key for secrets. Cheap to clone; its `Debug` never shows it.
#[derive(Clone)]
pub struct SecretsKey {
    cipher: Arc<XChaCha20Poly1305>,
    digest_key: Arc<[u8; 32]>,
}

impl std::fmt::Debug for SecretsKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretsKey(..)")
    }
}

impl Default for SecretsKey {
    /// A random key for this process only (tests: what it sealed cannot be opened after a
    /// restart).
    fn default() -> SecretsKey {
        let mut key = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut key);
        SecretsKey::new(&key)
    }
}

/// A sealed value that does not open: damaged, moved to another key, or sealed under another
/// secrets key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the sealed value of {key} does not open: {why}")]
pub struct OpenError {
    pub key: String,
    pub why: &'static str,
}

impl SecretsKey {
    pub fn new(key: &[u8; 32]) -> SecretsKey {
        SecretsKey {
            cipher: Arc::new(XChaCha20Poly1305::new(key.into())),
            digest_key: Arc::new(crate::tokens::hmac_sha256(
                key,
                b"hivemind secret digest v1",
            )),
        }
    }

    /// Seals `plain` for the object `kind`/`key`: base64 of a random nonce and the ciphertext.
    pub fn seal(&self, kind: Kind, key: &str, plain: &[u8]) -> String {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let aad = associated_data(kind, key);
        // Encryption fails only for messages beyond the cipher's 256 GiB limit; values are
        // bounded by MAX_VALUE_BYTES long before.
        let sealed = self
            .cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plain,
                    aad: &aad,
                },
            )
            .unwrap_or_default();
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        base64::engine::general_purpose::STANDARD.encode(out)
    }

    /// Opens what [`SecretsKey::seal`] sealed for the same `kind`/`key`.
    pub fn open(&self, kind: Kind, key: &str, sealed: &str) -> Result<Vec<u8>, OpenError> {
        let fail = |why| OpenError {
            key: format!("{}/{key}", kind.as_str()),
            why,
        };
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(sealed)
            .map_err(|_| fail("it is not base64"))?;
        if bytes.len() < NONCE_LEN {
            return Err(fail("it is too short"));
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE_LEN);
        let aad = associated_data(kind, key);
        self.cipher
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: &aad,
                },
            )
            .map_err(|_| fail("it was changed, or sealed under another secrets.key"))
    }

    /// A secret's digest: keyed, so that it tells nothing about the value (hex).
    pub fn digest(&self, plain: &[u8]) -> String {
        hex::encode(crate::tokens::hmac_sha256(&self.digest_key[..], plain))
    }

    /// A config's digest: plain SHA-256 (hex), as configs are not secret.
    pub fn config_digest(plain: &[u8]) -> String {
        hex::encode(Sha256::digest(plain))
    }

    /// The stored object for a value: sealed and keyed-digested for a secret, plain for a
    /// config.
    pub(crate) fn stored(
        &self,
        kind: FileKind,
        key: &str,
        name: &str,
        app: Option<String>,
        plain: &[u8],
    ) -> StoredFile {
        let (digest, data) = match kind {
            FileKind::Secret => (self.digest(plain), self.seal(Kind::Secret, key, plain)),
            FileKind::Config => (
                SecretsKey::config_digest(plain),
                base64::engine::general_purpose::STANDARD.encode(plain),
            ),
        };
        StoredFile {
            name: name.to_string(),
            app,
            size: plain.len() as u64,
            digest,
            data,
            meta: Default::default(),
        }
    }

    /// The value of a stored object, opened (a secret) or decoded (a config).
    pub(crate) fn value_of(
        &self,
        kind: FileKind,
        key: &str,
        stored: &StoredFile,
    ) -> Result<Vec<u8>, OpenError> {
        match kind {
            FileKind::Secret => self.open(Kind::Secret, key, &stored.data),
            FileKind::Config => base64::engine::general_purpose::STANDARD
                .decode(&stored.data)
                .map_err(|_| OpenError {
                    key: format!("config/{key}"),
                    why: "it is not base64",
                }),
        }
    }
}

/// The store kind of secrets or configs.
pub(crate) fn store_kind(kind: FileKind) -> Kind {
    match kind {
        FileKind::Secret => Kind::Secret,
        FileKind::Config => Kind::Config,
    }
}

fn associated_data(kind: Kind, key: &str) -> Vec<u8> {
    let mut aad = b"hivemind sealed v1\0".to_vec();
    aad.extend_from_slice(kind.as_str().as_bytes());
    aad.push(0);
    aad.extend_from_slice(key.as_bytes());
    aad
}

/// The secrets key in `{data_dir}/secrets.key` (32 random bytes, hex, mode 0600), created at
/// first start. A file that is there but not a key is an error, never replaced: every secret
/// sealed under it would be lost.
pub fn load_or_create_secrets_key(data_dir: &Path) -> io::Result<SecretsKey> {
    let path = data_dir.join("secrets.key");
    let text = crate::auth::load_or_create_secret_file(&path)?;
    let bytes: [u8; 32] = hex::decode(&text)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{} is not a secrets key (64 hex digits): restore it from a backup; \
                     without it the stored secrets cannot be read",
                    path.display()
                ),
            )
        })?;
    Ok(SecretsKey::new(&bytes))
}
