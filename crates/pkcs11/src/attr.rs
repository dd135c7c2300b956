//! Typed attributes and fixed-width text: the safe half of moving values across the ABI.
//!
//! The ffi layer hands over the bytes a `CK_ATTRIBUTE` points to; [`decode`] makes an
//! [`Attribute`] of them using the kind table both ends share
//! ([`keyward_wire::pkcs11::attribute_kind`]); [`encode`] lays a value out in the client's
//! ABI (`CK_ULONG` of the platform's width); [`plan_get`] applies C_GetAttributeValue's
//! per-attribute rules.

use crate::buffer::{fit, Fit};
use crate::error::Error;
use keyward_wire::pkcs11::{attribute_kind, AttrKind, AttrResult, AttrValue, Attribute, Blob};
use std::os::raw::c_ulong;
use zeroize::Zeroizing;

/// The size of the client's `CK_ULONG`.
pub const ULONG_SIZE: usize = std::mem::size_of::<c_ulong>();

// A no-op where CK_ULONG is 64 bits, a widening where it is 32 (Windows): keep it.
#[allow(clippy::useless_conversion)]
fn ulong_from(bytes: &[u8]) -> Option<u64> {
    let arr: [u8; ULONG_SIZE] = bytes.try_into().ok()?;
    Some(u64::from(c_ulong::from_ne_bytes(arr)))
}

fn ulong_bytes(v: u64) -> Result<[u8; ULONG_SIZE], Error> {
    c_ulong::try_from(v)
        .map(c_ulong::to_ne_bytes)
        .map_err(|_| Error::UnexpectedResponse("a CK_ULONG value does not fit this platform"))
}

/// Makes a typed attribute of the `bytes` a template entry of type `ty` holds.
pub fn decode(ty: u64, bytes: &[u8]) -> Result<Attribute, Error> {
    let value = match attribute_kind(ty) {
        AttrKind::Bool => match bytes {
            [b] => AttrValue::Bool(*b != 0),
            _ => return Err(Error::AttributeValueInvalid(ty)),
        },
        AttrKind::Ulong => {
            AttrValue::Ulong(ulong_from(bytes).ok_or(Error::AttributeValueInvalid(ty))?)
        }
        AttrKind::UlongList => {
            if bytes.len() % ULONG_SIZE != 0 {
                return Err(Error::AttributeValueInvalid(ty));
            }
            AttrValue::UlongList(
                bytes
                    .chunks_exact(ULONG_SIZE)
                    .filter_map(ulong_from)
                    .collect(),
            )
        }
        AttrKind::Bytes => AttrValue::Bytes(Blob::from(bytes)),
        AttrKind::Template => return Err(Error::AttributeValueInvalid(ty)),
    };
    Ok(Attribute { ty, value })
}

/// Lays `value` out as the client's ABI expects.
pub fn encode(value: &AttrValue) -> Result<Zeroizing<Vec<u8>>, Error> {
    Ok(Zeroizing::new(match value {
        AttrValue::Bool(b) => vec![u8::from(*b)],
        AttrValue::Ulong(v) => ulong_bytes(*v)?.to_vec(),
        AttrValue::UlongList(list) => {
            let mut out = Vec::with_capacity(list.len().saturating_mul(ULONG_SIZE));
            for v in list {
                out.extend_from_slice(&ulong_bytes(*v)?);
            }
            out
        }
        AttrValue::Bytes(b) => b.as_slice().to_vec(),
    }))
}

/// What to write into one `CK_ATTRIBUTE` of a C_GetAttributeValue template.
#[derive(Debug, PartialEq, Eq)]
pub struct AttrOut {
    /// `ulValueLen`; `None` for `CK_UNAVAILABLE_INFORMATION`.
    pub len: Option<usize>,
    /// Bytes to copy into `pValue` (only when it is non-NULL and large enough).
    pub bytes: Option<Zeroizing<Vec<u8>>>,
}

/// Applies PKCS#11 3.0 §5.7.5 to the daemon's per-attribute `results` for a template whose
/// buffers hold `capacities` bytes (`None`: NULL `pValue`). Returns what to write into each
/// entry and the call's code: `CKR_ATTRIBUTE_SENSITIVE`, else `CKR_ATTRIBUTE_TYPE_INVALID`,
/// else `CKR_BUFFER_TOO_SMALL`, else OK — every entry is processed either way.
pub fn plan_get(
    results: Vec<AttrResult>,
    capacities: &[Option<usize>],
) -> Result<(Vec<AttrOut>, Option<Error>), Error> {
    if results.len() != capacities.len() {
        return Err(Error::UnexpectedResponse(
            "attribute count differs from the template",
        ));
    }
    let (mut sensitive, mut invalid, mut short) = (false, false, false);
    let mut outs = Vec::with_capacity(results.len());
    for (result, cap) in results.into_iter().zip(capacities) {
        outs.push(match result {
            AttrResult::Sensitive => {
                sensitive = true;
                AttrOut {
                    len: None,
                    bytes: None,
                }
            }
            AttrResult::TypeInvalid => {
                invalid = true;
                AttrOut {
                    len: None,
                    bytes: None,
                }
            }
            AttrResult::Value(v) => {
                let bytes = encode(&v)?;
                match fit(*cap, bytes.len()) {
                    Fit::SizeOnly => AttrOut {
                        len: Some(bytes.len()),
                        bytes: None,
                    },
                    Fit::TooSmall => {
                        short = true;
                        AttrOut {
                            len: None,
                            bytes: None,
                        }
                    }
                    Fit::Fits => AttrOut {
                        len: Some(bytes.len()),
                        bytes: Some(bytes),
                    },
                }
            }
        });
    }
    let rv = if sensitive {
        Some(Error::AttributeSensitive)
    } else if invalid {
        Some(Error::AttributeTypeInvalid)
    } else if short {
        Some(Error::BufferTooSmall { needed: 0 })
    } else {
        None
    };
    Ok((outs, rv))
}

