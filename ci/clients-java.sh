#!/usr/bin/env bash
# Java through libkeyward_pkcs11.so (issue 8): SunPKCS11 configured to the module
# (name/library/slotListIndex), as a service account bound only roles/kms.signerVerifier on a
# ring's EC P-256 key and RSA-2048 pair (ci/keyward-env.sh signer_ring), each with a
# certificate object of the same CKA_ID (SunPKCS11 shows a private key only with one): the
# EC key's self-signed by `keywardctl key cert create`, the RSA pair's made by OpenSSL through
# the module and attached by `keywardctl key cert import`.
#   keytool -list shows exactly the two PrivateKeyEntry aliases, with the certificates'
#   fingerprints;
#   jarsigner signs a jar with each key (PIN from a file, never on the command line), and
#   `jarsigner -verify -strict` against a truststore of the two certificates accepts it;
#   OpenSSL verifies each signature block (PKCS#7) over its .SF file with that certificate.
# Any assertion that does not hold fails the script (exit 1).
source "$(dirname "$0")/keyward-env.sh"
for tool in keytool jarsigner jar; do
    command -v "$tool" >/dev/null || die "$tool missing (apt-get install openjdk-17-jdk-headless)"
done

signer_ring jring

# Certificates (made by the ring's admin, who may update keys; signing them needs useToSign).
adm iam bind --resource "$ec_key" --role roles/kms.signerVerifier \
    --member serviceAccount:lpadmin@proj >/dev/null 2>&1 || die "binding the admin on ec refused"
adm key cert create --key "$ec_key" --self-signed --subject CN=ec.jring.example \
    --out "$work/ec.crt" >/dev/null
engine_cnf "$work/openssl.cnf" "$module" || die "libp11 engine missing (apt-get install libengine-pkcs11-openssl)"
printf '[req]\ndistinguished_name = req_dn\n[req_dn]\n' >> "$work/openssl.cnf"
signer env OPENSSL_CONF="$work/openssl.cnf" openssl req -new -x509 -days 30 -engine pkcs11 \
    -keyform engine -key "pkcs11:token=jring;object=rsa;type=private?pin-value=$spin" \
    -subj /CN=rsa.jring.example -out "$work/rsa.crt" > "$work/req.txt" 2>&1 ||
    { sed "s/$spin/<pin>/g" "$work/req.txt" >&2; die "OpenSSL could not make the RSA certificate"; }
adm key cert import --key "$rsa_key" --cert "$work/rsa.crt" --label rsa >/dev/null
for k in ec rsa; do
    [[ $(openssl x509 -in "$work/$k.crt" -noout -pubkey | openssl pkey -pubin -outform DER | od -An -tx1 | tr -d ' \n') == \
        $(openssl pkey -pubin -in "$work/$k.pub" -outform DER | od -An -tx1 | tr -d ' \n') ]] ||
        die "the $k certificate does not carry the $k key"
done

# SunPKCS11 on the module; the signer's key is the keystore password (from a file).
cat > "$work/pkcs11.cfg" <<CFG
name = Keyward
library = $module
slotListIndex = 0
CFG
p11java=(-keystore NONE -storetype PKCS11 -providerClass sun.security.pkcs11.SunPKCS11
    -providerArg "$work/pkcs11.cfg" -storepass:file "$work/signer.key")

# 1. keytool -list: the two keys, each with its certificate.
signer keytool -list "${p11java[@]}" > "$work/list.txt" 2>&1 ||
    { cat "$work/list.txt" >&2; die "keytool -list failed"; }
cat "$work/list.txt"
grep -q 'Your keystore contains 2 entries' "$work/list.txt" || die "keytool -list does not show exactly 2 entries"
for k in ec rsa; do
    grep -q "^$k, PrivateKeyEntry," "$work/list.txt" || die "keytool -list shows no PrivateKeyEntry $k"
    fp=$(openssl x509 -in "$work/$k.crt" -noout -fingerprint -sha256 | sed 's/.*=//')
    grep -A1 "^$k, PrivateKeyEntry," "$work/list.txt" | grep -q "(SHA-256): $fp" ||
        die "keytool shows another certificate for $k than $fp"
