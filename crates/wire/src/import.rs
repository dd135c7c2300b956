//! BYOK import methods (design §5), named as in Google Cloud KMS, shared by keywardd (which
//! unwraps in the token) and keywardctl (whose `key wrap-for-import` wraps in the CLI).

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// The hash of an import method's RSA-OAEP (its MGF1 uses the same hash).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ImportHash {
    /// SHA-1 with MGF1-SHA1.
    Sha1,
    /// SHA-256 with MGF1-SHA256.
    Sha256,
}

/// How key material is wrapped for an import job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ImportMethod {
    /// `rsa-oaep-3072-sha1-aes-256`
    RsaOaep3072Sha1Aes256,
    /// `rsa-oaep-4096-sha1-aes-256`
    RsaOaep4096Sha1Aes256,
    /// `rsa-oaep-3072-sha256-aes-256`
    RsaOaep3072Sha256Aes256,
    /// `rsa-oaep-4096-sha256-aes-256`
    RsaOaep4096Sha256Aes256,
    /// `rsa-oaep-3072-sha256`: RSA-OAEP of the material itself (symmetric keys ≤ 32 bytes).
    RsaOaep3072Sha256,
}

/// AES-KWP (RFC 5649) wraps of longer material than this are refused (a PKCS#8 RSA-4096
/// key is about 2.4 KB).
pub const MAX_WRAPPED_LEN: usize = 16 * 1024;

/// The longest material the direct method (`rsa-oaep-3072-sha256`) carries.
pub const MAX_DIRECT_LEN: usize = 32;

impl ImportMethod {
    /// Every method.
    pub const ALL: [ImportMethod; 5] = [
        ImportMethod::RsaOaep3072Sha1Aes256,
        ImportMethod::RsaOaep4096Sha1Aes256,
        ImportMethod::RsaOaep3072Sha256Aes256,
        ImportMethod::RsaOaep4096Sha256Aes256,
        ImportMethod::RsaOaep3072Sha256,
    ];

    /// The Google Cloud name.
    pub fn as_str(self) -> &'static str {
        match self {
            ImportMethod::RsaOaep3072Sha1Aes256 => "rsa-oaep-3072-sha1-aes-256",
            ImportMethod::RsaOaep4096Sha1Aes256 => "rsa-oaep-4096-sha1-aes-256",
            ImportMethod::RsaOaep3072Sha256Aes256 => "rsa-oaep-3072-sha256-aes-256",
            ImportMethod::RsaOaep4096Sha256Aes256 => "rsa-oaep-4096-sha256-aes-256",
            ImportMethod::RsaOaep3072Sha256 => "rsa-oaep-3072-sha256",
        }
    }

    /// The wrapping key's modulus size in bits.
    pub fn rsa_bits(self) -> usize {
        match self {
            ImportMethod::RsaOaep4096Sha1Aes256 | ImportMethod::RsaOaep4096Sha256Aes256 => 4096,
            _ => 3072,
        }
    }

    /// The OAEP hash.
    pub fn hash(self) -> ImportHash {
        match self {
            ImportMethod::RsaOaep3072Sha1Aes256 | ImportMethod::RsaOaep4096Sha1Aes256 => {
                ImportHash::Sha1
            }
            _ => ImportHash::Sha256,
        }
    }

    /// True for the `CKM_RSA_AES_KEY_WRAP` construction (OAEP of an ephemeral AES-256 key,
    /// then AES-KWP of the material); false for direct OAEP.
    pub fn uses_aes(self) -> bool {
        self != ImportMethod::RsaOaep3072Sha256
    }

    /// The length of the RSA-OAEP part of a wrapped blob (the modulus length in bytes).
    pub fn rsa_len(self) -> usize {
        self.rsa_bits() / 8
    }
}

impl fmt::Display for ImportMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ImportMethod {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let low = s.to_ascii_lowercase().replace('_', "-");
        ImportMethod::ALL
            .into_iter()
            .find(|m| m.as_str() == low)
            .ok_or_else(|| {
                format!(
                    "unknown import method '{s}': expected one of {}",
                    ImportMethod::ALL.map(|m| m.as_str()).join(", ")
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for m in ImportMethod::ALL {
            assert_eq!(m.as_str().parse::<ImportMethod>().unwrap(), m);
        }
        assert_eq!(
            "RSA_OAEP_3072_SHA1_AES_256".parse::<ImportMethod>(),
            Ok(ImportMethod::RsaOaep3072Sha1Aes256)
        );
        assert!("rsa-oaep-2048-sha1-aes-256"
            .parse::<ImportMethod>()
            .is_err());
        assert_eq!(ImportMethod::RsaOaep4096Sha256Aes256.rsa_len(), 512);
        assert!(!ImportMethod::RsaOaep3072Sha256.uses_aes());
    }
}
