#!/usr/bin/env bash
# Runs ../shared/clients/check-module.sh (pkcs11-tool, OpenSSL libp11 engine, NSS, GnuTLS,
# p11-kit, pkcs11-dump, each result verified with OpenSSL) against libkeyward_pkcs11.so in
# front of a real keywardd and SoftHSM2, all in a temporary directory, as design §1 and
# issue 5 describe: a ring that holds nothing but what the harness makes, a service account
# bound roles/kms.admin + roles/kms.cryptoOperator on it (its key is --pin and
# KEYWARD_CREDENTIALS), another with kms.keyRings.setIamPolicy there (its key is --so-pin),
# allow_plaintext_import on (CLIENTS_PLAINTEXT_IMPORT=off leaves the ring's default, off), and
# the caller's own uid holding no binding.
# Usage: ci/clients.sh [check-module.sh options...]   (exit status: check-module.sh's)
source "$(dirname "$0")/keyward-env.sh"
check=${CHECK_MODULE:-$here/../shared/clients/check-module.sh}
[[ -f $check ]] || { echo "clients.sh: $check not found" >&2; exit 2; }

ring=projects/proj/keyRings/chk
off keyring create --parent projects/proj chk >/dev/null
case ${CLIENTS_PLAINTEXT_IMPORT:-on} in
    on) off keyring update "$ring" --allow-plaintext-import true >/dev/null ;;
    off) ;;
    *) echo "clients.sh: CLIENTS_PLAINTEXT_IMPORT is on or off" >&2; exit 2 ;;
esac
off sa create --project proj p11 >/dev/null
off sa create --project proj so >/dev/null
off iam bind --resource "$ring" --role roles/kms.admin --member serviceAccount:p11@proj >/dev/null 2>&1
off iam bind --resource "$ring" --role roles/kms.cryptoOperator --member serviceAccount:p11@proj >/dev/null 2>&1
off iam bind --resource "$ring" --role roles/kms.admin --member serviceAccount:so@proj >/dev/null 2>&1
save_key "$work/p11.key" p11@proj
pin=$(cat "$work/p11.key")
so_pin=$(key_of so@proj)
no_uid_binding "$ring"

start_keywardd
export KEYWARD_CREDENTIALS=$work/p11.key
set +e
bash "$check" --module "$module" --token-label chk --pin "$pin" --so-pin "$so_pin" "$@"
rc=$?
set -e
if [[ $rc -ne 0 && -n ${CLIENTS_SHOW_LOG:-} ]]; then tail -50 "$work/keywardd.log" >&2; fi
exit $rc
