#!/usr/bin/env bash
# What the tests need from Debian (12): SoftHSM2 (the token), sqlite3 (tamper tests),
# openssl (independent verification of the token's signatures and keys), and the real
# PKCS#11 clients ../shared/clients/check-module.sh drives (OpenSC, the libp11 OpenSSL
# engine, NSS tools, GnuTLS, p11-kit, pkcs11-dump), and the clients ci/clients-*.sh drive
# (OpenSSH client and server, the JDK's keytool and jarsigner), and systemd-analyze for the
# unit in packaging/.
set -euo pipefail
# Installing packages needs root. As root (containers, CI boxes, often without sudo) the script
# goes on; otherwise it runs itself again under sudo, and without sudo it says what to do.
# Nothing outside bash is used before this point, so it works on a bare PATH.
if [ "$EUID" -ne 0 ]; then
    case "$0" in
        /*) self="$0" ;;
        *) self="$PWD/$0" ;;
    esac
    if ! command -v sudo >/dev/null 2>&1; then
        echo "ci/install-deps.sh: installing packages needs root, and you are uid $EUID with no" \
            "sudo on PATH: run it as root (e.g. su -c 'bash $self'), or install sudo" >&2
        exit 1
    fi
    echo "ci/install-deps.sh: not root (uid $EUID): running it again under sudo" >&2
    rc=0
    sudo bash "$self" "$@" || rc=$?
    if [ "$rc" -ne 0 ]; then
        echo "ci/install-deps.sh: the run under sudo failed (exit $rc): if sudo itself" \
            "refused, run the script as root" >&2
    fi
    exit "$rc"
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends softhsm2 sqlite3 openssl ca-certificates \
    util-linux e2fsprogs opensc libengine-pkcs11-openssl libnss3-tools gnutls-bin p11-kit \
    p11-kit-modules pkcs11-dump openssh-client openssh-server openjdk-17-jdk-headless \
    systemd
# The token matrix (issue 17): tpm2-pkcs11 over a software TPM (swtpm), behind tpm2-abrmd on a
# private session D-Bus (ci/tpm2-token.sh).
# NSS softokn (libsoftokn3.so, in libnss3) as a backing token; certutil (libnss3-tools, above)
# makes its database (ci/nss-token.sh).
apt-get install -y -qq --no-install-recommends libnss3
apt-get install -y -qq --no-install-recommends libtpm2-pkcs11-1 libtpm2-pkcs11-tools swtpm \
    swtpm-tools tpm2-tools tpm2-abrmd libtss2-tcti-tabrmd0 libtss2-tcti-swtpm0 dbus-daemon
