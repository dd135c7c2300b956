#!/usr/bin/env bash
# p11-kit loads Keyward through the shipped packaging/p11-kit/keyward.module (issue 8): the
# file is installed, unchanged but for its module: line (here the built .so's absolute path,
# in production the bare name p11-kit resolves in its module directory), into a private
# p11-kit user configuration; `p11-kit list-modules` must name the module "keyward" with
# Keyward's library description and list the signer's ring as a token, and `p11tool` (GnuTLS,
# through p11-kit) must list that ring's private keys by pkcs11: URI after login.
# p11-kit ignores user configuration for uid 0, so as root it runs inside `unshare --user`.
source "$(dirname "$0")/keyward-env.sh"
command -v p11-kit >/dev/null || die "p11-kit missing (apt-get install p11-kit)"

signer_ring p11kitring

conf=$work/p11kit-home/.config/pkcs11
mkdir -p "$conf/modules"
grep -q '^module: libkeyward_pkcs11.so$' packaging/p11-kit/keyward.module ||
    die "packaging/p11-kit/keyward.module does not name libkeyward_pkcs11.so"
sed "s|^module: .*|module: $module|" packaging/p11-kit/keyward.module > "$conf/modules/keyward.module"
# 'only': ignore the system's module configurations (this machine's SoftHSM2 among them).
printf 'user-config: only\n' > "$conf/pkcs11.conf"
p11kit() {
    if [[ $(id -u) -eq 0 ]]; then
        signer env HOME="$work/p11kit-home" XDG_CONFIG_HOME="$work/p11kit-home/.config" \
            unshare --user "$@"
    else
        signer env HOME="$work/p11kit-home" XDG_CONFIG_HOME="$work/p11kit-home/.config" "$@"
    fi
}
p11kit p11-kit list-modules > "$work/list.txt" 2>&1 || { cat "$work/list.txt" >&2; die "p11-kit list-modules failed"; }
cat "$work/list.txt"
grep -qx "keyward: $module" "$work/list.txt" || die "p11-kit list-modules does not show module keyward"
grep -q '^    library-description: Keyward PKCS#11 module' "$work/list.txt" || die "no Keyward library description"
grep -qx '    token: p11kitring' "$work/list.txt" || die "p11-kit list-modules does not list the ring's token"
[[ $(grep -c '^    token: ' "$work/list.txt") -eq 1 ]] || die "p11-kit lists more than the signer's one token"
pass "p11-kit list-modules loads keyward.module and lists the signer's ring"

# The settings through the module file alone (x-init-reserved -> pReserved), no KEYWARD_*
# in the environment: the same token.
{
    sed "s|^module: .*|module: $module|" packaging/p11-kit/keyward.module
    printf 'x-init-reserved: socket=%s;credentials=%s\n' "$work/client.sock" "$work/signer.key"
} > "$conf/modules/keyward.module"
env -u KEYWARD_SOCKET -u KEYWARD_ADMIN_SOCKET -u KEYWARD_CREDENTIALS HOME="$work/p11kit-home" \
    XDG_CONFIG_HOME="$work/p11kit-home/.config" $( [[ $(id -u) -eq 0 ]] && echo unshare --user ) \
    p11-kit list-modules > "$work/list2.txt" 2>&1 || { cat "$work/list2.txt" >&2; die "p11-kit list-modules (x-init-reserved) failed"; }
grep -qx '    token: p11kitring' "$work/list2.txt" ||
    { cat "$work/list2.txt" >&2; die "with x-init-reserved settings, p11-kit does not list the ring"; }
pass "x-init-reserved in keyward.module reaches the module (socket, credentials): same token"

if command -v p11tool >/dev/null; then
    p11kit p11tool --login --set-pin="$spin" --list-privkeys "pkcs11:token=p11kitring" \
        > "$work/p11tool.txt" 2>&1 || { sed "s/$spin/<pin>/g" "$work/p11tool.txt" >&2; die "p11tool --list-privkeys failed"; }
    n=$(grep -c '^Object [0-9]*:' "$work/p11tool.txt" || true)
    [[ $n -eq 2 ]] && grep -q 'object=ec;' "$work/p11tool.txt" && grep -q 'object=rsa;' "$work/p11tool.txt" ||
        { cat "$work/p11tool.txt" >&2; die "p11tool (through p11-kit) does not list exactly the ec and rsa keys"; }
    pass "p11tool through p11-kit lists the ring's two private keys"
fi
echo "p11-kit run: all assertions hold"
