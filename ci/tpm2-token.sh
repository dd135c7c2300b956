#!/usr/bin/env bash
# Usage: tpm2-token.sh DIR [LABEL]
#
# A private tpm2-pkcs11 token over a software TPM (swtpm), for Keyward's tests and CI; no
# system state is touched and nothing asks for input. Everything lives in DIR (made 0700):
#   DIR/state           swtpm's TPM state
#   DIR/swtpm.sock      the TPM's command socket (and .ctrl, its control socket)
#   DIR/bus             a private session D-Bus (tpm2-abrmd registers on it)
#   DIR/store           the tpm2-pkcs11 store (TPM2_PKCS11_STORE)
#   DIR/so-pin, DIR/user-pin   random PINs (0600, 32 hex characters, no newline)
#   DIR/swtpm.pid, DIR/dbus.pid, DIR/abrmd.pid   the three processes started: stop them with
#                       kill "$(cat DIR/abrmd.pid)" "$(cat DIR/dbus.pid)" "$(cat DIR/swtpm.pid)"
#   DIR/env             the environment a PKCS#11 client of the token needs (KEY=VALUE lines):
#                       DBUS_SESSION_BUS_ADDRESS, TPM2_PKCS11_TCTI, TPM2_PKCS11_STORE
# tpm2-abrmd sits between the module and swtpm: tpm2_ptool addtoken over the direct swtpm
# TCTI fails with "out of memory for object contexts". The PINs are passed to tpm2_ptool on
# its command line (visible in /proc for the moment it runs): fine for test tokens only.
set -euo pipefail

die() {
    printf 'tpm2-token.sh: %s\n' "$*" >&2
    exit 1
}

[[ $# -ge 1 && $# -le 2 ]] || die "usage: tpm2-token.sh DIR [LABEL]"
D=$1
label=${2:-keyward-backing}
for tool in swtpm dbus-daemon tpm2-abrmd tpm2_ptool busctl; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool not found: run ci/install-deps.sh"
done
mkdir -p "$D"
chmod 700 "$D"
D=$(cd "$D" && pwd)
mkdir -p "$D/state" "$D/store"

swtpm socket --tpm2 --tpmstate dir="$D/state" \
    --server type=unixio,path="$D/swtpm.sock" --ctrl type=unixio,path="$D/swtpm.sock.ctrl" \
    --flags not-need-init,startup-clear --pid file="$D/swtpm.pid" --daemon
dbus-daemon --session --address="unix:path=$D/bus" --nopidfile --fork --print-pid=3 3>"$D/dbus.pid"
export DBUS_SESSION_BUS_ADDRESS="unix:path=$D/bus"
tpm2-abrmd --session --allow-root --flush-all --max-transients=100 --tcti="swtpm:path=$D/swtpm.sock" \
    </dev/null >"$D/abrmd.log" 2>&1 &
echo $! >"$D/abrmd.pid"
# Bounded wait for tpm2-abrmd to own its bus name (about 50 ms here).
for _ in $(seq 1 200); do
    busctl --address="$DBUS_SESSION_BUS_ADDRESS" list 2>/dev/null | grep -q '^com.intel.tss2.Tabrmd ' && break
    sleep 0.025
done
busctl --address="$DBUS_SESSION_BUS_ADDRESS" list 2>/dev/null | grep -q '^com.intel.tss2.Tabrmd ' \
    || die "tpm2-abrmd did not come up: $(cat "$D/abrmd.log")"

umask 077
head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$D/so-pin"
head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$D/user-pin"
export TPM2_PKCS11_STORE="$D/store" TPM2_PKCS11_TCTI=tabrmd:bus_type=session
export TPM2TOOLS_TCTI=tabrmd:bus_type=session
tpm2_ptool init --path "$D/store" >/dev/null
tpm2_ptool addtoken --pid=1 --label="$label" --sopin="$(cat "$D/so-pin")" \
    --userpin="$(cat "$D/user-pin")" --path "$D/store" >/dev/null
printf 'DBUS_SESSION_BUS_ADDRESS=%s\nTPM2_PKCS11_TCTI=%s\nTPM2_PKCS11_STORE=%s\n' \
    "$DBUS_SESSION_BUS_ADDRESS" "$TPM2_PKCS11_TCTI" "$TPM2_PKCS11_STORE" >"$D/env"
