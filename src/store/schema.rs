//! The SQLite schema and its migrations (`PRAGMA user_version`).

/// Migrations in order; migration `i` moves the store from version `i` to `i + 1`.
pub const MIGRATIONS: &[&str] = &[
    // 1: hierarchy, IAM, keys, audit.
    r#"
CREATE TABLE meta (
    k TEXT PRIMARY KEY,
    v BLOB NOT NULL
);
-- Every resource ever created. Names are never reused: a deleted row keeps its name.
CREATE TABLE resources (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL CHECK (kind IN ('organization','folder','project','keyRing','cryptoKey')),
    parent_id INTEGER REFERENCES resources(id),
    created_at INTEGER NOT NULL,
    deleted_at INTEGER
);
CREATE INDEX resources_parent ON resources(parent_id);
CREATE TABLE organizations (
    resource_id INTEGER PRIMARY KEY REFERENCES resources(id),
    sod_mode TEXT NOT NULL DEFAULT 'warn' CHECK (sod_mode IN ('off','warn','enforce'))
);
CREATE TABLE key_rings (
    resource_id INTEGER PRIMARY KEY REFERENCES resources(id),
    token_label TEXT NOT NULL,
    slot_id INTEGER NOT NULL UNIQUE,
    serial TEXT NOT NULL,
    allow_plaintext_import INTEGER NOT NULL DEFAULT 0,
    strict_templates INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE crypto_keys (
    resource_id INTEGER PRIMARY KEY REFERENCES resources(id),
    purpose TEXT NOT NULL,
    algorithm TEXT,
    exportable INTEGER NOT NULL DEFAULT 0,
    primary_version INTEGER,
    next_version INTEGER NOT NULL DEFAULT 1,
    created_by TEXT NOT NULL
);
CREATE TABLE key_versions (
    key_id INTEGER NOT NULL REFERENCES crypto_keys(resource_id),
    version INTEGER NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('ENABLED','DISABLED','DESTROY_SCHEDULED','DESTROYED',
                                         'PENDING_IMPORT','IMPORT_FAILED')),
    token_id BLOB,
    public_key BLOB,
    created_at INTEGER NOT NULL,
    destroy_time INTEGER,
    destroyed_at INTEGER,
    import_failure TEXT,
    PRIMARY KEY (key_id, version)
);
CREATE TABLE custom_roles (
    name TEXT PRIMARY KEY,
    org_id INTEGER NOT NULL REFERENCES resources(id),
    title TEXT,
    permissions TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE TABLE bindings (
    resource_id INTEGER NOT NULL REFERENCES resources(id),
    role TEXT NOT NULL,
    member TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (resource_id, role, member)
);
CREATE TABLE groups (
    name TEXT PRIMARY KEY,
    created_at INTEGER NOT NULL
);
CREATE TABLE group_members (
    group_name TEXT NOT NULL REFERENCES groups(name) ON DELETE CASCADE,
    member TEXT NOT NULL,
    PRIMARY KEY (group_name, member)
);
CREATE TABLE service_accounts (
    email TEXT PRIMARY KEY,
    project_id INTEGER NOT NULL REFERENCES resources(id),
    display_name TEXT,
    created_at INTEGER NOT NULL,
    deleted_at INTEGER
);
CREATE TABLE sa_keys (
    key_id TEXT PRIMARY KEY,
    account TEXT NOT NULL REFERENCES service_accounts(email),
    mac BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    revoked_at INTEGER
);
CREATE TABLE uid_mappings (
    uid INTEGER PRIMARY KEY,
    member TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE TABLE audit_log (
    seq INTEGER PRIMARY KEY,
    time_ms INTEGER NOT NULL,
    principal TEXT NOT NULL,
    peer_pid INTEGER,
    peer_uid INTEGER,
    instance TEXT,
    action TEXT NOT NULL,
    resource TEXT,
    result TEXT NOT NULL CHECK (result IN ('allowed','denied','error')),
    rv INTEGER NOT NULL,
    detail TEXT,
    request_id TEXT,
    prev_hash BLOB NOT NULL,
    hash BLOB NOT NULL
);
CREATE INDEX audit_principal ON audit_log(principal);
CREATE INDEX audit_time ON audit_log(time_ms);
"#,
    // 2: token-signed checkpoints of the audit chain head (design §6). `head` is the hash of
    // record `seq`; `signature` is the audit key's raw ECDSA P-256 `r || s` over
    // SHA-256("keyward-audit-checkpoint-v1" || seq as 8 bytes big-endian || head).
    r#"
CREATE TABLE audit_checkpoints (
    seq INTEGER PRIMARY KEY,
    head BLOB NOT NULL,
    signature BLOB NOT NULL,
    time_ms INTEGER NOT NULL
);
"#,
    // 3: keys made through the PKCS#11 module (PKCS11_GENERIC, design §4): their kind, the
    // usage flags from the client's template, the client's CKA_ID/CKA_LABEL kept byte-exact
    // (`pub_*` for the public half of a pair), and the module instance that made them (the
    // creator exception). `public_halves`: the public half of a version whose private half a
    // client destroyed stays listed ('KEPT') until destroyed itself ('DESTROYED').
    r#"
CREATE TABLE generic_keys (
    key_id INTEGER PRIMARY KEY REFERENCES crypto_keys(resource_id),
    kind TEXT NOT NULL,
    cka_id BLOB NOT NULL,
    cka_label BLOB NOT NULL,
    pub_cka_id BLOB,
    pub_cka_label BLOB,
    encrypt INTEGER NOT NULL,
    decrypt INTEGER NOT NULL,
    sign INTEGER NOT NULL,
    verify INTEGER NOT NULL,
    wrap INTEGER NOT NULL,
    unwrap INTEGER NOT NULL,
    local INTEGER NOT NULL,
    creator_instance TEXT
);
CREATE TABLE public_halves (
    key_id INTEGER NOT NULL REFERENCES crypto_keys(resource_id),
    version INTEGER NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('KEPT','DESTROYED')),
    PRIMARY KEY (key_id, version)
);
"#,
    // 4: certificate objects (CKO_CERTIFICATE, X.509; design §4 "Objects"): made through the
    // module (C_CreateObject, NSS certutil -A) or by keywardctl (key cert create/import). A
    // certificate belongs to the key whose public key it carries (`key_id`, `version`), else
    // to its ring (`key_id` NULL: a CA of a chain); the client's CKA_ID/CKA_LABEL and
    // CKA_SUBJECT/CKA_ISSUER/CKA_SERIAL_NUMBER are kept byte-exact. A destroyed certificate
    // keeps its row (`deleted_at`).
    r#"
CREATE TABLE certificates (
    id INTEGER PRIMARY KEY,
    ring_id INTEGER NOT NULL REFERENCES resources(id),
    key_id INTEGER REFERENCES crypto_keys(resource_id),
    version INTEGER,
    cka_id BLOB NOT NULL,
    cka_label BLOB NOT NULL,
    subject BLOB NOT NULL,
    issuer BLOB NOT NULL,
    serial BLOB NOT NULL,
    value BLOB NOT NULL,
    category INTEGER NOT NULL DEFAULT 0,
    trusted INTEGER NOT NULL DEFAULT 0,
    created_by TEXT NOT NULL,
    creator_instance TEXT,
    created_at INTEGER NOT NULL,
    deleted_at INTEGER
);
CREATE INDEX certificates_ring ON certificates(ring_id);
"#,
    // 5: BYOK import jobs (design §5). `name` is the job's full name (ring/importJobs/id);
    // `token_id` the CKA_ID of its RSA wrapping pair in the token; `public_key` its DER SPKI.
    // A job is ACTIVE from creation until `expire_at` (unix seconds); EXPIRED once keywardd
    // has destroyed its wrapping pair after that (an ACTIVE row past `expire_at` is
    // reported EXPIRED too).
    r#"
CREATE TABLE import_jobs (
    id INTEGER PRIMARY KEY,
    ring_id INTEGER NOT NULL REFERENCES resources(id),
    name TEXT NOT NULL UNIQUE,
    method TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('PENDING','ACTIVE','EXPIRED')),
    token_id BLOB NOT NULL,
    public_key BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    expire_at INTEGER NOT NULL,
    created_by TEXT NOT NULL
);
CREATE INDEX import_jobs_ring ON import_jobs(ring_id);
"#,
    // 6: versions whose material was imported (BYOK) rather than generated in the token:
    // their objects report CKA_LOCAL, CKA_ALWAYS_SENSITIVE and CKA_NEVER_EXTRACTABLE FALSE.
    r#"
ALTER TABLE key_versions ADD COLUMN imported INTEGER NOT NULL DEFAULT 0;
"#,
    // 7: coalesced denials (design §6 "Coalescing"): a record may stand for `count`
    // identical denials. `format` 2 is the record format whose hash covers the count; records
    // written before this migration keep format 1 (count 1) and are never rewritten.
    r#"
ALTER TABLE audit_log ADD COLUMN count INTEGER NOT NULL DEFAULT 1;
ALTER TABLE audit_log ADD COLUMN format INTEGER NOT NULL DEFAULT 1;
"#,
];
