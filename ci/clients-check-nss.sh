#!/usr/bin/env bash
# check-module.sh through libkeyward_pkcs11.so in front of keywardd on NSS softokn
# (KEYWARD_BACKING=nss: ci/nss-token.sh's database; README "Backing tokens"), with
# allow_plaintext_import on. Fails CI if a check FAILs, if a check listed in
# ci/clients-expected-pass-nss.txt does not PASS, or if a check is SKIPped that the file does
# not list as a "# skip CHECK: reason" line (the token's own gaps, one line of reason each).
set -euo pipefail
cd "$(dirname "$0")/.."
list=ci/clients-expected-pass-nss.txt
out=$(mktemp)
trap 'rm -f "$out"' EXIT
set +e
KEYWARD_BACKING=nss bash ci/clients.sh "$@" > "$out"
set -e
count() { grep -c "^$1 " "$out" || true; }
grep -Ev '^[0-9]+ passed, [0-9]+ failed' "$out" || true
bad=0
while read -r check; do
    [[ -z $check || $check == \#* ]] && continue
    if ! grep -qx "PASS $check" "$out"; then
        echo "clients-check-nss: $check does not pass on NSS softokn" >&2
        bad=$((bad + 1))
    fi
done < "$list"
while read -r skipped; do
    name=${skipped#SKIP }
    name=${name%%:*}
    if ! grep -q "^# skip $name: " "$list"; then
        echo "clients-check-nss: $name was skipped, and $list gives no reason for it" >&2
        bad=$((bad + 1))
    fi
done < <(grep '^SKIP ' "$out" || true)
if [[ $(count FAIL) -ne 0 ]]; then
    echo "clients-check-nss: a check failed on NSS softokn" >&2
    bad=$((bad + 1))
fi
echo "check-module.sh through libkeyward_pkcs11.so on NSS softokn: PASS $(count PASS)," \
    "FAIL $(count FAIL), SKIP $(count SKIP)"
[[ $bad -eq 0 ]]
