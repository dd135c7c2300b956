//! Audit action names (issue 18 item 6): the one table of every name a record may carry.
//!
//! New records follow one scheme: a module call is named by its PKCS#11 function (`C_SignInit`),
//! everything else `service.method` in lower camel case (`key.encrypt`, `iam.whoCan`,
//! `sa.key.create`); `init`, `status` and `reconcile` are store-wide and have no service. Names
//! an older keywardd wrote (`Encrypt`, `AsymmetricSign`, `ExportKey`, ...) stay in the records
//! that carry them (the chain hashes the action: records are never rewritten), so each entry
//! lists its old names too, and [`sql_patterns`] (what `audit query --action` runs) and
//! [`severity`] cover both. The README's "Audit action names" lists every entry.

/// One action name, the names it had before, and what it records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Action {
    /// The name new records carry.
    pub name: &'static str,
    /// Names older records carry for the same thing.
    pub old: &'static [&'static str],
    /// Recorded at `warning` severity (key material leaving the token).
    pub warning: bool,
}

/// `keywardctl encrypt` (the client socket).
pub const KEY_ENCRYPT: &str = "key.encrypt";
/// `keywardctl decrypt`.
pub const KEY_DECRYPT: &str = "key.decrypt";
/// `keywardctl sign` and `mac` (asymmetric signature or MAC).
pub const KEY_SIGN: &str = "key.sign";
/// `keywardctl verify` and `mac --verify`.
pub const KEY_VERIFY: &str = "key.verify";
/// `keywardctl key export` (key material leaves the token wrapped: a warning).
pub const KEY_EXPORT: &str = "key.export";
/// The module's `C_WrapKey` (key material leaves the token wrapped: a warning).
pub const C_WRAP_KEY: &str = "C_WrapKey";

const fn a(name: &'static str) -> Action {
    Action {
        name,
        old: &[],
        warning: false,
    }
}

