#!/usr/bin/env bash
# OpenSSH through libkeyward_pkcs11.so (issue 8), as a service account bound only
# roles/kms.signerVerifier on a ring's EC P-256 key and RSA-2048 pair (ci/keyward-env.sh
# signer_ring):
#   ssh-keygen -D prints exactly those two public keys, equal to the public halves keywardctl
#   hands out (and not the ring's third key, which the account is not bound on);
#   an sshd started here on 127.0.0.1 (a free port, its own config, host key and
#   AuthorizedKeysFile in the temporary directory) accepts `ssh -I <module>` with each token
#   key in turn, and the remote command's output comes back.
# ssh reads the PIN (the service-account key) through SSH_ASKPASS with SSH_ASKPASS_REQUIRE=force:
# no terminal, nothing on the command line. Any assertion that does not hold fails (exit 1).
source "$(dirname "$0")/keyward-env.sh"
sshd=${SSHD:-/usr/sbin/sshd}
[[ -x $sshd ]] || die "$sshd missing (apt-get install openssh-server)"
command -v ssh >/dev/null || die "ssh missing (apt-get install openssh-client)"

signer_ring sshring

# 1. ssh-keygen -D: the two keys the account may use, and no other.
signer ssh-keygen -D "$module" > "$work/D.txt" 2> "$work/D.err" ||
    { cat "$work/D.err" >&2; die "ssh-keygen -D failed"; }
cat "$work/D.txt"
ssh_of() { ssh-keygen -i -m PKCS8 -f "$1" | awk '{print $1, $2}'; }
want=$( (ssh_of "$work/ec.pub"; ssh_of "$work/rsa.pub") | sort)
got=$(awk '{print $1, $2}' "$work/D.txt" | sort)
[[ $got == "$want" ]] || { printf 'want:\n%s\n' "$want" >&2; die "ssh-keygen -D does not print exactly the EC and RSA public keys"; }
pass "ssh-keygen -D prints the ring's EC and RSA public keys (= keywardctl key get-public-key), nothing else"

# 2. sshd on 127.0.0.1 with its own configuration.
mkdir -p "$work/ssh"
ssh-keygen -q -t ed25519 -N '' -f "$work/ssh/host_key"
cp "$work/D.txt" "$work/ssh/authorized_keys"
port=$(free_port)
user=$(id -un)
cat > "$work/ssh/sshd_config" <<CFG
ListenAddress 127.0.0.1
Port $port
HostKey $work/ssh/host_key
PidFile $work/ssh/sshd.pid
AuthorizedKeysFile $work/ssh/authorized_keys
AuthenticationMethods publickey
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
StrictModes no
UsePAM no
LogLevel VERBOSE
CFG
[[ $(id -u) -ne 0 ]] || mkdir -p /run/sshd # privilege separation directory
"$sshd" -D -e -f "$work/ssh/sshd_config" 2> "$work/ssh/sshd.log" &
sshd_pid=$!
on_exit 'kill $sshd_pid 2>/dev/null; wait $sshd_pid 2>/dev/null'
for _ in $(seq 100); do grep -q 'Server listening' "$work/ssh/sshd.log" && break; sleep 0.05; done
grep -q 'Server listening' "$work/ssh/sshd.log" || { cat "$work/ssh/sshd.log" >&2; die "sshd did not start"; }
ssh-keyscan -p "$port" -t ed25519 127.0.0.1 2>/dev/null > "$work/ssh/known_hosts"
[[ -s $work/ssh/known_hosts ]] || die "ssh-keyscan got no host key"

# 3. ssh -I <module>, once with each token key (the algorithm picks it), PIN through askpass.
printf '#!/bin/sh\nexec cat %q\n' "$work/signer.key" > "$work/ssh/askpass"
chmod 700 "$work/ssh/askpass"
for alg in ecdsa-sha2-nistp256 rsa-sha2-256; do
    nonce=keyward-$RANDOM$RANDOM
    set +e
    out=$(signer env SSH_ASKPASS="$work/ssh/askpass" SSH_ASKPASS_REQUIRE=force \
        setsid -w ssh -v -n -F /dev/null -I "$module" -p "$port" -l "$user" \
        -o BatchMode=no -o IdentityAgent=none -o PasswordAuthentication=no \
        -o KbdInteractiveAuthentication=no -o UserKnownHostsFile="$work/ssh/known_hosts" \
        -o StrictHostKeyChecking=yes -o PubkeyAcceptedAlgorithms="$alg" \
        -o ConnectTimeout=20 127.0.0.1 "echo $nonce; uname -s" 2> "$work/ssh/ssh-$alg.err" < /dev/null)
    rc=$?
    set -e
    if [[ $rc -ne 0 || $out != "$nonce"$'\n'"$(uname -s)" ]]; then
        cat "$work/ssh/ssh-$alg.err" >&2
        tail -20 "$work/ssh/sshd.log" >&2
        die "ssh -I with $alg: exit $rc, output '$out'"
    fi
    # sshd names the key it accepted: it must be the token key of that algorithm.
    case $alg in ecdsa*) kt=ecdsa-sha2-nistp256 kn=ECDSA ;; *) kt=ssh-rsa kn=RSA ;; esac
    fp=$(grep "^$kt " "$work/D.txt" | ssh-keygen -l -E sha256 -f - | awk '{print $2}')
    grep -q "Accepted publickey for $user from 127.0.0.1 port [0-9]* ssh2: $kn $fp" "$work/ssh/sshd.log" ||
        { tail -20 "$work/ssh/sshd.log" >&2; die "sshd did not log accepting the token's $kn key $fp"; }
    pass "ssh -I <module> with the token's $kn key ($alg, $fp): logged in, the command's output came back"
done
echo "OpenSSH run: all assertions hold"
