//! Request extractors that turn every malformed input into an `ApiError` naming the field.
//!
//! axum's own `Json` and `Query` rejections are plain text without the field at fault; the CLI
//! needs `{"error": {"field": ...}}`, so bodies are read as bytes and decoded here.
//!
//! Names in requests are checked here once for every route, by what they name, before any
//! handler sees them: path segments by [`check_path`] (a layer on all `/api/v1` routes), query
//! parameters that name objects (`namespace`, `app`, `service`, `name`, `replica`, `node`) by
//! [`Params::parse`]. A value that cannot name anything (`../`, `%00`, 10 kB of text) is a
//! 400 naming the parameter, never a lookup that finds nothing or, worse, something else.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::rejection::RawPathParamsRejection;
use axum::extract::{FromRequest, FromRequestParts, RawPathParams, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hivemind_types::id::{is_dns_label, is_node_name, is_replica_id};
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// Largest request body accepted; a Compose file with its env files fits many times over.
pub(crate) const BODY_LIMIT: usize = 4 * 1024 * 1024;

/// A JSON body decoded into `T`, with errors that name the offending field.
pub(crate) struct JsonBody<T>(pub(crate) T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::TooLarge { limit: BODY_LIMIT }
            } else {
                ApiError::bad_request("body", rejection.body_text(), "send the whole body")
            }
        })?;
        decode_json(&bytes).map(JsonBody)
    }
}

/// Decodes `bytes` as `T`; public to the crate so that core tests can feed raw bodies.
pub(crate) fn decode_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    // serde accepts a JSON array for a struct (fields by position); the API documents objects
    // only, and an array is almost surely a client bug.
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ApiError::bad_request(
            "body",
            "body is not a JSON object",
            "send a JSON object with Content-Type: application/json",
        ));
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(field_error)?;
    // Trailing garbage after the JSON value is an error too.
    de.end().map_err(|e| {
        ApiError::bad_request(
            "body",
            format!("body is not valid JSON: {e}"),
            "send exactly one JSON object",
        )
    })?;
    Ok(value)
}

/// The 400 for a body that does not match the expected type, naming the field.
fn field_error(err: serde_path_to_error::Error<serde_json::Error>) -> ApiError {
    {
        let inner = err.inner();
        let path = err.path().to_string();
        if inner.is_syntax() || inner.is_eof() {
            return ApiError::bad_request(
                "body",
                format!("body is not valid JSON: {inner}"),
                "send a JSON object with Content-Type: application/json",
            );
        }
        // A missing field is reported at its parent, with the name only in the message.
        let text = inner.to_string();
        let field = match backquoted(&text) {
            Some(name) if text.starts_with("missing field") => {
                if path == "." {
                    name.to_string()
                } else {
                    format!("{path}.{name}")
                }
            }
            _ if path == "." => "body".to_string(),
            _ => path,
        };
        ApiError::bad_request(
            field.clone(),
            format!("{field}: {text}"),
            format!("correct {field} as the API reference (/api/v1/openapi.json) describes"),
        )
    }
}

/// The first `name` in a serde message such as "missing field `compose`".
fn backquoted(text: &str) -> Option<&str> {
    let start = text.find('`')? + 1;
    let len = text[start..].find('`')?;
    Some(&text[start..start + len])
}

/// The query string as a map, with typed getters whose errors name the parameter.
#[derive(Debug, Default)]
pub(crate) struct Params(BTreeMap<String, String>);

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        Params::parse(parts.uri.query().unwrap_or(""))
    }
}

impl Params {
    pub(crate) fn parse(query: &str) -> Result<Params, ApiError> {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query).map_err(|e| {
            ApiError::bad_request(
                "query",
                format!("query string cannot be decoded: {e}"),
                "percent-encode the query parameters",
            )
        })?;
        // The last value of a repeated parameter wins, as with most web frameworks.
        let params = Params(pairs.into_iter().collect());
        for (name, value) in &params.0 {
            if let Some(syntax) = NameSyntax::of_param(name) {
                // Empty means absent (see `str`).
                if !value.is_empty() {
                    syntax.check(name, value)?;
                }
            }
        }
        Ok(params)
    }

    /// A text parameter; empty counts as absent, so `?app=` means "any app".
    pub(crate) fn str(&self, name: &str) -> Option<&str> {
        self.0
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    pub(crate) fn u64(&self, name: &str) -> Result<Option<u64>, ApiError> {
        match self.str(name) {
            None => Ok(None),
            Some(v) => v.parse().map(Some).map_err(|_| {
                ApiError::bad_request(
                    name,
                    format!("{name}: {} is not a whole number", shorten(v)),
                    format!("pass {name} as a non-negative integer"),
                )
            }),
        }
    }

    /// `?namespace=`, defaulting to `default`; must be a DNS label.
    pub(crate) fn namespace(&self) -> Result<String, ApiError> {
        let ns = self.str("namespace").unwrap_or("default");
        check_label("namespace", ns, false)?;
        Ok(ns.to_string())
    }
}