/// Every action name, grouped as the README lists them.
pub const ACTIONS: &[Action] = &[
    // Store-wide.
    a("init"),
    a("status"),
    a("token.capabilities"),
    a("reconcile"),
    a("reconcile.orphan"),
    a("reconcile.missing"),
    // Hierarchy.
    a("org.create"),
    a("org.list"),
    a("org.get"),
    a("org.delete"),
    a("org.setSod"),
    a("folder.create"),
    a("folder.list"),
    a("folder.get"),
    a("folder.delete"),
    a("project.create"),
    a("project.list"),
    a("project.get"),
    a("project.delete"),
    a("keyring.create"),
    a("keyring.list"),
    a("keyring.get"),
    a("keyring.delete"),
    a("keyring.update"),
    // Roles, bindings, groups, accounts.
    a("role.list"),
    a("role.describe"),
    a("role.create"),
    a("role.update"),
    a("role.update.sodViolation"),
    a("role.delete"),
    a("iam.bind"),
    a("iam.bind.sodViolation"),
    a("iam.unbind"),
    a("iam.policy"),
    a("iam.test"),
    a("iam.explain"),
    a("iam.whoCan"),
    a("iam.sodReport"),
    a("iam.mapUid"),
    a("iam.mapUid.sodViolation"),
    a("iam.unmapUid"),
    a("iam.listMappings"),
    a("group.create"),
    a("group.list"),
    a("group.get"),
    a("group.delete"),
    a("group.addMember"),
    a("group.addMember.sodViolation"),
    a("group.removeMember"),
    a("sa.create"),
    a("sa.list"),
    a("sa.delete"),
    a("sa.key.create"),
    a("sa.key.list"),
    a("sa.key.revoke"),
    a("auth.serviceAccountKey"),
    // Keys and versions (admin).
    a("key.create"),
    a("key.list"),
    a("key.get"),
    a("key.rotate"),
    a("key.setPrimary"),
    a("key.getPublicKey"),
    a("key.import"),
    a("key.cert.import"),
    a("key.cert.list"),
    a("version.list"),
    a("version.get"),
    a("version.enable"),
    a("version.disable"),
    a("version.destroy"),
    a("version.destroyed"),
    a("version.restore"),
    a("importJob.create"),
    a("importJob.get"),
    a("importJob.list"),
    a("importJob.expired"),
    // Crypto through the client socket (keywardctl).
    Action {
        name: KEY_ENCRYPT,
        old: &["Encrypt"],
        warning: false,
    },
    Action {
        name: KEY_DECRYPT,
        old: &["Decrypt"],
        warning: false,
    },
    Action {
        name: KEY_SIGN,
        old: &["Sign", "AsymmetricSign", "MacSign"],
        warning: false,
    },
    Action {
        name: KEY_VERIFY,
        old: &["Verify", "AsymmetricVerify", "MacVerify"],
        warning: false,
    },
    Action {
        name: KEY_EXPORT,
        old: &["ExportKey"],
        warning: true,
    },
    // The audit log itself.
    a("audit.tail"),
    a("audit.query"),
    a("audit.verify"),
    a("audit.unavailable"),
    // The module (libkeyward_pkcs11.so): its PKCS#11 calls.
    a("C_GetSlotList"),
    a("C_GetTokenInfo"),
    a("C_GetMechanismList"),
    a("C_GetMechanismInfo"),
    a("C_OpenSession"),
    a("C_CloseSession"),
    a("C_Login"),
    a("C_Logout"),
    a("C_FindObjects"),
    a("C_GetAttributeValue"),
    a("C_SetAttributeValue"),
    a("C_CopyObject"),
    a("C_DestroyObject"),
    a("C_GetObjectSize"),
    a("C_CreateObject"),
    a("C_GenerateKey"),
    a("C_GenerateKeyPair"),
    Action {
        name: C_WRAP_KEY,
        old: &[],
        warning: true,
    },
    a("C_UnwrapKey"),
    a("C_DeriveKey"),
    a("C_EncryptInit"),
    a("C_DecryptInit"),
    a("C_SignInit"),
    a("C_VerifyInit"),
    a("C_DigestInit"),
    a("C_GenerateRandom"),
    // Module requests that are not one C_ function: the session's reads of a ring it saw
    // before, and (only as refusals in an audit outage) a ping and an operation's
    // update/final.
    a("session.reads"),
    a("ping"),
    a("operation"),
];

/// The entry naming `action` as its new or an old name (exactly, as records carry it).
pub fn lookup(action: &str) -> Option<&'static Action> {
    ACTIONS
        .iter()
        .find(|e| e.name == action || e.old.contains(&action))
}

/// The severity of a record of `action`: `warning` for key material leaving the token, old
/// names included; else `info`.
pub fn severity(action: &str) -> &'static str {
    if lookup(action).is_some_and(|e| e.warning) {
        "warning"
    } else {
        "info"
    }
}

/// The method part of a `service.method` name (`encrypt` of `key.encrypt`).
fn method(name: &str) -> Option<&str> {
    name.rsplit_once('.').map(|(_, m)| m)
}

