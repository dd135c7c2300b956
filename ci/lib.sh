# Shell helpers shared by ci/keyward-env.sh (the client suites) and ci/demo.sh; sourcing this
# file defines functions only.

# keyward_toml WORK DB: writes WORK/keyward.toml for a keywardd on the store DB, the backing
# token made in KEYWARD_TOKEN_DIR (default WORK/softhsm: softhsm-config/init-token.sh) with the
# module KEYWARD_TOKEN_MODULE (default SoftHSM2's), with `C_Initialize` parameters
# KEYWARD_TOKEN_INIT_ARGS ([token] init_args, NSS softokn), and sockets in WORK.
keyward_toml() {
    cat > "$1/keyward.toml" <<TOML
[store]
path = "$2"
[token]
label = "keyward-backing"
pin_file = "${KEYWARD_TOKEN_DIR:-$1/softhsm}/user-pin"
${KEYWARD_TOKEN_MODULE:+module = \"$KEYWARD_TOKEN_MODULE\"}
${KEYWARD_TOKEN_INIT_ARGS:+init_args = \"$KEYWARD_TOKEN_INIT_ARGS\"}
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
