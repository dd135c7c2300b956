# Sourced by the client suites (ci/clients.sh, ci/clients-lp.sh, ci/clients-ssh.sh, ...): builds
# keywardctl, keywardd and libkeyward_pkcs11.so, makes a temporary directory with its own
# SoftHSM2 token and an offline-bootstrapped store (organisation "org", project "proj", admin
# $ADMIN), and offers the helpers below. Everything it starts is stopped, and the directory
# removed, when the sourcing script exits (add more with `on_exit CMD`).
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
chmod 755 "$work"
daemon_pid=
exit_hooks=()
on_exit() { exit_hooks+=("$*"); }
keyward_env_cleanup() {
    local h
    for h in "${exit_hooks[@]}"; do eval "$h" || true; done
    if [[ -n "$daemon_pid" ]]; then
        kill "$daemon_pid" 2>/dev/null && wait "$daemon_pid" 2>/dev/null
    fi
    rm -rf "$work"
}
trap keyward_env_cleanup EXIT

bash softhsm-config/init-token.sh "$work/softhsm" keyward-backing >/dev/null
export SOFTHSM2_CONF=$work/softhsm/softhsm2.conf
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
