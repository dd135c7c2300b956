//! The data-path gate (style rule 10): **every data-path allow/refuse is here.** Every
//! decision the client socket (the PKCS#11 module and keywardctl's crypto commands) takes
//! on the policy is one function of this file, a pure function over the published policy
//! snapshot; nothing else under `src/daemon` asks the policy (`authorize`,
//! `effective_permissions`, `sees_key`, `visible_keys`, ...). Each function's doc names the
//! row of design §4's table (or §9's rule) it implements.
//!
//! A refusal is a [`Denial`] (the CK_RV the caller gets and why, for the audit record and
//! the log, never for the caller), and it is audited in one place,
//! [`ClientConnection::refused`]. An allowed `*Init`, wrap or unwrap is recorded by its caller
//! with the [`Grant`]'s binding once the operation is set up. The gate fails closed: an
//! unknown key, ring or principal holds nothing, so every question about it is a deny.
//!
//! What is decided elsewhere, and why: the checks of a key's own state (ENABLED, flags, the
//! mechanism suiting the key: `ops::plan`) are not policy and stay with the operation; the
//! writes that go through the admin service (key and certificate creation, destruction and
//! renaming, BYOK imports) are checked again by `Ctx::require` inside their write
//! transaction, as every admin change is.

use super::ck::*;
use super::ops::{self, Plan};
use super::{ClientConnection, P11Error};
use crate::policy::{
    Binding, CryptoKeyName, KeyRingName, PermSet, Permission, Principal, ResourceName, Snapshot,
};
use keyward_wire::pkcs11::{MechParams, Operation};
use keyward_wire::rv::{
    CKR_KEY_UNEXTRACTABLE, CKR_UNWRAPPING_KEY_HANDLE_INVALID, CKR_WRAPPING_KEY_HANDLE_INVALID,
};
use std::cell::OnceCell;

/// A refusal: what the caller is answered and why (for the audit record and the log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    /// The CK_RV the caller gets (one its function may return, design §4).
    pub rv: u64,
    /// Why, for the audit record's detail and the log; never sent to the caller.
    pub why: String,
}

impl Denial {
    /// A denial with code `rv` because of `why`.
    pub fn new(rv: u64, why: impl Into<String>) -> Denial {
        Denial {
            rv,
            why: why.into(),
        }
    }
}

/// An allowed decision: the nearest binding that grants it (for the audit record).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The binding, where the decision was one permission's.
    pub granted_by: Option<Binding>,
}

/// The use gate's answer: the grant and whether the caller also holds the opposite use
/// permission, which decides §9's IV and mode rule ([`iv_gate`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UseGrant {
    /// The binding granting the use permission.
    pub granted_by: Option<Binding>,
    /// Holds the opposite permission (useToDecrypt for encryption, useToEncrypt for
    /// decryption, useToSign for verification; always for signing).
    pub holds_other: bool,
}

fn on_key(key: &CryptoKeyName) -> ResourceName {
    ResourceName::CryptoKey(key.clone())
}

fn on_ring(ring: &KeyRingName) -> ResourceName {
    ResourceName::KeyRing(ring.clone())
}

/// `permission` on `resource`, else `rv` because of `why`.
fn require(
    policy: &Snapshot,
    principal: &Principal,
    permission: Permission,
    resource: &ResourceName,
    rv: u64,
    why: impl FnOnce() -> String,
) -> Result<Grant, Denial> {
    let d = policy.authorize(principal, permission, resource);
    if d.allowed {
        Ok(Grant {
            granted_by: d.granted_by,
        })
    } else {
        Err(Denial::new(rv, why()))
    }
}

// ---------------------------------------------------------------------- visibility

/// Design §4 "Visibility" and the table's `C_FindObjects*` row (object not returned): does
/// the principal see the key (any `kms.*` permission on it, direct or inherited, which
/// covers `kms.cryptoKeys.list` on its ring)?
pub fn key_seen(policy: &Snapshot, principal: &Principal, key: &CryptoKeyName) -> bool {
    policy.sees_key(principal, key)
}

/// Design §4 "Not found, not forbidden": a handle of a key the principal does not see (any
/// more) is refused with `invalid` (`CKR_OBJECT_HANDLE_INVALID`, `CKR_KEY_HANDLE_INVALID`,
/// `CKR_WRAPPING_KEY_HANDLE_INVALID` ...: the caller is told the object is absent; the audit
/// log that it was refused).
pub fn visibility(
    policy: &Snapshot,
    principal: &Principal,
    key: &CryptoKeyName,
    invalid: u64,
) -> Result<(), Denial> {
    if policy.sees_key(principal, key) {
        Ok(())
    } else {
        Err(Denial::new(invalid, "not visible to the caller"))
    }
}

/// Design §4's `C_FindObjects*` row: the keys of `ring` the principal sees (sorted by name).
pub fn keys_seen(
    policy: &Snapshot,
    principal: &Principal,
    ring: &KeyRingName,
) -> Vec<CryptoKeyName> {
    policy.visible_keys(principal, ring)
}

/// Design §4 "Slots and tokens": the key rings whose tokens the principal sees (any visible
/// key in the ring, or a `kms.*` permission on it), sorted by name.
pub fn rings_seen(policy: &Snapshot, principal: &Principal) -> Vec<KeyRingName> {
    policy.visible_key_rings(principal)
}

/// Design §4 "Slots and tokens" and the table's `C_GenerateRandom` row ("sees the token"); also
/// §9 "Session objects" (an unbound uid cannot use the token): does the principal see the
/// ring's token?
pub fn ring_seen(policy: &Snapshot, principal: &Principal, ring: &KeyRingName) -> bool {
    policy.sees_key_ring(principal, ring)
}

