//! The user an image asks commands to run as, resolved in the sandbox's
//! own account files (after the pivot, so the image's, never the host's).

use std::fs;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunAs {
    pub uid: u32,
    pub gid: u32,
}

/// `(name, id, primary gid)` entries of a passwd or group file.
pub(crate) fn entries(path: &str) -> Vec<(String, u32, u32)> {
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            let id = f.get(2)?.parse().ok()?;
            let gid = f.get(3).and_then(|g| g.parse().ok()).unwrap_or(id);
            Some(((*f.first()?).to_owned(), id, gid))
        })
        .collect()
}

impl RunAs {
    /// Resolves `name`, `uid`, `name:group` or `uid:gid` as Docker does: a
    /// numeric uid need not exist; its group is its passwd group, or 0.
    pub fn resolve(spec: &str) -> Result<Self, String> {
        Self::resolve_in(spec, "/etc/passwd", "/etc/group")
    }

    fn resolve_in(spec: &str, passwd: &str, group: &str) -> Result<Self, String> {
        let (user, grp) = match spec.split_once(':') {
            Some((u, g)) => (u, Some(g)),
            None => (spec, None),
        };
        let users = entries(passwd);
        let (uid, primary) = match user.parse::<u32>() {
            Ok(uid) => (
                uid,
                users
                    .iter()
                    .find(|(_, id, _)| *id == uid)
                    .map_or(0, |(_, _, g)| *g),
            ),
            Err(_) => users
                .iter()
                .find(|(n, _, _)| n == user)
                .map(|(_, id, g)| (*id, *g))
                .ok_or_else(|| format!("the image's user {user:?} is not in its /etc/passwd"))?,
        };
        let gid = match grp {
            None => primary,
            Some(g) => match g.parse::<u32>() {
                Ok(gid) => gid,
                Err(_) => entries(group)
                    .iter()
                    .find(|(n, _, _)| n == g)
                    .map(|(_, id, _)| *id)
                    .ok_or_else(|| format!("the image's group {g:?} is not in its /etc/group"))?,
            },
        };
        Ok(Self { uid, gid })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_names_and_numbers() {
        let dir = tempfile::tempdir().expect("tempdir");
        let passwd = dir.path().join("passwd");
        let group = dir.path().join("group");
        fs::write(
            &passwd,
            "root:x:0:0::/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n",
        )
        .expect("write");
        fs::write(&group, "root:x:0:\nstaff:x:50:\n").expect("write");
        let (p, g) = (
            passwd.to_str().expect("utf8"),
            group.to_str().expect("utf8"),
        );
        assert_eq!(
            RunAs::resolve_in("app", p, g),
            Ok(RunAs {
                uid: 1000,
                gid: 1001
            })
        );
        assert_eq!(
            RunAs::resolve_in("app:staff", p, g),
            Ok(RunAs { uid: 1000, gid: 50 })
        );
        assert_eq!(
            RunAs::resolve_in("4242", p, g),
            Ok(RunAs { uid: 4242, gid: 0 })
        );
        assert_eq!(
            RunAs::resolve_in("4242:7", p, g),
            Ok(RunAs { uid: 4242, gid: 7 })
        );
        assert!(RunAs::resolve_in("ghost", p, g).is_err());
        assert!(RunAs::resolve_in("app:nogroup", p, g).is_err());
    }
}
