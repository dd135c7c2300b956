//! Resource names (design §2) and members (design §3), parsed and printed.
//!
//! Names follow Google Cloud: `organizations/{org}`, `folders/{f}`, `projects/{p}`, and key
//! rings under a project or directly under an organisation:
//! `projects/{p}/keyRings/{r}`, `organizations/{o}/keyRings/{r}`, then
//! `.../cryptoKeys/{k}` and `.../cryptoKeys/{k}/cryptoKeyVersions/{n}`. Folder and project ids
//! are unique in the store (as in Google Cloud); a folder's or project's parent is kept in the
//! store, not in its name.

use std::fmt;
use std::str::FromStr;

/// Checks an ID: `[a-zA-Z0-9_-]{1,63}`.
pub fn check_id(what: &str, id: &str) -> Result<(), String> {
    let ok = !id.is_empty()
        && id.len() <= 63
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid {what} id '{id}': use 1 to 63 characters from a-z, A-Z, 0-9, '_' and '-'"
        ))
    }
}

/// Where a key ring lives.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RingParent {
    /// A project-scoped key ring.
    Project(String),
    /// An organisation-scoped key ring (Thalassa seed).
    Organization(String),
}

/// A key ring's name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyRingName {
    /// Its parent.
    pub parent: RingParent,
    /// Its id.
    pub id: String,
}

/// A crypto key's name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CryptoKeyName {
    /// Its key ring.
    pub ring: KeyRingName,
    /// Its id.
    pub id: String,
}

/// Any resource name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ResourceName {
    /// `organizations/{org}`
    Organization(String),
    /// `folders/{f}`
    Folder(String),
    /// `projects/{p}`
    Project(String),
    /// A key ring.
    KeyRing(KeyRingName),
    /// A crypto key.
    CryptoKey(CryptoKeyName),
    /// A key version (takes no bindings).
    Version(CryptoKeyName, u64),
}

/// The kind of a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResourceKind {
    /// An organisation.
    Organization,
    /// A folder.
    Folder,
    /// A project.
    Project,
    /// A key ring.
    KeyRing,
    /// A crypto key.
    CryptoKey,
    /// A key version.
    Version,
}

impl ResourceKind {
    /// A human name for messages.
    pub fn noun(self) -> &'static str {
        match self {
            ResourceKind::Organization => "organisation",
            ResourceKind::Folder => "folder",
            ResourceKind::Project => "project",
            ResourceKind::KeyRing => "key ring",
            ResourceKind::CryptoKey => "crypto key",
            ResourceKind::Version => "key version",
        }
    }
}

impl fmt::Display for RingParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RingParent::Project(p) => write!(f, "projects/{p}"),
            RingParent::Organization(o) => write!(f, "organizations/{o}"),
        }
    }
}

impl fmt::Display for KeyRingName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/keyRings/{}", self.parent, self.id)
    }
}

impl fmt::Display for CryptoKeyName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/cryptoKeys/{}", self.ring, self.id)
    }
}

impl fmt::Display for ResourceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResourceName::Organization(o) => write!(f, "organizations/{o}"),
            ResourceName::Folder(x) => write!(f, "folders/{x}"),
            ResourceName::Project(p) => write!(f, "projects/{p}"),
            ResourceName::KeyRing(r) => r.fmt(f),
            ResourceName::CryptoKey(k) => k.fmt(f),
            ResourceName::Version(k, n) => write!(f, "{k}/cryptoKeyVersions/{n}"),
        }
    }
}

impl ResourceName {
    /// The kind of this resource.
    pub fn kind(&self) -> ResourceKind {
        match self {
            ResourceName::Organization(_) => ResourceKind::Organization,
            ResourceName::Folder(_) => ResourceKind::Folder,
            ResourceName::Project(_) => ResourceKind::Project,
            ResourceName::KeyRing(_) => ResourceKind::KeyRing,
            ResourceName::CryptoKey(_) => ResourceKind::CryptoKey,
            ResourceName::Version(..) => ResourceKind::Version,
        }
    }
}

