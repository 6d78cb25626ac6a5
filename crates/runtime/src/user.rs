//! Resolving a container user (`uid`, `uid:gid`, `name`, `name:group`) to numeric ids, the way
//! Docker does: names are looked up in the image's /etc/passwd and /etc/group, a bare uid takes
//! its primary group from passwd (or 0), and supplementary groups come from /etc/group. Pure:
//! the caller reads the files.

/// A user resolved to the ids the OCI spec needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedUser {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
}

/// Why a user string could not be resolved; the caller wraps it with the container id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UnknownUser;

struct PasswdEntry<'a> {
    name: &'a str,
    uid: u32,
    gid: u32,
}

fn passwd_entries(passwd: &str) -> impl Iterator<Item = PasswdEntry<'_>> {
    passwd.lines().filter_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        (f.len() >= 4).then_some(())?;
        Some(PasswdEntry {
            name: f[0],
            uid: f[2].parse().ok()?,
            gid: f[3].parse().ok()?,
        })
    })
}

/// `(name, gid, members)` for each /etc/group line.
fn group_entries(group: &str) -> impl Iterator<Item = (&str, u32, Vec<&str>)> {
    group.lines().filter_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        (f.len() >= 3).then_some(())?;
        let members = f
            .get(3)
            .map(|m| m.split(',').filter(|s| !s.is_empty()).collect())
            .unwrap_or_default();
        Some((f[0], f[2].parse().ok()?, members))
    })
}

/// Resolves `user` (empty means root) against the image's passwd and group files (empty strings
/// when the image has none).
pub(crate) fn resolve_user(
    user: &str,
    passwd: &str,
    group: &str,
) -> Result<ResolvedUser, UnknownUser> {
    let user = user.trim();
    if user.is_empty() {
        return Ok(ResolvedUser {
            uid: 0,
            gid: 0,
            additional_gids: Vec::new(),
        });
    }
    let (user_part, group_part) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let entry = match user_part.parse::<u32>() {
        Ok(uid) => passwd_entries(passwd).find(|e| e.uid == uid),
        Err(_) => Some(
            passwd_entries(passwd)
                .find(|e| e.name == user_part)
                .ok_or(UnknownUser)?,
        ),
    };
    let uid = match &entry {
        Some(e) => e.uid,
        None => user_part.parse().map_err(|_| UnknownUser)?,
    };
    let gid = match group_part {
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => group_entries(group)
                .find(|(name, _, _)| *name == g)
                .map(|(_, gid, _)| gid)
                .ok_or(UnknownUser)?,
        },
        None => entry.as_ref().map_or(0, |e| e.gid),
    };
    // Supplementary groups only when the group was not given explicitly, as Docker does.
    let additional_gids = match (&entry, group_part) {
        (Some(e), None) => group_entries(group)
            .filter(|(_, g, members)| *g != gid && members.contains(&e.name))
            .map(|(_, g, _)| g)
            .collect(),
        _ => Vec::new(),
    };
    Ok(ResolvedUser {
        uid,
        gid,
        additional_gids,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
                          nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n\
                          app:x:1000:1000::/home/app:/bin/sh\n";
    const GROUP: &str = "root:x:0:\nnobody:x:65534:\napp:x:1000:\nwheel:x:10:app,root\n";

    fn r(user: &str) -> Result<(u32, u32, Vec<u32>), UnknownUser> {
        resolve_user(user, PASSWD, GROUP).map(|u| (u.uid, u.gid, u.additional_gids))
    }

    #[test]
    fn empty_is_root() {
        assert_eq!(r(""), Ok((0, 0, vec![])));
    }

    #[test]
    fn numeric_ids_need_no_passwd() {
        assert_eq!(r("4242"), Ok((4242, 0, vec![])));
        assert_eq!(r("4242:7"), Ok((4242, 7, vec![])));
        assert_eq!(resolve_user("5:6", "", "").map(|u| u.gid), Ok(6));
    }

    #[test]
    fn numeric_uid_in_passwd_takes_its_primary_group() {
        assert_eq!(r("1000"), Ok((1000, 1000, vec![10])));
    }

    #[test]
    fn names_resolve_from_passwd_and_group() {
        assert_eq!(r("nobody"), Ok((65534, 65534, vec![])));
        assert_eq!(r("app"), Ok((1000, 1000, vec![10])));
        assert_eq!(r("app:wheel"), Ok((1000, 10, vec![])));
        assert_eq!(r("app:0"), Ok((1000, 0, vec![])));
    }

    #[test]
    fn unknown_names_are_errors() {
        assert_eq!(r("ghost"), Err(UnknownUser));
        assert_eq!(r("app:ghosts"), Err(UnknownUser));
        assert_eq!(resolve_user("nobody", "", ""), Err(UnknownUser));
    }
}
