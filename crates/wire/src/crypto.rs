//! The crypto half: `keywardctl encrypt|decrypt|sign|verify|mac` on the client socket,
//! served as the caller's principal through the module's gate and token operations.
//!
//! Errors travel as an [`crate::ErrorReply`] with a message. Ciphertexts are a small binary
//! envelope ([`Envelope`]) that names the key version, so decryption picks it after a rotation.

use crate::pkcs11::Blob;
use serde::{Deserialize, Serialize};

/// A crypto request; `key` is a full crypto key name (`projects/P/keyRings/R/cryptoKeys/K`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CryptoRequest {
    /// AES-GCM with the key's primary version; answers an [`Envelope`] (encoded).
    Encrypt {
        /// The key.
        key: String,
        /// The plaintext.
        plaintext: Blob,
        /// Additional authenticated data.
        aad: Blob,
    },
    /// AES-GCM decryption of an encoded [`Envelope`] with the version it names.
    Decrypt {
        /// The key.
        key: String,
        /// The encoded envelope.
        ciphertext: Blob,
        /// Additional authenticated data.
        aad: Blob,
    },
    /// An asymmetric signature (DER for ECDSA) with the primary version, or an HMAC-SHA256
    /// tag for MAC keys.
    Sign {
        /// The key.
        key: String,
        /// The data, or its digest if `prehashed`.
        data: Blob,
        /// `data` is already the digest of the key's algorithm.
        prehashed: bool,
    },
    /// Checks a signature or MAC tag with the primary version.
    Verify {
        /// The key.
        key: String,
        /// The data, or its digest if `prehashed`.
        data: Blob,
        /// `data` is already the digest of the key's algorithm.
        prehashed: bool,
        /// The signature (DER for ECDSA) or tag.
        signature: Blob,
    },
    /// Exports an exportable key's material wrapped by a wrapping key (issue 7: the
    /// `C_WrapKey` gate, audited at warning level); answers the wrapped blob.
    Export {
        /// The key to export.
        key: String,
        /// Its version [default: the primary].
        version: Option<u64>,
        /// The wrapping key (its primary version): an AES key or an RSA key with `CKA_WRAP`.
        wrapping_key: String,
        /// `aes-kwp` (RFC 5649), `aes-kw` (RFC 3394), `rsa-oaep-sha1`, `rsa-oaep-sha256`.
        mechanism: String,
    },
}

/// The answer to a [`CryptoRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CryptoResponse {
    /// Output bytes (ciphertext envelope, plaintext, signature, tag).
    Data(Blob),
    /// The outcome of a verification.
    Verified(bool),
}

/// The ciphertext format: `"KW1"`, the key version (u64 big-endian), the 12-byte IV, then the
/// ciphertext followed by the 16-byte GCM tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// The key version that encrypted.
    pub version: u64,
    /// The GCM IV.
    pub iv: [u8; 12],
    /// Ciphertext || tag.
    pub ciphertext: Vec<u8>,
}

/// The envelope's magic.
pub const MAGIC: &[u8; 3] = b"KW1";
/// The AES-GCM tag length in bytes.
pub const TAG_LEN: usize = 16;

impl Envelope {
    /// The encoded envelope.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(23 + self.ciphertext.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.version.to_be_bytes());
        out.extend_from_slice(&self.iv);
        out.extend_from_slice(&self.ciphertext);
        out
    }

    /// Parses an encoded envelope; `None` if it is not one.
    pub fn decode(bytes: &[u8]) -> Option<Envelope> {
        let rest = bytes.strip_prefix(MAGIC.as_slice())?;
        if rest.len() < 8 + 12 + TAG_LEN {
            return None;
        }
        let version = u64::from_be_bytes(rest[..8].try_into().ok()?);
        let iv = rest[8..20].try_into().ok()?;
        Some(Envelope {
            version,
            iv,
            ciphertext: rest[20..].to_vec(),
        })
    }
}

/// DER `SEQUENCE { INTEGER r, INTEGER s }` of a raw `r || s` ECDSA signature.
pub fn ecdsa_raw_to_der(raw: &[u8]) -> Option<Vec<u8>> {
    if raw.is_empty() || raw.len() % 2 != 0 || raw.len() > 132 {
        return None;
    }
    let (r, s) = raw.split_at(raw.len() / 2);
    let int = |v: &[u8]| {
        let v = match v.iter().position(|&b| b != 0) {
            Some(i) => &v[i..],
            None => &[0u8][..],
        };
        let mut out = vec![0x02];
        let pad = v[0] & 0x80 != 0;
        out.push((v.len() + usize::from(pad)) as u8);
        if pad {
            out.push(0);
        }
        out.extend_from_slice(v);
        out
    };
    let body = [int(r), int(s)].concat();
    let mut out = vec![0x30];
    if body.len() >= 0x80 {
        out.push(0x81);
    }
    out.push(body.len() as u8);
    out.extend_from_slice(&body);
    Some(out)
}

/// The raw `r || s` (each `half` bytes) of a DER ECDSA signature; `None` if malformed.
pub fn ecdsa_der_to_raw(der: &[u8], half: usize) -> Option<Vec<u8>> {
    let rest = der.strip_prefix(&[0x30])?;
    let (len, rest) = match *rest.first()? {
        0x81 => (usize::from(*rest.get(1)?), &rest[2..]),
        n if n < 0x80 => (usize::from(n), &rest[1..]),
        _ => return None,
    };
    if len != rest.len() {
        return None;
    }
    let mut out = Vec::with_capacity(2 * half);
    let mut rest = rest;
    for _ in 0..2 {
        if *rest.first()? != 0x02 {
            return None;
        }
        let n = usize::from(*rest.get(1)?);
        if n >= 0x80 || rest.len() < 2 + n {
            return None;
        }
        let mut v = &rest[2..2 + n];
        while v.len() > half && v[0] == 0 {
            v = &v[1..];
        }
        if v.len() > half {
            return None;
        }
        out.extend(std::iter::repeat_n(0u8, half - v.len()));
        out.extend_from_slice(v);
        rest = &rest[2 + n..];
    }
    rest.is_empty().then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_round_trip() {
        let e = Envelope {
            version: 7,
            iv: [9; 12],
            ciphertext: vec![1; 20],
        };
        let bytes = e.encode();
        assert_eq!(&bytes[..3], b"KW1");
        assert_eq!(Envelope::decode(&bytes), Some(e));
        assert_eq!(
            Envelope::decode(b"KW2xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"),
            None
        );
        assert_eq!(Envelope::decode(b"KW1"), None);
    }

    #[test]
    fn ecdsa_der_round_trip() {
        let mut raw = vec![0u8; 64];
        raw[0] = 0x80;
        raw[31] = 1;
        raw[63] = 5;
        let der = ecdsa_raw_to_der(&raw).unwrap();
        assert_eq!(ecdsa_der_to_raw(&der, 32).unwrap(), raw);
        let raw384 = vec![0xffu8; 96];
        let der = ecdsa_raw_to_der(&raw384).unwrap();
        assert_eq!(ecdsa_der_to_raw(&der, 48).unwrap(), raw384);
        assert_eq!(ecdsa_der_to_raw(&[0x30, 0x00], 32), None);
    }
}