// ---------------------------------------------------------------------- attributes

/// Design §4's `C_GetAttributeValue` row: what the principal holds on a key it sees, which
/// decides its objects' public values (`CKA_EC_POINT`, `CKA_MODULUS`,
/// `CKA_PUBLIC_EXPONENT`, `CKA_PUBLIC_KEY_INFO`: viewPublicKey or any use permission, else
/// `CKR_ATTRIBUTE_SENSITIVE`; the creator exception is the object's own,
/// `ObjectView::sees_public_values`).
pub fn attribute_rights(policy: &Snapshot, principal: &Principal, key: &CryptoKeyName) -> PermSet {
    policy.effective_permissions(principal, &on_key(key))
}

/// Design §4's `C_GetAttributeValue` row, its refusal: a public value (of a key, or a
/// certificate's `CKA_VALUE`) asked without viewPublicKey or a use permission is answered
/// `CKR_ATTRIBUTE_SENSITIVE` (value length `CK_UNAVAILABLE_INFORMATION`) and recorded as this
/// denial.
pub fn public_values_hidden(certificate: bool) -> Denial {
    Denial::new(
        CKR_ATTRIBUTE_SENSITIVE,
        if certificate {
            "certificate value without viewPublicKey or a use permission"
        } else {
            "public value without viewPublicKey or a use permission"
        },
    )
}

/// Design §4's certificate rows (a certificate's `CKA_VALUE` is a public value): `None` if
/// the principal does not see the certificate (it belongs to a key it does not see), else
/// whether it may read its value: the creating instance always; a key's certificate with
/// viewPublicKey or a use permission on the key; a ring's own certificate (a CA) with one on
/// the ring or on any key of it the principal sees (`ring_reads` keeps that answer for one
/// call).
pub fn cert_read(
    policy: &Snapshot,
    principal: &Principal,
    ring: &KeyRingName,
    owner: Option<&CryptoKeyName>,
    creator: bool,
    ring_reads: &OnceCell<bool>,
) -> Option<bool> {
    let reads = |r: &ResourceName| {
        policy
            .effective_permissions(principal, r)
            .reads_public_values()
    };
    match owner {
        Some(key) => {
            if !policy.sees_key(principal, key) {
                return None;
            }
            Some(creator || reads(&on_key(key)))
        }
        None => Some(
            creator
                || *ring_reads.get_or_init(|| {
                    reads(&on_ring(ring))
                        || policy
                            .visible_keys(principal, ring)
                            .into_iter()
                            .any(|k| reads(&ResourceName::CryptoKey(k)))
                }),
        ),
    }
}

// ---------------------------------------------------------------------- use

/// The use permission of a keyed operation (design §4), the one operation→permission
/// mapping of the daemon; `None` for `C_Digest*`, which takes no key.
pub fn use_permission(op: Operation) -> Option<Permission> {
    match op {
        Operation::Encrypt => Some(Permission::UseToEncrypt),
        Operation::Decrypt => Some(Permission::UseToDecrypt),
        Operation::Sign => Some(Permission::UseToSign),
        Operation::Verify => Some(Permission::UseToVerify),
        Operation::Digest => None,
    }
}

/// The permission whose absence restricts an allowed operation (design §9 "Crypto
/// semantics"): useToDecrypt for encryption, useToEncrypt for decryption, useToSign for
/// verification (a short-MAC verify is a sign oracle); none for signing and digests.
fn opposite_permission(op: Operation) -> Option<Permission> {
    match op {
        Operation::Encrypt => Some(Permission::UseToDecrypt),
        Operation::Decrypt => Some(Permission::UseToEncrypt),
        Operation::Verify => Some(Permission::UseToSign),
        Operation::Sign | Operation::Digest => None,
    }
}

/// Design §4's `C_EncryptInit` / `C_DecryptInit` and `C_SignInit` / `C_VerifyInit` rows
/// (also keywardctl's encrypt, decrypt, sign, verify and mac): the operation's use
/// permission on the key (useToEncrypt, useToDecrypt, useToSign, useToVerify), else
/// `CKR_KEY_FUNCTION_NOT_PERMITTED`. Checked at the first call and bound to the operation by
/// the caller. The answer says whether the opposite permission is held, for [`iv_gate`].
pub fn use_gate(
    policy: &Snapshot,
    principal: &Principal,
    op: Operation,
    key: &CryptoKeyName,
) -> Result<UseGrant, Denial> {
    let Some(permission) = use_permission(op) else {
        return Err(Denial::new(
            CKR_KEY_FUNCTION_NOT_PERMITTED,
            "a digest takes no key",
        ));
    };
    let grant = require(
        policy,
        principal,
        permission,
        &on_key(key),
        CKR_KEY_FUNCTION_NOT_PERMITTED,
        || format!("needs {permission}"),
    )?;
    let holds_other = opposite_permission(op)
        .is_none_or(|p| policy.authorize(principal, p, &on_key(key)).allowed);
    Ok(UseGrant {
        granted_by: grant.granted_by,
        holds_other,
    })
}

