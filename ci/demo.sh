#!/usr/bin/env bash
# Keyward's walkthrough, end to end on this machine. Today (policy engine and store) it runs
# offline against a fresh SQLite store: bootstrap, hierarchy, service accounts, bindings,
# `iam test`/`who-can`/`explain`, a denied call, separation of duties, and the audit log.
# Later stages (keywardd, the token, OpenSSL) extend this same script.
set -euo pipefail
cd "$(dirname "$0")/.."

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export KEYWARD_DB="$work/keyward.db"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }

step "Build"
cargo build --quiet --bin keywardctl
kw() { ./target/debug/keywardctl "$@"; }
ADMIN=user:admin@acme.example

step "Bootstrap: the organisation and its first admin (nobody else is special, root included)"
run kw init --org acme --admin "$ADMIN"

step "Hierarchy: folder > project > key ring, and an organisation-scoped ring"
run kw --as "$ADMIN" folder create --parent organizations/acme eng
run kw --as "$ADMIN" project create --parent folders/eng payments
run kw --as "$ADMIN" keyring create --parent projects/payments web
run kw --as "$ADMIN" keyring create --parent organizations/acme root-ca --token-label "Acme Root CA"
run kw --as "$ADMIN" keyring list

step "A service account for the web servers, and its key (shown once: it is the PKCS#11 PIN)"
run kw --as "$ADMIN" sa create --project payments web --display-name "web servers"
kw --as "$ADMIN" --json sa key create web@payments >/dev/null
echo "(key created; not printed here)"

step "Least privilege: the web servers may sign with keys of ring web; an auditor group reads"
run kw --as "$ADMIN" iam bind --resource projects/payments/keyRings/web \
    --role roles/kms.signerVerifier --member serviceAccount:web@payments
run kw --as "$ADMIN" group create auditors
run kw --as "$ADMIN" group add-member auditors user:ann@acme.example
run kw --as "$ADMIN" iam bind --resource organizations/acme --role roles/keyward.auditor \
    --member group:auditors

step "Which permissions does the web account hold on the ring? (testIamPermissions)"
run kw --as "$ADMIN" iam test --member serviceAccount:web@payments \
    --resource projects/payments/keyRings/web
step "Who can sign with keys of the ring, and why?"
run kw --as "$ADMIN" iam who-can --resource projects/payments/keyRings/web \
    --permission kms.cryptoKeyVersions.useToSign
run kw --as "$ADMIN" iam explain --member user:ann@acme.example --resource projects/payments \
    --permission kms.auditLogs.read

step "A denied call: the web account tries to create a key ring"
set +e
kw --as serviceAccount:web@payments keyring create --parent projects/payments rogue
echo "(exit code $?)"
set -e

step "Separation of duties: one principal both administering and using keys is flagged"
run kw --as "$ADMIN" iam bind --resource projects/payments/keyRings/web \
    --role roles/kms.admin --member serviceAccount:web@payments

step "The audit log, as the auditor sees it, and its hash chain"
run kw --as user:ann@acme.example audit tail -n 8
run kw --as user:ann@acme.example audit verify

step "Tampering: edit one record with sqlite3, and verify again"
if command -v sqlite3 >/dev/null; then
    run sqlite3 "$KEYWARD_DB" "UPDATE audit_log SET result = 'allowed' WHERE result = 'denied'"
    set +e
    kw --as user:ann@acme.example audit verify
    echo "(exit code $?: the edited record is named)"
    set -e
else
    echo "(sqlite3 CLI not installed: apt-get install sqlite3)"
fi
echo
echo "Demo done."