const NAME_HELP: &str = "expected organizations/ORG, folders/F, projects/P, \
     projects/P/keyRings/R (or organizations/ORG/keyRings/R), .../keyRings/R/cryptoKeys/K or \
     .../cryptoKeys/K/cryptoKeyVersions/N";

impl FromStr for ResourceName {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("invalid resource name '{s}': {NAME_HELP}");
        let parts: Vec<&str> = s.split('/').collect();
        if parts.len() % 2 != 0 {
            return Err(bad());
        }
        let pairs: Vec<(&str, &str)> = parts.chunks(2).map(|c| (c[0], c[1])).collect();
        let id = |what: &str, v: &str| check_id(what, v).map(|_| v.to_string());
        let (first, rest) = pairs.split_first().ok_or_else(bad)?;
        let top = match first.0 {
            "organizations" => ResourceName::Organization(id("organisation", first.1)?),
            "folders" => ResourceName::Folder(id("folder", first.1)?),
            "projects" => ResourceName::Project(id("project", first.1)?),
            _ => return Err(bad()),
        };
        let Some(((kr, ring_id), rest)) = rest.split_first() else {
            return Ok(top);
        };
        let parent = match (&top, *kr) {
            (ResourceName::Project(p), "keyRings") => RingParent::Project(p.clone()),
            (ResourceName::Organization(o), "keyRings") => RingParent::Organization(o.clone()),
            _ => return Err(bad()),
        };
        let ring = KeyRingName {
            parent,
            id: id("key ring", ring_id)?,
        };
        let Some(((ck, key_id), rest)) = rest.split_first() else {
            return Ok(ResourceName::KeyRing(ring));
        };
        if *ck != "cryptoKeys" {
            return Err(bad());
        }
        let key = CryptoKeyName {
            ring,
            id: id("crypto key", key_id)?,
        };
        let Some(((cv, n), rest)) = rest.split_first() else {
            return Ok(ResourceName::CryptoKey(key));
        };
        if *cv != "cryptoKeyVersions" || !rest.is_empty() {
            return Err(bad());
        }
        let version: u64 = n
            .parse()
            .ok()
            .filter(|v: &u64| *v >= 1 && v.to_string() == *n)
            .ok_or_else(|| {
                format!("invalid key version '{n}' in '{s}': versions are 1, 2, 3, ...")
            })?;
        Ok(ResourceName::Version(key, version))
    }
}

/// A member of a binding or of a group (design §3).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Member {
    /// `user:EMAIL`
    User(String),
    /// `serviceAccount:ID@PROJECT`
    ServiceAccount(String),
    /// `group:NAME`
    Group(String),
    /// `unix-uid:N`
    UnixUid(u32),
    /// `unix-gid:N`
    UnixGid(u32),
    /// `allAuthenticated`: any principal but `anonymous`.
    AllAuthenticated,
    /// `anonymous`: a caller with no identity (a principal only; never bindable).
    Anonymous,
}

impl fmt::Display for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Member::User(u) => write!(f, "user:{u}"),
            Member::ServiceAccount(s) => write!(f, "serviceAccount:{s}"),
            Member::Group(g) => write!(f, "group:{g}"),
            Member::UnixUid(u) => write!(f, "unix-uid:{u}"),
            Member::UnixGid(g) => write!(f, "unix-gid:{g}"),
            Member::AllAuthenticated => f.write_str("allAuthenticated"),
            Member::Anonymous => f.write_str("anonymous"),
        }
    }
}

fn check_email_like(kind: &str, v: &str, example: &str) -> Result<String, String> {
    let ok = v.len() <= 254
        && v.split_once('@')
            .is_some_and(|(a, b)| !a.is_empty() && !b.is_empty())
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-+@".contains(&b));
    if ok {
        Ok(v.to_string())
    } else {
        Err(format!(
            "invalid {kind} '{v}': expected a name like {example}"
        ))
    }
}