/// Design §9 "Crypto semantics, not only call rights" (the IV rule), applied to an allowed
/// operation's plan ([`ops::restrict`]): without useToDecrypt an encrypting caller never
/// chooses a GCM IV or CTR counter block (it must send zeros, else
/// `CKR_MECHANISM_PARAM_INVALID`; keywardd's, drawn with `random`, is returned for the
/// module to write back) and is not offered ECB, CBC or CBC-PAD; without useToEncrypt a
/// decrypting caller is not offered CTR; without useToSign a truncated MAC is not verified
/// (`CKR_KEY_FUNCTION_NOT_PERMITTED`). A caller holding both keeps its own IVs.
pub fn iv_gate(
    op: Operation,
    holds_other: bool,
    plan: &mut Plan,
    requested: &MechParams,
    random: impl FnOnce(usize) -> Result<Vec<u8>, P11Error>,
) -> Result<Option<Vec<u8>>, Denial> {
    ops::restrict(op, plan, requested, holds_other, random).map_err(|rv| {
        let why = match (op, rv.rv()) {
            (_, CKR_MECHANISM_PARAM_INVALID) => {
                "without useToDecrypt the IV or counter block is keywardd's: pass zeros"
            }
            (Operation::Encrypt, CKR_KEY_FUNCTION_NOT_PERMITTED) => {
                "ECB and CBC are not offered without useToDecrypt"
            }
            (Operation::Verify, CKR_KEY_FUNCTION_NOT_PERMITTED) => {
                "a truncated MAC is verified only with useToSign"
            }
            (_, CKR_KEY_FUNCTION_NOT_PERMITTED) => "CTR is not offered without useToEncrypt",
            _ => "cannot generate an IV",
        };
        Denial::new(rv.rv(), why)
    })
}

// ---------------------------------------------------------------------- create, change

/// Design §4's `C_GenerateKey(Pair)`, `C_CreateObject` and certificate-create rows (and
/// `C_UnwrapKey` into the ring): kms.cryptoKeys.create on the slot's ring, else
/// `CKR_TOKEN_WRITE_PROTECTED` (also for a slot whose ring is absent or not seen: `None`).
pub fn create_gate(
    policy: &Snapshot,
    principal: &Principal,
    ring: Option<&KeyRingName>,
) -> Result<Grant, Denial> {
    let refused = || {
        Denial::new(
            CKR_TOKEN_WRITE_PROTECTED,
            "needs kms.cryptoKeys.create on the ring",
        )
    };
    let ring = ring.ok_or_else(refused)?;
    require(
        policy,
        principal,
        Permission::CryptoKeysCreate,
        &on_ring(ring),
        CKR_TOKEN_WRITE_PROTECTED,
        || refused().why,
    )
}

/// Design §4 "Custody": `CKA_EXTRACTABLE=TRUE` on a new key needs exportKeyMaterial on the
/// ring (without it the template is corrected, or refused under `strict_templates`).
pub fn may_make_extractable(policy: &Snapshot, principal: &Principal, ring: &KeyRingName) -> bool {
    policy
        .authorize(principal, Permission::ExportKeyMaterial, &on_ring(ring))
        .allowed
}

/// Design §4's `C_DestroyObject` row: kms.cryptoKeyVersions.destroy on the key (destruction
/// is scheduled), else `CKR_ACTION_PROHIBITED`.
pub fn destroy_gate(
    policy: &Snapshot,
    principal: &Principal,
    key: &CryptoKeyName,
) -> Result<Grant, Denial> {
    require(
        policy,
        principal,
        Permission::VersionsDestroy,
        &on_key(key),
        CKR_ACTION_PROHIBITED,
        || "needs kms.cryptoKeyVersions.destroy".into(),
    )
}

/// Design §4's `C_SetAttributeValue` row: kms.cryptoKeys.update on the key, or being the
/// instance that created it (the creator exception: NSS keygen renames its new key), else
/// `CKR_ACTION_PROHIBITED`.
pub fn attribute_gate(
    policy: &Snapshot,
    principal: &Principal,
    key: &CryptoKeyName,
    creator: bool,
) -> Result<(), Denial> {
    if creator {
        return Ok(());
    }
    require(
        policy,
        principal,
        Permission::CryptoKeysUpdate,
        &on_key(key),
        CKR_ACTION_PROHIBITED,
        || "needs kms.cryptoKeys.update (or to be the creating instance)".into(),
    )
    .map(|_| ())
}

/// Design §4's `C_CopyObject` row and "No side doors": a Keyward key is never copied
/// (`CKR_ACTION_PROHIBITED`), whatever the caller holds.
pub fn copy_gate() -> Denial {
    Denial::new(CKR_ACTION_PROHIBITED, "Keyward keys are not copyable")
}

/// Design §9 "Session objects" (and §4: they need no create permission, they are not
/// Keyward keys): a session object is made only by a principal that sees the slot's ring
/// (`ring`: the slot's ring if [`ring_seen`], else `None`), else `CKR_TOKEN_WRITE_PROTECTED`
/// as for an absent ring (an unbound uid cannot use the token).
pub fn session_object_gate(ring: Option<&KeyRingName>) -> Result<(), Denial> {
    match ring {
        Some(_) => Ok(()),
        None => Err(Denial::new(
            CKR_TOKEN_WRITE_PROTECTED,
            "session objects need a principal that sees the slot's key ring",
        )),
    }
}

/// Design §4 "No side doors": `C_DeriveKey` from a Keyward key is `CKR_MECHANISM_INVALID`
/// (its `CKA_DERIVE` is FALSE), whatever the caller holds.
pub fn derive_gate() -> Denial {
    Denial::new(CKR_MECHANISM_INVALID, "no derivation from Keyward keys")
}

/// Design §9 "an unbound uid cannot use the token", for `C_DigestInit` (no key, no IAM
/// permission): the slot's ring must be one the principal sees (`ring`: the slot's ring if
/// [`ring_seen`], else `None`), else `CKR_MECHANISM_INVALID`.
pub fn digest_gate(ring: Option<&KeyRingName>) -> Result<(), Denial> {
    match ring {
        Some(_) => Ok(()),
        None => Err(Denial::new(
            CKR_MECHANISM_INVALID,
            "the slot's key ring is absent or not visible to the caller",
        )),
    }
}

