//! Multi-part operations that stream (issue 14): keywardd never holds a token session between
//! a client's calls (tokens have few sessions, and one held per operation would let any uid
//! pin them all), so it keeps the operation's state itself and runs each `*Update` as one
//! single-part token call.
//!
//! - **AES block modes** ([`Chain`]): ECB, CBC and CTR process the whole blocks that have
//!   arrived, chaining with the last ciphertext block (CBC) or the advanced counter block
//!   (CTR); CBC-PAD encrypts whole blocks as CBC and pads at `*Final`, and decrypts all but
//!   the last whole block (which holds the padding) until `*Final`. An update's output never
//!   exceeds its input rounded down to a block (pkcs11-tool 0.23 streams 1,024-byte parts
//!   into a 1,024-byte output buffer); what is held back waits for the next call.
//! - **Digests and sign/verify with a hash** ([`Stream::Hashed`]): hashed in keywardd as the
//!   data comes (the hash is of public data; SoftHSM2 has no `CKM_ECDSA_SHA*` anyway), then
//!   the digest is signed or verified raw: `CKM_ECDSA`, `CKM_RSA_PKCS` over the `DigestInfo`,
//!   `CKM_RSA_PKCS_PSS` over the digest; the signatures are those of the hashing mechanism.
//! - Everything else is buffered to `*Final` under the per-uid byte caps of design §9
//!   ([`Stream::Whole`]): AES-GCM (decryption needs the tag at the end), HMAC, OAEP and raw
//!   signatures over a client-made digest.
//!
//! A one-shot call (`C_Encrypt`, `C_Sign`, ...) on a fresh operation runs the mechanism
//! itself over all of its input: one token call.

use super::ops::{Hash, Plan, TokenMech, AES_BLOCK};
use keyward_wire::pkcs11::Operation;
use sha2::{Digest, Sha256, Sha384, Sha512};

/// `DigestInfo` of SHA-256 (RFC 8017 §9.2 note 1), before the 32-byte digest.
pub(super) const SHA256_DIGEST_INFO: [u8; 19] = [
    0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05,
    0x00, 0x04, 0x20,
];
/// `DigestInfo` of SHA-384, before the 48-byte digest.
const SHA384_DIGEST_INFO: [u8; 19] = [
    0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02, 0x05,
    0x00, 0x04, 0x30,
];
/// `DigestInfo` of SHA-512, before the 64-byte digest.
const SHA512_DIGEST_INFO: [u8; 19] = [
    0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03, 0x05,
    0x00, 0x04, 0x40,
];

/// A running hash.
#[derive(Clone)]
pub enum Hasher {
    /// SHA-256.
    Sha256(Sha256),
    /// SHA-384.
    Sha384(Sha384),
    /// SHA-512.
    Sha512(Sha512),
}

impl std::fmt::Debug for Hasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Hasher::Sha256(_) => "Hasher(SHA-256)",
            Hasher::Sha384(_) => "Hasher(SHA-384)",
            Hasher::Sha512(_) => "Hasher(SHA-512)",
        })
    }
}

impl Hasher {
    /// A new hash of kind `h`.
    pub fn new(h: Hash) -> Hasher {
        match h {
            Hash::Sha256 => Hasher::Sha256(Sha256::new()),
            Hash::Sha384 => Hasher::Sha384(Sha384::new()),
            Hash::Sha512 => Hasher::Sha512(Sha512::new()),
        }
    }

    /// Hashes `data` in.
    pub fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(data),
            Hasher::Sha384(h) => h.update(data),
            Hasher::Sha512(h) => h.update(data),
        }
    }

    /// The digest.
    pub fn finish(self) -> Vec<u8> {
        match self {
            Hasher::Sha256(h) => h.finalize().to_vec(),
            Hasher::Sha384(h) => h.finalize().to_vec(),
            Hasher::Sha512(h) => h.finalize().to_vec(),
        }
    }
}

