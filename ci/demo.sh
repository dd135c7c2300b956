#!/usr/bin/env bash
# Keyward's walkthrough, end to end on this machine, in a temporary directory: a SoftHSM2
# token from softhsm-config/, the store bootstrapped offline, keywardd started, then
# hierarchy, keys in the token, bindings, `iam test`/`who-can`/`explain`, a denied call,
# separation of duties, OpenSSL (libp11 engine) signing a CSR and serving a TLS handshake with
# a token key through libkeyward_pkcs11.so, and the audit log with its token-signed
# checkpoints. `keywardctl encrypt` (AES-GCM from the CLI) joins it with issue 8, and BYOK (an
# import job, an EC key wrapped by the openssl CLI, imported and used) with issue 7.
set -euo pipefail
cd "$(dirname "$0")/.."
source ci/lib.sh

work=$(mktemp -d)
daemon_pid=
cleanup() {
    [[ -n "$daemon_pid" ]] && kill "$daemon_pid" 2>/dev/null && wait "$daemon_pid" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }

step "Build"
cargo build --quiet --bin keywardctl --bin keywardd
bin=$(realpath -m "${CARGO_TARGET_DIR:-target}")/debug
kw() { "$bin/keywardctl" "$@"; }
ADMIN=user:admin@acme.example

step "A SoftHSM2 token in $work/softhsm (never the system token store)"
bash softhsm-config/init-token.sh "$work/softhsm" keyward-backing
export SOFTHSM2_CONF=$work/softhsm/softhsm2.conf

step "Bootstrap, offline: the organisation and its first admin (nobody else is special, root included)"
run kw --db "$work/keyward.db" init --org acme --admin "$ADMIN"
run kw --db "$work/keyward.db" --as "$ADMIN" iam map-uid "$(id -u)" "$ADMIN"

step "Start keywardd: the only holder of the token PIN"
keyward_toml "$work" "$work/keyward.db"
"$bin/keywardd" --config "$work/keyward.toml" 2>"$work/keywardd.log" &
daemon_pid=$!
export KEYWARD_ADMIN_SOCKET=$work/admin.sock
for _ in $(seq 100); do [[ -S $KEYWARD_ADMIN_SOCKET ]] && break; sleep 0.1; done
[[ -S $KEYWARD_ADMIN_SOCKET ]] || { cat "$work/keywardd.log"; exit 1; }
echo "keywardd is up (pid $daemon_pid); keywardctl now talks to it over $KEYWARD_ADMIN_SOCKET"

step "Hierarchy: folder > project > key ring, and an organisation-scoped ring"
run kw folder create --parent organizations/acme eng
run kw project create --parent folders/eng payments
run kw keyring create --parent projects/payments web
run kw keyring create --parent organizations/acme root-ca --token-label "Acme Root CA"
run kw keyring list

step "Keys in the token: AES-256-GCM, EC P-256 and RSA-PSS signing keys"
run kw key create --keyring projects/payments/keyRings/web --purpose ENCRYPT_DECRYPT --algorithm AES_256_GCM data
run kw key create --keyring projects/payments/keyRings/web --purpose ASYMMETRIC_SIGN --algorithm EC_SIGN_P256_SHA256 tls
run kw key create --keyring projects/payments/keyRings/web --purpose ASYMMETRIC_SIGN --algorithm RSA_SIGN_PSS_2048_SHA256 release
run kw key rotate projects/payments/keyRings/web/cryptoKeys/data
run kw key list --keyring projects/payments/keyRings/web
step "The org admin administers keys but holds no use, not even viewPublicKey: denied"
set +e
kw key get-public-key projects/payments/keyRings/web/cryptoKeys/tls
echo "(exit code $?)"
set -e
run kw iam bind --resource projects/payments/keyRings/web --role roles/kms.publicKeyViewer --member "$ADMIN"
run kw key get-public-key projects/payments/keyRings/web/cryptoKeys/tls
step "SoftHSM2 2.6 cannot do OAEP with SHA-256: refused, naming the mechanism"
set +e
kw key create --keyring projects/payments/keyRings/web --purpose ASYMMETRIC_DECRYPT --algorithm RSA_DECRYPT_OAEP_2048_SHA256 oaep
echo "(exit code $?)"
set -e

step "A service account for the web servers, and its key (shown once: it is the PKCS#11 PIN)"
run kw sa create --project payments web --display-name "web servers"
kw --json sa key create web@payments | sed -n 's/.*"key":"\([^"]*\)".*/\1/p' > "$work/web.key"
chmod 600 "$work/web.key"
echo "(key written to a 0600 credentials file; not printed here)"