/// `C_Login` as `CKU_SO` (Keyward's; design §4 has no row for it): kms.keyRings.setIamPolicy
/// on the slot's ring, else `CKR_PIN_INCORRECT` (as a wrong PIN).
pub fn so_login_gate(
    policy: &Snapshot,
    principal: &Principal,
    ring: Option<&KeyRingName>,
) -> Result<(), Denial> {
    let refused = || {
        Denial::new(
            CKR_PIN_INCORRECT,
            "CKU_SO without kms.keyRings.setIamPolicy on the ring",
        )
    };
    let ring = ring.ok_or_else(refused)?;
    require(
        policy,
        principal,
        Permission::KeyRingsSetIamPolicy,
        &on_ring(ring),
        CKR_PIN_INCORRECT,
        || refused().why,
    )
    .map(|_| ())
}

// ---------------------------------------------------------------------- export, import

/// Design §4's `C_WrapKey` row, its wrapping-key half (also keywardctl key export):
/// useToEncrypt on the wrapping key, else `CKR_WRAPPING_KEY_HANDLE_INVALID`.
pub fn wrapping_gate(
    policy: &Snapshot,
    principal: &Principal,
    wrapping_key: &CryptoKeyName,
) -> Result<(), Denial> {
    require(
        policy,
        principal,
        Permission::UseToEncrypt,
        &on_key(wrapping_key),
        CKR_WRAPPING_KEY_HANDLE_INVALID,
        || "needs useToEncrypt on the wrapping key".into(),
    )
    .map(|_| ())
}

/// Design §4's `C_WrapKey` row, its key half (also keywardctl key export): exportKeyMaterial
/// on the key whose material leaves, else `CKR_KEY_UNEXTRACTABLE`.
pub fn export_gate(
    policy: &Snapshot,
    principal: &Principal,
    key: &CryptoKeyName,
) -> Result<Grant, Denial> {
    require(
        policy,
        principal,
        Permission::ExportKeyMaterial,
        &on_key(key),
        CKR_KEY_UNEXTRACTABLE,
        || "needs kms.cryptoKeyVersions.exportKeyMaterial".into(),
    )
}

/// Design §4 "No side doors" (`C_UnwrapKey` with a Keyward AES key): unwrapping with a key
/// decrypts with it, so it needs useToDecrypt on it, else
/// `CKR_UNWRAPPING_KEY_HANDLE_INVALID`. (Into the ring it is also a creation:
/// [`create_gate`].)
pub fn unwrap_gate(
    policy: &Snapshot,
    principal: &Principal,
    key: &CryptoKeyName,
) -> Result<Grant, Denial> {
    require(
        policy,
        principal,
        Permission::UseToDecrypt,
        &on_key(key),
        CKR_UNWRAPPING_KEY_HANDLE_INVALID,
        || "unwrapping with a key needs useToDecrypt on it".into(),
    )
}

/// Design §4's `C_UnwrapKey (BYOK, §5)` row, the job's half, and §5: an import job's key
/// is seen (found, read, used to unwrap) only with kms.importJobs.get on its ring; not seen,
/// its handle is `CKR_UNWRAPPING_KEY_HANDLE_INVALID` / `CKR_OBJECT_HANDLE_INVALID`.
/// (importJobs.useToImport and, for a new key, cryptoKeys.create are checked by the admin
/// service in the import's transaction.)
pub fn sees_import_jobs(policy: &Snapshot, principal: &Principal, ring: &KeyRingName) -> bool {
    policy
        .authorize(principal, Permission::ImportJobsGet, &on_ring(ring))
        .allowed
}

// ---------------------------------------------------------------------- the audit

impl ClientConnection {
    /// The one place a [`Denial`] is audited (design §6: every denial is recorded) and
    /// logged: a denied record of `action` on `resource` as `principal`. Answers the error
    /// the caller gets (its CK_RV; the why is its cause, for keywardd's log).
    #[track_caller]
    pub(super) fn refused(
        &self,
        principal: &Principal,
        action: &str,
        resource: Option<String>,
        denial: Denial,
    ) -> P11Error {
        self.deny(principal, action, resource, denial.rv, &denial.why);
        P11Error::new(denial.rv, denial.why)
    }
}

#[cfg(test)]
mod tests {
    //! One test per row of design §4's table, and §9's IV rule, against a snapshot built
    //! here (no token, no store): the grant and the denial of each.
    use super::*;
    use crate::policy::{Member, RingParent, SnapshotBuilder};
    use keyward_wire::pkcs11::{Blob, GcmLayout, GcmParams};

    fn ring() -> KeyRingName {
        KeyRingName {
            parent: RingParent::Project("payments".into()),
            id: "web".into(),
        }
    }

    /// A key of the ring: `k` (the one bound) or `other`.
    fn key(id: &str) -> CryptoKeyName {
        CryptoKeyName {
            ring: ring(),
            id: id.into(),
        }
    }

    fn k() -> CryptoKeyName {
        key("k")
    }

    fn user(name: &str) -> Principal {
        Principal::new(Member::User(format!("{name}@example.com")))
    }

    /// organizations/acme > projects/payments > keyRings/web > cryptoKeys/{k,other}, and
    /// each binding (resource, role) given to `user:<role's last part>@example.com`.
    fn snapshot(bindings: &[(ResourceName, &str)]) -> Snapshot {
        let mut b = SnapshotBuilder::new();
        b.organization("acme");
        b.project("payments", ResourceName::Organization("acme".into()));
        b.key_ring(ring());
        b.crypto_key(k());
        b.crypto_key(key("other"));
        b.role("roles/custom.projectGetter", {
            PermSet::of(&[Permission::ProjectsGet])
        });
        for (resource, role) in bindings {
            b.binding(
                resource.clone(),
                role,
                Member::User(format!("{}@example.com", who(role))),
            );
        }
        b.build()
    }