/// The chaining state of an AES block mode between updates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chain {
    /// `CKM_AES_ECB`: no state.
    Ecb,
    /// `CKM_AES_CBC`: the next IV (the last ciphertext block so far).
    Cbc {
        /// The next IV.
        iv: [u8; AES_BLOCK],
    },
    /// `CKM_AES_CBC_PAD`: as CBC; the padding is done (or checked) at `*Final`.
    CbcPad {
        /// The next IV.
        iv: [u8; AES_BLOCK],
    },
    /// `CKM_AES_CTR`: the next counter block.
    Ctr {
        /// Bits of the block that are the counter.
        counter_bits: u64,
        /// The next counter block.
        cb: [u8; AES_BLOCK],
    },
}

impl Chain {
    /// The chain of an AES block-mode plan, if it is one.
    fn of(mech: &TokenMech) -> Option<Chain> {
        Some(match mech {
            TokenMech::AesEcb => Chain::Ecb,
            TokenMech::AesCbc { iv } => Chain::Cbc { iv: *iv },
            TokenMech::AesCbcPad { iv } => Chain::CbcPad { iv: *iv },
            TokenMech::AesCtr { counter_bits, cb } => Chain::Ctr {
                counter_bits: *counter_bits,
                cb: *cb,
            },
            _ => return None,
        })
    }

    /// How many of the `held` bytes (the last `input` of which just came) an update
    /// processes now: whole blocks, never more than the input rounded down to a block, and
    /// for a CBC-PAD decryption never the last whole block (it holds the padding).
    pub fn ready(&self, op: Operation, held: usize, input: usize) -> usize {
        let cap = input - input % AES_BLOCK;
        let whole = held - held % AES_BLOCK;
        let avail = match self {
            Chain::CbcPad { .. } if op == Operation::Decrypt => {
                if held % AES_BLOCK == 0 {
                    whole.saturating_sub(AES_BLOCK)
                } else {
                    whole
                }
            }
            _ => whole,
        };
        avail.min(cap)
    }

    /// The token mechanism for a middle part (whole blocks, no padding).
    pub fn middle(&self) -> TokenMech {
        match self {
            Chain::Ecb => TokenMech::AesEcb,
            Chain::Cbc { iv } | Chain::CbcPad { iv } => TokenMech::AesCbc { iv: *iv },
            Chain::Ctr { counter_bits, cb } => TokenMech::AesCtr {
                counter_bits: *counter_bits,
                cb: *cb,
            },
        }
    }

    /// The token mechanism for the last part (`*Final`).
    pub fn last(&self) -> TokenMech {
        match self {
            Chain::CbcPad { iv } => TokenMech::AesCbcPad { iv: *iv },
            other => other.middle(),
        }
    }

    /// Whether `*Final` with nothing held needs the token (CBC-PAD: the padding block, or
    /// the error for a missing last block); the other modes end with no output.
    pub fn final_needs_token(&self, held: usize) -> bool {
        held > 0 || matches!(self, Chain::CbcPad { .. })
    }

    /// Checks that a CTR counter does not wrap over `blocks` more blocks (a wrapped counter
    /// repeats keystream): `CKR_DATA_LEN_RANGE`-worthy if it would.
    pub fn counter_fits(&self, bytes: usize) -> bool {
        let Chain::Ctr { counter_bits, cb } = self else {
            return true;
        };
        let blocks = u128::try_from(bytes.div_ceil(AES_BLOCK)).unwrap_or(u128::MAX);
        if *counter_bits >= 128 {
            return true;
        }
        let mask = (1u128 << counter_bits) - 1;
        let counter = u128::from_be_bytes(*cb) & mask;
        counter
            .checked_add(blocks)
            .is_some_and(|end| end <= mask + 1)
    }

