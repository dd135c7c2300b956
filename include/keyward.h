/*
 * keyward.h - configuration of libkeyward_pkcs11.so, the Keyward PKCS#11 module.
 *
 * The module is a thin PKCS#11 client: it forwards every call over a Unix socket to keywardd,
 * which decides (IAM) and executes (the backing token). Load it like any PKCS#11 module
 * (pkcs11-tool --module, OpenSSL pkcs11 provider/engine, NSS modutil, p11-kit, Java
 * SunPKCS11). Build against the OASIS PKCS#11 3.0 headers; the module exports
 * C_GetFunctionList (2.40 list), C_GetInterfaceList and C_GetInterface ("PKCS 11" 3.0 and
 * 2.40) and every C_ function by name.
 *
 * SETTINGS
 * Each setting comes from the first of these sources that has it:
 *   1. pReserved of CK_C_INITIALIZE_ARGS: a NUL-terminated UTF-8 string of key=value
 *      settings separated by ';' or newlines (NSS: parameters="..."; p11-kit:
 *      x-init-reserved: ...). An unknown key makes C_Initialize return CKR_ARGUMENTS_BAD.
 *   2. The environment (KEYWARD_SOCKET, KEYWARD_TOKENS, KEYWARD_CREDENTIALS, KEYWARD_CONFIG,
 *      KEYWARD_TIMEOUT, KEYWARD_KEYGEN_TIMEOUT).
 *   3. The config file: the file named by config= / KEYWARD_CONFIG (which must exist), else
 *      /etc/keyward/module.toml if it exists. TOML:
 *          socket      = "/run/keyward/client.sock"
 *          tokens      = ["organizations/acme/keyRings/root-ca=Acme Root CA",
 *                         "projects/payments/keyRings/web"]
 *          credentials = "/etc/keyward/web.key"
 *          timeout     = 30
 *          keygen_timeout = 300
 *      A file that cannot be read or parsed makes C_Initialize return CKR_FUNCTION_FAILED.
 *   4. Defaults.
 */
#ifndef KEYWARD_H
#define KEYWARD_H

/* keywardd's client socket. Setting "socket", environment KEYWARD_SOCKET. */
#define KEYWARD_ENV_SOCKET "KEYWARD_SOCKET"
#define KEYWARD_SETTING_SOCKET "socket"
#define KEYWARD_DEFAULT_SOCKET "/run/keyward/client.sock"

/*
 * Key rings that are always in the slot list, whether or not the caller's principal sees
 * them (a configured ring the principal does not see looks exactly like one that does not
 * exist: listed, sessions open, nothing found). Setting "tokens", environment
 * KEYWARD_TOKENS: entries separated by ','. An entry is a key ring's full name, optionally
 * followed by =LABEL (the token label, 1 to 32 bytes; default: the ring id):
 *     organizations/acme/keyRings/root-ca=Acme Root CA,projects/payments/keyRings/web
 * The slot id of a ring is a stable 31-bit hash of its full name (the first 4 bytes of
 * SHA-256 of the name, big-endian, top bit cleared); the token serial is the next 8 bytes
 * in hex.
 *
 * The slot list is fixed at C_Initialize: every ring the pre-login principal sees (asked of
 * keywardd if it is reachable then) plus the configured rings. A process whose only
 * identity is a service-account key given as PIN therefore reaches only its configured
 * rings; give it KEYWARD_CREDENTIALS to list everything that account sees.
 */
#define KEYWARD_ENV_TOKENS "KEYWARD_TOKENS"
#define KEYWARD_SETTING_TOKENS "tokens"

/*
 * A credential file holding one service-account key (keywardctl sa key create), on its
 * first line that is neither empty nor a '#' comment. Its account is the instance's
 * principal before C_Login. Read at each connection to keywardd. Setting "credentials",
 * environment KEYWARD_CREDENTIALS.
 */
#define KEYWARD_ENV_CREDENTIALS "KEYWARD_CREDENTIALS"
#define KEYWARD_SETTING_CREDENTIALS "credentials"

/*
 * Call deadlines, in seconds (a decimal number, more than 0 and at most 86400; anything else
 * makes C_Initialize fail): how long one call waits for keywardd's answer. "keygen_timeout"
 * applies to C_GenerateKey, C_GenerateKeyPair and C_UnwrapKey, "timeout" to every other call.
 * A call whose deadline passes returns CKR_DEVICE_REMOVED (or the closest code the function
 * may return) and ends the sessions of that connection (CKR_SESSION_HANDLE_INVALID after);
 * the next C_OpenSession connects again. Settings "timeout", "keygen_timeout"; environment
 * KEYWARD_TIMEOUT, KEYWARD_KEYGEN_TIMEOUT.
 */
#define KEYWARD_ENV_TIMEOUT "KEYWARD_TIMEOUT"
#define KEYWARD_SETTING_TIMEOUT "timeout"
#define KEYWARD_DEFAULT_TIMEOUT_SECS 30
#define KEYWARD_ENV_KEYGEN_TIMEOUT "KEYWARD_KEYGEN_TIMEOUT"
#define KEYWARD_SETTING_KEYGEN_TIMEOUT "keygen_timeout"
#define KEYWARD_DEFAULT_KEYGEN_TIMEOUT_SECS 300

/* The config file. Setting "config", environment KEYWARD_CONFIG. */
#define KEYWARD_ENV_CONFIG "KEYWARD_CONFIG"
#define KEYWARD_SETTING_CONFIG "config"
#define KEYWARD_DEFAULT_CONFIG "/etc/keyward/module.toml"

/*
 * BEHAVIOUR WORTH KNOWING
 * - Login: C_Login(CKU_USER, key) with a service-account key makes that account the
 *   principal; an empty or NULL PIN asserts the pre-login principal (KEYWARD_CREDENTIALS,
 *   else the process's uid mapping). CKU_SO takes the key of an account allowed to set the
 *   key ring's IAM policy. Login is per module instance and token (slot). The module keeps
 *   the PIN in memory (wiped at C_Logout and C_Finalize) to log in again after reconnecting.
 * - keywardd down: C_Initialize still succeeds (it never needs the daemon); configured
 *   tokens are listed without CKF_TOKEN_PRESENT (slots are CKF_REMOVABLE_DEVICE);
 *   C_GetTokenInfo and C_OpenSession return CKR_TOKEN_NOT_PRESENT. A session whose
 *   connection died (or whose call met its deadline) returns CKR_DEVICE_REMOVED on the call
 *   that found out and CKR_SESSION_HANDLE_INVALID afterwards; the next C_OpenSession
 *   reconnects.
 * - fork: the child gets CKR_CRYPTOKI_NOT_INITIALIZED until it calls C_Initialize; the parent
 *   is unaffected.
 * - Locking: the module uses OS locks. CK_C_INITIALIZE_ARGS with mutex callbacks but without
 *   CKF_OS_LOCKING_OK is CKR_CANT_LOCK.
 * - CK_GCM_PARAMS: both layouts are accepted (with ulIvBits, 48 bytes on 64-bit Linux; and
 *   without, 40 bytes), told apart by ulParameterLen.
 */

#endif /* KEYWARD_H */