    /// The user a role is bound to in [`snapshot`]: `roles/kms.signer` → `signer`.
    fn who(role: &str) -> &str {
        role.rsplit(['.', ':', '/']).next().unwrap()
    }

    fn on_k(role: &str) -> (ResourceName, &str) {
        (ResourceName::CryptoKey(k()), role)
    }

    fn on_web(role: &str) -> (ResourceName, &str) {
        (ResourceName::KeyRing(ring()), role)
    }

    /// C_FindObjects*: visibility (an object not seen is not returned; its handle is
    /// invalid).
    #[test]
    fn find_objects_returns_what_is_seen() {
        let s = snapshot(&[
            on_k("roles/kms.signer"),
            on_web("roles/kms.viewer"),
            (
                ResourceName::Organization("acme".into()),
                "roles/custom.projectGetter",
            ),
        ]);
        // Any kms.* permission on the key: that key only.
        assert_eq!(keys_seen(&s, &user("signer"), &ring()), vec![k()]);
        assert!(key_seen(&s, &user("signer"), &k()));
        assert!(!key_seen(&s, &user("signer"), &key("other")));
        assert_eq!(
            visibility(&s, &user("signer"), &k(), CKR_KEY_HANDLE_INVALID),
            Ok(())
        );
        assert_eq!(
            visibility(&s, &user("signer"), &key("other"), CKR_KEY_HANDLE_INVALID),
            Err(Denial::new(
                CKR_KEY_HANDLE_INVALID,
                "not visible to the caller"
            ))
        );
        // cryptoKeys.list on the ring: every key.
        assert_eq!(
            keys_seen(&s, &user("viewer"), &ring()),
            vec![k(), key("other")]
        );
        // A permission outside kms.* on an ancestor, or none: nothing; an absent key is not
        // seen either.
        for p in [user("projectGetter"), user("nobody")] {
            assert!(keys_seen(&s, &p, &ring()).is_empty());
            assert_eq!(
                visibility(&s, &p, &k(), CKR_OBJECT_HANDLE_INVALID)
                    .unwrap_err()
                    .rv,
                CKR_OBJECT_HANDLE_INVALID
            );
        }
        assert!(!key_seen(&s, &user("viewer"), &key("absent")));
        // The slot list: rings seen through a key or the ring.
        assert_eq!(rings_seen(&s, &user("signer")), vec![ring()]);
        assert!(rings_seen(&s, &user("projectGetter")).is_empty());
    }

    /// C_GetAttributeValue: public values need viewPublicKey or any use permission.
    #[test]
    fn public_values_need_view_public_key_or_a_use_permission() {
        let s = snapshot(&[
            on_k("roles/kms.publicKeyViewer"),
            on_k("roles/kms.signer"),
            on_k("roles/kms.cryptoKeyDecrypter"),
            on_k("roles/kms.viewer"),
        ]);
        for reader in ["publicKeyViewer", "signer", "cryptoKeyDecrypter"] {
            assert!(
                attribute_rights(&s, &user(reader), &k()).reads_public_values(),
                "{reader}"
            );
        }
        assert!(key_seen(&s, &user("viewer"), &k()));
        assert!(!attribute_rights(&s, &user("viewer"), &k()).reads_public_values());
        assert!(attribute_rights(&s, &user("nobody"), &k()).is_empty());
    }

    /// C_EncryptInit / C_DecryptInit: useToEncrypt / useToDecrypt, else
    /// CKR_KEY_FUNCTION_NOT_PERMITTED.
    #[test]
    fn encrypt_and_decrypt_need_their_use_permission() {
        let s = snapshot(&[
            on_k("roles/kms.cryptoKeyEncrypter"),
            on_web("roles/kms.cryptoKeyDecrypter"),
            on_k("roles/kms.cryptoKeyEncrypterDecrypter"),
            on_k("roles/kms.admin"),
        ]);
        let g = use_gate(&s, &user("cryptoKeyEncrypter"), Operation::Encrypt, &k()).unwrap();
        assert!(!g.holds_other);
        assert_eq!(
            g.granted_by.map(|b| b.role),
            Some("roles/kms.cryptoKeyEncrypter".to_string())
        );
        // Inherited from the ring.
        let g = use_gate(&s, &user("cryptoKeyDecrypter"), Operation::Decrypt, &k()).unwrap();
        assert!(!g.holds_other);
        assert_eq!(
            g.granted_by.unwrap().resource,
            ResourceName::KeyRing(ring())
        );
        let both = user("cryptoKeyEncrypterDecrypter");
        assert!(
            use_gate(&s, &both, Operation::Encrypt, &k())
                .unwrap()
                .holds_other
        );
        assert!(
            use_gate(&s, &both, Operation::Decrypt, &k())
                .unwrap()
                .holds_other
        );
        for (who, op) in [
            ("cryptoKeyEncrypter", Operation::Decrypt),
            ("cryptoKeyDecrypter", Operation::Encrypt),
            ("admin", Operation::Encrypt),
            ("admin", Operation::Decrypt),
            ("nobody", Operation::Encrypt),
        ] {
            let d = use_gate(&s, &user(who), op, &k()).unwrap_err();
            assert_eq!(d.rv, CKR_KEY_FUNCTION_NOT_PERMITTED, "{who} {op:?}");
        }
        // Not the other key.
        assert!(use_gate(
            &s,
            &user("cryptoKeyEncrypter"),
            Operation::Encrypt,
            &key("other")
        )
        .is_err());
    }

