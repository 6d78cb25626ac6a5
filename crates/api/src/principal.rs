//! Who a request comes from ([`Principal`]) and what it may do ([`authorize`]): a pure table,
//! checked for every authenticated route by `auth::authenticate` before the handler runs.
//!
//! The rule: the admin may do anything; a node may read only its own assignment and write only
//! its own report and lease (the calls its agent makes); a join token may only join nodes.
//! Anything else is admin-only, including every read of cluster state, because a node that is
//! broken into must not learn more of the cluster than it is given. Secrets and configs
//! (`/secrets`, `/configs`) are admin-only too; a node gets the values of its own replicas'
//! ones in its assignment, and nothing else.

use std::fmt;

use axum::http::Method;
use percent_encoding::percent_decode_str;

/// The caller of a request, attached to it as an axum extension once authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// The admin token's holder.
    Admin,
    /// A node, by its own credential.
    Node(String),
    /// A join token (`token create --role node`), by its id: it may only join nodes.
    Join(String),
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Principal::Admin => f.write_str("admin"),
            Principal::Node(name) => write!(f, "node:{name}"),
            Principal::Join(id) => write!(f, "join-token:{id}"),
        }
    }
}

impl Principal {
    /// What this principal may do, for people (the 403's fix).
    pub fn may(&self) -> String {
        match self {
            Principal::Admin => "everything".to_string(),
            Principal::Node(name) => format!(
                "a node credential may only GET /api/v1/nodes/{name}/assignment, PUT \
                 /api/v1/nodes/{name}/report, PUT /api/v1/nodes/{name}/lease and GET \
                 /api/v1/nodes/{name}/volumes; use the admin \
                 token for anything else"
            ),
            Principal::Join(_) => "a join token may only POST /api/v1/nodes/{name}/join, which \
                 returns the node's own credential; use that credential for the node's calls"
                .to_string(),
        }
    }
}

/// What a request does, as far as authorization cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    ReadAssignment(String),
    WriteReport(String),
    WriteLease(String),
    /// The volumes kept on the node: its agent removes the data of those that are gone.
    ReadNodeVolumes(String),
    JoinNode(String),
    /// The OpenAPI document: public knowledge, readable by any principal.
    ReadOpenApi,
    /// Any other route: `METHOD /pattern`.
    AdminOnly(String),
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::ReadAssignment(n) => write!(f, "read the assignment of node {n}"),
            Action::WriteReport(n) => write!(f, "write the report of node {n}"),
            Action::WriteLease(n) => write!(f, "renew the lease of node {n}"),
            Action::ReadNodeVolumes(n) => write!(f, "read the volumes of node {n}"),
            Action::JoinNode(n) => write!(f, "join node {n}"),
            Action::ReadOpenApi => f.write_str("read the OpenAPI document"),
            Action::AdminOnly(route) => write!(f, "call {route}"),
        }
    }
}

/// The action of a request with `method` to the route `pattern` (axum's matched path, e.g.
/// `/api/v1/nodes/{node}/report`) at `path` (the request's percent-encoded path).
pub fn action_for(method: &Method, pattern: &str, path: &str) -> Action {
    let route = pattern.strip_prefix("/api/v1").unwrap_or(pattern);
    // The `{node}` segment as the handler's `Path` extractor sees it: percent-decoded.
    let node = || {
        let raw = path
            .strip_prefix("/api/v1")
            .unwrap_or(path)
            .split('/')
            .nth(2)
            .unwrap_or_default();
        percent_decode_str(raw).decode_utf8_lossy().into_owned()
    };
    match (method, route) {
        (&Method::GET, "/nodes/{node}/assignment") => Action::ReadAssignment(node()),
        (&Method::PUT, "/nodes/{node}/report") => Action::WriteReport(node()),
        (&Method::PUT, "/nodes/{node}/lease") => Action::WriteLease(node()),
        (&Method::GET, "/nodes/{node}/volumes") => Action::ReadNodeVolumes(node()),
        (&Method::POST, "/nodes/{node}/join") => Action::JoinNode(node()),
        (&Method::GET, "/openapi.json") => Action::ReadOpenApi,
        _ => Action::AdminOnly(format!("{method} {pattern}")),
    }
}

