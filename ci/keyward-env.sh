# Sourced by the client suites (ci/clients.sh, ci/clients-lp.sh, ci/clients-ssh.sh, ...): builds
# keywardctl, keywardd and libkeyward_pkcs11.so, makes a temporary directory with its own
# SoftHSM2 token and an offline-bootstrapped store (organisation "org", project "proj", admin
# $ADMIN), and offers the helpers below. Everything it starts is stopped, and the directory
# removed, when the sourcing script exits (add more with `on_exit CMD`); if it exits non-zero,
# the end of keywardd's log goes to stderr first.
#   off ARGS...          keywardctl on the store, offline, as $ADMIN (before keywardd starts)
#   key_of SA            a new key of service account SA (e.g. p11@proj), printed once
#   save_key FILE SA     the same, into a 0600 credentials file
#   no_uid_binding RES   fails unless this uid holds no permission on RES (nothing may pass
#                        by accident through peer credentials)
#   start_keywardd       starts keywardd on the store; sets KEYWARD_SOCKET/KEYWARD_ADMIN_SOCKET
#   die MESSAGE          prints "<script>: MESSAGE" on stderr and exits 1
#   free_port            an unused TCP port on 127.0.0.1
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source ci/lib.sh
here=$PWD
me_name=$(basename "$0" .sh)
die() { echo "$me_name: $*" >&2; exit 1; }
# A command that fails under set -e is named, not silent.
trap '[[ $- != *e* ]] || echo "$me_name: line $LINENO: failed: $BASH_COMMAND" >&2' ERR

cargo build --quiet --locked -p keyward --bin keywardctl --bin keywardd
cargo build --quiet --locked -p keyward-pkcs11
target=${CARGO_TARGET_DIR:-$here/target}
case $target in /*) ;; *) target=$here/$target ;; esac
kw=$target/debug/keywardctl
module=$target/debug/libkeyward_pkcs11.so

work=$(mktemp -d)
daemon_pid=
exit_hooks=()
on_exit() { exit_hooks+=("$*"); }
keyward_env_cleanup() {
    local rc=$? h
    for h in "${exit_hooks[@]}"; do eval "$h" || true; done
    # A failed suite shows what keywardd said (its log never holds a PIN, key or secret).
    if [[ $rc -ne 0 && -s $work/keywardd.log && $me_name != clients ]]; then
        echo "$me_name: the end of keywardd's log:" >&2
        tail -30 "$work/keywardd.log" >&2
    fi
    if [[ -n "$daemon_pid" ]]; then
        kill "$daemon_pid" 2>/dev/null && wait "$daemon_pid" 2>/dev/null
    fi
    rm -rf "$work"
}
trap keyward_env_cleanup EXIT

# The backing token: SoftHSM2; with KEYWARD_BACKING=tpm2 a tpm2-pkcs11 token over swtpm
# (ci/tpm2-token.sh; its three processes are stopped by PID at exit); with KEYWARD_BACKING=nss
# an NSS softokn database (ci/nss-token.sh; its C_Initialize parameters in
# KEYWARD_TOKEN_INIT_ARGS).
case ${KEYWARD_BACKING:-softhsm2} in
    softhsm2)
        bash softhsm-config/init-token.sh "$work/softhsm" keyward-backing >/dev/null
        export SOFTHSM2_CONF=$work/softhsm/softhsm2.conf
        ;;
    tpm2)
        export KEYWARD_TOKEN_DIR=$work/tpm2
        export KEYWARD_TOKEN_MODULE=/usr/lib/x86_64-linux-gnu/pkcs11/libtpm2_pkcs11.so
        on_exit 'for f in abrmd dbus swtpm; do [[ -s $KEYWARD_TOKEN_DIR/$f.pid ]] && kill "$(cat "$KEYWARD_TOKEN_DIR/$f.pid")"; done'
        bash ci/tpm2-token.sh "$KEYWARD_TOKEN_DIR" keyward-backing
        set -a
        source "$KEYWARD_TOKEN_DIR/env"
        set +a
        ;;
    nss)
        export KEYWARD_TOKEN_DIR=$work/nss
        export KEYWARD_TOKEN_MODULE=/usr/lib/x86_64-linux-gnu/libsoftokn3.so
        bash ci/nss-token.sh "$KEYWARD_TOKEN_DIR" keyward-backing
        KEYWARD_TOKEN_INIT_ARGS=$(cat "$KEYWARD_TOKEN_DIR/init-args")
        export KEYWARD_TOKEN_INIT_ARGS
        ;;
    *) die "KEYWARD_BACKING is softhsm2, tpm2 or nss" ;;
esac
ADMIN=user:admin@example.test
db=$work/keyward.db
off() { "$kw" --db "$db" --as "$ADMIN" "$@"; }
"$kw" --db "$db" init --org org --admin "$ADMIN" >/dev/null
off project create --parent organizations/org proj >/dev/null

key_of() { off --json sa key create "$1" | sed -n 's/.*"key":"\([^"]*\)".*/\1/p'; }
save_key() {
    (umask 077 && key_of "$2" > "$1")
    [[ -s $1 ]] || die "no key made for $2"
}

no_uid_binding() {
    local uid=unix-uid:$(id -u)
    if off --json iam test --member "$uid" --resource "$1" | grep -q '"permissions":\[[^]]'; then
        die "$uid holds permissions on $1; refusing to run"
    fi
}