    /// C_SignInit / C_VerifyInit: useToSign / useToVerify, else
    /// CKR_KEY_FUNCTION_NOT_PERMITTED; a verifier without useToSign is told so (holds_other).
    #[test]
    fn sign_and_verify_need_their_use_permission() {
        let s = snapshot(&[
            on_k("roles/kms.signer"),
            on_k("roles/kms.verifier"),
            on_k("roles/kms.signerVerifier"),
            on_k("kms:Verify"),
        ]);
        assert!(
            use_gate(&s, &user("signer"), Operation::Sign, &k())
                .unwrap()
                .holds_other
        );
        assert_eq!(
            use_gate(&s, &user("signer"), Operation::Verify, &k())
                .unwrap_err()
                .rv,
            CKR_KEY_FUNCTION_NOT_PERMITTED
        );
        for v in ["verifier", "Verify"] {
            assert!(
                !use_gate(&s, &user(v), Operation::Verify, &k())
                    .unwrap()
                    .holds_other
            );
            assert_eq!(
                use_gate(&s, &user(v), Operation::Sign, &k())
                    .unwrap_err()
                    .rv,
                CKR_KEY_FUNCTION_NOT_PERMITTED
            );
        }
        let sv = user("signerVerifier");
        assert!(
            use_gate(&s, &sv, Operation::Verify, &k())
                .unwrap()
                .holds_other
        );
        assert!(use_gate(&s, &sv, Operation::Sign, &k()).is_ok());
    }

    /// The operation→permission mapping: one, exhaustive; a digest has no key to gate.
    #[test]
    fn every_operation_has_its_permission() {
        assert_eq!(
            use_permission(Operation::Encrypt),
            Some(Permission::UseToEncrypt)
        );
        assert_eq!(
            use_permission(Operation::Decrypt),
            Some(Permission::UseToDecrypt)
        );
        assert_eq!(use_permission(Operation::Sign), Some(Permission::UseToSign));
        assert_eq!(
            use_permission(Operation::Verify),
            Some(Permission::UseToVerify)
        );
        assert_eq!(use_permission(Operation::Digest), None);
        let s = snapshot(&[on_k("roles/kms.cryptoOperator")]);
        assert_eq!(
            use_gate(&s, &user("cryptoOperator"), Operation::Digest, &k())
                .unwrap_err()
                .rv,
            CKR_KEY_FUNCTION_NOT_PERMITTED
        );
    }

    /// C_GenerateKey(Pair), C_CreateObject (and a certificate's creation): kms.cryptoKeys.create
    /// on the ring, else CKR_TOKEN_WRITE_PROTECTED.
    #[test]
    fn creation_needs_create_on_the_ring() {
        let s = snapshot(&[
            on_web("roles/kms.admin"),
            on_k("kms:FullAccess"),
            on_web("roles/kms.cryptoOperator"),
        ]);
        assert!(create_gate(&s, &user("admin"), Some(&ring())).is_ok());
        for who in ["FullAccess", "cryptoOperator", "nobody"] {
            assert_eq!(
                create_gate(&s, &user(who), Some(&ring())).unwrap_err(),
                Denial::new(
                    CKR_TOKEN_WRITE_PROTECTED,
                    "needs kms.cryptoKeys.create on the ring"
                ),
                "{who}"
            );
        }
        // A slot whose ring is absent or not seen.
        assert_eq!(
            create_gate(&s, &user("admin"), None).unwrap_err().rv,
            CKR_TOKEN_WRITE_PROTECTED
        );
        // Custody: CKA_EXTRACTABLE=TRUE needs exportKeyMaterial on the ring.
        assert!(!may_make_extractable(&s, &user("admin"), &ring()));
        let s = snapshot(&[on_web("kms:FullAccess")]);
        assert!(may_make_extractable(&s, &user("FullAccess"), &ring()));
        assert!(create_gate(&s, &user("FullAccess"), Some(&ring())).is_ok());
    }

    /// C_WrapKey: exportKeyMaterial on the key (CKR_KEY_UNEXTRACTABLE); useToEncrypt on the
    /// wrapping key (CKR_WRAPPING_KEY_HANDLE_INVALID).
    #[test]
    fn wrapping_needs_export_and_encrypt_on_the_wrapping_key() {
        let s = snapshot(&[
            on_web("kms:FullAccess"),
            on_k("roles/kms.admin"),
            on_k("roles/kms.cryptoKeyEncrypter"),
        ]);
        let full = user("FullAccess");
        assert!(wrapping_gate(&s, &full, &k()).is_ok());
        assert!(export_gate(&s, &full, &key("other")).is_ok());
        assert_eq!(
            export_gate(&s, &user("admin"), &k()).unwrap_err().rv,
            CKR_KEY_UNEXTRACTABLE
        );
        assert_eq!(
            export_gate(&s, &user("cryptoKeyEncrypter"), &k())
                .unwrap_err()
                .rv,
            CKR_KEY_UNEXTRACTABLE
        );
        assert!(wrapping_gate(&s, &user("cryptoKeyEncrypter"), &k()).is_ok());
        assert_eq!(
            wrapping_gate(&s, &user("admin"), &k()).unwrap_err().rv,
            CKR_WRAPPING_KEY_HANDLE_INVALID
        );
    }