done
pass "keytool -list (SunPKCS11): exactly the ec and rsa PrivateKeyEntries, with their certificates"

# 2. jarsigner with each key; -verify -strict against a truststore of the two certificates.
mkdir -p "$work/jar/com/example"
printf 'Main-Class: com.example.Hello\n' > "$work/manifest.txt"
head -c 4096 /dev/urandom > "$work/jar/com/example/payload.bin"
printf 'hello from keyward\n' > "$work/jar/com/example/readme.txt"
jar cfm "$work/app.jar" "$work/manifest.txt" -C "$work/jar" . || die "jar failed"
for k in ec rsa; do
    keytool -importcert -noprompt -alias "$k" -file "$work/$k.crt" -keystore "$work/trust.p12" \
        -storetype PKCS12 -storepass changeit > /dev/null 2>&1 || die "truststore import of $k failed"
done
for k in ec rsa; do
    case $k in ec) alg=SHA256withECDSA blk=EC ;; *) alg=SHA256withRSA blk=RSA ;; esac
    cp "$work/app.jar" "$work/app-$k.jar"
    signer jarsigner "${p11java[@]}" -sigalg "$alg" -sigfile "KW$blk" "$work/app-$k.jar" "$k" \
        > "$work/sign-$k.txt" 2>&1 || { cat "$work/sign-$k.txt" >&2; die "jarsigner with $k failed"; }
    grep -q 'jar signed' "$work/sign-$k.txt" || { cat "$work/sign-$k.txt" >&2; die "jarsigner with $k: no 'jar signed'"; }
    jarsigner -verify -strict -verbose -certs -keystore "$work/trust.p12" -storepass changeit \
        "$work/app-$k.jar" > "$work/verify-$k.txt" 2>&1 ||
        { cat "$work/verify-$k.txt" >&2; die "jarsigner -verify -strict rejects the $k-signed jar"; }
    grep -q '^jar verified' "$work/verify-$k.txt" || { cat "$work/verify-$k.txt" >&2; die "jarsigner -verify: not 'jar verified' ($k)"; }
    grep -q "CN=$k.jring.example" "$work/verify-$k.txt" || die "the $k-signed jar names another signer"
    pass "jarsigner (SunPKCS11, $alg) signs with the token's $k key; jarsigner -verify -strict accepts it"

    # 3. Independently: OpenSSL checks the PKCS#7 signature block over the .SF file.
    rm -rf "$work/x" && mkdir "$work/x"
    (cd "$work/x" && jar xf "$work/app-$k.jar" "META-INF/KW$blk.SF" "META-INF/KW$blk.$blk")
    openssl cms -verify -binary -inform DER -in "$work/x/META-INF/KW$blk.$blk" \
        -content "$work/x/META-INF/KW$blk.SF" -CAfile "$work/$k.crt" -purpose any \
        -out /dev/null > "$work/cms-$k.txt" 2>&1 ||
        { cat "$work/cms-$k.txt" >&2; die "OpenSSL does not verify the $k signature block"; }
    printf 'X' >> "$work/x/META-INF/KW$blk.SF"
    if openssl cms -verify -binary -inform DER -in "$work/x/META-INF/KW$blk.$blk" \
        -content "$work/x/META-INF/KW$blk.SF" -CAfile "$work/$k.crt" -purpose any \
        -out /dev/null > /dev/null 2>&1; then
        die "OpenSSL verifies a tampered .SF: the check is meaningless"
    fi
    pass "OpenSSL verifies the $k signature block (META-INF/KW$blk.$blk) with the $k certificate"
done
echo "Java run: all assertions hold"
