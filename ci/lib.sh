# Shell helpers shared by ci/keyward-env.sh (the client suites) and ci/demo.sh; sourcing this
# file defines functions only.

# keyward_toml WORK DB: writes WORK/keyward.toml for a keywardd on the store DB, the SoftHSM2
# token made by softhsm-config/init-token.sh in WORK/softhsm, and sockets in WORK.
keyward_toml() {
    cat > "$1/keyward.toml" <<TOML
[store]
path = "$2"
[token]
label = "keyward-backing"
pin_file = "$1/softhsm/user-pin"
[admin]
socket = "$1/admin.sock"
[client]
socket = "$1/client.sock"
TOML
}

# engine_cnf FILE MODULE: an OpenSSL config loading the libp11 engine ("pkcs11") over the
# PKCS#11 module MODULE; fails if the engine is not installed (libengine-pkcs11-openssl).
engine_cnf() {
    local engine_so
    engine_so=$(openssl version -e | sed -n 's/^ENGINESDIR: "\(.*\)"/\1/p')/pkcs11.so
    [[ -f $engine_so ]] || return 1
    cat > "$1" <<CNF
openssl_conf = openssl_init
[openssl_init]
engines = engine_section
[engine_section]
pkcs11 = pkcs11_section
[pkcs11_section]
engine_id = pkcs11
dynamic_path = $engine_so
MODULE_PATH = $2
init = 0
CNF
}
