//! `ports` and `expose`: Compose's short syntax (`"127.0.0.1:8080:80/udp"`, ranges such as
//! `"8000-8001:80-81"`) and long syntax (`{target, published, host_ip, protocol, mode}`), turned
//! into `PortSpec`s.
//!
//! A short-syntax entry without a host port (`"80"`) publishes on a random host port in Docker
//! Compose; Hivemind has no ephemeral published ports, so such an entry is only exposed to the
//! app's other services (`published: None`), like `expose`.

use std::net::IpAddr;

use serde_yaml_ng::Value;

use super::error::Problems;
use super::keys::unknown_key;
use super::value::{expect_scalar, index, join, string_entries, type_error};
use super::warnings::Unhonoured;
use crate::spec::{PortProtocol, PortSpec};

const SHORT_FIX: &str =
    "use \"HOST:CONTAINER\" such as \"8080:80\", or the long syntax {target: 80, published: 8080}";

/// Ranges expand to one `PortSpec` per port; a service may not expand past this many, so that a
/// hostile file cannot make the reader allocate without bound.
const MAX_PORTS: usize = 65_536;

const LONG_KEYS: &[&str] = &[
    "target",
    "published",
    "host_ip",
    "protocol",
    "mode",
    "name",
    "app_protocol",
];

/// Reads the `ports` list of a service.
pub(crate) fn read_ports(p: &mut Problems, path: &str, value: &Value) -> Vec<PortSpec> {
    if value.is_null() {
        return Vec::new();
    }
    let Value::Sequence(items) = value else {
        type_error(p, path, "a list", value, "ports: [\"8080:80\"]");
        return Vec::new();
    };
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let item_path = index(path, i);
        if out.len() > MAX_PORTS {
            too_many(p, &item_path);
            break;
        }
        match item {
            Value::String(s) => match parse_short(s) {
                Ok(ports) => {
                    if ports.iter().any(binds_one_address) {
                        p.note(&item_path, Unhonoured::HostIp);
                    }
                    out.extend(ports)
                }
                Err(why) => p.push(
                    &item_path,
                    format!("{s:?} is not a valid port mapping{why}"),
                    SHORT_FIX,
                ),
            },
            Value::Number(n) => match n.as_u64().and_then(|n| u16::try_from(n).ok()) {
                Some(target) if target > 0 => out.push(PortSpec {
                    target,
                    published: None,
                    host_ip: None,
                    protocol: PortProtocol::Tcp,
                }),
                _ => p.push(
                    &item_path,
                    format!("{n} is not a valid port: ports are 1 to 65535"),
                    SHORT_FIX,
                ),
            },
            Value::Mapping(_) => {
                if let Some(port) = read_long(p, &item_path, item) {
                    if binds_one_address(&port) {
                        p.note(join(&item_path, "host_ip"), Unhonoured::HostIp);
                    }
                    out.push(port);
                }
            }
            other => type_error(
                p,
                &item_path,
                "a string or a mapping",
                other,
                "- \"8080:80\"",
            ),
        }
    }
    out
}

/// Reads the `expose` list: container ports, ranges and protocols, never published.
pub(crate) fn read_expose(p: &mut Problems, path: &str, value: &Value) -> Vec<PortSpec> {
    if value.is_null() {
        return Vec::new();
    }
    let Value::Sequence(items) = value else {
        type_error(p, path, "a list", value, "expose: [\"80\"]");
        return Vec::new();
    };
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let item_path = index(path, i);
        if out.len() > MAX_PORTS {
            too_many(p, &item_path);
            break;
        }
        let Some(text) = expect_scalar(p, &item_path, item, "- \"80\"") else {
            continue;
        };
        let parsed = split_protocol(&text).and_then(|(spec, protocol)| {
            let (first, last) = parse_range(spec)?;
            Ok((first..=last)
                .map(|target| PortSpec {
                    target,
                    published: None,
                    host_ip: None,
                    protocol,
                })
                .collect::<Vec<_>>())
        });
        match parsed {
            Ok(ports) => out.extend(ports),
            Err(why) => p.push(
                &item_path,
                format!("{text:?} is not a valid port{why}"),
                "use a container port such as \"80\", a range such as \"8000-8010\", or \"53/udp\"",
            ),
        }
    }
    out
}

