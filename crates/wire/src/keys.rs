//! Key purposes and algorithms (design §2), shared by the daemon, the token layer and clients.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// What a crypto key is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Purpose {
    /// Symmetric encryption (AES-GCM).
    EncryptDecrypt,
    /// Asymmetric signing (EC, RSA PKCS#1 v1.5, RSA-PSS).
    AsymmetricSign,
    /// Asymmetric decryption (RSA-OAEP).
    AsymmetricDecrypt,
    /// HMAC.
    Mac,
    /// A key made through the PKCS#11 module: its uses come from its CKA_* flags.
    Pkcs11Generic,
}

impl Purpose {
    /// Every purpose.
    pub const ALL: [Purpose; 5] = [
        Purpose::EncryptDecrypt,
        Purpose::AsymmetricSign,
        Purpose::AsymmetricDecrypt,
        Purpose::Mac,
        Purpose::Pkcs11Generic,
    ];

    /// The name used on the command line and in the store.
    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::EncryptDecrypt => "ENCRYPT_DECRYPT",
            Purpose::AsymmetricSign => "ASYMMETRIC_SIGN",
            Purpose::AsymmetricDecrypt => "ASYMMETRIC_DECRYPT",
            Purpose::Mac => "MAC",
            Purpose::Pkcs11Generic => "PKCS11_GENERIC",
        }
    }
}

impl fmt::Display for Purpose {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Purpose {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let up = s.to_ascii_uppercase().replace('-', "_");
        Purpose::ALL
            .into_iter()
            .find(|p| p.as_str() == up)
            .ok_or_else(|| {
                let names: Vec<&str> = Purpose::ALL.iter().map(|p| p.as_str()).collect();
                format!(
                    "unknown purpose '{s}': expected one of {}",
                    names.join(", ")
                )
            })
    }
}

/// A key algorithm (design §2), named as in Google Cloud KMS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[allow(missing_docs)]
pub enum Algorithm {
    Aes128Gcm,
    Aes256Gcm,
    EcSignP256Sha256,
    EcSignP384Sha384,
    RsaSignPkcs1_2048Sha256,
    RsaSignPkcs1_3072Sha256,
    RsaSignPkcs1_4096Sha256,
    RsaSignPss2048Sha256,
    RsaSignPss3072Sha256,
    RsaSignPss4096Sha256,
    RsaDecryptOaep2048Sha1,
    RsaDecryptOaep3072Sha1,
    RsaDecryptOaep4096Sha1,
    RsaDecryptOaep2048Sha256,
    RsaDecryptOaep3072Sha256,
    RsaDecryptOaep4096Sha256,
    HmacSha256,
}

/// The family of key an algorithm makes in the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// An AES secret key of this many bytes.
    Aes(usize),
    /// An HMAC generic secret of this many bytes.
    Hmac(usize),
    /// An EC key pair on P-256 or P-384 (field size in bits).
    Ec(usize),
    /// An RSA key pair with this modulus size in bits.
    Rsa(usize),
}

impl Algorithm {
    /// Every algorithm of design §2.
    pub const ALL: [Algorithm; 17] = [
        Algorithm::Aes128Gcm,
        Algorithm::Aes256Gcm,
        Algorithm::EcSignP256Sha256,
        Algorithm::EcSignP384Sha384,
        Algorithm::RsaSignPkcs1_2048Sha256,
        Algorithm::RsaSignPkcs1_3072Sha256,
        Algorithm::RsaSignPkcs1_4096Sha256,
        Algorithm::RsaSignPss2048Sha256,
        Algorithm::RsaSignPss3072Sha256,
        Algorithm::RsaSignPss4096Sha256,
        Algorithm::RsaDecryptOaep2048Sha1,
        Algorithm::RsaDecryptOaep3072Sha1,
        Algorithm::RsaDecryptOaep4096Sha1,
        Algorithm::RsaDecryptOaep2048Sha256,
        Algorithm::RsaDecryptOaep3072Sha256,
        Algorithm::RsaDecryptOaep4096Sha256,
        Algorithm::HmacSha256,
    ];