step "Least privilege: the web servers may sign with the tls key only; an auditor group reads"
run kw iam bind --resource projects/payments/keyRings/web/cryptoKeys/tls \
    --role roles/kms.signerVerifier --member serviceAccount:web@payments
run kw group create auditors
run kw group add-member auditors user:ann@acme.example
run kw iam bind --resource organizations/acme --role roles/keyward.auditor --member group:auditors

step "OpenSSL, through libkeyward_pkcs11.so, as the web account: a CSR and a TLS handshake"
cargo build --quiet -p keyward-pkcs11
if engine_cnf "$work/openssl.cnf" "$bin/libkeyward_pkcs11.so"; then
    printf '[req]\ndistinguished_name = req_dn\n[req_dn]\n' >> "$work/openssl.cnf"
    export KEYWARD_SOCKET=$work/client.sock
    key_uri="pkcs11:token=web;object=tls;type=private?pin-value=$(cat "$work/web.key")"
    ossl() { OPENSSL_CONF=$work/openssl.cnf KEYWARD_CREDENTIALS=$work/web.key openssl "$@"; }
    echo '$ openssl req -new -engine pkcs11 -keyform engine -key "pkcs11:token=web;object=tls;type=private?pin-value=…" -subj /CN=web.payments.example'
    ossl req -new -engine pkcs11 -keyform engine -key "$key_uri" -subj /CN=web.payments.example \
        -out "$work/web.csr" 2>/dev/null
    run openssl req -in "$work/web.csr" -noout -verify -subject
    ossl req -new -x509 -days 1 -engine pkcs11 -keyform engine -key "$key_uri" \
        -subj /CN=localhost -addext "subjectAltName=IP:127.0.0.1" -out "$work/web.crt" 2>/dev/null
    port=$((20000 + RANDOM % 20000))
    ossl s_server -engine pkcs11 -keyform engine -key "$key_uri" -cert "$work/web.crt" \
        -accept "127.0.0.1:$port" -naccept 1 -www > "$work/s_server.log" 2>&1 &
    server_pid=$!
    for _ in $(seq 100); do grep -q ACCEPT "$work/s_server.log" 2>/dev/null && break; sleep 0.1; done
    echo "\$ openssl s_client -connect 127.0.0.1:$port -CAfile web.crt -verify_return_error"
    printf 'GET / HTTP/1.0\r\n\r\n' | openssl s_client -connect "127.0.0.1:$port" \
        -CAfile "$work/web.crt" -verify_return_error -verify_ip 127.0.0.1 -ign_eof 2>&1 \
        | grep -E '^(Verify return code|Peer signature type|Protocol|HTTP/1.0)' || true
    wait "$server_pid" 2>/dev/null || true
    echo "(the TLS server's private key never left the token: keywardd signed the handshake)"
    step "Least privilege: through the module the web account sees exactly one key, the tls pair"
    echo "\$ pkcs11-tool --module libkeyward_pkcs11.so --login --pin … -O   (what it sees)"
    KEYWARD_CREDENTIALS=$work/web.key pkcs11-tool --module "$bin/libkeyward_pkcs11.so" \
        --login --pin "$(cat "$work/web.key")" -O 2>&1 | grep -E 'Object|label|ID:' || true
else
    echo "(libp11 OpenSSL engine not installed: apt-get install libengine-pkcs11-openssl)"
fi

step "Encrypt and decrypt with AES-GCM through keywardctl (client socket, as a second service account)"
run kw sa create --project payments app --display-name "application"
kw --json sa key create app@payments | sed -n 's/.*"key":"\([^"]*\)".*/\1/p' > "$work/app.key"
chmod 600 "$work/app.key"
run kw iam bind --resource projects/payments/keyRings/web/cryptoKeys/data \
    --role roles/kms.cryptoKeyEncrypterDecrypter --member serviceAccount:app@payments
app() { KEYWARD_CREDENTIALS=$work/app.key KEYWARD_SOCKET=$work/client.sock kw "$@"; }
printf 'card 4111 1111 1111 1111\n' > "$work/secret.txt"
printf 'order-42' > "$work/aad"
echo '$ KEYWARD_CREDENTIALS=app.key keywardctl encrypt --key …/cryptoKeys/data --aad-file aad --in secret.txt --out secret.kw1'
app encrypt --key projects/payments/keyRings/web/cryptoKeys/data --aad-file "$work/aad" \
    --in "$work/secret.txt" --out "$work/secret.kw1"