/// A host address other than "any": Docker binds only it, Hivemind's ingress ignores it.
fn binds_one_address(port: &PortSpec) -> bool {
    port.host_ip
        .as_deref()
        .and_then(|ip| ip.parse::<IpAddr>().ok())
        .is_some_and(|ip| !ip.is_unspecified())
}

fn too_many(p: &mut Problems, path: &str) {
    p.push(
        path,
        format!("the ranges expand to more than {MAX_PORTS} ports"),
        "list fewer or shorter port ranges",
    );
}

/// Parses `[[HOST_IP:][HOST[-HOST]]:]CONTAINER[-CONTAINER][/PROTOCOL]`. The error text starts
/// with `: ` so that it reads as a reason after "is not a valid port mapping".
fn parse_short(text: &str) -> Result<Vec<PortSpec>, String> {
    let (spec, protocol) = split_protocol(text.trim())?;
    let (host_ip, rest) = split_host_ip(spec)?;
    let (host, container) = match rest.rsplit_once(':') {
        Some((host, container)) => (Some(host), container),
        None => (None, rest),
    };
    let (c_first, c_last) = parse_range(container)?;
    let count = u32::from(c_last - c_first) + 1;
    let published: Vec<Option<u16>> = match host {
        // `IP::80` leaves the host port empty, which Compose reads as "any port".
        None | Some("") => vec![None; count as usize],
        Some(host) => {
            let (h_first, h_last) = parse_range(host)?;
            if u32::from(h_last - h_first) + 1 != count {
                return Err(": the host and container port ranges differ in length".to_string());
            }
            (h_first..=h_last).map(Some).collect()
        }
    };
    Ok((c_first..=c_last)
        .zip(published)
        .map(|(target, published)| PortSpec {
            target,
            published,
            host_ip: host_ip.clone(),
            protocol,
        })
        .collect())
}

fn split_protocol(text: &str) -> Result<(&str, PortProtocol), String> {
    match text.rsplit_once('/') {
        None => Ok((text, PortProtocol::Tcp)),
        Some((spec, proto)) => Ok((spec, parse_protocol(proto)?)),
    }
}

fn parse_protocol(proto: &str) -> Result<PortProtocol, String> {
    match proto {
        "tcp" => Ok(PortProtocol::Tcp),
        "udp" => Ok(PortProtocol::Udp),
        "sctp" => Err(": sctp is not supported, only tcp and udp".to_string()),
        other => Err(format!(": unknown protocol {other:?}, use tcp or udp")),
    }
}

/// Splits a leading host address off: `127.0.0.1:8080:80` or `[::1]:8080:80`.
fn split_host_ip(spec: &str) -> Result<(Option<String>, &str), String> {
    if let Some(rest) = spec.strip_prefix('[') {
        let (ip, rest) = rest
            .split_once("]:")
            .ok_or_else(|| ": an IPv6 address in brackets must be followed by `:`".to_string())?;
        let ip = parse_ip(ip)?;
        return Ok((Some(ip), rest));
    }
    match spec.matches(':').count() {
        0 | 1 => Ok((None, spec)),
        2 => match spec.split_once(':').unwrap_or(("", spec)) {
            // `:2283:2283`: an empty host address is "any", as Docker reads it.
            ("", rest) => Ok((None, rest)),
            (ip, rest) => Ok((Some(parse_ip(ip)?), rest)),
        },
        _ => Err(
            ": too many `:`; write an IPv6 host address in brackets, like [::1]:8080:80"
                .to_string(),
        ),
    }
}

fn parse_ip(ip: &str) -> Result<String, String> {
    ip.parse::<IpAddr>()
        .map(|ip| ip.to_string())
        .map_err(|_| format!(": {ip:?} is not an IP address"))
}