start_keywardd() {
    keyward_toml "$work" "$db"
    "$target/debug/keywardd" --config "$work/keyward.toml" 2>"$work/keywardd.log" &
    daemon_pid=$!
    for _ in $(seq 200); do [[ -S $work/client.sock && -S $work/admin.sock ]] && break; sleep 0.05; done
    [[ -S $work/client.sock ]] || { cat "$work/keywardd.log" >&2; die "keywardd did not start"; }
    export KEYWARD_SOCKET=$work/client.sock KEYWARD_ADMIN_SOCKET=$work/admin.sock
}

free_port() {
    local p
    for _ in $(seq 50); do
        p=$((20000 + RANDOM % 40000))
        # Nothing answers there: free enough for a server the caller starts right away.
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            echo "$p"
            return 0
        fi
    done
    die "no free port found"
}

# signer_ring NAME: the ring projects/proj/keyRings/NAME (token label NAME) with
#   ec     an EC P-256 key made by keywardctl (EC_SIGN_P256_SHA256), CKA_ID $ec_id;
#   rsa    an RSA-2048 pair made through the module with CKA_SIGN and CKA_DECRYPT TRUE,
#          CKA_ID 5253, label rsa (key name $rsa_key);
#   other  an EC key nobody but its admin is bound on;
# service account lpadmin@proj bound roles/kms.admin on the ring (key in $work/admin.key),
# signer@proj bound only roles/kms.signerVerifier on ec and rsa (key in $work/signer.key,
# also $spin), and the public halves from keywardctl as the signer in $work/ec.pub and
# $work/rsa.pub. Starts keywardd.
pass() { echo "ok: $*"; }
adm() { KEYWARD_CREDENTIALS=$work/admin.key "$kw" "$@"; }
signer() { KEYWARD_CREDENTIALS=$work/signer.key "$@"; }
p11() { pkcs11-tool --module "$module" "$@"; }
signer_ring() {
    ring=projects/proj/keyRings/$1
    off keyring create --parent projects/proj "$1" >/dev/null
    off sa create --project proj lpadmin >/dev/null
    off sa create --project proj signer >/dev/null
    off iam bind --resource "$ring" --role roles/kms.admin --member serviceAccount:lpadmin@proj >/dev/null 2>&1
    save_key "$work/admin.key" lpadmin@proj
    save_key "$work/signer.key" signer@proj
    no_uid_binding "$ring"
    start_keywardd
    spin=$(cat "$work/signer.key")
    # The keys, made by the ring's admin: EC by keywardctl, RSA sign+decrypt through the module.
    adm key create --keyring "$ring" --purpose ASYMMETRIC_SIGN --algorithm EC_SIGN_P256_SHA256 ec >/dev/null
    KEYWARD_CREDENTIALS=$work/admin.key p11 --token-label "$1" --login --pin "$(cat "$work/admin.key")" \
        --keypairgen --key-type rsa:2048 --usage-sign --usage-decrypt --label rsa --id 5253 \
        > "$work/keygen.txt" 2>&1 || { cat "$work/keygen.txt" >&2; die "RSA sign+decrypt pair not made"; }
    grep -A4 '^Private Key Object; RSA' "$work/keygen.txt" | grep -q 'Usage: *decrypt, sign' ||
        { cat "$work/keygen.txt" >&2; die "the RSA private key lacks decrypt or sign"; }
    adm key create --keyring "$ring" --purpose ASYMMETRIC_SIGN --algorithm EC_SIGN_P256_SHA256 other >/dev/null
    ec_key=$ring/cryptoKeys/ec
    rsa_key=$(adm --json key list --keyring "$ring" | grep -o "\"name\":\"$ring/cryptoKeys/p11-[^\"/]*\"" |
        sed 's/.*:"\(.*\)"/\1/')
    [[ $rsa_key == "$ring"/cryptoKeys/p11-* ]] || die "the RSA pair's key name not found"
    for k in "$ec_key" "$rsa_key"; do
        adm iam bind --resource "$k" --role roles/kms.signerVerifier \
            --member serviceAccount:signer@proj >/dev/null 2>&1 || die "binding on $k refused"
    done
    KEYWARD_CREDENTIALS=$work/admin.key p11 --token-label "$1" --login --pin "$(cat "$work/admin.key")" \
        -O > "$work/admin-O.txt" 2>&1 || true
    ec_id=$(awk '/^Private Key Object; EC/{f=1} f&&/label:/{l=$2} f&&/ID:/{if(l=="ec")print $2; f=0}' \
        "$work/admin-O.txt")
    [[ -n $ec_id ]] || { cat "$work/admin-O.txt" >&2; die "the EC key's CKA_ID not found"; }

    # Public halves for OpenSSL, from keywardctl as the signer (signerVerifier may view them).
    signer "$kw" key get-public-key "$ec_key" > "$work/ec.pub"
    signer "$kw" key get-public-key "$rsa_key" > "$work/rsa.pub"
    openssl pkey -pubin -in "$work/ec.pub" -noout -text | grep -q 'NIST CURVE: P-256' || die "ec.pub is not P-256"
    openssl pkey -pubin -in "$work/rsa.pub" -noout -text | grep -q 'Public-Key: (2048 bit)' || die "rsa.pub is not RSA-2048"
}
