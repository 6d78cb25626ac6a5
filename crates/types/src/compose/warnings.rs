//! Keys the reader accepts but Hivemind does not act on (yet), and the warnings that say so.
//!
//! Files written for Docker Compose or Swarm should load unchanged, so a key whose absence is
//! harmless is read and checked rather than refused; doing something else without a word would
//! be dishonest, though. The reader notes each such key where it reads it (with its exact path);
//! [`warnings`] words them for the deploy response, the CLI prints them, and `--strict` turns
//! them into a 422. To honour a key, delete its variant here and its `note` call in the reader.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::ComposeApp;

/// A key that is read but not acted on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unhonoured {
    /// `x-hivemind.strategy`: no rollout engine yet.
    Strategy,
    /// `x-hivemind.allow_from`: no network policy yet.
    AllowFrom,
    /// `x-hivemind.canary`: checked for shape, not kept.
    Canary,
    /// `x-hivemind.ab`: checked for shape, not kept.
    Ab,
    /// `ports[].host_ip`: published ports listen on the node's ingress address.
    HostIp,
    /// `ports[].mode: host`: every port goes through the routing mesh.
    PortModeHost,
    /// `env_file[].format`: every env file is read as a `.env` file.
    EnvFileFormat,
    /// `networks.NAME.labels`: networks carry no labels.
    NetworkLabels,
    /// A key a service works without (`tty`, `dns`, `deploy.placement`...), with what happens
    /// instead (see `keys`).
    Ignored(&'static str),
    /// `profiles`: the service is not deployed (no profile is enabled).
    Profiles,
    /// `networks.NAME.name`: the network is named by its key.
    NetworkName,
    /// `networks.NAME.ipam` / `driver_opts`: addresses come from the cluster's plan.
    NetworkAddressing,
    /// `networks.NAME.external`: the app gets a network of its own.
    ExternalNetwork,
}

/// One noted key: where it is in the file and which it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// The key path, like `services.web.x-hivemind.allow_from` or `services.web.ports[1].host_ip`.
    pub path: String,
    pub key: Unhonoured,
}

/// A key of the file that Hivemind read but does not honour, and what it does instead.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Warning {
    /// The service the key is on; `None` for keys outside `services` (`networks.back.labels`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// The key path in the file, like `services.web.x-hivemind.allow_from`.
    pub key: String,
    /// What happens instead: lowercase, no full stop.
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// The warnings for every key of `app` that is read but not honoured, in file order (services
/// first, then the rest of the file).
pub fn warnings(app: &ComposeApp) -> Vec<Warning> {
    let mut out: Vec<Warning> = app
        .unhonoured
        .iter()
        .map(|note| {
            let service = service_of(&note.path);
            Warning {
                message: message(note.key, service.as_deref().unwrap_or("the service")),
                service,
                key: note.path.clone(),
            }
        })
        .collect();
    // Stable: the reader's order within each group is the file's.
    out.sort_by_key(|w| w.service.is_none());
    out
}

/// The service of `services.web.…` (or `services."meet.jitsi".…`) by its DNS name, the name
/// its objects have (`meet-jitsi`).
fn service_of(path: &str) -> Option<String> {
    let rest = path.strip_prefix("services.")?;
    let (name, _) = super::value::first_key(rest)?;
    Some(super::names::dns_name(super::names::Kind::Service, &name))
}

fn message(key: Unhonoured, service: &str) -> String {
    match key {
        Unhonoured::Strategy => format!(
            "not honoured yet: rollout strategies are not implemented; when {service}'s \
             containers change, all its replicas are replaced at once"
        ),
        Unhonoured::AllowFrom => format!(
            "not enforced yet: every service on a network {service} is on can connect to it; \
             put {service} on a network of its own with only the allowed services to restrict it"
        ),
        Unhonoured::Canary => format!(
            "not honoured yet: canary rollouts are not implemented; when {service}'s \
             containers change, all its replicas are replaced at once"
        ),
        Unhonoured::Ab => format!(
            "not honoured yet: A/B routing is not implemented; requests go to every replica of \
             {service} whatever their headers"
        ),
        Unhonoured::HostIp => {
            "the host address is ignored: published ports listen on the node's ingress \
             address (the agent's --ingress-bind, 0.0.0.0 by default)"
                .to_string()
        }
        Unhonoured::PortModeHost => {
            "ignored: the port is published on every node through the routing mesh, as with \
             mode: ingress"
                .to_string()
        }
        Unhonoured::EnvFileFormat => {
            "ignored: the file is read as a .env file (quotes and ${VAR} references are \
             interpreted)"
                .to_string()
        }
        Unhonoured::NetworkLabels => "ignored: networks carry no labels".to_string(),
        Unhonoured::Ignored(message) => message.to_string(),
        Unhonoured::Profiles => format!(
            "{service} is not deployed: as with docker compose without --profile, services \
             with profiles are left out, and Hivemind has no --profile yet"
        ),
        Unhonoured::NetworkName => "ignored: the network is this app's own and is named by its \
             key in the file"
            .to_string(),
        Unhonoured::NetworkAddressing => "ignored: replica addresses come from the cluster's \
             address plan and the network takes no driver options"
            .to_string(),
        Unhonoured::ExternalNetwork => "the network is made for this app: Hivemind networks \
             belong to one app, so containers of other apps or outside Hivemind are not on it \
             (publish a port to reach the app from outside)"
            .to_string(),
    }
}
