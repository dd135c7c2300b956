#!/usr/bin/env bash
# The least-privilege run (issue 8): a service account bound only roles/kms.signerVerifier on
# two keys of a ring, an EC P-256 key (keywardctl, EC_SIGN_P256_SHA256) and an RSA-2048 pair
# made through the module with CKA_SIGN and CKA_DECRYPT both TRUE (so a refused decrypt can
# only come from policy), by another account bound roles/kms.admin on the ring. With the
# signer's key in KEYWARD_CREDENTIALS, through libkeyward_pkcs11.so:
#   pkcs11-tool -T lists exactly one token; after login -O lists exactly the two pairs;
#   each key signs through pkcs11-tool and through OpenSSL (libp11 engine, pkcs11: URI), and
#   OpenSSL verifies every signature with the public key keywardctl hands out (a tampered
#   message must not verify);
#   RSA decryption is CKR_KEY_FUNCTION_NOT_PERMITTED, key generation CKR_TOKEN_WRITE_PROTECTED.
# The ring also holds a key the signer is not bound on, which it must not see.
# Any assertion that does not hold fails the script (exit 1) naming it.
source "$(dirname "$0")/keyward-env.sh"

signer_ring lp

# 1. Exactly one token.
signer p11 -T > "$work/T.txt" 2>&1 || { cat "$work/T.txt" >&2; die "pkcs11-tool -T failed"; }
n=$(grep -c '^Slot [0-9]' "$work/T.txt" || true)
[[ $n -eq 1 ]] || { cat "$work/T.txt" >&2; die "pkcs11-tool -T lists $n tokens, not 1"; }
grep -Eq 'token label *: lp$' "$work/T.txt" || { cat "$work/T.txt" >&2; die "the one token is not lp"; }
pass "pkcs11-tool -T lists exactly one token (lp)"

# 2. Exactly the two pairs' objects, nothing else (not the unbound key "other").
signer p11 --login --pin "$spin" -O > "$work/O.txt" 2>&1 || { cat "$work/O.txt" >&2; die "pkcs11-tool -O failed"; }
objects=$(grep -E '^(Private|Public|Secret) Key Object|^(Certificate|Data) Object|^Profile object' "$work/O.txt" |
    sed 's/ *[0-9]* bits$//; s/ *EC_POINT.*//; s/ *$//' | sort | tr '\n' '|')
want='Private Key Object; EC|Private Key Object; RSA|Public Key Object; EC|Public Key Object; RSA|'
[[ $objects == "$want" ]] || { cat "$work/O.txt" >&2; die "pkcs11-tool -O lists '$objects', not '$want'"; }
labels=$(grep -E '^ *label:' "$work/O.txt" | awk '{print $2}' | sort | tr '\n' ' ')
[[ $labels == "ec ec rsa rsa " ]] || { cat "$work/O.txt" >&2; die "labels '$labels', not the two pairs'"; }
pass "after login, pkcs11-tool -O lists exactly the EC and RSA pairs (4 objects)"

# 3. Signing through pkcs11-tool, verified by OpenSSL.
head -c 1000 /dev/urandom > "$work/msg"
openssl dgst -sha256 -binary "$work/msg" > "$work/msg.sha256"
ossl_verify() { # PUB SIG [opts]: must verify, and must not verify a tampered message
    local pub=$1 sig=$2
    shift 2
    openssl dgst -sha256 -verify "$pub" -signature "$sig" "$@" "$work/msg" >/dev/null 2>&1 || return 1
    { cat "$work/msg"; printf X; } > "$work/msg.x"
    ! openssl dgst -sha256 -verify "$pub" -signature "$sig" "$@" "$work/msg.x" >/dev/null 2>&1
}
signer p11 --login --pin "$spin" --sign -m ECDSA --id "$ec_id" --signature-format openssl \
    -i "$work/msg.sha256" -o "$work/ec.p11.sig" > "$work/s.txt" 2>&1 ||
    { cat "$work/s.txt" >&2; die "pkcs11-tool ECDSA sign failed"; }
ossl_verify "$work/ec.pub" "$work/ec.p11.sig" || die "OpenSSL does not verify pkcs11-tool's ECDSA signature"
pass "EC: pkcs11-tool signs (ECDSA over SHA-256), OpenSSL verifies"
signer p11 --login --pin "$spin" --sign -m SHA256-RSA-PKCS --id 5253 \
    -i "$work/msg" -o "$work/rsa.p11.sig" > "$work/s.txt" 2>&1 ||
    { cat "$work/s.txt" >&2; die "pkcs11-tool RSA sign failed"; }
ossl_verify "$work/rsa.pub" "$work/rsa.p11.sig" || die "OpenSSL does not verify pkcs11-tool's RSA signature"
pass "RSA: pkcs11-tool signs (SHA256-RSA-PKCS), OpenSSL verifies"

# 4. Signing through OpenSSL's libp11 engine with pkcs11: URIs.
engine_cnf "$work/openssl.cnf" "$module" || die "libp11 engine missing (apt-get install libengine-pkcs11-openssl)"
for k in ec rsa; do
    uri="pkcs11:token=lp;object=$k;type=private?pin-value=$spin"
    signer env OPENSSL_CONF="$work/openssl.cnf" openssl dgst -sha256 -engine pkcs11 -keyform engine \
        -sign "$uri" -out "$work/$k.eng.sig" "$work/msg" > "$work/e.txt" 2>&1 ||
        { sed "s/$spin/<pin>/g" "$work/e.txt" >&2; die "OpenSSL engine signing with $k failed"; }
    ossl_verify "$work/$k.pub" "$work/$k.eng.sig" || die "OpenSSL does not verify the engine's $k signature"
    pass "$k: OpenSSL (libp11 engine, pkcs11:token=lp;object=$k) signs, OpenSSL verifies"
done

# 5. RSA decryption is refused by policy (the key has CKA_DECRYPT TRUE).
printf 'secret' | openssl pkeyutl -encrypt -pubin -inkey "$work/rsa.pub" -out "$work/ct"
set +e
signer p11 --login --pin "$spin" --decrypt -m RSA-PKCS --id 5253 -i "$work/ct" -o "$work/pt" > "$work/d.txt" 2>&1
rc=$?
set -e
[[ $rc -ne 0 ]] || die "RSA decryption succeeded for a signerVerifier"
grep -q 'C_DecryptInit.*CKR_KEY_FUNCTION_NOT_PERMITTED' "$work/d.txt" ||
    { cat "$work/d.txt" >&2; die "RSA decryption refused, but not with C_DecryptInit CKR_KEY_FUNCTION_NOT_PERMITTED"; }
[[ ! -s $work/pt ]] || die "RSA decryption wrote plaintext"
pass "RSA decrypt refused: $(grep -m1 CKR_ "$work/d.txt")"

# 6. Key generation is refused: the token is write-protected for this account.
set +e
signer p11 --login --pin "$spin" --keypairgen --key-type EC:prime256v1 --label rogue > "$work/g.txt" 2>&1
rc=$?
set -e
[[ $rc -ne 0 ]] || die "key generation succeeded for a signerVerifier"
grep -q 'CKR_TOKEN_WRITE_PROTECTED' "$work/g.txt" ||
    { cat "$work/g.txt" >&2; die "key generation refused, but not with CKR_TOKEN_WRITE_PROTECTED"; }
pass "keygen refused: $(grep -m1 CKR_ "$work/g.txt")"
echo "least-privilege run: all assertions hold"