    /// The state after a middle part: `input` went in, `output` came out.
    pub fn advance(&mut self, op: Operation, input: &[u8], output: &[u8]) {
        let last_block = |b: &[u8]| -> Option<[u8; AES_BLOCK]> {
            b.len()
                .checked_sub(AES_BLOCK)
                .and_then(|at| b[at..].try_into().ok())
        };
        match self {
            Chain::Ecb => {}
            Chain::Cbc { iv } | Chain::CbcPad { iv } => {
                let ciphertext = if op == Operation::Encrypt {
                    output
                } else {
                    input
                };
                if let Some(b) = last_block(ciphertext) {
                    *iv = b;
                }
            }
            Chain::Ctr { counter_bits, cb } => {
                let blocks = u128::try_from(input.len() / AES_BLOCK).unwrap_or(0);
                let value = u128::from_be_bytes(*cb);
                let next = if *counter_bits >= 128 {
                    value.wrapping_add(blocks)
                } else {
                    let mask = (1u128 << *counter_bits) - 1;
                    (value & !mask) | ((value & mask).wrapping_add(blocks) & mask)
                };
                *cb = next.to_be_bytes();
            }
        }
    }
}

/// How an operation's input is taken.
#[derive(Debug)]
pub enum Stream {
    /// Buffered whole until `*Final`.
    Whole,
    /// Hashed as it comes; at `*Final` the digest (after `prefix`) goes to `last`.
    Hashed {
        /// The running hash (boxed: a SHA-512 state is 200 bytes).
        hasher: Box<Hasher>,
        /// The raw plan the digest is signed or verified with.
        last: Plan,
        /// A `DigestInfo` put before the digest (`CKM_RSA_PKCS`).
        prefix: Option<&'static [u8]>,
    },
    /// An AES block mode, chained between single-part token calls.
    Blocks(Chain),
}

