#!/usr/bin/env bash
# Usage: nss-token.sh DIR [LABEL]
#
# A private NSS softokn token (libsoftokn3.so, from libnss3) for Keyward's tests and CI; no
# system state is touched and nothing asks for input. Everything lives in DIR (made 0700):
#   DIR/db          the NSS database (certutil -N; 0700): the token's object store
#   DIR/user-pin    a random user PIN (0600, 32 hex characters, no newline): the database
#                   password
#   DIR/init-args   the C_Initialize parameters ([token] init_args) that open DIR/db as a
#                   token labelled LABEL (default keyward-backing)
# softokn has no SO PIN and no C_InitToken step: the database password is the user PIN.
set -euo pipefail

die() {
    printf 'nss-token.sh: %s\n' "$*" >&2
    exit 1
}

[[ $# -ge 1 && $# -le 2 ]] || die "usage: nss-token.sh DIR [LABEL]"
D=$1
label=${2:-keyward-backing}
command -v certutil >/dev/null 2>&1 || die "certutil not found: run ci/install-deps.sh"
[[ ${#label} -le 32 && $label != *"'"* ]] || die "LABEL: at most 32 characters, no quote"
umask 077
mkdir -p "$D/db"
chmod 700 "$D" "$D/db"
D=$(cd "$D" && pwd)
head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$D/user-pin"
# certutil reads the password from the first line of -f's file.
pwfile=$(mktemp "$D/pw.XXXXXX")
trap 'rm -f "$pwfile"' EXIT
{ cat "$D/user-pin"; echo; } >"$pwfile"
certutil -N -d "sql:$D/db" -f "$pwfile" </dev/null >/dev/null
printf "configdir='sql:%s' certPrefix='' keyPrefix='' secmod='secmod.db' flags=optimizeSpace dbTokenDescription='%s'" \
    "$D/db" "$label" >"$D/init-args"
