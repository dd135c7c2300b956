//! Service-account keys (design §1): `kw` + 6-character key id + `.` + 22-character base64url
//! secret (128 random bits) = 31 bytes, under libp11's 32-byte PIN cap. The store keeps only
//! HMAC-SHA-256 of the key under a server key, looked up by key id and compared in constant
//! time.

use crate::store::{iam as siam, meta_get, Result, StoreError};
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::{Rng, RngCore};
use rusqlite::Connection;
use sha2::Sha256;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

const ID_CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// A freshly made key: its id and the whole key, shown once.
pub struct NewKey {
    /// The key id (public).
    pub key_id: String,
    /// The whole key (secret), zeroised on drop.
    pub key: Zeroizing<String>,
}

/// Makes a new key id and secret (not stored).
pub fn generate() -> NewKey {
    let mut rng = rand::rngs::OsRng;
    let key_id: String = (0..6)
        .map(|_| char::from(ID_CHARS[rng.gen_range(0..ID_CHARS.len())]))
        .collect();
    let mut secret = Zeroizing::new([0u8; 16]);
    rng.fill_bytes(secret.as_mut());
    let enc = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret.as_ref());
    NewKey {
        key: Zeroizing::new(format!("kw{key_id}.{enc}")),
        key_id,
    }
}

/// Splits a key into its id, if it has the right shape.
pub fn key_id_of(key: &str) -> Option<&str> {
    let rest = key.strip_prefix("kw")?;
    let (id, secret) = rest.split_once('.')?;
    let id_ok = id.len() == 6 && id.bytes().all(|b| ID_CHARS.contains(&b));
    let secret_ok = secret.len() == 22
        && secret
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    (id_ok && secret_ok).then_some(id)
}

/// HMAC-SHA-256 of the key under the server key.
pub fn mac(server_key: &[u8], key: &str) -> Vec<u8> {
    // HMAC takes keys of any length; new_from_slice cannot fail for it.
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(server_key)
        .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
    m.update(key.as_bytes());
    m.finalize().into_bytes().to_vec()
}

/// The server key, created at `init`.
pub fn server_key(conn: &Connection) -> Result<Zeroizing<Vec<u8>>> {
    meta_get(conn, super::hierarchy::SA_MAC_KEY)?
        .map(Zeroizing::new)
        .ok_or_else(|| {
            StoreError::Corrupt("the server key is missing (store not initialised)".into())
        })
}

/// The service account a key authenticates, if the key is valid, live and its account live.
pub fn authenticate(conn: &Connection, key: &str) -> Result<Option<String>> {
    let Some(id) = key_id_of(key) else {
        return Ok(None);
    };
    let Some(row) = siam::get_sa_key(conn, id)? else {
        return Ok(None);
    };
    let expected = mac(&server_key(conn)?, key);
    let equal: bool = expected.ct_eq(&row.mac).into();
    if !equal || row.revoked_at.is_some() {
        return Ok(None);
    }
    let live = siam::get_sa(conn, &row.account)?.is_some_and(|s| s.deleted_at.is_none());
    Ok(live.then_some(row.account))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_have_the_documented_shape() {
        for _ in 0..100 {
            let k = generate();
            assert_eq!(k.key.len(), 31);
            assert_eq!(key_id_of(&k.key), Some(k.key_id.as_str()));
        }
        assert_eq!(key_id_of("kwabcdef.short"), None);
        assert_eq!(key_id_of("xxabcdef.AAAAAAAAAAAAAAAAAAAAAA"), None);
        assert_eq!(key_id_of("kwABCDEF.AAAAAAAAAAAAAAAAAAAAAA"), None);
        assert_eq!(key_id_of("kwabcdef.AAAAAAAAAAAAAAAAAAAAAA"), Some("abcdef"));
    }

    #[test]
    fn mac_depends_on_key_and_server_key() {
        assert_ne!(mac(b"a", "kw1"), mac(b"b", "kw1"));
        assert_ne!(mac(b"a", "kw1"), mac(b"a", "kw2"));
        assert_eq!(mac(b"a", "kw1").len(), 32);
    }
}