/// Parses `80` or `8000-8010` into an inclusive range.
fn parse_range(text: &str) -> Result<(u16, u16), String> {
    let (first, last) = match text.split_once('-') {
        Some((a, b)) => (parse_port(a)?, parse_port(b)?),
        None => {
            let port = parse_port(text)?;
            (port, port)
        }
    };
    if last < first {
        return Err(format!(": the range {text:?} ends before it starts"));
    }
    Ok((first, last))
}

fn parse_port(text: &str) -> Result<u16, String> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(": {text:?} is not a port number"));
    }
    match text.parse::<u32>() {
        Ok(n @ 1..=65535) => Ok(n as u16),
        _ => Err(format!(": port {text} is out of range 1-65535")),
    }
}

/// Reads one long-syntax entry.
fn read_long(p: &mut Problems, path: &str, value: &Value) -> Option<PortSpec> {
    let Value::Mapping(map) = value else {
        return None;
    };
    let problems_before = p.len();
    let mut target = None;
    let mut published = None;
    let mut host_ip = None;
    let mut protocol = PortProtocol::Tcp;
    for (key, v) in string_entries(p, path, map) {
        let key_path = join(path, &key);
        match key.as_str() {
            "target" | "published" => {
                let text = match v {
                    Value::Number(n) => n.to_string(),
                    Value::String(s) => s.trim().to_string(),
                    other => {
                        type_error(p, &key_path, "a port number", other, "target: 80");
                        continue;
                    }
                };
                match parse_port(&text) {
                    Ok(port) if key == "target" => target = Some(port),
                    Ok(port) => published = Some(port),
                    Err(_) if text.contains('-') => p.push(
                        &key_path,
                        format!("{text:?} is a port range"),
                        "ranges work only in the short syntax, like \"8000-8001:80-81\"",
                    ),
                    Err(why) => p.push(
                        &key_path,
                        format!("{text:?} is not a valid port{why}"),
                        "use a port number from 1 to 65535",
                    ),
                }
            }
            "host_ip" => {
                if let Some(text) = expect_scalar(p, &key_path, v, "host_ip: 127.0.0.1") {
                    match parse_ip(text.trim()) {
                        Ok(ip) => host_ip = Some(ip),
                        Err(why) => p.push(
                            &key_path,
                            format!("not a valid host address{why}"),
                            "use an IPv4 or IPv6 address such as 127.0.0.1",
                        ),
                    }
                }
            }
            "protocol" => {
                if let Some(text) = expect_scalar(p, &key_path, v, "protocol: udp") {
                    match parse_protocol(text.trim()) {
                        Ok(proto) => protocol = proto,
                        Err(why) => p.push(
                            &key_path,
                            format!("{text:?} is not a valid protocol{why}"),
                            "use tcp or udp",
                        ),
                    }
                }
            }
            "mode" => {
                // Hivemind always publishes through the routing mesh; `host` and `ingress` are
                // both accepted so that Swarm and Compose files load unchanged, and `host` is
                // noted for a warning.
                if let Some(text) = expect_scalar(p, &key_path, v, "mode: ingress") {
                    if text == "host" {
                        p.note(&key_path, Unhonoured::PortModeHost);
                    } else if text != "ingress" {
                        p.push(
                            &key_path,
                            format!("{text:?} is not a port mode"),
                            "use ingress or host",
                        );
                    }
                }
            }
            // Descriptive only.
            "name" | "app_protocol" => {
                expect_scalar(p, &key_path, v, "name: web");
            }
            other => unknown_key(p, &key_path, other, LONG_KEYS.iter().copied()),
        }
    }
    if target.is_none() && p.len() == problems_before {
        p.push(
            join(path, "target"),
            "the long syntax needs `target`, the port inside the container",
            "add target, like {target: 80, published: 8080}",
        );
    }
    if p.len() != problems_before {
        return None;
    }
    Some(PortSpec {
        target: target?,
        published,
        host_ip,
        protocol,
    })
}