/// A principal asked for an action it may not do (403).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{principal} may not {action}")]
pub struct Forbidden {
    pub principal: String,
    pub action: String,
    /// What the principal may do instead.
    pub may: String,
}

/// Whether `principal` may do `action`.
pub fn authorize(principal: &Principal, action: &Action) -> Result<(), Forbidden> {
    let allowed = match (principal, action) {
        (Principal::Admin, _) | (_, Action::ReadOpenApi) => true,
        (
            Principal::Node(me),
            Action::ReadAssignment(node)
            | Action::WriteReport(node)
            | Action::WriteLease(node)
            | Action::ReadNodeVolumes(node),
        ) => me == node,
        (Principal::Join(_), Action::JoinNode(_)) => true,
        _ => false,
    };
    if allowed {
        Ok(())
    } else {
        Err(Forbidden {
            principal: principal.to_string(),
            action: action.to_string(),
            may: principal.may(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every route the router has (and the lease route), as `(method, pattern, example path)`.
    const ROUTES: &[(&str, &str, &str)] = &[
        ("POST", "/api/v1/apps", "/api/v1/apps"),
        ("GET", "/api/v1/apps", "/api/v1/apps"),
        ("GET", "/api/v1/apps/{name}", "/api/v1/apps/shop"),
        ("DELETE", "/api/v1/apps/{name}", "/api/v1/apps/shop"),
        ("GET", "/api/v1/services", "/api/v1/services"),
        (
            "GET",
            "/api/v1/services/{app}/{name}",
            "/api/v1/services/shop/web",
        ),
        (
            "POST",
            "/api/v1/services/{app}/{name}/scale",
            "/api/v1/services/shop/web/scale",
        ),
        (
            "POST",
            "/api/v1/services/{app}/{name}/stop",
            "/api/v1/services/shop/web/stop",
        ),
        (
            "POST",
            "/api/v1/services/{app}/{name}/start",
            "/api/v1/services/shop/web/start",
        ),
        ("POST", "/api/v1/apps/{name}/stop", "/api/v1/apps/shop/stop"),
        (
            "POST",
            "/api/v1/apps/{name}/start",
            "/api/v1/apps/shop/start",
        ),
        (
            "GET",
            "/api/v1/services/{app}/{name}/logs",
            "/api/v1/services/shop/web/logs",
        ),
        ("GET", "/api/v1/replicas", "/api/v1/replicas"),
        (
            "GET",
            "/api/v1/replicas/{id}/logs",
            "/api/v1/replicas/web-a/logs",
        ),
        (
            "POST",
            "/api/v1/replicas/{id}/exec",
            "/api/v1/replicas/web-a/exec",
        ),
        ("GET", "/api/v1/nodes", "/api/v1/nodes"),
        ("DELETE", "/api/v1/nodes/{node}", "/api/v1/nodes/n1"),
        (
            "GET",
            "/api/v1/nodes/{node}/assignment",
            "/api/v1/nodes/n1/assignment",
        ),
        (
            "GET",
            "/api/v1/nodes/{node}/assignment",
            "/api/v1/nodes/n2/assignment",
        ),
        (
            "PUT",
            "/api/v1/nodes/{node}/report",
            "/api/v1/nodes/n1/report",
        ),
        (
            "PUT",
            "/api/v1/nodes/{node}/report",
            "/api/v1/nodes/n2/report",
        ),
        (
            "PUT",
            "/api/v1/nodes/{node}/lease",
            "/api/v1/nodes/n1/lease",
        ),
        (
            "PUT",
            "/api/v1/nodes/{node}/lease",
            "/api/v1/nodes/n2/lease",
        ),
        ("POST", "/api/v1/nodes/{node}/join", "/api/v1/nodes/n1/join"),
        ("POST", "/api/v1/nodes/{node}/join", "/api/v1/nodes/n3/join"),
        (
            "GET",
            "/api/v1/nodes/{node}/volumes",
            "/api/v1/nodes/n1/volumes",
        ),
        (
            "GET",
            "/api/v1/nodes/{node}/volumes",
            "/api/v1/nodes/n2/volumes",
        ),
        ("GET", "/api/v1/volumes", "/api/v1/volumes"),
        ("POST", "/api/v1/volumes", "/api/v1/volumes"),
        ("GET", "/api/v1/volumes/{name}", "/api/v1/volumes/data"),
        ("DELETE", "/api/v1/volumes/{name}", "/api/v1/volumes/data"),
        ("GET", "/api/v1/events", "/api/v1/events"),
        ("POST", "/api/v1/tokens", "/api/v1/tokens"),
        ("GET", "/api/v1/tokens", "/api/v1/tokens"),
        ("DELETE", "/api/v1/tokens/{token}", "/api/v1/tokens/0a1b2c"),
        ("POST", "/api/v1/secrets", "/api/v1/secrets"),
        ("GET", "/api/v1/secrets", "/api/v1/secrets"),
        (
            "GET",
            "/api/v1/secrets/{secret}",
            "/api/v1/secrets/db_password",
        ),
        (
            "DELETE",
            "/api/v1/secrets/{secret}",
            "/api/v1/secrets/db_password",
        ),
        ("POST", "/api/v1/configs", "/api/v1/configs"),
        ("GET", "/api/v1/configs", "/api/v1/configs"),
        (
            "GET",
            "/api/v1/configs/{config}",
            "/api/v1/configs/nginx.conf",
        ),
        (
            "DELETE",
            "/api/v1/configs/{config}",
            "/api/v1/configs/nginx.conf",
        ),
        ("GET", "/api/v1/openapi.json", "/api/v1/openapi.json"),
    ];

    /// What each principal may call, as `METHOD path` of [`ROUTES`]; everything else is 403.
    fn allowed(principal: &Principal) -> Vec<&'static str> {
        match principal {
            Principal::Admin => ROUTES.iter().map(|r| r.2).collect(),
            Principal::Node(_) => vec![
                "/api/v1/nodes/n1/assignment",
                "/api/v1/nodes/n1/report",
                "/api/v1/nodes/n1/lease",
                "/api/v1/nodes/n1/volumes",
                "/api/v1/openapi.json",
            ],
            Principal::Join(_) => vec![
                "/api/v1/nodes/n1/join",
                "/api/v1/nodes/n3/join",
                "/api/v1/openapi.json",
            ],
        }
    }

    #[test]
    fn the_authorization_table() {
        for principal in [
            Principal::Admin,
            Principal::Node("n1".into()),
            Principal::Join("0a1b".into()),
        ] {
            let may = allowed(&principal);
            for &(method, pattern, path) in ROUTES {
                let method: Method = method.parse().unwrap();
                let action = action_for(&method, pattern, path);
                let got = authorize(&principal, &action);
                assert_eq!(
                    got.is_ok(),
                    may.contains(&path),
                    "{principal} {method} {path}: {got:?}"
                );
                if let Err(e) = got {
                    assert_eq!(e.principal, principal.to_string());
                    assert!(!e.may.is_empty());
                }
            }
        }
    }

    #[test]
    fn the_node_segment_is_compared_decoded_and_whole() {
        let node = Principal::Node("n1".into());
        let get = |path: &str| {
            authorize(
                &node,
                &action_for(&Method::GET, "/api/v1/nodes/{node}/assignment", path),
            )
        };
        assert!(get("/api/v1/nodes/%6E1/assignment").is_ok());
        for other in ["n10", "n", "N1", "n1%2F..", "%2E%2E"] {
            assert!(
                get(&format!("/api/v1/nodes/{other}/assignment")).is_err(),
                "{other}"
            );
        }
    }

    #[test]
    fn forbidden_names_the_principal_and_what_it_may_do() {
        let e = authorize(
            &Principal::Node("n1".into()),
            &action_for(&Method::POST, "/api/v1/apps", "/api/v1/apps"),
        )
        .unwrap_err();
        assert_eq!(e.to_string(), "node:n1 may not call POST /api/v1/apps");
        assert!(e.may.contains("/api/v1/nodes/n1/report"), "{}", e.may);
    }
}
