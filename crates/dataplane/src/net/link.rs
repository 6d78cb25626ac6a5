//! Links, addresses and routes through rtnetlink: the node bridge, the veth pairs, and the
//! container side of each pair inside its namespace.
//!
//! Each public operation opens its own netlink connection and spawns it on the current
//! runtime. A connection kept in `NodeNet` would be tied to the runtime that created it, and
//! teardown from a test's drop guard (which runs on a runtime of its own) would hang on it.
//! Work inside a replica's namespace builds a single-threaded runtime on the namespace thread
//! (see `netns::run_in`), because a netlink socket belongs to the namespace it was opened in.
//! This module decides nothing about names or addresses; `net/mod.rs` does.

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;

use futures::TryStreamExt;
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::link::{
    InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use rtnetlink::{Handle, LinkBridge, LinkBridgePort, LinkMessageBuilder, LinkUnspec, LinkVeth};
use rtnetlink::{LinkMessageBuilder as Builder, RouteMessageBuilder};

use super::NetError;

/// Name of the container side of every veth pair, inside the replica's namespace.
pub(crate) const CONTAINER_IFNAME: &str = "eth0";

const ENODEV: i32 = 19;
const EEXIST: i32 = 17;
const ENOENT: i32 = 2;
const EADDRNOTAVAIL: i32 = 99;
const EPERM: i32 = 1;

/// What we need to know about a link.
#[derive(Debug, Clone)]
pub(crate) struct Link {
    pub(crate) index: u32,
    pub(crate) name: String,
    pub(crate) kind: Option<InfoKind>,
    pub(crate) controller: Option<u32>,
    pub(crate) up: bool,
}

impl Link {
    fn from_message(msg: &LinkMessage) -> Link {
        let mut link = Link {
            index: msg.header.index,
            name: String::new(),
            kind: None,
            controller: None,
            up: msg.header.flags.contains(LinkFlags::Up),
        };
        for attr in &msg.attributes {
            match attr {
                LinkAttribute::IfName(name) => link.name = name.clone(),
                LinkAttribute::Controller(index) => link.controller = Some(*index),
                LinkAttribute::LinkInfo(infos) => {
                    for info in infos {
                        if let LinkInfo::Kind(kind) = info {
                            link.kind = Some(kind.clone());
                        }
                    }
                }
                _ => {}
            }
        }
        link
    }
}

/// The kernel's errno in a netlink error, as a positive number.
pub(crate) fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(msg) => Some(-msg.raw_code()),
        _ => None,
    }
}

fn nl_err(op: String, e: rtnetlink::Error) -> NetError {
    let hint = match errno(&e) {
        Some(EPERM) => Some("run the agent as root: it needs CAP_NET_ADMIN"),
        _ => None,
    };
    NetError::Netlink {
        op,
        hint,
        source: e,
    }
}

/// Opens a netlink connection in the calling thread's namespace.
pub(crate) fn connect() -> Result<Handle, NetError> {
    let (conn, handle, _) =
        rtnetlink::new_connection().map_err(|e| NetError::io("open a netlink socket".into(), e))?;
    tokio::spawn(conn);
    Ok(handle)
}

pub(crate) async fn get(handle: &Handle, name: &str) -> Result<Option<Link>, NetError> {
    let mut stream = handle.link().get().match_name(name.to_string()).execute();
    match stream.try_next().await {
        Ok(Some(msg)) => Ok(Some(Link::from_message(&msg))),
        Ok(None) => Ok(None),
        Err(e) if matches!(errno(&e), Some(ENODEV)) => Ok(None),
        Err(e) => Err(nl_err(format!("look up link {name}"), e)),
    }
}

pub(crate) async fn list(handle: &Handle) -> Result<Vec<Link>, NetError> {
    let messages: Vec<LinkMessage> = handle
        .link()
        .get()
        .execute()
        .try_collect()
        .await
        .map_err(|e| nl_err("list links".into(), e))?;
    Ok(messages.iter().map(Link::from_message).collect())
}

/// Deletes a link by index; one that is already gone is not an error.
pub(crate) async fn delete(handle: &Handle, link: &Link, op: String) -> Result<(), NetError> {
    match handle.link().del(link.index).execute().await {
        Ok(()) => Ok(()),
        Err(e) if matches!(errno(&e), Some(ENODEV) | Some(ENOENT)) => Ok(()),
        Err(e) => Err(nl_err(op, e)),
    }
}

