//! The subcommands of `key`, `key cert`, `import-job` and `version`.

use super::parse_duration;
use clap::Subcommand;
use std::path::PathBuf;

#[derive(Debug, Subcommand)]
pub enum KeyCmd {
    /// Create a key; its first version is generated in the token (needs kms.cryptoKeys.create
    /// on the ring, and kms.cryptoKeyVersions.exportKeyMaterial for --exportable)
    Create {
        /// The key ring, e.g. projects/payments/keyRings/web
        #[arg(long, value_name = "KEYRING")]
        keyring: String,
        /// ENCRYPT_DECRYPT, ASYMMETRIC_SIGN, ASYMMETRIC_DECRYPT or MAC
        #[arg(long, value_name = "PURPOSE")]
        purpose: String,
        /// e.g. AES_256_GCM, EC_SIGN_P256_SHA256, RSA_SIGN_PSS_3072_SHA256,
        /// RSA_DECRYPT_OAEP_3072_SHA1, HMAC_SHA256
        #[arg(long, value_name = "ALGORITHM")]
        algorithm: String,
        /// Let the key material leave the token wrapped (CKA_EXTRACTABLE; still sensitive)
        #[arg(long)]
        exportable: bool,
        /// Key id
        id: String,
    },
    /// List the keys of a ring (needs kms.cryptoKeys.list)
    List {
        /// The key ring
        #[arg(long, value_name = "KEYRING")]
        keyring: String,
    },
    /// Show a key and its versions (needs kms.cryptoKeys.get)
    Get {
        /// Full name, e.g. projects/p/keyRings/r/cryptoKeys/k
        name: String,
    },
    /// Add a version: primary at once for symmetric keys, for asymmetric ones only with
    /// --set-primary (needs kms.cryptoKeyVersions.create; + kms.cryptoKeys.update to move the
    /// primary of an asymmetric key)
    Rotate {
        /// The key
        name: String,
        /// Make the new version primary (asymmetric keys)
        #[arg(long)]
        set_primary: bool,
    },
    /// Make an ENABLED version primary (needs kms.cryptoKeys.update)
    SetPrimary {
        /// The key
        name: String,
        /// The version number
        version: u64,
    },
    /// Import wrapped key material (BYOK) as a new version of KEY, made if missing; the
    /// primary version never changes (needs kms.importJobs.useToImport; + kms.cryptoKeys.create
    /// for a new key)
    Import {
        /// The import job: its full name, or its id in the key's ring
        #[arg(long, value_name = "JOB")]
        import_job: String,
        /// The key, e.g. projects/p/keyRings/r/cryptoKeys/k
        #[arg(long, value_name = "KEY")]
        key: String,
        /// The wrapped material: RSA-OAEP(ephemeral AES-256 key) || AES-KWP(material), as
        /// `key wrap-for-import` or openssl make it
        #[arg(long, value_name = "FILE")]
        wrapped_key_file: PathBuf,
        /// The key's algorithm, e.g. AES_256_GCM, EC_SIGN_P256_SHA256, RSA_SIGN_PKCS1_3072_SHA256
        #[arg(long, value_name = "ALGORITHM")]
        algorithm: String,
        /// The public key (SPKI, PEM or DER) of an asymmetric key: keywardd checks the pair
        #[arg(long, value_name = "FILE")]
        public_key_file: Option<PathBuf>,
    },
    /// Wrap key material for an import job, here in keywardctl (never in keywardd): raw bytes
    /// for AES/HMAC, PKCS#8 DER for EC/RSA private keys
    WrapForImport {
        /// The import job whose public key and method to use (needs kms.importJobs.get)
        #[arg(long, value_name = "JOB", required_unless_present = "public_key_file")]
        import_job: Option<String>,
        /// Or: the job's public key (PEM SPKI), with --method
        #[arg(long, value_name = "FILE", conflicts_with = "import_job")]
        public_key_file: Option<PathBuf>,
        /// The import method, with --public-key-file [default: rsa-oaep-<bits>-sha1-aes-256]
        #[arg(long, value_name = "METHOD")]
        method: Option<String>,
        /// The plain key material
        #[arg(long, value_name = "FILE")]
        key_material_file: PathBuf,
        /// Where to write the wrapped blob
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Print a version's public key as PEM (needs kms.cryptoKeyVersions.viewPublicKey)
    GetPublicKey {
        /// The key (its primary version) or a version's full name
        name: String,
        /// The version number [default: the primary]
        #[arg(long)]
        version: Option<u64>,
        /// Write the PEM here [default: stdout]
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Certificates of an asymmetric key: make one signed in the token, attach a CA-issued
    /// one and its chain, list them (certificate objects through the PKCS#11 module)
    #[command(subcommand)]
    Cert(CertCmd),
    /// Export an --exportable key's material wrapped by a wrapping key, through keywardd's
    /// client socket (needs kms.cryptoKeyVersions.exportKeyMaterial on the key and
    /// useToEncrypt on the wrapping key, an AES or RSA key made with CKA_WRAP through the
    /// module; audited at warning level)
    Export {
        /// The key to export
        #[arg(long, value_name = "KEY")]
        key: String,
        /// Its version [default: the primary]
        #[arg(long, value_name = "N")]
        version: Option<u64>,
        /// The wrapping key (its primary version)
        #[arg(long, value_name = "KEY")]
        wrapping_key: String,
        /// aes-kwp (RFC 5649), aes-kw (RFC 3394), rsa-oaep-sha1 or rsa-oaep-sha256
        #[arg(long, value_name = "MECH", default_value = "aes-kwp",
              value_parser = ["aes-kwp", "aes-kw", "rsa-oaep-sha1", "rsa-oaep-sha256"])]
        mechanism: String,
        /// Write the wrapped key here [default: stdout]
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum CertCmd {
    /// Make a self-signed certificate (attached to the key) or a PKCS#10 request for the key's
    /// primary version, signed in the token through keywardd (needs viewPublicKey and
    /// useToSign on the key; attaching needs kms.cryptoKeys.update); or, with --import-cert,
    /// attach a CA-issued certificate like `key cert import`
    #[command(group(clap::ArgGroup::new("what").required(true).args(["self_signed", "csr", "import_cert"])))]
    Create {
        /// The key (projects/P/keyRings/R/cryptoKeys/K): EC P-256/P-384 or RSA signing key
        #[arg(long, value_name = "KEY")]
        key: String,
        /// A self-signed X.509 v3 certificate, attached to the key as a certificate object
        /// (unless --no-attach)
        #[arg(long)]
        self_signed: bool,
        /// With --self-signed: only write the certificate to --out, attach nothing (the signer
        /// needs no kms.cryptoKeys.update; an admin attaches it with `key cert import`)
        #[arg(long, requires_all = ["self_signed", "out"])]
        no_attach: bool,
        /// A PKCS#10 certificate signing request (nothing is attached)
        #[arg(long)]
        csr: bool,
        /// Attach this CA-issued certificate (PEM or DER) instead
        #[arg(long, value_name = "FILE")]
        import_cert: Option<PathBuf>,
        /// With --import-cert: the issuing chain (PEM, issuer first)
        #[arg(long, value_name = "FILE", requires = "import_cert")]
        chain: Option<PathBuf>,
        /// Subject, RFC 4514 (e.g. CN=web,O=Example) [default: CN=<key id>]
        #[arg(long, value_name = "DN")]
        subject: Option<String>,
        /// Validity of a self-signed certificate, in days
        #[arg(long, value_name = "N", default_value_t = 365, value_parser = clap::value_parser!(u32).range(1..=36500))]
        days: u32,
        /// Write the PEM here [default: stdout]
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Attach a CA-issued certificate of the key (PEM or DER) and its chain, so that Java and
    /// NSS find them through the module (needs kms.cryptoKeys.update); a certificate whose
    /// public key is not one of the key's is refused
    #[command(alias = "import-cert")]
    Import {
        /// The key
        #[arg(long, value_name = "KEY")]
        key: String,
        /// The certificate (PEM or DER; more PEM blocks after the first are its chain)
        #[arg(long, value_name = "FILE")]
        cert: PathBuf,
        /// The issuing chain (PEM, issuer first)
        #[arg(long, value_name = "FILE")]
        chain: Option<PathBuf>,
        /// CKA_LABEL of the certificate object [default: the key's label: the CKA_LABEL of a
        /// key made through the PKCS#11 module, else the key id]
        #[arg(long, value_name = "LABEL")]
        label: Option<String>,
    },
    /// List the certificates attached to a key (needs kms.cryptoKeys.get)
    List {
        /// The key
        #[arg(long, value_name = "KEY")]
        key: String,
    },
    /// Print the certificates attached to a key as PEM (needs kms.cryptoKeys.get)
    Get {
        /// The key
        #[arg(long, value_name = "KEY")]
        key: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum ImportJobCmd {
    /// Create an import job: an RSA wrapping pair generated in the token (the private key
    /// never leaves it); prints the public key as PEM. ACTIVE for 3 days
    /// (needs kms.importJobs.create)
    Create {
        /// The key ring
        #[arg(long, value_name = "KEYRING")]
        keyring: String,
        /// rsa-oaep-3072-sha1-aes-256, rsa-oaep-4096-sha1-aes-256,
        /// rsa-oaep-3072-sha256-aes-256, rsa-oaep-4096-sha256-aes-256 or rsa-oaep-3072-sha256
        #[arg(long, value_name = "METHOD")]
        method: String,
        /// Job id [default: job-<random>]
        #[arg(long, value_name = "ID")]
        id: Option<String>,
    },
    /// Show a job (needs kms.importJobs.get)
    Get {
        /// Full name, e.g. projects/p/keyRings/r/importJobs/j
        name: String,
    },
    /// Print a job's public key as PEM (needs kms.importJobs.get)
    GetPublicKey {
        /// Full name
        name: String,
        /// Write the PEM here [default: stdout]
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// List a ring's import jobs (needs kms.importJobs.list)
    List {
        /// The key ring
        #[arg(long, value_name = "KEYRING")]
        keyring: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum VersionCmd {
    /// List a key's versions (needs kms.cryptoKeyVersions.list)
    List {
        /// The key
        key: String,
    },
    /// Show a version (needs kms.cryptoKeyVersions.get)
    Get {
        /// Full name, e.g. .../cryptoKeys/k/cryptoKeyVersions/2
        name: String,
    },
    /// Enable a DISABLED version (needs kms.cryptoKeyVersions.update)
    Enable {
        /// The version
        name: String,
    },
    /// Disable a version: it stays in the token but cannot be used
    /// (needs kms.cryptoKeyVersions.update)
    Disable {
        /// The version
        name: String,
    },
    /// Schedule a version's destruction; its token object is destroyed when the grace ends
    /// (needs kms.cryptoKeyVersions.destroy)
    Destroy {
        /// The version
        name: String,
        /// Grace period: 30d, 36h, or seconds; at least 1 day [default: 30d]
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        grace: Option<u64>,
    },
    /// Cancel a scheduled destruction; the version comes back DISABLED
    /// (needs kms.cryptoKeyVersions.restore)
    Restore {
        /// The version
        name: String,
    },
}