    /// C_UnwrapKey (BYOK): the import job's key is seen only with kms.importJobs.get on the
    /// ring; unwrapping with a Keyward AES key (no side doors) needs useToDecrypt on it.
    #[test]
    fn unwrap_needs_the_job_or_decrypt() {
        let s = snapshot(&[
            on_web("roles/kms.importer"),
            on_web("roles/kms.viewer"),
            on_k("roles/kms.cryptoKeyEncrypter"),
            on_k("roles/kms.cryptoKeyDecrypter"),
        ]);
        assert!(sees_import_jobs(&s, &user("importer"), &ring()));
        assert!(sees_import_jobs(&s, &user("viewer"), &ring()));
        assert!(!sees_import_jobs(&s, &user("cryptoKeyDecrypter"), &ring()));
        assert!(unwrap_gate(&s, &user("cryptoKeyDecrypter"), &k()).is_ok());
        for who in ["cryptoKeyEncrypter", "importer", "viewer"] {
            assert_eq!(
                unwrap_gate(&s, &user(who), &k()).unwrap_err().rv,
                CKR_UNWRAPPING_KEY_HANDLE_INVALID,
                "{who}"
            );
        }
    }

    /// C_DestroyObject: kms.cryptoKeyVersions.destroy, else CKR_ACTION_PROHIBITED.
    #[test]
    fn destruction_needs_versions_destroy() {
        let s = snapshot(&[on_k("roles/kms.admin"), on_k("roles/kms.cryptoOperator")]);
        assert!(destroy_gate(&s, &user("admin"), &k()).is_ok());
        assert_eq!(
            destroy_gate(&s, &user("cryptoOperator"), &k())
                .unwrap_err()
                .rv,
            CKR_ACTION_PROHIBITED
        );
        assert_eq!(
            destroy_gate(&s, &user("admin"), &key("other"))
                .unwrap_err()
                .rv,
            CKR_ACTION_PROHIBITED
        );
    }

    /// C_SetAttributeValue: kms.cryptoKeys.update, or the creating instance; else
    /// CKR_ACTION_PROHIBITED.
    #[test]
    fn renaming_needs_update_or_the_creator() {
        let s = snapshot(&[on_k("roles/kms.admin"), on_k("roles/kms.signerVerifier")]);
        assert_eq!(attribute_gate(&s, &user("admin"), &k(), false), Ok(()));
        assert_eq!(
            attribute_gate(&s, &user("signerVerifier"), &k(), true),
            Ok(())
        );
        assert_eq!(
            attribute_gate(&s, &user("signerVerifier"), &k(), false)
                .unwrap_err()
                .rv,
            CKR_ACTION_PROHIBITED
        );
    }

    /// C_CopyObject of a Keyward key: never, CKR_ACTION_PROHIBITED.
    #[test]
    fn keys_are_never_copied() {
        assert_eq!(copy_gate().rv, CKR_ACTION_PROHIBITED);
    }

    /// Certificates: seen with their key (not found where it is not seen); the value needs
    /// viewPublicKey or a use permission (the creator always); a ring's own certificate, one
    /// on the ring or on a key of it seen. (Creation: the create row's gate.)
    #[test]
    fn certificate_values_are_public_values() {
        let s = snapshot(&[
            on_k("roles/kms.viewer"),
            on_k("roles/kms.verifier"),
            (ResourceName::CryptoKey(key("other")), "roles/kms.signer"),
        ]);
        let read = |who: &str, owner: Option<&CryptoKeyName>, creator: bool| {
            cert_read(&s, &user(who), &ring(), owner, creator, &OnceCell::new())
        };
        assert_eq!(read("viewer", Some(&k()), false), Some(false));
        assert_eq!(read("viewer", Some(&k()), true), Some(true));
        assert_eq!(read("verifier", Some(&k()), false), Some(true));
        assert_eq!(read("signer", Some(&k()), false), None);
        assert_eq!(read("nobody", Some(&k()), true), None);
        // The ring's own certificate (a CA): through a key of the ring the caller reads.
        assert_eq!(read("signer", None, false), Some(true));
        assert_eq!(read("viewer", None, false), Some(false));
    }

    /// Session objects: made by a principal that sees the ring (no create permission), else
    /// CKR_TOKEN_WRITE_PROTECTED.
    #[test]
    fn session_objects_need_the_ring_seen() {
        let s = snapshot(&[on_k("roles/kms.verifier")]);
        let seen = |who: &str| Some(ring()).filter(|r| ring_seen(&s, &user(who), r));
        assert!(create_gate(&s, &user("verifier"), Some(&ring())).is_err());
        assert_eq!(session_object_gate(seen("verifier").as_ref()), Ok(()));
        assert_eq!(
            session_object_gate(seen("nobody").as_ref()).unwrap_err().rv,
            CKR_TOKEN_WRITE_PROTECTED
        );
    }

    /// Never: C_CopyObject's and C_DeriveKey's refusals; a hidden public value's denial; a
    /// digest on a token not seen.
    #[test]
    fn side_doors_stay_shut() {
        assert_eq!(derive_gate().rv, CKR_MECHANISM_INVALID);
        assert_eq!(public_values_hidden(false).rv, CKR_ATTRIBUTE_SENSITIVE);
        assert_eq!(public_values_hidden(true).rv, CKR_ATTRIBUTE_SENSITIVE);
        assert_eq!(digest_gate(Some(&ring())), Ok(()));
        assert_eq!(digest_gate(None).unwrap_err().rv, CKR_MECHANISM_INVALID);
    }

    /// C_GenerateRandom: the principal sees the token (the ring); C_Login as CKU_SO needs
    /// setIamPolicy on the ring.
    #[test]
    fn random_needs_the_token_seen() {
        let s = snapshot(&[on_k("roles/kms.publicKeyViewer"), on_web("roles/kms.admin")]);
        assert!(ring_seen(&s, &user("publicKeyViewer"), &ring()));
        assert!(!ring_seen(&s, &user("nobody"), &ring()));
        assert_eq!(so_login_gate(&s, &user("admin"), Some(&ring())), Ok(()));
        assert_eq!(
            so_login_gate(&s, &user("publicKeyViewer"), Some(&ring()))
                .unwrap_err()
                .rv,
            CKR_PIN_INCORRECT
        );
    }

