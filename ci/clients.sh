#!/usr/bin/env bash
# Runs ../shared/clients/check-module.sh (pkcs11-tool, OpenSSL libp11 engine, NSS, GnuTLS,
# p11-kit, pkcs11-dump, each result verified with OpenSSL) against libkeyward_pkcs11.so in
# front of a real keywardd and SoftHSM2, all in a temporary directory, as design §1 and
# issue 5 describe: a ring that holds nothing but what the harness makes, a service account
# bound roles/kms.admin + roles/kms.cryptoOperator on it (its key is --pin and
# KEYWARD_CREDENTIALS), another with kms.keyRings.setIamPolicy there (its key is --so-pin),
# allow_plaintext_import on, and the caller's own uid holding no binding.
# Usage: ci/clients.sh [check-module.sh options...]   (exit status: check-module.sh's)
set -euo pipefail
cd "$(dirname "$0")/.."
here=$PWD
check=${CHECK_MODULE:-$here/../shared/clients/check-module.sh}
[[ -f $check ]] || { echo "clients.sh: $check not found" >&2; exit 2; }

cargo build --quiet -p keyward --bin keywardctl --bin keywardd
cargo build --quiet -p keyward-pkcs11
target=${CARGO_TARGET_DIR:-$here/target}
kw=$target/debug/keywardctl
module=$target/debug/libkeyward_pkcs11.so

work=$(mktemp -d)
daemon_pid=
cleanup() {
    [[ -n "$daemon_pid" ]] && kill "$daemon_pid" 2>/dev/null && wait "$daemon_pid" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

bash softhsm-config/init-token.sh "$work/softhsm" keyward-backing >/dev/null
export SOFTHSM2_CONF=$work/softhsm/softhsm2.conf
ADMIN=user:admin@example.test
db=$work/keyward.db
off() { "$kw" --db "$db" --as "$ADMIN" "$@"; }
"$kw" --db "$db" init --org org --admin "$ADMIN" >/dev/null
off project create --parent organizations/org proj >/dev/null
ring=projects/proj/keyRings/chk
off keyring create --parent projects/proj chk >/dev/null
off keyring update "$ring" --allow-plaintext-import true >/dev/null
off sa create --project proj p11 >/dev/null
off sa create --project proj so >/dev/null
off iam bind --resource "$ring" --role roles/kms.admin --member serviceAccount:p11@proj >/dev/null 2>&1
off iam bind --resource "$ring" --role roles/kms.cryptoOperator --member serviceAccount:p11@proj >/dev/null 2>&1
off iam bind --resource "$ring" --role roles/kms.admin --member serviceAccount:so@proj >/dev/null 2>&1
key_of() { off --json sa key create "$1" | sed -n 's/.*"key":"\([^"]*\)".*/\1/p'; }
pin=$(key_of p11@proj)
so_pin=$(key_of so@proj)
printf '%s\n' "$pin" > "$work/p11.key"; chmod 600 "$work/p11.key"

# Nothing may pass by accident through peer credentials: this uid holds no binding.
me=unix-uid:$(id -u)
if off --json iam test --member "$me" --resource "$ring" | grep -q '"permissions":\[[^]]'; then
    echo "clients.sh: $me holds permissions on $ring; refusing to run" >&2
    exit 2
fi

cat > "$work/keyward.toml" <<TOML
[store]
path = "$db"
[token]
label = "keyward-backing"
pin_file = "$work/softhsm/user-pin"
[admin]
socket = "$work/admin.sock"
[client]
socket = "$work/client.sock"
TOML
"$target/debug/keywardd" --config "$work/keyward.toml" 2>"$work/keywardd.log" &
daemon_pid=$!
for _ in $(seq 200); do [[ -S $work/client.sock ]] && break; sleep 0.05; done
[[ -S $work/client.sock ]] || { cat "$work/keywardd.log" >&2; exit 1; }

export KEYWARD_SOCKET=$work/client.sock KEYWARD_CREDENTIALS=$work/p11.key
set +e
bash "$check" --module "$module" --token-label chk --pin "$pin" --so-pin "$so_pin" "$@"
rc=$?
set -e
if [[ $rc -ne 0 && -n ${CLIENTS_SHOW_LOG:-} ]]; then tail -50 "$work/keywardd.log" >&2; fi
exit $rc