/// What a name in a request must look like, by the parameter or path segment carrying it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NameSyntax {
    /// Apps, services, namespaces: DNS labels.
    Label,
    /// `web-3f9k2`: a service's label, a dash, a suffix.
    ReplicaId,
    /// Host names.
    Node,
}

impl NameSyntax {
    fn of_param(name: &str) -> Option<NameSyntax> {
        match name {
            "namespace" | "app" | "service" | "name" => Some(NameSyntax::Label),
            "replica" => Some(NameSyntax::ReplicaId),
            "node" => Some(NameSyntax::Node),
            _ => None,
        }
    }

    /// The syntax of a path segment (`/apps/{name}`, `/replicas/{id}/logs`, ...); a segment
    /// added later without an entry here is held to the loosest one, a node name.
    fn of_segment(name: &str) -> NameSyntax {
        match name {
            "id" => NameSyntax::ReplicaId,
            "node" => NameSyntax::Node,
            other => NameSyntax::of_param(other).unwrap_or(NameSyntax::Node),
        }
    }

    fn check(self, field: &str, value: &str) -> Result<(), ApiError> {
        match self {
            NameSyntax::Label => check_label(field, value, false),
            NameSyntax::ReplicaId if is_replica_id(value) => Ok(()),
            NameSyntax::ReplicaId => Err(ApiError::bad_request(
                field,
                format!("{field}: {} is not a replica id", shorten(value)),
                "name the replica as `hivemind ps` shows it: its service, a dash and lowercase \
                 letters and digits, like web-3f9k2",
            )),
            NameSyntax::Node if is_node_name(value) => Ok(()),
            NameSyntax::Node => Err(ApiError::bad_request(
                field,
                format!(
                    "{field}: {} is not a node name: use 1-253 letters, digits, '-', '.' and \
                     '_', starting and ending with a letter or digit",
                    shorten(value)
                ),
                "name the node as `hivemind node ls` shows it",
            )),
        }
    }
}

/// Middleware: every path segment of the matched route is checked against the syntax of what
/// it names (see [`NameSyntax`]) before the handler runs, so that no handler can forget one. A
/// path that does not decode (percent-encoding that is not UTF-8, like `%FF`) is a 400 too.
pub(crate) async fn check_path(
    params: Result<RawPathParams, RawPathParamsRejection>,
    request: Request,
    next: Next,
) -> Response {
    let params = match params {
        Ok(params) => params,
        Err(rejection) => {
            return ApiError::bad_request(
                "path",
                format!("path: {}", rejection.body_text()),
                "percent-encode path segments as UTF-8",
            )
            .into_response()
        }
    };
    for (name, value) in &params {
        if let Err(e) = NameSyntax::of_segment(name).check(name, value) {
            return e.into_response();
        }
    }
    next.run(request).await
}

/// `s` quoted for an error message, cut after 64 characters: values in requests may be huge.
pub(crate) fn shorten(s: &str) -> String {
    match s.char_indices().nth(64) {
        Some((at, _)) => format!("{:?}... ({} bytes)", &s[..at], s.len()),
        None => format!("{s:?}"),
    }
}

/// Checks a name that becomes part of store keys and DNS names. `semantic` picks 422 (a name the
/// user chose in a body or file) over 400 (a malformed parameter).
pub(crate) fn check_label(field: &str, value: &str, semantic: bool) -> Result<(), ApiError> {
    if is_dns_label(value) {
        return Ok(());
    }
    let message = format!(
        "{field}: {} is not a valid name: use 1-63 lowercase letters, digits and '-', \
         starting with a letter and not ending with '-'",
        shorten(value)
    );
    let fix = format!("choose a {field} like `shop` or `web-api`");
    Err(if semantic {
        ApiError::invalid(field, message, fix)
    } else {
        ApiError::bad_request(field, message, fix)
    })
}

#[cfg(test)]
mod tests {
    use hivemind_client::wire::ScaleRequest;

    use super::*;

    fn field_of(body: &str) -> String {
        let err = decode_json::<ScaleRequest>(body.as_bytes()).unwrap_err();
        assert_eq!(err.status(), StatusCode::BAD_REQUEST, "{body}");
        err.field().unwrap().to_string()
    }

