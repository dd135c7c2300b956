#!/usr/bin/env bash
# Usage: init-token.sh DIR [LABEL]
#
# Makes a private SoftHSM2 token store under DIR for Keyward's tests and demo:
#   DIR/tokens          the token directory (created)
#   DIR/softhsm2.conf   written from softhsm2.conf.in beside this script
#   DIR/so-pin          random SO PIN   (mode 0600, 32 hex characters, NO trailing newline)
#   DIR/user-pin        random user PIN (mode 0600, 32 hex characters, NO trailing newline)
# then initialises a token labelled LABEL (default keyward-backing) in the first free slot.
#
# Running it again on the same DIR with another LABEL adds a second token that shares the
# PINs already in DIR/so-pin and DIR/user-pin. A LABEL that already exists in DIR is refused.
#
# The system token store is never touched: softhsm2-util runs with SOFTHSM2_CONF set to
# DIR/softhsm2.conf. The PINs are never printed. softhsm2-util 2.6 reads PINs only from a
# terminal or from its command line, so they are passed as arguments: they are visible in
# /proc/PID/cmdline to local users for the moment softhsm2-util runs. That is acceptable for
# test and demo tokens; initialise a production HSM with its own tools.
#
# On success the last line printed is: export SOFTHSM2_CONF=DIR/softhsm2.conf
set -euo pipefail

die() {
    printf 'init-token.sh: %s\n' "$*" >&2
    exit 1
}

[[ $# -ge 1 && $# -le 2 ]] || die "usage: init-token.sh DIR [LABEL]"
[[ -n "$1" ]] || die "DIR must not be empty"
label=${2:-keyward-backing}
[[ -n "$label" ]] || die "LABEL must not be empty"
(( ${#label} <= 32 )) || die "LABEL '$label' is longer than 32 bytes (PKCS#11 token label limit)"

command -v softhsm2-util >/dev/null 2>&1 \
    || die "softhsm2-util not found: install SoftHSM2 (Debian/Ubuntu: apt-get install softhsm2)"

script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
template="$script_dir/softhsm2.conf.in"
[[ -r "$template" ]] || die "template $template not found or not readable"

mkdir -p -- "$1" || die "cannot create directory $1"
dir=$(cd -- "$1" && pwd)
tokendir="$dir/tokens"
conf="$dir/softhsm2.conf"
mkdir -p -- "$tokendir"
chmod 0700 -- "$tokendir"

umask 077
text=$(<"$template")
printf '%s\n' "${text//@TOKENDIR@/$tokendir}" >"$conf"

# 16 random bytes as 32 lowercase hex characters, no newline.
random_pin() {
    local hex
    hex=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
    (( ${#hex} == 32 )) || die "could not read 16 random bytes from /dev/urandom"
    printf '%s' "$hex"
}

# Write a PIN file (mode 0600, no trailing newline) unless it already exists.
ensure_pin_file() {
    local file=$1
    if [[ ! -e "$file" ]]; then
        random_pin >"$file"
    fi
    chmod 0600 -- "$file"
    [[ -s "$file" ]] || die "$file is empty"
}
ensure_pin_file "$dir/so-pin"
ensure_pin_file "$dir/user-pin"

export SOFTHSM2_CONF="$conf"

# Refuse a label that already names a token in this store (softhsm2-util would make a duplicate).
if softhsm2-util --show-slots 2>/dev/null | grep -Eq "^[[:space:]]+Label:[[:space:]]+${label//[][\\.^$*+?(){}|]/\\&}[[:space:]]*$"; then
    die "a token labelled '$label' already exists in $tokendir"
fi

so_pin=$(<"$dir/so-pin")
user_pin=$(<"$dir/user-pin")
if ! out=$(softhsm2-util --init-token --free --label "$label" --so-pin "$so_pin" --pin "$user_pin" 2>&1); then
    die "softhsm2-util --init-token failed: $out"
fi
unset so_pin user_pin
printf '%s\n' "$out" >&2

printf 'export SOFTHSM2_CONF=%s\n' "$conf"
