#!/usr/bin/env bash
# What the tests need from Debian (12): SoftHSM2 (the token), sqlite3 (tamper tests),
# openssl (independent verification of the token's signatures and keys).
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends softhsm2 sqlite3 openssl ca-certificates