impl Stream {
    /// How `op` under `plan` streams.
    pub fn of(op: Operation, plan: &Plan) -> Stream {
        let signing = matches!(op, Operation::Sign | Operation::Verify);
        let raw = |mech: TokenMech| Plan {
            mech,
            prehash: None,
            input_len: None,
            input_prefix: None,
            class: plan.class,
        };
        let hashed = |h: Hash, last: Plan, prefix: Option<&'static [u8]>| Stream::Hashed {
            hasher: Box::new(Hasher::new(h)),
            last,
            prefix,
        };
        match (&plan.mech, plan.prehash) {
            (_, Some(h)) if signing => hashed(
                h,
                Plan {
                    prehash: None,
                    ..plan.clone()
                },
                None,
            ),
            (TokenMech::Sha256RsaPkcs, None) if signing => hashed(
                Hash::Sha256,
                raw(TokenMech::RsaPkcs),
                Some(&SHA256_DIGEST_INFO),
            ),
            (TokenMech::Sha384RsaPkcs, None) if signing => hashed(
                Hash::Sha384,
                raw(TokenMech::RsaPkcs),
                Some(&SHA384_DIGEST_INFO),
            ),
            (TokenMech::Sha512RsaPkcs, None) if signing => hashed(
                Hash::Sha512,
                raw(TokenMech::RsaPkcs),
                Some(&SHA512_DIGEST_INFO),
            ),
            (TokenMech::Sha256RsaPss, None) if signing => {
                hashed(Hash::Sha256, raw(TokenMech::RsaPssSha256), None)
            }
            (mech, None) if matches!(op, Operation::Encrypt | Operation::Decrypt) => {
                Chain::of(mech).map_or(Stream::Whole, Stream::Blocks)
            }
            _ => Stream::Whole,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keyward_token::ObjectClass;

    fn plan(mech: TokenMech, prehash: Option<Hash>) -> Plan {
        Plan {
            mech,
            prehash,
            input_len: None,
            input_prefix: None,
            class: ObjectClass::SECRET_KEY,
        }
    }

    #[test]
    fn updates_output_at_most_their_input_rounded_down() {
        let cbc = Chain::Cbc { iv: [0; 16] };
        assert_eq!(cbc.ready(Operation::Encrypt, 1024, 1024), 1024);
        assert_eq!(cbc.ready(Operation::Encrypt, 1034, 1024), 1024);
        assert_eq!(cbc.ready(Operation::Encrypt, 20, 10), 0);
        assert_eq!(cbc.ready(Operation::Encrypt, 36, 20), 16);
        let pad = Chain::CbcPad { iv: [0; 16] };
        assert_eq!(pad.ready(Operation::Encrypt, 1024, 1024), 1024);
        // Decryption keeps the last whole block back for the padding check.
        assert_eq!(pad.ready(Operation::Decrypt, 1024, 1024), 1008);
        assert_eq!(pad.ready(Operation::Decrypt, 2048, 1024), 1024);
        assert_eq!(pad.ready(Operation::Decrypt, 1030, 1024), 1024);
        assert_eq!(pad.ready(Operation::Decrypt, 16, 16), 0);
    }

    #[test]
    fn chains_advance_like_the_modes() {
        let mut cbc = Chain::Cbc { iv: [0; 16] };
        cbc.advance(Operation::Encrypt, &[1; 32], &[[2; 16], [3; 16]].concat());
        assert_eq!(cbc, Chain::Cbc { iv: [3; 16] });
        cbc.advance(Operation::Decrypt, &[[4; 16], [5; 16]].concat(), &[0; 32]);
        assert_eq!(cbc, Chain::Cbc { iv: [5; 16] });
        let mut cb = [0u8; 16];
        cb[15] = 0xfe;
        cb[0] = 0xaa;
        let mut ctr = Chain::Ctr {
            counter_bits: 8,
            cb,
        };
        assert!(ctr.counter_fits(32));
        assert!(
            !ctr.counter_fits(48),
            "an 8-bit counter at 0xfe wraps after 2 blocks"
        );
        ctr.advance(Operation::Encrypt, &[0; 32], &[0; 32]);
        let Chain::Ctr { cb: next, .. } = ctr else {
            unreachable!()
        };
        assert_eq!((next[0], next[14], next[15]), (0xaa, 0, 0));
        let mut full = Chain::Ctr {
            counter_bits: 128,
            cb: [0xff; 16],
        };
        assert!(full.counter_fits(1 << 20));
        full.advance(Operation::Encrypt, &[0; 16], &[0; 16]);
        assert_eq!(
            full,
            Chain::Ctr {
                counter_bits: 128,
                cb: [0; 16]
            }
        );
    }

    #[test]
    fn hashing_mechanisms_stream_their_hash_and_sign_raw() {
        match Stream::of(Operation::Sign, &plan(TokenMech::Sha256RsaPkcs, None)) {
            Stream::Hashed { last, prefix, .. } => {
                assert_eq!(last.mech, TokenMech::RsaPkcs);
                assert_eq!(prefix, Some(&SHA256_DIGEST_INFO[..]));
            }
            other => panic!("{other:?}"),
        }
        match Stream::of(
            Operation::Verify,
            &plan(TokenMech::Ecdsa, Some(Hash::Sha384)),
        ) {
            Stream::Hashed { last, prefix, .. } => {
                assert_eq!(
                    (last.mech, last.prehash, prefix),
                    (TokenMech::Ecdsa, None, None)
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            Stream::of(
                Operation::Sign,
                &plan(
                    TokenMech::Hmac {
                        hash: Hash::Sha256,
                        len: 32
                    },
                    None
                )
            ),
            Stream::Whole
        ));
        assert!(matches!(
            Stream::of(
                Operation::Encrypt,
                &plan(
                    TokenMech::Gcm {
                        iv: vec![0; 12],
                        aad: vec![],
                        tag_bits: 128
                    },
                    None
                )
            ),
            Stream::Whole
        ));
        assert!(matches!(
            Stream::of(
                Operation::Decrypt,
                &plan(TokenMech::AesCbcPad { iv: [0; 16] }, None)
            ),
            Stream::Blocks(Chain::CbcPad { .. })
        ));
        // The DigestInfo prefixes end in the digest's length.
        assert_eq!(SHA384_DIGEST_INFO[18], 48);
        assert_eq!(SHA512_DIGEST_INFO[18], 64);
    }
}