    fn plan(mech: ops::TokenMech) -> Plan {
        Plan {
            mech,
            prehash: None,
            input_len: None,
            input_prefix: None,
            class: keyward_token::ObjectClass::SECRET_KEY,
        }
    }

    fn gcm(iv: &[u8]) -> MechParams {
        MechParams::Gcm(GcmParams {
            iv: Blob::new(iv.to_vec()),
            iv_bits: 96,
            aad: Blob::new(Vec::new()),
            tag_bits: 128,
            layout: GcmLayout::WithIvBits,
        })
    }

    fn gcm_plan(iv: &[u8]) -> Plan {
        plan(ops::TokenMech::Gcm {
            iv: iv.to_vec(),
            aad: Vec::new(),
            tag_bits: 128,
        })
    }

    /// Design §9: an encrypt-only caller never chooses a GCM IV or CTR counter block and is
    /// not offered ECB or CBC; a decrypt-only caller is not offered CTR; one holding both
    /// keeps its IVs. `holds_other` comes from the use gate.
    #[test]
    fn the_iv_is_keywardds_without_the_opposite_permission() {
        let s = snapshot(&[
            on_k("roles/kms.cryptoKeyEncrypter"),
            on_k("roles/kms.cryptoKeyDecrypter"),
            on_k("roles/kms.cryptoKeyEncrypterDecrypter"),
        ]);
        let holds = |who: &str, op| use_gate(&s, &user(who), op, &k()).unwrap().holds_other;
        let enc_only = holds("cryptoKeyEncrypter", Operation::Encrypt);
        let dec_only = holds("cryptoKeyDecrypter", Operation::Decrypt);
        let both = holds("cryptoKeyEncrypterDecrypter", Operation::Encrypt);
        assert!(!enc_only && !dec_only && both);
        let fresh = |n: usize| Ok(vec![0xA5; n]);

        // GCM, encrypt-only: zeros in, keywardd's IV out and in the plan.
        let mut p = gcm_plan(&[0; 12]);
        let iv = iv_gate(Operation::Encrypt, enc_only, &mut p, &gcm(&[0; 12]), fresh).unwrap();
        assert_eq!(iv, Some(vec![0xA5; 12]));
        assert_eq!(p, gcm_plan(&[0xA5; 12]));
        // A chosen IV, or another length: CKR_MECHANISM_PARAM_INVALID.
        for chosen in [&[7u8; 12][..], &[0u8; 16][..]] {
            let mut p = gcm_plan(chosen);
            let d = iv_gate(Operation::Encrypt, enc_only, &mut p, &gcm(chosen), fresh).unwrap_err();
            assert_eq!(d.rv, CKR_MECHANISM_PARAM_INVALID);
        }
        // Holding both: the caller's IV stays.
        let mut p = gcm_plan(&[7; 12]);
        assert_eq!(
            iv_gate(Operation::Encrypt, both, &mut p, &gcm(&[7; 12]), fresh),
            Ok(None)
        );
        assert_eq!(p, gcm_plan(&[7; 12]));

        // CTR, encrypt-only: a zero counter block becomes keywardd's; a chosen one is refused.
        let ctr = |cb| {
            plan(ops::TokenMech::AesCtr {
                counter_bits: 32,
                cb,
            })
        };
        let mut p = ctr([0; 16]);
        let cb = iv_gate(
            Operation::Encrypt,
            enc_only,
            &mut p,
            &MechParams::None,
            fresh,
        )
        .unwrap()
        .unwrap();
        assert_eq!(cb.len(), 16);
        assert_ne!(cb, vec![0; 16]);
        let mut p = ctr([7; 16]);
        assert_eq!(
            iv_gate(
                Operation::Encrypt,
                enc_only,
                &mut p,
                &MechParams::None,
                fresh
            )
            .unwrap_err()
            .rv,
            CKR_MECHANISM_PARAM_INVALID
        );
        // ECB, CBC, CBC-PAD encryption: not offered to an encrypt-only caller.
        for m in [
            ops::TokenMech::AesEcb,
            ops::TokenMech::AesCbc { iv: [0; 16] },
            ops::TokenMech::AesCbcPad { iv: [0; 16] },
        ] {
            let mut p = plan(m.clone());
            let d = iv_gate(
                Operation::Encrypt,
                enc_only,
                &mut p,
                &MechParams::None,
                fresh,
            )
            .unwrap_err();
            assert_eq!(d.rv, CKR_KEY_FUNCTION_NOT_PERMITTED, "{m:?}");
            let mut p = plan(m);
            assert!(iv_gate(Operation::Encrypt, both, &mut p, &MechParams::None, fresh).is_ok());
        }
        // CTR decryption (a keystream XOR): not offered to a decrypt-only caller; GCM is.
        let mut p = ctr([7; 16]);
        assert_eq!(
            iv_gate(
                Operation::Decrypt,
                dec_only,
                &mut p,
                &MechParams::None,
                fresh
            )
            .unwrap_err()
            .rv,
            CKR_KEY_FUNCTION_NOT_PERMITTED
        );
        let mut p = gcm_plan(&[7; 12]);
        assert_eq!(
            iv_gate(Operation::Decrypt, dec_only, &mut p, &gcm(&[7; 12]), fresh),
            Ok(None)
        );
    }
}