    /// The name used on the command line and in the store.
    pub fn as_str(self) -> &'static str {
        use Algorithm::*;
        match self {
            Aes128Gcm => "AES_128_GCM",
            Aes256Gcm => "AES_256_GCM",
            EcSignP256Sha256 => "EC_SIGN_P256_SHA256",
            EcSignP384Sha384 => "EC_SIGN_P384_SHA384",
            RsaSignPkcs1_2048Sha256 => "RSA_SIGN_PKCS1_2048_SHA256",
            RsaSignPkcs1_3072Sha256 => "RSA_SIGN_PKCS1_3072_SHA256",
            RsaSignPkcs1_4096Sha256 => "RSA_SIGN_PKCS1_4096_SHA256",
            RsaSignPss2048Sha256 => "RSA_SIGN_PSS_2048_SHA256",
            RsaSignPss3072Sha256 => "RSA_SIGN_PSS_3072_SHA256",
            RsaSignPss4096Sha256 => "RSA_SIGN_PSS_4096_SHA256",
            RsaDecryptOaep2048Sha1 => "RSA_DECRYPT_OAEP_2048_SHA1",
            RsaDecryptOaep3072Sha1 => "RSA_DECRYPT_OAEP_3072_SHA1",
            RsaDecryptOaep4096Sha1 => "RSA_DECRYPT_OAEP_4096_SHA1",
            RsaDecryptOaep2048Sha256 => "RSA_DECRYPT_OAEP_2048_SHA256",
            RsaDecryptOaep3072Sha256 => "RSA_DECRYPT_OAEP_3072_SHA256",
            RsaDecryptOaep4096Sha256 => "RSA_DECRYPT_OAEP_4096_SHA256",
            HmacSha256 => "HMAC_SHA256",
        }
    }

    /// The purpose this algorithm belongs to.
    pub fn purpose(self) -> Purpose {
        use Algorithm::*;
        match self {
            Aes128Gcm | Aes256Gcm => Purpose::EncryptDecrypt,
            EcSignP256Sha256
            | EcSignP384Sha384
            | RsaSignPkcs1_2048Sha256
            | RsaSignPkcs1_3072Sha256
            | RsaSignPkcs1_4096Sha256
            | RsaSignPss2048Sha256
            | RsaSignPss3072Sha256
            | RsaSignPss4096Sha256 => Purpose::AsymmetricSign,
            RsaDecryptOaep2048Sha1
            | RsaDecryptOaep3072Sha1
            | RsaDecryptOaep4096Sha1
            | RsaDecryptOaep2048Sha256
            | RsaDecryptOaep3072Sha256
            | RsaDecryptOaep4096Sha256 => Purpose::AsymmetricDecrypt,
            HmacSha256 => Purpose::Mac,
        }
    }

    /// The kind of token object(s) this algorithm needs.
    pub fn kind(self) -> KeyKind {
        use Algorithm::*;
        match self {
            Aes128Gcm => KeyKind::Aes(16),
            Aes256Gcm => KeyKind::Aes(32),
            HmacSha256 => KeyKind::Hmac(32),
            EcSignP256Sha256 => KeyKind::Ec(256),
            EcSignP384Sha384 => KeyKind::Ec(384),
            RsaSignPkcs1_2048Sha256
            | RsaSignPss2048Sha256
            | RsaDecryptOaep2048Sha1
            | RsaDecryptOaep2048Sha256 => KeyKind::Rsa(2048),
            RsaSignPkcs1_3072Sha256
            | RsaSignPss3072Sha256
            | RsaDecryptOaep3072Sha1
            | RsaDecryptOaep3072Sha256 => KeyKind::Rsa(3072),
            RsaSignPkcs1_4096Sha256
            | RsaSignPss4096Sha256
            | RsaDecryptOaep4096Sha1
            | RsaDecryptOaep4096Sha256 => KeyKind::Rsa(4096),
        }
    }

    /// True for algorithms whose versions are key pairs.
    pub fn is_asymmetric(self) -> bool {
        matches!(self.kind(), KeyKind::Ec(_) | KeyKind::Rsa(_))
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Algorithm {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let up = s.to_ascii_uppercase().replace('-', "_");
        Algorithm::ALL
            .into_iter()
            .find(|a| a.as_str() == up)
            .ok_or_else(|| {
                format!(
                    "unknown algorithm '{s}': expected one of {}",
                    Algorithm::ALL.map(|a| a.as_str()).join(", ")
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for a in Algorithm::ALL {
            assert_eq!(a.as_str().parse::<Algorithm>().unwrap(), a);
        }
        for p in Purpose::ALL {
            assert_eq!(p.as_str().parse::<Purpose>().unwrap(), p);
        }
        assert!("AES_512_GCM".parse::<Algorithm>().is_err());
        assert_eq!(
            "aes-256-gcm".parse::<Algorithm>().unwrap(),
            Algorithm::Aes256Gcm
        );
    }
}
