#!/usr/bin/env bash
# Runs ci/clients.sh (check-module.sh through libkeyward_pkcs11.so) with keywardd on an NSS
# softokn database (KEYWARD_BACKING=nss, ci/nss-token.sh) and fails CI if a check
# listed in ci/clients-expected-pass-nss.txt does not PASS, if a check that does not pass has
# no "-CHECK: why" line there (the token's own gap, said once), or if a check with such a
# line passes (it belongs with the passes then).
set -euo pipefail
cd "$(dirname "$0")/.."
expected=ci/clients-expected-pass-nss.txt
out=$(mktemp)
trap 'rm -f "$out"' EXIT
set +e
KEYWARD_BACKING=nss bash ci/clients.sh "$@" > "$out"
set -e
grep -Ev '^[0-9]+ passed, [0-9]+ failed' "$out" || true
bad=0
while read -r check; do
    [[ -z $check || $check == \#* || $check == -* ]] && continue
    grep -qx "PASS $check" "$out" || { echo "clients-check-nss: $check no longer passes" >&2; bad=$((bad + 1)); }
done < "$expected"
while read -r verdict check; do
    check=${check%%:*}
    gap=$(grep -c "^-$check: ." "$expected" || true)
    if [[ $verdict == PASS && $gap -ne 0 ]]; then
        echo "clients-check-nss: $check passes now: move it from the gaps to the passes" >&2
        bad=$((bad + 1))
    elif [[ $verdict != PASS && $gap -eq 0 ]]; then
        echo "clients-check-nss: $check does not pass and $expected gives no reason" >&2
        bad=$((bad + 1))
    fi
done < <(grep -E '^(PASS|FAIL|SKIP) ' "$out")
echo "check-module.sh on nss: PASS $(grep -c '^PASS ' "$out" || true)," \
    "FAIL $(grep -c '^FAIL ' "$out" || true), SKIP $(grep -c '^SKIP ' "$out" || true); problems: $bad"
[[ $bad -eq 0 ]]