/// Creates the bridge if needed, gives it exactly `gateway/prefix_len` as IPv4 address (a
/// node re-joined with another subnet leaves an old one behind) and brings it up.
pub(crate) async fn ensure_bridge(
    handle: &Handle,
    name: &str,
    gateway: Ipv4Addr,
    prefix_len: u8,
) -> Result<Link, NetError> {
    let link = match get(handle, name).await? {
        Some(link) => link,
        None => {
            let msg = LinkBridge::new(name).build();
            match handle.link().add(msg).execute().await {
                Ok(()) => {}
                // Another agent start raced us to it; fine, it is the same bridge.
                Err(e) if errno(&e) == Some(EEXIST) => {}
                Err(e) => return Err(nl_err(format!("create bridge {name}"), e)),
            }
            get(handle, name).await?.ok_or_else(|| {
                NetError::Internal(format!("bridge {name} vanished right after creation"))
            })?
        }
    };
    if link.kind != Some(InfoKind::Bridge) {
        return Err(NetError::Config(format!(
            "link {name} exists but is not a bridge ({:?}); pick another bridge name or delete it",
            link.kind
        )));
    }
    set_only_address(
        handle,
        &link,
        gateway,
        prefix_len,
        &format!("bridge {name}"),
    )
    .await?;
    set_up(handle, &link, &format!("bridge {name}")).await?;
    Ok(link)
}

/// Makes `ip/prefix_len` the link's only IPv4 address.
async fn set_only_address(
    handle: &Handle,
    link: &Link,
    ip: Ipv4Addr,
    prefix_len: u8,
    what: &str,
) -> Result<(), NetError> {
    let current: Vec<_> = handle
        .address()
        .get()
        .set_link_index_filter(link.index)
        .execute()
        .try_collect()
        .await
        .map_err(|e| nl_err(format!("list addresses of {what}"), e))?;
    let mut present = false;
    for msg in current {
        let addr = msg.attributes.iter().find_map(|a| match a {
            AddressAttribute::Local(IpAddr::V4(a)) | AddressAttribute::Address(IpAddr::V4(a)) => {
                Some(*a)
            }
            _ => None,
        });
        let Some(addr) = addr else { continue };
        if addr == ip && msg.header.prefix_len == prefix_len {
            present = true;
            continue;
        }
        match handle.address().del(msg).execute().await {
            Ok(()) => {}
            Err(e) if errno(&e) == Some(EADDRNOTAVAIL) => {}
            Err(e) => return Err(nl_err(format!("remove old address {addr} from {what}"), e)),
        }
    }
    if !present {
        match handle
            .address()
            .add(link.index, IpAddr::V4(ip), prefix_len)
            .execute()
            .await
        {
            Ok(()) => {}
            Err(e) if errno(&e) == Some(EEXIST) => {}
            Err(e) => {
                return Err(nl_err(
                    format!("add address {ip}/{prefix_len} to {what}"),
                    e,
                ))
            }
        }
    }
    Ok(())
}

async fn set_up(handle: &Handle, link: &Link, what: &str) -> Result<(), NetError> {
    if link.up {
        return Ok(());
    }
    let msg = LinkUnspec::new_with_index(link.index).up().build();
    handle
        .link()
        .set(msg)
        .execute()
        .await
        .map_err(|e| nl_err(format!("bring up {what}"), e))
}

/// Creates a veth pair whose host side is `host_name` (in this namespace) and whose other side
/// is born as `eth0` directly inside the namespace `netns` (one atomic kernel operation, so a
/// crash cannot leave a half-moved pair behind).
pub(crate) async fn create_veth(
    handle: &Handle,
    host_name: &str,
    netns: &File,
    what: &str,
) -> Result<(), NetError> {
    let peer = Builder::<LinkUnspec>::new()
        .name(CONTAINER_IFNAME)
        .setns_by_fd(netns.as_raw_fd())
        .build();
    let msg = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
        .name(host_name)
        .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
        .build();
    handle
        .link()
        .add(msg)
        .execute()
        .await
        .map_err(|e| nl_err(format!("create veth {host_name} for {what}"), e))
}

