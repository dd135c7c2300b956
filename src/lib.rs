//! Keyward: cloud-KMS-style IAM in front of a PKCS#11 token.
#![forbid(unsafe_code)]