/// Checks a service account's id part: `[a-z][a-z0-9-]{0,29}`.
pub fn check_sa_id(id: &str) -> Result<(), String> {
    let ok = (1..=30).contains(&id.len())
        && id.as_bytes()[0].is_ascii_lowercase()
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid service account id '{id}': 1 to 30 characters, a-z, 0-9 and '-', \
             starting with a letter"
        ))
    }
}

impl FromStr for Member {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let help = "expected user:EMAIL, serviceAccount:ID@PROJECT, group:NAME, unix-uid:N, \
                    unix-gid:N or allAuthenticated";
        if s == "allAuthenticated" {
            return Ok(Member::AllAuthenticated);
        }
        if s == "anonymous" || s == "allUsers" {
            return Err(format!(
                "'{s}' cannot be bound: Keyward grants nothing to unauthenticated callers"
            ));
        }
        let (kind, v) = s
            .split_once(':')
            .ok_or_else(|| format!("invalid member '{s}': {help}"))?;
        let num = |v: &str| {
            v.parse::<u32>()
                .ok()
                .filter(|n| n.to_string() == v)
                .ok_or_else(|| format!("invalid member '{s}': '{v}' is not a number"))
        };
        match kind {
            "user" => Ok(Member::User(check_email_like(
                "user",
                v,
                "user:alice@example.com",
            )?)),
            "serviceAccount" => {
                let sa = check_email_like("service account", v, "serviceAccount:web@payments")?;
                let (id, project) = sa.split_once('@').unwrap_or_default();
                check_sa_id(id)?;
                check_id("project", project)?;
                Ok(Member::ServiceAccount(sa))
            }
            "group" => {
                let ok = !v.is_empty()
                    && v.len() <= 128
                    && v.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"._-+@".contains(&b));
                if ok {
                    Ok(Member::Group(v.to_string()))
                } else {
                    Err(format!(
                        "invalid group '{v}': use letters, digits and . _ - + @"
                    ))
                }
            }
            "unix-uid" => Ok(Member::UnixUid(num(v)?)),
            "unix-gid" => Ok(Member::UnixGid(num(v)?)),
            _ => Err(format!("invalid member '{s}': {help}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_names_round_trip() {
        for s in [
            "organizations/acme",
            "folders/eng",
            "projects/payments",
            "projects/payments/keyRings/web",
            "organizations/acme/keyRings/root-ca",
            "projects/p/keyRings/r/cryptoKeys/k",
            "organizations/o/keyRings/r/cryptoKeys/k/cryptoKeyVersions/12",
        ] {
            assert_eq!(s.parse::<ResourceName>().unwrap().to_string(), s);
        }
    }

    #[test]
    fn bad_resource_names_are_refused() {
        for s in [
            "",
            "organizations",
            "organizations/",
            "orgs/acme",
            "folders/f/keyRings/r",
            "projects/p/keyRings",
            "projects/p/keyRings/r/cryptoKeys/k/cryptoKeyVersions/0",
            "projects/p/keyRings/r/cryptoKeys/k/cryptoKeyVersions/01",
            "projects/p/keyRings/r/cryptoKeys/k/cryptoKeyVersions/1/x/y",
            "projects/a b",
            "projects/a.b",
            &format!("projects/{}", "x".repeat(64)),
        ] {
            assert!(s.parse::<ResourceName>().is_err(), "{s} accepted");
        }
    }

    #[test]
    fn members_parse() {
        for s in [
            "user:alice@example.com",
            "serviceAccount:web@payments",
            "group:ops",
            "unix-uid:1001",
            "unix-gid:0",
            "allAuthenticated",
        ] {
            assert_eq!(s.parse::<Member>().unwrap().to_string(), s);
        }
        for s in [
            "alice",
            "user:alice",
            "serviceAccount:Web@payments",
            "unix-uid:-1",
            "unix-uid:01",
            "anonymous",
            "allUsers",
            "group:",
            "robot:x",
        ] {
            assert!(s.parse::<Member>().is_err(), "{s} accepted");
        }
    }
}
