#!/usr/bin/env bash
# Checks packaging/: the systemd unit passes `systemd-analyze verify` (with ExecStart pointed
# at the built keywardd), and keywardd's exit code for a wrong token PIN is one the unit's
# RestartPreventExitStatus lists (a real HSM locks its token after a few wrong PINs); the
# p11-kit module file is checked by ci/clients-p11kit.sh.
source "$(dirname "$0")/keyward-env.sh"
unit=packaging/systemd/keywardd.service
command -v systemd-analyze >/dev/null || die "systemd-analyze missing (apt-get install systemd)"
mkdir -p "$work/units"
sed "s|^ExecStart=/usr/bin/keywardd |ExecStart=$target/debug/keywardd |" "$unit" > "$work/units/keywardd.service"
grep -q "^ExecStart=$target/debug/keywardd --config" "$work/units/keywardd.service" || die "no ExecStart=/usr/bin/keywardd in $unit"
systemd-analyze verify --man=no "$work/units/keywardd.service" > "$work/verify.txt" 2>&1 ||
    { cat "$work/verify.txt" >&2; die "systemd-analyze verify rejects $unit"; }
[[ ! -s $work/verify.txt ]] || { cat "$work/verify.txt" >&2; die "systemd-analyze verify warns about $unit"; }
pass "systemd-analyze verify: $unit"

# The shared-memory transport (issue 19 item 2) under the unit's seccomp filter: every system
# call keywardd makes to create, seal, map and signal a ring (src/daemon/ring.rs, transport.rs,
# crates/wire/src/ring.rs) is in the unit's SystemCallFilter set, expanded through its nested
# groups. A call outside it would fail with EPERM (SystemCallErrorNumber) and keywardd would
# log "client transport: socket only" at start and serve every client on the socket.
filter=$(sed -n 's/^SystemCallFilter=//p' "$unit")
[[ $filter == "@system-service" ]] || die "SystemCallFilter=$filter: update the ring's check below"
expand_filter() {
    systemd-analyze syscall-filter "$1" | awk 'NR>1 && !/^ *#/ && NF {print $1}' |
        while read -r s; do case $s in @*) expand_filter "$s" ;; *) echo "$s" ;; esac; done
}
expand_filter "$filter" | sort -u > "$work/allowed-syscalls.txt"
for call in memfd_create ftruncate fcntl mmap munmap eventfd2 ppoll sendmsg recvmsg read write; do
    grep -qx "$call" "$work/allowed-syscalls.txt" || die "$filter lacks $call, which the shared-memory ring needs"
done
pass "the shared-memory ring's system calls are all in SystemCallFilter=$filter"

prevent=$(sed -n 's/^RestartPreventExitStatus=//p' "$unit")
printf 'not-the-pin\n' > "$work/wrong-pin"
chmod 600 "$work/wrong-pin"
keyward_toml "$work" "$db"
sed -i "s|^pin_file = .*|pin_file = \"$work/wrong-pin\"|" "$work/keyward.toml"
set +e
"$target/debug/keywardd" --config "$work/keyward.toml" 2> "$work/wrong.txt"
rc=$?
set -e
grep -qi 'pin' "$work/wrong.txt" || { cat "$work/wrong.txt" >&2; die "keywardd's wrong-PIN refusal does not say so"; }
[[ $rc -eq 3 ]] || { cat "$work/wrong.txt" >&2; die "keywardd exits $rc on a wrong PIN, not 3"; }
[[ " $prevent " == *" $rc "* ]] || die "RestartPreventExitStatus ($prevent) lacks the wrong-PIN exit code $rc"
pass "a wrong PIN: keywardd exits $rc, which RestartPreventExitStatus=$prevent keeps from restarting"
echo "packaging: all assertions hold"