/// `s` as a blank-padded fixed-width PKCS#11 text field, cut at a character boundary.
pub fn pad<const N: usize>(s: &str) -> [u8; N] {
    let mut out = [b' '; N];
    let mut end = s.len().min(N);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    out[..end].copy_from_slice(&s.as_bytes()[..end]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn decode_by_kind() {
        assert_eq!(decode(0x1, &[1]).unwrap().value, AttrValue::Bool(true));
        assert_eq!(decode(0x1, &[0]).unwrap().value, AttrValue::Bool(false));
        assert!(matches!(
            decode(0x1, &[]),
            Err(Error::AttributeValueInvalid(1))
        ));
        assert!(matches!(
            decode(0x1, &[1, 0]),
            Err(Error::AttributeValueInvalid(1))
        ));
        let four = 4 as c_ulong;
        assert_eq!(
            decode(0x0, &four.to_ne_bytes()).unwrap().value,
            AttrValue::Ulong(4)
        );
        assert!(decode(0x0, &[4]).is_err());
        assert_eq!(
            decode(0x3, b"label").unwrap().value,
            AttrValue::Bytes(Blob::from(&b"label"[..]))
        );
        assert_eq!(
            decode(0x3, b"").unwrap().value,
            AttrValue::Bytes(Blob::default())
        );
        let mut two = (0x1087 as c_ulong).to_ne_bytes().to_vec();
        two.extend_from_slice(&(1 as c_ulong).to_ne_bytes());
        assert_eq!(
            decode(0x4000_0600, &two).unwrap().value,
            AttrValue::UlongList(vec![0x1087, 1])
        );
        assert!(decode(0x4000_0600, &two[1..]).is_err());
        assert!(matches!(
            decode(0x4000_0211, &[]),
            Err(Error::AttributeValueInvalid(0x4000_0211))
        ));
    }

    #[test]
    fn get_attribute_rules() {
        let results = vec![
            AttrResult::Value(AttrValue::Bytes(Blob::from(&b"abc"[..]))),
            AttrResult::Value(AttrValue::Bool(true)),
            AttrResult::Value(AttrValue::Bytes(Blob::from(&b"abcdef"[..]))),
            AttrResult::TypeInvalid,
        ];
        let caps = [None, Some(1), Some(2), Some(8)];
        let (outs, rv) = plan_get(results, &caps).unwrap();
        assert_eq!(
            outs[0],
            AttrOut {
                len: Some(3),
                bytes: None
            }
        );
        assert_eq!(outs[1].len, Some(1));
        assert_eq!(
            outs[1].bytes.as_deref().map(Vec::as_slice),
            Some(&[1u8][..])
        );
        assert_eq!(
            outs[2],
            AttrOut {
                len: None,
                bytes: None
            }
        );
        assert_eq!(
            outs[3],
            AttrOut {
                len: None,
                bytes: None
            }
        );
        assert!(matches!(rv, Some(Error::AttributeTypeInvalid)));

        let (_, rv) = plan_get(
            vec![AttrResult::Sensitive, AttrResult::TypeInvalid],
            &[Some(4), Some(4)],
        )
        .unwrap();
        assert!(matches!(rv, Some(Error::AttributeSensitive)));
        let (_, rv) = plan_get(
            vec![AttrResult::Value(AttrValue::Ulong(1))],
            &[Some(ULONG_SIZE - 1)],
        )
        .unwrap();
        assert!(matches!(rv, Some(Error::BufferTooSmall { .. })));
        let (_, rv) = plan_get(vec![AttrResult::Value(AttrValue::Ulong(1))], &[None]).unwrap();
        assert!(rv.is_none());
        assert!(plan_get(vec![], &[None]).is_err());
    }

    #[test]
    fn padding() {
        assert_eq!(&pad::<8>("ab"), b"ab      ");
        assert_eq!(&pad::<4>("abcdef"), b"abcd");
        // "é" is two bytes: never cut in the middle.
        assert_eq!(&pad::<3>("aéb"), b"a\xc3\xa9");
        assert_eq!(&pad::<2>("aé"), b"a ");
    }

    proptest! {
        #[test]
        fn decode_never_panics_and_round_trips(ty in any::<u64>(),
                                               bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
            if let Ok(a) = decode(ty, &bytes) {
                let back = encode(&a.value).unwrap();
                if a.value.kind() == AttrKind::Bool {
                    prop_assert_eq!(back.len(), 1);
                } else {
                    prop_assert_eq!(&back[..], &bytes[..]);
                }
            }
        }
    }
}
