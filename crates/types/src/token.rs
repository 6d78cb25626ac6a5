//! Credentials: join tokens and node credentials as stored (`Kind::Token`), their wire format
//! `hm1.<id>.<secret>`, and the one constant-time comparison every secret check uses.
//!
//! The store never holds a secret, only its SHA-256 (the API hashes; this crate does no
//! crypto). The id is public: it names the token in `token ls` and `token rm` and is the store
//! key, so that checking a presented token is one keyed read.

use serde::{Deserialize, Serialize};

use crate::object::Meta;

/// The version prefix of every token this server issues, so that a future format can coexist.
pub const TOKEN_PREFIX: &str = "hm1.";

/// The prefix of node credential ids: `n-{node}`. Join token ids are lowercase hex, which has
/// no `n`, so the two never collide.
pub const NODE_CREDENTIAL_PREFIX: &str = "n-";

/// What a token lets its holder do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TokenRole {
    /// A join token (`hivemind token create --role node`): it may only join nodes, any number
    /// of them; each join returns that node's own credential.
    Node,
    /// One node's credential, returned by a join: authenticates as that node and nothing more.
    NodeCredential,
}

impl TokenRole {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenRole::Node => "node",
            TokenRole::NodeCredential => "node-credential",
        }
    }
}

/// A stored credential. Key: `id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Token {
    pub id: String,
    pub role: TokenRole,
    /// The node a credential belongs to; `None` for join tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Lowercase hex SHA-256 of the secret part.
    pub secret_sha256: String,
    /// Unix milliseconds after which the token is refused; `None`: until removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<u64>,
    /// Who issued it: `admin`, `up`, or `join:{id}` of the join token a node joined with.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub issued_by: String,
    #[serde(default)]
    pub meta: Meta,
}

impl Token {
    /// The id of `node`'s credential. One per node, so a re-issue replaces the previous one.
    pub fn credential_id(node: &str) -> String {
        format!("{NODE_CREDENTIAL_PREFIX}{node}")
    }

    pub fn expired(&self, now_ms: u64) -> bool {
        self.expires_at.is_some_and(|at| now_ms >= at)
    }
}

/// `hm1.<id>.<secret>` split into id and secret; `None` for anything else (the admin token, a
/// typo). The secret is hex, so the last `.` ends the id, which may contain dots (node names).
pub fn parse_token(text: &str) -> Option<(&str, &str)> {
    let (id, secret) = text.strip_prefix(TOKEN_PREFIX)?.rsplit_once('.')?;
    let hex = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit());
    (!id.is_empty() && hex(secret)).then_some((id, secret))
}

/// The text of a token with `id` and `secret`.
pub fn format_token(id: &str, secret: &str) -> String {
    format!("{TOKEN_PREFIX}{id}.{secret}")
}

/// Whether `a` and `b` are equal, in time that depends only on their lengths (which are not
/// secret: tokens and hashes have fixed sizes), never on where they first differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let len = a.len().max(b.len());
    let mut diff = u8::from(a.len() != b.len());
    for i in 0..len {
        diff |= a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0);
    }
    diff == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_parse_only_in_their_format() {
        assert_eq!(parse_token("hm1.0a1b.ff00"), Some(("0a1b", "ff00")));
        assert_eq!(
            parse_token("hm1.n-web.example.com.abcdef"),
            Some(("n-web.example.com", "abcdef"))
        );
        for bad in [
            "",
            "hm1.",
            "hm1.id",
            "hm1..abc",
            "hm1.id.",
            "hm1.id.xyz",
            "hm2.id.abc",
            "0123456789abcdef",
        ] {
            assert_eq!(parse_token(bad), None, "{bad:?}");
        }
        assert_eq!(format_token("n-a", "00"), "hm1.n-a.00");
        assert_eq!(Token::credential_id("web-1"), "n-web-1");
    }

    #[test]
    fn equal_means_equal_bytes() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(constant_time_eq(b"", b""));
        for (a, b) in [(&b"abc"[..], &b"abd"[..]), (b"abc", b"ab"), (b"", b"a")] {
            assert!(!constant_time_eq(a, b), "{a:?} {b:?}");
            assert!(!constant_time_eq(b, a), "{b:?} {a:?}");
        }
    }

    #[test]
    fn expiry_is_inclusive_and_optional() {
        let mut t = Token {
            id: "ab".into(),
            role: TokenRole::Node,
            node: None,
            secret_sha256: String::new(),
            expires_at: Some(100),
            issued_by: String::new(),
            meta: Meta::default(),
        };
        assert!(!t.expired(99));
        assert!(t.expired(100));
        t.expires_at = None;
        assert!(!t.expired(u64::MAX));
    }
}