/// `s` as a LIKE pattern matching itself (escape `\`).
fn escape_like(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '\\' | '%' | '_') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The SQL `LIKE … ESCAPE '\'` patterns (case-insensitive, as SQLite's LIKE is for ASCII)
/// whose union is what `audit query --action TERM` matches:
/// - the name itself, in any case (`key.encrypt`, `KEY.ENCRYPT`);
/// - any name under it (`key` finds `key.create` and `key.cert.import`; `iam.bind` finds
///   `iam.bind.sodViolation`);
/// - a trailing `*` is a plain prefix (`C_Sign*` finds `C_SignInit`);
/// - every name, new and old, of an entry the term names, by its new name, an old one, or its
///   method (`encrypt`, `Encrypt` and `key.encrypt` find `key.encrypt` and `Encrypt`;
///   `key.export` finds `ExportKey`; `key` finds the old names of the `key.*` entries).
pub fn sql_patterns(term: &str) -> Vec<String> {
    let t = term.to_ascii_lowercase();
    let mut names: Vec<&str> = Vec::new();
    let mut patterns = Vec::new();
    if let Some(prefix) = t.strip_suffix('*') {
        patterns.push(format!("{}%", escape_like(prefix)));
        for e in ACTIONS {
            let all = || std::iter::once(e.name).chain(e.old.iter().copied());
            if all().any(|n| n.to_ascii_lowercase().starts_with(prefix)) {
                names.extend(all());
            }
        }
    } else {
        patterns.push(escape_like(&t));
        patterns.push(format!("{}.%", escape_like(&t)));
        let under = format!("{t}.");
        for e in ACTIONS {
            let all = || std::iter::once(e.name).chain(e.old.iter().copied());
            let named = all().any(|n| {
                let n = n.to_ascii_lowercase();
                n == t || n.starts_with(&under)
            }) || method(e.name).is_some_and(|m| m.eq_ignore_ascii_case(&t));
            if named {
                names.extend(all());
            }
        }
    }
    patterns.extend(names.iter().map(|n| escape_like(n)));
    patterns.sort();
    patterns.dedup();
    patterns
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether `action` matches one of `patterns` as SQLite's LIKE (ASCII case-insensitive)
    /// with ESCAPE '\' would: run by SQLite itself.
    fn matches(term: &str, action: &str) -> bool {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        let json = serde_json::to_string(&sql_patterns(term)).unwrap();
        conn.query_row(
            "SELECT EXISTS (SELECT 1 FROM json_each(?1) WHERE ?2 LIKE json_each.value \
             ESCAPE '\\')",
            rusqlite::params![json, action],
            |r| r.get::<_, bool>(0),
        )
        .unwrap()
    }

    #[test]
    fn names_are_unique_and_follow_the_scheme() {
        let mut seen = std::collections::HashSet::new();
        for e in ACTIONS {
            for n in std::iter::once(e.name).chain(e.old.iter().copied()) {
                assert!(seen.insert(n), "{n} is named twice");
            }
            let n = e.name;
            let module = n.starts_with("C_") && n[2..].chars().all(|c| c.is_ascii_alphabetic());
            let dotted = n.split('.').all(|part| {
                part.chars().next().is_some_and(|c| c.is_ascii_lowercase())
                    && part.chars().all(|c| c.is_ascii_alphanumeric())
            });
            assert!(module || dotted, "{n} is neither C_* nor service.method");
        }
    }

    #[test]
    fn queries_match_old_and_new_names_by_name_method_prefix_and_case() {
        for (term, action) in [
            ("encrypt", "key.encrypt"),
            ("encrypt", "Encrypt"),
            ("ENCRYPT", "key.encrypt"),
            ("key.encrypt", "Encrypt"),
            ("key.export", "ExportKey"),
            ("ExportKey", "key.export"),
            ("key", "key.cert.import"),
            ("key", "ExportKey"),
            ("iam.bind", "iam.bind.sodViolation"),
            ("C_Sign*", "C_SignInit"),
            ("c_signinit", "C_SignInit"),
            ("macsign", "key.sign"),
            ("reconcile", "reconcile.orphan"),
            ("whoCan", "iam.whoCan"),
        ] {
            assert!(matches(term, action), "--action {term} misses {action}");
        }
        for (term, action) in [
            ("encrypt", "C_EncryptInit"),
            ("key", "keyring.create"),
            ("C_Sign", "C_SignInit"),
            ("C_S_gnInit", "C_SignInit"),
            ("key%", "key.create"),
            ("iam.bind", "iam.unbind"),
            ("export", "C_WrapKey"),
        ] {
            assert!(!matches(term, action), "--action {term} matches {action}");
        }
    }

    #[test]
    fn exports_are_warnings_under_old_and_new_names() {
        for n in [KEY_EXPORT, "ExportKey", C_WRAP_KEY] {
            assert_eq!(severity(n), "warning", "{n}");
        }
        for n in [KEY_SIGN, "AsymmetricSign", "C_SignInit", "whatever"] {
            assert_eq!(severity(n), "info", "{n}");
        }
    }
}