/// Plugs the host side of a veth into the bridge, with hairpin mode on so br_netfilter may
/// send a DNATed frame back out of the port it came in on (a replica reaching its own VIP),
/// and brings it up.
pub(crate) async fn plug_into_bridge(
    handle: &Handle,
    veth: &Link,
    bridge: &Link,
    what: &str,
) -> Result<(), NetError> {
    if veth.controller != Some(bridge.index) {
        let msg = LinkUnspec::new_with_index(veth.index)
            .controller(bridge.index)
            .build();
        handle.link().set(msg).execute().await.map_err(|e| {
            nl_err(
                format!("plug veth {} of {what} into {}", veth.name, bridge.name),
                e,
            )
        })?;
    }
    let port = LinkBridgePort::new(veth.index).hairpin(true).build();
    handle.link().set_port(port).execute().await.map_err(|e| {
        nl_err(
            format!("set hairpin mode on veth {} of {what}", veth.name),
            e,
        )
    })?;
    set_up(handle, veth, &format!("veth {} of {what}", veth.name)).await
}

/// Runs async netlink work on a single-threaded runtime in the current OS thread; meant for
/// the namespace threads of `netns::run_in`.
fn block_on_here<T>(
    fut: impl std::future::Future<Output = Result<T, NetError>>,
) -> Result<T, NetError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| NetError::io("start a runtime for a namespace thread".into(), e))?
        .block_on(fut)
}

/// Inside a replica's namespace: lo up, eth0 with exactly `ip/prefix_len`, up, and a default
/// route via the gateway. Blocking; call it through `netns::run_in`.
pub(crate) fn configure_inside(
    ip: Ipv4Addr,
    prefix_len: u8,
    gateway: Ipv4Addr,
    what: &str,
) -> Result<(), NetError> {
    block_on_here(async {
        let handle = connect()?;
        let lo = get(&handle, "lo")
            .await?
            .ok_or_else(|| NetError::Internal(format!("no lo in the namespace of {what}")))?;
        set_up(&handle, &lo, &format!("lo of {what}")).await?;
        let eth0 = get(&handle, CONTAINER_IFNAME).await?.ok_or_else(|| {
            NetError::Internal(format!("no {CONTAINER_IFNAME} in the namespace of {what}"))
        })?;
        let eth_what = format!("{CONTAINER_IFNAME} of {what}");
        set_only_address(&handle, &eth0, ip, prefix_len, &eth_what).await?;
        set_up(&handle, &eth0, &eth_what).await?;
        let route = RouteMessageBuilder::<Ipv4Addr>::new()
            .gateway(gateway)
            .output_interface(eth0.index)
            .build();
        handle
            .route()
            .add(route)
            .replace()
            .execute()
            .await
            .map_err(|e| nl_err(format!("add default route via {gateway} for {what}"), e))
    })
}

/// Inside a namespace: whether eth0 exists, and its IPv4 address if it has one.
pub(crate) fn inspect_inside(what: &str) -> Result<Option<Option<Ipv4Addr>>, NetError> {
    block_on_here(async {
        let handle = connect()?;
        let Some(eth0) = get(&handle, CONTAINER_IFNAME).await? else {
            return Ok(None);
        };
        let addrs: Vec<_> = handle
            .address()
            .get()
            .set_link_index_filter(eth0.index)
            .execute()
            .try_collect()
            .await
            .map_err(|e| nl_err(format!("list addresses of {CONTAINER_IFNAME} of {what}"), e))?;
        let ip = addrs
            .iter()
            .flat_map(|m| m.attributes.iter())
            .find_map(|a| match a {
                AddressAttribute::Local(IpAddr::V4(a)) => Some(*a),
                _ => None,
            });
        Ok(Some(ip))
    })
}

/// Inside a namespace: deletes eth0 (and so its host-side peer) if present.
pub(crate) fn delete_inside(what: &str) -> Result<(), NetError> {
    block_on_here(async {
        let handle = connect()?;
        if let Some(eth0) = get(&handle, CONTAINER_IFNAME).await? {
            delete(
                &handle,
                &eth0,
                format!("delete {CONTAINER_IFNAME} of {what}"),
            )
            .await?;
        }
        Ok(())
    })
}