echo "(ciphertext: $(head -c 3 "$work/secret.kw1"), key version $(od -An -tu1 -j3 -N8 "$work/secret.kw1" | awk '{print $8}'), $(wc -c < "$work/secret.kw1") bytes)"
echo '$ KEYWARD_CREDENTIALS=app.key keywardctl decrypt --key …/cryptoKeys/data --aad-file aad --in secret.kw1'
app decrypt --key projects/payments/keyRings/web/cryptoKeys/data --aad-file "$work/aad" \
    --in "$work/secret.kw1"

step "BYOK: an import job in the token; an EC key made and wrapped by OpenSSL, imported, used"
R=projects/payments/keyRings/web
run kw import-job create --keyring $R --method rsa-oaep-3072-sha1-aes-256 --id demo-job
kw import-job get-public-key $R/importJobs/demo-job > "$work/job.pem"
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$work/byok.pem" 2>/dev/null
openssl pkcs8 -topk8 -nocrypt -in "$work/byok.pem" -outform DER -out "$work/byok.p8"
openssl pkey -in "$work/byok.pem" -pubout -out "$work/byok.pub"
openssl rand -out "$work/eph" 32
echo '$ openssl pkeyutl -encrypt -pubin -inkey job.pem (OAEP-SHA1) eph; openssl enc -id-aes256-wrap-pad -K <eph> byok.p8'
openssl pkeyutl -encrypt -pubin -inkey "$work/job.pem" -pkeyopt rsa_padding_mode:oaep \
    -pkeyopt rsa_oaep_md:sha1 -pkeyopt rsa_mgf1_md:sha1 -in "$work/eph" -out "$work/eph.w"
openssl enc -id-aes256-wrap-pad -K "$(od -An -tx1 -v "$work/eph" | tr -d ' \n')" -iv A65959A6 \
    -in "$work/byok.p8" -out "$work/byok.p8.w"
cat "$work/eph.w" "$work/byok.p8.w" > "$work/byok.wrapped"
run kw key import --import-job demo-job --key $R/cryptoKeys/byok --algorithm EC_SIGN_P256_SHA256 \
    --wrapped-key-file "$work/byok.wrapped" --public-key-file "$work/byok.pub"
run kw iam bind --resource $R/cryptoKeys/byok --role roles/kms.signer --member serviceAccount:app@payments
printf 'release 1.0\n' > "$work/release.txt"
echo '$ KEYWARD_CREDENTIALS=app.key keywardctl sign --key …/cryptoKeys/byok --in release.txt --out release.sig'
app sign --key $R/cryptoKeys/byok --in "$work/release.txt" --out "$work/release.sig"
run openssl dgst -sha256 -verify "$work/byok.pub" -signature "$work/release.sig" "$work/release.txt"

step "Which permissions does the web account hold on the tls key? (testIamPermissions)"
run kw iam test --member serviceAccount:web@payments --resource projects/payments/keyRings/web/cryptoKeys/tls
step "Who can sign with the tls key, and why?"
run kw iam who-can --resource projects/payments/keyRings/web/cryptoKeys/tls \
    --permission kms.cryptoKeyVersions.useToSign
run kw iam explain --member user:ann@acme.example --resource projects/payments \
    --permission kms.auditLogs.read

step "A denied call: the web account, with its own key, tries to create a key"
set +e
KEYWARD_CREDENTIALS=$work/web.key kw key create --keyring projects/payments/keyRings/web \
    --purpose ENCRYPT_DECRYPT --algorithm AES_256_GCM rogue
echo "(exit code $?)"
set -e

step "Separation of duties: one principal both administering and using keys is flagged"
run kw iam bind --resource projects/payments/keyRings/web/cryptoKeys/tls \
    --role roles/kms.admin --member serviceAccount:web@payments

step "Destroying a version waits out its grace period"
run kw version destroy --grace 1d projects/payments/keyRings/web/cryptoKeys/data/cryptoKeyVersions/1
run kw version list projects/payments/keyRings/web/cryptoKeys/data

step "The audit log, and its hash chain checked against the token-signed head"
run kw audit tail -n 8
run kw audit verify

step "keywardctl status: the daemon, its token, what the store holds, the audit chain head"
run kw status

step "Stop keywardd cleanly (it signs the chain head), then tamper with the log"
kill -TERM "$daemon_pid"; wait "$daemon_pid" || true; daemon_pid=
if command -v sqlite3 >/dev/null; then
    run sqlite3 "$work/keyward.db" "UPDATE audit_log SET result = 'allowed' WHERE result = 'denied'"
    set +e
    kw --db "$work/keyward.db" --as "$ADMIN" audit verify
    echo "(exit code $?: the edited record is named)"
    set -e
else
    echo "(sqlite3 CLI not installed: apt-get install sqlite3)"
fi
echo
echo "Demo done."