    #[test]
    fn json_errors_name_the_field() {
        assert_eq!(field_of("{"), "body");
        assert_eq!(field_of("[1]"), "body");
        assert_eq!(field_of("{}"), "replicas");
        assert_eq!(field_of(r#"{"replicas": -1}"#), "replicas");
        assert_eq!(field_of(r#"{"replicas": "3"}"#), "replicas");
        assert_eq!(field_of(r#"{"replicas": 1, "revision": true}"#), "revision");
        assert_eq!(field_of(r#"{"replicas": 1, "replica": 2}"#), "replica");
        assert_eq!(field_of(r#"{"replicas": 1} x"#), "body");
        assert_eq!(
            decode_json::<ScaleRequest>(br#"{"replicas": 2}"#)
                .unwrap()
                .replicas,
            2
        );
    }

    #[test]
    fn query_params_are_typed_and_named() {
        let p = Params::parse("since=12&app=&namespace=prod").unwrap();
        assert_eq!(p.u64("since").unwrap(), Some(12));
        assert_eq!(p.str("app"), None);
        assert_eq!(p.namespace().unwrap(), "prod");
        let p = Params::parse("since=-1").unwrap();
        assert_eq!(p.u64("since").unwrap_err().field(), Some("since"));
        assert_eq!(Params::parse("").unwrap().namespace().unwrap(), "default");
    }

    #[test]
    fn names_in_the_query_are_checked_for_every_route() {
        let field = |q: &str| Params::parse(q).unwrap_err().field().map(str::to_string);
        assert_eq!(field("namespace=Prod").as_deref(), Some("namespace"));
        assert_eq!(field("app=..%2F").as_deref(), Some("app"));
        assert_eq!(field("service=%00").as_deref(), Some("service"));
        assert_eq!(field("name=%C3%A9").as_deref(), Some("name"));
        assert_eq!(field("replica=web").as_deref(), Some("replica"));
        assert_eq!(field("node=..%2Fetc").as_deref(), Some("node"));
        let long = format!("app={}", "a".repeat(10_000));
        let err = Params::parse(&long).unwrap_err();
        assert!(err.to_string().len() < 400, "the value is shortened: {err}");
        let p = Params::parse("app=shop&replica=web-3f9k2&node=Host-1.lan&app=&tail=x").unwrap();
        assert_eq!(p.str("replica"), Some("web-3f9k2"));
        assert_eq!(p.str("node"), Some("Host-1.lan"));
        // Parameters that name nothing are left to their getters.
        assert_eq!(p.str("tail"), Some("x"));
    }

    mod properties {
        //! Query strings and bodies from anyone: parsed or refused with a named 400, never a
        //! panic; what a client encodes reads back unchanged.

        use proptest::prelude::*;

        use super::*;

        /// Query text: percent escapes, separators and any characters, in any order.
        fn query() -> impl Strategy<Value = String> {
            let token = prop_oneof![
                prop::sample::select(vec![
                    "&",
                    "=",
                    "%",
                    "%2",
                    "%00",
                    "%FF",
                    "%C3%A9",
                    "%E2%82",
                    "+",
                    ";",
                    "namespace",
                    "app",
                    "service",
                    "name",
                    "replica",
                    "node",
                    "since",
                    "tail",
                    "limit",
                    "1e30",
                    "-1",
                    "NaN",
                    "..%2F",
                    "18446744073709551616",
                ])
                .prop_map(str::to_string),
                ".{0,8}",
            ];
            prop::collection::vec(token, 0..24).prop_map(|t| t.concat())
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            #[test]
            fn any_query_is_parsed_or_refused_naming_a_field(q in query()) {
                match Params::parse(&q) {
                    Ok(p) => {
                        for name in ["since", "tail", "limit", "after", "timeout_ms"] {
                            if let Err(e) = p.u64(name) {
                                prop_assert_eq!(e.field(), Some(name));
                            }
                        }
                        let _ = p.namespace();
                    }
                    Err(e) => {
                        prop_assert_eq!(e.status(), StatusCode::BAD_REQUEST);
                        prop_assert!(e.field().is_some(), "{q:?}: {e}");
                    }
                }
            }

            #[test]
            fn encoded_values_read_back(
                value in ".{0,24}",
                n in any::<u64>(),
                name in "[a-z][a-z0-9-]{0,20}[a-z0-9]",
            ) {
                let q = serde_urlencoded::to_string([
                    ("cursor", value.as_str()),
                    ("tail", &n.to_string()),
                    ("app", &name),
                ])
                .unwrap();
                let p = Params::parse(&q).unwrap();
                prop_assert_eq!(p.str("cursor"), Some(value.as_str()).filter(|v| !v.is_empty()));
                prop_assert_eq!(p.u64("tail").unwrap(), Some(n));
                prop_assert_eq!(p.str("app"), Some(name.as_str()));
            }

            #[test]
            fn any_name_is_accepted_exactly_when_it_has_the_syntax(value in ".{0,70}") {
                let q = serde_urlencoded::to_string([("app", value.as_str()), ("replica", "web-1")]).unwrap();
                let accepted = Params::parse(&q).is_ok();
                prop_assert_eq!(accepted, value.is_empty() || is_dns_label(&value), "{:?}", value);
            }

            #[test]
            fn any_body_is_decoded_or_refused_naming_a_field(body in prop::collection::vec(any::<u8>(), 0..64), text in ".{0,40}") {
                for bytes in [body.as_slice(), text.as_bytes()] {
                    if let Err(e) = decode_json::<ScaleRequest>(bytes) {
                        prop_assert!(e.field().is_some());
                    }
                }
            }
        }
    }
}
