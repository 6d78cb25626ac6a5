//! The client's errors. A refusal by the server keeps the server's own code, message, field and
//! fix, so that the CLI can print "what" and "how to fix" without knowing any endpoint.

use crate::wire::ErrorDetail;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with a non-2xx status and an error body. The server's message already
    /// names the field at fault, so `field` is for programs, not for display.
    #[error("{message}")]
    Api {
        status: u16,
        code: String,
        message: String,
        field: Option<String>,
        fix: Option<String>,
    },
    /// The request never got an HTTP answer (connection refused, timeout, reset).
    #[error("cannot reach the hivemind server at {url}")]
    Transport {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// A peer accepted the connection but sent no response head in time (a hung agent).
    #[error("no answer from {url} within {}s", .after.as_secs_f64())]
    Timeout {
        url: String,
        after: std::time::Duration,
    },
    /// The server answered 2xx with a body this client does not understand.
    #[error("unexpected response from {url}")]
    Decode {
        url: String,
        #[source]
        source: serde_json::Error,
    },
    /// A streamed answer (logs, exec) broke its format.
    #[error("unexpected stream from {url}: {message}")]
    Protocol { url: String, message: String },
    /// A bare service name matched services in several apps.
    #[error("{name} exists in apps {}: use {}/{name}", join_and(.apps), .apps[0])]
    AmbiguousService { name: String, apps: Vec<String> },
    /// An argument was refused before anything was sent.
    #[error("{message}")]
    InvalidArgument { message: String, fix: String },
}

impl ClientError {
    /// One line saying how to fix the problem, when there is something better to say than the
    /// message itself.
    pub fn fix(&self) -> Option<String> {
        match self {
            ClientError::Api { fix, .. } => fix.clone(),
            ClientError::Transport { .. } => Some(
                "check that the server runs (`hivemind up` or `hivemind server`) and that --server \
                 points at it"
                    .to_string(),
            ),
            ClientError::Timeout { .. } => Some(
                "check that the process at that address runs and is not stuck".to_string(),
            ),
            ClientError::Decode { .. } | ClientError::Protocol { .. } => {
                Some("use a client of the same version as the server".to_string())
            }
            ClientError::AmbiguousService { name, apps } => {
                Some(format!("name the app, e.g. {}/{name}", apps[0]))
            }
            ClientError::InvalidArgument { fix, .. } => Some(fix.clone()),
        }
    }

    /// The HTTP status of a server refusal.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The server's error code (`not_found`, `conflict`, ...) of a server refusal.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Api { code, .. } => Some(code),
            _ => None,
        }
    }

    pub fn is_not_found(&self) -> bool {
        self.status() == Some(404)
    }

    pub fn is_conflict(&self) -> bool {
        self.status() == Some(409)
    }

    pub(crate) fn from_detail(status: u16, detail: ErrorDetail) -> ClientError {
        ClientError::Api {
            status,
            code: detail.code,
            message: detail.message,
            field: detail.field,
            fix: detail.fix,
        }
    }
}

fn join_and(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ambiguous_service_names_every_app() {
        let e = ClientError::AmbiguousService {
            name: "web".into(),
            apps: vec!["a".into(), "b".into()],
        };
        assert_eq!(e.to_string(), "web exists in apps a and b: use a/web");
        let e = ClientError::AmbiguousService {
            name: "web".into(),
            apps: vec!["a".into(), "b".into(), "c".into()],
        };
        assert_eq!(e.to_string(), "web exists in apps a, b and c: use a/web");
    }

    #[test]
    fn api_errors_keep_the_servers_words() {
        let e = ClientError::from_detail(
            400,
            ErrorDetail {
                code: "bad_request".into(),
                message: "replicas: expected a number".into(),
                field: Some("replicas".into()),
                fix: Some("send a whole number".into()),
            },
        );
        assert_eq!(e.to_string(), "replicas: expected a number");
        assert_eq!(e.fix().as_deref(), Some("send a whole number"));
    }
}
